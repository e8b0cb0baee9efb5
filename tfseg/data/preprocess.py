"""docs/protocol.md's preprocessing of one patient volume and its inverse, in TensorFlow: the one implementation.

Packing and evaluation call :func:`preprocess_volume` and :func:`invert_volume` (numpy in,
numpy out); the serving signature ``segment_volume`` (:mod:`tfseg.export`) runs the same
graph functions, :func:`preprocess_graph` and :func:`invert_graph`, inside its SavedModel,
so a client needs only TensorFlow and gets the mask evaluate.py scores.

Forward (Buda et al.'s ``utils.py``): drop the first and last slice, zero every voxel
below 10% of the volume maximum and crop to the box holding non-zero voxels, pad to a
square, resize every slice to ``image_size``² (image: order-2 spline, mask: order 0),
then normalize the image volume (10th..99th percentile rescale, per-channel
standardization). The :class:`~tfseg.data.protocol.Geometry` records what steps 1-4 did;
between graph ops it travels as its flat (14,) int32 list.

How this reproduces the reference's scikit-image calls (tests/reference_preprocess.py
holds them; tests/test_preprocess.py compares the two on the phantom and on real
patients at 128 and 256 px):

* Resizing. ``skimage.transform.resize`` (order 2, mode "constant",
  ``anti_aliasing=False``) is ``scipy.ndimage.zoom`` with ``grid_mode=True``
  and mode "grid-constant": a separable *linear* operator, one (N, side)
  matrix per axis. ``tf.image.resize`` has no quadratic B-spline (its bicubic
  is Keys' cubic convolution and it clamps at the border instead of
  interpolating towards 0), so the matrix is built here from the B-spline
  formulas (:func:`spline2_resize_matrix`) and applied with two matrix
  products. It agrees with scikit-image to ~1e-15 (float64). For the record, on
  3 real patients resized 256 -> 128 px, ``tf.image.resize`` bicubic differs
  from skimage by up to 0.064 of the [0, 1] intensity range (mean 0.0008) and
  bilinear by up to 0.12 (mean 0.003): enough to move the 0.5 boundary of a
  prediction. The inverse of probabilities (``order=1``) is built the same way
  (:func:`linear_resize_matrix`; ``tf.image.resize`` bilinear would clamp at the
  border where skimage interpolates towards 0); both reproduce skimage's
  clipping of the output to the input's range. Order 0 (masks, both
  directions) takes the nearest sample of the same grid coordinates, halves
  rounded up as scipy does (:func:`nearest_indices`): a gather, exact.
* Percentiles: the two order statistics around each percentile's position
  (:func:`order_statistics`: one counting pass, then a sort of the few values
  in their buckets), interpolated with ``np.percentile``'s formula. All
  preprocessing runs in float64 like numpy's; the image is cast to float32 at
  the end.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfseg.data.protocol import CROP_THRESHOLD, GEOMETRY_LENGTH, MIN_SLICES, PERCENTILES, Geometry

CONSTANT_INTENSITY = ("the image volume has constant intensity after cropping, so it cannot be normalized "
                      "(docs/protocol.md step 5 divides each channel by its standard deviation, which is 0)")


# ----------------------------------------------------------------------------
# numpy in, numpy out: packing and evaluation.
# ----------------------------------------------------------------------------

def preprocess_volume(image: np.ndarray, mask: np.ndarray, image_size: int = 256):
    """Apply docs/protocol.md's five preprocessing steps to one patient.

    image: (S, H, W, 3) uint8; mask: (S, H, W), foreground where non-zero.
    Returns ``(image (S', N, N, 3) float32, mask (S', N, N) uint8 in {0, 1}, Geometry)``
    with N = image_size and S' ≤ S - 2. Raises ValueError, saying what is wrong, for a
    volume that cannot be preprocessed: wrong shapes or dtype, fewer than 3 slices, all
    zeros, or constant intensity.
    """
    image, mask = np.asarray(image), np.asarray(mask)
    if image.ndim != 4 or mask.shape != image.shape[:3]:
        raise ValueError(f"expected image (S, H, W, C) and mask (S, H, W), got {image.shape} and {mask.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected uint8 slices (as kaggle_3m's .tif files hold), got {image.dtype}")
    if image.shape[0] < MIN_SLICES:
        raise ValueError(f"a volume needs at least {MIN_SLICES} slices (the first and last are dropped), "
                         f"got {image.shape[0]}")
    if not image[1:-1].any():
        raise ValueError("volume is empty (all voxels zero); it cannot be cropped")
    normalized, geometry = preprocess_graph(tf.constant(image), image_size)
    normalized = normalized.numpy()
    constant = np.flatnonzero(np.isnan(normalized).any(axis=(0, 1, 2)))
    if constant.size:
        raise ValueError(f"{CONSTANT_INTENSITY} (channel {', '.join(map(str, constant))}); check its .tif slices")
    mask = preprocess_mask_graph(tf.constant(mask != 0), geometry)
    return normalized, mask.numpy(), Geometry.from_list(geometry.numpy())


def invert_volume(volume: np.ndarray, geometry: Geometry, order: int = 0) -> np.ndarray:
    """Map a preprocessed-geometry volume back onto the original slices.

    volume: (S', N, N) (probabilities or a 0/1 mask). ``order`` is the
    interpolation of the inverse resize: 0 for masks (any dtype), 1 for float
    probabilities (threshold afterwards). Returns (S, 256, 256) of volume's dtype,
    zero outside the crop box and on the dropped slices.
    """
    volume = np.asarray(volume)
    g = geometry
    depth = g.z1 - g.z0
    if volume.shape != (depth, g.image_size, g.image_size):
        raise ValueError(f"volume of shape {volume.shape} does not match its geometry "
                         f"({depth}, {g.image_size}, {g.image_size})")
    if order == 1 and not np.issubdtype(volume.dtype, np.floating):
        raise ValueError(f"order 1 interpolates probabilities: give a float volume, not {volume.dtype} "
                         "(masks: order 0)")
    return invert_graph(tf.constant(volume), tf.constant(g.to_list(), tf.int32), order).numpy()


# ----------------------------------------------------------------------------
# Graph ops: the implementation (also inside the segment_volume signature).
# ----------------------------------------------------------------------------

def preprocess_graph(slices, image_size: int):
    """Steps 1-5 on one patient's image slices.

    slices: uint8 (S, H, W, C), S ≥ 3, with a non-zero voxel outside the first and last
    slice (the callers check: preprocess_volume raises, segment_volume asserts).
    Returns (image float32 (S', N, N, C), geometry int32 (14,), the flat Geometry). A
    channel of constant intensity cannot be standardized: its voxels come out NaN, which
    the callers turn into an error.
    """
    shape = tf.shape(slices)
    volume = slices[1:-1]
    # On the uint8 voxels, as the reference: an integer v < max·0.1 exactly when v < ceil(max·0.1).
    cutoff = tf.math.ceil(tf.cast(tf.reduce_max(volume), tf.float64) * CROP_THRESHOLD)
    volume = tf.where(volume < tf.cast(cutoff, tf.uint8), tf.zeros_like(volume), volume)
    foreground = volume > 0
    (z0, z1), (y0, y1), (x0, x1) = (nonzero_range(tf.reduce_any(foreground, axis=axes))
                                    for axes in ((1, 2, 3), (0, 2, 3), (0, 1, 3)))
    pad_y, pad_x = _square_padding(y1 - y0, x1 - x0)
    volume = tf.pad(volume[z0:z1, y0:y1, x0:x1], [[0, 0], pad_y, pad_x, [0, 0]])
    volume = tf.cast(volume, tf.float64) * (1.0 / 255.0)  # skimage's img_as_float of uint8
    resized = _clip_like_skimage(_resize_slices(volume, spline2_resize_matrix(tf.shape(volume)[1], image_size)),
                                 volume)
    # z in the original numbering: the crop started after the dropped first slice
    geometry = tf.stack([shape[0], shape[1], shape[2], z0 + 1, z1 + 1, y0, y1, x0, x1,
                         pad_y[0], pad_y[1], pad_x[0], pad_x[1], tf.constant(image_size, tf.int32)])
    return tf.cast(normalize_graph(resized), tf.float32), geometry


def preprocess_mask_graph(mask, geometry):
    """Steps 1-4 for the mask, with the crop and padding the image chose: bool (S, H, W) -> uint8 (S', N, N) 0/1."""
    g = geometry_view(geometry)
    mask = tf.pad(mask[g.z0:g.z1, g.y0:g.y1, g.x0:g.x1], [[0, 0], g.pad_y, g.pad_x])
    index = nearest_indices(g.side, g.image_size)
    return tf.cast(tf.gather(tf.gather(mask, index, axis=1), index, axis=2), tf.uint8)


def invert_graph(volume, geometry, order: int):
    """:func:`invert_volume` as graph ops: (S', N, N) -> (S, H, W) of volume's dtype.

    order 0 (masks): the nearest sample; order 1 (float probabilities): linear
    interpolation, clipped to the input's range as skimage does.
    """
    g = geometry_view(geometry)
    side = g.side
    if order == 0:
        index = nearest_indices(g.image_size, side)
        restored = tf.gather(tf.gather(volume, index, axis=1), index, axis=2)
    elif order == 1:
        restored = _resize_slices(tf.cast(volume, tf.float64)[..., None], linear_resize_matrix(g.image_size, side))
        restored = _clip_like_skimage(tf.cast(restored[..., 0], volume.dtype), volume)
    else:
        raise ValueError(f"order must be 0 (masks) or 1 (probabilities), got {order}")
    restored = restored[:, g.pad_y[0]:side - g.pad_y[1], g.pad_x[0]:side - g.pad_x[1]]
    return tf.pad(restored, [[g.z0, g.num_slices - g.z1], [g.y0, g.height - g.y1], [g.x0, g.width - g.x1]])


def geometry_view(geometry) -> Geometry:
    """The flat (14,) int32 geometry as a Geometry whose fields are scalar tensors (its reading inside a graph)."""
    v = tf.unstack(tf.convert_to_tensor(geometry, tf.int32), num=GEOMETRY_LENGTH)
    return Geometry(*v[:9], pad_y=(v[9], v[10]), pad_x=(v[11], v[12]), image_size=v[13])


def normalize_graph(volume):
    """Step 5 on float64 (S, N, N, C): 10th..99th percentile rescale to [0, 1] (skimage's
    ``rescale_intensity``), then each channel standardized over the volume; NaN in a channel
    that does not vary."""
    low, high = tf.unstack(percentiles(tf.reshape(volume, [-1]), PERCENTILES))
    clipped = tf.clip_by_value(volume, low, high)
    # rescale_intensity leaves a volume whose two percentiles are equal clipped instead of dividing by zero
    scaled = tf.where(high > low, (clipped - low) / tf.where(high > low, high - low, 1.0),
                      tf.clip_by_value(clipped, 0.0, 1.0))
    mean = tf.reduce_mean(scaled, axis=(0, 1, 2))
    std = tf.sqrt(tf.reduce_mean(tf.square(scaled - mean), axis=(0, 1, 2)))
    # A channel without variation has no standard deviation, only rounding (numpy would give NaN or ±1):
    # make it NaN, which preprocess_volume and segment_volume reject.
    constant = tf.equal(tf.reduce_max(scaled, axis=(0, 1, 2)), tf.reduce_min(scaled, axis=(0, 1, 2)))
    return (scaled - mean) / tf.where(constant, tf.constant(math.nan, tf.float64), std)


def percentiles(values, qs):
    """``np.percentile(values, qs)`` (method "linear") of a 1-D float64 tensor, float64 (len(qs),):
    numpy's lerp between the two order statistics around each position (n - 1)·q/100."""
    n = tf.shape(values, out_type=tf.int64)[0]
    positions = tf.cast(n - 1, tf.float64) * tf.constant([q / 100.0 for q in qs], tf.float64)
    below = tf.cast(tf.floor(positions), tf.int64)
    above = tf.minimum(below + 1, n - 1)
    a, b = tf.split(order_statistics(values, tf.concat([below, above], 0)), 2)
    t = positions - tf.cast(below, tf.float64)
    # numpy's _lerp: interpolate from the nearer end so that t=1 gives b exactly
    return tf.where(t >= 0.5, b - (b - a) * (1.0 - t), a + (b - a) * t)


BUCKET_BITS = 20  # 2**20 counters (8 MiB); 256 buckets per power of two


def order_statistics(values, ranks):
    """``np.sort(values)[ranks]`` without sorting every value: 1-D float64 values, int64 (R,) ranks -> float64 (R,).

    One counting pass over all values finds the bucket that holds each rank; only the
    values of those buckets are sorted. A value's bucket is the top 20 bits of its
    IEEE-754 bit pattern, flipped so that the patterns order like the values (negatives:
    every bit; the rest: the sign bit). On a 256-px volume (3.5 million values) this is
    several times faster than ``tf.sort`` of them all.
    """
    bits = tf.bitcast(values, tf.int64)
    keys = tf.where(bits < 0, tf.bitwise.invert(bits), tf.bitwise.bitwise_xor(bits, tf.constant(-2**63, tf.int64)))
    bucket = tf.cast(tf.bitwise.bitwise_and(tf.bitwise.right_shift(keys, 64 - BUCKET_BITS), (1 << BUCKET_BITS) - 1),
                     tf.int32)
    below = tf.cumsum(tf.math.bincount(bucket, minlength=1 << BUCKET_BITS, dtype=tf.int64), exclusive=True)
    # the last bucket with at most `rank` values below it holds that rank (it is never an empty one)
    chosen = tf.cast(tf.searchsorted(below, ranks, side="right") - 1, tf.int32)
    within = ranks - tf.gather(below, chosen)
    in_chosen = tf.reduce_any(tf.equal(bucket[:, None], chosen[None, :]), axis=1)
    values, bucket = tf.boolean_mask(values, in_chosen), tf.boolean_mask(bucket, in_chosen)
    return tf.stack([tf.sort(tf.boolean_mask(values, tf.equal(bucket, chosen[r])))[within[r]]
                     for r in range(ranks.shape[0])])


# Quadratic B-spline interpolation (scipy.ndimage, order 2): prefilter pole and the gain of its
# infinite-domain inverse filter h[k] = GAIN * POLE**|k| (scipy pads 12 zeros first, so the
# boundary handling of its recursive filter changes the result by < POLE**12 ~ 1e-9).
SPLINE2_POLE = math.sqrt(8.0) - 3.0
SPLINE2_GAIN = 8.0 / (6.0 + 2.0 * SPLINE2_POLE)


def _resize_slices(volume, matrix):
    """Resize both in-plane axes of float64 (S, n, n, C) with a (N, n) matrix -> (S, N, N, C).

    Two products in a fixed order: for an einsum of all three operands TensorFlow picks the
    order from the static shapes, which are unknown inside segment_volume's graph, and the
    order changes the rounding (evaluation and serving must agree exactly).
    """
    rows = tf.einsum("ik,zklc->zilc", matrix, volume)
    return tf.einsum("zilc,jl->zijc", rows, matrix)


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


def nearest_indices(size_in, size_out):
    """Input index of every output pixel of an order-0 resize along one axis, int32 (size_out,).

    scipy takes ``floor(t + 0.5)`` of the grid coordinate t (halves round up); every
    index lies inside the input, so the constant mode never applies.
    """
    index = tf.cast(tf.floor(_grid_coordinates(size_in, size_out) + 0.5), tf.int32)
    return tf.clip_by_value(index, 0, tf.cast(size_in, tf.int32) - 1)


def _square_padding(rows, cols):
    """(pad_y, pad_x), int32 (2,) each, that make a rows×cols crop square: floor before, ceil after."""
    diff = tf.abs(rows - cols)
    pad = tf.stack([diff // 2, (diff + 1) // 2])
    none = tf.zeros(2, tf.int32)
    return tf.where(cols > rows, pad, none), tf.where(rows > cols, pad, none)


def _clip_like_skimage(output, source):
    """skimage.transform's ``_clip_warp_output``: clip to the input's range, widened to cval=0 if it was used."""
    low, high = tf.reduce_min(source), tf.reduce_max(source)
    zero = tf.zeros([], output.dtype)
    widen = tf.logical_and(tf.logical_not((low <= zero) & (zero <= high)),
                           (tf.reduce_min(output) <= zero) & (zero <= tf.reduce_max(output)))
    low = tf.where(widen, tf.minimum(low, zero), low)
    high = tf.where(widen, tf.maximum(high, zero), high)
    return tf.clip_by_value(output, low, high)


def nonzero_range(flags):
    """[first, last + 1) of the True entries of a 1-D bool tensor with at least one True, int32 scalars."""
    index = tf.cast(tf.where(flags)[:, 0], tf.int32)
    return index[0], index[-1] + 1
