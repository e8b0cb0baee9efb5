"""Specification of tfseg.data.phantom: a synthetic folder shaped like Kaggle's kaggle_3m."""
import pathlib
import re

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from tfseg.cli.phantom import main
from tfseg.data.phantom import write_phantom

N_PATIENTS, N_SLICES, SIZE = 4, 12, 256  # as written by the phantom_dir fixture in conftest.py


def patient_folders(root):
    return sorted(p for p in pathlib.Path(root).iterdir() if p.is_dir())


def read_volume(folder):
    """(S, H, W, 3) images and (S, H, W) masks of one patient, slices in numeric order."""
    n = len(list(folder.glob("*_mask.tif")))
    images = np.stack([tifffile.imread(folder / f"{folder.name}_{k}.tif") for k in range(1, n + 1)])
    masks = np.stack([tifffile.imread(folder / f"{folder.name}_{k}_mask.tif") for k in range(1, n + 1)])
    return images, masks


def test_writes_one_folder_per_patient_with_tcga_like_names_in_a_stable_order(phantom_dir):
    names = [p.name for p in patient_folders(phantom_dir)]
    assert len(names) == N_PATIENTS
    assert all(re.fullmatch(r"TCGA_PH_\d{4}_\d{8}", name) for name in names), names
    assert names[0] == "TCGA_PH_0001_20000101"
    assert [name[8:12] for name in names] == [f"{i:04d}" for i in range(1, N_PATIENTS + 1)]


def test_each_patient_has_an_image_and_a_mask_per_slice_numbered_from_one(phantom_dir):
    for folder in patient_folders(phantom_dir):
        expected = {f"{folder.name}_{k}{suffix}.tif" for k in range(1, N_SLICES + 1) for suffix in ("", "_mask")}
        assert {p.name for p in folder.iterdir()} == expected


def test_top_folder_also_holds_data_csv_and_readme_like_kaggle(phantom_dir):
    rows = (phantom_dir / "data.csv").read_text().splitlines()
    assert rows[0].startswith("Patient,")
    assert [row.split(",")[0] for row in rows[1:]] == [p.name[:12] for p in patient_folders(phantom_dir)]
    assert (phantom_dir / "README.md").is_file()


def test_files_have_the_real_sets_format(phantom_dir):
    folder = patient_folders(phantom_dir)[0]
    with tifffile.TiffFile(folder / f"{folder.name}_1.tif") as tif:
        page = tif.pages[0]
        assert (page.shape, page.dtype, page.photometric) == ((SIZE, SIZE, 3), np.uint8, tifffile.PHOTOMETRIC.RGB)
        assert page.compression == tifffile.COMPRESSION.NONE
    with tifffile.TiffFile(folder / f"{folder.name}_1_mask.tif") as tif:
        page = tif.pages[0]
        assert (page.shape, page.dtype, page.photometric) == ((SIZE, SIZE), np.uint8, tifffile.PHOTOMETRIC.MINISBLACK)


def test_files_match_a_real_slice_in_shape_dtype_and_photometric(phantom_dir, real_data_dir):
    real = patient_folders(real_data_dir)[0]
    fake = patient_folders(phantom_dir)[0]
    for suffix in ("_1.tif", "_1_mask.tif"):
        with tifffile.TiffFile(real / f"{real.name}{suffix}") as a, tifffile.TiffFile(fake / f"{fake.name}{suffix}") as b:
            pa, pb = a.pages[0], b.pages[0]
            assert (pa.shape, pa.dtype, pa.photometric, pa.compression, pa.planarconfig) == \
                   (pb.shape, pb.dtype, pb.photometric, pb.compression, pb.planarconfig)


def test_masks_hold_only_0_and_255(phantom_dir):
    for folder in patient_folders(phantom_dir):
        _, masks = read_volume(folder)
        assert set(np.unique(masks)) <= {0, 255}


def test_lesions_fill_a_contiguous_middle_run_of_about_half_the_slices(phantom_dir):
    for folder in patient_folders(phantom_dir):
        _, masks = read_volume(folder)
        with_lesion = np.flatnonzero(masks.reshape(N_SLICES, -1).any(axis=1))
        assert 0 < len(with_lesion) < N_SLICES
        assert abs(len(with_lesion) - N_SLICES // 2) <= 1
        assert np.array_equal(with_lesion, np.arange(with_lesion[0], with_lesion[-1] + 1))
        assert with_lesion[0] > 0 and with_lesion[-1] < N_SLICES - 1


def test_background_is_zero_and_the_head_is_smaller_and_darker_at_both_ends(phantom_dir):
    images, _ = read_volume(patient_folders(phantom_dir)[0])
    assert not images[:, 0, :].any() and not images[:, :, 0].any()  # image border = background
    head_area = (images.max(axis=-1) > 0).sum(axis=(1, 2))
    middle = N_SLICES // 2
    assert head_area[0] < 0.6 * head_area[middle] and head_area[-1] < 0.6 * head_area[middle]
    assert images[0].mean() < images[middle].mean() and images[-1].mean() < images[middle].mean()


def test_lesions_are_brighter_in_flair_than_the_surrounding_brain(phantom_dir):
    for folder in patient_folders(phantom_dir):
        images, masks = read_volume(folder)
        for image, mask in zip(images, masks):
            lesion = mask > 0
            if not lesion.any():
                continue
            ring = ndimage.binary_dilation(lesion, iterations=6) & ~lesion & (image[..., 1] > 0)
            flair = image[..., 1].astype(float)
            assert flair[lesion].mean() > flair[ring].mean() + 20


def test_the_same_seed_writes_identical_files_and_another_seed_different_ones(tmp_path):
    small = dict(n_patients=2, n_slices=4, size=64)
    first = write_phantom(tmp_path / "a", seed=3, **small)
    again = write_phantom(tmp_path / "b", seed=3, **small)
    other = write_phantom(tmp_path / "c", seed=4, **small)
    files = sorted(p.relative_to(first) for p in first.rglob("*.tif"))
    assert len(files) == 2 * 4 * 2
    assert all((first / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert any((first / f).read_bytes() != (other / f).read_bytes() for f in files)


def test_write_phantom_returns_dest_as_a_path(tmp_path):
    assert write_phantom(str(tmp_path / "k"), n_patients=1, n_slices=2, size=32) == tmp_path / "k"


def test_command_line_writes_the_folder(tmp_path, capsys):
    main([str(tmp_path / "kaggle_3m"), "--patients", "2", "--slices", "3", "--seed", "1", "--size", "32"])
    folders = patient_folders(tmp_path / "kaggle_3m")
    assert len(folders) == 2 and len(list(folders[0].glob("*_mask.tif"))) == 3
    assert "2 phantom patients" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [{"n_patients": 0}, {"n_slices": 0}, {"size": 8}, {"lesion_fraction": 1.5}])
def test_rejects_invalid_arguments(tmp_path, bad):
    with pytest.raises(ValueError):
        write_phantom(tmp_path / "x", **bad)
