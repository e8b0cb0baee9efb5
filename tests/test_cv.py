"""python -m tfseg.cv: one run per fold, out-of-fold predictions for every patient, resumable."""
import csv
import json

import numpy as np
import pytest

from tfseg.cli import cv as cv_cli
from tfseg.data.kaggle import scan_folder

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


def test_cv_on_the_phantom_predicts_every_patient_out_of_fold_and_a_second_call_trains_nothing(
        phantom_dir, tmp_path, monkeypatch):
    out = tmp_path / "cv"
    _run(phantom_dir, out, folds=2)
    rows = _check(out, phantom_dir, folds=2)

    from tfseg.training import loop

    monkeypatch.setattr(loop, "train", lambda *a, **k: pytest.fail("a finished fold was trained again"))
    _run(phantom_dir, out, folds=2)
    assert _check(out, phantom_dir, folds=2) == rows


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
