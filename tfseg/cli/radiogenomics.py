"""`tfseg radiogenomics`: tumour-shape features against genomic subtypes (Buda et al. 2019's study)."""
from __future__ import annotations

from tfseg.cli.common import new_parser, run_command
from tfseg.radiogenomics.masks import MANUAL
from tfseg.radiogenomics.shape import ShapeSettings


def build_parser(prog: str = "python -m tfseg.radiogenomics"):
    parser = new_parser(prog, "The study: features of every patient, the exact tests, a figure and a summary, "
                        "written to one folder.")
    parser.add_argument("--data", default="kaggle_3m", help="kaggle_3m folder holding data.csv (default: ./kaggle_3m)")
    parser.add_argument("--masks", default=MANUAL,
                        help="'manual' (the kaggle_3m masks) or a folder of predicted masks: <patient>.npz "
                             "(array 'mask', (S, 256, 256)) or <patient>/<patient>_<n>_mask.tif")
    parser.add_argument("--out", required=True, help="output folder (created when missing)")
    defaults = ShapeSettings()
    parser.add_argument("--mf-window", type=int, default=defaults.mf_window,
                        help=f"MF smoothing window, odd, in boundary samples (default: {defaults.mf_window})")
    parser.add_argument("--mf-window-alt", type=int, default=defaults.mf_window_alt,
                        help=f"second MF window, reported as a sensitivity variant (default: {defaults.mf_window_alt})")
    parser.add_argument("--sectors", type=int, default=defaults.sectors,
                        help=f"angular sectors for ASD (default: {defaults.sectors}, i.e. 36 degrees)")
    parser.add_argument("--quiet", action="store_true", help="no line per patient")
    return parser


def main(argv=None, prog: str = "python -m tfseg.radiogenomics") -> int:
    args = build_parser(prog).parse_args(argv)

    def action():
        from tfseg.radiogenomics.study import ALPHA, run

        settings = ShapeSettings(mf_window=args.mf_window, mf_window_alt=args.mf_window_alt, sectors=args.sectors)
        summary = run(args.data, args.masks, args.out, settings, log=(lambda _: None) if args.quiet else print)
        print(f"{summary['patients']} patients ({summary['empty_masks']['count']} with an empty mask, "
              f"{summary['without_data_csv_row']['count']} without a data.csv row) -> {args.out}")
        for row in summary["rnaseq"]:
            print(f"  RNASeqCluster x {row['feature']:<7} p={row['p']:.3g}  x10={row['p_bonferroni_10']:.3g}  "
                  f"x18={row['p_bonferroni_18']:.3g}")
        names = [f"{r['cluster']} x {r['feature']}" for r in summary["significant"]]
        print(f"significant (p*10 < {ALPHA}): {', '.join(names) if names else 'none'}")

    return run_command(action, also=(ValueError,))
