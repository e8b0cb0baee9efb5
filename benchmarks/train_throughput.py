"""Training images/s of tfseg against the reference's PyTorch step, side by side in one run (issue 9).

    python benchmarks/train_throughput.py [--data tfrecords/128px] [--rounds 3] \
        [--reference-python /path/to/venv-with-torch/bin/python] [--reference-dir brain-segmentation-pytorch]

tfseg is timed end to end: the tf.data training pipeline (sampling), augmentation in
the train step, forward, Dice loss, backward, Adam update, the DSC metric. The
reference is ``benchmarks/reference_torch_step.py`` (the same network, size and
batch in PyTorch fp32) run by a Python that has torch. Every variant and the
reference are interleaved in each of ``--rounds`` rounds and the medians are
compared (single timings on shared machines swing ±30–50%). Variants: float32 and,
on a CPU with bfloat16, mixed_bfloat16; each with and without XLA (``jit_compile``);
with ``--keras-batch-norm`` also each with Keras's own BatchNormalization in place of
tfseg's fused one (tfseg.models.normalization), to time what the fused kernel gains.
``--float32-only`` skips the mixed-precision variants (with ``ONEDNN_MAX_CPU_ISA=AVX2``:
an estimate for AVX2-only CPUs). Writes benchmarks/results/train_throughput.json (or
``--output NAME``) with the CPU model and flags, every sample, the medians and each
variant's ratio to the reference.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402

from benchmarks.common import add_output_argument, images_per_second, median, write_result  # noqa: E402
from tfseg.data.pipeline import load_slices, training_dataset  # noqa: E402
from tfseg.losses import get_loss  # noqa: E402
from tfseg.metrics import DiceCoefficient  # noqa: E402
from tfseg.models import ARCHITECTURES, build_model  # noqa: E402
from tfseg.training.augment import Augment  # noqa: E402
from tfseg.training.runtime import choose_precision, cpu_flags  # noqa: E402
from tfseg.training.trainer import AugmentedTrainer  # noqa: E402


# The instruction sets that decide convolution speed on a CPU (recorded with every result).
VECTOR_FLAGS = {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile"}
REFERENCE_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference_torch_step.py")


def packed_folder(data: str | None, size: int) -> str:
    if data:
        return data
    from tfseg.data.pack import pack
    from tfseg.data.phantom import write_phantom

    root = tempfile.mkdtemp(prefix="tfseg-bench-")
    write_phantom(os.path.join(root, "kaggle_3m"), n_patients=4, n_slices=24)
    pack(os.path.join(root, "kaggle_3m"), os.path.join(root, "tfr"), size, progress=False)
    return os.path.join(root, "tfr")


def training_step(arch: str, policy: str, xla: bool, batch_norm: str, table, size: int, batch: int):
    """tfseg's compiled training step (the one train.py runs), built and traced; call it to run one step.

    batch_norm: "fused" (tfseg's default) or "keras" (keras.layers.BatchNormalization). Sets the global
    mixed-precision policy to ``policy``: the caller puts it back (see measure_tfseg).
    """
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    trainer = AugmentedTrainer(build_model(arch, (size, size, 3), 32, batch_norm=batch_norm), Augment(seed=0))
    trainer.compile(optimizer=keras.optimizers.Adam(1e-4), loss=get_loss("dice"), metrics=[DiceCoefficient()],
                    jit_compile=xla)
    ds, _ = training_dataset(table, batch, seed=0)
    iterator = iter(ds.repeat())
    trainer.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)  # build + trace outside any timing
    step = trainer.make_train_function()
    return lambda: step(iterator)


def measure_tfseg(arch: str, policy: str, xla: bool, batch_norm: str, table, size: int, batch: int,
                  steps: int) -> float:
    """images/s of tfseg's full training step (the same one train.py compiles)."""
    try:
        return images_per_second(training_step(arch, policy, xla, batch_norm, table, size, batch), batch, steps)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def find_reference_python(given: str | None) -> str | None:
    """The Python that runs the PyTorch step: --reference-python, $TFSEG_REFERENCE_PYTHON, or this one if it has torch."""
    candidate = given or os.environ.get("TFSEG_REFERENCE_PYTHON")
    if candidate:
        if not os.access(candidate, os.X_OK):
            source = "--reference-python" if given else "$TFSEG_REFERENCE_PYTHON"
            raise SystemExit(f"{source} {candidate}: not an executable; give the python of an environment "
                             "made with `pip install -r benchmarks/requirements-reference.txt`.")
        return candidate
    import importlib.util

    return sys.executable if importlib.util.find_spec("torch") else None


def measure_reference(python: str, batch: int, steps: int, reference_dir: str | None) -> float:
    command = [python, REFERENCE_SCRIPT, "--batch-size", str(batch), "--steps", str(steps)]
    if reference_dir:
        command += ["--reference-dir", reference_dir]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"the reference step failed ({' '.join(command)}):\n{done.stderr[-2000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["images_per_second"])


def variants(archs: list[str], mixed: str, xla: bool, keras_batch_norm: bool) -> list[tuple[str, str, bool, str]]:
    policies = ["float32"] + ([mixed] if mixed != "float32" else [])
    norms = ["fused", "keras"] if keras_batch_norm else ["fused"]
    return [(arch, policy, jit, norm) for arch in archs for policy in policies
            for jit in ([False, True] if xla else [False]) for norm in norms]


def label(arch: str, policy: str, xla: bool, batch_norm: str = "fused") -> str:
    return f"{arch} {policy}{' +xla' if xla else ''}{' keras-BN' if batch_norm == 'keras' else ''}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="packed 128 px folder (default: a small synthetic phantom)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--archs", nargs="+", default=["unet"], choices=sorted(ARCHITECTURES))
    parser.add_argument("--no-xla", action="store_true", help="skip the jit_compile variants")
    add_output_argument(parser, "train_throughput.json")
    parser.add_argument("--float32-only", action="store_true",
                        help="skip the mixed-precision variants (e.g. with ONEDNN_MAX_CPU_ISA=AVX2, which makes oneDNN "
                        "in both TensorFlow and PyTorch use AVX2 only: an estimate for AVX2-only CPUs)")
    parser.add_argument("--keras-batch-norm", action="store_true",
                        help="also time every variant with keras.layers.BatchNormalization instead of the fused one")
    parser.add_argument("--reference-python", help="python with torch (default: $TFSEG_REFERENCE_PYTHON or this one)")
    parser.add_argument("--reference-dir", help="checkout of the reference program: time its own unet.py and loss.py")
    args = parser.parse_args(argv)
    size = 128
    table = load_slices(packed_folder(args.data, size))
    mixed = "float32" if args.float32_only else choose_precision("auto")[0]
    reference_python = find_reference_python(args.reference_python)
    if reference_python is None:
        print("no torch here: the reference is not measured (pass --reference-python; see "
              "benchmarks/requirements-reference.txt)", flush=True)
    runs = variants(args.archs, mixed, not args.no_xla, args.keras_batch_norm)
    samples: dict[str, list[float]] = {label(*v): [] for v in runs}
    reference: list[float] = []
    for round_ in range(args.rounds):
        for variant in runs:
            value = measure_tfseg(*variant, table, size, args.batch_size, args.steps)
            samples[label(*variant)].append(value)
            print(f"round {round_ + 1}: {label(*variant):32s} {value:6.1f} img/s", flush=True)
        if reference_python:
            reference.append(measure_reference(reference_python, args.batch_size, args.steps, args.reference_dir))
            print(f"round {round_ + 1}: {'reference (PyTorch fp32)':32s} {reference[-1]:6.1f} img/s", flush=True)
    reference_median = median(reference) if reference else None
    results = {name: {"median": median(v), "samples": v,
                      "over_reference": median(v) / reference_median if reference_median else None}
               for name, v in samples.items()}
    default = label("unet", mixed, False)
    for name, result in results.items():
        ratio = f"  {result['over_reference']:.2f}x the reference" if reference_median else ""
        print(f"{name:32s} median {result['median']:6.1f} img/s{ratio}")
    if reference_median:
        print(f"{'reference (PyTorch fp32)':32s} median {reference_median:6.1f} img/s")
    write_result(args.output, {
        "image_size": size, "base_filters": 32, "batch_size": args.batch_size, "steps": args.steps,
        "rounds": args.rounds, "data": args.data or "synthetic phantom", "cpu_flags": sorted(cpu_flags() & VECTOR_FLAGS),
        "auto_policy": choose_precision("auto")[0], "float32_only": args.float32_only,
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "images_per_second": results,
        "reference": {"median": reference_median, "samples": reference,
                      "source": args.reference_dir or "benchmarks/reference_torch_step.py",
                      "python": reference_python},
        "default_variant": default if default in results else None,
        "default_over_reference": results.get(default, {}).get("over_reference"),
        "target": ">= 1.3x the reference on an AVX2-only CPU, >= 2.5x on a CPU with bf16 (issue 9)",
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
