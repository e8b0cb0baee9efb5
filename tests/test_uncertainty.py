"""evaluate.py --uncertainty (tfseg.uncertainty): where the views disagree, per voxel and per patient."""
import json
from pathlib import Path

import numpy as np
import pytest
from test_ensemble import SIZE, make_run, stand_in
from test_evaluate import BOX_SIZE, oracle, read_rows, write_box_phantom

from tfseg.cli import cv as cv_cli
from tfseg.data.kaggle import read_patient, scan_folder
from tfseg.data.preprocess import preprocess_volume
from tfseg.evaluation import EvalOptions, evaluate
from tfseg.inference import LoadedModel, ensemble_of, mean_of_views, predict_views, predict_volume
from tfseg.uncertainty import disagreement_map, disagreement_score, spearman_with_dsc

QUIET = {"overlays": False, "progress": False}


def left_band(width: int = 32, band: int = 10):
    """A predict function that ignores its input and calls columns [0, band) tumour: its flip disagrees."""
    def predict(batch):
        out = np.zeros(batch.shape[:3], np.float32)
        out[:, :, :band] = 1.0
        return out

    return predict


def cuboid(shape=(4, 32, 32), rows=(8, 24), columns=(8, 24)) -> np.ndarray:
    volume = np.zeros(shape, np.float32)
    volume[:, rows[0]:rows[1], columns[0]:columns[1]] = 0.9
    return volume


# ----------------------------------------------------------------------------
# The map and the score
# ----------------------------------------------------------------------------

def test_the_map_is_zero_where_the_flip_agrees_and_positive_where_it_differs():
    image = np.zeros((3, 32, 32, 3), np.float32)
    views = predict_views([left_band()], image, batch_size=2, flip=True)
    assert views.shape == (2, 3, 32, 32)
    uncertainty = disagreement_map(views)
    # The flipped answer, flipped back, calls the right band [22, 32) tumour: both bands are disputed.
    disputed = np.zeros((32, 32), bool)
    disputed[:, :10] = disputed[:, 22:] = True
    np.testing.assert_array_equal(uncertainty[:, disputed], 0.5)
    np.testing.assert_array_equal(uncertainty[:, ~disputed], 0.0)
    assert disagreement_score(views) == 1.0  # the two masks share no voxel


def test_views_that_agree_have_a_zero_map_and_score():
    same = np.stack([cuboid(), cuboid()])
    assert not disagreement_map(same).any()
    assert disagreement_score(same) == 0.0


def test_the_score_ranks_the_case_whose_views_disagree_more_first():
    base = cuboid()
    nearly = np.stack([base, cuboid(columns=(8, 23))])  # one column of 16 disputed: 1 - 15/16
    half = np.stack([base, cuboid(columns=(16, 32))])  # overlap 8 of 24 columns: 1 - 8/24
    assert disagreement_score(nearly) == pytest.approx(1 / 16)
    assert disagreement_score(half) == pytest.approx(2 / 3)
    assert disagreement_score(half) > disagreement_score(nearly)


def test_no_tumour_in_any_view_scores_0_not_nan():
    assert disagreement_score(np.zeros((4, 3, 8, 8), np.float32)) == 0.0


def test_the_score_uses_the_protocols_largest_component():
    speck = cuboid()
    speck[0, 0, 0] = 0.9  # a one-voxel island: the largest component drops it, so it is not disputed
    views = np.stack([cuboid(), speck])
    assert disagreement_score(views) == 0.0
    assert disagreement_score(views, lcc=False) > 0.0


def test_fewer_than_two_views_is_an_error_naming_the_shape():
    with pytest.raises(ValueError, match=r"K >= 2 .* got shape \(1, 4, 32, 32\)"):
        disagreement_score(cuboid()[None])


def test_the_heat_overlay_shows_the_plain_flair_where_the_map_is_0_and_full_colour_at_its_maximum():
    from tfseg.visualize import heat_overlay

    flair = np.full((4, 4), 100, np.uint8)
    heat = np.zeros((4, 4), np.float32)
    heat[0] = 0.5
    rgb = heat_overlay(flair, heat, vmax=0.5)
    np.testing.assert_array_equal(rgb[1:], 100)
    np.testing.assert_array_equal(rgb[0], np.broadcast_to([252, 255, 164], (4, 3)))  # inferno's brightest end


# ----------------------------------------------------------------------------
# Spearman's rho against the DSC
# ----------------------------------------------------------------------------

def test_spearman_is_minus_1_when_the_most_uncertain_patients_score_lowest():
    result = spearman_with_dsc([0.1, 0.5, 0.3, 0.9], [0.95, 0.6, 0.8, 0.2])
    assert result["spearman_rho_with_dsc"] == pytest.approx(-1.0) and result["n_patients"] == 4


@pytest.mark.parametrize("scores, dsc, why", [
    ([], [], "at least 3 patients"),
    ([0.2, 0.4], [0.9, 0.8], "at least 3 patients"),
    ([0.2, 0.2, 0.2], [0.9, 0.8, 0.1], "the uncertainty is the same"),
    ([0.1, 0.2, 0.3], [1.0, 1.0, 1.0], "the DSC is the same"),
])
def test_spearman_is_none_with_a_reason_when_undefined(scores, dsc, why):
    result = spearman_with_dsc(scores, dsc)
    assert result["spearman_rho_with_dsc"] is None and result["p_value"] is None
    assert why in result["why"]


# ----------------------------------------------------------------------------
# In evaluation: the masks do not change
# ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def box_dir(tmp_path_factory):
    return write_box_phantom(tmp_path_factory.mktemp("box") / "kaggle_3m")


def right_unflipped_only(data):
    """The oracle on the image, nothing on the flipped image: the two views disagree on the whole tumour."""
    right = oracle(data, BOX_SIZE)

    def predict(batch):
        try:
            return right(batch)
        except KeyError:
            return np.zeros(batch.shape[:3], np.float32)

    return predict


@pytest.mark.parametrize("tta", [False, True])
def test_uncertainty_leaves_every_score_unchanged_and_adds_a_column(box_dir, tmp_path, tta):
    predict = right_unflipped_only(box_dir)
    plain = evaluate(box_dir, predict, BOX_SIZE, tmp_path / "plain", options=EvalOptions(tta=tta), **QUIET)
    measured = evaluate(box_dir, predict, BOX_SIZE, tmp_path / "measured",
                        options=EvalOptions(tta=tta, uncertainty=True), **QUIET)
    assert measured["dsc_native_by_patient"] == plain["dsc_native_by_patient"]
    assert measured["dsc_by_patient"] == plain["dsc_by_patient"]
    assert measured["mean_dsc"] == (0.0 if tta else 1.0)  # not vacuous: the flip decides the TTA mask
    rows = read_rows(tmp_path / "measured" / "per_patient.csv")
    plain_rows = read_rows(tmp_path / "plain" / "per_patient.csv")
    for patient, row in rows.items():
        assert float(row.pop("uncertainty")) == 1.0  # the flipped view finds nothing the other finds
        # Only the flag changes: an uncertainty above 0.5 makes the mask suspect (tfseg.postprocess.suspect_reasons).
        assert row.pop("suspect") == "1" and plain_rows[patient].pop("suspect") == "0"
        assert row == plain_rows[patient]
    assert "uncertainty" not in plain and measured["uncertainty"]["n_patients"] == 2


def test_an_ensembles_member_views_give_exactly_its_prediction(phantom_dir):
    members = [LoadedModel(Path(name), "keras", stand_in(bias).predict_on_batch, SIZE, name)
               for name, bias in (("a", -4.0), ("b", -3.0))]
    ensemble = ensemble_of(members)
    volume = read_patient(scan_folder(phantom_dir)[0])
    image, _, _ = preprocess_volume(volume.image, volume.mask, SIZE)
    for tta in (False, True):
        views = predict_views(ensemble.sources, image, batch_size=5, flip=True)
        assert len(views) == 4
        np.testing.assert_array_equal(mean_of_views(views, 2, tta),
                                      predict_volume(ensemble.predict, image, batch_size=5, tta=tta))
        assert disagreement_map(views).max() > 0  # the members differ in their threshold


# ----------------------------------------------------------------------------
# evaluate.py --uncertainty, end to end
# ----------------------------------------------------------------------------

def test_evaluate_py_uncertainty_on_an_ensemble_writes_the_column_the_ranking_and_the_maps(phantom_dir, tmp_path,
                                                                                        capsys):
    from tfseg.cli import evaluate as evaluate_py

    names = [f.patient for f in scan_folder(phantom_dir)]
    runs = [str(make_run(tmp_path / name, stand_in(bias), phantom_dir, names[:1]))
            for name, bias in (("a", -4.0), ("b", -3.0))]
    out = tmp_path / "eval"
    assert evaluate_py.main(["--model", *runs, "--data", str(phantom_dir), "--out", str(out), "--patients", "all",
                             "--uncertainty"]) == 0
    assert "uncertainty: Spearman rho" in capsys.readouterr().out
    rows = read_rows(out / "per_patient.csv")
    scores = [float(row["uncertainty"]) for row in rows.values()]
    assert len(scores) == 4 and all(0.0 <= s <= 1.0 for s in scores)
    ranking = json.loads((out / "summary.json").read_text())["uncertainty"]
    assert ranking["views"].startswith("4 views") and ranking["n_patients"] == 4
    assert sorted(ranking["check_first"]) == sorted(names)
    assert ranking["spearman_rho_with_dsc"] is not None or ranking["why"]
    import imageio.v3 as iio

    montage = iio.imread(out / "overlays" / f"{names[0]}_montage.png")
    assert montage.shape == (2 * 256, 6 * 256, 3)  # overlays above, the uncertainty maps below
    assert iio.imread(out / "overlays" / f"{names[0]}.gif", index=0).shape[1] == 2 * 256
    assert not list(out.rglob(".*tmp-*"))


def test_cv_uncertainty_scores_every_out_of_fold_patient(phantom_dir, tmp_path):
    from tfseg import cv

    names = [f.patient for f in scan_folder(phantom_dir)]
    out = tmp_path / "cv"
    for fold, validation in enumerate((names[:2], names[2:])):
        run = make_run(cv.fold_dir(out, fold), stand_in(-3.5), phantom_dir, validation)
        (run / "metrics.json").write_text("{}")  # a finished fold: tfseg.cv goes straight to predicting
    assert cv_cli.main(["--folds", "2", "--out", str(out), "--data", str(phantom_dir), "--uncertainty"]) == 0
    rows = read_rows(out / "per_patient.csv")
    assert sorted(rows) == sorted(names) and all(0.0 <= float(r["uncertainty"]) <= 1.0 for r in rows.values())
    ranking = json.loads((out / "summary.json").read_text())["uncertainty"]
    assert ranking["n_patients"] == 4 and ranking["views"].startswith("2 views")
