"""`tfseg report`: a Markdown report comparing runs, with figures, seed groups and the optional studies."""
from __future__ import annotations

from tfseg.cli.common import new_parser, run_command


def build_parser(prog: str = "python -m tfseg.report"):
    from tfseg.report import BASELINE_MARK, DEFAULT_TITLE
    from tfseg.report_studies import CV_GOAL_MEAN_DSC

    parser = new_parser(prog, "Markdown report comparing training runs (live run folders with RUN_DIR/eval, or "
                        "flat results folders); figures go to figures/ beside the report.")
    parser.add_argument("runs", nargs="+",
                        help="run folders (runs/<name>) or results folders (results/<budget>/<name>)")
    parser.add_argument("-o", "--output", default="REPORT.md", help="the Markdown file to write")
    parser.add_argument("--title", default=DEFAULT_TITLE, help="the report's heading")
    parser.add_argument("--notes", metavar="FILE", help="hand-written Markdown inserted verbatim after the tables")
    parser.add_argument("--baseline", metavar="NAME", help="the run the best run is compared with per patient "
                        f"(default: a run whose name contains '{BASELINE_MARK}')")
    parser.add_argument("--cv", metavar="DIR", action="append", default=[],
                        help="a cross-validation folder written by `tfseg cv` (summary.json, "
                        "per_patient.csv, dsc.png): adds the 'Cross-validation' section with the comparison to "
                        f"the paper and the goal (mean DSC >= {CV_GOAL_MEAN_DSC}); give it once per folder")
    parser.add_argument("--radiogenomics", metavar="DIR", action="append", default=[],
                        help="a folder written by `tfseg radiogenomics` (summary.json, tests.csv, "
                        "features.csv, figure.png): adds the radiogenomics section, its p-values beside the "
                        "paper's; give it once per folder, the manual masks first (the others are compared "
                        "with it)")
    parser.add_argument("--recommended", metavar="NAME",
                        help="a run of the tfseg recipe that the reference program's runs (results/reference-program/"
                        "run-*, given among the runs) are compared with: its seed group against theirs, per patient, "
                        "with the paired Wilcoxon test")
    parser.add_argument("--time-pair", nargs=2, metavar=("TFSEG_RUN", "PROGRAM_RUN"), action="append", default=[],
                        help="two run names trained on the same machine in the same session: training minutes of each "
                        "until the validation mean first reaches the program run's final figure (their config.json "
                        "must record the same machine); repeatable")
    parser.add_argument("--time-run", metavar="DIR", action="append", default=[],
                        help="a run folder loaded for --time-pair only (e.g. a same-seed rerun kept out of the tables "
                        "and seed groups); repeatable")
    return parser


def main(argv=None, prog: str = "python -m tfseg.report") -> int:
    args = build_parser(prog).parse_args(argv)

    def action():
        from tfseg.report import build_report

        path = build_report(args.runs, args.output, title=args.title, notes=args.notes, baseline=args.baseline,
                            cv=args.cv, radiogenomics=args.radiogenomics, recommended=args.recommended,
                            time_pairs=[tuple(pair) for pair in args.time_pair], time_runs=args.time_run)
        print(f"wrote {path}")

    return run_command(action)
