"""`tfseg phantom`: a small synthetic kaggle_3m-shaped folder, for tests and dry runs."""
from __future__ import annotations

from tfseg.cli.common import new_parser, run_command


def build_parser(prog: str = "python -m tfseg.data.phantom"):
    parser = new_parser(prog, "Write a small synthetic kaggle_3m-shaped folder (for tests and dry runs).")
    parser.add_argument("dest", help="folder to write, e.g. /tmp/phantom/kaggle_3m")
    parser.add_argument("--patients", type=int, default=4)
    parser.add_argument("--slices", type=int, default=12)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lesion-fraction", type=float, default=0.5)
    return parser


def main(argv=None, prog: str = "python -m tfseg.data.phantom") -> int:
    args = build_parser(prog).parse_args(argv)

    def action():
        from tfseg.data.phantom import write_phantom

        dest = write_phantom(args.dest, n_patients=args.patients, n_slices=args.slices, size=args.size,
                             seed=args.seed, lesion_fraction=args.lesion_fraction)
        print(f"wrote {args.patients} phantom patients x {args.slices} slices to {dest}")

    return run_command(action)
