"""Specification of tfseg.data.preprocess: docs/protocol.md's five steps and their inverse, in TensorFlow.

The reference is tests/reference_preprocess.py (numpy and scikit-image, as Buda et al. do it):
the TensorFlow implementation must give its geometry and masks exactly and its float32 image
to within one unit in the last place, on the phantom and on real patients at 128 and 256 px.
"""
import numpy as np
import pytest
import tensorflow as tf
from reference_preprocess import reference_invert, reference_preprocess
from skimage.transform import resize

from tfseg.data import preprocess
from tfseg.data.kaggle import read_kaggle_folder, read_patient, scan_folder
from tfseg.data.preprocess import invert_volume, preprocess_volume
from tfseg.data.protocol import GEOMETRY_LENGTH, Geometry


def dsc(a, b):
    a, b = a > 0, b > 0
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def check_against_the_reference(volume, image_size):
    image, mask, geometry = preprocess_volume(volume.image, volume.mask, image_size)
    want_image, want_mask, want_geometry = reference_preprocess(volume.image, volume.mask, image_size)
    assert geometry == want_geometry
    assert image.dtype == np.float32 and mask.dtype == np.uint8
    np.testing.assert_array_max_ulp(image, want_image.astype(np.float32), maxulp=1)
    np.testing.assert_array_equal(mask, want_mask)
    probabilities = np.random.default_rng(0).random(mask.shape, dtype=np.float32)
    np.testing.assert_array_equal(invert_volume(mask, geometry, order=0), reference_invert(mask, geometry, 0))
    np.testing.assert_array_max_ulp(invert_volume(probabilities, geometry, order=1),
                                    reference_invert(probabilities, geometry, 1), maxulp=1)


@pytest.fixture(scope="module")
def phantom_volume(phantom_dir):
    return read_kaggle_folder(phantom_dir, [scan_folder(phantom_dir)[0].patient])[0]


@pytest.fixture(scope="module")
def phantom_at_64(phantom_volume):
    """preprocess_volume(phantom patient, image_size=64): (image, mask, geometry)."""
    return preprocess_volume(phantom_volume.image, phantom_volume.mask, image_size=64)


@pytest.mark.parametrize("image_size", [128, 256])
def test_preprocessing_and_its_inverse_equal_the_reference_on_real_patients(real_data_dir, image_size):
    for files in scan_folder(real_data_dir):
        check_against_the_reference(read_patient(files), image_size)


def test_preprocessing_and_its_inverse_equal_the_reference_on_the_phantom(phantom_dir):
    for files in scan_folder(phantom_dir):
        check_against_the_reference(read_patient(files), 64)


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


def test_an_all_zero_volume_is_rejected():
    image = np.zeros((5, 16, 16, 3), np.uint8)
    image[0] = 200  # the first and last slices are dropped before the crop
    with pytest.raises(ValueError, match="all voxels zero"):
        preprocess_volume(image, np.zeros((5, 16, 16), np.uint8), image_size=16)


def test_a_volume_of_constant_intensity_is_rejected_instead_of_becoming_nan():
    image = np.full((5, 32, 32, 3), 100, np.uint8)
    with pytest.raises(ValueError, match="the image volume has constant intensity.*channel 0, 1, 2"):
        preprocess_volume(image, np.zeros((5, 32, 32), np.uint8), image_size=16)


def test_one_constant_channel_is_named_in_the_error():
    image = np.random.default_rng(0).integers(50, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    image[..., 0] = 0  # e.g. a missing pre-contrast sequence stored as zeros
    with pytest.raises(ValueError, match=r"constant intensity.*\(channel 0\)"):
        preprocess_volume(image, np.zeros((5, 32, 32), np.uint8), image_size=16)


# ----------------------------------------------------------------------------
# The graph pieces against the scikit-image and numpy operations they reproduce.
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("size_in, size_out", [(57, 64), (173, 128), (256, 128), (201, 256)])
def test_resize_matrices_reproduce_skimage_resize(size_in, size_out):
    rng = np.random.default_rng(size_in)
    image = rng.random((size_in, size_in))
    spline = preprocess.spline2_resize_matrix(size_in, size_out).numpy()
    expected = resize(image, (size_out, size_out), order=2, mode="constant", cval=0, anti_aliasing=False)
    np.testing.assert_allclose(_clip(spline @ image @ spline.T, image), expected, atol=1e-12)
    linear = preprocess.linear_resize_matrix(size_out, size_in).numpy()
    small = rng.random((size_out, size_out))
    expected = resize(small, (size_in, size_in), order=1, mode="constant", cval=0, anti_aliasing=False)
    np.testing.assert_allclose(_clip(linear @ small @ linear.T, small), expected, atol=1e-12)


def _clip(output, source):
    return preprocess._clip_like_skimage(tf.constant(output), tf.constant(source)).numpy()


@pytest.mark.parametrize("size_in, size_out", [(3, 2), (64, 96), (96, 64), (192, 128), (256, 128), (173, 256),
                                               (200, 200), (7, 256)])
def test_nearest_indices_reproduce_skimage_order_0_resize_including_halfway_samples(size_in, size_out):
    row = np.arange(size_in, dtype=np.uint16)[None, :]
    expected = resize(row, (1, size_out), order=0, mode="constant", cval=0, anti_aliasing=False,
                      preserve_range=True)[0]
    np.testing.assert_array_equal(row[0, preprocess.nearest_indices(size_in, size_out).numpy()], expected)


@pytest.mark.parametrize("values", [
    np.random.default_rng(0).random(100_001) ** 3,
    np.random.default_rng(1).normal(size=1001),
    np.round(np.random.default_rng(2).normal(size=5000), 1),  # many equal values
    np.r_[np.zeros(500), -np.zeros(3), np.random.default_rng(3).random(20) * 1e-300],  # zeros and subnormals
    np.array([0.25]),
], ids=["skewed", "normal", "ties", "zeros", "one"])
def test_percentiles_equal_numpy_exactly(values):
    quantiles = (0.0, 10.0, 37.5, 99.0, 100.0)
    got = preprocess.percentiles(tf.constant(values), quantiles).numpy()
    np.testing.assert_array_equal(got, np.percentile(values, quantiles))
