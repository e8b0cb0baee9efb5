"""Prediction views and their mean: the prediction of one patient's preprocessed slices.

A *view* is one probability volume: a source (a model, or one ensemble member) on the
image, or on its left-right flip (flipped back: test-time augmentation). The prediction
is their mean, always in the same float32 order (:func:`mean_of_views`), so an ensemble,
``--tta`` and ``--uncertainty`` give bit for bit the same mask however they are combined;
tfseg.uncertainty measures how much the views disagree.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tfseg.data.context import stack_context
from tfseg.inference.model import PredictFn


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

    ``sources``: one predict function, or an ensemble's members (``LoadedModel.sources``);
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
    same float32 operations in the same order as an ensemble's ``predict`` and the flip
    average always were, so the mask is bit for bit the one scored without ``--uncertainty``.
    """
    per_source = len(views) // n_sources
    if tta and per_source != 2:
        raise ValueError("tta needs the flipped views: call predict_views(..., flip=True)")
    plain = sum_in_order([views[i * per_source] for i in range(n_sources)]) / np.float32(n_sources)
    if not tta:
        return plain
    flipped = sum_in_order([views[i * per_source + 1] for i in range(n_sources)]) / np.float32(n_sources)
    return 0.5 * (plain + flipped)


def sum_in_order(volumes: Sequence[np.ndarray]) -> np.ndarray:
    """``volumes[0] + volumes[1] + ...``, left to right: float32 sums depend on the order, so every mean uses this one."""
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


def as_sources(predict: PredictFn | Sequence[PredictFn]) -> list[PredictFn]:
    """``predict`` as a list of sources: a predict function -> [it]; a non-empty list of them -> the list."""
    sources = list(predict) if isinstance(predict, (list, tuple)) else [predict]
    if not sources or not all(callable(source) for source in sources):
        raise TypeError(f"predict must be a predict function or a non-empty list of them, got {predict!r}")
    return sources


def views_description(n_sources: int) -> str:
    """summary.json's words for the views --uncertainty compares."""
    models = "the model" if n_sources == 1 else f"each of the {n_sources} ensemble members"
    return f"{2 * n_sources} views: {models} on the image and on its left-right flip"
