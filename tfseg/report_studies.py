"""The report's study sections: cross-validation folders and radiogenomics folders (issue 10).

`tfseg.report` builds the campaign report from training runs; these are the two
optional sections it adds from other commands' output folders:

* ``--cv DIR``: a folder of ``python -m tfseg.cv`` (``summary.json``, ``per_patient.csv``,
  ``dsc.png``): one row per folder, its per-fold table, its worst patients, its
  uncertainty ranking when scored, and the comparison with the paper and the goal.
* ``--radiogenomics DIR``: a folder of ``python -m tfseg.radiogenomics``
  (``summary.json``, ``tests.csv``, ``features.csv``, ``figure.png``): the primary
  tests side by side with the paper's p-values, and the agreement between the
  manual masks (the first folder) and each predicted-mask folder.

`load_cv` / `load_radiogenomics` read and check a folder (`StudyFolderError` naming
the file and the command to run); `cv_section` / `radiogenomics_section` give the
Markdown lines.
"""
from __future__ import annotations

import csv
import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from tfseg.fileio import atomic_path
from tfseg.markdown import DASH, fixed as _fixed, table as _table, text as _text
# The paper's findings as (feature, column, p bound), and the one verdict on them:
from tfseg.radiogenomics.study import BELOW_BOUND, NEAR_FACTOR, NOT_REPRODUCED, PAPER_FINDINGS, paper_verdict
from tfseg.runs import METRICS, PER_PATIENT, SUMMARY, RunFolderError, as_number, read_per_patient_csv
from tfseg.uncertainty import spearman_with_dsc


class StudyFolderError(RunFolderError):
    """A CV or radiogenomics folder cannot be read (missing file, wrong columns); the message says what to run."""


# Cross-validation: the paper published with kaggle_3m (Buda et al. 2019) reports mean 82% / median 85%
# per-volume DSC from its 22-fold cross-validation over the 110 patients, and about 84% between two human
# readers' masks; issue 10's goal is a cross-validated mean of at least 0.88.
PAPER_CV = {"mean": 0.82, "median": 0.85, "folds": 22, "patients": 110}
HUMAN_READERS_DSC = 0.84
CV_GOAL_MEAN_DSC = 0.88
CV_WORST = 5  # patients listed per cross-validation folder, worst DSC first
CV_MODEL_KEYS = (("Architecture", "arch"), ("Base filters", "base_filters"), ("Loss", "loss"), ("LR", "lr"),
                 ("Schedule", "schedule"))

RADIOGENOMICS_METHOD = "METHOD.md"  # the method write-up, looked for in and beside each radiogenomics folder
SIGNIFICANT_MARK = "✱"


# ----------------------------------------------------------------------------
# Cross-validation and radiogenomics folders
# ----------------------------------------------------------------------------

CV_KEYS = ("patients", "folds", "pre", "native", "pre_by_fold", "native_by_fold")
TESTS_COLUMNS = ("feature", "cluster", "family", "p", "p_bonferroni_10", "significant")
CV_RERUN = "run `python -m tfseg.cv --out {path}` (with the train.py flags of its folds) first"
RADIOGENOMICS_RERUN = "run `python -m tfseg.radiogenomics --data kaggle_3m --masks manual|PRED_DIR --out {path}` first"


@dataclass
class CVFolder:
    """One folder of ``python -m tfseg.cv``: summary.json, per_patient.csv's rows and its dsc.png (None if absent)."""

    path: Path
    label: str
    summary: dict
    per_patient: list[dict]
    figure: Path | None


@dataclass
class RadiogenomicsFolder:
    """One folder of ``python -m tfseg.radiogenomics``: summary.json, tests.csv's rows, features.csv by patient."""

    path: Path
    label: str
    summary: dict
    tests: list[dict]
    features: dict[str, dict[str, float]]
    figure: Path | None


def _unique_labels(labels: list[str]) -> list[str]:
    """The labels with '-2', '-3' added to repeats: they name table columns and figure files."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}-{seen[label]}")
    return out


def _file_part(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", label)


def _json_file(path: Path, todo: str) -> dict:
    """A JSON object file; StudyFolderError naming it (and ``todo``) when it is missing or unreadable."""
    if not path.is_file():
        raise StudyFolderError(f"{path}: no such file; {todo}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise StudyFolderError(f"{path} is not valid JSON ({err}); {todo}") from err


def _csv_rows(path: Path, columns: tuple[str, ...], todo: str) -> list[dict[str, str]]:
    """The rows of a CSV file that has ``columns``; StudyFolderError naming the file otherwise."""
    if not path.is_file():
        raise StudyFolderError(f"{path}: no such file; {todo}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows, header = list(reader), reader.fieldnames or []
    missing = [c for c in columns if c not in header]
    if missing or not rows:
        raise StudyFolderError(f"{path}: " + (f"no column {', '.join(missing)}" if missing else "no rows") + f"; {todo}")
    return rows


def _float(text) -> float:
    """A CSV cell as a float, nan when empty (an undefined p-value, a feature of an empty mask)."""
    return math.nan if text in ("", None) else float(text)


def _fold_state(path: Path) -> str:
    """Which fold folders of an unfinished cross-validation have metrics.json (training finished)."""
    folds = sorted((p for p in path.glob("fold-*") if p.is_dir()), key=lambda p: (len(p.name), p.name))
    if not folds:
        return ""
    done = [p.name for p in folds if (p / METRICS).is_file()]
    pending = [p.name for p in folds if p.name not in done]
    # Folds still training have a history.csv but no metrics.json; summary.json comes after the last fold is scored.
    return (f" The cross-validation is unfinished: folds with {METRICS}: {', '.join(done) or 'none'}; without: "
            f"{', '.join(pending) or 'none'} (summary.json is written once every fold is trained and scored out "
            "of fold; the command resumes where it stopped).")


def load_cv(path: str | Path, label: str | None = None) -> CVFolder:
    """Read a ``python -m tfseg.cv`` folder; StudyFolderError naming the file when one is missing or incomplete."""
    path = Path(path)
    todo = CV_RERUN.format(path=path)
    if not path.is_dir():
        raise StudyFolderError(f"--cv {path} is not a folder; give the --out folder of `python -m tfseg.cv`")
    if not (path / SUMMARY).is_file():
        raise StudyFolderError(f"--cv {path}: no {path / SUMMARY}; {todo}.{_fold_state(path)}")
    summary = _json_file(path / SUMMARY, todo)
    missing = [key for key in CV_KEYS if key not in summary]
    if missing:
        raise StudyFolderError(f"{path / SUMMARY} has no {', '.join(missing)}: not written by `python -m tfseg.cv`; {todo}")
    _csv_rows(path / PER_PATIENT, ("patient", "fold", "dsc_pre", "dsc_native"), todo)  # checks the columns
    try:
        rows = read_per_patient_csv(path / PER_PATIENT)
    except ValueError as err:
        raise StudyFolderError(f"{path / PER_PATIENT}: {err}; {todo}") from err
    figure = path / "dsc.png"
    return CVFolder(path, label or path.name, summary, rows, figure if figure.is_file() else None)


def load_radiogenomics(path: str | Path, label: str | None = None) -> RadiogenomicsFolder:
    """Read a ``python -m tfseg.radiogenomics`` folder; StudyFolderError naming the file when one is missing or bad.

    The label is "manual" for the kaggle_3m masks, else the folder's name (predicted masks).
    """
    path = Path(path)
    todo = RADIOGENOMICS_RERUN.format(path=path)
    if not path.is_dir():
        raise StudyFolderError(f"--radiogenomics {path} is not a folder; {todo}")
    summary = _json_file(path / SUMMARY, todo)
    tests = _csv_rows(path / "tests.csv", TESTS_COLUMNS, todo)
    primary = _primary_features(tests)
    features = _csv_rows(path / "features.csv", ("patient", *primary), todo)
    try:
        tests = [row | {"p": _float(row["p"]), "p_bonferroni_10": _float(row["p_bonferroni_10"]),
                        "significant": row["significant"] == "True"} for row in tests]
        by_patient = {row["patient"]: {f: _float(row[f]) for f in primary} for row in features}
    except ValueError as err:
        raise StudyFolderError(f"{path}: a number in tests.csv or features.csv does not parse ({err}); {todo}") from err
    figure = path / "figure.png"
    label = label or ("manual" if summary.get("mask_kind") == "manual" else path.name)
    return RadiogenomicsFolder(path, label, summary, tests, by_patient, figure if figure.is_file() else None)


def _primary_features(tests: list[dict]) -> list[str]:
    """The primary family's features (BEVR, ASD, MF), in tests.csv's order."""
    return list(dict.fromkeys(row["feature"] for row in tests if row["family"] == "primary"))


def load_folders(loader, paths) -> list:
    """Every folder of ``paths`` read by ``loader``, labels made unique (the same folder twice is allowed)."""
    folders = [loader(path) for path in paths or ()]
    for folder, label in zip(folders, _unique_labels([f.label for f in folders])):
        folder.label = label
    return folders


def copy_figure(source: Path | None, target: Path) -> Path | None:
    """Copy a folder's PNG next to the report (as the case montages are), so the report's links stay relative."""
    if source is None:
        return None
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return target


def folder_figures(cv: list[CVFolder], radiogenomics: list[RadiogenomicsFolder], figures: Path,
                   prefix: str) -> tuple[dict, dict]:
    """Copy each CV folder's dsc.png and each radiogenomics folder's figure.png into ``figures``."""
    return ({f.label: copy_figure(f.figure, figures / f"{prefix}_cv_{_file_part(f.label)}_dsc.png") for f in cv},
            {f.label: copy_figure(f.figure, figures / f"{prefix}_radiogenomics_{_file_part(f.label)}.png")
             for f in radiogenomics})


def _dsc_cells(pre: dict, native: dict) -> list[str]:
    """Mean and median DSC, preprocessed then native (summary.json's {mean, median, n} entries)."""
    return [_fixed(pre.get("mean"), 4), _fixed(pre.get("median"), 4),
            _fixed(native.get("mean"), 4), _fixed(native.get("median"), 4)]


DSC_HEADERS = ["Mean DSC", "Median DSC", "Mean DSC (native)", "Median DSC (native)"]


def _goal_geometries(folder: CVFolder) -> list[str] | None:
    """The geometries ('preprocessed', 'native') whose mean DSC reaches CV_GOAL_MEAN_DSC; None without a mean."""
    means = {"preprocessed": as_number(folder.summary["pre"].get("mean")),
             "native": as_number(folder.summary["native"].get("mean"))}
    if all(mean is None for mean in means.values()):
        return None
    return [name for name, mean in means.items() if mean is not None and mean >= CV_GOAL_MEAN_DSC]


def cv_goal(folder: CVFolder) -> str:
    """Whether the folder's mean DSC reaches CV_GOAL_MEAN_DSC: 'reached', 'not reached', or in one geometry only."""
    reached = _goal_geometries(folder)
    if reached is None:
        return DASH
    return "reached" if len(reached) == 2 else f"reached ({reached[0]} only)" if reached else "not reached"


def _cv_row(folder: CVFolder) -> list[str]:
    config = folder.summary.get("train_config") or {}
    return ([f"`{folder.label}`", _text(folder.summary["folds"]), _text(folder.summary["patients"]),
             *_dsc_cells(folder.summary["pre"], folder.summary["native"])]
            + [_text(config.get(key)) for _, key in CV_MODEL_KEYS] + [cv_goal(folder)])


def _cv_comparison(folder: CVFolder) -> str:
    """One sentence: the folder against the paper, the human readers and the goal, said plainly."""
    pre, native = folder.summary["pre"], folder.summary["native"]
    mean, median = as_number(pre.get("mean")), as_number(pre.get("median"))
    if mean is None:
        return f"`{folder.label}`: no mean DSC in {folder.path / SUMMARY}."
    reached = _goal_geometries(folder)
    verdict = ("reaches it in both geometries" if len(reached) == 2 else
               f"reaches it in the {reached[0]} geometry only" if reached else "does not reach it")
    return (f"`{folder.label}` ({folder.summary['folds']} folds, {folder.summary['patients']} patients): mean DSC "
            f"{mean:.4f} (native {_fixed(native.get('mean'), 4)}), {mean - PAPER_CV['mean']:+.4f} against the "
            f"paper's mean and {mean - HUMAN_READERS_DSC:+.4f} against the human readers; median "
            f"{_fixed(median, 4)} (native {_fixed(native.get('median'), 4)}) against the paper's "
            f"{PAPER_CV['median']:.2f}. Goal mean DSC ≥ {CV_GOAL_MEAN_DSC}: **{cv_goal(folder)}** — "
            f"`{folder.label}` {verdict}.")


def cv_section(folders: list[CVFolder], figures: dict, rel) -> list[str]:
    """The CV table (one row per folder, the paper's row last), the comparison, then each folder's details."""
    headers = ["CV", "Folds", "Patients", *DSC_HEADERS, *(h for h, _ in CV_MODEL_KEYS),
               f"Goal (mean ≥ {CV_GOAL_MEAN_DSC})"]
    paper = ["Buda et al. 2019 (paper)", str(PAPER_CV["folds"]), str(PAPER_CV["patients"]),
             f"{PAPER_CV['mean']:.2f}", f"{PAPER_CV['median']:.2f}"] + [DASH] * (len(headers) - 5)
    lines = ["## Cross-validation", "", *_table(headers, [_cv_row(f) for f in folders] + [paper]), "",
             "Out-of-fold per-volume DSC of `python -m tfseg.cv`: every patient is scored by the fold model that did "
             "not train on it (preprocessed geometry, and native: the original 256×256 slices). Model settings from "
             "each folder's train_config. The paper published with the data set (Buda et al. 2019) reports mean "
             f"{PAPER_CV['mean']:.0%} / median {PAPER_CV['median']:.0%} per-volume DSC from its "
             f"{PAPER_CV['folds']}-fold cross-validation; two human readers agree at about {HUMAN_READERS_DSC:.0%}. "
             f"Issue 10's goal: a cross-validated mean DSC of at least {CV_GOAL_MEAN_DSC}.", ""]
    lines += [f"- {_cv_comparison(f)}" for f in folders] + [""]
    for folder in folders:
        lines += _cv_folder_lines(folder, figures.get(folder.label), rel)
    return lines


def _cv_folder_lines(folder: CVFolder, figure: Path | None, rel) -> list[str]:
    """One CV folder: per-fold table, worst patients, uncertainty ranking, the DSC figure."""
    by_fold = sorted(folder.summary["pre_by_fold"], key=int)
    fold_rows = [[k, _text(folder.summary["pre_by_fold"][k].get("n")),
                  *_dsc_cells(folder.summary["pre_by_fold"][k], folder.summary["native_by_fold"].get(k, {}))]
                 for k in by_fold]
    lines = [f"### `{folder.label}` ({folder.path})", "", f"Per fold of `{folder.label}`:", "",
             *_table(["Fold", "Patients", *DSC_HEADERS], fold_rows), ""]
    lines += _cv_worst_lines(folder) + _cv_uncertainty_lines(folder)
    if figure is None:
        return lines + [f"No dsc.png in {folder.path}.", ""]
    return lines + [f"![out-of-fold DSC per patient, {folder.label}]({rel(figure)})", ""]


def _cv_worst_lines(folder: CVFolder) -> list[str]:
    # Worst by the preprocessed DSC, the protocol's headline; NaN (never expected for DSC) sorts last.
    ranked = sorted(folder.per_patient, key=lambda r: (as_number(r["dsc_pre"]) is None, r["dsc_pre"], r["patient"]))
    scored = "uncertainty" in (folder.per_patient[0] if folder.per_patient else {})
    headers = ["Patient", "Fold", "DSC", "DSC (native)", "HD95 (native, px)"] + (["Uncertainty"] if scored else [])
    rows = [[f"`{r['patient']}`", f"{r['fold']:.0f}", _fixed(r["dsc_pre"], 4), _fixed(r["dsc_native"], 4),
             _fixed(r.get("hd95_native"), 2)] + ([_fixed(r["uncertainty"], 3)] if scored else [])
            for r in ranked[:CV_WORST]]
    return [f"Worst {min(CV_WORST, len(ranked))} patients of `{folder.label}` (lowest DSC, preprocessed):", "",
            *_table(headers, rows), ""]


def _cv_uncertainty_lines(folder: CVFolder) -> list[str]:
    """Spearman rho of the uncertainty score with the native DSC (tfseg.uncertainty), when it was scored."""
    scored = folder.summary.get("uncertainty")
    if not scored:
        return []
    rho, p = scored.get("spearman_rho_with_dsc"), scored.get("p_value")
    said = (f"Spearman rho {rho:+.3f} with the native DSC over {scored.get('n_patients')} patients (p = {p:.3g}; "
            "negative: more disagreement, lower DSC)" if rho is not None
            else f"no Spearman rho ({scored.get('why', 'undefined')})")
    first = ", ".join(f"`{name}`" for name in scored.get("check_first", [])[:CV_WORST])
    return [f"Uncertainty ({scored.get('views', 'views')}): {said}." + (f" Check first: {first}." if first else ""),
            ""]


# ----------------------------------------------------------------------------
# Radiogenomics section
# ----------------------------------------------------------------------------

def paper_bound(feature: str, cluster: str) -> float | None:
    """The paper's 'p < bound' for a test (the smallest when two findings cover it), None where it gives none."""
    bounds = [bound for f, c, bound in PAPER_FINDINGS if f == feature and c in (None, cluster)]
    return min(bounds) if bounds else None


def _pair(feature: str, cluster: str) -> str:
    return f"{feature.upper()} × {cluster}"


def _p(value) -> str:
    return DASH if as_number(value) is None else f"{value:.2g}"


def _primary(folder: RadiogenomicsFolder) -> dict[tuple[str, str], dict]:
    """The primary tests of a folder by (feature, cluster), in tests.csv's order."""
    return {(row["feature"], row["cluster"]): row for row in folder.tests if row["family"] == "primary"}


def _significant(folder: RadiogenomicsFolder) -> list[tuple[str, str]]:
    return [pair for pair, row in _primary(folder).items() if row["significant"]]


def _names(pairs) -> str:
    return ", ".join(_pair(*pair) for pair in pairs) or "none"


def _rg_table(folders: list[RadiogenomicsFolder]) -> list[str]:
    """One row per primary (feature, cluster); raw p and p×10 per folder (✱ bold: significant); the paper's p."""
    tests = [_primary(folder) for folder in folders]
    pairs = list(dict.fromkeys(pair for folder_tests in tests for pair in folder_tests))
    headers = ["Feature", "Subtype"] + [f"{f.label} {h}" for f in folders for h in ("p", "p×10")]
    rows = []
    for feature, cluster in pairs:
        row = [feature.upper(), cluster]
        for folder_tests in tests:
            test = folder_tests.get((feature, cluster))
            corrected = _p(test and test["p_bonferroni_10"])
            row += [_p(test and test["p"]),
                    f"**{corrected}** {SIGNIFICANT_MARK}" if test and test["significant"] else corrected]
        bound = paper_bound(feature, cluster)
        rows.append(row + [DASH if bound is None else f"p < {bound:g}"])
    return _table(headers + ["Paper (automatic masks)"], rows)


def _rg_paper_sentence(folder: RadiogenomicsFolder) -> str:
    """How many of the paper's findings the folder reproduces (tfseg.radiogenomics.study.paper_verdict), and which not."""
    tested = [(pair, row["p"], paper_bound(*pair)) for pair, row in _primary(folder).items()
              if paper_bound(*pair) is not None]
    verdicts = [(pair, p, bound, paper_verdict(p, bound)) for pair, p, bound in tested]
    missed = [f"{_pair(*pair)} (p {_p(p)}, paper < {bound:g})" for pair, p, bound, v in verdicts if v == NOT_REPRODUCED]
    near = [f"{_pair(*pair)} (p {_p(p)}, paper < {bound:g})" for pair, p, bound, v in verdicts
            if v not in (NOT_REPRODUCED, BELOW_BOUND)]
    return (f"Against the paper's p-values: {len(tested) - len(missed)} of {len(tested)} reproduced (below its bound, "
            f"or within {NEAR_FACTOR:g}x of it and significant after its ×10 correction)"
            + (f"; just above its bound: {', '.join(near)}" if near else "")
            + (f"; not: {', '.join(missed)}." if missed else "."))


def _rg_folder_sentence(folder: RadiogenomicsFolder) -> str:
    summary = folder.summary
    empty = (summary.get("empty_masks") or {}).get("count")
    masks = (summary.get("command") or {}).get("masks", summary.get("mask_kind", DASH))
    return (f"- `{folder.label}` ({folder.path}; masks: {masks}; {_text(summary.get('patients'))} patients, "
            f"{_text(empty)} with an empty mask): significant (p×10 < 0.05): {_names(_significant(folder))}. "
            + _rg_paper_sentence(folder))


def _spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rho over the pairs where both are defined; None with under 3 pairs or a constant side."""
    return spearman_with_dsc(a, b)["spearman_rho_with_dsc"]  # the same rule as the uncertainty ranking's


def feature_correlations(first: RadiogenomicsFolder, other: RadiogenomicsFolder) -> tuple[int, dict]:
    """(number of common patients, {feature: Spearman rho between the two folders' values, or None})."""
    common = sorted(set(first.features) & set(other.features))
    features = [f for f in _primary_features(first.tests) if f in _primary_features(other.tests)]
    return len(common), {f: _spearman([first.features[p][f] for p in common], [other.features[p][f] for p in common])
                         for f in features}


def _rg_agreement(first: RadiogenomicsFolder, other: RadiogenomicsFolder) -> str:
    """Which significant findings the two folders share, and how alike their features rank the patients."""
    a, b = _significant(first), _significant(other)
    n, rhos = feature_correlations(first, other)
    rho_text = ", ".join(f"{f.upper()} {_fixed(rho, 3)}" for f, rho in rhos.items())
    return (f"- `{first.label}` and `{other.label}` agree on {_names([p for p in a if p in b])} (significant in "
            f"both); significant in `{first.label}` only: {_names([p for p in a if p not in b])}; in "
            f"`{other.label}` only: {_names([p for p in b if p not in a])}. Spearman rho of each feature between "
            f"them over their {n} common patients (undefined values left out): {rho_text}.")


def _method_files(folders: list[RadiogenomicsFolder]) -> list[Path]:
    """METHOD.md in or beside each folder (results/radiogenomics/METHOD.md beside .../manual), each once."""
    found: dict[Path, Path] = {}
    for folder in folders:
        for candidate in (folder.path / RADIOGENOMICS_METHOD, folder.path.parent / RADIOGENOMICS_METHOD):
            if candidate.is_file():
                found.setdefault(candidate.resolve(), candidate)
    return list(found.values())


def radiogenomics_section(folders: list[RadiogenomicsFolder], figures: dict, rel) -> list[str]:
    """The primary tests side by side with the paper's, what each folder finds, agreement with the first, figures."""
    first = folders[0]
    methods = ", ".join(f"[{RADIOGENOMICS_METHOD}]({rel(p)})" for p in _method_files(folders))
    lines = ["## Radiogenomics: tumour shape vs genomic subtype", "",
             "Buda, Saha & Mazurowski 2019 (Comput Biol Med 109:218–225) split each tumour shape feature at its "
             "median (BEVR: bounding-ellipsoid volume ratio; ASD: angular standard deviation; MF: margin "
             "fluctuation) and tested it against each genomic subtype with Fisher's exact test, significant at "
             f"p < 0.005 (Bonferroni over 10 hypotheses): here p×10 < 0.05, bold with {SIGNIFICANT_MARK}. "
             "Folders written by `python -m tfseg.radiogenomics`." + (f" Method and choices: {methods}." if methods
                                                                      else ""), "",
             "Exact p per primary test (p: raw; p×10: with the paper's Bonferroni factor; paper: the p-value it "
             "reports on its automatic masks, where it gives one):", "", *_rg_table(folders), "",
             *(_rg_folder_sentence(f) for f in folders), ""]
    if len(folders) > 1:
        lines += [f"Agreement with `{first.label}` (the first folder):", ""]
        lines += [_rg_agreement(first, other) for other in folders[1:]] + [""]
    for folder in folders:
        figure = figures.get(folder.label)
        lines += ([f"![shape features per genomic cluster, {folder.label}]({rel(figure)})", ""] if figure
                  else [f"No figure.png in {folder.path}.", ""])
    return lines
