"""Train a segmentation network on kaggle_3m: `python train.py --arch attention_unet` (see --help)."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    from tfseg.data.kaggle import DataError
    from tfseg.training.config import config_from_args
    from tfseg.training.loop import TrainingError, train
    from tfseg.training.runtime import ClusterError

    config, resume, overrides = config_from_args(argv)
    try:
        train(config, resume=resume, overrides=overrides)
    except (DataError, TrainingError, ClusterError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
