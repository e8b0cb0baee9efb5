"""Multi-worker training: real worker processes on loopback ports, each with its own TF_CONFIG.

Every worker runs `python train.py` exactly as a user would on separate machines; the
chief (worker 0) writes the run folder, the other writes to a temporary folder (TMPDIR
here) that is gone at the end.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tfseg.data.pack import pack

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--image-size", "64", "--base-filters", "4", "--batch-size", "4", "--epochs", "1", "--val-cases", "1",
        "--precision", "float32", "--image-every", "1"]


def free_ports(n: int) -> list[int]:
    """n loopback ports nobody listens on (bound to port 0 together, so they differ)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def start_worker(index: int, ports: list[int], args: list[str], tmp_path: Path, timeout: float = 60,
                 code: str | None = None) -> subprocess.Popen:
    """`python train.py ARGS` (or `python -c CODE ARGS`) as worker ``index`` of a loopback cluster."""
    tmpdir = tmp_path / f"tmp{index}"
    tmpdir.mkdir(exist_ok=True)
    env = {**os.environ, "TF_CONFIG": tf_config(ports, index), "TFSEG_WORKER_TIMEOUT": str(timeout),
           "TMPDIR": str(tmpdir), "TF_CPP_MIN_LOG_LEVEL": "3", "TFSEG_QUIET": "1"}
    program = ["-c", textwrap.dedent(code)] if code else ["train.py"]
    log = open(tmp_path / f"worker{index}.log", "a")
    return subprocess.Popen([sys.executable, *program, *args], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, text=True)


def finish(workers: list[subprocess.Popen], tmp_path: Path, timeout: float = 400) -> list[int]:
    """Return codes of every worker (killing all of them if one hangs past ``timeout``)."""
    try:
        return [w.wait(timeout) for w in workers]
    except subprocess.TimeoutExpired:
        for w in workers:
            w.kill()
        logs = "\n".join((tmp_path / f"worker{i}.log").read_text()[-2000:] for i in range(len(workers)))
        raise AssertionError(f"a worker hung past {timeout} s:\n{logs}") from None


def log(tmp_path: Path, index: int) -> str:
    return (tmp_path / f"worker{index}.log").read_text()


def train_two_workers(data: Path, run: Path, tmp_path: Path, extra: list[str] = ()) -> None:
    ports = free_ports(2)
    workers = [start_worker(i, ports, ["--data", str(data), "--logdir", str(run), *TINY, *extra], tmp_path)
               for i in range(2)]
    codes = finish(workers, tmp_path)
    assert codes == [0, 0], log(tmp_path, 0)[-3000:] + log(tmp_path, 1)[-3000:]


def worker_folders(tmp_path: Path) -> set[str]:
    """The other worker's temporary run folders in its TMPDIR (TensorFlow also writes autograph files there)."""
    return {p.name for p in (tmp_path / "tmp1").glob("tfseg-worker-*")}


def check_chief_run(run: Path, tmp_path: Path, epochs: int = 1, left_by_a_kill: set[str] = frozenset()) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == epochs and 0.0 <= metrics["best_val_volume_dsc"] <= 1.0
    config = json.loads((run / "config.json").read_text())
    # TensorFlow's class behind tf.distribute.MultiWorkerMirroredStrategy is CollectiveAllReduceStrategy
    assert config["strategy"] == {"strategy": "CollectiveAllReduceStrategy", "replicas": 2}
    assert (run / "export" / "saved_model.pb").is_file() and (run / "best.keras").is_file()
    assert worker_folders(tmp_path) == set(left_by_a_kill)  # the other worker's temporary run folder is gone
    return metrics


def test_two_workers_train_one_epoch_on_the_phantom_and_the_chief_writes_metrics_and_export(
        packed_phantom_dir, tmp_path):
    run = tmp_path / "run"
    train_two_workers(packed_phantom_dir, run, tmp_path)
    check_chief_run(run, tmp_path)
    import tensorflow as tf

    served = tf.saved_model.load(str(run / "export")).signatures["serving_default"](
        image=tf.zeros((1, 64, 64, 3)))["probabilities"]
    assert served.shape == (1, 64, 64, 1) and np.isfinite(served.numpy()).all()


def test_two_workers_train_one_epoch_on_real_patients(real_data_dir, tmp_path):
    packed = tmp_path / "tfr"
    pack(real_data_dir, packed, image_size=64, progress=False)  # once, before the workers read it
    run = tmp_path / "run"
    train_two_workers(packed, run, tmp_path)
    metrics = check_chief_run(run, tmp_path)
    assert len(metrics["val_volume_dsc_by_patient"]) == 1


# Worker 1 kills itself (SIGKILL, no clean-up) once it has finished epoch 1.
KILL_AFTER_EPOCH_1 = """
    import os, signal, sys
    sys.argv[0] = "train.py"
    from tfseg.training import callbacks as cb
    write = cb.ResumeState.on_epoch_end
    def write_then_die(self, epoch, logs=None):
        write(self, epoch, logs)
        os.kill(os.getpid(), signal.SIGKILL)
    cb.ResumeState.on_epoch_end = write_then_die
    from tfseg.cli import train
    sys.exit(train.main(sys.argv[1:]))
"""


def test_a_killed_worker_stops_the_chief_with_a_clear_error_and_the_cluster_resumes_and_exports(
        packed_phantom_dir, tmp_path):
    run = tmp_path / "run"
    ports = free_ports(2)
    args = ["--data", str(packed_phantom_dir), "--logdir", str(run), *TINY, "--epochs", "2"]
    workers = [start_worker(0, ports, args, tmp_path, timeout=20),
               start_worker(1, ports, args, tmp_path, timeout=20, code=KILL_AFTER_EPOCH_1)]
    codes = finish(workers, tmp_path)
    assert codes[1] == -signal.SIGKILL
    assert codes[0] != 0, "the chief went on without its peer"
    chief = log(tmp_path, 0)
    assert "worker" in chief and ("died" in chief or "no progress" in chief), chief[-3000:]
    assert json.loads((run / "state.json").read_text())["epoch"] == 1

    killed_folder = worker_folders(tmp_path)  # kill -9 leaves the dead worker's own temporary folder
    ports = free_ports(2)
    workers = [start_worker(i, ports, ["--resume", str(run)], tmp_path) for i in range(2)]
    assert finish(workers, tmp_path) == [0, 0], log(tmp_path, 0)[-3000:] + log(tmp_path, 1)[-3000:]
    assert "resumed" in log(tmp_path, 1)
    check_chief_run(run, tmp_path, epochs=2, left_by_a_kill=killed_folder)


def test_a_missing_worker_is_a_clear_error_naming_its_address_not_a_hang(packed_phantom_dir, tmp_path):
    ports = free_ports(2)
    alone = start_worker(0, ports, ["--data", str(packed_phantom_dir), "--logdir", str(tmp_path / "run"), *TINY],
                         tmp_path, timeout=3)
    assert finish([alone], tmp_path, timeout=300) == [-signal.SIGKILL]  # by its watchdog process
    assert f"not answering: 127.0.0.1:{ports[1]}" in log(tmp_path, 0)
    assert "TFSEG_WORKER_TIMEOUT" in log(tmp_path, 0)


def test_a_malformed_tf_config_is_an_error_showing_the_expected_shape(monkeypatch):
    from tfseg.training.runtime import ClusterError, cluster_spec

    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker",
                                                                                          "index": 1}}))
    with pytest.raises(ClusterError, match="is not in its cluster"):
        cluster_spec()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ClusterError, match='it should look like {"cluster"'):
        cluster_spec()


def test_worker_shares_of_each_global_batch_are_the_single_device_batch_without_duplicates(packed_phantom_dir):
    """The sampled stream split over 2 workers x 2 local replicas: concatenated in worker/replica order, each
    step's pieces are exactly the single-device batch (the same slices, none twice beyond the sampling itself)."""
    from tfseg.data.pipeline import _training_stream, load_slices

    table = load_slices(packed_phantom_dir)
    make, steps = _training_stream(table, 8, seed=5, start_epoch=0, epochs=1, context=1)
    whole = [m.numpy() for _, m in make(0, 1, 1)]
    parts = [[m.numpy() for _, m in make(w, 2, 2)] for w in range(2)]
    for step in range(steps):
        pieces = [parts[w][step * 2 + r] for w in range(2) for r in range(2)]
        assert all(p.shape[0] == 2 for p in pieces)
        np.testing.assert_array_equal(np.concatenate(pieces), whole[step])
