"""What ``--resume`` reads and checks: state.json, the checkpoint it names, and the fallback to an older one.

A run keeps the checkpoints of its last :data:`KEEP_CHECKPOINTS` finished epochs
(``checkpoints/epoch-<E>``). When the one state.json names is damaged (truncated by a full
disk or a killed copy, or missing), resume falls back to the newest older checkpoint that
is intact *and* proved consistent with state.json: its optimizer's step count times the
batch is the ``images_seen`` of state.json's history row for that epoch. Everything after
that epoch (the history rows, the time) is dropped from the state, so epochs m+1..n are
trained again, on the same per-epoch data order and learning-rate plan. The damaged files
are never rewritten: they are moved, bytes unchanged, to ``RUN_DIR/damaged/epoch-<n>/``
with the state.json that named them. When consistency cannot be proved, resume refuses
and lists what it found.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from tfseg import runs
from tfseg.fileio import write_json_atomic

KEEP_CHECKPOINTS = 2  # the last epoch's and the one before: what the fallback needs, at twice the disk
DAMAGED = "damaged"   # RUN_DIR/damaged/: damaged files moved aside (never rewritten), with what named them
_CHECKPOINT_FILE = re.compile(r"^epoch-(\d+)\.(index|data-\d+-of-\d+)$")
# The optimizer's step counter in a tf.train.Checkpoint of tfseg's training (Keras 3 names it _iterations).
ITERATIONS_KEYS = ("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE", "optimizer/iterations/.ATTRIBUTES/VARIABLE_VALUE")


def checkpoint_files(run_dir: Path) -> dict[int, list[Path]]:
    """{epoch: its files} of the checkpoints in RUN_DIR/checkpoints (``epoch-<E>.index``, ``epoch-<E>.data-*``)."""
    found: dict[int, list[Path]] = {}
    folder = Path(run_dir) / runs.CHECKPOINTS
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = _CHECKPOINT_FILE.match(path.name)
        if match and path.is_file():
            found.setdefault(int(match.group(1)), []).append(path)
    return found


def prune_checkpoints(run_dir: Path, epoch: int) -> None:
    """Delete the checkpoints older than the last KEEP_CHECKPOINTS epochs (call once state.json names ``epoch``)."""
    for older, paths in checkpoint_files(run_dir).items():
        if older <= epoch - KEEP_CHECKPOINTS:
            for path in paths:
                path.unlink(missing_ok=True)


def checkpoint_problem(prefix: Path) -> str | None:
    """None when the checkpoint ``prefix`` (RUN_DIR/checkpoints/epoch-<E>) reads completely; else what is wrong.

    Every tensor is read back (TensorFlow checks each one's length and CRC32C), so a file cut
    short or changed is found here, not halfway into restoring it.
    """
    import tensorflow as tf

    index = prefix.with_name(prefix.name + ".index")
    data = sorted(prefix.parent.glob(prefix.name + ".data-*"))
    if not index.is_file() and not data:
        return "missing (no files)"
    if not index.is_file():
        return f"no {index.name}"
    if not data:
        return f"no {prefix.name}.data-* file"
    sizes = ", ".join(f"{p.name} {p.stat().st_size} bytes" for p in [index, *data])
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
    except Exception as err:  # noqa: BLE001 - TensorFlow says "damaged" as OpError, IndexError or ValueError
        text = (getattr(err, "message", None) or str(err)).strip().splitlines()
        return f"damaged, cannot be read back ({type(err).__name__}: {text[0][:160] if text else ''}; {sizes})"
    return None


def describe_checkpoints(run_dir: Path) -> str:
    """'epoch-3 (intact), epoch-2 (damaged, ...)' for RUN_DIR/checkpoints, newest first; 'none' when there is none."""
    found = checkpoint_files(run_dir)
    parts = []
    for epoch in sorted(found, reverse=True):
        problem = checkpoint_problem(Path(run_dir) / runs.CHECKPOINTS / f"epoch-{epoch}")
        parts.append(f"epoch-{epoch} ({problem or 'intact'})")
    return ", ".join(parts) or "none"


def read_resume_state(run_dir: Path) -> dict:
    """state.json of a run to resume ({} when training never finished an epoch); an error when it is damaged.

    The checkpoint to resume from is the one state.json names (with its epoch, schedule and
    history); with state.json damaged no checkpoint can be proved consistent with it, so resume
    refuses rather than guess, and says which checkpoints are there.
    """
    path = run_dir / runs.STATE
    if not path.is_file():
        return {}
    todo = ("--resume needs it to know the epoch, the learning-rate plan and the history that go with a checkpoint "
            f"(kept: {describe_checkpoints(run_dir)} in {run_dir / runs.CHECKPOINTS}). "
            "Restore state.json from a copy, or start a new run with another --logdir")
    return runs.read_json_object(path, todo)


def resumable_state(run_dir: Path, state: dict, batch_size: int, write: bool = True) -> dict:
    """``state`` when the checkpoint it names is intact; else the state of the fallback checkpoint, or an error.

    batch_size: the run's (global) batch, which with a checkpoint's step count gives its images
    seen. write: move the damaged checkpoint aside and write the new state.json (the one process
    that writes the run folder); False computes the same state and touches nothing. Raises
    RunFolderError listing the checkpoints found when no fallback is proved consistent.
    """
    if not state.get("checkpoint"):
        return state
    named = run_dir / state["checkpoint"]
    problem = checkpoint_problem(named)
    if problem is None:
        return state
    epoch = int(state.get("epoch", 0))
    intact = [e for e in sorted(checkpoint_files(run_dir), reverse=True)
              if e < epoch and checkpoint_problem(run_dir / runs.CHECKPOINTS / f"epoch-{e}") is None]
    why = "no older intact checkpoint" if not intact else _inconsistency(run_dir, intact[0], state, batch_size)
    if why:
        raise runs.RunFolderError(
            f"--resume {run_dir}: the checkpoint state.json names ({state['checkpoint']}, epoch {epoch}) is {problem}, "
            f"and no other can be proved consistent with state.json ({why}). Found: {describe_checkpoints(run_dir)}. "
            f"Nothing was changed. Restore {named.name}.* from a copy, or start a new run with another --logdir "
            "(best.keras is kept and still loads)")
    return _fall_back(run_dir, state, epoch, intact[0], problem, write)


def _inconsistency(run_dir: Path, older: int, state: dict, batch_size: int) -> str | None:
    """Why checkpoint epoch-``older`` cannot be proved to be the state at the end of that epoch (None: it can)."""
    import tensorflow as tf

    history = state.get("history")
    if not isinstance(history, list) or len(history) < older:
        return f"state.json's history has {len(history) if isinstance(history, list) else 'no'} rows, fewer than {older}"
    row = history[older - 1]
    if not isinstance(row, dict) or "images_seen" not in row or "train_seconds" not in row:
        return f"state.json's history row {older} has no images_seen and train_seconds"
    reader = tf.train.load_checkpoint(str(run_dir / runs.CHECKPOINTS / f"epoch-{older}"))
    key = next((k for k in ITERATIONS_KEYS if reader.has_tensor(k)), None)
    if key is None:
        return f"epoch-{older} holds no optimizer step count"
    steps = int(reader.get_tensor(key))
    if steps * batch_size != int(row["images_seen"]):
        return (f"epoch-{older} holds {steps} steps of {batch_size} images, state.json's history row {older} "
                f"{int(row['images_seen'])} images")
    return None


def _fall_back(run_dir: Path, state: dict, epoch: int, older: int, problem: str, write: bool) -> dict:
    """The state at the end of epoch ``older``; with ``write``, epoch-``epoch``'s files moved aside unchanged."""
    history = state["history"][:older]
    fallback = {**state, "epoch": older, "checkpoint": f"{runs.CHECKPOINTS}/epoch-{older}", "history": history,
                "train_seconds": float(history[-1]["train_seconds"])}
    fallback.pop("stopped_by_time_budget", None)  # the planned epochs are not reached yet
    if not write:
        return fallback
    aside = unique_path(run_dir / DAMAGED / f"epoch-{epoch}")
    aside.mkdir(parents=True)
    for path in checkpoint_files(run_dir).get(epoch, []):
        os.replace(path, aside / path.name)  # a rename: the bytes stay as they are
    shutil.copy2(run_dir / runs.STATE, aside / runs.STATE)  # the state that named it, for the record
    write_json_atomic(run_dir / runs.STATE, fallback)
    best = state.get("best_epoch")
    note = (f" best.keras stays the model of epoch {best}, validated before the fallback."
            if isinstance(best, int) and best > older else "")
    print(f"resume: checkpoint {state['checkpoint']} (epoch {epoch}) is {problem}; falling back to "
          f"{fallback['checkpoint']}, the newest intact checkpoint, consistent with state.json (its step count matches "
          f"history row {older}). Epochs {older + 1}..{epoch} are trained again; the damaged files and the state.json "
          f"that named them are kept, unchanged, in {aside}.{note}")
    return fallback


def unique_path(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``, ... : the first that does not exist (nothing set aside is replaced)."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def set_aside_if_damaged(path: Path, check) -> Path | None:
    """Move ``path`` to RUN_DIR/damaged/ when ``check(path)`` finds it damaged, so a new one can be written there.

    Returns where it went (None: missing or intact). Used before train.py writes history.csv
    and metrics.json anew at the end of a resumed run: a damaged file is kept, never overwritten.
    """
    if not path.is_file():
        return None
    try:
        check(path)
        return None
    except runs.DamagedRunFileError as err:
        aside = unique_path(path.parent / DAMAGED / path.name)
        aside.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, aside)
        print(f"{path.name} was damaged ({str(err).split(' is damaged: ')[-1].split('. It is left')[0]}); "
              f"kept unchanged as {aside}, a new one is written from state.json")
        return aside
