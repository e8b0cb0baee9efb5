"""A Markdown report comparing training runs and their evaluations.

    python -m tfseg.report results/cpu-128/* -o reports/REPORT.md --title "cpu-128 campaign" \
        --notes reports/NOTES.md [--baseline b16-reference-settings] \
        [--cv cv/ ...] [--radiogenomics results/radiogenomics/manual --radiogenomics rg_pred/ ...]

A run is either a live run folder written by ``train.py`` (evaluation in ``RUN_DIR/eval``)
or a flat results folder (``results/<budget>/<name>``: the evaluation files beside
``config.json``). For every run it reads ``config.json`` (settings, machine, code commit,
the reproducing command), ``metrics.json`` (training time, speed, the validation DSC
seen during training), ``history.csv`` (per-epoch validation DSC, cumulative time and
images) and, when present, the evaluation (``summary.json``, ``per_patient.csv``,
``overlays/``). DSC figures come from the evaluation when there is one (both
geometries, HD95), else from training's own validation (preprocessed geometry only);
the table says which. Missing values are shown as '—'.

The report: a results table and a settings table (one row per run, best mean DSC
first), the hand-written ``--notes`` verbatim, time-to-accuracy curves beside the
reference program's (docs/protocol.md), the best run against a baseline run per patient,
every run per patient, the best and worst case of the best run, and how to reproduce
each run. Figures go to ``figures/`` beside the report, prefixed with the report's
name (``reports/REPORT.md`` -> ``reports/figures/REPORT_time_to_accuracy.png``), and
are linked with relative paths, so the folder can be moved or published as is.

Two optional sections, before the reproducing commands (issue 10; built by tfseg.report_studies):

* ``--cv DIR`` (repeatable): a cross-validation folder written by ``python -m tfseg.cv``
  (``summary.json``, ``per_patient.csv``, ``dsc.png``). One row per folder (folds,
  patients, mean/median DSC in both geometries, the model's settings), each folder's
  per-fold table, its 5 worst patients and its uncertainty ranking when scored, and
  the comparison with the paper (Buda et al. 2019: 22-fold CV, mean 82% / median 85%;
  two human readers agree at about 84%) and with the goal, mean DSC >= 0.88.
* ``--radiogenomics DIR`` (repeatable; the manual masks first): folders written by
  ``python -m tfseg.radiogenomics`` (``summary.json``, ``tests.csv``, ``features.csv``,
  ``figure.png``). The primary tests side by side with the paper's p-values, what is
  significant in each folder, what the first folder and each other one agree on, and
  the Spearman rho of each feature between them over their common patients.
"""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from tfseg.fileio import atomic_path
from tfseg.markdown import DASH, fixed as _fixed, table as _table, text as _text
from tfseg.report_reference import reference_section, time_pairs as time_pair_records
from tfseg.report_studies import (CVFolder, RadiogenomicsFolder, cv_section, folder_figures,
                                  load_cv, load_folders, load_radiogenomics, radiogenomics_section)
from tfseg.runs import EVAL_DIR, DamagedRunFileError, RunFolderError, RunRecord, as_number, load_run
from tfseg.seed_groups import describe_group, paired_comparison, seed_groups
from tfseg.visualize import (dsc_comparison_chart, dsc_patient_comparison, save_figure,
                             time_to_accuracy_chart)

DEFAULT_TITLE = "Experiment report"
BASELINE_MARK = "reference-settings"  # default baseline: a run whose name contains this

# The reference program under cpu-128 on these machines (docs/protocol.md): validation mean DSC after each
# of its 12 epochs, its training time, and its images per epoch (208 steps of 16).
REFERENCE_DSC_BY_EPOCH = (0.54, 0.69, 0.73, 0.64, 0.74, 0.77, 0.78, 0.88, 0.88, 0.79, 0.89, 0.894)
REFERENCE_TRAIN_MINUTES = 44.6
REFERENCE_MEAN_DSC = 0.894
IMAGES_PER_EPOCH = 208 * 16

class ReportError(RunFolderError):
    """A report cannot be made as asked (no runs, a missing notes file, an unknown baseline); the message says why."""


def sort_runs(runs: list[RunRecord]) -> list[RunRecord]:
    """Best mean DSC first; runs without a DSC last; ties by name (a stable, readable order)."""
    return sorted(runs, key=lambda r: (r.score("mean_dsc") is None, -(r.score("mean_dsc") or 0.0), r.name))


def choose_baseline(runs: list[RunRecord], name: str | None = None) -> RunRecord | None:
    """The run called ``name`` (a run folder's name; ReportError listing the runs when there is none), or,
    without a name, the first of ``runs`` whose name contains 'reference-settings' (None if none does)."""
    if name:
        wanted = Path(name).name
        match = [run for run in runs if run.name == wanted]
        if not match:
            raise ReportError(f"--baseline {name}: no run of that name among {', '.join(r.name for r in runs)}; "
                              "give the name of one of the run folders")
        return match[0]
    return next((run for run in runs if BASELINE_MARK in run.name), None)


# ----------------------------------------------------------------------------
# Table cells
# ----------------------------------------------------------------------------

def _duration(seconds) -> str:
    seconds = as_number(seconds)
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


def _setting(run: RunRecord, key: str):
    """A training setting from config.json, else from metrics.json."""
    value = run.config.get(key)
    return run.metric(key) if value is None else value


def _context(run: RunRecord) -> str:
    """Slices per input (1: 2-D; runs from before --context existed were 2-D)."""
    if not run.config:
        return DASH
    return _text(run.config.get("context") or 1)


def _ema(run: RunRecord) -> str:
    """The EMA decay, or 'off' (runs from before --ema existed had none)."""
    if not run.config:
        return DASH
    return "off" if run.config.get("ema") is None else f"{run.config['ema']:g}"


def _budget(run: RunRecord) -> str:
    """'cpu-128 (12 ep)' for an epoch budget; 'N min wall clock' when the run had a time limit."""
    minutes = run.config.get("time_budget_minutes")
    if minutes:
        # cpu-128 was a 60-minute wall-clock budget before it became 12 epochs (docs/protocol.md).
        return f"{minutes:g} min wall clock" + (" (old)" if run.config.get("preset") == "cpu-128" else "")
    epochs = run.metric("planned_epochs") or run.config.get("epochs")
    if epochs is None:
        return DASH
    preset = run.config.get("preset")
    return f"{preset} ({epochs} ep)" if preset else f"{epochs} ep"


def _epochs(run: RunRecord) -> str:
    """Epochs trained and the best one: '11 (best 9)'."""
    done, best = run.metric("epochs"), run.metric("best_epoch")
    if done is None:
        return DASH
    return f"{done} (best {best})" if best is not None else str(done)


def cpu_bf16(run: RunRecord) -> bool | None:
    """Whether the training CPU had native bfloat16 (config machine, then metrics.json); None if unknown.

    Runs from before it was recorded tell it by their precision: ``--precision auto`` picks
    mixed_bfloat16 on a machine without GPUs only when the CPU has bf16 (runtime.choose_precision).
    """
    machine = run.config_file.get("machine") or {}
    known = machine.get("cpu_bf16", run.metric("cpu_bf16"))
    if known is not None:
        return bool(known)
    if (run.config.get("precision") == "auto" and run.config_file.get("precision_policy") == "mixed_bfloat16"
            and not machine.get("gpus")):
        return True
    return None


def _cpu(run: RunRecord) -> str:
    """'AMD EPYC (bf16)' / 'AMD EPYC (no bf16)': the CPU model and whether it computes bfloat16."""
    name = (run.config_file.get("machine") or {}).get("cpu") or run.metric("cpu")
    if not name:
        return DASH
    return _text(f"{name} (" + {True: "bf16", False: "no bf16", None: "bf16 unknown"}[cpu_bf16(run)] + ")")


def _code(run: RunRecord) -> str:
    """The code's commit, short, with '+dirty' when the checkout had uncommitted changes."""
    code = run.config_file.get("code") or {}
    if not code.get("commit"):
        return DASH
    return code["commit"][:7] + ("+dirty" if code.get("dirty") else "")


def _dsc_source(run: RunRecord) -> str:
    if run.evaluated:
        return "evaluate.py"
    return "training validation" if run.score("mean_dsc") is not None else DASH


RESULT_COLUMNS = (
    ("Mean DSC", lambda run: _fixed(run.score("mean_dsc"), 4)),
    ("Median DSC", lambda run: _fixed(run.score("median_dsc"), 4)),
    ("Mean DSC (native)", lambda run: _fixed(run.score("mean_dsc_native"), 4)),
    ("Median DSC (native)", lambda run: _fixed(run.score("median_dsc_native"), 4)),
    ("Mean HD95 (native, px)", lambda run: _fixed(run.score("mean_hd95_native"), 2)),
    ("Epochs", _epochs),
    ("Training time", lambda run: _duration(run.metric("train_seconds"))),
    ("Images/s", lambda run: _fixed(run.metric("images_per_second"), 1)),
    ("CPU", _cpu),
    ("DSC from", _dsc_source),
)

SETTING_COLUMNS = (
    ("Architecture", lambda run: _text(_setting(run, "arch"))),
    ("Base filters", lambda run: _text(run.config.get("base_filters"))),
    ("Context", _context),
    ("Loss", lambda run: _text(_setting(run, "loss"))),
    ("Optimizer / schedule", lambda run: _optimizer(run.config)),
    ("EMA", _ema),
    ("Image size", lambda run: _text(_setting(run, "image_size"))),
    ("Budget", _budget),
    ("Precision", lambda run: _text(run.metric("precision") or run.config_file.get("precision_policy"))),
    ("Seed", lambda run: _text(run.config.get("seed"))),
    ("Code", _code),
)


def markdown_table(columns, runs: list[RunRecord]) -> list[str]:
    """Lines of a Markdown table: '#', 'Run', then one cell per (header, cell function) of ``columns``."""
    headers = ["#", "Run"] + [header for header, _ in columns]
    return _table(headers, [[str(rank), f"`{run.name}`"] + [cell(run) for _, cell in columns]
                            for rank, run in enumerate(runs, 1)])


# ----------------------------------------------------------------------------
# Time to accuracy
# ----------------------------------------------------------------------------

def reference_curve() -> dict:
    """The reference program's cpu-128 curve: its 12 epochs evenly spaced over 44.6 minutes, 208×16 images each."""
    epochs = range(1, len(REFERENCE_DSC_BY_EPOCH) + 1)
    step = REFERENCE_TRAIN_MINUTES / len(REFERENCE_DSC_BY_EPOCH)
    return {"minutes": [e * step for e in epochs], "images": [e * IMAGES_PER_EPOCH for e in epochs],
            "dsc": list(REFERENCE_DSC_BY_EPOCH), "estimated": False}


def accuracy_curve(run: RunRecord) -> dict | None:
    """One run's validation mean DSC by epoch: {"minutes", "images", "dsc", "estimated"}, or None without one.

    Cumulative minutes and images come from history.csv's train_seconds / images_seen columns. Older
    runs lack them: minutes = epoch × train_seconds / epochs (metrics.json; None if unknown) and
    images = epoch × 208 × 16, and ``estimated`` is True. Epochs whose DSC is not finite are left out.
    """
    rows = run.history or [{"epoch": i, "val_volume_dsc": v}
                           for i, v in enumerate(run.metric("val_volume_dsc_by_epoch") or [], 1)]
    rows = [row for row in rows if as_number(row.get("val_volume_dsc")) is not None]
    if not rows:
        return None
    epochs = [row["epoch"] for row in rows]
    seconds, images = _cumulative(rows, "train_seconds"), _cumulative(rows, "images_seen")
    estimated = seconds is None or images is None
    if seconds is None:
        total, done = as_number(run.metric("train_seconds")), run.metric("epochs")
        seconds = [e * total / done for e in epochs] if total and done else None
    if images is None:
        images = [e * IMAGES_PER_EPOCH for e in epochs]
    return {"minutes": None if seconds is None else [s / 60 for s in seconds], "images": images,
            "dsc": [row["val_volume_dsc"] for row in rows], "estimated": estimated}


def _cumulative(rows: list[dict], key: str) -> list[float] | None:
    """Column ``key`` of history rows when every row has a finite value, else None."""
    values = [as_number(row.get(key)) for row in rows]
    return None if any(v is None for v in values) else values


def time_to_accuracy_figure(runs: list[RunRecord], figures: Path, prefix: str) -> tuple[Path, list[str]]:
    """Write figures/<prefix>_time_to_accuracy.png (every run with per-epoch DSC, and the reference program).

    Returns (the PNG, names of the runs whose time or images axis was estimated).
    """
    curves = {run.name: curve for run in runs if (curve := accuracy_curve(run)) is not None}
    fig = time_to_accuracy_chart(curves, reference_curve(),
                                 title="validation mean DSC by epoch: time to accuracy (preprocessed geometry)")
    path = save_figure(fig, figures / f"{prefix}_time_to_accuracy.png")
    return path, [name for name, curve in curves.items() if curve["estimated"]]


# ----------------------------------------------------------------------------
# Per-patient figures
# ----------------------------------------------------------------------------

def comparison_figure(runs: list[RunRecord], figures: Path, prefix: str) -> Path | None:
    """Per-patient DSC of every run with per-patient scores, as one chart; None when no run has them."""
    by_run = {run.name: run.dsc_by_patient() for run in runs if run.dsc_by_patient()}
    if not by_run:
        return None
    return save_figure(dsc_comparison_chart(by_run, title="validation DSC per patient (preprocessed geometry)"),
                       figures / f"{prefix}_dsc_per_patient.png")


def baseline_figure(best: RunRecord, baseline: RunRecord | None, figures: Path, prefix: str) -> Path | None:
    """figures/<prefix>_best_vs_baseline.png: per-patient DSC of the best and the baseline run with the
    reference program's mean (0.894) as a line; None without a baseline or per-patient scores."""
    if baseline is None:
        return None
    if baseline is best:
        by_run = {f"best = baseline: {best.name}": best.dsc_by_patient()}
    else:
        by_run = {f"best: {best.name}": best.dsc_by_patient(), f"baseline: {baseline.name}": baseline.dsc_by_patient()}
    by_run = {label: scores for label, scores in by_run.items() if scores}
    if not by_run:
        return None
    reference = {f"reference program mean {REFERENCE_MEAN_DSC} (docs/protocol.md)": REFERENCE_MEAN_DSC}
    fig = dsc_patient_comparison(by_run, reference,
                                 title="best run against the baseline: validation DSC per patient (preprocessed)")
    return save_figure(fig, figures / f"{prefix}_best_vs_baseline.png")


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

@dataclass
class ReportFigures:
    """The figures written for one report (None / empty where there was nothing to draw)."""

    time_to_accuracy: Path | None = None
    estimated: list[str] = field(default_factory=list)
    baseline: RunRecord | None = None
    best_vs_baseline: Path | None = None
    per_patient: Path | None = None
    cases: list = field(default_factory=list)
    cv: dict = field(default_factory=dict)  # CV folder label -> its dsc.png copied into figures/ (None: none)
    radiogenomics: dict = field(default_factory=dict)  # radiogenomics folder label -> its figure.png copy


def build_report(run_dirs: list[str | Path], output: str | Path, title: str = DEFAULT_TITLE,
                 notes: str | Path | None = None, baseline: str | None = None,
                 cv: list[str | Path] | None = None, radiogenomics: list[str | Path] | None = None,
                 recommended: str | None = None, time_pairs: list[tuple[str, str]] = (),
                 time_runs: list[str | Path] = ()) -> Path:
    """Write the Markdown report of ``run_dirs`` to ``output`` (and its figures beside it); returns its path.

    title: the report's heading; notes: a Markdown file inserted verbatim after the tables (the hand-written
    analysis, kept in its own file so the report can be regenerated); baseline: the name of the run the best
    one is compared with (default: a run whose name contains 'reference-settings'); cv: folders of
    ``python -m tfseg.cv``; radiogenomics: folders of ``python -m tfseg.radiogenomics``, the manual masks first;
    recommended: a run of the recipe the reference program's runs are compared with; time_pairs: (tfseg run,
    program run) names timed on the same machine, looked up among the runs and ``time_runs`` (folders loaded for
    that table only). Everything is read and checked before anything is written.
    """
    if not run_dirs:
        raise ReportError("give at least one run folder")
    output = Path(output)
    notes_text = read_notes(notes, output) if notes else None
    runs, skipped = load_runs(run_dirs)
    base = choose_baseline(runs, baseline)
    timed = time_pair_records(runs, [load_run(path) for path in time_runs], list(time_pairs))
    reference = reference_section(runs, recommended, timed)
    cv_folders, rg_folders = load_folders(load_cv, cv), load_folders(load_radiogenomics, radiogenomics)
    figures, prefix = output.parent / "figures", output.stem
    time_png, estimated = time_to_accuracy_figure(runs, figures, prefix)
    drawn = ReportFigures(time_png, estimated, base, baseline_figure(runs[0], base, figures, prefix),
                          comparison_figure(runs, figures, prefix), case_figures(runs[0], figures, prefix))
    drawn.cv, drawn.radiogenomics = folder_figures(cv_folders, rg_folders, figures, prefix)
    text = render(runs, output.parent, drawn, title=title, notes=notes_text, cv=cv_folders,
                  radiogenomics=rg_folders, skipped=skipped, reference=reference)
    with atomic_path(output) as tmp:
        tmp.write_text(text)
    return output


def load_runs(run_dirs: list[str | Path]) -> tuple[list[RunRecord], list[tuple[Path, DamagedRunFileError]]]:
    """(the runs, best first; the runs skipped because a file of theirs is damaged, with the error).

    A damaged config.json, metrics.json, history.csv or evaluation file skips that run with a warning
    on stderr naming the file (the report of the other runs is still worth having, and the report
    lists what it skipped); a path that is not a run folder at all stays an error. ReportError when
    every run is skipped.
    """
    runs, skipped = [], []
    for path in run_dirs:
        try:
            runs.append(load_run(path))
        except DamagedRunFileError as err:
            skipped.append((Path(path), err))
            print(f"warning: run {path} skipped: {err}", file=sys.stderr)
    if not runs:
        raise ReportError(f"every run has a damaged file, nothing to report: {'; '.join(str(e) for _, e in skipped)}")
    return sort_runs(runs), skipped


def read_notes(path: str | Path, output: Path) -> str:
    """The text of the hand-written notes file; ReportError when it is missing or is the report itself."""
    path = Path(path)
    if path.resolve() == output.resolve():
        raise ReportError(f"--notes {path} is the report itself, which is rewritten; keep the hand-written "
                          "analysis in its own file (e.g. reports/NOTES.md)")
    if not path.is_file():
        raise ReportError(f"--notes {path}: no such file; write the hand-written analysis (Markdown) there "
                          "or leave --notes out")
    return path.read_text()


def render(runs: list[RunRecord], report_dir: Path, drawn: ReportFigures, title: str = DEFAULT_TITLE,
           notes: str | None = None, cv: list[CVFolder] = (),
           radiogenomics: list[RadiogenomicsFolder] = (), skipped: list[tuple[Path, Exception]] = (),
           reference: list[str] = ()) -> str:
    """The report's Markdown: header, results and settings tables, notes verbatim, the figure sections, then
    cross-validation and radiogenomics when given, and how to reproduce each run. ``skipped``: (run folder,
    error) of runs left out because a file of theirs is damaged; they are listed under the results table.
    ``reference``: the lines of the reference program's section (tfseg.report_reference), after the seed groups."""
    rel = lambda p: os.path.relpath(p, report_dir).replace(os.sep, "/")  # noqa: E731
    lines = [f"# {title}", "",
             f"Generated {datetime.now().isoformat(timespec='seconds')} from {len(runs)} run(s). Protocol: "
             "docs/protocol.md (per-volume DSC after threshold 0.5 and the largest 3-D connected component; mean is "
             "the headline). Runs are sorted by mean DSC (preprocessed geometry); the reference program reached "
             f"{REFERENCE_MEAN_DSC} under cpu-128. 'DSC from' says whether the figures come from `evaluate.py` "
             "(both geometries, HD95) or from training's own validation (preprocessed geometry only).", "",
             "## Results", "", *markdown_table(RESULT_COLUMNS, runs), "",
             "Epochs: trained (best). Training time: wall clock, per-epoch validation included, on the CPU shown "
             "(bf16: the CPU computes bfloat16 natively).", "",
             *[line for path, err in skipped for line in (f"Skipped: `{path.name}`, a damaged file: {_text(str(err))}", "")],
             "## Settings", "", *markdown_table(SETTING_COLUMNS, runs), "",
             "Budget: 'cpu-128 (12 ep)' is the protocol's epoch budget; 'N min wall clock (old)' the earlier "
             "cpu-128, stopped by a time limit. Code: the commit trained ('+dirty': with uncommitted changes).", ""]
    if notes:
        lines += [notes.rstrip("\n"), ""]
    lines += _time_section(drawn, rel)
    lines += _baseline_section(runs[0], drawn, rel)
    lines += _seed_section(runs, drawn.baseline)
    lines += list(reference)
    lines += ["## Per-patient DSC of every run", ""]
    lines += ([f"![per-patient DSC of every run]({rel(drawn.per_patient)})", ""] if drawn.per_patient
              else ["No run has per-patient scores.", ""])
    lines += _cases_section(runs[0], drawn.cases, rel)
    if cv:
        lines += cv_section(cv, drawn.cv, rel)
    if radiogenomics:
        lines += radiogenomics_section(radiogenomics, drawn.radiogenomics, rel)
    lines += ["## How to reproduce each run", ""]
    for run in runs:
        lines += _reproduce(run)
    return "\n".join(lines) + "\n"


def _time_section(drawn: ReportFigures, rel) -> list[str]:
    lines = ["## Time to accuracy", "",
             f"![validation DSC by training time and by images seen]({rel(drawn.time_to_accuracy)})", "",
             "Validation mean per-volume DSC after each epoch against cumulative training wall time (left) and "
             "training images seen (right); times are on each run's own CPU (Results table). Black: the "
             f"reference program under cpu-128 (docs/protocol.md), its 12 epochs assumed evenly spaced over "
             f"{REFERENCE_TRAIN_MINUTES} min and 208×16 images each; dotted: its best, {REFERENCE_MEAN_DSC}."]
    if drawn.estimated:
        lines[-1] += (" Dashed: runs whose history.csv has no train_seconds / images_seen columns ("
                      + ", ".join(f"`{name}`" for name in drawn.estimated) + "); their time is epoch × "
                      "train_seconds / epochs from metrics.json and their images epoch × 208 × 16.")
    return lines + [""]


def _baseline_section(best: RunRecord, drawn: ReportFigures, rel) -> list[str]:
    lines = ["## Best run against the baseline", ""]
    base = drawn.baseline
    if base is None:
        return lines + [f"No baseline: no run's name contains '{BASELINE_MARK}'; name one with "
                        "`--baseline NAME`.", ""]
    if drawn.best_vs_baseline is None:
        return lines + [f"No per-patient scores for `{best.name}` or the baseline `{base.name}`.", ""]
    said = (f"The best run, `{best.name}`, is the baseline." if base is best else
            f"The best run, `{best.name}` (mean {_fixed(best.score('mean_dsc'), 4)}), against the baseline "
            f"`{base.name}` (mean {_fixed(base.score('mean_dsc'), 4)}).")
    return lines + [f"{said} Per-patient DSC, preprocessed geometry; dotted lines: each run's mean; dashed: the "
                    f"reference program's mean under cpu-128, {REFERENCE_MEAN_DSC}.", "",
                    f"![best run against the baseline]({rel(drawn.best_vs_baseline)})", ""]


def _seed_section(runs: list[RunRecord], baseline: RunRecord | None) -> list[str]:
    """Mean ± sd over seeds for every group of runs that differ only by seed; the best group against the
    baseline's group patient by patient."""
    groups = seed_groups(runs)
    lines = ["## Seed groups", ""]
    if not groups:
        return lines + ["No two runs share every setting but the seed.", ""]
    rows = []
    for group in groups:
        d = describe_group(group)
        native = f"{d['mean_native']:.4f} ± {d['sd_native']:.4f}" if "mean_native" in d else DASH
        rows.append([", ".join(f"`{n}`" for n in d["runs"]), ", ".join(map(str, d["seeds"])),
                     ", ".join(f"{v:.4f}" for v in d["mean_dsc_by_seed"]), f"{d['mean']:.4f} ± {d['sd']:.4f}", native])
    lines += _table(["Runs", "Seeds", "Mean DSC per seed", "Mean ± sd", "Mean ± sd (native)"], rows) + [""]
    base_group = next((g for g in groups if baseline is not None and baseline in g.runs), None)
    if base_group is None or base_group is groups[0]:
        return lines + ["No paired comparison: the baseline has no seed group of its own, or it is the best.", ""]
    # A group with fewer seeds than the baseline's is not compared: its mean and spread are not yet as settled.
    best = next(g for g in groups if len(g.runs) >= len(base_group.runs))  # the baseline's own group at the latest
    if best is base_group:
        return lines + [f"No paired comparison: no group has as many seeds as the baseline's ({len(base_group.runs)}) "
                        "and a better mean.", ""]
    c = paired_comparison(best, base_group)
    p = DASH if c["wilcoxon_p"] is None else f"{c['wilcoxon_p']:.3f}"
    verdict = "exceeds" if c["beyond_spread"] else "does not exceed"
    return lines + [
        f"Best group with at least the baseline's {len(base_group.runs)} seeds ({best.label}) against the baseline "
        f"group ({base_group.label}), each patient's DSC averaged "
        f"over the seeds: mean difference {c['mean_difference']:+.4f} (sd {c['sd_difference']:.4f}) over "
        f"{len(c['patients'])} patients, {c['improved']} improved and {c['worsened']} worsened; Wilcoxon "
        f"signed-rank p = {p}. The difference of the seed-means, {c['seed_mean_difference']:+.4f}, {verdict} "
        f"the seeds' spread (the sum of the two groups' sd, {c['spread']:.4f}).", ""]


def _cases_section(best: RunRecord, cases: list, rel) -> list[str]:
    lines = [f"## Best and worst validation case of the best run (`{best.name}`)", ""]
    if not cases:
        if best.flat:
            return lines + [f"No overlays in {best.path / 'overlays'}: copy the best and worst case's "
                            "`<patient>_montage.png` from the run's eval/overlays/ there "
                            "(scripts/campaign.py does).", ""]
        return lines + [f"No overlays: evaluate the run first with `python evaluate.py --model {best.path}` "
                        f"(writes {best.path / EVAL_DIR}/overlays/).", ""]
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
    model = run.config.get("logdir") if run.flat and run.config.get("logdir") else run.path
    lines += ["", label, "", "```", recorded or f"python evaluate.py --model {model}", "```", ""]
    if machine:
        lines += [f"Trained on: {_cpu(run)}, {machine.get('cpu_count', DASH)} cores, GPUs "
                  f"{machine.get('gpus') or 'none'}; TensorFlow {machine.get('tensorflow', DASH)}, "
                  f"Keras {machine.get('keras', DASH)}; code {_code(run)}.", ""]
    return lines


if __name__ == "__main__":  # `python -m tfseg.report`: the same command as `tfseg report`
    from tfseg.cli.report import main

    sys.exit(main(prog="python -m tfseg.report"))
