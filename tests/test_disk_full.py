"""A full disk, for real (a small tmpfs): one line naming what could not be written, nothing half-written,
and what was there before kept. Needs root to mount a tmpfs; skips otherwise."""
import os
import subprocess
from pathlib import Path

import pytest

from tfseg.cli import pack as pack_cli
from tfseg.cli import report as report_cli

ROOT = Path(__file__).resolve().parents[1]


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
