"""Train a segmentation network on kaggle_3m: `python train.py --arch attention_unet` (see --help).

The same command as `tfseg train`; the work is done by the tfseg package (tfseg.cli.train).
"""
import sys

from tfseg.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
