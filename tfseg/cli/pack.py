"""`tfseg pack`: kaggle_3m -> checked, preprocessed TFRecord shards and a manifest."""
from __future__ import annotations

import sys

from tfseg.cli.common import new_parser, run_command


def build_parser(prog: str = "python -m tfseg.data.pack"):
    parser = new_parser(prog, "Pack kaggle_3m into checked, preprocessed TFRecord shards (one per patient) and a "
                        "manifest.json; a second call with the same settings does nothing.")
    parser.add_argument("--data", default="kaggle_3m", help="kaggle_3m folder to read (default: ./kaggle_3m)")
    parser.add_argument("--out", default="tfrecords", help="output folder for shards + manifest.json (default: ./tfrecords)")
    parser.add_argument("--image-size", type=int, default=256, help="side of the preprocessed slices (default: 256)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    return parser


def main(argv=None, prog: str = "python -m tfseg.data.pack") -> int:
    args = build_parser(prog).parse_args(argv)

    def action():
        from tfseg.data.pack import pack

        try:
            manifest = pack(args.data, args.out, args.image_size, args.workers)
        except KeyboardInterrupt:
            print(f"interrupted: workers stopped, temporary files removed; {args.out} keeps its previous shards "
                  "and manifest. Run the same command again to finish.", file=sys.stderr)
            return 130
        print(f"{len(manifest['patients'])} patients, {manifest['total_slices']} slices at "
              f"{manifest['image_size']} px in {args.out}")

    return run_command(action, also=(ValueError,))
