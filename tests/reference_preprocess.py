"""docs/protocol.md's preprocessing and its inverse with numpy and scikit-image, as Buda et al.'s ``utils.py`` does it.

Not part of tfseg: this is the reference that tfseg.data.preprocess (TensorFlow, the one
implementation) is checked against in tests/test_preprocess.py. It differs from the reference
program only where today's scikit-image would break it: an order-0 resize keeps uint8 0/255
masks (0.14 returned floats 0/1), so masks are compared as ``> 0``.
"""
import numpy as np
from skimage.exposure import rescale_intensity
from skimage.transform import resize

from tfseg.data.protocol import Geometry


def reference_preprocess(image: np.ndarray, mask: np.ndarray, image_size: int):
    """Steps 1-5: image (S, H, W, C) uint8, mask (S, H, W) -> image (S', N, N, C) float64,
    mask (S', N, N) uint8 0/1 and the Geometry of steps 1-4."""
    num_slices, height, width = image.shape[:3]
    # 1. drop the first and the last slice
    image, mask = image[1:-1].copy(), mask[1:-1]
    # 2. zero voxels below 10% of the maximum, crop to the box of non-zero voxels
    image[image < np.max(image) * 0.1] = 0
    z = np.flatnonzero(image.max(axis=(1, 2, 3)))
    y = np.flatnonzero(image.max(axis=(0, 2, 3)))
    x = np.flatnonzero(image.max(axis=(0, 1, 3)))
    box = (slice(z[0], z[-1] + 1), slice(y[0], y[-1] + 1), slice(x[0], x[-1] + 1))
    image, mask = image[box], mask[box]
    # 3. pad to a square: floor before, ceil after
    rows, cols = image.shape[1:3]
    diff = abs(rows - cols) / 2.0
    pad = (int(np.floor(diff)), int(np.ceil(diff)))
    pad_y, pad_x = ((0, 0), pad) if rows > cols else ((pad, (0, 0)) if cols > rows else ((0, 0), (0, 0)))
    image = np.pad(image, ((0, 0), pad_y, pad_x, (0, 0)), mode="constant", constant_values=0)
    mask = np.pad(mask, ((0, 0), pad_y, pad_x), mode="constant", constant_values=0)
    # 4. resize (the whole volume at once, keeping its depth and channels)
    depth, channels = image.shape[0], image.shape[3]
    image = resize(image, (depth, image_size, image_size, channels), order=2, mode="constant", cval=0,
                   anti_aliasing=False)
    mask = resize(mask, (depth, image_size, image_size), order=0, mode="constant", cval=0, anti_aliasing=False)
    mask = (mask > 0).astype(np.uint8)
    # 5. percentile rescale, then per-channel standardization
    p10, p99 = np.percentile(image, 10), np.percentile(image, 99)
    image = rescale_intensity(image, in_range=(p10, p99))
    image = (image - np.mean(image, axis=(0, 1, 2))) / np.std(image, axis=(0, 1, 2))
    geometry = Geometry(num_slices, height, width, int(z[0]) + 1, int(z[-1]) + 2, int(y[0]), int(y[-1]) + 1,
                        int(x[0]), int(x[-1]) + 1, pad_y, pad_x, image_size)
    return image, mask, geometry


def reference_invert(volume: np.ndarray, geometry: Geometry, order: int) -> np.ndarray:
    """Undo steps 4, 3, 2 and 1: (S', N, N) -> (S, H, W) of volume's dtype, zero outside the crop and on the
    dropped slices. ``order``: 0 (masks) or 1 (probabilities) of the inverse resize."""
    g = geometry
    side = g.side
    restored = resize(volume, (volume.shape[0], side, side), order=order, mode="constant", cval=0,
                      anti_aliasing=False, preserve_range=True)
    restored = restored[:, g.pad_y[0]:side - g.pad_y[1], g.pad_x[0]:side - g.pad_x[1]]
    out = np.zeros((g.num_slices, g.height, g.width), dtype=volume.dtype)
    out[g.z0:g.z1, g.y0:g.y1, g.x0:g.x1] = restored.astype(volume.dtype)
    return out
