"""Pack a kaggle_3m folder into preprocessed, GZIP-compressed TFRecord shards.

    python -m tfseg.data.pack --data ./kaggle_3m --out ./tfrecords --image-size 256

One shard per patient, so any split or fold selects whole shards without
repacking. Packing is cached per patient: a shard is rewritten only when its
source files (names, sizes, modification times), the image size, the
preprocessing parameters or the format changed, or its checksum no longer
matches. Every layout problem is reported before anything is written; shards
are written under temporary names and renamed only when all patients succeeded,
then the manifest is replaced atomically.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

import tfseg
from tfseg.data import protocol
from tfseg.data.kaggle import DataError, PatientFiles, read_patient, scan_folder
from tfseg.data.records import (FORMAT_VERSION, IMAGE_DTYPE, MANIFEST, SHARD_SUFFIX, read_manifest, serialize_slices,
                                write_shard)
# Shards are written through fileio's temporary names, so dead writers' leftovers are found the same way.
from tfseg.fileio import TMP_MARK, remove_dead_temporaries, sha256_file, write_json_atomic


def preprocessing_params(image_size: int) -> dict:
    """Everything that changes the content of a shard (the cache key, with the source)."""
    return {
        "format_version": FORMAT_VERSION,
        "image_size": image_size,
        "image_dtype": str(IMAGE_DTYPE.__name__),
        "drop_first_last": True,
        "crop_threshold": protocol.CROP_THRESHOLD,
        "percentiles": list(protocol.PERCENTILES),
        "image_order": protocol.IMAGE_ORDER,
    }


def _patient_key(files: PatientFiles, params: dict) -> str:
    payload = json.dumps({"params": params, "files": files.fingerprint()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _pack_patient(files: PatientFiles, tmp_path: str, image_size: int) -> dict:
    """Worker: read, check, preprocess and write one patient to ``tmp_path``."""
    # Imported here: preprocessing runs TensorFlow, which the parent process does not need to load.
    from tfseg.data.preprocess import preprocess_volume

    volume = read_patient(files)
    try:
        image, mask, geometry = preprocess_volume(volume.image, volume.mask, image_size)
    except ValueError as err:
        raise DataError(f"patient folder {files.folder}: {err}") from err
    write_shard(tmp_path, serialize_slices(files.patient, image, mask, geometry))
    return {
        "slices": int(image.shape[0]),
        "source_slices": int(volume.image.shape[0]),
        "tumor_pixels": int(mask.sum()),
        "geometry": geometry.to_dict(),
        "sha256": sha256_file(tmp_path),
    }


def _existing_manifest(out: Path) -> dict:
    try:
        return read_manifest(out)
    except DataError:
        return {"patients": {}}  # nothing reusable: pack everything


def _is_current(entry: dict | None, key: str, out: Path) -> bool:
    if not entry or entry.get("key") != key:
        return False
    path = out / entry["shard"]
    return path.is_file() and sha256_file(path) == entry["sha256"]


def pack(data: str | os.PathLike = "kaggle_3m", out: str | os.PathLike = "tfrecords", image_size: int = 256,
         workers: int | None = None, progress: bool = True) -> dict:
    """Pack (or reuse) the shards of every patient in ``data`` into ``out``; returns the manifest.

    Raises DataError, before writing anything, when the layout of ``data`` is invalid;
    a pixel-level problem found while packing removes the temporary files and raises.
    """
    if image_size < 16 or image_size % 16:
        raise ValueError(f"--image-size must be a positive multiple of 16 (the networks pool 4 times), got {image_size}")
    source = Path(data).resolve()
    scanned = scan_folder(source)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_dead_temporaries(out, TMP_MARK)  # left by a packer that was killed (kill -9, power loss)
    params = preprocessing_params(image_size)
    old = _existing_manifest(out)
    keys = {files.patient: _patient_key(files, params) for files in scanned}
    todo = [f for f in scanned if not _is_current(old["patients"].get(f.patient), keys[f.patient], out)]
    entries = {name: old["patients"][name] for name in keys if name not in {f.patient for f in todo}}
    check_free_space(out, todo, image_size)
    started = time.perf_counter()
    if todo:
        entries.update(_pack_all(todo, out, image_size, workers, progress))
        for name, entry in entries.items():
            entry["key"] = keys[name]
    manifest = {
        **params,
        "source": str(source),
        "tfseg_version": tfseg.__version__,
        "patients": dict(sorted(entries.items())),
        "total_slices": sum(e["slices"] for e in entries.values()),
    }
    if todo or manifest != old:
        write_json_atomic(out / MANIFEST, manifest)
    for stale in set(old["patients"]) - set(entries):  # patients no longer in the source
        (out / old["patients"][stale]["shard"]).unlink(missing_ok=True)
    if progress:
        print(f"packed {len(todo)} of {len(scanned)} patients into {out} in "
              f"{time.perf_counter() - started:.1f} s ({len(scanned) - len(todo)} up to date)", file=sys.stderr)
    return manifest


# Shard bytes per preprocessed pixel and slice, measured on the full set (docs/reference/tfrecords.md):
# 125 MiB at 128 px, 443 MiB at 256 px for 3,668 slices, i.e. 2.2 and 1.9 bytes per pixel; the larger, with a margin.
SHARD_BYTES_PER_PIXEL = 2.2 * 1.25


def estimated_shard_bytes(todo: list[PatientFiles], image_size: int) -> int:
    """What packing ``todo`` will write, about: its slices (the first and last of each patient dropped)."""
    slices = sum(max(len(files.images) - 2, 0) for files in todo)
    return int(slices * image_size * image_size * SHARD_BYTES_PER_PIXEL)


def check_free_space(out: Path, todo: list[PatientFiles], image_size: int) -> None:
    """Refuse before writing anything when ``out``'s disk lacks the space the shards will take."""
    import shutil

    needed, free = estimated_shard_bytes(todo, image_size), shutil.disk_usage(out).free
    if needed > free:
        raise DataError(f"packing {len(todo)} patients at {image_size} px needs about {needed / 2**20:.0f} MiB in {out}, "
                        f"and its disk has {free / 2**20:.0f} MiB free: free some space or pack elsewhere with --out; "
                        "nothing was written")


def _pack_all(todo: list[PatientFiles], out: Path, image_size: int, workers: int | None, progress: bool) -> dict:
    """Pack patients in worker processes to temporary shards; rename all only if all succeed.

    On any failure or interruption (Ctrl-C) the workers are stopped at once and the
    temporary shards removed; workers also exit by themselves if this process dies
    (``_exit_with_parent``), so a killed packer leaves no orphans behind.
    """
    workers = workers or min(len(todo), os.cpu_count() or 1)
    tmp = {f.patient: out / f".{f.patient}{SHARD_SUFFIX}{TMP_MARK}{os.getpid()}" for f in todo}
    results = {}
    before = set(multiprocessing.active_children())
    # spawn: the workers import TensorFlow, which must not be forked from a process that may hold it
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_exit_with_parent, initargs=(os.getpid(),))
    try:
        futures = {pool.submit(_pack_patient, f, str(tmp[f.patient]), image_size): f.patient for f in todo}
        for future in tqdm(as_completed(futures), total=len(futures), desc="packing", unit="patient",
                           disable=not progress):
            results[futures[future]] = future.result()
    except BaseException:
        # Waiting for the running patients would keep a Ctrl-C waiting for minutes: stop the workers.
        pool.shutdown(wait=False, cancel_futures=True)
        for process in set(multiprocessing.active_children()) - before:
            process.kill()
            process.join(5)
        for path in tmp.values():
            path.unlink(missing_ok=True)
        raise
    pool.shutdown(wait=True)
    for patient, entry in results.items():
        entry["shard"] = f"{patient}{SHARD_SUFFIX}"
        os.replace(tmp[patient], out / entry["shard"])
    return results


# How often a worker checks that the packer that started it still runs (seconds).
PARENT_POLL_SECONDS = 0.5


def _exit_with_parent(parent_pid: int) -> None:
    """Pool worker initializer: exit as soon as the parent packer is gone.

    A parent killed with SIGKILL cannot stop its pool; without this its workers
    (~700 MB each with TensorFlow loaded) would wait for work forever, orphaned.
    """
    def watch():
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


if __name__ == "__main__":  # `python -m tfseg.data.pack`: the same command as `tfseg pack`
    from tfseg.cli.pack import main

    sys.exit(main(prog="python -m tfseg.data.pack"))
