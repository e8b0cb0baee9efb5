"""Specification of tfseg.data.preprocess: PROTOCOL.md's five steps and their inverse."""
import numpy as np
import pytest
import tifffile
from skimage.exposure import rescale_intensity
from skimage.transform import resize

from tfseg.data.kaggle import read_kaggle_folder, scan_folder
from tfseg.data.preprocess import GEOMETRY_LENGTH, Geometry, invert_volume, preprocess_volume


def reference_preprocessing(folder, image_size):
    """PROTOCOL.md's steps 1-5 written out with tifffile, numpy and scikit-image, as Buda et al. do them.

    Returns image (S', N, N, 3) float64 and mask (S', N, N) uint8 0/1.
    """
    n = len(list(folder.glob("*_mask.tif")))
    # 1. stack in numeric order, drop the first and the last slice
    image = np.stack([tifffile.imread(folder / f"{folder.name}_{k}.tif") for k in range(1, n + 1)])[1:-1]
    mask = np.stack([tifffile.imread(folder / f"{folder.name}_{k}_mask.tif") for k in range(1, n + 1)])[1:-1]
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
    # 4. resize (the reference resizes the whole volume at once, keeping its depth)
    depth = image.shape[0]
    image = resize(image, (depth, image_size, image_size, 3), order=2, mode="constant", cval=0,
                   anti_aliasing=False)
    mask = resize(mask, (depth, image_size, image_size), order=0, mode="constant", cval=0,
                  anti_aliasing=False)
    mask = (mask > 0).astype(np.uint8)
    # 5. percentile rescale, then per-channel standardization
    p10, p99 = np.percentile(image, 10), np.percentile(image, 99)
    image = rescale_intensity(image, in_range=(p10, p99))
    image = (image - np.mean(image, axis=(0, 1, 2))) / np.std(image, axis=(0, 1, 2))
    return image, mask


def dsc(a, b):
    a, b = a > 0, b > 0
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def phantom_volume(phantom_dir):
    return read_kaggle_folder(phantom_dir, [scan_folder(phantom_dir)[0].patient])[0]


@pytest.fixture(scope="module")
def phantom_at_64(phantom_volume):
    """preprocess_volume(phantom patient, image_size=64): (image, mask, geometry)."""
    return preprocess_volume(phantom_volume.image, phantom_volume.mask, image_size=64)


@pytest.mark.parametrize("index", [0, 1])
def test_preprocess_volume_equals_the_reference_steps_on_real_patients(real_data_dir, index):
    files = scan_folder(real_data_dir)[index]
    volume = read_kaggle_folder(real_data_dir, [files.patient])[0]
    image, mask, geometry = preprocess_volume(volume.image, volume.mask, image_size=128)
    want_image, want_mask = reference_preprocessing(files.folder, 128)
    assert image.dtype == np.float32 and mask.dtype == np.uint8
    assert image.shape == want_image.shape and mask.shape == want_mask.shape
    np.testing.assert_allclose(image, want_image.astype(np.float32), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(mask, want_mask)
    assert geometry.z1 - geometry.z0 == image.shape[0]


def test_output_shapes_dtypes_and_standardized_channels(phantom_at_64):
    image, mask, geometry = phantom_at_64
    depth = geometry.z1 - geometry.z0
    assert image.shape == (depth, 64, 64, 3) and image.dtype == np.float32
    assert mask.shape == (depth, 64, 64) and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 1}
    np.testing.assert_allclose(image.mean(axis=(0, 1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(image.std(axis=(0, 1, 2)), 1, atol=1e-4)


def test_first_and_last_slices_are_dropped(phantom_at_64):
    _, _, geometry = phantom_at_64
    assert geometry.num_slices == 12
    assert 1 <= geometry.z0 < geometry.z1 <= 11


def test_inverse_returns_the_mask_exactly_when_the_image_size_covers_the_padded_crop(phantom_volume):
    image, mask, g = preprocess_volume(phantom_volume.image, phantom_volume.mask, image_size=256)
    assert g.side < 256, "the phantom's crop must be smaller than 256 for this test to mean something"
    assert (g.y1 - g.y0, g.x1 - g.x0) != (256, 256)
    back = invert_volume(mask, g, order=0)
    assert back.shape == (12, 256, 256) and back.dtype == mask.dtype
    box = (slice(g.z0, g.z1), slice(g.y0, g.y1), slice(g.x0, g.x1))
    np.testing.assert_array_equal(back[box], phantom_volume.mask[box])
    outside = back.copy()
    outside[box] = 0
    assert not outside.any()
    assert not back[0].any() and not back[-1].any()


def test_inverse_round_trip_at_128_px_keeps_dsc_above_0_9(phantom_volume):
    _, mask, geometry = preprocess_volume(phantom_volume.image, phantom_volume.mask, image_size=128)
    back = invert_volume(mask, geometry, order=0)
    assert phantom_volume.mask.any()
    assert dsc(back, phantom_volume.mask) > 0.9


def test_inverse_of_probabilities_with_order_1_keeps_their_dtype_and_range(phantom_volume, phantom_at_64):
    _, mask, geometry = phantom_at_64
    probs = mask.astype(np.float32) * 0.8 + 0.1
    back = invert_volume(probs, geometry, order=1)
    assert back.dtype == np.float32 and back.shape == (12, 256, 256)
    assert back.min() >= 0.0 and back.max() <= 0.9 + 1e-6
    assert dsc(back > 0.5, phantom_volume.mask) > 0.8


def test_inverse_rejects_a_volume_that_does_not_match_its_geometry(phantom_volume, phantom_at_64):
    _, mask, geometry = phantom_at_64
    with pytest.raises(ValueError, match="does not match its geometry"):
        invert_volume(mask[:, :32, :32], geometry)


def test_geometry_round_trips_through_its_flat_list(phantom_at_64):
    _, _, geometry = phantom_at_64
    values = geometry.to_list()
    assert len(values) == GEOMETRY_LENGTH and all(isinstance(v, int) for v in values)
    assert Geometry.from_list(values) == geometry
    assert Geometry.from_list(np.array(values, np.int64)) == geometry


def test_a_wide_crop_is_padded_with_rows_floor_before_and_ceil_after():
    rng = np.random.default_rng(0)
    image = rng.integers(50, 256, size=(5, 40, 61, 3), dtype=np.uint8)  # no voxel below 10%: crop = all
    _, _, geometry = preprocess_volume(image, np.zeros(image.shape[:3], np.uint8), image_size=32)
    assert (geometry.y0, geometry.y1, geometry.x0, geometry.x1) == (0, 40, 0, 61)
    assert (geometry.pad_y, geometry.pad_x) == ((10, 11), (0, 0))
    assert geometry.side == 61


def test_a_volume_with_fewer_than_three_slices_is_rejected():
    image = np.full((2, 16, 16, 3), 100, np.uint8)
    with pytest.raises(ValueError, match="at least 3 slices"):
        preprocess_volume(image, np.zeros((2, 16, 16), np.uint8), image_size=16)
