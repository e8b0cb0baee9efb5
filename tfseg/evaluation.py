"""Evaluate a trained network on raw kaggle_3m patients, as PROTOCOL.md measures it.

    python evaluate.py --model RUN_DIR [--data ./kaggle_3m] [--out RUN_DIR/eval] [--tta]
    python evaluate.py --model RUN_A RUN_B ... --out DIR    # an ensemble (tfseg.ensemble)

Per patient: read the .tif slices (tfseg.data.kaggle), preprocess them
(tfseg.data.preprocess.preprocess_volume, the one implementation), predict the
slices in batches (optionally averaged with the horizontally flipped image),
post-process (tfseg.postprocess), then score in two geometries with tfseg.metrics:

* *preprocessed*: threshold + largest 3-D component of the (S', N, N)
  probabilities against the preprocessed mask (the reference's number, the headline);
* *native*: the probabilities mapped back with ``invert_volume(order=1)`` onto the
  original (S, 256, 256) slices, then threshold + largest component, against the
  original mask (what a user of the segmentation gets).

With several models (an ensemble) the slices are predicted by every member (each
with its own flip if ``--tta``) and the probabilities averaged before the threshold
and the largest component; see :mod:`tfseg.ensemble`. The members must take the same
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

import argparse
import csv
import hashlib
import io
import json
import shlex
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

import tfseg
from tfseg.data.context import stack_context
from tfseg.data.kaggle import DataError, PatientFiles, PatientVolume, read_patient, scan_folder, select_patients
from tfseg.data.preprocess import invert_volume, preprocess_volume
from tfseg.data.records import MANIFEST
from tfseg.fileio import atomic_path, sha256_file, sha256_files, write_json_atomic
from tfseg.markdown import fixed
from tfseg.runs import owning_run, read_config_file
from tfseg.data.split import split_patients
from tfseg.ensemble import Ensemble, EnsembleError
from tfseg.metrics import AGGREGATED_KEYS, SCORE_KEYS, VolumeMetrics
from tfseg.postprocess import THRESHOLD, postprocess_volume
from tfseg.uncertainty import MAP_MAX, disagreement_map, disagreement_score, uncertainty_summary
from tfseg.visualize import (FLAIR_CHANNEL, dsc_bar_charts, grid, heat_overlays, largest_slices, save_figure,
                             save_gif, save_png, volume_overlays)

# A predict function: (B, N, N, 3) float32 preprocessed slices -> (B, N, N) or (B, N, N, 1) probabilities.
PredictFn = Callable[[np.ndarray], np.ndarray]

GEOMETRIES = ("pre", "native")
MONTAGE_SLICES = 6


class ModelLoadError(ValueError):
    """The model path is missing, of an unknown kind, or cannot be loaded; the message names the path."""


@dataclass
class EvalOptions:
    """Post-processing and prediction settings (the protocol's defaults)."""

    threshold: float = THRESHOLD
    lcc: bool = True
    tta: bool = False
    batch_size: int = 16
    context: int = 1  # 2.5-D models (--context K): set from the model's input channels (3·K)
    uncertainty: bool = False  # also the views' disagreement (tfseg.uncertainty); the mask does not change


@dataclass
class LoadedModel:
    """A model ready to predict, with where it came from.

    ``predict``: (B, N, N, 3·K) float32 -> probabilities; ``run_dir`` / ``run_config``: the
    training run the model belongs to (for its split), when it has a config.json;
    ``network``: the keras.Model itself for kind "keras" (None for a SavedModel).
    """

    path: Path
    kind: str
    predict: PredictFn
    image_size: int
    sha256: str
    run_dir: Path | None = None
    run_config: dict | None = None
    context: int = 1
    network: object = field(default=None, repr=False)

    def describe(self) -> dict:
        return {"path": str(self.path), "kind": self.kind, "sha256": self.sha256, "image_size": self.image_size,
                "context": self.context,
                "run_dir": None if self.run_dir is None else str(self.run_dir)}


@dataclass
class PatientResult:
    """Scores of one patient in both geometries and its native-geometry prediction.

    ``pre`` / ``native``: dicts of :func:`tfseg.metrics.volume_scores`;
    ``prediction``: (S, 256, 256) bool, post-processed native prediction.
    With ``--uncertainty``: ``uncertainty``, the patient's score, and ``uncertainty_map``,
    (S, 256, 256) float32, the per-voxel map in the native geometry (tfseg.uncertainty).
    """

    patient: str
    slices: int
    slices_pre: int
    pre: dict
    native: dict
    prediction: np.ndarray = field(repr=False)
    uncertainty: float | None = None
    uncertainty_map: np.ndarray | None = field(default=None, repr=False)

    def row(self) -> dict:
        """One per_patient.csv row (an ``uncertainty`` column when it was measured)."""
        out = {"patient": self.patient, "slices": self.slices, "slices_pre": self.slices_pre}
        for geometry in GEOMETRIES:
            scores = getattr(self, geometry)
            out.update({f"{key}_{geometry}": scores[key] for key in SCORE_KEYS})
        if self.uncertainty is not None:
            out["uncertainty"] = self.uncertainty
        return out


# ----------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------

def load_model(path: str | Path, image_size: int | None = None) -> LoadedModel:
    """Load a SavedModel folder, a ``.keras`` file or a run folder (its best.keras).

    ``image_size`` is only needed for a model whose input size is not fixed. Raises
    ModelLoadError naming ``path`` when it is missing, of an unknown kind or corrupt.
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model path {path} does not exist; give a training run folder (holding best.keras), "
                             "its export/ folder (a SavedModel) or a .keras file")
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return _load_saved_model(path, owning_run(path), image_size)
    if path.is_dir() and ((path / "best.keras").exists() or (path / "config.json").is_file()):
        if not (path / "best.keras").is_file():
            raise ModelLoadError(f"run folder {path} holds no best.keras: training has not saved a model yet "
                                 "(it is written after the first validated epoch)")
        return _load_keras(path / "best.keras", path, image_size)
    if path.is_file() and path.suffix == ".keras":
        return _load_keras(path, owning_run(path), image_size)
    raise ModelLoadError(f"model path {path} is neither a SavedModel folder (no saved_model.pb), a run folder "
                         "(no best.keras) nor a .keras file")


def read_run_config(run_dir: Path | None) -> dict | None:
    if run_dir is None:
        return None
    try:
        return read_config_file(run_dir)
    except (OSError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{run_dir / 'config.json'} cannot be read ({err}); pass --patients to choose "
                             "the patients without the run's split") from err


def _image_size(shape, what: Path, run_config: dict | None, image_size: int | None) -> int:
    """N from a model input shape (B, N, N, 3); the run's or the caller's size when the model leaves it open."""
    if len(shape) != 4 or not shape[-1] or shape[-1] % 3 or shape[1] != shape[2]:
        raise ModelLoadError(f"{what}: the model takes input of shape {tuple(shape)}, expected (batch, N, N, 3·K) "
                             "(K = 1, or the --context of a 2.5-D model)")
    if shape[1] is not None:
        return int(shape[1])
    if image_size is None and run_config is not None:
        image_size = run_config.get("config", {}).get("image_size")
    if image_size is None:
        raise ModelLoadError(f"{what}: the model accepts any image size and no run config says which one it was "
                             "trained at; pass image_size")
    return int(image_size)


def _load_keras(path: Path, run_dir: Path | None, image_size: int | None) -> LoadedModel:
    import keras

    import tfseg.losses  # noqa: F401  (registers the custom objects a .keras file may name)
    import tfseg.models  # noqa: F401

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as err:  # keras raises many types (zipfile, ValueError, OSError) for a bad file
        raise ModelLoadError(f"{path}: cannot load the Keras model ({type(err).__name__}: {err}); the file is "
                             "corrupt or not a .keras archive: use the run's best.keras or retrain") from err
    run_config = read_run_config(run_dir)
    size = _image_size(tuple(model.inputs[0].shape), path, run_config, image_size)

    def predict(batch: np.ndarray) -> np.ndarray:
        out = model.predict_on_batch(batch)
        return out[0] if isinstance(out, (list, tuple)) else out

    return LoadedModel(path, "keras", predict, size, sha256_file(path), run_dir, run_config,
                       context=int(model.inputs[0].shape[-1]) // 3, network=model)


def open_saved_model(path: Path, signature_name: str):
    """(loaded SavedModel, its ``signature_name`` signature); ModelLoadError naming ``path`` when either fails.

    Keep the loaded object referenced as long as the signature is used: it owns the variables.
    """
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as err:  # TF raises OSError, DecodeError, InvalidArgument... for a bad folder
        raise ModelLoadError(f"{path}: cannot load the SavedModel ({type(err).__name__}: {str(err)[:300]}); "
                             "export it again with `python -m tfseg.export RUN_DIR`") from err
    signature = loaded.signatures.get(signature_name)
    if signature is None:
        raise ModelLoadError(f"{path}: the SavedModel has no {signature_name} signature (it has "
                             f"{sorted(loaded.signatures)}); export it again with `python -m tfseg.export RUN_DIR`")
    return loaded, signature


def _load_saved_model(path: Path, run_dir: Path | None, image_size: int | None) -> LoadedModel:
    import tensorflow as tf

    loaded, signature = open_saved_model(path, "serving_default")
    inputs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    if len(inputs) != 1 or ("probabilities" not in outputs and len(outputs) != 1):
        raise ModelLoadError(f"{path}: serving_default must take one image tensor and return probabilities; "
                             f"it takes {sorted(inputs)} and returns {sorted(outputs)}")
    (input_name, spec), = inputs.items()
    output_name = "probabilities" if "probabilities" in outputs else next(iter(outputs))
    run_config = read_run_config(run_dir)
    size = _image_size(tuple(spec.shape), path, run_config, image_size)

    def predict(batch: np.ndarray) -> np.ndarray:
        # `loaded` stays referenced by this closure: the signature needs its variables alive.
        return signature(**{input_name: tf.constant(batch, tf.float32)})[output_name].numpy()

    predict.loaded = loaded
    return LoadedModel(path, "saved_model", predict, size, saved_model_sha256(path), run_dir, run_config,
                       context=int(spec.shape[-1]) // 3)


def load_ensemble(paths: Sequence[str | Path], image_size: int | None = None) -> LoadedModel | Ensemble:
    """One path: :func:`load_model`. Several: an :class:`~tfseg.ensemble.Ensemble` of them.

    Each path is anything load_model takes. Raises ModelLoadError for a bad path and
    EnsembleError (naming both models) when two members take different image sizes.
    """
    paths = list(paths)
    if len(paths) == 1:
        return load_model(paths[0], image_size)
    return Ensemble([load_model(path, image_size) for path in paths])


def saved_model_sha256(folder: Path) -> str:
    """SHA-256 over saved_model.pb and every file under variables/ (relative names and contents)."""
    files = [folder / "saved_model.pb"] + sorted(p for p in (folder / "variables").rglob("*") if p.is_file())
    return sha256_files(folder, files)


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
    before that field existed: split_patients recomputed with the run's val_cases / fold / folds).
    """
    if patients == ["all"]:
        return scanned, {"source": "--patients all"}
    if patients:
        return select_patients(scanned, list(patients)), {"source": "--patients"}
    if run_config is None:
        raise DataError("the model is not inside a training run (no config.json beside it), so its validation "
                        "split is unknown: pass --patients all or --patients NAME...")
    recorded = (run_config.get("split") or {}).get("validation")
    if recorded:
        try:
            return select_patients(scanned, list(recorded)), {"source": "run config split",
                                                               "validation": list(recorded)}
        except DataError as err:
            raise DataError(f"the run's validation patients are not all in the data folder ({err}); pass the "
                            "kaggle_3m folder the run was trained on with --data") from err
    config = run_config.get("config", {})
    split = {k: config.get(k) for k in ("val_cases", "fold", "folds")}
    names = [f.patient for f in scanned]
    try:
        _, validation = split_patients(names, split["val_cases"] or 10, split["fold"], split["folds"])
    except ValueError as err:
        raise DataError(f"cannot reproduce the run's split over the {len(names)} patients found: {err}") from err
    return select_patients(scanned, validation), {"source": "run config (recomputed)", **split}


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

def predict_volume(predict: PredictFn, image: np.ndarray, batch_size: int = 16, tta: bool = False,
                   context: int = 1) -> np.ndarray:
    """Probabilities of every slice: image (S', N, N, 3) float32 -> (S', N, N) float32.

    With ``tta`` each batch is also predicted flipped left-right, flipped back and averaged.
    With ``context`` K > 1 the model sees each slice's 2.5-D stack (tfseg.data.context).
    """
    return mean_of_views(predict_views([predict], image, batch_size, tta, context), 1, tta)


def predict_views(sources: Sequence[PredictFn], image: np.ndarray, batch_size: int = 16, flip: bool = False,
                  context: int = 1) -> np.ndarray:
    """Every source's probabilities, and with ``flip`` also on the left-right flipped image (flipped back).

    ``sources``: one predict function, or an ensemble's members (``Ensemble.member_predicts``);
    image (S', N, N, 3) float32 -> (V, S', N, N) float32, V = len(sources) · (2 if flip else 1),
    in the order [source 0, source 0 flipped, source 1, ...]. :func:`mean_of_views` makes the
    prediction of them; tfseg.uncertainty measures how much they disagree.
    """
    if context > 1:
        image = stack_context(np.asarray(image, np.float32), context).numpy()
    views = [[] for _ in range(len(sources) * (2 if flip else 1))]
    for start in range(0, len(image), batch_size):
        batch = np.ascontiguousarray(image[start:start + batch_size], np.float32)
        mirrored = np.ascontiguousarray(batch[:, :, ::-1]) if flip else None
        answers = []
        for source in sources:
            answers.append(_as_slices(source(batch), batch.shape))
            if flip:
                answers.append(_as_slices(source(mirrored), batch.shape)[:, :, ::-1])
        for view, answer in zip(views, answers):
            view.append(answer)
    return np.stack([np.concatenate(view) for view in views]).astype(np.float32)


def mean_of_views(views: np.ndarray, n_sources: int, tta: bool) -> np.ndarray:
    """The prediction from :func:`predict_views`' (V, S', N, N) views -> (S', N, N) float32.

    The mean over sources, then with ``tta`` the mean of that and its flipped twin: the
    same float32 operations in the same order as ``Ensemble.predict`` and the flip average
    always were, so the mask is bit for bit the one scored without ``--uncertainty``.
    """
    per_source = len(views) // n_sources
    if tta and per_source != 2:
        raise ValueError("tta needs the flipped views: call predict_views(..., flip=True)")
    plain = _sum_in_order([views[i * per_source] for i in range(n_sources)]) / np.float32(n_sources)
    if not tta:
        return plain
    flipped = _sum_in_order([views[i * per_source + 1] for i in range(n_sources)]) / np.float32(n_sources)
    return 0.5 * (plain + flipped)


def _sum_in_order(volumes: list[np.ndarray]) -> np.ndarray:
    total = volumes[0]
    for volume in volumes[1:]:
        total = total + volume
    return total


def _as_slices(probabilities, shape) -> np.ndarray:
    probabilities = np.asarray(probabilities, np.float32)
    if probabilities.ndim == 4 and probabilities.shape[-1] == 1:
        probabilities = probabilities[..., 0]
    if probabilities.shape != shape[:3]:
        raise ValueError(f"the model returned shape {probabilities.shape} for a batch of shape {shape}; "
                         f"expected {shape[:3]} (+ a channel of 1)")
    return probabilities


def geometry_metrics() -> dict[str, VolumeMetrics]:
    """One empty per-case accumulator for each geometry, for `evaluate_patient` to fill."""
    return {geometry: VolumeMetrics() for geometry in GEOMETRIES}


def evaluate_patient(volume: PatientVolume, predict: PredictFn | Sequence[PredictFn], image_size: int,
                     options: EvalOptions = EvalOptions(),
                     metrics: dict[str, VolumeMetrics] | None = None) -> PatientResult:
    """Predict one patient and score it in both geometries (see the module docstring).

    ``predict``: one predict function, or a list of them (an ensemble's ``member_predicts``)
    whose mean is the prediction; with ``options.uncertainty`` each is a source of views.
    ``metrics``: the accumulators (`geometry_metrics`) this patient's scores are added to;
    by default fresh ones, for scoring one patient on its own.
    """
    metrics = geometry_metrics() if metrics is None else metrics
    try:
        image, mask, geometry = preprocess_volume(volume.image, volume.mask, image_size)
    except ValueError as err:
        raise DataError(f"patient {volume.patient}: {err}") from err
    sources = _sources(predict)
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
    if options.uncertainty:
        result.uncertainty = disagreement_score(views, options.threshold, options.lcc)
        result.uncertainty_map = invert_volume(disagreement_map(views), geometry, order=1)
    return result


def _sources(predict: PredictFn | Sequence[PredictFn]) -> list[PredictFn]:
    sources = list(predict) if isinstance(predict, (list, tuple)) else [predict]
    if not sources or not all(callable(source) for source in sources):
        raise TypeError(f"predict must be a predict function or a non-empty list of them, got {predict!r}")
    return sources


def views_description(n_sources: int) -> str:
    """summary.json's words for the views --uncertainty compares."""
    models = "the model" if n_sources == 1 else f"each of the {n_sources} ensemble members"
    return f"{2 * n_sources} views: {models} on the image and on its left-right flip"


# ----------------------------------------------------------------------------
# The whole evaluation
# ----------------------------------------------------------------------------

def evaluate(data: str | Path, predict: PredictFn | Sequence[PredictFn], image_size: int, out: str | Path,
             patients: list[str] | None = None, options: EvalOptions = EvalOptions(), *,
             model_info: dict | None = None, split_info: dict | None = None, overlays: bool = True,
             progress: bool = True, command: str | None = None) -> dict:
    """Evaluate ``patients`` (default: all) of the kaggle_3m folder ``data``; write every file to ``out``.

    ``predict``: (B, N, N, 3) float32 -> (B, N, N[, 1]) probabilities, N = ``image_size``
    (a loaded model's ``predict``, or any stand-in), or a list of such functions whose mean
    is the prediction (an ensemble's members). Returns the summary (also summary.json).
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
        if overlays:
            write_overlays(out / "overlays", volume, result.prediction, result.uncertainty_map)
        result.prediction = result.uncertainty_map = None  # the overlays are written: free the volumes
        results.append(result)
    summary = summarize_metrics(metrics)
    if options.uncertainty:
        summary["uncertainty"] = uncertainty_summary(
            [r.patient for r in results], [r.uncertainty for r in results], [r.native["dsc"] for r in results],
            views_description(len(_sources(predict))))
    summary.update(options=asdict(options) | {"image_size": image_size, "overlays": overlays},
                   model=model_info, data=data_fingerprint(files, data), split=split_info or {"source": "caller"},
                   seconds=round(time.perf_counter() - started, 3), command=command,
                   tfseg_version=tfseg.__version__, created=datetime.now().isoformat(timespec="seconds"))
    write_per_patient_csv(out / "per_patient.csv", results)
    write_dsc_chart(out / "dsc.png", results)
    write_json_atomic(out / "summary.json", summary)
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
    rows = [r.row() for r in results]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())


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


def evaluate_model(model: str | Path | Sequence[str | Path], data: str | Path | None = None,
                   out: str | Path | None = None, patients: list[str] | None = None,
                   options: EvalOptions = EvalOptions(), *, overlays: bool = True, progress: bool = True,
                   command: str | None = None) -> dict:
    """Load ``model`` (SavedModel folder, .keras file or run folder) and evaluate it; see :func:`evaluate`.

    ``model`` may be a list of such paths: one is that model, several an ensemble
    (:func:`load_ensemble`). ``data`` defaults to the (first) run's --data (a packed folder
    leads to its kaggle_3m source); ``out`` to RUN_DIR/eval for one model and is required
    for an ensemble; ``patients`` to the validation patients of the run's split (for an
    ensemble, every member's run must have the same ones).
    """
    paths = [model] if isinstance(model, (str, Path)) else list(model)
    if len(paths) > 1 and out is None:
        # Not RUN_A/eval: that folder is RUN_A's own score (the report reads it), and two ensembles sharing
        # a first member would overwrite each other.
        raise EnsembleError(f"an ensemble of {len(paths)} models needs an output folder: pass --out DIR")
    loaded = load_ensemble(paths)
    options = replace(options, context=loaded.context)
    # An ensemble's members go in one by one (their mean is the prediction) so --uncertainty can compare them.
    predict = loaded.member_predicts if isinstance(loaded, Ensemble) else loaded.predict
    if out is None:
        if loaded.run_dir is None:
            raise DataError(f"{paths[0]} is not inside a training run: pass --out DIR")
        out = loaded.run_dir / "eval"
    root = resolve_data(data, loaded.run_config)
    if isinstance(loaded, Ensemble):
        files, split_info = choose_ensemble_patients(scan_folder(root), patients, loaded.members)
    else:
        files, split_info = choose_patients(scan_folder(root), patients, loaded.run_config)
    return evaluate(root, predict, loaded.image_size, out, [f.patient for f in files], options,
                    model_info=loaded.describe(), split_info=split_info, overlays=overlays, progress=progress,
                    command=command)


# ----------------------------------------------------------------------------
# Command line (evaluate.py)
# ----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    d = EvalOptions()
    p = argparse.ArgumentParser(prog="python evaluate.py", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                description="Per-volume DSC / HD95 of a trained model (or the mean of several: an "
                                            "ensemble) on kaggle_3m patients, in the preprocessed and the native "
                                            "geometry, with plots and overlays.")
    p.add_argument("--model", required=True, nargs="+", metavar="MODEL",
                   help="a training run folder (uses best.keras and its split), RUN_DIR/export (SavedModel) or a "
                   ".keras file. Several: an ensemble, scored on the mean of their probabilities (each after its "
                   "own --tta) before the threshold and the largest component; they must take the same image "
                   "size (their 2.5-D --context may differ) and need --out")
    p.add_argument("--data", default=None, help="kaggle_3m folder (default: the (first) run's --data; a packed "
                   "folder leads to its source)")
    p.add_argument("--out", default=None, help="output folder (default: RUN_DIR/eval for one model; required for "
                   "an ensemble)")
    p.add_argument("--patients", nargs="+", default=None, metavar="all|NAME",
                   help="'all' or patient folder names (default: the validation patients of the run's split; for "
                   "an ensemble every member's run must have the same ones)")
    p.add_argument("--tta", action="store_true", help="average with the horizontally flipped prediction")
    p.add_argument("--no-lcc", action="store_true", help="keep every component, not only the largest")
    p.add_argument("--threshold", type=float, default=d.threshold, help="foreground where probability > threshold")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="slices per prediction batch")
    p.add_argument("--no-overlays", action="store_true", help="skip the per-patient GIFs and montages")
    p.add_argument("--uncertainty", action="store_true",
                   help="also measure where the views disagree (the image and its flip, for every ensemble "
                   "member): a per-voxel map in the overlays, an 'uncertainty' score per patient in "
                   "per_patient.csv and its Spearman rho with the DSC in summary.json. The masks and scores "
                   "do not change; without --tta it costs one more prediction per slice")
    return p


@dataclass
class EvalRequest:
    """What `python evaluate.py ...` asks for: the arguments of :func:`evaluate_model`."""

    models: list[str]
    data: str | None
    out: str | None
    patients: list[str] | None
    options: EvalOptions
    overlays: bool
    command: str


def request_from_args(argv: Sequence[str]) -> EvalRequest:
    """Parse evaluate.py's command line (argparse exits with a usage message on bad flags)."""
    argv = list(argv)
    args = build_parser().parse_args(argv)
    options = EvalOptions(threshold=args.threshold, lcc=not args.no_lcc, tta=args.tta, batch_size=args.batch_size,
                          uncertainty=args.uncertainty)
    return EvalRequest(args.model, args.data, args.out, args.patients, options, not args.no_overlays,
                       "python evaluate.py " + shlex.join(argv))


def summary_lines(summary: dict) -> list[str]:
    """The lines evaluate.py prints: the headline figures, and the uncertainty ranking when there is one."""
    lines = [f"{summary['n_patients']} patients: mean DSC {summary['mean_dsc']:.4f} (median {summary['median_dsc']:.4f}); "
             f"native geometry {summary['mean_dsc_native']:.4f} (median {summary['median_dsc_native']:.4f}); "
             f"mean HD95 (native) {fixed(summary['mean_hd95_native'], 2)} px"]
    if "uncertainty" in summary:
        ranking = summary["uncertainty"]
        rho = ranking["spearman_rho_with_dsc"]
        lines.append("uncertainty: Spearman rho with the native DSC " +
                     (f"{rho:.3f} (p = {ranking['p_value']:.3g})" if rho is not None else f"undefined ({ranking['why']})")
                     + f"; check first: {', '.join(ranking['check_first'][:3])}")
    return lines
