"""One process per run folder: the lock file that train, resume and every CV fold take.

Two ``train.py`` commands on one ``--logdir`` (a second terminal, a re-run job) would
both write the same checkpoints, ``best.keras``, ``history.csv`` and TensorBoard files.
The first takes ``RUN_DIR/run.lock`` (its pid, host, boot, start time and command),
created atomically (``O_CREAT | O_EXCL``); a second one refuses, naming the holder. A
lock whose process is gone (killed with SIGKILL, or the machine rebooted) is *stale*: it
is taken over, with a message. A lock held on another host cannot be checked from here;
the message says how to release it. Only the chief of a multi-worker cluster holds the
lock (the other workers write to temporary folders of their own).
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path

from tfseg.errors import TfsegError
from tfseg.fileio import process_is_alive
from tfseg.runs import LOCK

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


class RunLockedError(TfsegError):
    """Another live process holds the run folder; the message names it and says what to do."""


def boot_id() -> str | None:
    """This boot of this machine (Linux): a lock from before a reboot is stale even if its pid runs again."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return None


def describe_holder(holder: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return (f"process {holder.get('pid')} on {holder.get('host')} since {started} "
            f"({holder.get('command') or 'command unknown'})")


def read_holder(run_dir: str | Path) -> dict | None:
    """The lock's content, or None without a lock; a lock that cannot be parsed reads as {} (stale)."""
    path = Path(run_dir) / LOCK
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError):
        return {}  # written by a process killed mid-write: nobody holds it


def is_stale(holder: dict) -> bool:
    """Whether the process that wrote ``holder`` is certainly gone (checked only for this host)."""
    if not holder or "pid" not in holder:
        return True
    if holder.get("host") != socket.gethostname():
        return False
    if holder.get("boot") and boot_id() and holder["boot"] != boot_id():
        return True  # the machine rebooted since
    return not process_is_alive(int(holder["pid"]))


def live_holder(run_dir: str | Path) -> dict | None:
    """The holder of the run folder if it is (as far as this host can tell) still running, else None."""
    holder = read_holder(run_dir)
    return None if holder is None or is_stale(holder) else holder


def _create(path: Path, payload: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(payload, indent=2) + "\n")
    return True


@contextlib.contextmanager
def hold_run(run_dir: str | Path, command: str | None = None):
    """Hold ``run_dir`` for this process for the ``with`` block (the folder is made when missing).

    Raises RunLockedError naming the holder when a live process holds it; takes a stale lock
    over with a message on stderr. The lock is removed at the end of the block if it is still ours.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    payload = {"pid": os.getpid(), "host": socket.gethostname(), "boot": boot_id(), "started": time.time(),
               "command": command if command is not None else shlex.join(sys.argv)}
    while not _create(path, payload):
        holder = read_holder(run_dir)
        if holder is None:
            continue  # released between our attempt and the read: try again
        if not is_stale(holder):
            elsewhere = holder.get("host") != socket.gethostname()
            raise RunLockedError(
                f"{run_dir} is in use by {describe_holder(holder)}: one process per run folder. Wait for it to "
                f"finish, stop it, or give another --logdir" +
                (f"; if that host is gone, delete {path}" if elsewhere else ""))
        # Move the stale lock aside (atomic: of two processes taking over, only one succeeds), then retry.
        try:
            os.replace(path, path.with_name(f".{LOCK}.stale-{os.getpid()}"))
        except FileNotFoundError:
            continue
        path.with_name(f".{LOCK}.stale-{os.getpid()}").unlink(missing_ok=True)
        print(f"note: {run_dir} was locked by {describe_holder(holder) if holder else 'an unreadable lock'}, "
              "which is no longer running; taking it over", file=sys.stderr)
    try:
        yield path
    finally:
        if (read_holder(run_dir) or {}).get("pid") == os.getpid():
            path.unlink(missing_ok=True)
