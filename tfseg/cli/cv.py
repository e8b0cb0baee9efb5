"""`tfseg cv`: patient-level K-fold cross-validation; every flag it does not know goes to training."""
from __future__ import annotations

from tfseg.cli.common import new_parser, run_command


# Flags that the command sets per fold itself.
PER_FOLD_FLAGS = ("--fold", "--logdir", "--resume")


def build_parser(prog: str = "python -m tfseg.cv"):
    parser = new_parser(prog, "Patient-level K-fold cross-validation with out-of-fold predictions; every other "
                        "flag goes to train.py (default --preset cpu-128).")
    parser.add_argument("--folds", type=int, default=5, help="number of patient-level folds")
    parser.add_argument("--out", required=True, help="folder for the fold runs and the out-of-fold results")
    parser.add_argument("--tta", action="store_true", help="average with the flipped image when predicting")
    parser.add_argument("--uncertainty", action="store_true", help="also score each patient's uncertainty (where "
                        "the image and its flip disagree; see evaluate.py --uncertainty) and its rank correlation "
                        "with the DSC")
    return parser


def main(argv=None, prog: str = "python -m tfseg.cv") -> int:
    from tfseg.cli.train import config_from_args

    parser = build_parser(prog)
    args, train_flags = parser.parse_known_args(argv)
    if not any(flag.startswith("--preset") for flag in train_flags):
        train_flags = ["--preset", "cpu-128"] + train_flags
    if any(flag.startswith(PER_FOLD_FLAGS) for flag in train_flags):
        parser.error("--fold, --logdir and --resume are set per fold by tfseg.cv; leave them out")
    config, _, _ = config_from_args(train_flags, f"{prog} (training flags)")

    def action():
        from tfseg.cv import run_cv

        run_cv(config, args.folds, args.out, args.tta, args.uncertainty)

    return run_command(action, also=(ValueError,))
