"""python -m tfseg.cv: one run per fold, out-of-fold predictions for every patient, resumable."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tfseg.cli import cv as cv_cli
from tfseg.data.kaggle import scan_folder
from tfseg.postprocess import postprocess_volume

TINY = ["--image-size", "64", "--base-filters", "4", "--batch-size", "4", "--epochs", "1", "--precision", "float32",
        "--image-every", "100"]


def _run(data, out, folds):
    assert cv_cli.main(["--folds", str(folds), "--out", str(out), "--data", str(data), "--tfrecords",
                    str(out.parent / "tfr"), *TINY]) == 0


def _check(out, data, folds):
    patients = sorted(f.patient for f in scan_folder(data))
    with open(out / "per_patient.csv") as f:
        rows = list(csv.DictReader(f))
    # Every patient predicted exactly once, by the fold that did not train on it.
    assert sorted(r["patient"] for r in rows) == patients
    for row in rows:
        config = json.loads((out / f"fold-{row['fold']}" / "config.json").read_text())
        assert row["patient"] in config["split"]["validation"]
        assert row["patient"] not in config["split"]["training"]
        mask = np.load(out / "predictions" / f"{row['patient']}.npz")["mask"]
        assert mask.dtype == np.uint8 and mask.shape[1:] == (256, 256) and set(np.unique(mask)) <= {0, 1}
        assert 0.0 <= float(row["dsc_pre"]) <= 1.0 and 0.0 <= float(row["dsc_native"]) <= 1.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["patients"] == len(patients) and summary["folds"] == folds
    assert summary["pre"]["mean"] == pytest.approx(np.mean([float(r["dsc_pre"]) for r in rows]))
    assert set(summary["pre_by_fold"]) == {str(k) for k in range(folds)}
    assert (out / "dsc.png").stat().st_size > 0
    return rows


@pytest.fixture(scope="module")
def phantom_cv(phantom_dir, tmp_path_factory):
    """A finished 2-fold CV of tiny networks on the phantom (read-only: tests that change it copy it)."""
    out = tmp_path_factory.mktemp("cv") / "cv"
    _run(phantom_dir, out, folds=2)
    return out


@pytest.fixture
def no_training(monkeypatch):
    from tfseg.training import loop

    monkeypatch.setattr(loop, "train", lambda *a, **k: pytest.fail("a finished fold was trained again"))


def _copy(cv, tmp_path):
    import shutil

    return Path(shutil.copytree(cv, tmp_path / "cv"))


def test_cv_on_the_phantom_predicts_every_patient_out_of_fold_and_a_second_call_trains_nothing(
        phantom_cv, phantom_dir, tmp_path, no_training):
    rows = _check(phantom_cv, phantom_dir, folds=2)
    out = _copy(phantom_cv, tmp_path)
    _run(phantom_dir, out, folds=2)
    assert _check(out, phantom_dir, folds=2) == rows


def test_cv_writes_every_patients_out_of_fold_probabilities_in_both_geometries(phantom_cv, phantom_dir):
    from tfseg.postprocess_choice import read_probabilities

    with open(phantom_cv / "per_patient.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        saved = read_probabilities(phantom_cv / "probabilities" / f"{row['patient']}.npz")
        mask = np.load(phantom_cv / "predictions" / f"{row['patient']}.npz")["mask"]
        assert saved.patient == row["patient"] and saved.fold == int(row["fold"])
        with np.load(phantom_cv / "probabilities" / f"{row['patient']}.npz") as stored:
            assert stored["pre"].dtype == stored["native"].dtype == np.float16
        assert saved.native.shape == saved.native_truth.shape == mask.shape
        assert saved.pre.shape == saved.pre_truth.shape and saved.pre.shape[1:] == (64, 64)
        assert 0.0 < saved.voxel_scale_pre <= 1.0  # 64 px slices of a head wider than 64 native pixels
        # The native probabilities are the ones the mask was cut from: float16 keeps every voxel's side of 0.5.
        np.testing.assert_array_equal(postprocess_volume(saved.native), mask > 0)
        assert row["suspect"] in ("0", "1") and 0.0 <= float(row["kept_mass"]) <= 1.0


def test_predict_only_rewrites_the_probabilities_of_a_finished_cv_without_training(phantom_cv, tmp_path,
                                                                                   no_training, capsys):
    import shutil

    out = _copy(phantom_cv, tmp_path)
    shutil.rmtree(out / "probabilities")
    before = (out / "per_patient.csv").read_text()
    (out / "per_patient.csv").unlink()
    # No --data: the folds' own data folder; a training flag is ignored, with a note.
    assert cv_cli.main(["--out", str(out), "--predict-only", "--arch", "unet"]) == 0
    assert "ignoring the training flags --arch unet" in capsys.readouterr().err
    assert (out / "per_patient.csv").read_text() == before
    assert sorted(p.name for p in (out / "probabilities").iterdir()) == \
        sorted(p.name for p in (phantom_cv / "probabilities").iterdir())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_config"] == json.loads((phantom_cv / "summary.json").read_text())["train_config"]


def test_predict_only_with_a_postprocess_file_scores_the_rule_beside_the_protocol(phantom_cv, tmp_path, no_training):
    out = _copy(phantom_cv, tmp_path)
    rule_file = tmp_path / "postprocess.json"
    rule_file.write_text(json.dumps({"rule": {"threshold": 0.5, "components": "none"}}))
    assert cv_cli.main(["--out", str(out), "--predict-only", "--postprocess", str(rule_file)]) == 0
    with open(out / "per_patient.csv") as f:
        rows = list(csv.DictReader(f))
    assert all({"dsc_pre", "dsc_rule_pre", "dsc_rule_native", "dsc_rule_mask_pre"} <= set(row) for row in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pre"] == json.loads((phantom_cv / "summary.json").read_text())["pre"]  # the protocol's
    assert summary["rule"]["mean"] == pytest.approx(np.mean([float(r["dsc_rule_pre"]) for r in rows]))
    assert summary["postprocess"]["file"] == str(rule_file) and not summary["postprocess"]["is_protocol"]


def test_predict_only_without_every_fold_trained_is_an_error_naming_the_missing_model(tmp_path, capsys):
    for fold in range(2):
        (tmp_path / f"fold-{fold}").mkdir()
        (tmp_path / f"fold-{fold}" / "config.json").write_text(json.dumps({"config": {"folds": 2}}))
    (tmp_path / "fold-0" / "best.keras").write_bytes(b"")
    assert cv_cli.main(["--out", str(tmp_path), "--predict-only"]) == 2
    assert str(tmp_path / "fold-1" / "best.keras") in capsys.readouterr().err


def test_cv_on_real_patients_writes_native_masks_of_the_original_slice_count(real_data_dir, tmp_path):
    out = tmp_path / "cv"
    _run(real_data_dir, out, folds=2)
    for row in _check(out, real_data_dir, folds=2):
        folder = next(f for f in scan_folder(real_data_dir) if f.patient == row["patient"])
        assert np.load(out / "predictions" / f"{row['patient']}.npz")["mask"].shape[0] == len(folder.images)


def test_fold_flags_are_set_by_cv_and_rejected_on_its_command_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cv_cli.main(["--out", str(tmp_path), "--fold", "1"])
    assert "set per fold by tfseg.cv" in capsys.readouterr().err
