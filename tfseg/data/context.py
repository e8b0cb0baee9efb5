"""2.5-D input (``--context K``): each slice stacked with its neighbours as channels.

A sample for slice ``i`` of a patient volume is the slices ``i - K//2 … i + K//2``
of the *same* volume, concatenated along the channel axis in that order
(3·K channels; the slice itself is channels ``3·(K//2) … 3·(K//2) + 2``). At the
ends of a volume the nearest slice is repeated, so every slice has a full stack.
``K = 1`` is the plain 2-D input.

One implementation serves training (row indices into a table of many patients),
evaluation (a numpy volume) and the exported ``segment_volume`` graph (a tensor).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf


def check_context(context: int) -> int:
    if not isinstance(context, (int, np.integer)) or context < 1 or context % 2 == 0:
        raise ValueError(f"context must be an odd number >= 1 (the slice and K//2 neighbours on each side), "
                         f"got {context!r}")
    return int(context)


def neighbour_rows(patients: np.ndarray, context: int) -> np.ndarray:
    """(N, K) int64 row indices of each row's context stack in a patient/slice-ordered table.

    ``patients`` (N,): the patient of every row, each patient's rows contiguous and in
    slice order (a SliceTable). Neighbours never cross into another patient.
    """
    half = check_context(context) // 2
    n = len(patients)
    rows = np.arange(n)
    # First and last row of each row's patient block.
    change = np.flatnonzero(patients[1:] != patients[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [n]]) - 1
    block = np.searchsorted(starts, rows, side="right") - 1
    offsets = np.arange(-half, half + 1)
    return np.clip(rows[:, None] + offsets[None, :], starts[block][:, None], ends[block][:, None]).astype(np.int64)


def stack_context(volume, context: int):
    """One volume's context stacks: (S, H, W, C) -> (S, H, W, C·K) tensor of the same dtype."""
    half = check_context(context) // 2
    volume = tf.convert_to_tensor(volume)
    if half == 0:
        return volume
    count = tf.shape(volume)[0]
    index = tf.clip_by_value(tf.range(count)[:, None] + tf.range(-half, half + 1)[None, :], 0, count - 1)
    return gather_stacks(volume, index)


def centre_channels(context: int, inner: int, channels: int = 3) -> tuple[int, int]:
    """Channel range ``[start, stop)`` of the ``inner``-slice stack inside a ``context``-slice stack.

    Both stacks clamp at the volume's ends the same way, so for every slice
    ``stack_context(v, context)[..., start:stop] == stack_context(v, inner)``: an ensemble
    stacks once at its widest member's context and hands each member the centre it was
    trained on. ``channels`` per slice (3 for kaggle_3m). Raises ValueError if ``inner > context``.
    """
    check_context(context), check_context(inner)
    if inner > context:
        raise ValueError(f"a {inner}-slice stack does not fit inside a {context}-slice stack")
    start = channels * (context // 2 - inner // 2)
    return start, start + channels * inner


def gather_stacks(images, index):
    """images (N, H, W, C), index (B, K) rows -> (B, H, W, K·C): the K images of each row side by side."""
    stacks = tf.gather(images, index)  # (B, K, H, W, C)
    shape = tf.shape(stacks)
    stacks = tf.transpose(stacks, [0, 2, 3, 1, 4])
    channels = images.shape[-1] * index.shape[-1] if images.shape[-1] and index.shape[-1] else -1
    return tf.reshape(stacks, [shape[0], shape[2], shape[3], channels])
