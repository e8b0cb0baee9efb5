"""tfseg.data.nifti: NIfTI scans read in kaggle_3m's slice layout, masks written back on the input's grid."""
import nibabel
import numpy as np
import pytest

from tfseg.data import nifti


def save(path, data, affine=None, codes=None):
    """``data`` as a NIfTI file; ``codes``: (sform_code, qform_code) when not nibabel's own."""
    affine = np.eye(4) if affine is None else affine
    image = nibabel.Nifti1Image(np.asarray(data), affine)
    if codes is not None:
        image.set_sform(affine, code=codes[0])
        image.set_qform(affine, code=codes[1])
    nibabel.save(image, path)
    return path


def oriented(ras: np.ndarray, permutation, flips, zooms=(0.9, 0.8, 3.0)):
    """(data, affine) storing the canonical (X, Y, Z, ...) volume ``ras`` with its axes permuted and flipped."""
    data = ras
    for axis in range(3):
        if flips[axis]:
            data = np.flip(data, axis)
    data = np.transpose(data, tuple(permutation) + tuple(range(3, ras.ndim)))
    affine = np.zeros((4, 4))
    affine[3, 3] = 1
    for stored_axis, world_axis in enumerate(permutation):
        sign = -1.0 if flips[world_axis] else 1.0
        affine[world_axis, stored_axis] = sign * zooms[world_axis]
        if flips[world_axis]:
            affine[world_axis, 3] = (ras.shape[world_axis] - 1) * zooms[world_axis]
    return np.ascontiguousarray(data), affine


def test_intensities_map_the_nonzero_percentile_window_to_0_255_and_keep_zeros_zero():
    volume = np.zeros((4, 5, 6), np.float32)
    volume[1:3, 1:4, 1:5] = np.linspace(100.0, 1100.0, 24).reshape(2, 3, 4)
    out = nifti.intensity_to_uint8(volume)
    assert out.dtype == np.uint8 and out.shape == volume.shape
    assert (out[volume == 0] == 0).all()
    low, high = np.percentile(volume[volume != 0], [0.5, 99.5])
    inside = volume[1:3, 1:4, 1:5]
    expected = np.rint(np.clip((inside - low) / (high - low), 0, 1) * 255)
    assert np.array_equal(out[1:3, 1:4, 1:5], expected.astype(np.uint8))
    assert out.max() == 255 and out[volume != 0].min() == 0


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.float64, np.uint8])
def test_every_dtype_maps_alike(dtype):
    volume = np.arange(60, dtype=np.float64).reshape(3, 4, 5) * 3  # fits every dtype
    assert np.array_equal(nifti.intensity_to_uint8(volume.astype(dtype)), nifti.intensity_to_uint8(volume))


def test_non_finite_voxels_become_background():
    volume = np.arange(27, dtype=np.float32).reshape(3, 3, 3) + 1
    volume[0, 0, 0] = np.nan
    volume[0, 0, 1] = np.inf
    out = nifti.intensity_to_uint8(volume)
    assert out[0, 0, 0] == 0 and out[0, 0, 1] == 0


@pytest.mark.parametrize("permutation,flips", [((0, 1, 2), (False, False, False)),
                                               ((1, 0, 2), (True, False, False)),
                                               ((2, 0, 1), (True, True, False)),
                                               ((0, 2, 1), (False, True, True))])
def test_any_axis_order_reads_as_the_same_slices_and_writes_back_onto_its_own_grid(tmp_path, permutation, flips):
    rng = np.random.default_rng(0)
    ras = rng.integers(1, 1000, size=(7, 6, 5, 3)).astype(np.int16)  # X, Y, Z, sequence
    data, affine = oriented(ras, permutation, flips)
    path = save(tmp_path / "scan.nii.gz", data, affine)
    scan = nifti.read_4d(path)
    # kaggle_3m's layout: slice z, rows anterior -> posterior (y falling), columns right -> left (x falling)
    expected = np.stack([nifti.intensity_to_uint8(ras[..., c]) for c in range(3)], -1)
    assert np.array_equal(scan.image, np.transpose(expected[::-1, ::-1], (2, 1, 0, 3)))
    assert scan.spacing_mm == pytest.approx((3.0, 0.8, 0.9))
    mask = scan.image[..., 1] > 128
    written = nibabel.load(nifti.write_like(tmp_path / "mask.nii.gz", mask, scan, np.uint8))
    stored = np.asanyarray(written.dataobj)
    assert stored.dtype == np.uint8 and stored.shape == data.shape[:3]
    assert np.array_equal(written.affine, nibabel.load(path).affine)
    assert np.array_equal(stored.astype(bool), nifti.intensity_to_uint8(data[..., 1]) > 128)


def test_a_mask_written_from_a_4d_input_is_3d_with_the_input_affine_and_codes(tmp_path):
    data = np.random.default_rng(1).integers(1, 500, size=(6, 5, 4, 3)).astype(np.int16)
    affine = np.diag([-1.2, 1.1, 2.5, 1.0])
    image = nibabel.Nifti1Image(data, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_xyzt_units("mm")
    nibabel.save(image, tmp_path / "scan.nii")
    scan = nifti.read_4d(tmp_path / "scan.nii")
    written = nibabel.load(nifti.write_like(tmp_path / "mask.nii.gz", scan.image[..., 0] > 0, scan, np.uint8))
    assert written.shape == (6, 5, 4)
    assert np.allclose(written.affine, image.affine)
    assert int(written.header["qform_code"]) == 1 and int(written.header["sform_code"]) == 2
    assert written.header.get_xyzt_units()[0] == "mm"
    assert scan.voxel_ml == pytest.approx(1.2 * 1.1 * 2.5 / 1000)


def test_flair_alone_stands_in_for_the_missing_sequences(tmp_path):
    flair = np.random.default_rng(2).integers(1, 500, size=(6, 5, 4)).astype(np.float32)
    scan = nifti.read_sequences(save(tmp_path / "flair.nii.gz", flair))
    assert scan.substituted == ["pre-contrast", "post-contrast"]
    assert np.array_equal(scan.image[..., 0], scan.image[..., 1])
    assert np.array_equal(scan.image[..., 2], scan.image[..., 1])


def test_sequences_on_different_grids_are_an_error_naming_the_file(tmp_path):
    flair = save(tmp_path / "flair.nii.gz", np.ones((6, 5, 4), np.float32))
    pre = save(tmp_path / "pre.nii.gz", np.ones((6, 5, 3), np.float32))
    with pytest.raises(nifti.NiftiError, match=r"pre.nii.gz \(pre-contrast\) does not lie on the FLAIR's voxel grid"):
        nifti.read_sequences(flair, pre=pre)


def test_an_unknown_orientation_is_an_error_saying_how_to_set_it(tmp_path):
    path = save(tmp_path / "scan.nii.gz", np.ones((6, 5, 4, 3), np.float32), codes=(0, 0))
    with pytest.raises(nifti.NiftiError, match="orientation is unknown .* set the file's orientation"):
        nifti.read_4d(path)


def test_an_oblique_axis_at_45_degrees_is_ambiguous(tmp_path):
    c = np.sqrt(0.5)
    affine = np.array([[c, -c, 0, 0], [c, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    path = save(tmp_path / "scan.nii.gz", np.ones((6, 5, 4, 3), np.float32), affine)
    with pytest.raises(nifti.NiftiError, match="orientation is ambiguous.*resample"):
        nifti.read_4d(path)


def test_probabilities_are_written_as_16_bit_steps_that_readers_scale_back(tmp_path):
    from nibabel.spatialimages import HeaderDataError

    with pytest.raises(HeaderDataError):  # why not float16: NIfTI (and nibabel) has no such data type
        nibabel.Nifti1Header().set_data_dtype(np.float16)
    ras = np.random.default_rng(3).integers(1, 1000, size=(7, 6, 5, 3)).astype(np.int16)
    data, affine = oriented(ras, (2, 0, 1), (True, False, True))
    scan = nifti.read_4d(save(tmp_path / "scan.nii.gz", data, affine))
    probabilities = np.random.default_rng(4).random(scan.image.shape[:3]).astype(np.float32)
    probabilities[0, 0, :3] = (0.0, 1.0, 1.5)  # the ends exactly, and a value beyond them clipped
    written = nibabel.load(nifti.write_probabilities_like(tmp_path / "p.nii.gz", probabilities, scan))
    assert written.get_data_dtype() == np.uint16 and int(written.header["bitpix"]) == 16
    assert written.dataobj.slope == pytest.approx(1 / nifti.PROBABILITY_STEPS, rel=1e-6) and written.dataobj.inter == 0
    assert written.shape == data.shape[:3] and np.array_equal(written.affine, nibabel.load(tmp_path / "scan.nii.gz").affine)
    expected = nifti.to_input_grid(np.clip(probabilities, 0, 1), scan)
    values = written.get_fdata()
    assert np.abs(values - expected).max() <= 0.5 / nifti.PROBABILITY_STEPS + 1e-7  # one rounding step at most
    assert values.min() == 0.0 and 1 - 1e-6 < values.max() <= 1.0
