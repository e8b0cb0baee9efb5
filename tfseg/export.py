"""Export a trained network as a TensorFlow SavedModel for serving.

    python -m tfseg.export RUN_DIR        # RUN_DIR/best.keras -> RUN_DIR/export
    python -m tfseg.export --ensemble RUN_A RUN_B ... --out DIR   # one SavedModel averaging the runs

Two signatures (inspect them with ``saved_model_cli show --dir RUN_DIR/export --all``):

``serving_default``
    ``image`` float32 (B, N, N, 3) preprocessed slices -> ``probabilities``
    float32 (B, N, N, 1).
``segment_volume``
    ``slices`` uint8 (S, 256, 256, 3), one patient's raw kaggle_3m slices in
    slice order -> ``mask`` uint8 (S, 256, 256), 0/255, in native geometry.
    The whole of PROTOCOL.md runs inside the graph: preprocessing (steps 1-5),
    prediction in batches of slices, the inverse mapping (the dropped slices come
    back empty), then threshold 0.5 and the largest 3-D connected component.
    A client needs TensorFlow (or TensorFlow Serving) only.

When the run folder holds a ``postprocess.json`` (a rule chosen out of fold by ``tfseg
postprocess``; or ``--postprocess FILE``), ``segment_volume`` applies that rule instead of
the protocol's (:func:`tfseg.postprocess.rule_graph`, every component mode, equal to the
numpy rule evaluation applies) and the file is copied into the export folder, where
evaluate.py and predict find it.

An ensemble (``--ensemble``) is exported as one SavedModel with the same two
signatures: ``serving_default`` returns the mean of the members' probabilities and
``segment_volume`` runs the protocol once on that mean. ``image`` then has the
widest member's 3·K channels (see :mod:`tfseg.inference.ensemble`); ``DIR/ensemble.json``
lists the members.

``segment_volume`` runs the graph functions of :mod:`tfseg.data.preprocess` and
:mod:`tfseg.postprocess`, the same ones evaluation runs, so its mask is evaluate.py's.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import keras
import tensorflow as tf

import tfseg.losses  # noqa: F401  (registers custom objects for load_model)
import tfseg.metrics  # noqa: F401
import tfseg.models  # noqa: F401
from tfseg.data.context import stack_context
from tfseg.data.kaggle import SLICE_SHAPE
from tfseg.data.preprocess import CONSTANT_INTENSITY, invert_graph, preprocess_graph
from tfseg.data.protocol import MIN_SLICES
from tfseg import runs
from tfseg.fileio import atomic_directory, write_json_atomic
from tfseg.inference import EnsembleError, average_models, ensemble_of, load_model
from tfseg.postprocess import PostprocessRule, load_rule, rule_for_model, rule_graph

# Slices per forward pass inside segment_volume: bounds the activation memory of one call.
SLICE_BATCH = 16
MASK_VALUE = 255  # kaggle_3m masks are 0/255


def export_saved_model(model: keras.Model, out_dir: str | os.PathLike, slice_batch: int = SLICE_BATCH,
                       rule: PostprocessRule | None = None, rule_file: str | os.PathLike | None = None) -> Path:
    """Write ``model`` (one output) as a SavedModel to ``out_dir``, atomically (temporary folder, then rename).

    Adds ``segment_volume`` when the model's input is a fixed N×N×3 (every tfseg model is), post-processing
    with ``rule`` (default: the protocol's); ``rule_file`` (the rule's postprocess.json) is copied into ``out_dir``.
    """
    out_dir = Path(out_dir)
    _, height, width, channels = model.inputs[0].shape
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec((None, height, width, channels), tf.float32, name="image")

    def serve(image):
        return {"probabilities": _probabilities(model, image)}

    archive.add_endpoint("serving_default", serve, input_signature=[spec])
    if height is not None and height == width and channels and channels % 3 == 0:
        segment = make_segment_volume(model, int(height), slice_batch, context=int(channels) // 3, rule=rule)
        archive.add_endpoint("segment_volume", segment,
                             input_signature=[tf.TensorSpec(None, tf.uint8, name="slices")])
    else:
        print(f"note: no segment_volume signature: the model input {model.inputs[0].shape} is not a fixed N×N×3",
              file=sys.stderr)
    with atomic_directory(out_dir) as tmp:
        archive.write_out(str(tmp), verbose=False)
        if rule_file is not None:
            shutil.copyfile(rule_file, tmp / runs.POSTPROCESS)
    return out_dir


def _probabilities(model: keras.Model, image):
    """(B, N, N, 3) float32 -> (B, N, N, 1) float32: the model's (first) output."""
    out = model(image, training=False)
    return tf.cast(out[0] if isinstance(out, (list, tuple)) else out, tf.float32)


# ----------------------------------------------------------------------------
# segment_volume: PROTOCOL.md in the graph.
# ----------------------------------------------------------------------------

def make_segment_volume(model: keras.Model, image_size: int, slice_batch: int = SLICE_BATCH, context: int = 1,
                        rule: PostprocessRule | None = None):
    """The ``segment_volume`` function: uint8 (S, 256, 256, 3) -> {"mask": uint8 (S, 256, 256) 0/255}.

    A 2.5-D model (input 3·``context`` channels) gets each slice's neighbour stack, built in the graph.
    ``rule``: the post-processing of the native probabilities (default: the protocol's).
    """

    def segment_volume(slices):
        slices = check_slices(slices)
        image, geometry = preprocess_graph(slices, image_size)
        image = tf.debugging.assert_all_finite(image, f"segment_volume: {CONSTANT_INTENSITY}")
        image = stack_context(image, context)
        probabilities = predict_in_batches(model, image, slice_batch)
        mask = rule_graph(invert_graph(probabilities, geometry, order=1), rule)
        return {"mask": tf.ensure_shape(tf.cast(mask, tf.uint8) * MASK_VALUE, [None, *SLICE_SHAPE])}

    return segment_volume


def check_slices(slices):
    """Fail with a readable message unless ``slices`` is uint8 (S >= 3, 256, 256, 3) with a non-zero voxel."""
    height, width = SLICE_SHAPE
    rank_ok = tf.debugging.assert_rank(
        slices, 4, message=f"segment_volume: the input must be one patient volume of shape (S, {height}, {width}, 3)")
    with tf.control_dependencies([rank_ok]):
        shape = tf.shape(slices)
        size_ok = tf.debugging.assert_equal(
            shape[1:], tf.constant([height, width, 3]),
            message=f"segment_volume: every slice must be {height}x{width}x3 uint8 (kaggle_3m .tif); got shape")
        depth_ok = tf.debugging.assert_greater_equal(
            shape[0], MIN_SLICES, message=f"segment_volume: a volume needs at least {MIN_SLICES} slices "
                                          "(the first and last are dropped); got")
    with tf.control_dependencies([size_ok, depth_ok]):
        nonzero_ok = tf.debugging.assert_greater(
            tf.reduce_max(slices[1:-1]), tf.constant(0, tf.uint8),
            message="segment_volume: the volume (without its first and last slice) is all zeros; nothing to segment")
    with tf.control_dependencies([nonzero_ok]):
        return tf.identity(slices)


def predict_in_batches(model: keras.Model, image, slice_batch: int):
    """(S', N, N, C) float32 -> (S', N, N) float32 probabilities, ``slice_batch`` slices per forward pass."""
    count = tf.shape(image)[0]
    size, channels = image.shape[1], model.inputs[0].shape[-1]
    padded = tf.pad(image, [[0, (-count) % slice_batch], [0, 0], [0, 0], [0, 0]])
    chunks = tf.reshape(padded, [-1, slice_batch, size, size, channels])
    probabilities = tf.map_fn(lambda chunk: _probabilities(model, chunk)[..., 0], chunks, parallel_iterations=1,
                              fn_output_signature=tf.TensorSpec([slice_batch, size, size], tf.float32))
    return tf.reshape(probabilities, [-1, size, size])[:count]


# ----------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------

def export_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None,
               postprocess: str | os.PathLike | None = None) -> Path:
    """Export ``RUN_DIR/best.keras`` to ``out`` (default ``RUN_DIR/export``).

    The post-processing: ``postprocess`` (a postprocess.json), else ``RUN_DIR/postprocess.json``
    when there is one, else the protocol's; the file goes into the export.
    """
    run_dir = Path(run_dir)
    source = run_dir / runs.BEST_MODEL
    if not source.is_file():
        raise FileNotFoundError(f"{source} does not exist: {run_dir} is not a finished training run "
                                "(train with `python train.py --logdir DIR` first)")
    rule, rule_file = _rule(postprocess, source)
    model = load_model(source).network  # ModelLoadError naming the file when it is corrupt
    out = export_saved_model(model, run_dir / runs.EXPORT if out is None else out, rule=rule, rule_file=rule_file)
    print(f"exported {source} -> {out}{_rule_note(rule, rule_file)}")
    return out


def _rule(postprocess, model_path) -> tuple[PostprocessRule, Path | None]:
    """The rule to export and its file: ``postprocess`` when given, else the one beside ``model_path`` (if any)."""
    if postprocess is not None:
        return load_rule(postprocess), Path(postprocess)
    if model_path is None:
        return PostprocessRule(), None
    return rule_for_model(model_path)


def _rule_note(rule: PostprocessRule, rule_file: Path | None) -> str:
    return "" if rule_file is None else f" (segment_volume post-processes with {rule.describe()}, from {rule_file})"


def export_ensemble(models: list[str | os.PathLike], out_dir: str | os.PathLike,
                    postprocess: str | os.PathLike | None = None) -> Path:
    """Export the mean of ``models`` (run folders or .keras files) as one SavedModel in ``out_dir``.

    The members are wrapped by :func:`tfseg.inference.average_models` and written by
    :func:`export_saved_model`; ``out_dir/ensemble.json`` lists them (path, kind, sha256).
    Raises ModelLoadError for a bad path, EnsembleError for a SavedModel member or
    members of different image sizes (naming both). ``postprocess``: a postprocess.json for
    ``segment_volume`` (the members' own rules do not apply to their mean; default the protocol's).
    """
    members = [load_model(path) for path in models]
    for member in members:
        if member.network is None:
            raise EnsembleError(f"{member.path} is a SavedModel, which cannot be nested in a Keras model: give "
                                "its run folder or .keras file instead")
    ensemble = ensemble_of(members)  # checks the image sizes, naming the paths
    rule, rule_file = _rule(postprocess, None)
    out = export_saved_model(average_models([m.network for m in members]), out_dir, rule=rule, rule_file=rule_file)
    write_json_atomic(out / runs.ENSEMBLE, ensemble.describe())
    print(f"exported the mean of {len(members)} models ({', '.join(str(m.path) for m in members)}) -> {out}"
          f"{_rule_note(rule, rule_file)}")
    return out


if __name__ == "__main__":  # `python -m tfseg.export`: the same command as `tfseg export`
    from tfseg.cli.export import main

    sys.exit(main(prog="python -m tfseg.export"))
