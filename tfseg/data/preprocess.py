"""The reference preprocessing of PROTOCOL.md, per patient volume, and its inverse.

Forward (Buda et al.'s ``utils.py``): drop the first and last slice, zero every
voxel below 10% of the volume maximum and crop to the box holding non-zero
voxels, pad to a square, resize every slice to ``image_size``² (image: order-2
spline, mask: order 0), then normalize the image volume (10th..99th percentile
rescale, per-channel standardization).

The :class:`Geometry` of every volume records what steps 1-4 did, so that
:func:`invert_volume` maps a prediction back onto the original 256×256 slices.
This is the only implementation: packing, evaluation and serving all call it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from skimage.exposure import rescale_intensity
from skimage.transform import resize
from skimage.util import img_as_float

# Parameters of the reference; part of the TFRecord cache key.
CROP_THRESHOLD = 0.1
PERCENTILES = (10.0, 99.0)
IMAGE_ORDER = 2
MIN_SLICES = 3


@dataclass(frozen=True)
class Geometry:
    """Where a preprocessed volume sits in its original (S, 256, 256) volume.

    The kept slices are ``z0:z1`` of the original numbering (first and last
    dropped, then cropped), rows ``y0:y1`` and columns ``x0:x1``; the crop was
    padded by ``pad_y = (before, after)`` rows and ``pad_x`` columns to the
    square ``side``, then resized to ``image_size``.
    """

    num_slices: int
    height: int
    width: int
    z0: int
    z1: int
    y0: int
    y1: int
    x0: int
    x1: int
    pad_y: tuple[int, int]
    pad_x: tuple[int, int]
    image_size: int

    @property
    def side(self) -> int:
        return self.y1 - self.y0 + sum(self.pad_y)

    def to_list(self) -> list[int]:
        """Flat int list (stored in every TFRecord example)."""
        return [self.num_slices, self.height, self.width, self.z0, self.z1, self.y0, self.y1,
                self.x0, self.x1, *self.pad_y, *self.pad_x, self.image_size]

    @classmethod
    def from_list(cls, values) -> "Geometry":
        v = [int(x) for x in values]
        return cls(*v[:9], pad_y=(v[9], v[10]), pad_x=(v[11], v[12]), image_size=v[13])

    def to_dict(self) -> dict:
        return asdict(self)


GEOMETRY_LENGTH = 14


def crop_box(image: np.ndarray, threshold: float = CROP_THRESHOLD) -> tuple[np.ndarray, tuple[slice, slice, slice]]:
    """Zero voxels below ``threshold``·max and find the box of non-zero voxels.

    image: (S, H, W, C) uint8. Returns the thresholded copy and the (z, y, x) slices.
    """
    image = image.copy()
    image[image < np.max(image) * threshold] = 0
    box = []
    for axis in range(3):
        other = tuple(a for a in range(4) if a != axis)
        nonzero = np.flatnonzero(np.max(image, axis=other))
        if nonzero.size == 0:
            raise ValueError("volume is empty (all voxels zero); it cannot be cropped")
        box.append(slice(int(nonzero[0]), int(nonzero[-1]) + 1))
    return image, tuple(box)


def square_padding(rows: int, cols: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(pad_y, pad_x) that make a rows×cols slice square: floor before, ceil after."""
    diff = abs(rows - cols) / 2.0
    pad = (int(np.floor(diff)), int(np.ceil(diff)))
    if rows > cols:
        return (0, 0), pad
    if cols > rows:
        return pad, (0, 0)
    return (0, 0), (0, 0)


def resize_image_volume(volume: np.ndarray, image_size: int) -> np.ndarray:
    """(S, H, W, C) uint8 -> (S, N, N, C) float64 in [0, 1], N = image_size.

    Equals the reference's single call ``resize(volume, (S, N, N, C), order=2,
    mode="constant", anti_aliasing=False)`` (to ~1e-15) about 40 times faster: a
    spline reproduces its samples exactly on axes whose size does not change
    (slices, channels), so each channel of each slice is resized in 2-D; the
    output is clipped once to the range of the whole volume, as that call does.
    """
    floats = img_as_float(volume)
    out = np.empty((volume.shape[0], image_size, image_size, volume.shape[3]))
    for z in range(volume.shape[0]):
        for c in range(volume.shape[3]):
            out[z, :, :, c] = resize(floats[z, :, :, c], (image_size, image_size), order=IMAGE_ORDER,
                                     mode="constant", cval=0, anti_aliasing=False, clip=False)
    return np.clip(out, floats.min(), floats.max(), out=out)


def normalize_volume(volume: np.ndarray) -> np.ndarray:
    """Percentile rescale to [0, 1], then per-channel standardization. (S, H, W, C) float."""
    low, high = np.percentile(volume, PERCENTILES)
    volume = rescale_intensity(volume, in_range=(low, high))
    mean = np.mean(volume, axis=(0, 1, 2))
    std = np.std(volume, axis=(0, 1, 2))
    return (volume - mean) / std


def preprocess_volume(image: np.ndarray, mask: np.ndarray, image_size: int = 256):
    """Apply PROTOCOL.md's five preprocessing steps to one patient.

    image: (S, H, W, 3) uint8; mask: (S, H, W) uint8 in {0, 1}.
    Returns ``(image (S', N, N, 3) float32, mask (S', N, N) uint8 in {0, 1}, Geometry)``
    with N = image_size and S' ≤ S - 2.
    """
    if image.ndim != 4 or mask.shape != image.shape[:3]:
        raise ValueError(f"expected image (S, H, W, C) and mask (S, H, W), got {image.shape} and {mask.shape}")
    if image.shape[0] < MIN_SLICES:
        raise ValueError(f"a volume needs at least {MIN_SLICES} slices (the first and last are dropped), "
                         f"got {image.shape[0]}")
    num_slices, height, width = image.shape[:3]
    thresholded, (zs, ys, xs) = crop_box(image[1:-1])
    volume = thresholded[zs, ys, xs]
    cropped_mask = mask[1:-1][zs, ys, xs]
    pad_y, pad_x = square_padding(volume.shape[1], volume.shape[2])
    volume = np.pad(volume, ((0, 0), pad_y, pad_x, (0, 0)))
    cropped_mask = np.pad(cropped_mask, ((0, 0), pad_y, pad_x))
    depth = volume.shape[0]
    volume = resize_image_volume(volume, image_size)
    # resize() keeps uint8 for order 0.
    cropped_mask = resize(cropped_mask, (depth, image_size, image_size), order=0, mode="constant",
                          cval=0, anti_aliasing=False, preserve_range=True)
    geometry = Geometry(num_slices, height, width, zs.start + 1, zs.stop + 1, ys.start, ys.stop,
                        xs.start, xs.stop, pad_y, pad_x, image_size)
    return normalize_volume(volume).astype(np.float32), (cropped_mask > 0).astype(np.uint8), geometry


def invert_volume(volume: np.ndarray, geometry: Geometry, order: int = 0) -> np.ndarray:
    """Map a preprocessed-geometry volume back onto the original slices.

    volume: (S', N, N) (probabilities or a 0/1 mask). ``order`` is the
    interpolation of the inverse resize: 0 for masks, 1 for probabilities
    (threshold afterwards). Returns (S, 256, 256) of volume's dtype, zero outside
    the crop box and on the dropped slices.
    """
    g = geometry
    depth = g.z1 - g.z0
    if volume.shape != (depth, g.image_size, g.image_size):
        raise ValueError(f"volume of shape {volume.shape} does not match its geometry "
                         f"({depth}, {g.image_size}, {g.image_size})")
    side = g.side
    restored = resize(volume, (depth, side, side), order=order, mode="constant", cval=0,
                      anti_aliasing=False, preserve_range=True)
    restored = restored[:, g.pad_y[0]:side - g.pad_y[1], g.pad_x[0]:side - g.pad_x[1]]
    out = np.zeros((g.num_slices, g.height, g.width), dtype=volume.dtype)
    out[g.z0:g.z1, g.y0:g.y1, g.x0:g.x1] = restored.astype(volume.dtype)
    return out
