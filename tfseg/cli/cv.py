"""`tfseg cv`: patient-level K-fold cross-validation; every flag it does not know goes to training."""
from __future__ import annotations

import argparse
import sys

from tfseg.cli.common import new_parser, run_command


# Flags that the command sets per fold itself.
PER_FOLD_FLAGS = ("--fold", "--logdir", "--resume")
DEFAULT_FOLDS = 5


def build_parser(prog: str = "python -m tfseg.cv"):
    parser = new_parser(prog, "Patient-level K-fold cross-validation with out-of-fold predictions; every other "
                        "flag goes to train.py (default --preset cpu-128).")
    parser.add_argument("--folds", type=int, default=None, help=f"number of patient-level folds (default "
                        f"{DEFAULT_FOLDS}; with --predict-only the count fold-0 was trained with)")
    parser.add_argument("--out", required=True, help="folder for the fold runs and the out-of-fold results")
    parser.add_argument("--tta", action="store_true", help="average with the flipped image when predicting")
    parser.add_argument("--uncertainty", action="store_true", help="also score each patient's uncertainty (where "
                        "the image and its flip disagree; see evaluate.py --uncertainty) and its rank correlation "
                        "with the DSC")
    parser.add_argument("--postprocess", default=None, metavar="FILE", help="a postprocess.json (`tfseg "
                        "postprocess`) whose rule is scored beside the protocol's (dsc_rule_* columns; the masks "
                        "in OUT/predictions are then the rule's); the headline figures stay the protocol's")
    parser.add_argument("--predict-only", action="store_true", help="train nothing: redo the out-of-fold step "
                        "with every finished fold's best.keras (rewrites OUT/predictions, OUT/probabilities, "
                        "per_patient.csv and summary.json; e.g. for a CV from an older tfseg without "
                        "probabilities). Training flags are ignored, except --data (default: the fold's own)")
    return parser


def main(argv=None, prog: str = "python -m tfseg.cv") -> int:
    parser = build_parser(prog)
    args, train_flags = parser.parse_known_args(argv)
    if any(flag.startswith(PER_FOLD_FLAGS) for flag in train_flags):
        parser.error("--fold, --logdir and --resume are set per fold by tfseg.cv; leave them out")
    if args.predict_only:
        return _predict_only(args, train_flags)
    from tfseg.cli.train import config_from_args

    if not any(flag.startswith("--preset") for flag in train_flags):
        train_flags = ["--preset", "cpu-128"] + train_flags
    config, _, _ = config_from_args(train_flags, f"{prog} (training flags)")

    def action():
        from tfseg.cv import run_cv

        run_cv(config, args.folds or DEFAULT_FOLDS, args.out, args.tta, args.uncertainty, args.postprocess)

    return run_command(action, also=(ValueError,))


def _predict_only(args, train_flags: list[str]) -> int:
    data_parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    data_parser.add_argument("--data", default=None)
    known, ignored = data_parser.parse_known_args(train_flags)
    if ignored:
        print(f"note: --predict-only trains nothing; ignoring the training flags {' '.join(ignored)}", file=sys.stderr)

    def action():
        from tfseg.cv import predict_only

        predict_only(args.out, known.data, args.folds, args.tta, args.uncertainty, args.postprocess)

    return run_command(action, also=(ValueError,))
