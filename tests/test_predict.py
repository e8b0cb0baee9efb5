"""tfseg predict: scans without masks (.tif folders, NIfTI) segmented exactly as evaluate's native masks."""
import csv
import importlib.util
import os
from pathlib import Path

import nibabel
import numpy as np
import pytest
import tifffile

from tfseg.cli.predict import main
from tfseg.data import nifti
from tfseg.data.kaggle import PatientVolume, read_images, read_patient, scan_folder, scan_images
from tfseg.predict import PREDICTIONS, PredictError, PredictOptions, predict

HAS_VIEWER = importlib.util.find_spec("tfseg.viewer") is not None
ZOOMS = (0.9, 0.8, 3.0)  # x, y, z in mm


# ----------------------------------------------------------------------------
# Helpers: a real patient as NIfTI, on a grid that is not the canonical one
# ----------------------------------------------------------------------------

def slices_as_ras(slices):
    """kaggle_3m slices (S, H, W[, C]) as a canonical RAS+ (X, Y, Z[, C]) volume: rows run anterior -> posterior
    and columns right -> left (radiological), slice 1 lowest. The convention docs/howto/predict.md states."""
    return np.swapaxes(np.asarray(slices), 0, 2)[::-1, ::-1]


def write_flipped_nifti(path, slices):
    """Store the RAS volume of ``slices`` with x flipped and x, y swapped (not the canonical grid); returns the file."""
    ras = slices_as_ras(slices)
    stored = np.ascontiguousarray(np.swapaxes(ras[::-1], 0, 1))  # stored[j, i, k] = ras[X-1-i, j, k]
    sx, sy, sz = ZOOMS
    affine = np.array([[0, -sx, 0, (ras.shape[0] - 1) * sx], [sy, 0, 0, 0], [0, 0, sz, 0], [0, 0, 0, 1.0]])
    image = nibabel.Nifti1Image(scanner_units(stored), affine)
    image.header.set_xyzt_units("mm")
    nibabel.save(image, path)
    return path


def scanner_units(values):
    """uint8 intensities as int16 on another scale (any scale: the intensity mapping takes it out); 0 stays 0."""
    values = np.asarray(values).astype(np.int16)
    return np.where(values == 0, 0, values * 4 + 7).astype(np.int16)


def mapped(slices):
    """The uint8 image tfseg.data.nifti makes of a scan stored as ``slices`` (per sequence, by the one rule)."""
    return np.stack([nifti.intensity_to_uint8(scanner_units(slices[..., c])) for c in range(slices.shape[-1])], -1)


def read_tif_masks(folder, prefix, count):
    return np.stack([tifffile.imread(Path(folder) / f"{prefix}_{n}_mask.tif") for n in range(1, count + 1)])


def rows(out):
    with open(Path(out) / PREDICTIONS, newline="") as f:
        return {row["case"]: row for row in csv.DictReader(f)}


# ----------------------------------------------------------------------------
# Shared: the pretrained model, one real patient and evaluate's native mask of it
# ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def loaded():
    from tfseg.inference import load_model

    return load_model("pretrained")


@pytest.fixture(scope="module")
def patient(real_data_dir):
    """The sorted-first real patient (CI restores only a few)."""
    return scan_folder(real_data_dir)[0]


@pytest.fixture(scope="module")
def volume(patient):
    return read_patient(patient)


def native_mask(loaded, image):
    """evaluate's native mask of ``image`` (tfseg.evaluation.evaluate_patient, the protocol's options)."""
    from tfseg.evaluation import EvalOptions, evaluate_patient

    volume = PatientVolume("case", image, np.zeros(image.shape[:3], np.uint8))
    return evaluate_patient(volume, loaded.sources, loaded.image_size, EvalOptions(context=loaded.context)).prediction


@pytest.fixture(scope="module")
def tif_run(loaded, patient, tmp_path_factory):
    """A folder of two patient folders, the real one (linked) and one with a slice gap, predicted once."""
    root = tmp_path_factory.mktemp("tif_in")
    os.symlink(patient.folder, root / patient.patient)
    broken = root / "TCGA_ZZ_0000_broken"
    broken.mkdir()
    for n in (1, 2, 4):
        tifffile.imwrite(broken / f"TCGA_ZZ_0000_broken_{n}.tif", np.ones((32, 32, 3), np.uint8))
    out = tmp_path_factory.mktemp("tif_out") / "out"
    with pytest.raises(PredictError) as failure:
        predict("pretrained", out, root, loaded=loaded, progress=False,
                options=PredictOptions(save_probabilities=True, viewer=HAS_VIEWER))
    return out, str(failure.value)


# ----------------------------------------------------------------------------
# Real patients
# ----------------------------------------------------------------------------

def test_tif_masks_equal_evaluates_native_masks_with_kaggle_names(tif_run, loaded, patient, volume):
    out, _ = tif_run
    masks = read_tif_masks(out / patient.patient, patient.patient, len(patient.images))
    assert masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 255}
    expected = native_mask(loaded, volume.image)
    assert expected.any()
    assert np.array_equal(masks > 0, expected)


def test_the_csv_row_gives_voxels_rank_and_no_volume_for_tif(tif_run, patient, volume):
    out, _ = tif_run
    row = rows(out)[patient.patient]
    mask = read_tif_masks(out / patient.patient, patient.patient, len(patient.images)) > 0
    assert int(row["slices"]) == len(patient.images) and int(row["tumour_voxels"]) == int(mask.sum())
    assert row["volume_ml"] == "" and row["check_first_rank"] == "1" and row["error"] == ""
    assert 0.0 <= float(row["uncertainty"]) <= 1.0 and 0.5 <= float(row["kept_mass"]) <= 1.0
    assert row["suspect"] == "False" and "the protocol" in row["rule"]


def test_probabilities_are_saved_as_float16_on_the_native_slices(tif_run, patient):
    out, _ = tif_run
    with np.load(out / patient.patient / f"{patient.patient}_probabilities.npz") as saved:
        probabilities = saved["probabilities"]
    assert probabilities.dtype == np.float16 and probabilities.shape == (len(patient.images), 256, 256)
    assert 0.0 <= probabilities.min() and probabilities.max() <= 1.0


@pytest.mark.skipif(not HAS_VIEWER, reason="tfseg.viewer is not there yet")
def test_each_case_gets_a_viewer_page(tif_run, patient):
    out, _ = tif_run
    assert (out / patient.patient / "view.html").is_file()


def test_a_failed_case_of_many_is_named_not_written_and_the_others_are(tif_run, patient):
    out, message = tif_run
    assert "1 of 2 cases failed" in message and "TCGA_ZZ_0000_broken" in message and "missing" in message
    assert not (out / "TCGA_ZZ_0000_broken").exists()
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    assert "slice numbers have a gap" in rows(out)["TCGA_ZZ_0000_broken"]["error"]
    assert (out / patient.patient).is_dir()


def test_a_4d_nifti_on_a_flipped_grid_gets_evaluates_mask_on_its_own_grid(loaded, volume, tmp_path):
    path = write_flipped_nifti(tmp_path / "scan.nii.gz", volume.image)
    out = tmp_path / "out"
    predict("pretrained", out, path, loaded=loaded, progress=False, options=PredictOptions(viewer=False))
    written = nibabel.load(out / "scan" / "scan_mask.nii.gz")
    given = nibabel.load(path)
    assert np.array_equal(written.affine, given.affine) and written.shape == given.shape[:3]
    stored = np.asanyarray(written.dataobj)
    assert stored.dtype == np.uint8 and set(np.unique(stored)) <= {0, 1}
    expected = native_mask(loaded, mapped(volume.image))
    assert expected.any()
    # nibabel's own reorientation of the written mask gives the expected mask in RAS
    assert np.array_equal(np.asanyarray(nibabel.as_closest_canonical(written).dataobj) > 0, slices_as_ras(expected))
    row = rows(out)["scan"]
    assert float(row["volume_ml"]) == pytest.approx(expected.sum() * np.prod(ZOOMS) / 1000, abs=1e-3)


def test_flair_alone_is_segmented_with_flair_in_every_channel_and_says_so(loaded, volume, tmp_path, capsys):
    flair = write_flipped_nifti(tmp_path / "flair.nii.gz", volume.image[..., 1])
    out = tmp_path / "out"
    assert main(["--model", "pretrained", "--flair", str(flair), "--out", str(out), "--no-viewer",
                 "--no-progress"]) == 0
    assert "pre-contrast and post-contrast replaced by FLAIR" in capsys.readouterr().err
    assert rows(out)["flair"]["substituted"] == "pre-contrast; post-contrast"
    flair_uint8 = mapped(volume.image[..., 1:2])
    expected = native_mask(loaded, np.repeat(flair_uint8, 3, axis=-1))
    written = nibabel.load(out / "flair" / "flair_mask.nii.gz")
    assert np.array_equal(np.asanyarray(nibabel.as_closest_canonical(written).dataobj) > 0, slices_as_ras(expected))


# ----------------------------------------------------------------------------
# Bad input: one line naming the file and what to do, exit code 2
# ----------------------------------------------------------------------------

def run(capsys, *args):
    code = main(["--model", "pretrained", *map(str, args), "--no-viewer", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


def write_slices(folder, prefix, numbers, shape=(16, 16, 3)):
    folder.mkdir(parents=True, exist_ok=True)
    for n in numbers:
        size = shape(n) if callable(shape) else shape
        tifffile.imwrite(folder / f"{prefix}_{n}.tif", np.full(size, 50, np.uint8))
    return folder


def test_a_folder_with_no_slices_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, line = run(capsys, "--input", tmp_path / "empty", "--out", tmp_path / "out")
    assert code == 2 and "empty holds no slices" in line and "give a patient folder" in line


def test_a_patient_folder_with_masks_only_is_an_error(tmp_path, capsys):
    folder = tmp_path / "P"
    folder.mkdir()
    tifffile.imwrite(folder / "P_1_mask.tif", np.zeros((16, 16), np.uint8))
    code, line = run(capsys, "--input", folder, "--out", tmp_path / "out")
    assert code == 2 and f"{folder} holds no image slices" in line


def test_slices_of_mixed_sizes_are_an_error_naming_the_slice(tmp_path, capsys):
    folder = write_slices(tmp_path / "P", "P", [1, 2, 3], shape=lambda n: (16, 16, 3) if n < 3 else (20, 16, 3))
    code, line = run(capsys, "--input", folder, "--out", tmp_path / "out")
    assert code == 2 and "P_3.tif: slice of size (20, 16)" in line and "one size" in line


def test_a_gap_in_slice_numbers_is_an_error_naming_the_missing_slice(tmp_path, capsys):
    folder = write_slices(tmp_path / "P", "P", [1, 2, 4])
    code, line = run(capsys, "--input", folder, "--out", tmp_path / "out")
    assert code == 2 and "missing P_3.tif" in line and "Restore the missing slices" in line


def test_grey_tif_slices_are_a_wrong_channel_count(tmp_path, capsys):
    folder = write_slices(tmp_path / "P", "P", [1, 2, 3], shape=(16, 16))
    code, line = run(capsys, "--input", folder, "--out", tmp_path / "out")
    assert code == 2 and "P_1.tif: image has shape (16, 16), expected (H, W, 3)" in line


@pytest.mark.parametrize("shape,message", [((8, 8), "is 2-D"), ((8, 8, 4, 1, 3), "is 5-D"),
                                           ((8, 8, 4, 2), "holds 2 volumes along its 4th axis, expected 3"),
                                           ((8, 8, 4), "pass it with --flair")])
def test_a_nifti_of_the_wrong_shape_is_an_error_naming_it(tmp_path, capsys, shape, message):
    path = tmp_path / "scan.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.ones(shape, np.float32), np.eye(4)), path)
    code, line = run(capsys, "--input", path, "--out", tmp_path / "out")
    assert code == 2 and str(path) in line and message in line


@pytest.mark.parametrize("affine,message", [(np.zeros((4, 4)), "the affine is singular"),
                                            (np.diag([1.0, np.nan, 1.0, 1.0]), "the affine is not finite")])
def test_a_nifti_without_a_usable_orientation_is_an_error(tmp_path, capsys, affine, message):
    path = tmp_path / "scan.nii.gz"
    image = nibabel.Nifti1Image(np.ones((8, 8, 4, 3), np.float32), None)
    image.header.set_sform(affine, code=2)
    nibabel.save(image, path)
    code, line = run(capsys, "--input", path, "--out", tmp_path / "out")
    assert code == 2 and str(path) in line and message in line and "set the file's orientation" in line


def test_input_and_flair_together_are_an_error(tmp_path, capsys):
    code, line = run(capsys, "--input", tmp_path, "--flair", tmp_path / "f.nii.gz", "--out", tmp_path / "out")
    assert code == 2 and "not both" in line


def test_a_model_needing_unsafe_deserialization_is_refused_with_the_reason(tmp_path):
    import keras

    from tfseg.inference import ModelLoadError, load_model

    inputs = keras.Input((8, 8, 3))
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(path)
    with pytest.raises(ModelLoadError, match="is refused: it holds Python code that runs when it is loaded"):
        load_model(path)


def test_images_only_reading_ignores_masks_and_keeps_the_slice_order(tmp_path):
    folder = write_slices(tmp_path / "P", "P", range(1, 12))
    tifffile.imwrite(folder / "P_1_mask.tif", np.zeros((16, 16), np.uint8))
    files = scan_images(folder)
    assert [p.name for p in files.images][9:] == ["P_10.tif", "P_11.tif"] and files.masks == ()
    assert read_images(files).shape == (11, 16, 16, 3)
