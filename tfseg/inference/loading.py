"""Loading a trained model: a run folder, an export (SavedModel folder), a ``.keras`` file, or several (an ensemble).

:func:`load_model` is the one place that resolves those paths; evaluation, robustness,
cross-validation and export all load through it. Every failure is a ModelLoadError whose
message names the path and says what to do.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from tfseg import pretrained, runs
from tfseg.fileio import sha256_file, sha256_files
from tfseg.inference.ensemble import ensemble_of
from tfseg.inference.model import LoadedModel, ModelLoadError, find_signature
from tfseg.runs import owning_run, read_config_file


def load_model(path_or_paths: str | os.PathLike | Sequence[str | os.PathLike],
               image_size: int | None = None) -> LoadedModel:
    """Load a SavedModel folder, a ``.keras`` file or a run folder (its best.keras); several: their ensemble.

    ``"pretrained"`` is the model tfseg ships (tfseg/pretrained), loaded after its SHA-256 is checked.

    One path (or a list of one) gives that model (kind "keras" or "saved_model"); several
    give one LoadedModel of kind "ensemble" (:func:`~tfseg.inference.ensemble.ensemble_of`).
    ``image_size`` is only needed for a model whose input size is not fixed. Raises
    ModelLoadError naming the path when it is missing, of an unknown kind or corrupt, and
    EnsembleError (a ModelLoadError) naming both models when two members take different image sizes.
    """
    if isinstance(path_or_paths, (str, os.PathLike)):
        return _load_one(Path(path_or_paths), image_size)
    paths = list(path_or_paths)
    if len(paths) == 1:
        return _load_one(Path(paths[0]), image_size)
    return ensemble_of([_load_one(Path(path), image_size) for path in paths])


def _load_one(path: Path, image_size: int | None) -> LoadedModel:
    if str(path) == pretrained.NAME and not path.exists():  # `--model pretrained`: the model tfseg ships
        try:
            path = pretrained.resolve()
        except pretrained.PretrainedError as err:
            raise ModelLoadError(str(err)) from err
    if not path.exists():
        raise ModelLoadError(f"model path {path} does not exist; give a training run folder (holding best.keras), "
                             "its export/ folder (a SavedModel) or a .keras file")
    if path.is_dir() and (path / runs.SAVED_MODEL).is_file():
        return _load_saved_model(path, owning_run(path), image_size)
    if path.is_dir() and ((path / runs.BEST_MODEL).exists() or (path / runs.CONFIG).is_file()):
        if not (path / runs.BEST_MODEL).is_file():
            raise ModelLoadError(f"run folder {path} holds no best.keras: training has not saved a model yet "
                                 "(it is written after the first validated epoch)")
        return _load_keras(path / runs.BEST_MODEL, path, image_size)
    if path.is_file() and path.suffix == ".keras":
        return _load_keras(path, owning_run(path), image_size)
    raise ModelLoadError(f"model path {path} is neither a SavedModel folder (no saved_model.pb), a run folder "
                         "(no best.keras) nor a .keras file")


def read_run_config(run_dir: Path | None) -> dict | None:
    """config.json of the run a model belongs to (None outside a run); ModelLoadError naming it when unreadable."""
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
        # Safe mode (Keras's default, stated here so that it stays): a .keras file whose config would run Python
        # code on loading (a Lambda layer's pickled function) is refused, never executed.
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # keras raises many types (zipfile, ValueError, OSError) for a bad file
        import zipfile

        if needs_unsafe_deserialization(err):
            raise ModelLoadError(f"{path} is refused: it holds Python code that runs when it is loaded (a Lambda "
                                 "layer or another pickled function), which Keras's safe mode does not execute and "
                                 "tfseg never loads unsafely. Use a model built from tfseg's architectures (every "
                                 "tfseg model loads in safe mode), or its SavedModel export") from err
        what = (f"is damaged: not a complete .keras archive ({path.stat().st_size} bytes; a truncated copy?)"
                if not zipfile.is_zipfile(path) else f"cannot be read as a Keras model ({type(err).__name__}: {err})")
        raise ModelLoadError(f"{path} {what}. It is left as it is; copy it again from where it came from, or "
                             "use the run's export/ (a SavedModel), or retrain") from err
    run_config = read_run_config(run_dir)
    size = _image_size(tuple(model.inputs[0].shape), path, run_config, image_size)

    def predict(batch: np.ndarray) -> np.ndarray:
        out = model.predict_on_batch(batch)
        return out[0] if isinstance(out, (list, tuple)) else out

    return LoadedModel(path, "keras", predict, size, sha256_file(path), run_dir, run_config,
                       context=int(model.inputs[0].shape[-1]) // 3, network=model)


def needs_unsafe_deserialization(err: BaseException) -> bool:
    """Whether Keras refused a file because loading it would run code (its message points at ``safe_mode=False``)."""
    text = str(err)
    return "safe_mode" in text or "unsafe_deserialization" in text


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
    return loaded, find_signature(loaded, path, signature_name)


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
                       context=int(spec.shape[-1]) // 3, saved_model=loaded)


def saved_model_sha256(folder: Path) -> str:
    """SHA-256 over saved_model.pb and every file under variables/ (relative names and contents)."""
    files = [folder / runs.SAVED_MODEL] + sorted(p for p in (folder / "variables").rglob("*") if p.is_file())
    return sha256_files(folder, files)
