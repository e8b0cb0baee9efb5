"""tfseg predict: scans without masks (.tif folders, NIfTI) segmented exactly as evaluate's native masks."""
import csv
import importlib.util
import json
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
from tiny_models import boxes, conv_model, pattern_model, run_folder

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


def test_the_uncertainty_of_a_real_patient_is_evaluate_uncertaintys_score(tif_run, loaded, patient, real_data_dir,
                                                                          tmp_path):
    from tfseg.evaluation import EvalOptions, evaluate

    # What `evaluate.py --model pretrained --patients P --uncertainty` runs once the model is loaded (the tiny
    # model's test below goes through evaluate's command line).
    evaluate(real_data_dir, loaded.sources, loaded.image_size, tmp_path / "eval", [patient.patient],
             EvalOptions(context=loaded.context, uncertainty=True), overlays=False, progress=False)
    with open(tmp_path / "eval" / "per_patient.csv", newline="") as f:
        scored = float(next(csv.DictReader(f))["uncertainty"])
    assert 0.0 < scored < 1.0
    out, _ = tif_run
    assert float(rows(out)[patient.patient]["uncertainty"]) == pytest.approx(scored, abs=1e-6)


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


# ----------------------------------------------------------------------------
# Tiny models on the phantom (tests/tiny_models.py): the command's options, a run folder and the rule it
# carries, a suspect mask, NIfTI probabilities. Seconds each: no pretrained model, no real patient.
# ----------------------------------------------------------------------------

# A pattern net's boxes (64 px, left-right symmetric so that the image and its flip agree):
# a small sure box above a large unsure one. The protocol (p > 0.5, largest) keeps the small box;
# a rule with threshold 0.3 keeps the large box, the largest component above 0.3.
RULE_PATTERN = boxes(((8, 16), (28, 36), 0.9), ((28, 54), (18, 46), 0.4))
# Three sure boxes of similar size: the largest holds about 36% of the probability, so the mask is suspect.
SUSPECT_PATTERN = boxes(((6, 18), (27, 37), 0.9), ((26, 37), (27, 37), 0.9), ((46, 56), (27, 37), 0.9))


@pytest.fixture(scope="module")
def conv_keras(tmp_path_factory):
    return conv_model(tmp_path_factory.mktemp("conv") / "conv.keras")


@pytest.fixture(scope="module")
def conv_loaded(conv_keras):
    from tfseg.inference import load_model

    return load_model(conv_keras)


@pytest.fixture(scope="module")
def phantom_patient(phantom_dir):
    return scan_folder(phantom_dir)[0]


@pytest.fixture(scope="module")
def phantom_volume(phantom_patient):
    return read_patient(phantom_patient)


def cli(*args) -> int:
    """``tfseg predict`` with ``args`` (no progress bar), as a user runs it: its exit code."""
    return main([*map(str, args), "--no-progress"])


def probabilities_of(out, case):
    with np.load(Path(out) / case / f"{case}_probabilities.npz") as saved:
        return saved["probabilities"].astype(np.float32)


def evaluated(loaded, volume, **options):
    """evaluate's result for ``volume`` (tfseg.evaluation.evaluate_patient) with ``options``, probabilities kept."""
    from tfseg.evaluation import EvalOptions, evaluate_patient

    return evaluate_patient(volume, loaded.sources, loaded.image_size,
                            EvalOptions(context=loaded.context, keep_probabilities=True, **options))


@pytest.fixture(scope="module")
def tta_runs(conv_keras, phantom_patient, tmp_path_factory):
    """{tta: OUT}: the phantom patient predicted through the command line without and with --tta."""
    runs = {}
    for tta in (False, True):
        out = tmp_path_factory.mktemp("tta") / "out"
        flags = ["--tta"] if tta else []
        assert cli("--model", conv_keras, "--input", phantom_patient.folder, "--out", out, "--save-probabilities",
                   "--no-viewer", *flags) == 0
        runs[tta] = out
    return runs


@pytest.mark.parametrize("tta", [False, True])
def test_tta_through_the_cli_gives_evaluates_masks_and_probabilities(tta_runs, conv_loaded, phantom_patient,
                                                                     phantom_volume, tta):
    out, case = tta_runs[tta], phantom_patient.patient
    expected = evaluated(conv_loaded, phantom_volume, tta=tta)
    masks = read_tif_masks(out / case, case, len(phantom_patient.images)) > 0
    assert expected.prediction.any() and np.array_equal(masks, expected.prediction)
    # float16 on disk: within its rounding of evaluate's float32 probabilities
    np.testing.assert_allclose(probabilities_of(out, case), expected.probabilities_native, atol=1e-3)
    assert json.loads((out / "predict.json").read_text())["options"]["tta"] is tta


def test_tta_changes_the_probabilities(tta_runs, phantom_patient):
    case = phantom_patient.patient
    plain, averaged = (probabilities_of(tta_runs[tta], case) for tta in (False, True))
    assert np.abs(plain - averaged).max() > 0.05  # the untrained net sees the flipped image differently


def test_batch_size_through_the_cli_sets_the_batches_and_keeps_the_result(tta_runs, conv_keras, conv_loaded,
                                                                           phantom_patient, phantom_volume, tmp_path,
                                                                           monkeypatch):
    import keras

    batches = []
    predict_on_batch = keras.Model.predict_on_batch

    def recording(self, x, *args, **kwargs):
        batches.append(len(x))
        return predict_on_batch(self, x, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "predict_on_batch", recording)
    out, case = tmp_path / "out", phantom_patient.patient
    assert cli("--model", conv_keras, "--input", phantom_patient.folder, "--out", out, "--batch-size", 3,
               "--save-probabilities", "--no-viewer") == 0
    monkeypatch.undo()
    expected = evaluated(conv_loaded, phantom_volume, batch_size=3)
    assert max(batches) == 3 and sum(batches) == 2 * expected.slices_pre  # each slice and its flip
    assert np.array_equal(read_tif_masks(out / case, case, len(phantom_patient.images)) > 0, expected.prediction)
    # the same probabilities as with the default batches of 16
    np.testing.assert_allclose(probabilities_of(out, case), probabilities_of(tta_runs[False], case), atol=1e-3)


def test_the_uncertainty_in_predictions_csv_is_evaluate_uncertaintys_score(tta_runs, conv_keras, phantom_dir,
                                                                            phantom_patient, tmp_path):
    from tfseg.cli import evaluate as evaluate_cli

    case = phantom_patient.patient
    assert evaluate_cli.main(["--model", str(conv_keras), "--data", str(phantom_dir), "--patients", case,
                              "--uncertainty", "--no-overlays", "--out", str(tmp_path / "eval")]) == 0
    with open(tmp_path / "eval" / "per_patient.csv", newline="") as f:
        scored = float(next(csv.DictReader(f))["uncertainty"])
    assert 0.01 < scored < 1.0  # the views disagree somewhat: a number worth comparing
    for tta in (False, True):  # --tta changes the mask, not the score (the flip is always predicted)
        assert float(rows(tta_runs[tta])[case]["uncertainty"]) == pytest.approx(scored, abs=1e-6)


def pattern_probabilities(image, pattern):
    """The native probabilities of a pattern net (tests/tiny_models.py) on ``image``: its pattern on every
    preprocessed slice, mapped back onto the input's slices as evaluate and predict do."""
    from tfseg.data.preprocess import invert_volume, preprocess_volume

    _, _, geometry = preprocess_volume(image, np.zeros(image.shape[:3], np.uint8), pattern.shape[0])
    return invert_volume(np.repeat(pattern[None], geometry.z1 - geometry.z0, axis=0), geometry, order=1)


@pytest.fixture(scope="module")
def pattern_run(tmp_path_factory):
    """A run folder (best.keras, config.json) holding the RULE_PATTERN net, without a postprocess.json."""
    return run_folder(tmp_path_factory.mktemp("runs") / "pattern", lambda path: pattern_model(path, RULE_PATTERN))


def predict_with_run(run, patient, out):
    assert cli("--model", run, "--input", patient.folder, "--out", out, "--no-viewer") == 0
    masks = read_tif_masks(out / patient.patient, patient.patient, len(patient.images)) > 0
    return masks, rows(out)[patient.patient], json.loads((out / "predict.json").read_text())


def test_a_run_folder_as_model_is_its_best_keras_with_the_protocols_rule(pattern_run, phantom_patient,
                                                                         phantom_volume, tmp_path):
    from tfseg.postprocess import PostprocessRule

    masks, row, record = predict_with_run(pattern_run, phantom_patient, tmp_path / "out")
    assert record["model"]["path"] == str(pattern_run / "best.keras") and record["model"]["kind"] == "keras"
    assert record["model"]["run_dir"] == str(pattern_run) and record["rule"]["file"] is None
    expected = PostprocessRule().apply(pattern_probabilities(phantom_volume.image, RULE_PATTERN))
    assert expected.any() and np.array_equal(masks, expected)  # the small sure box
    assert row["rule"].endswith("(the protocol's)")


def test_the_rule_a_run_folder_carries_is_applied(pattern_run, phantom_patient, phantom_volume, tmp_path):
    import shutil

    from tfseg.postprocess import PostprocessRule

    run = Path(shutil.copytree(pattern_run, tmp_path / "run"))
    (run / "postprocess.json").write_text(json.dumps({"rule": {"threshold": 0.3, "components": "largest"}}))
    masks, row, record = predict_with_run(run, phantom_patient, tmp_path / "out")
    probabilities = pattern_probabilities(phantom_volume.image, RULE_PATTERN)
    protocol, rule = PostprocessRule().apply(probabilities), PostprocessRule(threshold=0.3).apply(probabilities)
    # The lower threshold makes the large unsure box the largest component: a mask beside the protocol's.
    assert rule.sum() > 5 * protocol.sum() > 0 and not (rule & protocol).any()
    assert np.array_equal(masks, rule)
    assert record["rule"]["threshold"] == 0.3 and record["rule"]["file"] == str(run / "postprocess.json")
    assert row["rule"].startswith("p > 0.3") and str(run / "postprocess.json") in row["rule"]


def test_a_mask_whose_component_holds_little_of_the_probability_is_suspect(phantom_patient, phantom_volume,
                                                                           tmp_path, capsys):
    from tfseg.postprocess import PostprocessRule, kept_mass_fraction

    model = pattern_model(tmp_path / "three_boxes.keras", SUSPECT_PATTERN)
    out, case = tmp_path / "out", phantom_patient.patient
    assert cli("--model", model, "--input", phantom_patient.folder, "--out", out, "--no-viewer") == 0
    err = capsys.readouterr().err
    probabilities = pattern_probabilities(phantom_volume.image, SUSPECT_PATTERN)
    kept = PostprocessRule().apply(probabilities)
    expected_mass = kept_mass_fraction(probabilities, kept)
    assert 0.3 < expected_mass < 0.4  # one of three similar boxes
    row = rows(out)[case]
    assert row["suspect"] == "True" and float(row["kept_mass"]) == pytest.approx(expected_mass, abs=1e-6)
    assert "the kept component holds only" in row["suspect_reasons"]
    assert float(row["uncertainty"]) == 0.0  # symmetric boxes: the flip agrees, the kept mass alone decides
    assert f"warning: {case}: suspect mask" in err
    assert np.array_equal(read_tif_masks(out / case, case, len(phantom_patient.images)) > 0, kept)


def test_nifti_probabilities_are_16_bit_on_the_inputs_grid(conv_keras, conv_loaded, phantom_volume, tmp_path):
    path = write_flipped_nifti(tmp_path / "scan.nii.gz", phantom_volume.image)
    out = tmp_path / "out"
    assert cli("--model", conv_keras, "--input", path, "--out", out, "--save-probabilities", "--no-viewer") == 0
    written = nibabel.load(out / "scan" / "scan_probabilities.nii.gz")
    # NIfTI has no float16: uint16 steps of 1/65535 (scl_slope), 2 bytes per voxel as float16
    assert written.get_data_dtype() == np.uint16 and int(written.header["bitpix"]) == 16
    assert written.dataobj.slope == pytest.approx(1 / 65535, rel=1e-6) and written.dataobj.inter == 0
    assert np.array_equal(written.affine, nibabel.load(path).affine) and written.shape == nibabel.load(path).shape[:3]
    image = mapped(phantom_volume.image)
    expected = evaluated(conv_loaded, PatientVolume("scan", image, np.zeros(image.shape[:3], np.uint8)))
    stored = nibabel.as_closest_canonical(written).get_fdata(dtype=np.float32)
    np.testing.assert_allclose(stored, slices_as_ras(expected.probabilities_native), atol=1e-5)


# ----------------------------------------------------------------------------
# A case that cannot be read or written among good ones: named with its file, nothing of it left behind,
# the others complete, exit code 2 and the list of failed cases.
# ----------------------------------------------------------------------------

def folder_of_cases(root, phantom_dir, count):
    """``root`` holding links to the first ``count`` phantom patient folders; returns (root, their names)."""
    root.mkdir()
    names = [p.patient for p in scan_folder(phantom_dir)[:count]]
    for name in names:
        os.symlink(Path(phantom_dir) / name, root / name)
    return root, names


def run_cli(capsys, *args):
    """(exit code, stderr) of ``tfseg predict`` with ``args``."""
    code = cli(*args)
    return code, capsys.readouterr().err


def check_failed_case(out, failed, others, err, slices=12):
    """The failed case is named in the final line and not written; every other case is complete."""
    assert f"1 of {len(others) + 1} cases failed" in err.strip().splitlines()[-1] and failed in err.splitlines()[-1]
    assert not (out / failed).exists()
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name], "a temporary file or folder was left behind"
    for name in others:
        assert sorted(p.name for p in (out / name).iterdir()) == sorted(
            [f"{name}_{n}_mask.tif" for n in range(1, slices + 1)] + ["view.html"])
        assert read_tif_masks(out / name, name, slices).dtype == np.uint8
        assert rows(out)[name]["error"] == ""
    return rows(out)[failed]["error"]


def failing_imwrite(monkeypatch, case, slice_number, err):
    """tifffile.imwrite fails with ``err`` on slice ``slice_number``'s mask of ``case`` (ENOSPC: after writing
    part of the file, as a full disk does)."""
    import errno

    imwrite = tifffile.imwrite

    def imwrite_or_fail(path, *args, **kwargs):
        path = Path(path)
        if path.parent.name.startswith(f".{case}.tmp-") and path.name == f"{case}_{slice_number}_mask.tif":
            if err.errno == errno.ENOSPC:
                path.write_bytes(b"II*\x00" + bytes(100))  # the part that fitted
            raise err
        return imwrite(path, *args, **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", imwrite_or_fail)


@pytest.mark.parametrize("make_error, reason", [
    (lambda path: OSError(28, "No space left on device"), "No space left on device"),  # write() names no file
    (lambda path: PermissionError(13, "Permission denied", str(path)), "Permission denied"),
], ids=["disk-full-midway", "permission-refused"])
def test_a_case_that_cannot_be_written_is_named_with_its_file_and_the_others_are_complete(
        conv_keras, phantom_dir, tmp_path, capsys, monkeypatch, make_error, reason):
    root, names = folder_of_cases(tmp_path / "in", phantom_dir, 3)
    failed, out = names[1], tmp_path / "out"
    final_file = out / failed / f"{failed}_5_mask.tif"
    failing_imwrite(monkeypatch, failed, 5, make_error(final_file))
    code, err = run_cli(capsys, "--model", conv_keras, "--input", root, "--out", out)
    assert code == 2
    assert f"error: case {failed} failed and is not written: cannot write {final_file}: {reason}" in err
    error = check_failed_case(out, failed, [names[0], names[2]], err)
    assert f"cannot write {final_file}: {reason}" in error


def test_a_file_name_too_long_to_write_fails_that_case_only(conv_keras, phantom_dir, tmp_path, capsys):
    # A real OSError, nothing patched: slices named <246 characters>_<n>.tif can be read, but their masks,
    # <246 characters>_<n>_mask.tif, exceed the 255 bytes a file name may have.
    import shutil

    root, names = folder_of_cases(tmp_path / "in", phantom_dir, 2)
    source, prefix = scan_folder(phantom_dir)[2], "L" * 246
    (root / "long").mkdir()
    for n, image in enumerate(source.images, start=1):
        shutil.copy(image, root / "long" / f"{prefix}_{n}.tif")
    out = tmp_path / "out"
    code, err = run_cli(capsys, "--model", conv_keras, "--input", root, "--out", out)
    assert code == 2
    assert f"error: case long failed and is not written: cannot write {out / 'long' / prefix}_1_mask.tif: " in err
    assert "File name too long" in check_failed_case(out, "long", names, err)


def test_a_single_case_that_cannot_be_written_is_one_error_line(conv_keras, phantom_dir, tmp_path, capsys,
                                                                monkeypatch):
    patient = scan_folder(phantom_dir)[0]
    failing_imwrite(monkeypatch, patient.patient, 1, OSError(28, "No space left on device"))
    out = tmp_path / "out"
    code, err = run_cli(capsys, "--model", conv_keras, "--input", patient.folder, "--out", out, "--no-viewer")
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"error: cannot write {out / patient.patient}/")
    assert not out.exists() or not list(out.iterdir())


def unreadable_slice(monkeypatch, case):
    """Reading ``case``'s slices fails with an I/O error on its 4th slice (a bad disk sector)."""
    import tfseg.predict

    read_images = tfseg.predict.read_images

    def read_or_fail(files):
        if files.patient == case:
            raise OSError(5, "Input/output error", str(files.images[3]))
        return read_images(files)

    monkeypatch.setattr(tfseg.predict, "read_images", read_or_fail)


def slice_gap(monkeypatch, root, case):
    """``case``'s 4th slice removed: a gap in the slice numbers."""
    link = root / case
    folder = Path(os.readlink(link))
    link.unlink()
    link.mkdir()
    for image in scan_images(folder).images:
        if not image.name.endswith("_4.tif"):
            os.symlink(image, link / image.name)


@pytest.mark.parametrize("break_case, message", [
    (slice_gap, "slice numbers have a gap (missing {case}_4.tif)"),
    (lambda monkeypatch, root, case: unreadable_slice(monkeypatch, case),
     "cannot read {input}/{case}_4.tif: Input/output error"),
], ids=["slice-gap", "io-error"])
def test_a_case_that_cannot_be_read_among_good_ones_fails_alone_with_exit_code_2(
        conv_keras, phantom_dir, tmp_path, capsys, monkeypatch, break_case, message):
    root, names = folder_of_cases(tmp_path / "in", phantom_dir, 3)
    failed, out = names[0], tmp_path / "out"
    break_case(monkeypatch, root, failed)
    code, err = run_cli(capsys, "--model", conv_keras, "--input", root, "--out", out)
    assert code == 2
    expected = message.format(case=failed, input=root / failed)
    assert f"error: case {failed} failed and is not written: " in err and expected in err
    assert expected in check_failed_case(out, failed, names[1:], err)


def test_predictions_csv_that_cannot_be_written_is_one_error_line_listing_the_failed_cases(
        conv_keras, phantom_dir, tmp_path, capsys, monkeypatch):
    import tfseg.fileio

    root, names = folder_of_cases(tmp_path / "in", phantom_dir, 2)
    slice_gap(monkeypatch, root, names[0])

    def disk_full(path, *args, **kwargs):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(tfseg.fileio, "write_csv_atomic", disk_full)
    out = tmp_path / "out"
    code, err = run_cli(capsys, "--model", conv_keras, "--input", root, "--out", out, "--no-viewer")
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"error: cannot write {out / PREDICTIONS}: No space left on device "
                                            f"(free some space and run again); failed cases: {names[0]}")
    assert (out / names[1]).is_dir()  # the case written before stays
