"""Specification of tfseg.data.pack: kaggle_3m -> one GZIP TFRecord shard per patient + manifest.json.

The phantom is packed once at 64 px in worker processes (``packed_phantom_dir``);
tests that change a packed folder work on a copy of the phantom and its shards
(copies keep modification times, so the copy is up to date) and run the workers
as threads of the test process, which skips a TensorFlow import per worker.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tfseg.data import pack as pack_module
from tfseg.data.kaggle import DataError
from tfseg.data.pack import pack
from tfseg.data.pipeline import load_slices

ROOT = Path(__file__).resolve().parents[1]


def patient_folders(root):
    return sorted(p for p in Path(root).iterdir() if p.is_dir())


def mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in Path(folder).iterdir()}


def contents(folder):
    return {p.name: p.read_bytes() for p in Path(folder).iterdir()}


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def in_process(monkeypatch):
    """Run pack()'s workers as threads of this process (same code path, no process start-up)."""
    monkeypatch.setattr(pack_module, "ProcessPoolExecutor",
                        lambda workers, **kwargs: ThreadPoolExecutor(workers))


@pytest.fixture
def packed_patients(monkeypatch):
    """Calls of pack's _pack_all, each as the sorted names of the patients it was asked to pack."""
    calls = []
    real = pack_module._pack_all

    def spy(todo, *args, **kwargs):
        calls.append(sorted(f.patient for f in todo))
        return real(todo, *args, **kwargs)

    monkeypatch.setattr(pack_module, "_pack_all", spy)
    return calls


@pytest.fixture
def packed_copy(phantom_dir, packed_phantom_dir, tmp_path):
    """(data, out): copies of the phantom and of its packed shards, up to date with each other."""
    data, out = tmp_path / "kaggle_3m", tmp_path / "tfrecords"
    shutil.copytree(phantom_dir, data)
    shutil.copytree(packed_phantom_dir, out)
    return data, out


def test_writes_one_gzip_shard_per_patient_and_a_manifest(phantom_dir, packed_phantom_dir):
    names = [p.name for p in patient_folders(phantom_dir)]
    files = sorted(p.name for p in packed_phantom_dir.iterdir())
    assert files == sorted([f"{name}.tfrecord.gz" for name in names] + ["manifest.json"])
    for name in names:
        assert (packed_phantom_dir / f"{name}.tfrecord.gz").read_bytes()[:2] == b"\x1f\x8b"  # gzip magic


def test_manifest_records_source_image_size_and_preprocessing_parameters(phantom_dir, packed_phantom_dir):
    manifest = json.loads((packed_phantom_dir / "manifest.json").read_text())
    assert manifest["source"] == str(Path(phantom_dir).resolve())
    assert manifest["image_size"] == 64
    assert manifest["image_dtype"] == "float16"
    assert manifest["drop_first_last"] is True
    assert manifest["crop_threshold"] == 0.1
    assert manifest["percentiles"] == [10.0, 99.0]
    assert manifest["image_order"] == 2
    assert manifest["format_version"] == 1


def test_manifest_lists_every_patient_with_slices_and_the_sha256_of_its_shard(phantom_dir, packed_phantom_dir):
    manifest = json.loads((packed_phantom_dir / "manifest.json").read_text())
    patients = manifest["patients"]
    assert sorted(patients) == [p.name for p in patient_folders(phantom_dir)]
    for name, entry in patients.items():
        assert entry["shard"] == f"{name}.tfrecord.gz"
        assert entry["sha256"] == sha256(packed_phantom_dir / entry["shard"])
        assert entry["source_slices"] == 12
        assert 0 < entry["slices"] <= 10
        assert entry["slices"] == entry["geometry"]["z1"] - entry["geometry"]["z0"]
        assert entry["tumor_pixels"] > 0
    assert manifest["total_slices"] == sum(e["slices"] for e in patients.values())


def test_no_temporary_files_are_left_after_packing(packed_phantom_dir):
    leftovers = [p.name for p in packed_phantom_dir.iterdir() if p.name.startswith(".") or ".tmp" in p.name]
    assert leftovers == []


def test_a_second_call_does_no_work(phantom_dir, packed_phantom_dir, monkeypatch):
    before = mtimes(packed_phantom_dir)
    stored = json.loads((packed_phantom_dir / "manifest.json").read_text())

    def must_not_pack(*args, **kwargs):
        raise AssertionError("pack() repacked patients whose shards are up to date")

    monkeypatch.setattr(pack_module, "_pack_all", must_not_pack)
    manifest = pack(phantom_dir, packed_phantom_dir, image_size=64, progress=False)
    assert manifest == stored
    assert mtimes(packed_phantom_dir) == before  # neither shards nor manifest rewritten


def test_a_different_image_size_repacks_every_patient(packed_copy, in_process, packed_patients):
    data, out = packed_copy
    manifest = pack(data, out, image_size=32, workers=1, progress=False)
    assert packed_patients == [[p.name for p in patient_folders(data)]]
    assert manifest["image_size"] == 32
    assert load_slices(out).images.shape[1:] == (32, 32, 3)


def test_changing_one_source_file_repacks_only_that_patient(packed_copy, in_process, packed_patients):
    data, out = packed_copy
    folder = patient_folders(data)[1]
    path = folder / f"{folder.name}_5.tif"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    others = {name: t for name, t in mtimes(out).items() if name.endswith(".gz") and folder.name not in name}
    manifest = pack(data, out, image_size=64, workers=1, progress=False)
    assert packed_patients == [[folder.name]]
    assert {name: t for name, t in mtimes(out).items() if name in others} == others
    assert manifest["patients"][folder.name]["sha256"] == sha256(out / f"{folder.name}.tfrecord.gz")


def test_a_patient_removed_from_the_source_loses_its_shard(packed_copy, packed_patients):
    data, out = packed_copy
    gone = patient_folders(data)[0].name
    shutil.rmtree(data / gone)
    manifest = pack(data, out, image_size=64, progress=False)
    assert packed_patients == []
    assert gone not in manifest["patients"] and not (out / f"{gone}.tfrecord.gz").exists()


def corrupt(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_shard_whose_bytes_changed_makes_load_slices_ask_for_a_repack(packed_copy):
    _, out = packed_copy
    shard = sorted(out.glob("*.tfrecord.gz"))[2]
    corrupt(shard)
    with pytest.raises(DataError) as info:
        load_slices(out)
    message = str(info.value)
    assert shard.name in message and "does not match the SHA-256" in message
    assert "repack with `python -m tfseg.data.pack`" in message


def test_pack_rewrites_a_shard_whose_bytes_changed_byte_for_byte_as_first_written(packed_copy, in_process, packed_patients):
    data, out = packed_copy
    shard = sorted(out.glob("*.tfrecord.gz"))[2]
    good = shard.read_bytes()
    corrupt(shard)
    pack(data, out, image_size=64, workers=1, progress=False)
    assert packed_patients == [[shard.name.removesuffix(".tfrecord.gz")]]
    assert shard.read_bytes() == good  # deterministic, even across processes (different hash seeds)
    assert len(load_slices(out)) == json.loads((out / "manifest.json").read_text())["total_slices"]


def test_a_worker_failure_in_a_fresh_folder_writes_nothing(phantom_dir, tmp_path):
    """In real worker processes: the read error crosses the process boundary and nothing is left."""
    data, out = tmp_path / "kaggle_3m", tmp_path / "tfrecords"
    src = patient_folders(phantom_dir)[0]
    shutil.copytree(src, data / src.name)
    broken = data / src.name / f"{src.name}_4.tif"
    broken.write_bytes(b"not a TIFF" * 50)
    with pytest.raises(DataError, match=broken.name):
        pack(data, out, image_size=64, workers=1, progress=False)
    assert list(out.iterdir()) == []


def test_a_failure_while_packing_leaves_the_previous_shards_and_manifest_untouched(
        packed_copy, in_process, packed_patients):
    data, out = packed_copy
    first, *_, last = patient_folders(data)
    path = first / f"{first.name}_5.tif"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # repacked first...
    broken = last / f"{last.name}_4.tif"
    broken.write_bytes(b"not a TIFF" * 50)  # ...then this patient fails
    before = contents(out)
    with pytest.raises(DataError, match=broken.name):
        pack(data, out, image_size=64, workers=1, progress=False)
    assert packed_patients == [[first.name, last.name]]
    assert contents(out) == before  # no new shard, no temporary file, same manifest


def test_a_patient_of_constant_intensity_is_an_error_naming_it_and_writes_nothing(phantom_dir, tmp_path,
                                                                                 in_process):
    data, out = tmp_path / "kaggle_3m", tmp_path / "tfrecords"
    src = patient_folders(phantom_dir)[0]
    shutil.copytree(src, data / src.name)
    for path in (data / src.name).glob("*[0-9].tif"):
        tifffile.imwrite(path, np.full((256, 256, 3), 100, np.uint8), photometric="rgb")
    with pytest.raises(DataError, match=f"{src.name}: the image volume has constant intensity"):
        pack(data, out, image_size=64, workers=1, progress=False)
    assert list(out.iterdir()) == []


def test_the_packing_parent_process_does_not_load_tensorflow():
    """Only the workers preprocess; TensorFlow takes seconds to import, so the parent leaves it alone."""
    code = "import sys, tfseg.data.pack; print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_pack_command_on_a_broken_folder_exits_nonzero_with_the_error_and_writes_nothing(phantom_dir, tmp_path):
    data, out = tmp_path / "kaggle_3m", tmp_path / "tfrecords"
    src = patient_folders(phantom_dir)[0]
    shutil.copytree(src, data / src.name)
    (data / src.name / f"{src.name}_7_mask.tif").unlink()
    result = subprocess.run([sys.executable, "-m", "tfseg.data.pack", "--data", str(data), "--out", str(out),
                             "--image-size", "64"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert f"{src.name}_7.tif" in result.stderr and "image without its mask" in result.stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_image_size_that_is_not_a_multiple_of_16_is_rejected(phantom_dir, tmp_path):
    with pytest.raises(ValueError, match="multiple of 16"):
        pack(phantom_dir, tmp_path / "out", image_size=100, progress=False)
    assert not (tmp_path / "out").exists()


# --- faults: a packer killed or interrupted --------------------------------------------------------


def _children(pid: int) -> set[int]:
    listing = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return {int(p) for p in listing.split()}


def _alive(pids) -> set[int]:
    from tfseg.fileio import process_is_alive

    return {p for p in pids if process_is_alive(p) and
            "Z" not in subprocess.run(["ps", "-o", "stat=", "-p", str(p)], capture_output=True, text=True).stdout}


def _wait_for(predicate, timeout: float, what: str):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _packer_with_a_temporary_shard(data, out):
    """A `python -m tfseg.data.pack` process (2 workers), returned once its first temporary shard exists."""
    import signal

    # As in a terminal, Ctrl-C must raise KeyboardInterrupt in the packer. A test suite started in the background
    # (`cmd &` in a script, nohup) inherits SIGINT ignored, and Python then keeps ignoring it: reset it.
    packer = subprocess.Popen([sys.executable, "-m", "tfseg.data.pack", "--data", str(data), "--out", str(out),
                               "--image-size", "64", "--workers", "2"], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    workers = set()

    def first_temporary():
        workers.update(_children(packer.pid))  # collected while the packer lives: orphans change parent
        assert packer.poll() is None, "the packer finished before it could be interrupted"
        return list(out.glob(".*.tmp-*"))

    _wait_for(first_temporary, 120, "the first temporary shard")
    return packer, workers


def test_a_packer_killed_with_sigkill_leaves_no_workers_and_the_next_pack_removes_its_temporaries(
        phantom_dir, packed_phantom_dir, tmp_path, in_process):
    import signal

    out = tmp_path / "tfrecords"
    packer, workers = _packer_with_a_temporary_shard(phantom_dir, out)
    assert len(workers) >= 2
    packer.send_signal(signal.SIGKILL)
    packer.wait(10)
    assert list(out.glob(".*.tmp-*")), "kill -9 should leave the temporary shard behind"
    _wait_for(lambda: not _alive(workers), 15, f"the orphaned workers {sorted(_alive(workers))} to exit")

    manifest = pack(phantom_dir, out, image_size=64, progress=False)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    expected = json.loads((packed_phantom_dir / "manifest.json").read_text())["patients"]
    assert {n: e["sha256"] for n, e in manifest["patients"].items()} == {n: e["sha256"] for n, e in expected.items()}


def test_ctrl_c_stops_the_packers_workers_removes_its_temporaries_and_says_how_to_finish(phantom_dir, tmp_path):
    import signal

    out = tmp_path / "tfrecords"
    packer, workers = _packer_with_a_temporary_shard(phantom_dir, out)
    packer.send_signal(signal.SIGINT)  # to the parent only, as `kill -INT` does
    _, stderr = packer.communicate(timeout=30)
    assert packer.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr and "Run the same command again" in stderr
    _wait_for(lambda: not _alive(workers), 10, f"the workers {sorted(_alive(workers))} to exit")
    assert list(out.iterdir()) == []


def test_only_temporaries_of_writers_that_no_longer_run_are_removed(tmp_path):
    from tfseg.fileio import remove_dead_temporaries

    finished = subprocess.Popen(["true"])
    finished.wait()
    dead = tmp_path / f".A.tfrecord.gz.tmp-{finished.pid}"
    live = tmp_path / f".B.tfrecord.gz.tmp-{os.getppid()}"  # e.g. a second packer still writing
    for path in (dead, live):
        path.write_bytes(b"partial")
    assert remove_dead_temporaries(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]
