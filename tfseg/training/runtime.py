"""The machine a run uses: dtype policy, distribution strategy, and facts for config.json."""
from __future__ import annotations

import json
import os
import platform

import keras
import tensorflow as tf

from tfseg.errors import TfsegError


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


# Seconds a worker waits for the rest of its cluster (to start, or to finish a training step)
# before it stops with an error naming the workers it cannot reach. Override: TFSEG_WORKER_TIMEOUT.
WORKER_TIMEOUT_SECONDS = 600.0
# Added to the wait for the first step of a run, which traces and compiles the training step.
FIRST_STEP_EXTRA_SECONDS = 300.0

_MULTI_WORKER: tf.distribute.Strategy | None = None  # TensorFlow allows one per process


class ClusterError(TfsegError, RuntimeError):
    """TF_CONFIG is unusable, or a worker of the cluster is missing or died."""


def choose_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirrored when TF_CONFIG is set, Mirrored with several GPUs (or several
    logical CPUs configured by the caller), otherwise the default strategy.

    Call it before anything else touches TensorFlow (``train()`` does so first): the
    collective ops of MultiWorkerMirroredStrategy can only be configured before
    TensorFlow's context starts. The multi-worker strategy is created once per process
    and waits at most ``worker_timeout()`` seconds for the other workers (``ClusterError``).
    """
    global _MULTI_WORKER
    if os.environ.get("TF_CONFIG"):
        if _MULTI_WORKER is None:
            spec = cluster_spec()
            with Watchdog(worker_timeout(), spec, "waiting for every worker to start"):
                _MULTI_WORKER = tf.distribute.MultiWorkerMirroredStrategy()
                wait_for_cluster(_MULTI_WORKER)
        return _MULTI_WORKER
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    cpus = tf.config.list_logical_devices("CPU")
    if not gpus and len(cpus) > 1:  # only when someone split the CPU on purpose (tests)
        return tf.distribute.MirroredStrategy([d.name for d in cpus])
    return tf.distribute.get_strategy()


def worker_timeout() -> float:
    value = os.environ.get("TFSEG_WORKER_TIMEOUT", str(WORKER_TIMEOUT_SECONDS))
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise ClusterError(f"TFSEG_WORKER_TIMEOUT={value!r} is not a positive number of seconds")
    return seconds


def cluster_spec() -> dict:
    """TF_CONFIG checked: {"workers": [address, ...] (chief first), "task": (type, index), "chief": bool}.

    Raises ClusterError naming what is wrong and showing the expected shape.
    """
    raw = os.environ.get("TF_CONFIG", "")
    example = ('{"cluster": {"worker": ["host1:23456", "host2:23456"]}, "task": {"type": "worker", "index": 0}}')
    try:
        config = json.loads(raw)
        workers = list(config["cluster"].get("chief", [])) + list(config["cluster"]["worker"])
        task_type, index = config["task"]["type"], int(config["task"]["index"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ClusterError(f"TF_CONFIG is not a usable cluster description ({type(err).__name__}: {err}); "
                           f"it should look like {example}") from None
    jobs = config["cluster"]
    if task_type not in ("chief", "worker") or not 0 <= index < len(jobs.get(task_type, [])):
        raise ClusterError(f"TF_CONFIG task {config['task']} is not in its cluster {jobs}; give every worker the "
                           f"same cluster and its own task type (chief/worker) and index, e.g. {example}")
    if set(jobs) - {"chief", "worker"}:
        raise ClusterError(f"TF_CONFIG has jobs {sorted(set(jobs) - {'chief', 'worker'})}: tfseg trains with "
                           "MultiWorkerMirroredStrategy, which only knows 'chief' and 'worker'.")
    chief = task_type == "chief" or ("chief" not in jobs and index == 0)
    return {"workers": workers, "task": (task_type, index), "chief": chief}


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run folder: always outside multi-worker training."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return cluster_spec()["chief"]


def wait_for_cluster(strategy: tf.distribute.Strategy) -> None:
    """A barrier: returns once every worker has reached it (a dummy all-reduce)."""
    strategy.run(lambda: tf.distribute.get_replica_context().all_reduce("sum", tf.constant(1.0)))


class Watchdog:
    """Stop this worker with a clear message when the cluster makes no progress for ``seconds``.

    Armed with ``with Watchdog(...)`` or ``arm()``/``disarm()`` from callbacks. The deadline is
    kept by a child process (``tfseg.training.watchdog``): a worker blocked in a collective
    holds the interpreter lock and ignores SIGTERM, so only another process can stop it
    (SIGKILL, after printing which workers do not answer on their port).
    """

    def __init__(self, seconds: float, spec: dict, stage: str):
        import subprocess
        import sys

        self.seconds, self.stage = seconds, stage
        # Run as a script, not `-m tfseg.training.watchdog`: importing the tfseg package loads TensorFlow
        # (it registers tfseg's Keras objects), and the watchdog must start in a moment and hold no TF.
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "watchdog.py")
        self.child = subprocess.Popen([sys.executable, script, str(os.getpid()), json.dumps(spec)],
                                      stdin=subprocess.PIPE, text=True)

    def _send(self, line: str) -> None:
        try:
            self.child.stdin.write(line + "\n")
            self.child.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass

    def arm(self, stage: str | None = None, extra_seconds: float = 0.0) -> None:
        self.stage = stage or self.stage
        self._send(f"arm {self.seconds + extra_seconds} {self.stage}")

    def disarm(self) -> None:
        self._send("disarm")

    def close(self) -> None:
        if self.child.stdin and not self.child.stdin.closed:
            self.child.stdin.close()
        self.child.wait(10)

    def __enter__(self):
        self.arm()
        return self

    def __exit__(self, *exc):
        self.disarm()
        self.close()


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
