"""A plain Keras training step of tfseg's U-Net under whichever Keras backend is set (issue 9).

    KERAS_BACKEND=jax python benchmarks/keras_backend_step.py --precision mixed_bfloat16
    KERAS_BACKEND=tensorflow python benchmarks/keras_backend_step.py --precision mixed_bfloat16

tfseg's models and losses are written in ``keras.ops``, so they run on the JAX
backend as they are; this times ``train_on_batch`` (forward, Dice loss, backward,
Adam) on one in-memory batch, without tfseg's tf.data pipeline, augmentation or
metric, so that backends can be compared on the network alone. Prints one JSON line.
Run both backends in one session and compare the ratio, not single figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfseg.losses import get_loss  # noqa: E402
from tfseg.models import build_model  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16"])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--base-filters", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    keras.mixed_precision.set_global_policy(args.precision)
    keras.utils.set_random_seed(0)
    model = build_model("unet", (args.size, args.size, 3), args.base_filters)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=get_loss("dice"))
    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.batch_size, args.size, args.size, 3)).astype(np.float32)
    masks = (rng.random((args.batch_size, args.size, args.size, 1)) > 0.9).astype(np.float32)
    for _ in range(args.warmup):
        model.train_on_batch(images, masks)
    started = time.perf_counter()
    for _ in range(args.steps):
        model.train_on_batch(images, masks)
    seconds = time.perf_counter() - started
    print(json.dumps({"images_per_second": args.steps * args.batch_size / seconds, "backend": keras.backend.backend(),
                      "precision": args.precision, "keras": keras.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
