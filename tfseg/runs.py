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


def read_config_file(run_dir: str | Path) -> dict:
    """config.json of a run folder as written (``config``, ``command``, ``machine``, ``split``, ...).

    Raises OSError or json.JSONDecodeError; callers turn them into their own errors.
    """
    return json.loads((Path(run_dir) / CONFIG).read_text())


class RunFolderError(TfsegError, ValueError):
    """A path given as a run is not a training run folder (or a file is unreadable); the message names it."""


def read_run_json(path: str | Path, todo: str) -> dict:
    """A JSON file of a run folder; RunFolderError naming it, what is wrong and ``todo`` when it is damaged.

    A damaged file (truncated by a full disk or a killed copy, or not a JSON object) is never
    rewritten here: the message says it is left as it is.
    """
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RunFolderError(f"{path} is damaged: not complete JSON ({err}; {path.stat().st_size} bytes). "
                             f"It is left as it is; {todo}") from err
    except OSError as err:
        raise RunFolderError(f"{path} cannot be read ({err.strerror or err}); {todo}") from err
    if not isinstance(value, dict):
        raise RunFolderError(f"{path} is damaged: a JSON {type(value).__name__}, not an object. It is left as it is; "
                             f"{todo}")
    return value


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
    config_file = _read_json(path / CONFIG)
    metrics = _read_json(path / METRICS)
    if config_file is None and metrics is None:
        raise RunFolderError(f"{path} holds neither config.json nor metrics.json: it is not a training run folder "
                          "or a results folder")
    eval_dir = find_evaluation(path)
    summary = _read_json(eval_dir / SUMMARY) if eval_dir else None
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


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RunFolderError(f"{path} is not valid JSON ({err}); the run may still be writing it") from err


def read_per_patient_csv(path: str | Path) -> list[dict]:
    """Rows of evaluate.py's per_patient.csv, numbers as float (nan where a score is undefined)."""
    with open(path, newline="") as f:
        return [{k: v if k == "patient" else float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def read_history_csv(path: str | Path) -> list[dict[str, float]]:
    """Rows of training's history.csv (one per epoch) as {column: float}; empty cells are nan."""
    rows = []
    with open(path, newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                rows.append({k: float(v) if v not in ("", None) else math.nan for k, v in row.items()})
            except ValueError as err:
                raise RunFolderError(f"{path}, line {line}: {err}; history.csv holds numbers only — copy it again "
                                  "from the run folder (train.py writes it at the end of training)") from err
    return rows


def as_number(value) -> float | None:
    """A float, or None for a missing or NaN value (how tables show '—')."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


