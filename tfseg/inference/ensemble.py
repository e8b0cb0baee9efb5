"""Ensembles: several trained networks answering as one, by the mean of their probabilities.

    python evaluate.py --model RUN_A RUN_B --out DIR           # score the ensemble
    python -m tfseg.export --ensemble RUN_A RUN_B --out DIR    # serve it as one SavedModel

The members are averaged *before* PROTOCOL.md's threshold and largest 3-D component,
slice by slice. Every member must take the same image size. Members may differ in
their 2.5-D ``context`` (input channels 3·K): the ensemble takes the widest member's
neighbour stack and hands each member the centre of it that it was trained on
(:func:`tfseg.data.context.centre_channels`), which equals that member's own stack.

Two forms of the same idea, kept side by side here so they stay in step:

* :func:`ensemble_of`: loaded models (:class:`~tfseg.inference.LoadedModel`, any kind)
  as one LoadedModel of kind "ensemble", averaged in numpy, for evaluation;
* :func:`average_models`: Keras models wrapped into one functional Keras model
  (input -> each member -> ``Average``), which ``tfseg.export.export_saved_model``
  exports unchanged.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Sequence

import numpy as np

from tfseg.data.context import centre_channels
from tfseg.inference.model import LoadedModel, ModelLoadError, PredictFn
from tfseg.inference.views import sum_in_order

if TYPE_CHECKING:
    import keras


class EnsembleError(ModelLoadError):
    """The models cannot form one ensemble (image sizes differ, splits differ, ...); the message names them.

    A ModelLoadError, so that one ``except ModelLoadError`` catches every reason a model cannot be used.
    """


def check_members(members: Sequence[tuple[str, int, int]]) -> tuple[int, int]:
    """(image size N, ensemble context K) of members given as (name, N, K); an error naming two that differ.

    K is the widest member's context. Raises EnsembleError when there is no member or
    the image sizes differ.
    """
    if not members:
        raise EnsembleError("an ensemble needs at least one model")
    first_name, first_size, _ = members[0]
    for name, size, _ in members[1:]:
        if size != first_size:
            raise EnsembleError(f"cannot ensemble {first_name} and {name}: {first_name} takes {first_size}x"
                                f"{first_size} images and {name} takes {size}x{size}; every member must be "
                                "trained at the same --image-size")
    return int(first_size), int(max(context for _, _, context in members))


def ensemble_of(members: Sequence[LoadedModel]) -> LoadedModel:
    """Loaded models that predict as one: a LoadedModel of kind "ensemble", the mean of their probabilities.

    ``predict``: (B, N, N, 3·K) float32 -> (B, N, N) float32, the members' probabilities summed
    in the order given, / count; K is the widest member's context. The mean is linear, so
    evaluation's test-time flip applied to it equals the mean of every member's own
    flip-averaged prediction. ``sources``: one function per member (the ensemble's batch ->
    that member's (B, N, N) float32); evaluation takes their mean itself (same order, same
    float32 sum as ``predict``) so that ``--uncertainty`` can also see where they disagree.
    ``sha256``: SHA-256 of the members' SHA-256 digests, one per line, in the order given.
    Raises EnsembleError naming two members whose image sizes differ.
    """
    members = list(members)
    size, context = check_members([(str(m.path), m.image_size, m.context) for m in members])
    sources = [_member_predict(member, context) for member in members]

    def predict(batch: np.ndarray) -> np.ndarray:
        return sum_in_order([source(batch) for source in sources]) / np.float32(len(sources))

    digest = hashlib.sha256("\n".join(m.sha256 for m in members).encode()).hexdigest()
    return LoadedModel(None, "ensemble", predict, size, digest, run_dir=None, run_config=members[0].run_config,
                       context=context, members=members, sources=sources)


def _member_predict(member: LoadedModel, context: int) -> PredictFn:
    """The ensemble's (B, N, N, 3·``context``) batch -> ``member``'s (B, N, N) float32, on the centre of the
    neighbour stack it was trained on."""
    start, stop = centre_channels(context, member.context)

    def predict(batch: np.ndarray) -> np.ndarray:
        out = np.asarray(member.predict(np.ascontiguousarray(batch[..., start:stop])), np.float32)
        return out[..., 0] if out.ndim == 4 and out.shape[-1] == 1 else out

    return predict


def average_models(models: Sequence[keras.Model], name: str = "ensemble") -> keras.Model:
    """One functional Keras model: image (B, N, N, 3·K) float32 -> mean probabilities (B, N, N, 1) float32.

    ``models``: functional models taking (B, N, N, 3·k) float32 (same N, any odd k) and
    returning (B, N, N, 1) probabilities, or a list whose first entry is (deep
    supervision). K is the widest k; a narrower member sees the centre of the stack.
    Built from plain layers only (Reshape, Cropping3D, Average), no Lambda. The members'
    layers are shared, not copied; the given models are not changed.
    """
    import keras

    shapes = [tuple(m.inputs[0].shape) for m in models]
    size, context = check_members([(m.name, shape[1], shape[-1] // 3) for m, shape in zip(models, shapes)])
    inputs = keras.Input((size, size, 3 * context), dtype="float32", name="image")
    outputs = []
    for i, (model, shape) in enumerate(zip(models, shapes)):
        # A fresh name per member: loaded runs are all called e.g. "unet", and names must be unique.
        member = keras.Model(model.inputs, model.outputs[0], name=f"member{i}_{model.name}")
        x = inputs
        start, stop = centre_channels(context, shape[-1] // 3)
        if stop - start < 3 * context:
            # Channels can only be cropped as a spatial axis: (N, N, C) -> (N, N, C, 1) -> crop -> back.
            x = keras.layers.Reshape((size, size, 3 * context, 1), name=f"member{i}_as_volume")(x)
            x = keras.layers.Cropping3D(((0, 0), (0, 0), (start, 3 * context - stop)), name=f"member{i}_stack")(x)
            x = keras.layers.Reshape((size, size, stop - start), name=f"member{i}_as_image")(x)
        outputs.append(member(x))
    output = outputs[0] if len(outputs) == 1 else keras.layers.Average(dtype="float32", name="mean")(outputs)
    return keras.Model(inputs, output, name=name)
