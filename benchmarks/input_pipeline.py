"""Input pipeline vs training step, and packing times.

    python benchmarks/input_pipeline.py --data ./kaggle_3m [--work /tmp/tfseg-bench]

Measures in one run:
- packing all patients at 128 px from scratch, and the cached second call;
- seconds from a packed cache to the first training batch (read + verify shards,
  load the training split, first batch) -- the reference re-preprocesses for ~7 min;
- images/s of the training pipeline with augmentation (read + sample + augment,
  no model) and of a reference-sized U-Net training step (32 base filters,
  batch 16, mixed precision where the CPU has it) at 128 and 256 px; the target
  is pipeline >= 10x step;
- size on disk of the packed full set at 128 and 256 px.
Writes benchmarks/results/input_pipeline.json.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.common import images_per_second, write_result  # noqa: E402
from tfseg.training.augment import Augment  # noqa: E402
from tfseg.data.pipeline import load_slices, training_dataset  # noqa: E402
from tfseg.data.records import read_manifest  # noqa: E402
from tfseg.data.split import split_patients  # noqa: E402
from tfseg.losses import get_loss  # noqa: E402
from tfseg.models import build_model  # noqa: E402
from tfseg.training.trainer import AugmentedTrainer  # noqa: E402
from tfseg.training.runtime import choose_precision  # noqa: E402

BATCH = 16


def timed_pack(data: str, out: Path, size: int) -> float:
    """Wall time of `python -m tfseg.data.pack` as a user runs it (new process, imports included)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tfseg.data.pack", "--data", data, "--out", str(out),
                    "--image-size", str(size)], check=True, cwd=Path(__file__).resolve().parents[1])
    return time.perf_counter() - started


def seconds_to_first_batch(folder: Path) -> float:
    """Fresh process: import, verify + load the training split, build the pipeline, first batch."""
    code = (
        "import time; t = time.perf_counter()\n"
        "from tfseg.data.records import read_manifest\n"
        "from tfseg.data.split import split_patients\n"
        "from tfseg.data.pipeline import load_slices, training_dataset\n"
        f"m = read_manifest({str(folder)!r}); train, _ = split_patients(m['patients'], min(10, len(m['patients']) - 1))\n"
        f"ds, _ = training_dataset(load_slices({str(folder)!r}, train), {BATCH})\n"
        "next(iter(ds)); print(time.perf_counter() - t)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    return float(out.stdout.strip().splitlines()[-1])


def pipeline_rate(table, steps: int) -> float:
    """Images/s of read + sample + augment (the augmentation as the train step runs it, compiled)."""
    augment = Augment(seed=0)
    iterator = iter(training_dataset(table, BATCH, seed=0)[0])

    @tf.function
    def augmented(image, mask):
        return augment(image, mask, training=True)

    return images_per_second(lambda: [t.numpy() for t in augmented(*next(iterator))], BATCH, steps)


def step_rate(table, size: int, steps: int) -> float:
    """Images/s of a U-Net (base 32) training step fed by the same pipeline."""
    keras.mixed_precision.set_global_policy(choose_precision("auto")[0])
    trainer = AugmentedTrainer(build_model("unet", (size, size, 3), 32), Augment(seed=0))
    trainer.compile(optimizer=keras.optimizers.Adam(1e-4), loss=get_loss("dice"))
    ds, _ = training_dataset(table, BATCH, seed=0)
    trainer.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)
    iterator, step = iter(ds), trainer.make_train_function()
    value = images_per_second(lambda: step(iterator), BATCH, steps)
    keras.mixed_precision.set_global_policy("float32")
    return value


def folder_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 2**20


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="kaggle_3m", help="kaggle_3m folder (all 110 patients for the headline)")
    parser.add_argument("--work", default="/tmp/tfseg-bench", help="scratch folder for the packed shards")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per measurement")
    args = parser.parse_args(argv)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    result: dict = {"data": os.path.abspath(args.data), "batch_size": BATCH}
    for size in (128, 256):
        folder = work / f"{size}px"
        first = timed_pack(args.data, folder, size)
        second = timed_pack(args.data, folder, size)
        manifest = read_manifest(folder)
        train, _ = split_patients(manifest["patients"], val_cases=min(10, len(manifest["patients"]) - 1))
        table = load_slices(folder, train)
        pipe = pipeline_rate(table, steps=5 * args.steps)
        step = step_rate(table, size, args.steps)
        result[f"{size}px"] = {
            "patients": len(manifest["patients"]), "slices": manifest["total_slices"],
            "pack_seconds": first, "pack_cached_seconds": second,
            "seconds_to_first_batch_from_cache": seconds_to_first_batch(folder),
            "size_on_disk_mib": folder_mib(folder),
            "pipeline_images_per_second": pipe, "train_step_images_per_second": step,
            "pipeline_over_step": pipe / step,
        }
        print(f"{size} px: {result[f'{size}px']}", flush=True)
        del table
    write_result("input_pipeline.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
