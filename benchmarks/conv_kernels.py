"""The three passes of one 3x3 convolution, TensorFlow against PyTorch, at each U-Net level (issue 9).

    python benchmarks/conv_kernels.py [--rounds 3] [--reference-python /path/to/venv-with-torch/bin/python]

A U-Net training step is almost all convolution: forward, input gradient, weight gradient
(benchmarks/profile_step.py shows the split). This times each pass alone, batch 16, float32,
at the shapes of the base-32 U-Net's levels (32 channels at 128 px ... 512 at 8 px): in
TensorFlow as tfseg runs it (NHWC, oneDNN through TensorFlow's thread pool) and, with a
Python that has torch, in PyTorch both in its default NCHW layout (the reference program)
and channels_last (the NHWC kernels TensorFlow gets). Kernel against kernel, this says
whether a difference between the two training steps on a CPU comes from the convolutions
and which pass. TensorFlow and PyTorch take turns in each of ``--rounds`` rounds, and every
figure is the median over rounds of each round's median call (single timings on shared
machines swing by 30-50%). Writes benchmarks/results/conv_kernels.json (or ``--output NAME``)
with every round's figures.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# benchmarks.common imports only the standard library at the top: the torch child (no TensorFlow) loads it too.
from benchmarks.common import add_output_argument, write_result  # noqa: E402

PASSES = ("forward", "input_gradient", "weight_gradient")
# (channels, size) of the base-32 U-Net's 3x3 convolutions with as many inputs as outputs, level by level.
LEVELS = ((32, 128), (64, 64), (128, 32), (256, 16), (512, 8))


def median_ms(run, repeats: int) -> float:
    for _ in range(2):  # warm-up: primitive creation and caches
        run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def tensorflow_passes(channels: int, size: int, batch: int, repeats: int) -> dict[str, float]:
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch, size, size, channels)), tf.float32)
    dy = tf.constant(rng.normal(size=(batch, size, size, channels)), tf.float32)
    w = tf.constant(rng.normal(size=(3, 3, channels, channels)) * 0.05, tf.float32)
    strides = [1, 1, 1, 1]
    ops = {
        "forward": tf.function(lambda: tf.nn.conv2d(x, w, strides, "SAME")),
        "input_gradient": tf.function(lambda: tf.raw_ops.Conv2DBackpropInput(
            input_sizes=list(x.shape), filter=w, out_backprop=dy, strides=strides, padding="SAME")),
        "weight_gradient": tf.function(lambda: tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=list(w.shape), out_backprop=dy, strides=strides, padding="SAME")),
    }
    # TensorFlow runs eagerly and synchronously on a CPU: a call returns once its result is computed.
    return {name: median_ms(op, repeats) for name, op in ops.items()}


def torch_passes(channels: int, size: int, batch: int, repeats: int, channels_last: bool) -> dict[str, float]:
    import torch

    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch, channels, size, size).contiguous(memory_format=layout)
    dy = torch.randn(batch, channels, size, size).contiguous(memory_format=layout)
    w = (torch.randn(channels, channels, 3, 3) * 0.05).contiguous(memory_format=layout)

    def backward(which: list[bool]):
        return torch.ops.aten.convolution_backward(dy, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, which)

    ops = {
        "forward": lambda: torch.nn.functional.conv2d(x, w, padding=1),
        "input_gradient": lambda: backward([True, False, False]),
        "weight_gradient": lambda: backward([False, True, False]),
    }
    with torch.no_grad():
        return {name: median_ms(op, repeats) for name, op in ops.items()}


def torch_child(batch: int, repeats: int) -> None:
    """Run inside the reference Python: print the PyTorch timings as one JSON line."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    result = {f"{layout} {c}x{s}": torch_passes(c, s, batch, repeats, layout == "channels_last")
              for layout in ("NCHW", "channels_last") for c, s in LEVELS}
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "ms": result}))


def torch_timings(python: str, batch: int, repeats: int) -> dict:
    """One round of the PyTorch timings, run by the Python that has torch (this file's --torch-child)."""
    command = [python, os.path.abspath(__file__), "--torch-child", "--batch-size", str(batch), "--repeats", str(repeats)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"the PyTorch timings failed ({' '.join(command)}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds, TensorFlow and PyTorch interleaved (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per pass (median; default %(default)s)")
    parser.add_argument("--reference-python", help="python with torch (default: $TFSEG_REFERENCE_PYTHON)")
    add_output_argument(parser, "conv_kernels.json")
    parser.add_argument("--torch-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("rounds", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} {getattr(args, name)}: give at least 1")
    if args.torch_child:
        torch_child(args.batch_size, args.repeats)
        return 0
    from benchmarks.train_throughput import VECTOR_FLAGS, find_reference_python
    from tfseg.training.runtime import cpu_flags

    reference_python = find_reference_python(args.reference_python)
    if reference_python is None:
        print("no torch here: only TensorFlow is timed (pass --reference-python)", flush=True)
    rounds: list[dict[str, dict[str, float]]] = []
    torch_info = None
    for round_ in range(args.rounds):
        ms = {f"tensorflow NHWC {c}x{s}": tensorflow_passes(c, s, args.batch_size, args.repeats) for c, s in LEVELS}
        if reference_python:
            torch_info = torch_timings(reference_python, args.batch_size, args.repeats)
            ms.update({f"torch {key}": value for key, value in torch_info.pop("ms").items()})
        rounds.append(ms)
        print(f"round {round_ + 1} of {args.rounds} done", flush=True)
    ms = {key: {p: statistics.median([r[key][p] for r in rounds]) for p in PASSES} for key in rounds[0]}
    print(f"{'ms per call, batch ' + str(args.batch_size):40s} " + " ".join(f"{p:>16s}" for p in PASSES))
    for key, passes in ms.items():
        print(f"{key:40s} " + " ".join(f"{passes[p]:16.1f}" for p in PASSES))
    totals = {layout: sum(sum(passes.values()) for key, passes in ms.items() if key.startswith(layout))
              for layout in ("tensorflow NHWC", "torch NCHW", "torch channels_last")}
    write_result(args.output, {
        "batch_size": args.batch_size, "repeats": args.repeats, "levels": [list(level) for level in LEVELS],
        "cpu_flags": sorted(cpu_flags() & VECTOR_FLAGS), "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "rounds": args.rounds, "ms_by_round": rounds, "ms": ms,
        "ms_all_levels_and_passes": {k: v for k, v in totals.items() if v}, "torch": torch_info,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
