"""`tfseg robustness`: the native-geometry DSC of an exported model under perturbations of the raw slices."""
from __future__ import annotations

import shlex
import sys

from tfseg.cli.common import (add_data_argument, add_model_argument, add_out_argument, add_patients_argument,
                              new_parser, run_command)


def build_parser(prog: str = "python -m tfseg.robustness"):
    from tfseg.robustness import PERTURBATIONS

    p = new_parser(prog, "Native-geometry DSC of an exported model (segment_volume) under perturbations of the raw "
                   "slices: missing sequences, intensity, noise, blur, rotation, shift, mirroring, slice order.")
    add_model_argument(p, several=False, help="a training run folder (uses RUN_DIR/export) or a SavedModel folder")
    add_data_argument(p)
    add_out_argument(p, "output folder (default: RUN_DIR/robustness)")
    add_patients_argument(p, "'all' or patient folder names (default: the validation patients of the run's split)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random perturbations (noise; default 0)")
    p.add_argument("--perturbations", nargs="+", default=None, metavar="NAME",
                   help=f"a subset of the suite (clean is always run): {' '.join(PERTURBATIONS)}")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None, prog: str = "python -m tfseg.robustness") -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(prog).parse_args(argv)

    def action():
        from tfseg.robustness import markdown_table, robustness_of_model

        summary, out = robustness_of_model(args.model, args.data, args.out, args.patients, args.perturbations,
                                           args.seed, progress=not args.quiet,
                                           command=f"{prog} " + shlex.join(argv))
        print(markdown_table(summary), end="")
        if summary["suspect"]:  # each one was a warning line on stderr as it was scored
            names = ", ".join(f"{s['patient']} under {s['perturbation']}" for s in summary["suspect"])
            print(f"suspect masks ({len(summary['suspect'])}), check them first: {names}")
        print(f"wrote {out / 'robustness.csv'}, summary.json, table.md, figure.png")

    return run_command(action)
