"""The run folder: what train.py writes into it, and reading it back (one owner for both).

A *run folder* (``runs/<name>``) is written by ``train.py``; ``evaluate.py`` adds
``eval/``. A *results folder* (``results/<budget>/<name>``) is the small, committed
copy of one: the same files with the evaluation's beside ``config.json``. Every
module that reads either goes through here, so file names and the meaning of each
figure live in one place.

The headline number is the mean per-volume DSC over the validation patients in the
preprocessed geometry (docs/protocol.md), called ``mean_dsc`` (:data:`HEADLINE`) in an
evaluation's summary.json. Training measures the same number on its own after every
epoch; metrics.json stores the best epoch's value as ``best_val_volume_dsc``
(:data:`TRAINING_NAMES` maps one to the other); evaluation's figure is the one to
quote, training's is the fallback for a run not evaluated yet.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from tfseg.errors import TfsegError

# File and folder names inside a run folder.
CONFIG = "config.json"      # every setting, the split, machine and code commit (train.py, at the start)
METRICS = "metrics.json"    # best and final DSC, wall time, images/s (train.py, at the end)
HISTORY = "history.csv"     # one row per epoch
STATE = "state.json"        # resume state (epoch, checkpoint, plan)
BEST_MODEL = "best.keras"   # the best epoch's inference model
EXPORT = "export"           # the SavedModel for serving
SAVED_MODEL = "saved_model.pb"  # what makes a folder a SavedModel
ENSEMBLE = "ensemble.json"  # an ensemble export's members
EVAL_DIR = "eval"           # evaluate.py's output: summary.json, per_patient.csv, overlays/
ROBUSTNESS_DIR = "robustness"  # tfseg robustness's output (robustness.csv, summary.json, table.md, figure.png)
TENSORBOARD = "tensorboard"  # TensorBoard event files (scalars, overlays, hyper-parameters)
CHECKPOINTS = "checkpoints"  # the last finished epoch's checkpoint, named epoch-<n>
LOCK = "run.lock"           # the process training into the folder (tfseg.runlock), while it runs
POSTPROCESS = "postprocess.json"  # the post-processing rule chosen out of fold (tfseg.postprocess), beside a model
SUMMARY = "summary.json"
PER_PATIENT = "per_patient.csv"

HEADLINE = "mean_dsc"
# summary.json key -> the metrics.json key holding training validation's value of the same figure.
TRAINING_NAMES = {"mean_dsc": "best_val_volume_dsc", "median_dsc": "val_volume_dsc_median"}


# What a results folder keeps of a run: these files of the run, of its evaluation, and the montages of its
# best and worst validation patient (the report shows them; all ten would be megabytes). Never weights.
RESULT_FILES = (CONFIG, METRICS, HISTORY)
RESULT_EVAL_FILES = (SUMMARY, PER_PATIENT, "dsc.png")
OVERLAYS = "overlays"


def is_evaluated_run(run_dir: str | Path) -> bool:
    """Training finished (metrics.json) and evaluate.py has scored it (eval/summary.json)."""
    run_dir = Path(run_dir)
    return (run_dir / METRICS).is_file() and (run_dir / EVAL_DIR / SUMMARY).is_file()


def collect_results(run_dir: str | Path, out: str | Path) -> Path:
    """Copy a run's small result files into a flat results folder ``out`` (see RESULT_FILES); returns ``out``."""
    import shutil

    run_dir, out = Path(run_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in RESULT_FILES:
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, out / name)
    evaluation = run_dir / EVAL_DIR
    if not (evaluation / SUMMARY).is_file():
        return out
    for name in RESULT_EVAL_FILES:
        if (evaluation / name).is_file():
            shutil.copyfile(evaluation / name, out / name)
    ranked = sorted(read_per_patient_csv(evaluation / PER_PATIENT), key=lambda row: row["dsc_pre"])
    (out / OVERLAYS).mkdir(exist_ok=True)
    for row in {ranked[0]["patient"]: ranked[0], ranked[-1]["patient"]: ranked[-1]}.values():
        montage = evaluation / OVERLAYS / f"{row['patient']}_montage.png"
        if montage.is_file():
            shutil.copyfile(montage, out / OVERLAYS / montage.name)
    return out


def owning_run(path: str | Path) -> Path | None:
    """The run folder a model inside it belongs to (RUN_DIR/export, RUN_DIR/best.keras), if any."""
    path = Path(path)
    return path.parent if (path.parent / CONFIG).is_file() else None


def read_config_file(run_dir: str | Path,
                     todo: str = "it holds the run's settings and split: copy it again from the run folder") -> dict:
    """config.json of a run folder as written (``config``, ``command``, ``machine``, ``split``, ...).

    Raises DamagedRunFileError (not complete JSON, not an object) or RunFolderError (unreadable)
    naming the file and ending with ``todo``.
    """
    return read_json_object(Path(run_dir) / CONFIG, todo)


class RunFolderError(TfsegError, ValueError):
    """A path given as a run is not a training run folder (or a file is unreadable); the message names it."""


class DamagedRunFileError(RunFolderError):
    """A file of a run folder is there but damaged (truncated, not the JSON or CSV it should be); ``path`` names it.

    The report skips such a run with a warning; every other reader stops with the message.
    """

    def __init__(self, message: str, path: str | Path):
        super().__init__(message)
        self.path = Path(path)


def read_json_object(path: str | Path, todo: str, required: tuple[str, ...] = (),
                     error: type[Exception] = DamagedRunFileError) -> dict:
    """The JSON object in ``path``, holding at least the keys ``required``; ``error`` naming the file otherwise.

    The message says what is damaged (not complete JSON, another JSON type, missing keys) and
    ends with ``todo``; ``error`` is called as ``error(message, path)`` when it is a
    DamagedRunFileError, else ``error(message)`` (e.g. tfseg.data's DataError for a manifest).
    A damaged file is never rewritten here: the message says it is left as it is.
    """
    path = Path(path)

    def damaged(what: str) -> Exception:
        message = f"{path} is damaged: {what}. It is left as it is; {todo}"
        return error(message, path) if issubclass(error, DamagedRunFileError) else error(message)

    try:
        text = path.read_text()
    except UnicodeDecodeError as err:
        raise damaged(f"not text ({path.stat().st_size} bytes)") from err
    except OSError as err:
        raise RunFolderError(f"{path} cannot be read ({err.strerror or err}); {todo}") from err
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise damaged(f"not complete JSON ({err}; {path.stat().st_size} bytes)") from err
    if not isinstance(value, dict):
        raise damaged(f"a JSON {type(value).__name__}, not an object")
    missing = [key for key in required if key not in value]
    if missing:
        raise damaged(f"no {', '.join(repr(k) for k in missing)} (a JSON object with {len(value)} "
                      f"key{'' if len(value) == 1 else 's'})")
    return value


def read_run_json(path: str | Path, todo: str) -> dict:
    """A JSON object file of a run folder; DamagedRunFileError naming it, what is wrong and ``todo`` when damaged."""
    return read_json_object(path, todo)


# What each file must hold for its readers: the headline's fallback and the epochs trained (metrics.json), the
# time-to-accuracy curve (history.csv), the per-patient DSC (per_patient.csv). Every committed result has them.
METRICS_KEYS = ("best_val_volume_dsc", "epochs")
HISTORY_COLUMNS = ("epoch", "val_volume_dsc")
PER_PATIENT_COLUMNS = ("patient", "dsc_pre")
_COPY_AGAIN = ("copy it again from the run folder, or run `tfseg train --resume RUN_DIR` there, which keeps it "
               "aside and writes a new one from state.json")


def read_metrics(run_dir: str | Path) -> dict | None:
    """metrics.json of a run or results folder (None when training has not finished); checked like every run file."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return None
    return read_json_object(path, f"train.py writes it at the end of training: {_COPY_AGAIN}", METRICS_KEYS)


@dataclass
class RunRecord:
    """Everything the report shows about one run (missing parts are None).

    ``eval_dir`` is where the evaluation was found: ``RUN_DIR/eval`` in a live run, the
    folder itself in a flat results folder, None when the run has not been evaluated.
    """

    path: Path
    config: dict
    config_file: dict
    metrics: dict | None
    summary: dict | None
    per_patient: list[dict] | None
    montages: Path | None = field(default=None)
    history: list[dict] | None = field(default=None)
    eval_dir: Path | None = field(default=None)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def evaluated(self) -> bool:
        return self.summary is not None

    @property
    def flat(self) -> bool:
        """A results folder: the evaluation sits beside config.json instead of in RUN_DIR/eval."""
        return self.eval_dir == self.path

    def metric(self, key: str):
        """A value of metrics.json (None when the file or the key is missing)."""
        return (self.metrics or {}).get(key)

    def score(self, key: str = HEADLINE):
        """A summary figure: from the evaluation, or (preprocessed DSC only) from training's validation."""
        if self.summary is not None:
            return as_number(self.summary.get(key))
        fallback = TRAINING_NAMES.get(key)
        return as_number(self.metric(fallback)) if fallback else None

    def dsc_by_patient(self) -> dict[str, float]:
        """Per-patient DSC in the preprocessed geometry (evaluation first, else training's best epoch)."""
        if self.per_patient:
            return {row["patient"]: float(row["dsc_pre"]) for row in self.per_patient}
        return {k: float(v) for k, v in (self.metric("val_volume_dsc_by_patient") or {}).items()}


def load_run(path: str | Path) -> RunRecord:
    """Read one run or results folder: a live run (evaluation in RUN_DIR/eval) or a flat results folder.

    Returns a RunRecord; raises RunFolderError naming the folder when it holds neither
    config.json nor metrics.json, or naming a file that cannot be parsed.
    """
    path = Path(path)
    if not path.is_dir():
        raise RunFolderError(f"{path} is not a folder; give training run folders (written by `python train.py`) "
                          "or results folders (results/<budget>/<name>)")
    config_file = _read_json(path / CONFIG, "it holds the run's settings: copy it again from the run folder")
    metrics = read_metrics(path)
    if config_file is None and metrics is None:
        raise RunFolderError(f"{path} holds neither config.json nor metrics.json: it is not a training run folder "
                          "or a results folder")
    eval_dir = find_evaluation(path)
    summary = _read_json(eval_dir / SUMMARY, "run `tfseg evaluate` on the run again") if eval_dir else None
    per_patient = None
    if summary is not None and (eval_dir / PER_PATIENT).is_file():
        per_patient = read_per_patient_csv(eval_dir / PER_PATIENT)
    overlays = eval_dir / "overlays" if eval_dir and (eval_dir / "overlays").is_dir() else None
    history = read_history_csv(path / HISTORY) if (path / HISTORY).is_file() else None
    config = (config_file or {}).get("config", {})
    return RunRecord(path, config, config_file or {}, metrics, summary, per_patient, overlays, history, eval_dir)


def find_evaluation(path: Path) -> Path | None:
    """Where evaluate.py's files are for run folder ``path``: RUN_DIR/eval (live run) when it holds a
    summary.json, else ``path`` itself when summary.json sits beside config.json (results folder), else
    RUN_DIR/eval if it exists at all (overlays without a summary), else None."""
    if (path / EVAL_DIR / SUMMARY).is_file():
        return path / EVAL_DIR
    if (path / SUMMARY).is_file():
        return path
    return path / EVAL_DIR if (path / EVAL_DIR).is_dir() else None


def _read_json(path: Path, todo: str) -> dict | None:
    return read_json_object(path, todo) if path.is_file() else None


def read_csv_rows(path: str | Path, columns: tuple[str, ...], todo: str) -> list[dict[str, str]]:
    """The rows of a CSV file tfseg wrote, with at least ``columns``; DamagedRunFileError naming it otherwise.

    Damaged means: not text, a header without one of ``columns``, a last row cut short (tfseg's
    writer ends every row with a newline, so a file without one was truncated), or a row with
    fewer or more cells than the header. The file is left as it is.
    """
    path = Path(path)

    def damaged(what: str) -> DamagedRunFileError:
        return DamagedRunFileError(f"{path} is damaged: {what}. It is left as it is; {todo}", path)

    try:
        text = path.read_text()
    except UnicodeDecodeError as err:
        raise damaged(f"not text ({path.stat().st_size} bytes)") from err
    except OSError as err:
        raise RunFolderError(f"{path} cannot be read ({err.strerror or err}); {todo}") from err
    if not text:
        raise damaged("empty (0 bytes)")
    if not text.endswith("\n"):
        raise damaged(f"its last line is cut short (no line end after {text.splitlines()[-1][-40:]!r}; "
                      f"{len(text.encode())} bytes)")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    missing = [column for column in columns if column not in header]
    if missing:
        raise damaged(f"its header {','.join(header)[:120]!r} lacks {', '.join(missing)}")
    rows = []
    for line, row in enumerate(reader, start=2):
        if None in row or None in row.values():
            cells = len(header) + len(row.get(None, [])) - sum(v is None for v in row.values())
            raise damaged(f"line {line} has {cells} cells, the header {len(header)}")
        rows.append(row)
    return rows


def read_per_patient_csv(path: str | Path) -> list[dict]:
    """Rows of evaluate.py's per_patient.csv, numbers as float (nan where a score is undefined)."""
    rows = read_csv_rows(path, PER_PATIENT_COLUMNS, "run `tfseg evaluate` on the run again, or copy it again")
    return [{k: v if k == "patient" else _cell(v, path, line, k) for k, v in row.items()}
            for line, row in enumerate(rows, start=2)]


def read_history_csv(path: str | Path) -> list[dict[str, float]]:
    """Rows of training's history.csv (one per epoch) as {column: float}; empty cells are nan."""
    rows = read_csv_rows(path, HISTORY_COLUMNS, f"train.py writes it at the end of training: {_COPY_AGAIN}")
    return [{k: _cell(v, path, line, k) for k, v in row.items()} for line, row in enumerate(rows, start=2)]


def _cell(text: str, path, line: int, column: str) -> float:
    """A CSV cell as a float (nan when empty); DamagedRunFileError naming the file, line and column otherwise."""
    if text == "":
        return math.nan
    try:
        return float(text)
    except ValueError as err:
        raise DamagedRunFileError(f"{path} is damaged: line {line}, column {column} holds {text[:40]!r}, not a number. "
                                  "It is left as it is; copy it again from the run folder", path) from err


def as_number(value) -> float | None:
    """A float, or None for a missing or NaN value (how tables show '—')."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


