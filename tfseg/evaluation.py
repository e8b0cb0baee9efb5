"""Evaluate a trained network on raw kaggle_3m patients, as PROTOCOL.md measures it.

    python evaluate.py --model RUN_DIR [--data ./kaggle_3m] [--out RUN_DIR/eval] [--tta]
    python evaluate.py --model RUN_A RUN_B ... --out DIR    # an ensemble (tfseg.inference.ensemble)

Per patient: read the .tif slices (tfseg.data.kaggle), preprocess them
(tfseg.data.preprocess.preprocess_volume, the one implementation), predict the
slices in batches (optionally averaged with the horizontally flipped image),
post-process (tfseg.postprocess), then score in two geometries with tfseg.metrics:

* *preprocessed*: threshold + largest 3-D component of the (S', N, N)
  probabilities against the preprocessed mask (the reference's number, the headline);
* *native*: the probabilities mapped back with ``invert_volume(order=1)`` onto the
  original (S, 256, 256) slices, then threshold + largest component, against the
  original mask (what a user of the segmentation gets).

A post-processing rule chosen out of fold (``tfseg postprocess``; the ``postprocess.json`` the
model carries, :func:`tfseg.postprocess.rule_for_model`, or ``--postprocess FILE``) is applied
beside the protocol, never instead of it: when it is not the protocol's rule, per_patient.csv
gains ``dsc_rule_pre`` / ``dsc_rule_native`` (the rule's mask, then the metric's own
largest-component step) and, for a rule keeping several components, ``dsc_rule_mask_pre`` /
``dsc_rule_mask_native`` (the rule's mask as it is); summary.json gains ``mean_dsc_rule``,
``median_dsc_rule``, ``mean_dsc_rule_native``, ``median_dsc_rule_native`` and ``postprocess`` (the
rule and its file). The headline ``mean_dsc`` stays the protocol's. The masks written (overlays,
cross-validation predictions) are then the rule's.

Every patient gets ``kept_mass`` (the share of the probability above the threshold that the final
native mask keeps) and ``suspect`` (1 when :func:`tfseg.postprocess.suspect_reasons` finds a reason:
kept mass below 50%, or with ``--uncertainty`` an uncertainty above 0.5); each suspect patient is
a warning line on stderr and an entry of summary.json's ``suspect``, never a silent bad mask.
With ``--save-probabilities`` the probabilities of both geometries go to
``probabilities/<patient>.npz`` (:mod:`tfseg.postprocess_choice`), for ``tfseg postprocess``.

With several models (an ensemble) the slices are predicted by every member (each
with its own flip if ``--tta``) and the probabilities averaged before the threshold
and the largest component; see :mod:`tfseg.inference.ensemble`. The members must take the same
image size and, unless ``--patients`` is given, have the same validation patients.

With ``--uncertainty`` (:mod:`tfseg.uncertainty`) the image and its flip are predicted
by every member separately (K = 2 · members views); their mean is still the prediction,
and their disagreement gives a per-voxel map (in the overlays) and a per-patient score
(``uncertainty`` in per_patient.csv; its Spearman rho with the native DSC in summary.json).

HD95 is in pixels of the native 256×256 grid in both geometries (the
preprocessed one is scaled by side/N in-plane); along the slice axis one slice
counts 1.

Files written to ``--out`` (each under a temporary name, then renamed):
``per_patient.csv``, ``summary.json``, ``dsc.png`` and, per patient,
``overlays/<patient>.gif`` (every native slice, FLAIR with the prediction in red
and the truth in green) and ``overlays/<patient>_montage.png`` (the 6 slices
with the largest tumour; with ``--uncertainty`` each GIF frame has its map beside it and the
montage a row of maps under the overlays).
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

import tfseg
from tfseg.data.kaggle import DataError, PatientFiles, PatientVolume, read_patient, scan_folder, select_patients
from tfseg.data.preprocess import invert_volume, preprocess_volume
from tfseg.data.records import MANIFEST
from tfseg import runs
from tfseg.fileio import write_csv_atomic, write_json_atomic
from tfseg.data.split import validation_of_run
from tfseg.inference import (EnsembleError, LoadedModel, PredictFn, as_sources, load_model, mean_of_views,
                             predict_views, views_description)
from tfseg.inference import ModelLoadError  # noqa: F401  (re-exported: old imports and `except` clauses still work)
from tfseg.metrics import AGGREGATED_KEYS, SCORE_KEYS, VolumeMetrics
from tfseg.postprocess import (THRESHOLD, PostprocessRule, kept_mass_fraction, largest_connected_component, load_rule,
                               postprocess_volume, rule_for_model, suspect_reasons, suspect_warning)
from tfseg.postprocess_choice import PROBABILITIES_DIR, write_probabilities
from tfseg.uncertainty import MAP_MAX, disagreement_map, disagreement_score, uncertainty_summary
from tfseg.visualize import (FLAIR_CHANNEL, dsc_bar_charts, grid, heat_overlays, largest_slices, save_figure,
                             save_gif, save_png, volume_overlays)

GEOMETRIES = ("pre", "native")
MONTAGE_SLICES = 6


@dataclass
class EvalOptions:
    """Post-processing and prediction settings (the protocol's defaults)."""

    threshold: float = THRESHOLD
    lcc: bool = True
    tta: bool = False
    batch_size: int = 16
    context: int = 1  # 2.5-D models (--context K): set from the model's input channels (3·K)
    uncertainty: bool = False  # also the views' disagreement (tfseg.uncertainty); the mask does not change
    rule: PostprocessRule | None = None  # a rule chosen out of fold, scored beside the protocol (None: protocol only)
    keep_probabilities: bool = False  # PatientResult keeps both geometries' probabilities (--save-probabilities)


@dataclass
class PatientResult:
    """Scores of one patient in both geometries and its native-geometry prediction.

    ``pre`` / ``native``: dicts of :func:`tfseg.metrics.volume_scores`;
    ``prediction``: (S, 256, 256) bool, post-processed native prediction.
    With ``--uncertainty``: ``uncertainty``, the patient's score, and ``uncertainty_map``,
    (S, 256, 256) float32, the per-voxel map in the native geometry (tfseg.uncertainty).
    With a rule (``EvalOptions.rule``): ``rule_pre`` / ``rule_native``, ``{"dsc", "dsc_mask"}``: the
    rule's mask scored after the metric's largest-component step, and as it is; ``prediction`` is
    then the rule's mask. ``kept_mass`` and ``suspect`` (the reasons, empty when none) judge the
    final native mask. With ``EvalOptions.keep_probabilities``: ``probabilities_pre`` (S', N, N) and
    ``probabilities_native`` (S, 256, 256) float32, ``truth_pre`` / ``truth_native`` bool and
    ``voxel_scale_pre`` ((N / side)^2, preprocessed voxels per native voxel).
    """

    patient: str
    slices: int
    slices_pre: int
    pre: dict
    native: dict
    prediction: np.ndarray = field(repr=False)
    uncertainty: float | None = None
    uncertainty_map: np.ndarray | None = field(default=None, repr=False)
    rule_pre: dict | None = None
    rule_native: dict | None = None
    kept_mass: float = 1.0
    suspect: list[str] = field(default_factory=list)
    probabilities_pre: np.ndarray | None = field(default=None, repr=False)
    probabilities_native: np.ndarray | None = field(default=None, repr=False)
    truth_pre: np.ndarray | None = field(default=None, repr=False)
    truth_native: np.ndarray | None = field(default=None, repr=False)
    voxel_scale_pre: float | None = None

    def row(self) -> dict:
        """One per_patient.csv row (an ``uncertainty`` column when it was measured)."""
        return {"patient": self.patient, "slices": self.slices, "slices_pre": self.slices_pre, **self.columns()}

    def columns(self) -> dict:
        """The scores of :meth:`row`: both geometries, the rule's DSC when there is a rule, kept mass, suspect (0/1)."""
        out = {}
        for geometry in GEOMETRIES:
            scores = getattr(self, geometry)
            out.update({f"{key}_{geometry}": scores[key] for key in SCORE_KEYS})
        if self.rule_pre is not None:
            out.update({f"dsc_rule_{g}": getattr(self, f"rule_{g}")["dsc"] for g in GEOMETRIES})
            if "dsc_mask" in self.rule_pre:
                out.update({f"dsc_rule_mask_{g}": getattr(self, f"rule_{g}")["dsc_mask"] for g in GEOMETRIES})
        if self.uncertainty is not None:
            out["uncertainty"] = self.uncertainty
        out.update(kept_mass=self.kept_mass, suspect=int(bool(self.suspect)))
        return out


# ----------------------------------------------------------------------------
# Data and split
# ----------------------------------------------------------------------------

def resolve_data(data: str | Path | None, run_config: dict | None) -> Path:
    """The raw kaggle_3m folder to read: ``data``, else the run's --data; a packed folder leads to its source."""
    if data is None:
        data = (run_config or {}).get("config", {}).get("data")
    if data is None:
        from tfseg.data.download import default_kaggle_3m

        data = default_kaggle_3m()  # ./kaggle_3m, or a verified download
    data = Path(data)
    manifest = data / MANIFEST
    if manifest.is_file():
        # Evaluation needs the original slices (native geometry): follow the packed folder to its source.
        source = Path(json.loads(manifest.read_text()).get("source", ""))
        if not (source.is_dir() and scan_folder(source)):
            raise DataError(f"{data} is a packed TFRecord folder and its source {source} is gone; pass the "
                            "kaggle_3m folder with --data (evaluation needs the original .tif slices)")
        return source
    return data


def choose_patients(scanned: list[PatientFiles], patients: list[str] | None,
                    run_config: dict | None) -> tuple[list[PatientFiles], dict]:
    """The patients to evaluate and how they were chosen.

    ``patients``: ["all"], explicit names, or None for the validation patients of the
    run's split: the ``split.validation`` names train() wrote into config.json (runs from
    before that field existed: the training policy, tfseg.data.split.validation_of_run).
    """
    if patients == ["all"]:
        return scanned, {"source": "--patients all"}
    if patients:
        return select_patients(scanned, list(patients)), {"source": "--patients"}
    if run_config is None:
        raise DataError("the model is not inside a training run (no config.json beside it), so its validation "
                        "split is unknown: pass --patients all or --patients NAME...")
    names = [f.patient for f in scanned]
    try:
        validation, source = validation_of_run(run_config, names)
    except ValueError as err:
        raise DataError(f"cannot tell the run's validation patients among the {len(names)} patients found: {err}") from err
    if source == "run config split":
        try:
            return select_patients(scanned, validation), {"source": source, "validation": validation}
        except DataError as err:
            raise DataError(f"the run's validation patients are not all in the data folder ({err}); pass the "
                            "kaggle_3m folder the run was trained on with --data") from err
    config = run_config.get("config", {})
    return select_patients(scanned, validation), {"source": source,
                                                  **{k: config.get(k) for k in ("val_cases", "fold", "folds")}}


def choose_ensemble_patients(scanned: list[PatientFiles], patients: list[str] | None,
                             members: list[LoadedModel]) -> tuple[list[PatientFiles], dict]:
    """:func:`choose_patients` for an ensemble: explicit ``patients``, else the validation patients
    every member's run agrees on (in the first member's order).

    Raises EnsembleError naming a member without a run, or two members whose runs validated
    on different patients (scoring on patients one member trained on would flatter the ensemble).
    """
    if patients:
        return choose_patients(scanned, patients, None)
    chosen = []
    for member in members:
        if member.run_config is None:
            raise EnsembleError(f"{member.path} is not inside a training run (no config.json beside it), so its "
                                "validation split is unknown: pass --patients all or --patients NAME...")
        chosen.append(choose_patients(scanned, None, member.run_config))
    (files, info), first = chosen[0], members[0]
    for (other_files, _), member in zip(chosen[1:], members[1:]):
        ours, theirs = {f.patient for f in files}, {f.patient for f in other_files}
        if ours != theirs:
            raise EnsembleError(f"{first.path} and {member.path} were validated on different patients (only in "
                                f"{first.path}: {sorted(ours - theirs)}; only in {member.path}: "
                                f"{sorted(theirs - ours)}): choose the patients with --patients")
    return files, info


def data_fingerprint(files: list[PatientFiles], root: Path) -> dict:
    """SHA-256 of the sorted (relative path, size) list of every slice and mask read."""
    listing = sorted([p.relative_to(root).as_posix(), p.stat().st_size]
                     for f in files for p in f.images + f.masks)
    digest = hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    return {"path": str(root), "files": len(listing), "bytes": sum(size for _, size in listing),
            "sha256_of_names_and_sizes": digest}


# ----------------------------------------------------------------------------
# Prediction and scores
# ----------------------------------------------------------------------------

def geometry_metrics() -> dict[str, VolumeMetrics]:
    """One empty per-case accumulator for each geometry, for `evaluate_patient` to fill."""
    return {geometry: VolumeMetrics() for geometry in GEOMETRIES}


def evaluate_patient(volume: PatientVolume, predict: PredictFn | Sequence[PredictFn], image_size: int,
                     options: EvalOptions = EvalOptions(),
                     metrics: dict[str, VolumeMetrics] | None = None) -> PatientResult:
    """Predict one patient and score it in both geometries (see the module docstring).

    ``predict``: one predict function, or a list of them (a LoadedModel's ``sources``)
    whose mean is the prediction; with ``options.uncertainty`` each is a source of views.
    ``metrics``: the accumulators (`geometry_metrics`) this patient's scores are added to;
    by default fresh ones, for scoring one patient on its own.
    """
    metrics = geometry_metrics() if metrics is None else metrics
    rule = None if options.rule is None or options.rule.is_protocol else options.rule
    try:
        image, mask, geometry = preprocess_volume(volume.image, volume.mask, image_size)
    except ValueError as err:
        raise DataError(f"patient {volume.patient}: {err}") from err
    sources = as_sources(predict)
    # --uncertainty always looks at the flip (it is free of training); only --tta lets it into the mask.
    views = predict_views(sources, image, options.batch_size, options.tta or options.uncertainty, options.context)
    probabilities = mean_of_views(views, len(sources), options.tta)
    prediction = postprocess_volume(probabilities, options.threshold, options.lcc)
    in_plane = geometry.side / image_size  # one preprocessed pixel in native pixels
    pre = metrics["pre"].update(volume.patient, prediction, mask > 0, voxelspacing=(1.0, in_plane, in_plane))
    native_probabilities = invert_volume(probabilities, geometry, order=1)
    native_prediction = postprocess_volume(native_probabilities, options.threshold, options.lcc)
    native = metrics["native"].update(volume.patient, native_prediction, volume.mask > 0)
    result = PatientResult(volume.patient, int(volume.image.shape[0]), int(image.shape[0]), pre, native,
                           native_prediction)
    voxel_scale = (image_size / geometry.side) ** 2
    threshold = options.threshold
    if rule is not None:
        result.rule_pre = rule_scores(rule, rule.apply(probabilities, voxel_scale), mask > 0)
        result.prediction = rule.apply(native_probabilities)
        result.rule_native = rule_scores(rule, result.prediction, volume.mask > 0)
        threshold = rule.threshold
    result.kept_mass = kept_mass_fraction(native_probabilities, result.prediction, threshold)
    if options.uncertainty:
        result.uncertainty = disagreement_score(views, options.threshold, options.lcc)
        result.uncertainty_map = invert_volume(disagreement_map(views), geometry, order=1)
    result.suspect = suspect_reasons(result.kept_mass, result.uncertainty)
    if options.keep_probabilities:
        result.probabilities_pre, result.probabilities_native = probabilities, native_probabilities
        result.truth_pre, result.truth_native = mask > 0, volume.mask > 0
        result.voxel_scale_pre = voxel_scale
    return result


def rule_scores(rule: PostprocessRule, mask: np.ndarray, truth: np.ndarray) -> dict:
    """``{"dsc"}``: the rule's ``mask`` after the metric's own largest-component step (docs/protocol.md), and for
    a rule that may keep several components ``"dsc_mask"``, the mask as it is."""
    from tfseg.metrics import volume_dsc

    scored = largest_connected_component(mask) if mask.any() else mask
    out = {"dsc": volume_dsc(scored, truth)}
    if not rule.single_component:
        out["dsc_mask"] = volume_dsc(mask, truth)
    return out


def save_probabilities(folder: Path, result: PatientResult, fold: int | None = None) -> Path:
    """``folder/<patient>.npz`` from a result evaluated with ``keep_probabilities`` (tfseg.postprocess_choice's format)."""
    if result.probabilities_pre is None:
        raise ValueError("save_probabilities() needs a result evaluated with EvalOptions(keep_probabilities=True)")
    return write_probabilities(folder / f"{result.patient}.npz", result.patient, result.probabilities_pre,
                               result.probabilities_native, result.truth_pre, result.truth_native,
                               result.voxel_scale_pre, fold)


def warn_if_suspect(result: PatientResult) -> None:
    """One warning line on stderr for a suspect patient (its mask should be checked before it is used)."""
    if result.suspect:
        print(suspect_warning(result.patient, result.suspect), file=sys.stderr)


def drop_volumes(result: PatientResult) -> None:
    """Free a result's volumes once they are written (the scores stay)."""
    result.prediction = result.uncertainty_map = None
    result.probabilities_pre = result.probabilities_native = result.truth_pre = result.truth_native = None


def postprocess_summary(results: list[PatientResult], rule: PostprocessRule | None, rule_file: str | Path | None,
                        native_key: str = "_native") -> dict:
    """summary.json's rule entries (``postprocess``; the rule's figures when it is not the protocol) and ``suspect``."""
    from tfseg.metrics import describe

    rule = PostprocessRule() if rule is None else rule
    out = {"postprocess": {"rule": rule.to_dict(), "describe": rule.describe(), "is_protocol": rule.is_protocol,
                           "file": None if rule_file is None else str(rule_file),
                           "headline": "mean_dsc is the protocol's rule" +
                                       ("" if rule.is_protocol else "; mean_dsc_rule is this rule's")},
           "suspect": {r.patient: r.suspect for r in results if r.suspect}}
    out["n_suspect"] = len(out["suspect"])
    if results and results[0].rule_pre is not None:
        for geometry, suffix in (("pre", ""), ("native", native_key)):
            figures = describe([getattr(r, f"rule_{geometry}")["dsc"] for r in results])
            out[f"mean_dsc_rule{suffix}"], out[f"median_dsc_rule{suffix}"] = figures["mean"], figures["median"]
    return out


# ----------------------------------------------------------------------------
# The whole evaluation
# ----------------------------------------------------------------------------

def evaluate(data: str | Path, predict: PredictFn | Sequence[PredictFn], image_size: int, out: str | Path,
             patients: list[str] | None = None, options: EvalOptions = EvalOptions(), *,
             model_info: dict | None = None, split_info: dict | None = None, overlays: bool = True,
             progress: bool = True, command: str | None = None, rule_file: str | Path | None = None) -> dict:
    """Evaluate ``patients`` (default: all) of the kaggle_3m folder ``data``; write every file to ``out``.

    ``predict``: (B, N, N, 3) float32 -> (B, N, N[, 1]) probabilities, N = ``image_size``
    (a loaded model's ``predict``, or any stand-in), or a list of such functions whose mean
    is the prediction (an ensemble's members). ``options.rule``: a post-processing rule scored beside
    the protocol (``rule_file``: where it came from, for summary.json). Returns the summary (also summary.json).
    """
    data, out = Path(data), Path(out)
    scanned = scan_folder(data)  # checks the whole layout before reading a pixel
    files = select_patients(scanned, None if patients is None else list(patients))
    if not files:
        raise DataError(f"no patients to evaluate in {data}")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results, metrics = [], geometry_metrics()
    for patient_files in tqdm(files, desc="evaluating", unit="patient", disable=not progress):
        volume = read_patient(patient_files)
        result = evaluate_patient(volume, predict, image_size, options, metrics)
        warn_if_suspect(result)
        if overlays:
            write_overlays(out / "overlays", volume, result.prediction, result.uncertainty_map)
        if options.keep_probabilities:
            save_probabilities(out / PROBABILITIES_DIR, result)
        drop_volumes(result)  # the files are written: free the volumes
        results.append(result)
    summary = summarize_metrics(metrics)
    summary.update(postprocess_summary(results, options.rule, rule_file))
    if options.uncertainty:
        summary["uncertainty"] = uncertainty_summary(
            [r.patient for r in results], [r.uncertainty for r in results], [r.native["dsc"] for r in results],
            views_description(len(as_sources(predict))))
    summary.update(options=asdict(replace(options, rule=None)) | {"image_size": image_size, "overlays": overlays},
                   model=model_info, data=data_fingerprint(files, data), split=split_info or {"source": "caller"},
                   seconds=round(time.perf_counter() - started, 3), command=command,
                   tfseg_version=tfseg.__version__, created=datetime.now().isoformat(timespec="seconds"))
    write_per_patient_csv(out / runs.PER_PATIENT, results)
    write_dsc_chart(out / "dsc.png", results)
    write_json_atomic(out / runs.SUMMARY, summary)
    return summary


def summarize_metrics(metrics: dict[str, VolumeMetrics]) -> dict:
    """summary.json's scores: means and medians over patients in both geometries.

    NaN scores (undefined) are left out and counted (``n_defined_<key>``; the DSC is always defined).
    """
    patients = list(metrics["pre"].cases())
    summary = {"n_patients": len(patients), "patients": patients}
    for geometry in GEOMETRIES:
        suffix = "" if geometry == "pre" else "_native"
        aggregated = metrics[geometry].aggregate()
        for key in AGGREGATED_KEYS:
            summary[f"mean_{key}{suffix}"] = aggregated[key]["mean"]
            summary[f"median_{key}{suffix}"] = aggregated[key]["median"]
            if key != "dsc":
                summary[f"n_defined_{key}{suffix}"] = aggregated[key]["n"]
        summary[f"dsc{suffix}_by_patient"] = metrics[geometry].values("dsc")
    return summary


def write_per_patient_csv(path: Path, results: list[PatientResult]) -> None:
    write_csv_atomic(path, [r.row() for r in results])


def write_dsc_chart(path: Path, results: list[PatientResult]) -> None:
    panels = {f"{title} geometry": {r.patient: getattr(r, geometry)["dsc"] for r in results}
              for geometry, title in zip(GEOMETRIES, ("preprocessed", "native"))}
    save_figure(dsc_bar_charts(panels), path)


def write_overlays(folder: Path, volume: PatientVolume, prediction: np.ndarray,
                   uncertainty_map: np.ndarray | None = None) -> None:
    """``<patient>.gif`` (every native slice) and ``<patient>_montage.png`` (the largest tumours).

    With ``uncertainty_map`` (S, 256, 256) each GIF frame has the map beside it, and the
    montage is one row of overlays above one row of maps of the same slices.
    """
    flair = volume.image[..., FLAIR_CHANNEL]
    frames = volume_overlays(flair, prediction, volume.mask > 0)
    chosen = largest_slices(volume.mask, MONTAGE_SLICES, tiebreak=prediction)
    if uncertainty_map is None:
        save_gif(folder / f"{volume.patient}.gif", frames)
        save_png(folder / f"{volume.patient}_montage.png", grid([frames[i] for i in chosen], columns=3))
        return
    heats = heat_overlays(flair, uncertainty_map, vmax=MAP_MAX, prediction=prediction)
    save_gif(folder / f"{volume.patient}.gif", [np.concatenate(pair, axis=1) for pair in zip(frames, heats)])
    tiles = [frames[i] for i in chosen] + [heats[i] for i in chosen]
    save_png(folder / f"{volume.patient}_montage.png", grid(tiles, columns=len(chosen)))


def warn_if_still_training(models: Sequence[LoadedModel]) -> None:
    """A note for every model whose run is still training: its best.keras is the best epoch *so far*.

    Evaluating a run in progress is useful (how good is it yet?), so it is not refused; the note
    and summary.json's model entry (its sha256) say which weights were scored.
    """
    from tfseg.runlock import describe_holder, live_holder

    for model in models:
        holder = live_holder(model.run_dir) if model.run_dir is not None else None
        if holder:
            print(f"note: {model.run_dir} is still training ({describe_holder(holder)}); evaluating the weights "
                  f"{model.path.name} holds now, the best epoch so far", file=sys.stderr)


def evaluate_model(model: str | Path | Sequence[str | Path], data: str | Path | None = None,
                   out: str | Path | None = None, patients: list[str] | None = None,
                   options: EvalOptions = EvalOptions(), *, overlays: bool = True, progress: bool = True,
                   command: str | None = None, postprocess: str | Path | None = None) -> dict:
    """Load ``model`` (SavedModel folder, .keras file or run folder) and evaluate it; see :func:`evaluate`.

    ``model`` may be a list of such paths: one is that model, several an ensemble
    (:func:`tfseg.inference.load_model`). ``data`` defaults to the (first) run's --data (a packed folder
    leads to its kaggle_3m source); ``out`` to RUN_DIR/eval for one model and is required
    for an ensemble; ``patients`` to the validation patients of the run's split (for an
    ensemble, every member's run must have the same ones). The post-processing rule: ``postprocess``
    (a postprocess.json), else ``options.rule``, else the one the model carries
    (:func:`tfseg.postprocess.rule_for_model`; an ensemble carries none), else the protocol's alone.
    """
    paths = [model] if isinstance(model, (str, Path)) else list(model)
    if len(paths) > 1 and out is None:
        # Not RUN_A/eval: that folder is RUN_A's own score (the report reads it), and two ensembles sharing
        # a first member would overwrite each other.
        raise EnsembleError(f"an ensemble of {len(paths)} models needs an output folder: pass --out DIR")
    loaded = load_model(paths)
    warn_if_still_training(loaded.members or [loaded])
    rule, rule_file = options.rule, None
    if postprocess is not None:
        rule, rule_file = load_rule(postprocess), Path(postprocess)
    elif rule is None and loaded.kind != "ensemble":
        rule, rule_file = rule_for_model(loaded.path)
    options = replace(options, context=loaded.context, rule=None if rule is None or rule.is_protocol else rule)
    # An ensemble's members go in one by one (their mean is the prediction) so --uncertainty can compare them.
    predict = loaded.sources
    if out is None:
        if loaded.run_dir is None:
            raise DataError(f"{paths[0]} is not inside a training run: pass --out DIR")
        out = loaded.run_dir / runs.EVAL_DIR
    root = resolve_data(data, loaded.run_config)
    if loaded.kind == "ensemble":
        files, split_info = choose_ensemble_patients(scan_folder(root), patients, loaded.members)
    else:
        files, split_info = choose_patients(scan_folder(root), patients, loaded.run_config)
    return evaluate(root, predict, loaded.image_size, out, [f.patient for f in files], options,
                    model_info=loaded.describe(), split_info=split_info, overlays=overlays, progress=progress,
                    command=command, rule_file=rule_file)
