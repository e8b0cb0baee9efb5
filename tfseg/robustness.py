"""How much does the served model lose on the scans users actually have?

    python -m tfseg.robustness --model RUN_DIR|EXPORT [--data kaggle_3m] [--out DIR]
                               [--patients all|NAME...] [--seed 0] [--perturbations NAME...]

A model that scores well on the clean validation volumes can still fail on real
variation: in kaggle_3m itself the pre-contrast sequence is missing for 6 patients
and the post-contrast one for 9, each replaced by the FLAIR image (the set's
README); other scanners give other intensities, noise, blur, head positions and
slice orders. This module runs each patient's raw uint8 slices through a suite of
such perturbations (:data:`PERTURBATIONS`), segments every perturbed volume with
the exported SavedModel's ``segment_volume`` signature (the whole protocol
in-graph: the input a user would send), and scores it with the native-geometry
DSC of PROTOCOL.md (:func:`tfseg.metrics.volume_dsc` against the original
kaggle_3m masks). The ``clean`` pass is therefore evaluate.py's native DSC.

A DSC of 0 must never pass unexplained: every served mask is also judged as ``tfseg
evaluate`` and ``tfseg predict`` judge theirs (issue 25). The model's probabilities of the
same perturbed slices, and of their left-right flip, are computed as ``tfseg predict``
computes them (:func:`tfseg.predict.segment`, through the export's ``serving_default``);
:func:`tfseg.postprocess.kept_mass_fraction` of the served mask and the image/flip
uncertainty then go to :func:`tfseg.postprocess.suspect_reasons`, the one definition of a
suspect mask. A suspect mask is a warning line on stderr and ``suspect`` 1 with its reasons
in robustness.csv. The judge runs the network twice more on every perturbed volume.

Geometric perturbations (rotation, shift, mirroring, reversed slice order) move
the anatomy but not the ground truth. We score them by mapping the *prediction*
back with the inverse transform (nearest neighbour for the rotation; exact for the
others) and comparing it with the untouched original mask, so every row is scored
against the same truth. A voxel the transform moved out of the 256×256 field of
view comes back empty; the brain sits well inside the field, so only background
is lost.

The model is ``RUN_DIR`` (meaning ``RUN_DIR/export``) or a SavedModel folder. The
patients default to the validation patients of the run (``split.validation`` of
its config.json; for ``RUN_DIR/export`` the parent run's); a SavedModel outside a
run needs ``--patients``.

Random perturbations (noise) draw from a numpy Generator seeded with ``--seed``,
the patient's name and the perturbation's name, so a result does not depend on
which other patients or perturbations were run, or in which order.

Files written to ``--out`` (default ``RUN_DIR/robustness``), each under a
temporary name and then renamed: ``robustness.csv`` (one row per patient and
perturbation, the suspect flag among its columns), ``summary.json`` (per perturbation:
mean and median DSC, the drop from clean and the suspect masks), ``table.md`` (the same
as a Markdown table) and ``figure.png`` (mean DSC per perturbation, the clean mean as a line).
"""
from __future__ import annotations

import functools
import hashlib
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from tfseg.errors import TfsegError
import tfseg
from tfseg.data.kaggle import DataError, PatientVolume, read_patient, scan_folder
from tfseg import runs
from tfseg.fileio import atomic_path, write_csv_atomic, write_json_atomic
from tfseg.metrics import volume_dsc
from tfseg.postprocess import PostprocessRule, kept_mass_fraction, load_rule, suspect_reasons, suspect_warning

# kaggle_3m channels (the set's README): 0 pre-contrast, 1 FLAIR, 2 post-contrast.
PRE, FLAIR, POST = 0, 1, 2

# A segmenter: uint8 (S, 256, 256, 3) raw slices -> (S, 256, 256) mask (bool, or uint8 0/255).
Segmenter = Callable[[np.ndarray], np.ndarray]
# A perturbation: uint8 (S, 256, 256, 3) and a numpy Generator -> uint8 (S, 256, 256, 3).
PerturbFn = Callable[[np.ndarray, np.random.Generator], np.ndarray]
# A judge: the slices segmented and the (S, 256, 256) bool mask the segmenter returned for them ->
# (kept_mass, uncertainty), what tfseg.postprocess.suspect_reasons decides from (uncertainty None: not measured).
Judge = Callable[[np.ndarray, np.ndarray], tuple[float, float | None]]


class RobustnessError(TfsegError, ValueError):
    """The model or the options cannot be used; the message names the path or the option and the fix."""


# ----------------------------------------------------------------------------
# Perturbations: raw uint8 slices in, raw uint8 slices out.
# ----------------------------------------------------------------------------

def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Round to the nearest grey level and clip to [0, 255], as a scanner's 8-bit export would."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def identity(slices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The slices as they are (the reference row: evaluate.py's native DSC)."""
    return slices.copy()


def sequence_missing(slices: np.ndarray, rng: np.random.Generator, *, channels: tuple[int, ...]) -> np.ndarray:
    """Replace each of ``channels`` (0 pre-contrast, 2 post-contrast) by the FLAIR channel, as kaggle_3m
    does for a patient whose sequence was not acquired."""
    out = slices.copy()
    for channel in channels:
        out[..., channel] = slices[..., FLAIR]
    return out


def scale_intensity(slices: np.ndarray, rng: np.random.Generator, *, factor: float) -> np.ndarray:
    """Multiply every grey level by ``factor`` (a different scanner gain), then round and clip to uint8."""
    return _to_uint8(slices.astype(np.float64) * factor)


def gamma(slices: np.ndarray, rng: np.random.Generator, *, exponent: float) -> np.ndarray:
    """Gamma curve on the [0, 255] scale: ``255 · (x / 255) ** exponent`` (< 1 brightens the dark tissue)."""
    return _to_uint8(255.0 * (slices.astype(np.float64) / 255.0) ** exponent)


def contrast(slices: np.ndarray, rng: np.random.Generator, *, factor: float) -> np.ndarray:
    """Stretch every channel about its mean over the whole volume by ``factor``: ``m + factor · (x − m)``;
    below 1 the zero background is lifted to ``(1 − factor) · m``, above 1 the dark tissue is clipped at 0."""
    values = slices.astype(np.float64)
    mean = values.mean(axis=(0, 1, 2), keepdims=True)
    return _to_uint8(mean + factor * (values - mean))


def gaussian_noise(slices: np.ndarray, rng: np.random.Generator, *, sigma: float) -> np.ndarray:
    """Add independent Gaussian noise of standard deviation ``sigma`` grey levels to every voxel and channel
    (the zero background included), then round and clip to uint8."""
    return _to_uint8(slices.astype(np.float64) + rng.normal(0.0, sigma, size=slices.shape))


def gaussian_blur(slices: np.ndarray, rng: np.random.Generator, *, sigma: float) -> np.ndarray:
    """Blur every slice and channel in-plane with a Gaussian of ``sigma`` pixels (no blur across slices)."""
    return _to_uint8(ndimage.gaussian_filter(slices.astype(np.float64), sigma=(0, sigma, sigma, 0), mode="constant"))


def rotate(slices: np.ndarray, rng: np.random.Generator, *, degrees: float) -> np.ndarray:
    """Rotate every slice by ``degrees`` about the slice centre (bilinear, 0 outside the field of view)."""
    return _to_uint8(_rotate(slices.astype(np.float64), degrees, order=1))


def shift(slices: np.ndarray, rng: np.random.Generator, *, rows: int, cols: int) -> np.ndarray:
    """Move every slice by whole pixels (``rows`` down, ``cols`` right; negative: up, left), filling with 0."""
    return _shift(slices, rows, cols)


def mirror(slices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mirror every slice left-right (a scan stored in the other radiological convention)."""
    return slices[:, :, ::-1].copy()


def reverse_slices(slices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Reverse the slice order (a stack numbered head-to-feet instead of feet-to-head)."""
    return slices[::-1].copy()


def _rotate(volume: np.ndarray, degrees: float, order: int) -> np.ndarray:
    """(S, H, W[, C]) rotated in the (H, W) plane about ((H − 1) / 2, (W − 1) / 2), same shape, 0 outside."""
    if degrees == 0:
        return volume.copy()
    return ndimage.rotate(volume, degrees, axes=(1, 2), reshape=False, order=order, mode="constant", cval=0)


def _shift(volume: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(S, H, W[, C]) moved by whole pixels along H and W; what leaves the grid is lost, what enters is 0."""
    out = np.zeros_like(volume)
    height, width = volume.shape[1:3]
    src_r, dst_r = slice(max(0, -rows), min(height, height - rows)), slice(max(0, rows), min(height, height + rows))
    src_c, dst_c = slice(max(0, -cols), min(width, width - cols)), slice(max(0, cols), min(width, width + cols))
    out[:, dst_r, dst_c] = volume[:, src_r, src_c]
    return out


@dataclass(frozen=True)
class Perturbation:
    """One named perturbation of the suite.

    ``apply``: uint8 (S, 256, 256, 3) and a Generator -> uint8 (S, 256, 256, 3).
    ``restore``: for a geometric perturbation, the inverse transform that maps a prediction
    (S, 256, 256) bool of the perturbed slices back onto the original slices, for scoring
    against the original mask; None when the anatomy does not move.
    """

    name: str
    kind: str  # "clean", "sequence", "intensity" or "geometry"
    description: str
    apply: PerturbFn
    restore: Callable[[np.ndarray], np.ndarray] | None = None


def _suite() -> dict[str, Perturbation]:
    p = functools.partial
    entries = [
        Perturbation("clean", "clean", "the original slices", identity),
        Perturbation("pre_missing", "sequence", "pre-contrast replaced by FLAIR",
                     p(sequence_missing, channels=(PRE,))),
        Perturbation("post_missing", "sequence", "post-contrast replaced by FLAIR",
                     p(sequence_missing, channels=(POST,))),
        Perturbation("both_missing", "sequence", "pre- and post-contrast replaced by FLAIR",
                     p(sequence_missing, channels=(PRE, POST))),
        Perturbation("scale_0.8", "intensity", "grey levels ×0.8", p(scale_intensity, factor=0.8)),
        Perturbation("scale_1.2", "intensity", "grey levels ×1.2, clipped at 255", p(scale_intensity, factor=1.2)),
        Perturbation("gamma_0.7", "intensity", "gamma 0.7 on [0, 255]", p(gamma, exponent=0.7)),
        Perturbation("gamma_1.4", "intensity", "gamma 1.4 on [0, 255]", p(gamma, exponent=1.4)),
        Perturbation("contrast_0.7", "intensity", "contrast ×0.7 about the channel mean", p(contrast, factor=0.7)),
        Perturbation("contrast_1.3", "intensity", "contrast ×1.3 about the channel mean", p(contrast, factor=1.3)),
        Perturbation("noise_5", "intensity", "Gaussian noise, σ = 5 grey levels", p(gaussian_noise, sigma=5.0)),
        Perturbation("noise_10", "intensity", "Gaussian noise, σ = 10 grey levels", p(gaussian_noise, sigma=10.0)),
        Perturbation("blur_1", "intensity", "in-plane Gaussian blur, σ = 1 px", p(gaussian_blur, sigma=1.0)),
        Perturbation("rotate_+5", "geometry", "every slice rotated +5° (prediction rotated back)",
                     p(rotate, degrees=5.0), p(_rotate, degrees=-5.0, order=0)),
        Perturbation("rotate_-5", "geometry", "every slice rotated −5° (prediction rotated back)",
                     p(rotate, degrees=-5.0), p(_rotate, degrees=5.0, order=0)),
        Perturbation("shift_+5", "geometry", "every slice moved 5 px down and 5 px right (prediction moved back)",
                     p(shift, rows=5, cols=5), p(_shift, rows=-5, cols=-5)),
        Perturbation("shift_-5", "geometry", "every slice moved 5 px up and 5 px left (prediction moved back)",
                     p(shift, rows=-5, cols=-5), p(_shift, rows=5, cols=5)),
        Perturbation("mirror", "geometry", "left-right mirrored (prediction mirrored back)", mirror,
                     lambda mask: mask[:, :, ::-1]),
        Perturbation("reverse_slices", "geometry", "slice order reversed (prediction reversed back)", reverse_slices,
                     lambda mask: mask[::-1]),
    ]
    return {entry.name: entry for entry in entries}


# The suite, in report order; ``clean`` first (every drop is measured from it).
PERTURBATIONS: dict[str, Perturbation] = _suite()


def perturbation_rng(seed: int, patient: str, perturbation: str) -> np.random.Generator:
    """A Generator that depends only on (seed, patient, perturbation): results do not depend on run order."""
    key = hashlib.sha256(f"{patient}\0{perturbation}".encode()).digest()
    return np.random.default_rng([int(seed), int.from_bytes(key[:8], "little")])


def perturb(perturbation: Perturbation, slices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``perturbation.apply`` with its contract checked: uint8 (S, 256, 256, 3) in and out."""
    out = perturbation.apply(slices, rng)
    if out.dtype != np.uint8 or out.shape != slices.shape:
        raise RobustnessError(f"perturbation {perturbation.name} returned {out.dtype} {out.shape}, expected uint8 "
                              f"{slices.shape}")
    return out


# ----------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------

def score_patient(volume: PatientVolume, segment: Segmenter, perturbations: Sequence[Perturbation],
                  seed: int = 0, judge: Judge | None = None) -> list[dict]:
    """Segment one patient under every perturbation and score it in native geometry.

    ``segment``: uint8 (S, 256, 256, 3) -> (S, 256, 256) mask (nonzero = lesion). Returns one row per
    perturbation: patient, perturbation, kind, dsc (vs ``volume.mask``), pred_voxels, true_voxels; with a
    ``judge`` also the columns of :func:`suspect_columns` (a warning line on stderr for a suspect mask).
    """
    import tensorflow as tf

    truth = volume.mask > 0
    rows = []
    for perturbation in perturbations:
        slices = perturb(perturbation, volume.image, perturbation_rng(seed, volume.patient, perturbation.name))
        try:
            prediction = np.asarray(segment(slices)) > 0
        except tf.errors.OpError as err:  # e.g. the in-graph input checks (InvalidArgumentError)
            raise RobustnessError(f"patient {volume.patient}, perturbation {perturbation.name}: the model failed "
                                  f"({type(err).__name__}: {str(err)[:300]})") from err
        if prediction.shape != truth.shape:
            raise RobustnessError(f"patient {volume.patient}, perturbation {perturbation.name}: the model returned "
                                  f"a mask of shape {prediction.shape}, expected {truth.shape}")
        # Judged before the inverse transform: the judge sees the slices the mask was made from.
        judged = {} if judge is None else suspect_columns(judge, slices, prediction,
                                                          f"{volume.patient} under {perturbation.name}")
        if perturbation.restore is not None:
            prediction = perturbation.restore(prediction)
        rows.append({"patient": volume.patient, "perturbation": perturbation.name, "kind": perturbation.kind,
                     "dsc": volume_dsc(prediction, truth), "pred_voxels": int(prediction.sum()),
                     "true_voxels": int(truth.sum()), **judged})
    return rows


def suspect_columns(judge: Judge, slices: np.ndarray, mask: np.ndarray, name: str) -> dict:
    """kept_mass, uncertainty, suspect (0/1) and suspect_reasons ('; '-separated) of one segmented volume,
    by tfseg.postprocess's one definition; a suspect mask is also a warning line on stderr naming ``name``."""
    kept_mass, uncertainty = judge(slices, mask)
    reasons = suspect_reasons(kept_mass, uncertainty)
    if reasons:
        print(suspect_warning(name, reasons), file=sys.stderr)
    return {"kept_mass": kept_mass, "uncertainty": uncertainty, "suspect": int(bool(reasons)),
            "suspect_reasons": "; ".join(reasons)}


def probability_judge(sources, image_size: int, context: int = 1, rule: PostprocessRule | None = None) -> Judge:
    """A :data:`Judge` from the model's own probabilities, computed as ``tfseg predict`` computes them.

    ``sources``: predict functions (a LoadedModel's), (B, N, N, 3·``context``) float32 -> probabilities,
    N = ``image_size``; ``rule``: the post-processing the segmenter applies (its threshold counts the mass).
    """
    from tfseg.predict import segment as predict_scan

    rule = PostprocessRule() if rule is None else rule

    def judge(slices: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
        scan = predict_scan(slices, sources, image_size, rule, context=context)
        # The served mask is judged, not predict's own (they are equal, tested; this one is scored).
        return kept_mass_fraction(scan.probabilities, mask, rule.threshold), scan.uncertainty

    return judge


def summarize_rows(rows: list[dict], perturbations: Sequence[Perturbation]) -> dict:
    """Per perturbation: n, mean and median DSC, their drops from clean (clean − perturbed, positive = worse),
    the worst patient and its drop, and n_suspect (masks judged suspect). Adds ``drop`` (per-patient clean −
    perturbed) to every row."""
    clean = {r["patient"]: r["dsc"] for r in rows if r["perturbation"] == "clean"}
    for row in rows:
        row["drop"] = clean[row["patient"]] - row["dsc"] if row["patient"] in clean else None
    clean_values = np.array(list(clean.values()), np.float64)
    out = {}
    for perturbation in perturbations:
        chosen = [r for r in rows if r["perturbation"] == perturbation.name]
        values = np.array([r["dsc"] for r in chosen], np.float64)
        entry = {"kind": perturbation.kind, "description": perturbation.description, "n": len(chosen),
                 "mean_dsc": float(values.mean()), "median_dsc": float(np.median(values)),
                 "n_suspect": sum(1 for r in chosen if r.get("suspect"))}
        if clean:
            worst = max(chosen, key=lambda r: r["drop"])
            entry.update(drop_mean=float(clean_values.mean() - values.mean()),
                         drop_median=float(np.median(clean_values) - np.median(values)),
                         worst_patient=worst["patient"], worst_drop=float(worst["drop"]))
        out[perturbation.name] = entry
    return out


# ----------------------------------------------------------------------------
# The model: RUN_DIR (-> RUN_DIR/export) or a SavedModel folder
# ----------------------------------------------------------------------------

@dataclass
class ServedModel:
    """The ``segment_volume`` signature of a SavedModel, the run it belongs to (for its split), and the judge of
    its masks (:func:`probability_judge`, from the same SavedModel's ``serving_default``)."""

    path: Path
    segment: Segmenter
    run_dir: Path | None
    run_config: dict | None
    sha256: str
    judge: Judge | None = None

    def describe(self) -> dict:
        return {"path": str(self.path), "kind": "saved_model", "signature": "segment_volume", "sha256": self.sha256,
                "run_dir": None if self.run_dir is None else str(self.run_dir)}


def load_served_model(path: str | Path) -> ServedModel:
    """Load ``path`` (a run folder, meaning its ``export/``, or a SavedModel folder) for segment_volume.

    The SavedModel is loaded by :func:`tfseg.inference.load_model`, as evaluation loads it. Raises
    RobustnessError naming the path when it is missing, not exported, or has no segment_volume.
    """
    from tfseg.inference import ModelLoadError, load_model

    path = Path(path)
    if not path.exists():
        raise RobustnessError(f"model path {path} does not exist; give a training run folder or its export/ folder")
    if not (path / runs.SAVED_MODEL).is_file():
        if not (path / runs.CONFIG).is_file():
            raise RobustnessError(f"{path} is neither a SavedModel folder (no saved_model.pb) nor a training run "
                                  "folder (no config.json)")
        if not (path / runs.EXPORT / runs.SAVED_MODEL).is_file():
            raise RobustnessError(f"run folder {path} has no export/ (SavedModel): export it first with "
                                  f"`python -m tfseg.export {path}`")
        path = path / runs.EXPORT
    try:
        model = load_model(path)
        segment = model.segmenter()
    except ModelLoadError as err:
        raise RobustnessError(str(err)) from err
    # segment_volume applies the rule the export carries (its own postprocess.json), else the protocol's.
    rule_file = model.path / runs.POSTPROCESS
    rule = load_rule(rule_file) if rule_file.is_file() else PostprocessRule()
    judge = probability_judge(model.sources, model.image_size, model.context, rule)
    return ServedModel(model.path, segment, model.run_dir, model.run_config, model.sha256, judge)


# ----------------------------------------------------------------------------
# The whole suite and its files
# ----------------------------------------------------------------------------

def run_robustness(data: str | Path, segment: Segmenter, out: str | Path, patients: list[str],
                   perturbations: Sequence[str] | None = None, seed: int = 0, *, model_info: dict | None = None,
                   split_info: dict | None = None, progress: bool = True, command: str | None = None,
                   judge: Judge | None = None) -> dict:
    """Score ``patients`` of the kaggle_3m folder ``data`` under ``perturbations`` (default: the whole suite,
    ``clean`` always included); write robustness.csv, summary.json, table.md and figure.png to ``out``.

    ``segment``: uint8 (S, 256, 256, 3) -> (S, 256, 256) mask (a loaded model's segment, or a stand-in).
    ``judge``: flags suspect masks (a loaded model's judge); without one the suspect columns stay empty.
    Returns the summary (also summary.json).
    """
    from tqdm import tqdm

    from tfseg.data.kaggle import select_patients

    chosen = select_suite(perturbations)
    data, out = Path(data), Path(out)
    files = select_patients(scan_folder(data), list(patients))
    if not files:
        raise DataError(f"no patients to score in {data}")
    started = time.perf_counter()
    rows = []
    for patient_files in tqdm(files, desc="robustness", unit="patient", disable=not progress):
        rows += score_patient(read_patient(patient_files), segment, chosen, seed, judge)
    summary = {"n_patients": len(files), "patients": [f.patient for f in files], "seed": seed,
               "order": [p.name for p in chosen],  # summary.json sorts its keys; this keeps the suite's order
               "perturbations": summarize_rows(rows, chosen),
               "suspect": None if judge is None else suspect_entries(rows),
               "scoring": "native-geometry DSC (tfseg.metrics.volume_dsc) against the original kaggle_3m masks; "
                          "geometric perturbations: the prediction mapped back with the inverse transform "
                          "(nearest neighbour for rotations)",
               "model": model_info, "split": split_info or {"source": "caller"}, "data": str(data),
               "seconds": round(time.perf_counter() - started, 3), "command": command,
               "tfseg_version": tfseg.__version__, "created": datetime.now().isoformat(timespec="seconds")}
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "robustness.csv", rows)
    write_table(out / "table.md", summary)
    write_figure(out / "figure.png", summary)
    write_json_atomic(out / runs.SUMMARY, summary)
    return summary


def suspect_entries(rows: list[dict]) -> list[dict]:
    """summary.json's ``suspect``: every suspect mask (patient, perturbation, reasons), in the rows' order."""
    return [{"patient": r["patient"], "perturbation": r["perturbation"], "reasons": r["suspect_reasons"]}
            for r in rows if r.get("suspect")]


def select_suite(names: Sequence[str] | None) -> list[Perturbation]:
    """The named perturbations in suite order, ``clean`` always first; unknown names are an error."""
    if names is None:
        return list(PERTURBATIONS.values())
    unknown = [n for n in names if n not in PERTURBATIONS]
    if unknown:
        raise RobustnessError(f"unknown perturbations {unknown}; choose from {list(PERTURBATIONS)}")
    wanted = {"clean", *names}
    return [p for name, p in PERTURBATIONS.items() if name in wanted]


CSV_FIELDS = ("patient", "perturbation", "kind", "dsc", "drop", "pred_voxels", "true_voxels", "kept_mass",
              "uncertainty", "suspect", "suspect_reasons")


def write_csv(path: Path, rows: list[dict]) -> None:
    """robustness.csv: one row per patient and perturbation, the columns of CSV_FIELDS (the suspect ones empty
    when no judge ran)."""
    write_csv_atomic(path, [{key: row.get(key) for key in CSV_FIELDS} for row in rows], list(CSV_FIELDS))


def markdown_table(summary: dict) -> str:
    """The summary as a Markdown table, one row per perturbation."""
    lines = [f"Robustness of the served model over {summary['n_patients']} patients (native-geometry DSC; "
             "drop = clean − perturbed, positive = worse).", "",
             "| perturbation | what | mean DSC | median DSC | drop of the mean | worst patient (drop) | suspect masks |",
             "|---|---|---:|---:|---:|---|---:|"]
    for name in summary["order"]:
        entry = summary["perturbations"][name]
        drop = "—" if name == "clean" or "drop_mean" not in entry else f"{entry['drop_mean']:+.4f}"
        worst = "—" if name == "clean" or "worst_patient" not in entry else \
            f"{entry['worst_patient']} ({entry['worst_drop']:+.4f})"
        suspect = "—" if summary.get("suspect") is None else entry.get("n_suspect", 0)
        lines.append(f"| {name} | {entry['description']} | {entry['mean_dsc']:.4f} | {entry['median_dsc']:.4f} | "
                     f"{drop} | {worst} | {suspect} |")
    return "\n".join(lines) + "\n"


def write_table(path: Path, summary: dict) -> None:

    with atomic_path(path) as tmp:
        tmp.write_text(markdown_table(summary))


def write_figure(path: Path, summary: dict) -> None:
    """Mean DSC per perturbation (bars, coloured by kind) with the clean mean as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tfseg.visualize import save_figure

    entries, names = summary["perturbations"], summary["order"]
    colours = {"clean": "tab:green", "sequence": "tab:purple", "intensity": "tab:blue", "geometry": "tab:orange"}
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(names) + 1.6))
    ax.barh(names, [entries[n]["mean_dsc"] for n in names], color=[colours[entries[n]["kind"]] for n in names])
    ax.axvline(entries["clean"]["mean_dsc"], color="black", linestyle="--", linewidth=1,
               label=f"clean {entries['clean']['mean_dsc']:.3f}")
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"mean native DSC over {summary['n_patients']} patients")
    ax.set_title("robustness of the served model")
    ax.legend(loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)


def robustness_of_model(model_path: str | Path, data: str | Path | None = None, out: str | Path | None = None,
                        patients: list[str] | None = None, perturbations: list[str] | None = None, seed: int = 0,
                        progress: bool = True, command: str | None = None) -> tuple[dict, Path]:
    """The robustness suite for a served model: (summary, output folder).

    ``out`` defaults to RUN_DIR/robustness, ``data`` to the run's own kaggle_3m, ``patients`` to the
    validation patients of its split. Raises RobustnessError / DataError naming what is wrong.
    """
    from tfseg.evaluation import choose_patients, resolve_data

    select_suite(perturbations)  # fail on a typo before loading anything
    model = load_served_model(model_path)
    if out is None:
        if model.run_dir is None:
            raise RobustnessError(f"{model.path} is not inside a training run: pass --out DIR")
        out = model.run_dir / runs.ROBUSTNESS_DIR
    root = resolve_data(data, model.run_config)
    files, split_info = choose_patients(scan_folder(root), patients, model.run_config)
    summary = run_robustness(root, model.segment, out, [f.patient for f in files], perturbations, seed,
                             model_info=model.describe(), split_info=split_info, progress=progress, command=command,
                             judge=model.judge)
    return summary, Path(out)


if __name__ == "__main__":  # `python -m tfseg.robustness`: the same command as `tfseg robustness`
    from tfseg.cli.robustness import main

    sys.exit(main(prog="python -m tfseg.robustness"))
