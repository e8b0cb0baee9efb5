"""A Markdown report comparing training runs and their evaluations.

    python -m tfseg.report runs/unet-20260101-120000 runs/attention_unet-20260102-080000 -o reports/REPORT.md

For every run folder it reads ``config.json`` (settings and the reproducing
command), ``metrics.json`` (training time, speed, the validation DSC seen during
training) and, when present, the evaluation that ``evaluate.py`` wrote to
``RUN_DIR/eval`` (``summary.json``, ``per_patient.csv``, ``overlays/``). DSC
figures come from the evaluation when there is one (both geometries, HD95),
else from training's own validation (preprocessed geometry only); the table
says which. Missing values are shown as '—'.

Figures go to ``figures/`` beside the report, prefixed with the report's name
(``reports/REPORT.md`` -> ``reports/figures/REPORT_dsc_per_patient.png``), and
are linked with relative paths, so the folder can be moved or published as is.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from tfseg.visualize import atomic_path, dsc_comparison_chart, save_figure

DASH = "—"
EVAL_DIR = "eval"


class ReportError(ValueError):
    """A path given as a run is not a training run folder; the message names it."""


@dataclass
class RunRecord:
    """Everything the report shows about one run (missing parts are None)."""

    path: Path
    config: dict
    config_file: dict
    metrics: dict | None
    summary: dict | None
    per_patient: list[dict] | None
    montages: Path | None = field(default=None)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def evaluated(self) -> bool:
        return self.summary is not None

    def score(self, key: str):
        """A summary figure: from the evaluation, or (preprocessed DSC only) from training's validation."""
        if self.summary is not None:
            return _number(self.summary.get(key))
        fallback = {"mean_dsc": "best_val_volume_dsc", "median_dsc": "val_volume_dsc_median"}.get(key)
        return _number((self.metrics or {}).get(fallback)) if fallback else None

    def dsc_by_patient(self) -> dict[str, float]:
        """Per-patient DSC in the preprocessed geometry (evaluation first, else training's best epoch)."""
        if self.per_patient:
            return {row["patient"]: float(row["dsc_pre"]) for row in self.per_patient}
        return {k: float(v) for k, v in ((self.metrics or {}).get("val_volume_dsc_by_patient") or {}).items()}


def load_run(path: str | Path) -> RunRecord:
    """Read one run folder (and RUN_DIR/eval if present)."""
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path} is not a folder; give training run folders (written by `python train.py`)")
    config_file = _read_json(path / "config.json")
    metrics = _read_json(path / "metrics.json")
    if config_file is None and metrics is None:
        raise ReportError(f"{path} holds neither config.json nor metrics.json: it is not a training run folder")
    eval_dir = path / EVAL_DIR
    summary = _read_json(eval_dir / "summary.json")
    per_patient = None
    if summary is not None and (eval_dir / "per_patient.csv").is_file():
        per_patient = read_per_patient_csv(eval_dir / "per_patient.csv")
    config = (config_file or {}).get("config", {})
    return RunRecord(path, config, config_file or {}, metrics, summary, per_patient,
                     eval_dir / "overlays" if (eval_dir / "overlays").is_dir() else None)


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ReportError(f"{path} is not valid JSON ({err}); the run may still be writing it") from err


def read_per_patient_csv(path: str | Path) -> list[dict]:
    """Rows of evaluate.py's per_patient.csv, numbers as float (nan where a score is undefined)."""
    with open(path, newline="") as f:
        return [{k: v if k == "patient" else float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _number(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def sort_runs(runs: list[RunRecord]) -> list[RunRecord]:
    """Best mean DSC first; runs without a DSC last; ties by name (a stable, readable order)."""
    return sorted(runs, key=lambda r: (r.score("mean_dsc") is None, -(r.score("mean_dsc") or 0.0), r.name))


# ----------------------------------------------------------------------------
# Table cells
# ----------------------------------------------------------------------------

COLUMNS = ("#", "Run", "Architecture", "Loss", "Optimizer / schedule", "Image size", "Epochs", "Precision",
           "Seed", "Training time", "Images/s", "Mean DSC", "Median DSC", "Mean DSC (native)",
           "Median DSC (native)", "Mean HD95 (native, px)", "DSC from")


def table_row(rank: int, run: RunRecord) -> list[str]:
    c, m = run.config, run.metrics or {}
    return [str(rank), f"`{run.name}`", _text(c.get("arch") or m.get("arch")), _text(c.get("loss") or m.get("loss")),
            _optimizer(c), _text(c.get("image_size") or m.get("image_size")), _text(m.get("epochs", c.get("epochs"))),
            _text(m.get("precision") or run.config_file.get("precision_policy")), _text(c.get("seed")),
            _duration(m.get("train_seconds")), _fixed(m.get("images_per_second"), 1),
            _fixed(run.score("mean_dsc"), 4), _fixed(run.score("median_dsc"), 4),
            _fixed(run.score("mean_dsc_native"), 4), _fixed(run.score("median_dsc_native"), 4),
            _fixed(run.score("mean_hd95_native"), 2),
            "evaluate.py" if run.evaluated else ("training validation" if run.score("mean_dsc") is not None else DASH)]


def _text(value) -> str:
    return DASH if value is None or value == "" else str(value).replace("|", "\\|")


def _fixed(value, digits: int) -> str:
    value = _number(value)
    return DASH if value is None else f"{value:.{digits}f}"


def _duration(seconds) -> str:
    seconds = _number(seconds)
    if seconds is None:
        return DASH
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _optimizer(config: dict) -> str:
    if not config.get("optimizer"):
        return DASH
    lr = config.get("lr")
    parts = [config["optimizer"] + (f" lr {lr:g}" if isinstance(lr, (int, float)) else "")]
    if config["optimizer"] == "adamw" and config.get("weight_decay") is not None:
        parts.append(f"wd {config['weight_decay']:g}")
    parts.append(config.get("schedule") or "constant")
    return ", ".join(parts)


# ----------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------

def comparison_figure(runs: list[RunRecord], figures: Path, prefix: str) -> Path | None:
    """Per-patient DSC of every run with per-patient scores, as one chart; None when no run has them."""
    by_run = {run.name: run.dsc_by_patient() for run in runs if run.dsc_by_patient()}
    if not by_run:
        return None
    return save_figure(dsc_comparison_chart(by_run, title="validation DSC per patient (preprocessed geometry)"),
                       figures / f"{prefix}_dsc_per_patient.png")


def case_figures(run: RunRecord, figures: Path, prefix: str) -> list[tuple[str, str, float, Path]]:
    """Copy the montages of the best and the worst validation case of ``run``: [(label, patient, DSC, png)]."""
    if not run.per_patient or run.montages is None:
        return []
    ranked = sorted(run.per_patient, key=lambda row: (float(row["dsc_pre"]), row["patient"]))
    cases = [("best", ranked[-1]), ("worst", ranked[0])] if len(ranked) > 1 else [("only", ranked[0])]
    out = []
    for label, row in cases:
        source = run.montages / f"{row['patient']}_montage.png"
        if not source.is_file():
            continue
        target = figures / f"{prefix}_{label}_case_{row['patient']}.png"
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
        out.append((label, row["patient"], float(row["dsc_pre"]), target))
    return out


# ----------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------

def build_report(run_dirs: list[str | Path], output: str | Path) -> Path:
    """Write the Markdown report of ``run_dirs`` to ``output`` (and its figures beside it); returns its path."""
    if not run_dirs:
        raise ReportError("give at least one run folder")
    output = Path(output)
    runs = sort_runs([load_run(p) for p in run_dirs])
    figures = output.parent / "figures"
    prefix = output.stem
    chart = comparison_figure(runs, figures, prefix)
    best = runs[0]
    cases = case_figures(best, figures, prefix)
    text = render(runs, output.parent, chart, cases)
    with atomic_path(output) as tmp:
        tmp.write_text(text)
    return output


def render(runs: list[RunRecord], report_dir: Path, chart: Path | None, cases: list) -> str:
    rel = lambda p: os.path.relpath(p, report_dir).replace(os.sep, "/")  # noqa: E731
    lines = [
        "# Experiment report", "",
        f"Generated {datetime.now().isoformat(timespec='seconds')} from {len(runs)} run(s). Protocol: PROTOCOL.md "
        "(per-volume DSC after threshold 0.5 and the largest 3-D connected component; mean is the headline). "
        "Runs are sorted by mean DSC (preprocessed geometry). 'DSC from' says whether the figures come from "
        "`evaluate.py` (both geometries, HD95) or from training's own validation (preprocessed geometry only).", "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(table_row(i, run)) + " |" for i, run in enumerate(runs, 1)]
    lines += ["", "## Per-patient DSC", ""]
    lines += [f"![per-patient DSC of every run]({rel(chart)})", ""] if chart else ["No run has per-patient scores.", ""]
    lines += _cases_section(runs[0], cases, rel)
    lines += ["## How to reproduce each run", ""]
    for run in runs:
        lines += _reproduce(run)
    return "\n".join(lines) + "\n"


def _cases_section(best: RunRecord, cases: list, rel) -> list[str]:
    lines = [f"## Best and worst validation case of the best run (`{best.name}`)", ""]
    if not cases:
        lines += [f"No overlays: evaluate the run first with `python evaluate.py --model {best.path}` "
                  f"(writes {best.path / EVAL_DIR}/overlays/).", ""]
        return lines
    lines += ["FLAIR channel of the 6 slices with the largest tumour; prediction outlined in red, ground truth in "
              "green (native geometry).", ""]
    for label, patient, dsc, png in cases:
        lines += [f"**{label} case**: `{patient}`, DSC {dsc:.4f}", "", f"![{label} case {patient}]({rel(png)})", ""]
    return lines


def _reproduce(run: RunRecord) -> list[str]:
    command = run.config_file.get("command")
    machine = run.config_file.get("machine") or {}
    lines = [f"### `{run.name}`", ""]
    lines += ["```", command, "```"] if command else ["Training command: —"]
    recorded = (run.summary or {}).get("command")
    label = "Evaluation:" if recorded else "Evaluate with:"
    lines += ["", label, "", "```", recorded or f"python evaluate.py --model {run.path}", "```", ""]
    if machine:
        lines += [f"Trained on: {machine.get('cpu', DASH)}, {machine.get('cpu_count', DASH)} cores, GPUs "
                  f"{machine.get('gpus') or 'none'}; TensorFlow {machine.get('tensorflow', DASH)}, "
                  f"Keras {machine.get('keras', DASH)}.", ""]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfseg.report", description="Markdown report comparing "
                                     "training runs (and their RUN_DIR/eval evaluations); figures go to "
                                     "figures/ beside the report.")
    parser.add_argument("runs", nargs="+", help="training run folders")
    parser.add_argument("-o", "--output", default="REPORT.md", help="the Markdown file to write")
    args = parser.parse_args(argv)
    try:
        path = build_report(args.runs, args.output)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
