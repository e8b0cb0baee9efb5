"""`tfseg predict` / `python -m tfseg.predict`: segment scans that have no masks (.tif folders or NIfTI)."""
from __future__ import annotations

import shlex
import sys

from tfseg.cli.common import add_model_argument, new_parser, run_command


def build_parser(prog: str = "python -m tfseg.predict"):
    from tfseg.predict import PredictOptions

    d = PredictOptions()
    p = new_parser(prog, "Segment scans that have no masks: a kaggle_3m-style patient folder (<name>_<n>.tif "
                   "slices), a folder of them, a 4-D NIfTI file (pre-contrast, FLAIR, post-contrast) or 3-D NIfTI "
                   "files per sequence. Writes each case's mask in the input's own layout, a viewer page, and "
                   "OUT/predictions.csv (volume, uncertainty, suspect flag). See docs/howto/predict.md.",
                   defaults_in_help=True)
    add_model_argument(p, several=True, help="`pretrained` (the model tfseg ships: tfseg/pretrained/MODEL_CARD.md), "
                       "a training run folder, RUN_DIR/export (SavedModel) or a .keras file; several: an ensemble "
                       "(the mean of their probabilities). The post-processing rule the (first) model carries "
                       "(postprocess.json) is applied, else the protocol's (p > 0.5, the largest 3-D component)")
    p.add_argument("--input", default=None, metavar="IN",
                   help="a patient folder of <name>_<n>.tif slices (_mask.tif files are ignored), a folder of such "
                   "folders (and/or of 4-D NIfTI files), or one 4-D NIfTI file (.nii/.nii.gz) of shape (X, Y, Z, 3)")
    p.add_argument("--flair", default=None, metavar="FILE", help="a 3-D NIfTI FLAIR volume, instead of --input; "
                   "alone, it also stands in for the pre- and post-contrast sequences (the output says so)")
    p.add_argument("--pre", default=None, metavar="FILE", help="the 3-D pre-contrast volume (with --flair)")
    p.add_argument("--post", default=None, metavar="FILE", help="the 3-D post-contrast volume (with --flair)")
    p.add_argument("--out", required=True, help="output folder: OUT/<case>/ per case and OUT/predictions.csv")
    p.add_argument("--tta", action="store_true", help="the mask from the mean of the image and its horizontal flip")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="slices per prediction batch")
    p.add_argument("--save-probabilities", action="store_true",
                   help="also write the probabilities: float16 .npz for .tif cases; 16-bit NIfTI for NIfTI cases "
                   "(NIfTI has no float16: uint16 steps of 1/65535, the scl_slope that NIfTI readers apply)")
    p.add_argument("--no-viewer", action="store_true", help="skip the per-case viewer page OUT/<case>/view.html")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv=None, prog: str = "python -m tfseg.predict") -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(prog).parse_args(argv)

    def action():
        from tfseg.predict import PredictError, PredictOptions, predict, summary_lines

        if args.batch_size < 1:
            raise PredictError(f"--batch-size {args.batch_size}: give at least 1")
        options = PredictOptions(tta=args.tta, batch_size=args.batch_size,
                                 save_probabilities=args.save_probabilities, viewer=not args.no_viewer)
        result = predict(args.model, args.out, args.input, flair=args.flair, pre=args.pre, post=args.post,
                         options=options, progress=not args.no_progress, command=f"{prog} " + shlex.join(argv))
        print("\n".join(summary_lines(result)))

    return run_command(action)
