"""Where tfseg's training step spends its time on this CPU (issue 9): tf.profiler, summed per op.

    python benchmarks/profile_step.py [--data tfrecords/128px] [--precision auto] [--steps 5] [--onednn]

Builds the step that train_throughput.py times (sampling, augmentation, U-Net base 32,
Dice, Adam, the DSC metric), traces ``--steps`` steps with ``tf.profiler`` and sums the
op events of TensorFlow's compute threads per op type (``_MklNativeConv2DBackpropFilter``:
the convolutions' weight gradients) and per op (which layer, forward or backward).
``--onednn`` runs the same steps again in a child process under ``ONEDNN_VERBOSE=1`` and
sums oneDNN's own timings per primitive and implementation (``jit:avx2 backward_weights``):
which kernels oneDNN chose on this CPU, or under ``ONEDNN_MAX_CPU_ISA=AVX2``.

Summed op time exceeds the wall time of a step: TensorFlow runs independent ops (the
weight and input gradients of one layer) at once, and each then shares the cores.
Prints the tables and writes benchmarks/results/profile_step.json (or ``--output NAME``).
"""
from __future__ import annotations

import argparse
import collections
import glob
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402

from benchmarks.common import add_output_argument, write_result  # noqa: E402
from benchmarks.train_throughput import VECTOR_FLAGS, packed_folder, training_step  # noqa: E402
from tfseg.data.pipeline import load_slices  # noqa: E402
from tfseg.training.runtime import choose_precision, cpu_flags  # noqa: E402

BUILD_STEPS = 2  # training_step runs two steps in fit() to build and trace the function
WARMUP_STEPS = 2


def op_seconds(xspace_path: str) -> dict[str, float]:
    """Seconds per TensorFlow op in a profiler XSpace file, summed over TensorFlow's compute threads.

    Op events are named ``<op name>:<op type>``; other events on those threads (the executor's
    ``ExecutorState::Process`` closures that wrap them) are left out, so nothing is counted twice.
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(xspace_path, "rb") as handle:
        space.ParseFromString(handle.read())
    seconds: dict[str, float] = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" in name and "::" not in name:
                    seconds[name] += event.duration_ps * 1e-12
    return dict(seconds)


def by_type(seconds: dict[str, float]) -> dict[str, float]:
    totals: dict[str, float] = collections.Counter()
    for name, value in seconds.items():
        totals[name.rsplit(":", 1)[1]] += value
    return dict(totals)


def short_op_name(name: str) -> str:
    """'StatefulPartitionedCall/gradient_tape/augmented_trainer_1/unet_1/dec1_conv1_1/convolution/Conv2DBackpropFilter:
    _MklNativeConv2DBackpropFilter' -> 'backward dec1_conv1_1/convolution/Conv2DBackpropFilter'."""
    op = name.rsplit(":", 1)[0]
    parts = op.split("/")
    layer_path = "/".join(parts[-3:]) if len(parts) >= 3 else op
    return f"{'backward' if 'gradient_tape' in parts else 'forward'} {layer_path}"


def parse_onednn_verbose(text: str) -> dict[str, dict]:
    """Sum oneDNN's verbose ``exec`` lines per (primitive, implementation, propagation): ms and count.

    Lines look like ``onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx2,backward_weights,...,53.9``
    (older oneDNN leaves out ``v1,primitive``); the last field is the execution time in ms.
    """
    totals: dict[str, dict] = {}
    for line in text.splitlines():
        fields = line.strip().split(",")
        if not fields or fields[0] not in ("onednn_verbose", "dnnl_verbose") or "exec" not in fields:
            continue
        at = fields.index("exec")
        try:
            kind, implementation, propagation, ms = fields[at + 2], fields[at + 3], fields[at + 4], float(fields[-1])
        except (IndexError, ValueError):
            continue
        entry = totals.setdefault(f"{kind} {implementation} {propagation}", {"ms": 0.0, "count": 0})
        entry["ms"] += ms
        entry["count"] += 1
    return totals


def warm_step(args, policy: str, table):
    """tfseg's training step, built and warmed up: call it to run one more step."""
    step = training_step("unet", policy, False, args.batch_norm, table, 128, args.batch_size)
    for _ in range(WARMUP_STEPS):
        step()
    return step


def profile(args, policy: str, table) -> tuple[dict[str, float], float]:
    """Per-op seconds per step and images/s while tracing ``args.steps`` steps."""
    import tensorflow as tf

    step = warm_step(args, policy, table)
    logdir = tempfile.mkdtemp(prefix="tfseg-profile-")
    tf.profiler.experimental.start(logdir)
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    elapsed = time.perf_counter() - started
    tf.profiler.experimental.stop()
    paths = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))
    if not paths:
        raise SystemExit(f"tf.profiler wrote no .xplane.pb under {logdir}: is this TensorFlow built with the profiler?")
    per_step = {name: value / args.steps for name, value in op_seconds(paths[-1]).items()}
    return per_step, args.steps * args.batch_size / elapsed


def onednn_kernels(argv: list[str], steps_run: int) -> dict[str, dict]:
    """Rerun this script's steps with ONEDNN_VERBOSE=1 in a child; oneDNN ms per step by implementation."""
    command = [sys.executable, os.path.abspath(__file__), *argv, "--onednn-child"]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "ONEDNN_VERBOSE": "1"},
                          check=False)
    if done.returncode:
        raise SystemExit(f"the oneDNN verbose run failed ({' '.join(command)}):\n{done.stderr[-2000:]}")
    totals = parse_onednn_verbose(done.stdout)
    if not totals:
        raise SystemExit("ONEDNN_VERBOSE=1 printed no exec lines: this TensorFlow does not run oneDNN "
                         "(TF_ENABLE_ONEDNN_OPTS=0?)")
    # Every step the child ran is counted (building, warm-up, the steps): the same primitives each time.
    return {key: {"ms_per_step": v["ms"] / steps_run, "calls_per_step": v["count"] / steps_run}
            for key, v in sorted(totals.items(), key=lambda item: -item[1]["ms"])}


def print_table(title: str, rows: dict[str, float], top: int) -> None:
    print(f"\n{title}")
    for name, value in sorted(rows.items(), key=lambda item: -item[1])[:top]:
        print(f"  {value * 1000:9.1f} ms  {name}")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="packed 128 px folder (default: a small synthetic phantom)")
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "mixed_bfloat16", "mixed_float16"],
                        help="auto: what train.py picks on this machine (default); float32 with ONEDNN_MAX_CPU_ISA=AVX2")
    parser.add_argument("--batch-norm", default="fused", choices=["fused", "keras"])
    parser.add_argument("--steps", type=int, default=5, help="steps traced (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--top", type=int, default=25, help="ops listed (default: %(default)s)")
    parser.add_argument("--onednn", action="store_true",
                        help="also sum oneDNN's per-kernel timings (a second run under ONEDNN_VERBOSE=1)")
    add_output_argument(parser, "profile_step.json")
    parser.add_argument("--onednn-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps {args.steps}: give at least 1")
    policy = choose_precision(args.precision)[0]
    folder = packed_folder(args.data, 128)
    table = load_slices(folder)
    if args.onednn_child:  # only run the steps: the parent reads oneDNN's verbose lines from stdout
        step = warm_step(args, policy, table)
        for _ in range(args.steps):
            step()
        return 0
    try:
        per_op, images_per_second = profile(args, policy, table)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    types = by_type(per_op)
    layers: dict[str, float] = collections.Counter()
    for name, value in per_op.items():
        layers[short_op_name(name)] += value
    print(f"{images_per_second:.2f} img/s while tracing; {1 / images_per_second * args.batch_size * 1000:.0f} ms "
          f"wall per step; {sum(per_op.values()) * 1000:.0f} ms of op time per step (ops overlap)")
    print_table("op time per step, by op type", types, args.top)
    print_table("op time per step, by op", dict(layers), args.top)
    kernels = None
    if args.onednn:
        # The child reads the same packed folder (the phantom is not made twice); a later --data wins in argparse.
        child_argv = [a for a in argv if a != "--onednn"] + ["--data", folder]
        kernels = onednn_kernels(child_argv, BUILD_STEPS + WARMUP_STEPS + args.steps)
        print("\noneDNN time per step, by primitive and implementation (ONEDNN_VERBOSE=1)")
        for key, value in kernels.items():
            print(f"  {value['ms_per_step']:9.1f} ms  {value['calls_per_step']:5.1f} calls  {key}")
    write_result(args.output, {
        "image_size": 128, "base_filters": 32, "batch_size": args.batch_size, "steps": args.steps,
        "precision": policy, "batch_norm": args.batch_norm, "data": args.data or "synthetic phantom",
        "cpu_flags": sorted(cpu_flags() & VECTOR_FLAGS), "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "images_per_second_while_tracing": images_per_second,
        "wall_ms_per_step": 1000 * args.batch_size / images_per_second,
        "op_ms_per_step_by_type": {k: 1000 * v for k, v in types.items()},
        "op_ms_per_step_by_op": {k: 1000 * v for k, v in sorted(layers.items(), key=lambda i: -i[1])[:args.top]},
        "onednn_ms_per_step_by_kernel": kernels,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
