"""A full disk, for real (a small tmpfs): one line naming what could not be written, nothing half-written,
and what was there before kept. Needs root to mount a tmpfs; skips otherwise."""
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from tfseg.cli import pack as pack_cli
from tfseg.cli import report as report_cli

ROOT = Path(__file__).resolve().parents[1]
FULL = "the disk is full writing "
KEPT = "nothing was half-written (tfseg writes to a temporary name, then renames), so the previous files are kept"


@pytest.fixture
def small_disk(tmp_path):
    """A mounted tmpfs of 256 KiB; yields a function that mounts it (size in KiB) and returns its path."""
    mounts = []

    def mount(kib: int) -> Path:
        where = tmp_path / f"disk{len(mounts)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'})")
        mounts.append(where)
        return where

    yield mount
    for where in mounts:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_packing_onto_a_disk_too_small_refuses_before_writing_with_the_space_needed(phantom_dir, small_disk, capsys):
    disk = small_disk(64)
    out = disk / "tfrecords"
    assert pack_cli.main(["--data", str(phantom_dir), "--out", str(out), "--image-size", "64"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: packing 4 patients at 64 px needs about") and "MiB free" in err
    assert "nothing was written" in err and list(out.iterdir()) == []


def test_a_report_that_fills_the_disk_is_one_line_and_the_old_report_is_kept(small_disk, capsys):
    disk = small_disk(96)
    old = disk / "REPORT.md"
    old.write_text("# the previous report\n")
    (disk / "filler").write_bytes(b"\0" * (60 * 1024))  # leave too little for the figures
    runs = [str(ROOT / "results" / "cpu-128" / name) for name in ("b16-onecycle1e-3", "b16-reference-settings")]
    assert report_cli.main(runs + ["-o", str(old)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: the disk is full writing {disk}") and err.count("\n") == 1, err
    assert "the previous files are kept" in err
    assert old.read_text() == "# the previous report\n"
    assert not [p for p in disk.rglob(".*tmp-*")], "temporary files left behind"
    os.remove(disk / "filler")


def one_error_line(err: str) -> str:
    """The one ``error:`` line of a command's stderr, after checking that nothing else went wrong loudly."""
    assert "Traceback" not in err, err
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
    return line


def leftovers(folder: Path) -> list[Path]:
    """Temporary names left behind: tfseg's ``.<name>.tmp-<pid>`` and TensorFlow's ``_temp`` / ``tempstate``."""
    return [p for p in folder.rglob("*") if ".tmp-" in p.name or "_temp" in p.name or "tempstate" in p.name]


# What a 64 px U-Net of base 4 writes (measured): best.keras 0.74 MB, then its epoch checkpoint 1.5 MB (weights
# and Adam's two moments); config.json and the TensorBoard files before them take about 60 KiB.
TINY_RUN = ["--arch", "unet", "--image-size", "64", "--base-filters", "4", "--batch-size", "4", "--epochs", "1",
            "--val-cases", "1", "--precision", "float32", "--image-every", "1"]


# 512 KiB: best.keras (Keras's zip writer) is the first file that does not fit; 1200 KiB: best.keras fits and the
# epoch's checkpoint (TensorFlow's SaveV2, which names only a temporary file of its own) does not.
@pytest.mark.parametrize("kib, failing", [(512, "best.keras"), (1200, "checkpoints/epoch-1")])
def test_training_that_fills_the_disk_is_one_line_naming_the_file_and_leaves_nothing_half_written(
        packed_phantom_dir, small_disk, capsys, kib, failing):
    from tfseg.cli import train as train_cli

    disk = small_disk(kib)
    mine = disk / "notes.txt"
    mine.write_text("the user's own file\n")
    run = disk / "run"
    assert train_cli.main(["--data", str(packed_phantom_dir), "--logdir", str(run), *TINY_RUN]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line == f"error: {FULL}{run / failing}: {KEPT}; free some space and continue the run with --resume {run}"
    assert not leftovers(disk), "temporary files left behind"
    assert mine.read_text() == "the user's own file\n"
    assert not (run / "state.json").exists() and not (run / "run.lock").exists()  # no epoch recorded; lock freed
    assert not list(run.glob("checkpoints/epoch-1*"))  # no part of the epoch's checkpoint
    if failing == "best.keras":
        assert not (run / "best.keras").exists()
    else:
        assert zipfile.ZipFile(run / "best.keras").testzip() is None  # written whole before the disk filled


@pytest.fixture(scope="module")
def keras_model(tmp_path_factory):
    """A stand-in network saved as a .keras file (tests/test_serving.py's FLAIR threshold model, 64 px)."""
    from test_serving import flair_threshold_model

    path = tmp_path_factory.mktemp("model") / "flair.keras"
    flair_threshold_model().save(path)
    return path


def test_an_evaluation_that_fills_the_disk_is_one_line_and_the_previous_evaluation_is_kept(
        keras_model, phantom_dir, small_disk, capsys):
    from tfseg.cli import evaluate as evaluate_cli

    disk = small_disk(256)  # one overlay GIF (about 150 KB) fits, the montage after it does not
    out = disk / "eval"
    out.mkdir()
    (out / "summary.json").write_text('{"mean_dsc": 0.5}\n')
    args = ["--model", str(keras_model), "--data", str(phantom_dir), "--patients", "all", "--out", str(out)]
    assert evaluate_cli.main(args) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {FULL}{out}/") and line.endswith(f": {KEPT}; free some space and run the same "
                                                                      "command again"), line
    assert (out / "summary.json").read_text() == '{"mean_dsc": 0.5}\n'
    assert not leftovers(disk), "temporary files left behind"


# TensorFlow's text for a file write that found the disk full (tf.io.write_file on a full tmpfs, TF 2.x).
TF_DISK_FULL = ("{{function_node __wrapped__WriteFile_device_/job:localhost/replica:0/task:0/device:CPU:0}} "
                "/data/run/x.bin; No space left on device [Op:WriteFile]")


def test_a_tensorflow_resource_error_for_a_full_disk_is_the_one_line_error_naming_the_file(capsys):
    import tensorflow as tf

    from tfseg.cli.common import run_command

    def action():
        raise tf.errors.ResourceExhaustedError(None, None, TF_DISK_FULL)

    assert run_command(action) == 2
    assert capsys.readouterr().err == (f"error: {FULL}/data/run/x.bin: {KEPT}; free some space and run the same "
                                       "command again\n")


def test_a_real_tensorflow_write_on_a_full_disk_is_named_the_same_way(small_disk, capsys):
    import tensorflow as tf

    from tfseg.cli.common import run_command

    target = small_disk(64) / "x.bin"
    assert run_command(lambda: tf.io.write_file(str(target), tf.constant(b"0" * 200_000))) == 2
    assert one_error_line(capsys.readouterr().err).startswith(f"error: {FULL}{target}: ")

