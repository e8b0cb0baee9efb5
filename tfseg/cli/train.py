"""`tfseg train` / `python train.py`: the training flags, presets applied, into a TrainConfig; then train."""
from __future__ import annotations

import argparse
import sys

from tfseg.cli.common import run_command
from tfseg.training.augment import AugmentConfig
from tfseg.training.config import PRESETS, TrainConfig


def build_parser(prog: str = "python train.py") -> argparse.ArgumentParser:
    from tfseg.losses import LOSSES
    from tfseg.models import ARCHITECTURES
    from tfseg.training.schedules import SCHEDULES

    d = TrainConfig()
    p = argparse.ArgumentParser(prog=prog, allow_abbrev=False, description="Train a segmentation network on kaggle_3m "
                                "(LGG FLAIR abnormality) with per-volume validation DSC.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), help="start from a named setting: reference = 256 px, "
                   "100 epochs, batch 16, Adam 1e-4; cpu-128 = docs/protocol.md's CPU budget: 128 px, 12 epochs, "
                   "Adam 3e-4 with a cosine over the 12 epochs; cpu-256 = cpu-128 at 256 px")
    p.add_argument("--arch", default=d.arch, choices=sorted(ARCHITECTURES), help="network architecture")
    p.add_argument("--loss", default=d.loss, choices=LOSSES, help="training loss")
    p.add_argument("--epochs", type=int, default=d.epochs, help="number of epochs")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch size")
    p.add_argument("--lr", type=float, default=d.lr, help="(initial) learning rate")
    p.add_argument("--optimizer", default=d.optimizer, choices=["adam", "adamw"], help="optimizer")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="weight decay of adamw")
    p.add_argument("--schedule", default=d.schedule, choices=list(SCHEDULES),
                   help="learning-rate schedule, planned over the run's steps: cosine ends at 1%% of --lr at the "
                        "last step; onecycle = linear warm-up from lr/25 (30%% of the run) then cosine; "
                        "plateau: halve when val DSC stalls 5 epochs")
    p.add_argument("--warmup-epochs", type=float, default=None,
                   help="linear warm-up from lr/25 over this many epochs (any schedule; onecycle default: 30%% of the run)")
    p.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="keep an exponential moving average of the weights (e.g. 0.999), used for validation, "
                        "best.keras and the export")
    p.add_argument("--context", type=int, default=d.context, metavar="K",
                   help="2.5-D input: each slice with its K//2 neighbours on each side as channels (3·K channels); "
                        "K odd, 1 = plain 2-D")
    p.add_argument("--image-size", type=int, default=d.image_size, help="side of the preprocessed slices")
    p.add_argument("--base-filters", type=int, default=d.base_filters, help="filters of the first level")
    p.add_argument("--deep-supervision", action="store_true", help="auxiliary outputs at lower decoder levels")
    p.add_argument("--precision", default=d.precision, choices=["auto", "float32", "mixed_float16", "mixed_bfloat16"],
                   help="dtype policy; auto: mixed_float16 on GPU, mixed_bfloat16 on CPUs with AVX-512 BF16/AMX, else float32")
    p.add_argument("--data", default=d.data, help="kaggle_3m folder, or an already packed TFRecord folder "
                   "(default: ./kaggle_3m; when it is absent the dataset is downloaded from Kaggle with kagglehub "
                   "and every file's SHA-256 is verified)")
    p.add_argument("--tfrecords", default=None, help="where to pack kaggle_3m (default: tfrecords/<size>px)")
    p.add_argument("--val-cases", type=int, default=d.val_cases, help="validation patients (docs/protocol.md split)")
    p.add_argument("--fold", type=int, default=None, help="cross-validation fold index (with --folds)")
    p.add_argument("--folds", type=int, default=None, help="number of patient-level folds")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of weights, sampling and augmentation")
    p.add_argument("--logdir", default=None, help="run folder (default: runs/<arch>-<timestamp>)")
    p.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR from its last checkpoint")
    p.add_argument("--time-budget-minutes", type=float, default=None,
                   help="train as many whole epochs as fit this wall time: the first epoch is timed, the epoch "
                        "count (at most --epochs) and the learning-rate schedule are then planned to end in time")
    p.add_argument("--image-every", type=int, default=d.image_every,
                   help="write validation overlays to TensorBoard every N epochs")
    aug = AugmentConfig()
    g = p.add_argument_group("augmentation (in the train step; 0 turns a component off)")
    g.add_argument("--aug-scale", type=float, default=aug.scale, help="random zoom ±fraction")
    g.add_argument("--aug-rotation", type=float, default=aug.rotation, help="random rotation ±degrees")
    g.add_argument("--aug-flip", type=float, default=aug.flip, help="horizontal flip probability")
    g.add_argument("--aug-brightness", type=float, default=aug.brightness, help="brightness shift ±")
    g.add_argument("--aug-contrast", type=float, default=aug.contrast, help="contrast factor ±fraction")
    g.add_argument("--aug-gamma", type=float, default=aug.gamma, help="gamma ±fraction")
    g.add_argument("--aug-noise", type=float, default=aug.noise, help="additive Gaussian noise std (normalized units)")
    g.add_argument("--aug-sequence-dropout", type=float, default=aug.sequence_dropout,
                   help="probability per sample of replacing pre-contrast, post-contrast or both by FLAIR "
                        "(as kaggle_3m does for missing sequences)")
    g.add_argument("--aug-blur", type=float, default=aug.blur,
                   help="probability per sample of a Gaussian blur, sigma 0.5-1 px (nnU-Net: 0.2)")
    g.add_argument("--aug-low-resolution", type=float, default=aug.low_resolution,
                   help="probability per sample of simulating 0.5-1x the resolution: nearest-neighbour down, "
                        "linear back up (nnU-Net: 0.25)")
    g.add_argument("--no-augment", action="store_true", help="turn every augmentation off")
    return p


# Settings that a resumed run may change (e.g. to train longer); all others come from its config.json.
RESUMABLE_OVERRIDES = ("epochs", "time_budget_minutes")


def config_from_args(argv=None, prog: str = "python train.py") -> tuple[TrainConfig, str | None, dict]:
    """Parse flags into a TrainConfig (preset < explicit flags).

    Returns (config, resume_dir, overrides): overrides are the RESUMABLE_OVERRIDES given explicitly.
    """
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    explicit = _explicit_dests(parser, argv)
    values = {k: v for k, v in vars(args).items() if not k.startswith("aug_") and k not in ("resume", "no_augment")}
    if args.preset:
        values.update({k: v for k, v in PRESETS[args.preset].items() if k not in explicit})
    try:
        augment = AugmentConfig(scale=args.aug_scale, rotation=args.aug_rotation, flip=args.aug_flip,
                                brightness=args.aug_brightness, contrast=args.aug_contrast, gamma=args.aug_gamma,
                                noise=args.aug_noise, sequence_dropout=args.aug_sequence_dropout,
                                blur=args.aug_blur, low_resolution=args.aug_low_resolution)
    except ValueError as err:
        parser.error(f"augmentation flags: {err}")
    if args.no_augment:
        augment = AugmentConfig(scale=0.0, rotation=0.0, flip=0.0)
    values["augment"] = augment.to_dict()
    _check_values(parser, values)
    overrides = {k: values[k] for k in RESUMABLE_OVERRIDES if k in explicit}
    return TrainConfig.from_dict(values), args.resume, overrides


def _check_values(parser: argparse.ArgumentParser, values: dict) -> None:
    """Reject flag values that would only fail later, naming the flag."""
    if values["context"] < 1 or values["context"] % 2 == 0:
        parser.error(f"--context must be an odd number >= 1 (the slice plus K//2 neighbours on each side), "
                     f"got {values['context']}")
    if values["ema"] is not None and not 0.0 < values["ema"] < 1.0:
        parser.error(f"--ema is a decay between 0 and 1 (e.g. 0.999), got {values['ema']}")
    if values["warmup_epochs"] is not None and not 0.0 <= values["warmup_epochs"] < values["epochs"]:
        parser.error(f"--warmup-epochs must be >= 0 and less than --epochs ({values['epochs']}), "
                     f"got {values['warmup_epochs']}")


def _explicit_dests(parser: argparse.ArgumentParser, argv) -> set[str]:
    """Destinations of the flags written on the command line (so presets don't override them)."""
    argv = sys.argv[1:] if argv is None else argv
    given = {a.split("=")[0] for a in argv if a.startswith("--")}
    return {action.dest for action in parser._actions if given & set(action.option_strings)}


def main(argv=None, prog: str = "python train.py") -> int:
    config, resume, overrides = config_from_args(argv, prog)

    def action():
        from tfseg.training.loop import train

        train(config, resume=resume, overrides=overrides)

    return run_command(action)
