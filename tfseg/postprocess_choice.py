"""Choosing the post-processing on out-of-fold probabilities (``tfseg postprocess``), and the files it reads.

    tfseg cv --out CV_DIR ...                      # writes CV_DIR/probabilities/<patient>.npz
    tfseg postprocess --cv CV_DIR [--exclude-validation] [--out FILE]

docs/protocol.md ("Cross-validation"): a rule a method chooses (the threshold, which components
to keep) must be chosen on out-of-fold predictions, never on the patients it is then scored on;
the figure without it is reported beside the figure with it, and the metric's own
largest-component step is applied to the rule's final mask.

The probability files (:func:`write_probabilities`), one per patient, ``np.savez_compressed``:

* ``pre``: (S', N, N) float16, the probabilities in the preprocessed geometry;
* ``native``: (S, 256, 256) float16, mapped back onto the original slices;
* ``pre_truth`` (S', N, N) and ``native_truth`` (S, 256, 256): uint8 0/1 masks;
* ``voxel_scale_pre``: preprocessed voxels per native voxel, (N / side)^2 (slices map 1:1);
* ``patient`` and ``fold`` (-1 outside a cross-validation).

float16 keeps about 3 decimals, and a model's probabilities crowd near 0.5 where it hesitates: a voxel
a hair above a threshold could round onto it and drop out. :func:`to_float16` nudges every such voxel
by one float16 step so that ``p > t`` is unchanged for each candidate threshold t (:data:`THRESHOLDS`,
read back as float32): the chooser's protocol row is then the CV's own figure. The summed probability
of a component ("largest_mass") is that of the rounded values.

The candidates (:func:`candidate_rules`): the protocol (threshold 0.5, the largest component); the
component of the largest summed probability; every component of at least N native voxels for N in
:data:`MIN_SIZE_GRID` (the largest is always kept); the two largest; every component (none). Then
thresholds :data:`THRESHOLDS` for the component mode chosen. Each is scored by the protocol's
metric (per-volume DSC over the patients, mean and median, both geometries): a rule that keeps
several components is scored on its own mask *and* on that mask after the metric's
largest-component step; the choice uses the latter.
"""
from __future__ import annotations

import io
import sys
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import scipy.ndimage

from tfseg.fileio import atomic_path, write_json_atomic, write_text_atomic
from tfseg.postprocess import THRESHOLD, PostprocessError, PostprocessRule

PROBABILITIES_DIR = "probabilities"
REPORT = "postprocess.md"  # beside the default postprocess.json; FILE.json gets FILE.md
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
MIN_SIZE_GRID = (100, 250, 500, 1000, 2000)  # native voxels; N = 0 is the rule "none"
# An improvement smaller than this is float rounding, not an improvement: the current rule stays.
TOLERANCE = 1e-9
GEOMETRIES = ("pre", "native")
RECOVER = "write them again with `tfseg cv --out CV_DIR --predict-only` (or `tfseg evaluate --save-probabilities`)"


# ----------------------------------------------------------------------------
# The probability files
# ----------------------------------------------------------------------------

@dataclass
class PatientProbabilities:
    """One patient's probabilities (float32, as read back from float16) and truth (bool) in both geometries."""

    patient: str
    fold: int
    pre: np.ndarray = field(repr=False)
    native: np.ndarray = field(repr=False)
    pre_truth: np.ndarray = field(repr=False)
    native_truth: np.ndarray = field(repr=False)
    voxel_scale_pre: float = 1.0


def to_float16(probabilities, thresholds=THRESHOLDS) -> np.ndarray:
    """``probabilities`` as float16, each voxel on the same side of every threshold as in float32."""
    exact = np.asarray(probabilities, np.float32)
    rounded = exact.astype(np.float16)
    for t in np.asarray(thresholds, np.float32):
        wanted = exact > t
        wrong = wanted != (rounded.astype(np.float32) > t)
        if not wrong.any():
            continue
        above = np.float16(t)  # the smallest float16 above t, and the largest at or below it
        while np.float32(above) <= t:
            above = np.nextafter(above, np.float16(np.inf))
        below = np.nextafter(above, np.float16(-np.inf))
        rounded[wrong] = np.where(wanted[wrong], above, below)
    return rounded


def write_probabilities(path: str | Path, patient: str, pre, native, pre_truth, native_truth,
                        voxel_scale_pre: float, fold: int | None = None) -> Path:
    """Write one patient's probability file (see the module docstring) atomically; returns its path."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, patient=np.array(patient), fold=np.array(-1 if fold is None else int(fold)),
                        pre=to_float16(pre), native=to_float16(native),
                        pre_truth=(np.asarray(pre_truth) > 0).astype(np.uint8),
                        native_truth=(np.asarray(native_truth) > 0).astype(np.uint8),
                        voxel_scale_pre=np.array(float(voxel_scale_pre)))
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return path


def read_probabilities(path: str | Path) -> PatientProbabilities:
    """One probability file; PostprocessError naming it when it is damaged or incomplete."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = {"patient", "pre", "native", "pre_truth", "native_truth", "voxel_scale_pre"} - set(data.files)
            if missing:
                raise PostprocessError(f"{path} lacks {sorted(missing)}: it is not a tfseg probability file; {RECOVER}")
            result = PatientProbabilities(str(data["patient"]), int(data["fold"]) if "fold" in data.files else -1,
                                          data["pre"].astype(np.float32), data["native"].astype(np.float32),
                                          data["pre_truth"] > 0,
                                          data["native_truth"] > 0, float(data["voxel_scale_pre"]))
    except PostprocessError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise PostprocessError(f"{path} is damaged ({type(err).__name__}: {err}); {RECOVER}") from err
    for geometry in GEOMETRIES:
        volume, truth = getattr(result, geometry), getattr(result, f"{geometry}_truth")
        if volume.ndim != 3 or volume.shape != truth.shape:
            raise PostprocessError(f"{path}: {geometry} probabilities {volume.shape} and truth {truth.shape} must be "
                                   f"one (S, H, W) volume of the same shape; {RECOVER}")
    return result


def probability_files(folder: str | Path) -> dict[str, Path]:
    """{patient: file} of ``folder/probabilities`` (or of ``folder`` itself when it holds the .npz files)."""
    folder = Path(folder)
    if (folder / PROBABILITIES_DIR).is_dir():
        folder = folder / PROBABILITIES_DIR
    files = {p.stem: p for p in sorted(folder.glob("*.npz"))} if folder.is_dir() else {}
    if not files:
        raise PostprocessError(f"{folder} holds no out-of-fold probabilities ({PROBABILITIES_DIR}/<patient>.npz); "
                               f"{RECOVER}")
    return files


# ----------------------------------------------------------------------------
# Scoring rules from component statistics: one labelling per patient, geometry and threshold
# ----------------------------------------------------------------------------

@dataclass
class Components:
    """The 3-D components of one thresholded volume: per label (0 = background) voxels, summed
    probability and voxels inside the truth; ``n_true`` = |T|."""

    sizes: np.ndarray
    masses: np.ndarray
    inside: np.ndarray
    n_true: int
    voxel_scale: float


def components_of(probabilities: np.ndarray, truth: np.ndarray, threshold: float, voxel_scale: float) -> Components:
    labels, _ = scipy.ndimage.label(probabilities > threshold)  # the labelling PostprocessRule.apply does
    flat = labels.ravel()
    return Components(np.bincount(flat), np.bincount(flat, weights=probabilities.ravel().astype(np.float64)),
                      np.bincount(flat, weights=truth.ravel().astype(np.float64)).astype(np.int64),
                      int(np.count_nonzero(truth)), voxel_scale)


def dsc_from_counts(n_both: int, n_pred: int, n_true: int) -> float:
    """The protocol's DSC from voxel counts (tfseg.metrics.volume_dsc's formula): 1.0 when both are empty."""
    return 2.0 * n_both / (n_pred + n_true) if n_pred + n_true else 1.0


def rule_dsc(rule: PostprocessRule, parts: Components) -> tuple[float, float]:
    """(DSC of the rule's own mask, DSC after the metric's largest-component step) for one volume.

    The kept components are separate components of the thresholded mask, so the largest component
    of their union is the largest of them (ties to the lowest label, as scipy and medpy break them).
    """
    sizes = parts.sizes.copy()
    sizes[0] = 0
    kept = rule.keep(sizes, parts.masses, parts.voxel_scale)
    own = dsc_from_counts(int(parts.inside[kept].sum()), int(sizes[kept].sum()), parts.n_true)
    if not kept.size:
        return own, own
    largest = kept[int(np.argmax(sizes[kept]))]
    return own, dsc_from_counts(int(parts.inside[largest]), int(sizes[largest]), parts.n_true)


def figures(values: list[float]) -> dict:
    """Mean, median, the count at DSC 0 and below 0.5 over patients."""
    values = np.asarray(values, np.float64)
    return {"mean": float(values.mean()), "median": float(np.median(values)), "n": int(values.size),
            "n_zero": int(np.count_nonzero(values == 0.0)), "n_below_half": int(np.count_nonzero(values < 0.5))}


def candidate_rules(threshold: float = THRESHOLD) -> list[tuple[str, PostprocessRule]]:
    """The component modes at ``threshold``: (name, rule), the protocol first."""
    rules = [("protocol" if threshold == THRESHOLD else "largest", PostprocessRule(threshold, "largest")),
             ("largest_mass", PostprocessRule(threshold, "largest_mass"))]
    rules += [(f"min_size {n}", PostprocessRule(threshold, "min_size", n)) for n in MIN_SIZE_GRID]
    rules += [("top2", PostprocessRule(threshold, "top2")), ("none", PostprocessRule(threshold, "none"))]
    return rules


def score_rule(rule: PostprocessRule, stats: dict[str, dict[str, dict[float, Components]]], patients: list[str],
               name: str, step: str) -> dict:
    """One row of the candidate table: the rule's figures over ``patients`` in both geometries."""
    row = {"name": name, "step": step, "rule": rule.to_dict(), "describe": rule.describe(),
           "single_component": rule.single_component}
    for geometry in GEOMETRIES:
        pairs = [rule_dsc(rule, stats[p][geometry][rule.threshold]) for p in patients]
        row[geometry] = figures([metric for _, metric in pairs])
        row[f"own_{geometry}"] = None if rule.single_component else figures([own for own, _ in pairs])
        row[f"dsc_{geometry}_by_patient"] = {p: metric for p, (_, metric) in zip(patients, pairs)}
    return row


CHOICE_RULE = ("Start from the protocol (threshold 0.5, the largest component). Step 1 scores every component mode at "
               "threshold 0.5; the best of them (the first listed among equals) replaces the current rule only if its "
               "out-of-fold mean DSC (preprocessed geometry, after the metric's largest-component step) is higher than "
               f"the current rule's by more than {TOLERANCE:g}. Step 2 scores the kept mode at the other thresholds of "
               f"{', '.join(f'{t:g}' for t in THRESHOLDS)}; the best replaces 0.5 under the same condition. A tie keeps "
               "the protocol.")


def choose(stats: dict[str, dict[str, dict[float, Components]]], patients: list[str]) -> tuple[PostprocessRule, list[dict]]:
    """nnU-Net's rule of thumb on out-of-fold predictions; returns (the chosen rule, every candidate row).

    The exact rule (:data:`CHOICE_RULE`, written into postprocess.json): start from the protocol
    (threshold 0.5, the largest component). Step 1 scores every component mode at threshold 0.5
    (:func:`candidate_rules`); the best of them (the first listed among equals) replaces the
    current rule only if its out-of-fold mean DSC (preprocessed geometry, after the metric's
    largest-component step) is higher than the current rule's by more than :data:`TOLERANCE`.
    Step 2 scores the kept mode at every other threshold of :data:`THRESHOLDS`; the best replaces
    0.5 under the same condition. A tie keeps the protocol.

    ``stats``: {patient: :func:`component_statistics`}; ``patients``: the ones to choose on.
    """
    rows = [score_rule(rule, stats, patients, name, "components") for name, rule in candidate_rules()]
    current = rows[0]
    best = max(rows[1:], key=lambda row: row["pre"]["mean"])  # max keeps the first of equals
    if best["pre"]["mean"] > current["pre"]["mean"] + TOLERANCE:
        current = best
    mode = PostprocessRule.from_dict(current["rule"])
    others = []
    for threshold in THRESHOLDS:
        if threshold != THRESHOLD:
            rule = PostprocessRule(threshold, mode.components, mode.min_voxels)
            others.append(score_rule(rule, stats, patients, f"{current['name']} @ {threshold:g}", "threshold"))
    best = max(others, key=lambda row: row["pre"]["mean"])
    if best["pre"]["mean"] > current["pre"]["mean"] + TOLERANCE:
        current = best
    rows += others
    for row in rows:
        row["chosen"] = row is current
    return PostprocessRule.from_dict(current["rule"]), rows


def component_statistics(volume: PatientProbabilities) -> dict[str, dict[float, Components]]:
    """{geometry: {threshold: Components}} of one patient, every threshold of :data:`THRESHOLDS`."""
    return {geometry: {t: components_of(getattr(volume, geometry), getattr(volume, f"{geometry}_truth"), t,
                                        volume.voxel_scale_pre if geometry == "pre" else 1.0)
                       for t in THRESHOLDS}
            for geometry in GEOMETRIES}


# ----------------------------------------------------------------------------
# The command: read, choose, write postprocess.json and postprocess.md
# ----------------------------------------------------------------------------

def chosen_patients(available: list[str], exclude: list[str] | None = None,
                    exclude_validation: bool = False) -> tuple[list[str], list[str]]:
    """(patients the rule is chosen on, patients left out); PostprocessError naming unknown patients."""
    from tfseg.data.split import PROTOCOL_VALIDATION

    exclude = list(exclude or [])
    unknown = sorted(set(exclude) - set(available))
    if unknown:
        raise PostprocessError(f"--exclude names patients without out-of-fold probabilities: {unknown}")
    left_out = set(exclude) | (PROTOCOL_VALIDATION & set(available) if exclude_validation else set())
    patients = [p for p in available if p not in left_out]
    if not patients:
        raise PostprocessError(f"no patients left to choose on: all {len(available)} are excluded")
    return patients, sorted(left_out)


def choose_postprocessing(cv_dir: str | Path, exclude: list[str] | None = None, exclude_validation: bool = False,
                          out: str | Path | None = None, progress: bool = True) -> dict:
    """Choose the rule on CV_DIR's out-of-fold probabilities; write ``out`` (default CV_DIR/postprocess.json)
    and postprocess.md beside it; returns the JSON's content."""
    import tfseg
    from tfseg.data.split import PROTOCOL_VALIDATION
    from tfseg.runs import POSTPROCESS

    cv_dir = Path(cv_dir)
    files = probability_files(cv_dir)
    patients, left_out = chosen_patients(list(files), exclude, exclude_validation)
    stats = {}
    for number, patient in enumerate(patients, start=1):
        volume = read_probabilities(files[patient])
        if volume.patient != patient:
            raise PostprocessError(f"{files[patient]} holds patient {volume.patient!r}, not {patient!r}; {RECOVER}")
        stats[patient] = component_statistics(volume)
        if progress:
            print(f"\rscoring the candidates: {number}/{len(patients)} patients", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    rule, rows = choose(stats, patients)
    payload = {
        "rule": rule.to_dict(), "describe": rule.describe(), "is_protocol": rule.is_protocol,
        "choice": CHOICE_RULE,
        "metric": "per-volume DSC after the rule and then the protocol's largest-component step (docs/protocol.md); "
                  "chosen on the preprocessed geometry's mean over the patients below",
        "chosen_on": {"n": len(patients), "patients": patients, "excluded": left_out,
                      "exclude_validation": exclude_validation,
                      **({"validation_absent": sorted(PROTOCOL_VALIDATION - set(files))} if exclude_validation else {})},
        "candidates": rows, "cv_dir": str(cv_dir), "created": datetime.now().isoformat(timespec="seconds"),
        "tfseg_version": tfseg.__version__}
    out = cv_dir / POSTPROCESS if out is None else Path(out)
    write_json_atomic(out, payload)
    write_text_atomic(out.with_suffix(".md"), "\n".join(report_lines(payload)) + "\n")
    return payload


def report_lines(payload: dict) -> list[str]:
    """postprocess.md: the candidate table, what the metric is, what was chosen and on which patients."""
    from tfseg.markdown import fixed, table

    chosen_on = payload["chosen_on"]
    excluded = (f"; left out: {len(chosen_on['excluded'])} ({', '.join(chosen_on['excluded'])})"
                if chosen_on["excluded"] else "")
    lines = [f"# Post-processing chosen out of fold ({payload['cv_dir']})", "",
             f"Chosen: **{payload['describe']}**" + (" (the protocol's rule)" if payload["is_protocol"] else ""), "",
             f"On {chosen_on['n']} patients' out-of-fold probabilities{excluded}.", "",
             "DSC is the protocol's metric: the rule's mask, then the metric's own largest-component step. For rules "
             "that keep several components, \"own mask\" scores the rule's mask without that step. The choice reads "
             "the preprocessed mean (the headline).", "",
             f"The rule: {payload['choice']}", ""]
    headers = ["rule", "step", "mean DSC", "median DSC", "DSC 0", "DSC < 0.5", "native mean", "native median",
               "own mask mean", "own mask native mean", "chosen"]
    cells = []
    for row in payload["candidates"]:
        own, own_native = row["own_pre"], row["own_native"]
        cells.append([row["name"], row["step"], fixed(row["pre"]["mean"], 4), fixed(row["pre"]["median"], 4),
                      str(row["pre"]["n_zero"]), str(row["pre"]["n_below_half"]), fixed(row["native"]["mean"], 4),
                      fixed(row["native"]["median"], 4), fixed(own and own["mean"], 4),
                      fixed(own_native and own_native["mean"], 4), "**yes**" if row["chosen"] else ""])
    return lines + table(headers, cells)


if __name__ == "__main__":  # `python -m tfseg.postprocess_choice`: the same command as `tfseg postprocess`
    from tfseg.cli.postprocess import main

    sys.exit(main(prog="python -m tfseg.postprocess_choice"))
