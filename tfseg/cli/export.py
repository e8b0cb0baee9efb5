"""`tfseg export`: a run's best.keras (or an ensemble of models) as a SavedModel for serving."""
from __future__ import annotations

from tfseg.cli.common import new_parser, run_command


def build_parser(prog: str = "python -m tfseg.export"):
    parser = new_parser(prog, "Export RUN_DIR/best.keras as a SavedModel in RUN_DIR/export, or several models as "
                        "one ensemble SavedModel that averages their probabilities (--ensemble ... --out DIR).")
    parser.add_argument("run_dir", nargs="?", help="a training run folder (holds best.keras)")
    parser.add_argument("--ensemble", nargs="+", metavar="MODEL", help="training run folders or .keras files to "
                        "export as one SavedModel (the mean of their probabilities); they must take the same "
                        "image size; needs --out")
    parser.add_argument("--out", default=None, help="SavedModel folder to write (default: RUN_DIR/export; "
                        "required with --ensemble)")
    parser.add_argument("--postprocess", default=None, metavar="FILE", help="a postprocess.json (`tfseg "
                        "postprocess`) whose rule segment_volume applies; copied into the export (default: "
                        "RUN_DIR/postprocess.json when there is one, else the protocol's threshold 0.5 + largest "
                        "component)")
    return parser


def main(argv=None, prog: str = "python -m tfseg.export") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if (args.run_dir is None) == (args.ensemble is None):
        parser.error("give either RUN_DIR or --ensemble MODEL MODEL ...")
    if args.ensemble and args.out is None:
        parser.error("--ensemble needs --out DIR: the ensemble belongs to no single run folder")

    def action():
        from tfseg.export import export_ensemble, export_run

        if args.ensemble:
            export_ensemble(args.ensemble, args.out, args.postprocess)
        else:
            export_run(args.run_dir, args.out, args.postprocess)

    return run_command(action, also=(FileNotFoundError, ValueError))
