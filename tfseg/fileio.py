"""Writing files so that no reader ever sees half of one, and checksums: one home for both.

Every file tfseg writes (run folders, shards, manifests, reports, figures) goes
through a temporary name beside the target and an ``os.replace`` onto it, so a
crash or a concurrent reader sees the old file or the new one, never a partial
write. Temporary names are ``.<name>.tmp-<pid>``: hidden, and traceable to the
process that wrote them.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
from pathlib import Path

TMP_MARK = ".tmp-"


def temporary_name(path: str | os.PathLike, keep_suffix: bool = False) -> Path:
    """The temporary sibling this process writes ``path`` through: ``.<name>.tmp-<pid>``.

    ``keep_suffix``: ``.<stem>.tmp-<pid><suffix>``, for writers that insist on a suffix (Keras saves
    only to a name ending in ``.keras``).
    """
    path = Path(path)
    if keep_suffix:
        return path.with_name(f".{path.stem}{TMP_MARK}{os.getpid()}{path.suffix}")
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, keep_suffix: bool = False):
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds, else remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path, keep_suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        if err.errno == errno.ENOSPC and err.filename != str(path):
            # Writers (matplotlib, Keras) often say only "No space left on device": name the file.
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike):
    """:func:`atomic_path` for a folder (a SavedModel): the block fills a temporary folder beside ``path``,
    which then takes the place of ``path`` (an older ``path`` is removed just before). On failure the
    temporary folder is removed and ``path`` is left as it was."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, payload) -> Path:
    """JSON (indented, keys sorted, one trailing newline) written atomically."""
    return write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def csv_text(rows: list[dict], fieldnames: list[str] | None = None) -> str:
    """CSV of ``rows`` (header first, "\\n" line ends); columns: ``fieldnames``, else every key in order of first use.

    A missing or None value is an empty cell; floats are written in full (``repr``), NaN as ``nan``.
    """
    import csv
    import io

    if fieldnames is None:
        fieldnames = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fieldnames, lineterminator="\n", extrasaction="raise")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_csv_atomic(path: str | os.PathLike, rows: list[dict], fieldnames: list[str] | None = None) -> Path:
    """:func:`csv_text` of ``rows`` written atomically: every CSV tfseg writes goes through here."""
    return write_text_atomic(path, csv_text(rows, fieldnames))


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_files(root: str | os.PathLike, files: list[Path]) -> str:
    """One SHA-256 over ``files`` (in the order given): each one's path relative to ``root`` and its digest."""
    root, digest = Path(root), hashlib.sha256()
    for path in files:
        digest.update(Path(path).relative_to(root).as_posix().encode() + b"\0" + sha256_file(path).encode())
    return digest.hexdigest()


def process_is_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a temporary name carries its writer's pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def remove_dead_temporaries(folder: str | os.PathLike, mark: str = TMP_MARK) -> list[Path]:
    """Delete ``.<name><mark><pid>`` files in ``folder`` whose writer (pid) is no longer running.

    A writer killed with SIGKILL cannot clean up after itself; the next run does it here.
    Files of a writer that is still running (e.g. a second packer on the same folder) are kept.
    Returns the paths removed.
    """
    removed = []
    for path in Path(folder).glob(f".*{mark}*"):
        pid = path.name.rsplit(mark, 1)[1].split(".")[0]  # ".best.tmp-123.keras" keeps its suffix
        if pid.isdigit() and int(pid) != os.getpid() and not process_is_alive(int(pid)):
            if path.is_dir():  # a folder written through atomic_directory
                import shutil

                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed
