"""evaluate.py / tfseg.evaluation: scores in both geometries, the files it writes, model loading errors."""
import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tfseg.data.kaggle import DataError, PatientVolume, read_patient, scan_folder
from tfseg.data.preprocess import preprocess_volume
from tfseg.data.split import split_patients
from tfseg.evaluation import EvalOptions, evaluate, evaluate_patient
from tfseg.inference import ModelLoadError, load_model
from tfseg.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
BOX_SIZE = 128  # the head of the box phantom is exactly 128x128: preprocessing at 128 px resizes nothing
# patient -> (tumour slices, rows, columns); slices 1..4 survive "drop first and last" of 6 slices
BOX_TUMOURS = {"TCGA_BX_0001_20000101": ((2, 5), (100, 110), (120, 130)),
               "TCGA_BX_0002_20000101": ((1, 4), (140, 150), (80, 96))}


def write_box_phantom(root: Path) -> Path:
    """kaggle_3m-shaped folder: a 128x128 square head and one cuboid tumour per patient (6 slices each)."""
    rows = np.arange(128)[:, None, None]
    for patient, ((z0, z1), (y0, y1), (x0, x1)) in BOX_TUMOURS.items():
        folder = root / patient
        folder.mkdir(parents=True)
        for n in range(6):
            image = np.zeros((256, 256, 3), np.uint8)
            # a ramp (a constant head would have equal 10th and 99th percentiles: nothing to normalize)
            image[64:192, 64:192] = 60 + rows // 2 + 3 * n
            mask = np.zeros((256, 256), np.uint8)
            if z0 <= n < z1:
                image[y0:y1, x0:x1] = 230
                mask[y0:y1, x0:x1] = 255
            tifffile.imwrite(folder / f"{patient}_{n + 1}.tif", image, photometric="rgb")
            tifffile.imwrite(folder / f"{patient}_{n + 1}_mask.tif", mask)
    return root


def oracle(data: Path, image_size: int, shift: int = 0):
    """A predict function that answers every preprocessed slice with its true mask, shifted ``shift`` columns."""
    answers = {}
    for files in scan_folder(data):
        volume = read_patient(files)
        image, mask, _ = preprocess_volume(volume.image, volume.mask, image_size)
        for slice_image, slice_mask in zip(image, mask):
            answers[slice_image.tobytes()] = np.roll(slice_mask, shift, axis=1).astype(np.float32)

    def predict(batch):
        return np.stack([answers[x.tobytes()] for x in batch])

    return predict


@pytest.fixture(scope="module")
def box_dir(tmp_path_factory):
    return write_box_phantom(tmp_path_factory.mktemp("box") / "kaggle_3m")


def read_rows(path: Path) -> dict:
    with open(path, newline="") as f:
        return {row["patient"]: row for row in csv.DictReader(f)}


def test_oracle_predictions_score_dsc_1_in_both_geometries(box_dir, tmp_path):
    summary = evaluate(box_dir, oracle(box_dir, BOX_SIZE), BOX_SIZE, tmp_path, progress=False, overlays=False)
    assert summary["mean_dsc"] == summary["median_dsc"] == 1.0
    assert summary["mean_dsc_native"] == summary["median_dsc_native"] == 1.0
    assert summary["mean_hd95_native"] == 0.0
    for row in read_rows(tmp_path / "per_patient.csv").values():
        assert float(row["dsc_pre"]) == float(row["dsc_native"]) == 1.0
        assert float(row["sensitivity_native"]) == float(row["precision_native"]) == 1.0
        assert row["pred_voxels_native"] == row["true_voxels_native"]


def test_a_one_column_shift_gives_the_hand_computed_dsc(box_dir, tmp_path):
    evaluate(box_dir, oracle(box_dir, BOX_SIZE, shift=1), BOX_SIZE, tmp_path, progress=False, overlays=False)
    rows = read_rows(tmp_path / "per_patient.csv")
    for patient, (_, _, (x0, x1)) in BOX_TUMOURS.items():
        width = x1 - x0
        # |P| = |T| and P∩T loses one column of the cuboid: DSC = 2(w-1)/(2w)
        expected = (width - 1) / width
        for geometry in ("pre", "native"):
            assert float(rows[patient][f"dsc_{geometry}"]) == pytest.approx(expected, abs=1e-12)
            assert float(rows[patient][f"hd95_{geometry}"]) == pytest.approx(1.0)


def test_tta_averages_the_flipped_prediction(box_dir, tmp_path):
    # A predictor that is right only on unflipped input, wrong (empty) on flipped input: TTA halves it to 0.5,
    # which the strict threshold turns into background, so the DSC drops from 1 to 0.
    right = oracle(box_dir, BOX_SIZE)

    def predict(batch):
        try:
            return right(batch)
        except KeyError:  # a flipped slice is unknown to the oracle
            return np.zeros(batch.shape[:3], np.float32)

    summary = evaluate(box_dir, predict, BOX_SIZE, tmp_path, options=EvalOptions(tta=True), progress=False,
                       overlays=False)
    assert summary["mean_dsc"] == 0.0 and summary["options"]["tta"] is True


def test_a_patient_of_constant_intensity_is_a_data_error_naming_it():
    volume = PatientVolume("TCGA_FL_0001_20000101", np.full((6, 256, 256, 3), 100, np.uint8),
                           np.zeros((6, 256, 256), np.uint8))

    def must_not_predict(batch):
        raise AssertionError("a volume that cannot be normalized reached the model")

    with pytest.raises(DataError, match="TCGA_FL_0001_20000101: the image volume has constant intensity"):
        evaluate_patient(volume, must_not_predict, 64)


# ----------------------------------------------------------------------------
# A run folder with an untrained tiny network: every file, every way to name the model.
# ----------------------------------------------------------------------------

def make_untrained_run(run_dir: Path, data: str) -> Path:
    """RUN_DIR with best.keras (untrained U-Net, 64 px, base 8), config.json (val_cases=1) and export/."""
    import keras

    from tfseg.export import export_saved_model
    from tfseg.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model("unet", (64, 64, 3), base_filters=8)
    run_dir.mkdir(parents=True)
    model.save(run_dir / "best.keras")
    config = TrainConfig(data=data, image_size=64, base_filters=8, val_cases=1, epochs=0)
    # The split as train() records it; the validation patient is deliberately not the one the split rule
    # would draw, so the tests see that evaluation reads the record instead of recomputing it.
    names = sorted(f.patient for f in scan_folder(data))
    rule = split_patients(names, val_cases=1)[1]
    validation = [next(n for n in names if n not in rule)]
    split = {"training": [n for n in names if n not in validation], "validation": validation}
    (run_dir / "config.json").write_text(json.dumps({"config": dataclasses.asdict(config), "split": split,
                                                     "command": "python train.py --image-size 64"}))
    export_saved_model(model, run_dir / "export")
    return run_dir


@pytest.fixture(scope="module")
def phantom_run(phantom_dir, tmp_path_factory):
    return make_untrained_run(tmp_path_factory.mktemp("runs") / "untrained", str(phantom_dir))


def check_outputs(out: Path, patients: list[str]):
    rows = read_rows(out / "per_patient.csv")
    assert list(rows) == patients
    for row in rows.values():
        for geometry in ("pre", "native"):
            for key in ("dsc", "hd95", "sensitivity", "precision", "pred_voxels", "true_voxels"):
                assert f"{key}_{geometry}" in row
        assert int(row["slices"]) >= int(row["slices_pre"]) + 2
    summary = json.loads((out / "summary.json").read_text())
    for key in ("mean_dsc", "median_dsc", "mean_dsc_native", "median_dsc_native", "mean_hd95_native"):
        assert key in summary
    assert len(summary["model"]["sha256"]) == 64 and len(summary["data"]["sha256_of_names_and_sizes"]) == 64
    assert summary["options"]["threshold"] == 0.5
    assert (out / "dsc.png").stat().st_size > 0
    for patient in patients:
        assert (out / "overlays" / f"{patient}.gif").stat().st_size > 0
        assert (out / "overlays" / f"{patient}_montage.png").stat().st_size > 0
    assert not list(out.rglob(".*tmp-*")), "temporary files left behind"
    return summary


def test_evaluate_py_on_the_run_export_writes_every_file_for_the_validation_patients(phantom_run, phantom_dir,
                                                                                   tmp_path):
    from tfseg.cli import evaluate as evaluate_py

    out = tmp_path / "eval"
    code = evaluate_py.main(["--model", str(phantom_run / "export"), "--data", str(phantom_dir), "--out", str(out),
                             "--tta", "--batch-size", "5"])
    assert code == 0
    # The validation patients come from the split train() wrote into config.json, not a recomputation.
    recorded = json.loads((phantom_run / "config.json").read_text())["split"]["validation"]
    summary = check_outputs(out, recorded)
    assert summary["model"]["kind"] == "saved_model" and summary["options"]["tta"] is True
    assert summary["split"] == {"source": "run config split", "validation": recorded}


def test_a_run_from_before_the_recorded_split_gets_its_split_recomputed(phantom_run, phantom_dir, tmp_path):
    from tfseg.evaluation import choose_patients

    config = json.loads((phantom_run / "config.json").read_text())
    del config["split"]
    files, info = choose_patients(scan_folder(phantom_dir), None, config)
    names = [f.patient for f in scan_folder(phantom_dir)]
    assert [f.patient for f in files] == split_patients(names, val_cases=1)[1]
    assert info["source"] == "run config (recomputed)"


def test_evaluate_on_real_patients_writes_every_file(real_data_dir, tmp_path):
    from tfseg.evaluation import evaluate_model

    run = make_untrained_run(tmp_path / "run", real_data_dir)
    summary = evaluate_model(run, progress=False)  # data from the run's config, out = RUN_DIR/eval
    check_outputs(run / "eval", json.loads((run / "config.json").read_text())["split"]["validation"])
    assert summary["model"]["kind"] == "keras" and summary["data"]["path"] == str(Path(real_data_dir))


def test_run_folder_keras_file_and_saved_model_load_as_the_same_network(phantom_run):
    batch = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    models = [load_model(p) for p in (phantom_run, phantom_run / "best.keras", phantom_run / "export")]
    assert [m.kind for m in models] == ["keras", "keras", "saved_model"]
    assert {m.image_size for m in models} == {64}
    assert all(m.run_dir == phantom_run and m.run_config["config"]["val_cases"] == 1 for m in models)
    reference = np.asarray(models[0].predict(batch))
    for model in models[1:]:
        np.testing.assert_allclose(np.asarray(model.predict(batch)), reference, atol=1e-5)


def test_patients_all_and_named_override_the_split(phantom_run, phantom_dir, tmp_path):
    from tfseg.evaluation import evaluate_model

    names = [f.patient for f in scan_folder(phantom_dir)]
    summary = evaluate_model(phantom_run, phantom_dir, tmp_path / "named", [names[2], names[0]], overlays=False,
                             progress=False)
    assert summary["patients"] == [names[2], names[0]] and summary["split"]["source"] == "--patients"
    with pytest.raises(Exception, match="unknown patients"):
        evaluate_model(phantom_run, phantom_dir, tmp_path / "bad", ["TCGA_NO_SUCH"], progress=False)


# ----------------------------------------------------------------------------
# Bad model paths: a clear error that names the path, exit code 2.
# ----------------------------------------------------------------------------

def _corrupt_keras(tmp_path):
    path = tmp_path / "broken.keras"
    path.write_bytes(b"PK\x03\x04 this is not a keras archive")
    return path


def _corrupt_saved_model(tmp_path):
    folder = tmp_path / "export"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"\x00garbage\xff" * 10)
    return folder


def _not_a_model(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a model")
    return path


def _run_without_model(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    return tmp_path / "run"


@pytest.mark.parametrize("make_path, message", [
    (lambda tmp: tmp / "nowhere", "does not exist"),
    (_corrupt_keras, "is damaged: not a complete .keras archive"),
    (_corrupt_saved_model, "cannot load the SavedModel"),
    (_run_without_model, "holds no best.keras"),
    (_not_a_model, "neither a SavedModel"),
])
def test_a_missing_or_corrupt_model_is_a_clear_error_naming_the_path(make_path, message, tmp_path, capsys,
                                                                     phantom_dir):
    path = make_path(tmp_path)
    with pytest.raises(ModelLoadError, match=message) as caught:
        load_model(path)
    assert str(path) in str(caught.value)
    from tfseg.cli import evaluate as evaluate_py

    assert evaluate_py.main(["--model", str(path), "--data", str(phantom_dir), "--out", str(tmp_path / "o")]) == 2
    assert str(path) in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------
# A chosen post-processing rule: scored beside the protocol, suspect masks flagged.
# ----------------------------------------------------------------------------

def decoy_oracle(data: Path, image_size: int):
    """The true mask at 0.99 plus, on the same slices, a larger square false positive at 0.52 (less summed
    probability than the tumour): the protocol keeps the false positive, "largest_mass" the tumour."""
    answers = {}
    for files in scan_folder(data):
        volume = read_patient(files)
        image, mask, _ = preprocess_volume(volume.image, volume.mask, image_size)
        for slice_image, slice_mask in zip(image, mask):
            answer = 0.99 * (slice_mask > 0).astype(np.float32)
            area = int(np.count_nonzero(slice_mask))
            if area:
                side = int(np.ceil(np.sqrt(1.5 * area)))
                answer[2:2 + side, 2:2 + side] = 0.52
            answers[slice_image.tobytes()] = answer

    def predict(batch):
        return np.stack([answers[x.tobytes()] for x in batch])

    return predict


def test_a_rule_is_reported_beside_the_protocol_figure_and_the_protocols_decoy_masks_are_suspect(box_dir, tmp_path,
                                                                                                capsys):
    from tfseg.postprocess import PostprocessRule

    options = EvalOptions(rule=PostprocessRule(components="largest_mass"))
    summary = evaluate(box_dir, decoy_oracle(box_dir, BOX_SIZE), BOX_SIZE, tmp_path, options=options,
                       progress=False, overlays=False, rule_file="chosen/postprocess.json")
    assert summary["mean_dsc"] == summary["mean_dsc_native"] == 0.0  # the protocol keeps the false positive
    assert summary["mean_dsc_rule"] == summary["mean_dsc_rule_native"] == 1.0
    assert summary["postprocess"]["rule"]["components"] == "largest_mass"
    assert summary["postprocess"]["file"] == "chosen/postprocess.json"
    for row in read_rows(tmp_path / "per_patient.csv").values():
        assert float(row["dsc_pre"]) == 0.0 and float(row["dsc_rule_pre"]) == float(row["dsc_rule_native"]) == 1.0
        assert "dsc_rule_mask_pre" not in row  # one component: the metric's largest component changes nothing
        assert row["suspect"] == "0" and float(row["kept_mass"]) > 0.5
    assert summary["suspect"] == {}

    plain = evaluate(box_dir, decoy_oracle(box_dir, BOX_SIZE), BOX_SIZE, tmp_path / "plain", progress=False,
                     overlays=False)
    assert "mean_dsc_rule" not in plain and plain["postprocess"]["is_protocol"]
    assert set(plain["suspect"]) == set(BOX_TUMOURS)
    rows = read_rows(tmp_path / "plain" / "per_patient.csv")
    assert all(row["suspect"] == "1" and float(row["kept_mass"]) < 0.5 for row in rows.values())
    err = capsys.readouterr().err
    assert all(f"warning: {patient}: suspect mask" in err for patient in BOX_TUMOURS)


def test_a_rule_keeping_several_components_is_scored_with_and_without_the_metrics_largest_component(box_dir,
                                                                                                   tmp_path):
    from tfseg.postprocess import PostprocessRule

    summary = evaluate(box_dir, decoy_oracle(box_dir, BOX_SIZE), BOX_SIZE, tmp_path, progress=False, overlays=False,
                       options=EvalOptions(rule=PostprocessRule(components="none")))
    assert summary["mean_dsc_rule"] == 0.0  # after the metric's largest component: the false positive
    for row in read_rows(tmp_path / "per_patient.csv").values():
        assert 0.0 < float(row["dsc_rule_mask_pre"]) < 1.0  # the rule's own mask: tumour and false positive


def test_saved_probabilities_let_the_chooser_pick_the_rule_without_the_data(box_dir, tmp_path):
    from tfseg.postprocess_choice import choose_postprocessing, read_probabilities

    evaluate(box_dir, decoy_oracle(box_dir, BOX_SIZE), BOX_SIZE, tmp_path, progress=False, overlays=False,
             options=EvalOptions(keep_probabilities=True))
    for patient in BOX_TUMOURS:
        saved = read_probabilities(tmp_path / "probabilities" / f"{patient}.npz")
        assert saved.pre.shape == (4, BOX_SIZE, BOX_SIZE)
        assert saved.native.shape == saved.native_truth.shape == (6, 256, 256)
        assert saved.voxel_scale_pre == 1.0 and saved.fold == -1 and saved.native_truth.sum() > 0
    payload = choose_postprocessing(tmp_path, progress=False)
    assert payload["rule"]["components"] == "largest_mass"


def test_evaluate_model_applies_a_postprocess_file_given_on_the_command_line(phantom_run, phantom_dir, tmp_path):
    from tfseg.cli import evaluate as evaluate_py

    rule_file = tmp_path / "postprocess.json"
    rule_file.write_text(json.dumps({"rule": {"threshold": 0.4, "components": "largest_mass"}}))
    out = tmp_path / "eval"
    assert evaluate_py.main(["--model", str(phantom_run), "--data", str(phantom_dir), "--out", str(out),
                             "--no-overlays", "--postprocess", str(rule_file)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["postprocess"]["file"] == str(rule_file) and summary["postprocess"]["rule"]["threshold"] == 0.4
    assert "mean_dsc_rule" in summary and "mean_dsc" in summary
    assert all("dsc_rule_native" in row for row in read_rows(out / "per_patient.csv").values())
    damaged = tmp_path / "damaged.json"
    damaged.write_text("{")
    assert evaluate_py.main(["--model", str(phantom_run), "--data", str(phantom_dir), "--out", str(tmp_path / "o"),
                             "--postprocess", str(damaged)]) == 2
