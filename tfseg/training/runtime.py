"""The machine a run uses: dtype policy, distribution strategy, and facts for config.json."""
from __future__ import annotations

import json
import os
import platform

import keras
import tensorflow as tf


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_bf16() -> bool:
    """Whether the CPU computes bfloat16 natively (AVX-512 BF16 or AMX)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def choose_precision(requested: str = "auto") -> tuple[str, str]:
    """Return (policy name, why). ``auto``: mixed_float16 on a GPU, mixed_bfloat16 on a
    CPU with native bfloat16 (AVX-512 BF16 or AMX; ~2× faster than float32 here), else float32."""
    if requested != "auto":
        return requested, "requested"
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16", "a GPU is visible"
    if cpu_has_bf16():
        return "mixed_bfloat16", "the CPU supports bfloat16 (AVX-512 BF16/AMX)"
    return "float32", "no GPU and no native bfloat16 on this CPU"


def set_precision(requested: str = "auto") -> str:
    policy, why = choose_precision(requested)
    keras.mixed_precision.set_global_policy(policy)
    print(f"precision: {policy} ({why})")
    return policy


def choose_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirrored when TF_CONFIG is set, Mirrored with several GPUs (or several
    logical CPUs configured by the caller), otherwise the default strategy."""
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    cpus = tf.config.list_logical_devices("CPU")
    if not gpus and len(cpus) > 1:  # only when someone split the CPU on purpose (tests)
        return tf.distribute.MirroredStrategy([d.name for d in cpus])
    return tf.distribute.get_strategy()


def machine_info() -> dict:
    import numpy
    import skimage

    return {
        "cpu": cpu_model(),
        "cpu_bf16": cpu_has_bf16(),
        "cpu_count": os.cpu_count(),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "scikit-image": skimage.__version__,
    }


def code_version() -> dict:
    """The git commit of the tfseg checkout and whether it had uncommitted changes (None outside git)."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": bool(dirty) if commit else None}


def describe(strategy: tf.distribute.Strategy) -> str:
    return json.dumps({"strategy": type(strategy).__name__, "replicas": strategy.num_replicas_in_sync})
