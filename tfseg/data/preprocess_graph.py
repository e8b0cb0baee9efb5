"""PROTOCOL.md's preprocessing, its inverse and the largest 3-D component as TensorFlow graph ops.

The serving signature ``segment_volume`` (tfseg.export) runs these so that a
client needs only TensorFlow. They implement the same algorithm as the numpy
reference in :mod:`tfseg.data.preprocess` (which packing and evaluation use)
and are pinned to it by tests/test_serving.py: the two must change together.

How ``segment_volume`` matches the numpy implementation (tfseg.data.preprocess):

* Resizing. ``skimage.transform.resize`` (order 2, mode "constant",
  ``anti_aliasing=False``) is ``scipy.ndimage.zoom`` with ``grid_mode=True``
  and mode "grid-constant": a separable *linear* operator, one (N, side)
  matrix per axis. ``tf.image.resize`` has no quadratic B-spline (its bicubic
  is Keys' cubic convolution and it clamps at the border instead of
  interpolating towards 0), so the graph builds that matrix itself from the
  B-spline formulas (:func:`spline2_resize_matrix`) and applies it with two
  matrix products. It agrees with scikit-image to ~1e-15 (float64), and the
  float32 network input is bit-identical on the real patients tried. For the
  record, on 3 real patients resized 256 -> 128 px, ``tf.image.resize``
  bicubic differs from skimage by up to 0.064 of the [0, 1] intensity range
  (mean 0.0008) and bilinear by up to 0.12 (mean 0.003): enough to move the
  0.5 boundary of a prediction. The inverse (``invert_volume(order=1)``) is
  built the same way (:func:`linear_resize_matrix`; ``tf.image.resize``
  bilinear would clamp at the border where skimage interpolates towards 0);
  both reproduce skimage's clipping of the output to the input's range.
* Percentiles: the volume is sorted and interpolated linearly, as
  ``np.percentile`` does; all preprocessing runs in float64 like numpy's.
* Largest connected component: 6-connected labelling by label propagation
  with pointer jumping in a ``tf.while_loop`` (:func:`largest_component_3d`),
  with scipy's tie-break (the component that starts first in raster order).
"""
from __future__ import annotations

import math

import tensorflow as tf

from tfseg.data.kaggle import SLICE_SHAPE
from tfseg.data.preprocess import CROP_THRESHOLD, MIN_SLICES, PERCENTILES


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


def preprocess_graph(slices, image_size: int):
    """PROTOCOL.md steps 1-5 in TensorFlow (tfseg.data.preprocess.preprocess_volume without the mask).

    slices: uint8 (S, 256, 256, 3). Returns (image float32 (S', N, N, 3), geometry dict of int32 scalars
    z0, z1, y0, y1, x0, x1 (in original numbering), pad_y0, pad_y1, pad_x0, pad_x1, side).
    """
    volume = tf.cast(slices[1:-1], tf.float64)
    volume = tf.where(volume < tf.reduce_max(volume) * CROP_THRESHOLD, tf.zeros_like(volume), volume)
    foreground = volume > 0
    (z0, z1), (y0, y1), (x0, x1) = (_nonzero_range(tf.reduce_any(foreground, axis=axes))
                                    for axes in ((1, 2, 3), (0, 2, 3), (0, 1, 3)))
    volume = volume[z0:z1, y0:y1, x0:x1]
    rows, cols = y1 - y0, x1 - x0
    small, large = (tf.abs(rows - cols)) // 2, (tf.abs(rows - cols) + 1) // 2  # floor before, ceil after
    pad_y = tf.where(cols > rows, tf.stack([small, large]), tf.zeros(2, tf.int32))
    pad_x = tf.where(rows > cols, tf.stack([small, large]), tf.zeros(2, tf.int32))
    volume = tf.pad(volume, [[0, 0], pad_y, pad_x, [0, 0]])
    side = tf.maximum(rows, cols)
    # skimage's img_as_float: uint8 * (1 / 255) in float64
    volume = volume * (1.0 / 255.0)
    matrix = spline2_resize_matrix(side, image_size)
    resized = tf.einsum("ik,zklc,jl->zijc", matrix, volume, matrix)
    resized = _clip_like_skimage(resized, volume)
    geometry = dict(z0=z0 + 1, z1=z1 + 1, y0=y0, y1=y1, x0=x0, x1=x1, pad_y0=pad_y[0], pad_y1=pad_y[1],
                    pad_x0=pad_x[0], pad_x1=pad_x[1], side=side)
    return tf.cast(normalize_graph(resized), tf.float32), geometry


def normalize_graph(volume):
    """tfseg.data.preprocess.normalize_volume: 10..99th percentile rescale, per-channel standardization."""
    ordered = tf.sort(tf.reshape(volume, [-1]))
    low, high = (percentile_sorted(ordered, q) for q in PERCENTILES)
    clipped = tf.clip_by_value(volume, low, high)
    # rescale_intensity leaves a constant-range volume clipped to [0, 1] instead of dividing by zero
    scaled = tf.where(high > low, (clipped - low) / tf.where(high > low, high - low, 1.0),
                      tf.clip_by_value(volume, 0.0, 1.0))
    mean = tf.reduce_mean(scaled, axis=(0, 1, 2))
    std = tf.sqrt(tf.reduce_mean(tf.square(scaled - mean), axis=(0, 1, 2)))
    return (scaled - mean) / std


def percentile_sorted(ordered, q: float):
    """``np.percentile(values, q)`` (method "linear") of a sorted 1-D float64 tensor, same lerp formula."""
    n = tf.shape(ordered, out_type=tf.int64)[0]
    position = tf.cast(n - 1, tf.float64) * (q / 100.0)
    below = tf.cast(tf.floor(position), tf.int64)
    above = tf.minimum(below + 1, n - 1)
    t = position - tf.cast(below, tf.float64)
    a, b = tf.gather(ordered, below), tf.gather(ordered, above)
    # numpy's _lerp: interpolate from the nearer end so that t=1 gives b exactly
    return tf.where(t >= 0.5, b - (b - a) * (1.0 - t), a + (b - a) * t)


def invert_graph(probabilities, geometry: dict, num_slices):
    """tfseg.data.preprocess.invert_volume(order=1): (S', N, N) float32 -> (S, 256, 256) float32."""
    g = geometry
    size = probabilities.shape[1]
    matrix = linear_resize_matrix(size, g["side"])
    restored = tf.einsum("ik,zkl,jl->zij", matrix, tf.cast(probabilities, tf.float64), matrix)
    restored = _clip_like_skimage(tf.cast(restored, tf.float32), probabilities)
    restored = restored[:, g["pad_y0"]:g["side"] - g["pad_y1"], g["pad_x0"]:g["side"] - g["pad_x1"]]
    height, width = SLICE_SHAPE
    return tf.pad(restored, [[g["z0"], num_slices - g["z1"]], [g["y0"], height - g["y1"]],
                             [g["x0"], width - g["x1"]]])


# Quadratic B-spline interpolation (scipy.ndimage, order 2): prefilter pole and the gain of its
# infinite-domain inverse filter h[k] = GAIN * POLE**|k| (scipy pads 12 zeros first, so the
# boundary handling of its recursive filter changes the result by < POLE**12 ~ 1e-9).
SPLINE2_POLE = math.sqrt(8.0) - 3.0
SPLINE2_GAIN = 8.0 / (6.0 + 2.0 * SPLINE2_POLE)


def _grid_coordinates(size_in, size_out):
    """Input coordinate of every output pixel centre (scipy's grid_mode=True), float64 (size_out,)."""
    scale = tf.cast(size_in, tf.float64) / tf.cast(size_out, tf.float64)
    return (tf.range(size_out, dtype=tf.float64) + 0.5) * scale - 0.5


def spline2_resize_matrix(size_in, size_out):
    """(size_out, size_in) float64 M with ``M @ x`` == skimage resize(x, order=2, mode="constant") along one axis."""
    t = _grid_coordinates(size_in, size_out)[:, None]
    j = tf.range(size_in, dtype=tf.float64)[None, :]
    nearest = tf.floor(t + 0.5)
    matrix = tf.zeros_like(t * j)
    for offset in (-1.0, 0.0, 1.0):
        knot = nearest + offset
        u = tf.abs(t - knot)
        weight = tf.where(u < 0.5, 0.75 - u * u, tf.where(u < 1.5, 0.5 * (u - 1.5) ** 2, tf.zeros_like(u)))
        matrix += weight * SPLINE2_GAIN * SPLINE2_POLE ** tf.abs(knot - j)
    return matrix


def linear_resize_matrix(size_in, size_out):
    """(size_out, size_in) float64 M with ``M @ x`` == skimage resize(x, order=1, mode="constant") along one axis.

    Outside the input, "grid-constant" interpolates towards 0: the weight of a knot at -1 or
    size_in is dropped, not moved to the edge (tf.image.resize would clamp).
    """
    t = _grid_coordinates(size_in, size_out)[:, None]
    j = tf.range(size_in, dtype=tf.float64)[None, :]
    below = tf.floor(t)
    w = t - below
    return (1.0 - w) * tf.cast(tf.equal(below, j), tf.float64) + w * tf.cast(tf.equal(below + 1.0, j), tf.float64)


def _clip_like_skimage(output, source):
    """skimage.transform's ``_clip_warp_output``: clip to the input's range, widened to cval=0 if it was used."""
    low, high = tf.reduce_min(source), tf.reduce_max(source)
    zero = tf.zeros([], output.dtype)
    widen = tf.logical_and(tf.logical_not((low <= zero) & (zero <= high)),
                           (tf.reduce_min(output) <= zero) & (zero <= tf.reduce_max(output)))
    low = tf.where(widen, tf.minimum(low, zero), low)
    high = tf.where(widen, tf.maximum(high, zero), high)
    return tf.clip_by_value(output, low, high)


def _nonzero_range(flags):
    """[first, last + 1) of the True entries of a 1-D bool tensor with at least one True, int32."""
    index = tf.cast(tf.where(flags)[:, 0], tf.int32)
    return index[0], index[-1] + 1


def largest_component_3d(mask):
    """The largest 6-connected component of a bool (D, H, W) volume (all False stays all False).

    Same result as tfseg.metrics.largest_connected_component (scipy.ndimage.label), ties included.
    """
    def keep_largest():
        (z0, z1), (y0, y1), (x0, x1) = (_nonzero_range(tf.reduce_any(mask, axis=axes))
                                        for axes in ((1, 2), (0, 2), (0, 1)))
        # Label only the box around the foreground: every propagation step is cheaper.
        kept = _largest_component_dense(mask[z0:z1, y0:y1, x0:x1])
        shape = tf.shape(mask)
        return tf.pad(kept, [[z0, shape[0] - z1], [y0, shape[1] - y1], [x0, shape[2] - x1]])

    return tf.cond(tf.reduce_any(mask), keep_largest, lambda: mask)


def _largest_component_dense(mask):
    shape = tf.shape(mask)
    count = tf.size(mask)
    # Label = 1 + flat index of a voxel of the same component; converges to 1 + the component's last index.
    labels = tf.where(mask, tf.reshape(tf.range(1, count + 1), shape), 0)

    def step(labels, _):
        padded = tf.pad(labels, [[1, 1], [1, 1], [1, 1]])
        d, h, w = shape[0], shape[1], shape[2]
        spread = labels
        for dz, dy, dx in ((0, 1, 1), (2, 1, 1), (1, 0, 1), (1, 2, 1), (1, 1, 0), (1, 1, 2)):
            spread = tf.maximum(spread, padded[dz:dz + d, dy:dy + h, dx:dx + w])
        spread = tf.where(mask, spread, 0)
        # Pointer jumping: take the label of the voxel a label points at (never smaller: labels only grow).
        flat = tf.reshape(spread, [-1])
        jumped = tf.reshape(tf.gather(tf.concat([[0], flat], 0), flat), shape)
        return jumped, tf.reduce_any(tf.not_equal(jumped, labels))

    labels, _ = tf.while_loop(lambda labels, changed: changed, step, (labels, tf.constant(True)))
    flat = tf.reshape(labels, [-1])
    sizes = tf.math.unsorted_segment_sum(tf.ones_like(flat), flat, count + 1)
    sizes = tf.tensor_scatter_nd_update(sizes, [[0]], [0])  # background
    # scipy numbers components by their first voxel in raster order and argmax takes the lowest number.
    first = tf.math.unsorted_segment_min(tf.range(count), flat, count + 1)
    candidates = tf.equal(sizes, tf.reduce_max(sizes))
    chosen = tf.argmin(tf.where(candidates, first, count), output_type=tf.int32)
    return tf.equal(labels, chosen)
