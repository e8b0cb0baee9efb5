"""One process per run folder (tfseg.runlock): real second processes, a stale lock after kill -9."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tfseg.runlock import RunLockedError, hold_run, live_holder, read_holder
from tfseg.runs import LOCK

HOLDER = """
    import sys, time
    from tfseg.runlock import hold_run
    with hold_run(sys.argv[1], command="holder for the test"):
        print("held", flush=True)
        time.sleep(600)
"""


@pytest.fixture
def holder_process(tmp_path):
    """A real process holding tmp_path/run; yields (process, run folder); killed at the end."""
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(HOLDER), str(run)], stdout=subprocess.PIPE,
                               text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert process.stdout.readline().strip() == "held"
    yield process, run
    process.kill()
    process.wait()


def test_a_second_process_on_a_held_run_folder_refuses_naming_the_holder(holder_process):
    process, run = holder_process
    with pytest.raises(RunLockedError, match=f"in use by process {process.pid} on .*holder for the test"):
        with hold_run(run):
            pass
    assert read_holder(run)["pid"] == process.pid  # the holder's lock is untouched


def test_train_on_a_run_folder_in_use_exits_2_with_one_line_and_writes_nothing(holder_process):
    process, run = holder_process
    before = sorted(p.name for p in run.iterdir())
    quiet = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # tfseg quiets TensorFlow itself
    done = subprocess.run([sys.executable, "-m", "tfseg", "train", "--logdir", str(run), "--data", str(run / "none")],
                          capture_output=True, text=True, timeout=300, env=quiet)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and f"in use by process {process.pid}" in done.stderr
    assert sorted(p.name for p in run.iterdir()) == before


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_message(holder_process, capsys):
    process, run = holder_process
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (run / LOCK).is_file()  # kill -9 leaves it behind
    with hold_run(run, command="second"):
        assert read_holder(run)["pid"] == os.getpid()
    assert f"locked by process {process.pid}" in capsys.readouterr().err
    assert not (run / LOCK).exists()  # released at the end of the block


def test_a_damaged_lock_is_stale(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK).write_text('{"pid": 12')  # a writer killed mid-write
    assert live_holder(run) is None
    with hold_run(run):
        assert read_holder(run)["pid"] == os.getpid()


def test_a_lock_of_another_host_is_respected_and_the_message_says_how_to_release_it(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK).write_text(json.dumps({"pid": 1, "host": "another-host", "started": time.time(), "command": "x"}))
    with pytest.raises(RunLockedError, match="if that host is gone, delete"):
        with hold_run(run):
            pass


def test_evaluate_on_a_run_still_training_scores_the_best_keras_of_now_and_says_so(holder_process, phantom_dir,
                                                                                  tmp_path, capsys):
    from test_serving import SIZE, flair_threshold_model

    from tfseg.cli import evaluate as evaluate_cli
    from tfseg.data.kaggle import scan_folder

    process, run = holder_process
    flair_threshold_model().save(run / "best.keras")  # the best epoch so far, as the training writes it
    names = [f.patient for f in scan_folder(phantom_dir)]
    (run / "config.json").write_text(json.dumps({"config": {"data": str(phantom_dir), "image_size": SIZE},
                                                 "split": {"training": names[:2], "validation": names[2:]}}))
    out = tmp_path / "eval"
    assert evaluate_cli.main(["--model", str(run), "--out", str(out), "--no-overlays"]) == 0
    err = capsys.readouterr().err
    assert (f"note: {run} is still training (process {process.pid} on " in err and "holder for the test" in err
            and "evaluating the weights best.keras holds now, the best epoch so far" in err), err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["patients"] == names[2:] and 0.0 <= summary["mean_dsc"] <= 1.0  # it scored
    assert read_holder(run)["pid"] == process.pid  # the training's lock is left alone
