"""Specification of tfseg.data.kaggle: reading and checking a kaggle_3m folder.

Every broken input is a copy of one phantom patient with one file broken; the
error must be a DataError that names the file (or folder) and the problem.
"""
import re
import shutil

import numpy as np
import pytest
import tifffile

from tfseg.data.kaggle import DataError, read_kaggle_folder, scan_folder


def first_patient(root):
    return sorted(p for p in root.iterdir() if p.is_dir())[0]


@pytest.fixture
def one_patient(phantom_dir, tmp_path):
    """(root, patient folder) of a kaggle_3m copy holding the first phantom patient."""
    src = first_patient(phantom_dir)
    root = tmp_path / "kaggle_3m"
    shutil.copytree(src, root / src.name)
    return root, root / src.name


def slice_path(folder, n, mask=False):
    return folder / f"{folder.name}_{n}{'_mask' if mask else ''}.tif"


def assert_data_error(root, *fragments):
    """Reading ``root`` raises a DataError whose message contains every fragment."""
    with pytest.raises(DataError) as info:
        read_kaggle_folder(root)
    message = str(info.value)
    for fragment in fragments:
        assert str(fragment) in message, message
    return message


def test_slices_are_ordered_numerically_so_10_follows_9(phantom_dir):
    files = scan_folder(phantom_dir)[0]
    numbers = [int(re.search(r"_(\d+)\.tif$", p.name)[1]) for p in files.images]
    assert numbers == list(range(1, 13))
    assert [p.name.replace("_mask", "") for p in files.masks] == [p.name for p in files.images]


def test_volume_stacks_the_tiff_slices_in_numeric_order_with_masks_as_0_1(phantom_dir):
    folder = first_patient(phantom_dir)
    volume = read_kaggle_folder(phantom_dir, [folder.name])[0]
    assert volume.patient == folder.name
    assert volume.image.shape == (12, 256, 256, 3) and volume.image.dtype == np.uint8
    assert volume.mask.shape == (12, 256, 256) and volume.mask.dtype == np.uint8
    np.testing.assert_array_equal(volume.image[9], tifffile.imread(slice_path(folder, 10)))
    np.testing.assert_array_equal(volume.mask[9], tifffile.imread(slice_path(folder, 10, mask=True)) // 255)
    assert set(np.unique(volume.mask)) == {0, 1}


def test_readme_data_csv_and_ds_store_are_ignored(one_patient):
    root, folder = one_patient
    for junk in (root / "README.md", root / "data.csv", root / ".DS_Store", folder / ".DS_Store"):
        junk.write_bytes(b"\x00not a slice\n")
    scanned = scan_folder(root)
    assert [p.patient for p in scanned] == [folder.name]
    assert len(scanned[0].images) == len(scanned[0].masks) == 12
    assert read_kaggle_folder(root)[0].image.shape[0] == 12


def test_patients_are_listed_in_sorted_order(phantom_dir):
    names = [p.patient for p in scan_folder(phantom_dir)]
    assert names == sorted(names) and len(names) == 4


def test_masks_saved_as_0_1_read_like_masks_saved_as_0_255(one_patient):
    root, folder = one_patient
    before = read_kaggle_folder(root)[0].mask
    for n in range(1, 13):
        path = slice_path(folder, n, mask=True)
        tifffile.imwrite(path, tifffile.imread(path) // 255)
    np.testing.assert_array_equal(read_kaggle_folder(root)[0].mask, before)


def test_image_without_its_mask_is_an_error_naming_the_image(one_patient):
    root, folder = one_patient
    slice_path(folder, 5, mask=True).unlink()
    assert_data_error(root, slice_path(folder, 5).name, "image without its mask")


def test_mask_without_its_image_is_an_error_naming_the_mask(one_patient):
    root, folder = one_patient
    slice_path(folder, 5).unlink()
    assert_data_error(root, slice_path(folder, 5, mask=True).name, "mask without its image")


def test_gap_in_slice_numbers_is_an_error_naming_the_missing_slice(one_patient):
    root, folder = one_patient
    slice_path(folder, 5).unlink()
    slice_path(folder, 5, mask=True).unlink()
    assert_data_error(root, folder.name, "gap", "[5]")


def test_file_that_is_not_a_readable_tiff_is_an_error_naming_it(one_patient):
    root, folder = one_patient
    slice_path(folder, 3).write_bytes(b"this is not a TIFF file" * 100)
    assert_data_error(root, slice_path(folder, 3).name, "not a readable TIFF")


def test_image_of_the_wrong_shape_is_an_error_naming_it(one_patient):
    root, folder = one_patient
    tifffile.imwrite(slice_path(folder, 3), np.zeros((128, 128, 3), np.uint8), photometric="rgb")
    assert_data_error(root, slice_path(folder, 3).name, "(128, 128, 3)", "expected (256, 256, 3) uint8")


def test_image_of_the_wrong_dtype_is_an_error_naming_it(one_patient):
    root, folder = one_patient
    tifffile.imwrite(slice_path(folder, 3), np.zeros((256, 256, 3), np.uint16), photometric="rgb")
    assert_data_error(root, slice_path(folder, 3).name, "uint16", "expected (256, 256, 3) uint8")


def test_mask_of_the_wrong_shape_is_an_error_naming_it(one_patient):
    root, folder = one_patient
    tifffile.imwrite(slice_path(folder, 3, mask=True), np.zeros((256, 128), np.uint8))
    assert_data_error(root, slice_path(folder, 3, mask=True).name, "(256, 128)", "expected (256, 256) uint8")


def test_mask_with_values_other_than_0_255_or_0_1_is_an_error_naming_it(one_patient):
    root, folder = one_patient
    mask = np.zeros((256, 256), np.uint8)
    mask[:10, :10], mask[20:30, 20:30] = 255, 128
    tifffile.imwrite(slice_path(folder, 3, mask=True), mask)
    assert_data_error(root, slice_path(folder, 3, mask=True).name, "not binary", "128")


def test_mask_mixing_1_and_255_is_an_error(one_patient):
    root, folder = one_patient
    mask = np.zeros((256, 256), np.uint8)
    mask[:10, :10], mask[20:30, 20:30] = 255, 1
    tifffile.imwrite(slice_path(folder, 3, mask=True), mask)
    assert_data_error(root, slice_path(folder, 3, mask=True).name, "not binary")


def test_empty_patient_folder_is_an_error_naming_it(one_patient):
    root, _ = one_patient
    (root / "TCGA_XX_0000_20000101").mkdir()
    assert_data_error(root, "TCGA_XX_0000_20000101", "holds no slices")


def test_missing_data_folder_error_tells_how_to_download_the_kaggle_set(tmp_path):
    message = assert_data_error(tmp_path / "kaggle_3m", "kaggle_3m", "does not exist")
    assert "mateuszbuda/lgg-mri-segmentation" in message


def test_folder_without_patient_folders_is_an_error(tmp_path):
    root = tmp_path / "kaggle_3m"
    root.mkdir()
    (root / "README.md").write_text("not a patient\n")
    (root / "data.csv").write_text("Patient\n")
    assert_data_error(root, str(root), "no patient folders", "mateuszbuda/lgg-mri-segmentation")


def test_layout_problems_are_reported_before_any_pixel_is_read(phantom_dir, tmp_path):
    root = tmp_path / "kaggle_3m"
    shutil.copytree(phantom_dir, root)
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    slice_path(folders[0], 2).write_bytes(b"garbage")      # found only when pixels are read
    slice_path(folders[-1], 7, mask=True).unlink()         # found from the names alone
    assert_data_error(root, slice_path(folders[-1], 7).name, "image without its mask")


def test_unknown_patient_name_is_an_error(phantom_dir):
    with pytest.raises(DataError, match="unknown patients.*TCGA_NO_SUCH"):
        read_kaggle_folder(phantom_dir, ["TCGA_NO_SUCH_PATIENT"])


def test_a_patient_named_twice_is_an_error(phantom_dir):
    first = sorted(p.name for p in phantom_dir.iterdir() if p.is_dir())[0]
    with pytest.raises(DataError, match=f"more than once: \\['{first}'\\]"):
        read_kaggle_folder(phantom_dir, [first, first])


def test_the_kaggle_archive_root_is_refused_naming_the_kaggle_3m_folder_to_pass(phantom_dir, tmp_path):
    archive = tmp_path / "archive"  # the download: kaggle_3m/ and lgg-mri-segmentation/kaggle_3m/
    shutil.copytree(phantom_dir, archive / "kaggle_3m")
    shutil.copytree(phantom_dir, archive / "lgg-mri-segmentation" / "kaggle_3m")
    with pytest.raises(DataError, match=f"is the downloaded Kaggle archive.*pass --data {archive / 'kaggle_3m'} "
                                        r"\(the archive holds kaggle_3m 2 times"):
        scan_folder(archive)
    assert len(scan_folder(archive / "kaggle_3m")) == len(scan_folder(phantom_dir))
