"""`tfseg postprocess`: choose the post-processing (threshold, components) on out-of-fold probabilities."""
from __future__ import annotations

from tfseg.cli.common import new_parser, run_command


def build_parser(prog: str = "python -m tfseg.postprocess_choice"):
    parser = new_parser(prog, "Score candidate post-processing rules (the protocol's threshold 0.5 + largest "
                        "component; the component of the largest summed probability; components of at least N "
                        "voxels; the two largest; every component; thresholds 0.3..0.7) on a cross-validation's "
                        "out-of-fold probabilities (CV_DIR/probabilities, written by `tfseg cv`), and keep the "
                        "protocol unless a candidate raises the out-of-fold mean DSC. Writes postprocess.json and "
                        "postprocess.md and prints the table.")
    parser.add_argument("--cv", required=True, metavar="CV_DIR", help="a `tfseg cv` folder holding probabilities/ "
                        "(a folder of the .npz files itself, or a `tfseg evaluate --save-probabilities` output, "
                        "works too)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--exclude", nargs="+", default=None, metavar="PATIENT",
                       help="patients to leave out of the choice")
    group.add_argument("--exclude-validation", action="store_true",
                       help="leave out docs/protocol.md's 10 validation patients, so that the rule can be applied "
                       "to a figure on those 10 (the protocol forbids choosing it on them)")
    parser.add_argument("--out", default=None, metavar="FILE", help="the rule file to write (default "
                        "CV_DIR/postprocess.json; its table goes beside it as FILE.md). To give a model the rule, write "
                        "it into the model's run or export folder")
    return parser


def main(argv=None, prog: str = "python -m tfseg.postprocess_choice") -> int:
    args = build_parser(prog).parse_args(argv)

    def action():
        from tfseg.postprocess_choice import choose_postprocessing, report_lines

        payload = choose_postprocessing(args.cv, args.exclude, args.exclude_validation, args.out)
        print("\n".join(report_lines(payload)))

    return run_command(action)
