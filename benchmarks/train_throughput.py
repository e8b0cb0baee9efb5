"""Training images/s of every architecture at 128 px (base 32, batch 16), float32 vs mixed precision.

    python benchmarks/train_throughput.py [--data tfrecords/128px] [--rounds 3]

End to end: the tf.data training pipeline, augmentation in the train step,
forward, Dice loss, backward, Adam update. Variants are interleaved over
``--rounds`` rounds and the median is reported (timings on shared machines
swing). Writes benchmarks/results/train_throughput.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402

from benchmarks.common import images_per_second, median, write_result  # noqa: E402
from tfseg.data.augment import Augment  # noqa: E402
from tfseg.data.pipeline import load_slices, training_dataset  # noqa: E402
from tfseg.losses import get_loss  # noqa: E402
from tfseg.models import ARCHITECTURES, build_model  # noqa: E402
from tfseg.training.loop import AugmentedTrainer  # noqa: E402
from tfseg.training.runtime import choose_precision  # noqa: E402

# The reference PyTorch program trains its U-Net at 128 px, batch 16, at about 13 img/s
# end to end on this kind of 2-core CPU (issue 3); the target is twice that.
REFERENCE_IMAGES_PER_SECOND = 13.0


def packed_folder(data: str | None, size: int) -> str:
    if data:
        return data
    from tfseg.data.pack import pack
    from tfseg.data.phantom import write_phantom

    root = tempfile.mkdtemp(prefix="tfseg-bench-")
    write_phantom(os.path.join(root, "kaggle_3m"), n_patients=4, n_slices=24)
    pack(os.path.join(root, "kaggle_3m"), os.path.join(root, "tfr"), size, progress=False)
    return os.path.join(root, "tfr")


def measure(arch: str, policy: str, table, size: int, batch: int, steps: int) -> float:
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    trainer = AugmentedTrainer(build_model(arch, (size, size, 3), 32), Augment(seed=0))
    trainer.compile(optimizer=keras.optimizers.Adam(1e-4), loss=get_loss("dice"))
    ds, _ = training_dataset(table, batch, seed=0)
    iterator = iter(ds.repeat())
    trainer.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)  # build + trace outside the timing
    step = trainer.make_train_function()
    value = images_per_second(lambda: step(iterator), batch, steps)
    keras.mixed_precision.set_global_policy("float32")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="packed 128 px folder (default: a small synthetic phantom)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--archs", nargs="+", default=sorted(ARCHITECTURES))
    args = parser.parse_args(argv)
    size = 128
    table = load_slices(packed_folder(args.data, size))
    mixed = choose_precision("auto")[0]
    policies = ["float32"] + ([mixed] if mixed != "float32" else [])
    samples: dict[str, dict[str, list[float]]] = {a: {p: [] for p in policies} for a in args.archs}
    for round_ in range(args.rounds):
        for arch in args.archs:
            for policy in policies:
                value = measure(arch, policy, table, size, args.batch_size, args.steps)
                samples[arch][policy].append(value)
                print(f"round {round_ + 1}: {arch:15s} {policy:15s} {value:6.1f} img/s", flush=True)
    results = {arch: {p: {"median": median(v), "samples": v} for p, v in by_policy.items()}
               for arch, by_policy in samples.items()}
    for arch in results:
        if mixed in results[arch] and mixed != "float32":
            results[arch]["mixed_over_float32"] = results[arch][mixed]["median"] / results[arch]["float32"]["median"]
    unet_best = max(results["unet"][p]["median"] for p in policies) if "unet" in results else None
    write_result("train_throughput.json", {
        "image_size": size, "base_filters": 32, "batch_size": args.batch_size, "steps": args.steps,
        "rounds": args.rounds, "data": args.data or "synthetic phantom", "mixed_policy": mixed,
        "images_per_second": results,
        "reference_pytorch_images_per_second": REFERENCE_IMAGES_PER_SECOND,
        "unet_speedup_over_reference": unet_best / REFERENCE_IMAGES_PER_SECOND if unet_best else None,
        "target": "unet >= 2x the reference (26 img/s)",
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
