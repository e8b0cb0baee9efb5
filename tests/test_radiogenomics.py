"""Specification of tfseg.radiogenomics: shape features, the exact test and the command line."""
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tfseg.data.kaggle import DataError
from tfseg.radiogenomics.fisher import bonferroni, ffh_exact
from tfseg.radiogenomics.masks import GENOMIC_COLUMNS, iter_manual_masks
from tfseg.radiogenomics.shape import (ShapeSettings, angular_standard_deviation, bevr, boundary,
                                       ellipsoid_volume, margin_fluctuation, minimum_volume_ellipsoid,
                                       shape_features)
from tfseg.cli.radiogenomics import main
from tfseg.radiogenomics.study import run

CUBE_RATIO = 2 / (math.pi * math.sqrt(3))  # unit cube / its circumscribed sphere
TOL = 1e-6  # relative; the Khachiyan tolerance is 1e-7


def ball(radius, pad=2):
    grid = np.mgrid[tuple(slice(-radius - pad, radius + pad + 1) for _ in range(3))]
    return (grid**2).sum(axis=0) <= radius**2


def l_shape():
    mask = np.zeros((6, 14, 14), bool)
    mask[1:4, 1:11, 1:4] = True
    mask[1:3, 1:4, 1:12] = True
    return mask


def disc(radius, size=128):
    yy, xx = np.mgrid[:size, :size] - size / 2
    return np.hypot(yy, xx) <= radius


def polar_region(radius_of_angle, size=160):
    """A star-shaped 2-D region r <= radius_of_angle(theta) around the image centre."""
    yy, xx = np.mgrid[:size, :size] - size / 2
    return np.hypot(yy, xx) <= radius_of_angle(np.arctan2(yy, xx))


# ---------------------------------------------------------------- BEVR ----

def test_bevr_of_a_single_voxel_is_two_over_pi_root_three():
    mask = np.zeros((3, 3, 3), bool)
    mask[1, 1, 1] = True
    assert bevr(mask) == pytest.approx(CUBE_RATIO, rel=TOL)


def test_bevr_of_an_axis_aligned_box_of_voxels_is_two_over_pi_root_three():
    mask = np.zeros((10, 12, 14), bool)
    mask[2:5, 1:9, 3:4] = True
    assert bevr(mask) == pytest.approx(CUBE_RATIO, rel=TOL)


def test_bevr_of_a_voxelised_ball_is_close_to_but_below_one():
    ratios = [bevr(ball(r)) for r in (5, 20)]
    assert 0.85 < ratios[1] < 1.0
    assert ratios[0] < ratios[1]  # the corners of the voxels matter less as the ball grows


def test_bevr_is_unchanged_when_an_axis_is_stretched_by_replicating_voxels():
    mask = l_shape()
    reference = bevr(mask)
    assert bevr(np.repeat(mask, 3, axis=0)) == pytest.approx(reference, rel=TOL)
    assert bevr(np.repeat(mask, 2, axis=2)) == pytest.approx(reference, rel=TOL)


def test_bevr_is_at_most_one_for_irregular_shapes():
    rng = np.random.default_rng(0)
    for _ in range(5):
        blob = rng.random((8, 12, 12)) < 0.5
        assert 0 < bevr(blob) <= 1


def test_khachiyan_drops_interior_points_and_finds_the_circumcircle_of_a_triangle():
    triangle = np.array([[1.0, 0.0], [-0.5, math.sqrt(3) / 2], [-0.5, -math.sqrt(3) / 2]]) * 2 + [3.0, -1.0]
    inside = np.array([[3.2, -1.1], [2.5, -0.8], [3.0, -1.0]])
    fit = minimum_volume_ellipsoid(np.vstack([triangle, inside]), tol=1e-9)
    centre, a = fit.centre, fit.a
    assert fit.converged(1e-9)
    assert centre == pytest.approx([3.0, -1.0], abs=1e-6)
    assert ellipsoid_volume(a) == pytest.approx(math.pi * 2.0**2, rel=1e-6)  # circumradius 2


# ------------------------------------------------------------- ASD, MF ----

def test_asd_of_a_disc_is_near_zero_and_of_a_star_is_larger():
    angle = np.linspace(0, 2 * np.pi, 360, endpoint=False)
    exact_circle = np.stack([30 * np.sin(angle), 30 * np.cos(angle)], axis=1)
    assert angular_standard_deviation(exact_circle, np.zeros(2)) < 1e-12
    disc_asd = angular_standard_deviation(*boundary(disc(40)))
    star_asd = angular_standard_deviation(*boundary(polar_region(lambda t: 45 + 15 * np.cos(5 * t))))
    assert disc_asd < 0.3  # pixels: the staircase of a digital circle
    assert star_asd > 10 * disc_asd


def test_mf_of_a_circle_is_near_zero_and_of_a_jagged_outline_is_larger():
    angle = np.linspace(0, 2 * np.pi, 360, endpoint=False)
    exact_circle = np.stack([5 + 30 * np.sin(angle), 7 + 30 * np.cos(angle)], axis=1)
    assert margin_fluctuation(exact_circle, np.array([5.0, 7.0])) < 1e-12
    digital_mf = margin_fluctuation(*boundary(disc(40)))
    jagged_mf = margin_fluctuation(*boundary(polar_region(lambda t: 50 + 4 * np.sign(np.sin(36 * t)))))
    assert digital_mf < 0.006  # the pixel staircase: about 0.2 px / 40 px
    assert jagged_mf > 10 * digital_mf


def test_mf_does_not_depend_on_size():
    small = margin_fluctuation(*boundary(polar_region(lambda t: 30 + 3 * np.sin(12 * t))))
    large = margin_fluctuation(*boundary(polar_region(lambda t: 60 + 6 * np.sin(12 * t), size=200)))
    assert large == pytest.approx(small, rel=0.15)


def test_features_of_an_empty_mask_are_nan():
    features = shape_features(np.zeros((4, 16, 16), np.uint8))
    assert features["voxels"] == 0 and features["slice"] == -1
    assert all(math.isnan(features[name]) for name in ("bevr", "asd", "mf"))


def test_features_use_only_the_largest_connected_component():
    mask = np.zeros((12, 64, 64), bool)
    mask[2:10] = disc(14, size=64)
    reference = shape_features(mask)
    mask[0, 0:3, 0:3] = True  # a separate speck
    with_speck = shape_features(mask)
    assert with_speck["mask_voxels"] == reference["mask_voxels"] + 9
    for name in ("bevr", "asd", "mf", "voxels", "slice"):
        assert with_speck[name] == reference[name]


def test_an_even_smoothing_window_is_rejected():
    with pytest.raises(ValueError, match="mf_window=10"):
        ShapeSettings(mf_window=10)


# --------------------------------------------------------- exact test ----

def test_exact_test_equals_scipy_fisher_exact_on_2x2_tables():
    rng = np.random.default_rng(1)
    tables = [rng.integers(0, 20, size=(2, 2)) for _ in range(200)] + [[[0, 5], [5, 0]], [[3, 3], [3, 3]]]
    for table in tables:
        assert ffh_exact(table) == pytest.approx(stats.fisher_exact(table).pvalue, rel=1e-9, abs=1e-15)


def test_exact_test_of_a_hand_computed_2x3_table():
    # Margins: rows (2, 2), columns (1, 2, 1), N = 4. First rows and probabilities (of C(4,2) = 6):
    # (1,1,0) 2/6, (1,0,1) 1/6, (0,2,0) 1/6, (0,1,1) 2/6. Observed (1,0,1): p = 1/6 + 1/6.
    assert ffh_exact([[1, 0, 1], [0, 2, 0]]) == pytest.approx(1 / 3, rel=1e-12)


def test_exact_test_equals_an_exhaustive_permutation_test_on_2x3_tables():
    for table in ([[2, 0, 1], [1, 2, 1]], [[1, 2, 0], [0, 1, 3]]):  # N = 7: 5,040 orderings
        exhaustive = stats.fisher_exact(table, method=stats.PermutationMethod(n_resamples=np.inf)).pvalue
        assert ffh_exact(table) == pytest.approx(exhaustive, rel=1e-9)


def test_exact_test_ignores_empty_columns_and_is_one_without_contrast():
    assert ffh_exact([[4, 0, 1, 6], [2, 0, 7, 1]]) == pytest.approx(ffh_exact([[4, 1, 6], [2, 7, 1]]))
    assert ffh_exact([[0, 0, 0], [3, 4, 5]]) == 1.0


def test_bonferroni_multiplies_and_caps_at_one():
    assert bonferroni(0.001, 10) == pytest.approx(0.01)
    assert bonferroni(0.2, 18) == 1.0


# ------------------------------------------------------- command line ----

@pytest.fixture
def data_with_clusters(real_data_dir, tmp_path):
    """The restored patients with a data.csv: the real one when restored, else a made-up one."""
    from pathlib import Path

    real = Path(real_data_dir)
    if (real / "data.csv").is_file():
        return real
    root = tmp_path / "kaggle_3m"
    root.mkdir()
    patients = sorted(p.name for p in real.iterdir() if p.is_dir())
    for patient in patients:
        (root / patient).symlink_to(real / patient)
    frame = pd.DataFrame({"Patient": [p[:12] for p in patients],
                          **{c: [1 + i % 2 for i in range(len(patients))] for c in GENOMIC_COLUMNS}})
    frame.to_csv(root / "data.csv", index=False)
    return root


def test_cli_on_real_patients_writes_every_file(data_with_clusters, tmp_path):
    out = tmp_path / "rg"
    assert main(["--data", str(data_with_clusters), "--masks", "manual", "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["features.csv", "figure.png", "summary.json", "tests.csv"]
    features = pd.read_csv(out / "features.csv")
    assert len(features) == len([p for p in data_with_clusters.iterdir() if p.is_dir()])
    assert features[["bevr", "asd", "mf"]].notna().all().all() and (features["bevr"] <= 1).all()
    tests = pd.read_csv(out / "tests.csv")
    assert len(tests[tests["family"] == "primary"]) == 18
    assert {"feature", "cluster", "n", "k", "table", "p", "p_bonferroni_10", "p_bonferroni_18",
            "significant"} <= set(tests.columns)
    summary = json.loads((out / "summary.json").read_text(),
                         parse_constant=lambda c: pytest.fail(f"{c} in summary.json is not valid JSON"))
    assert summary["patients"] == len(features) and summary["empty_masks"]["count"] == 0
    assert (out / "figure.png").read_bytes()[:4] == b"\x89PNG"


def test_predicted_masks_as_npz_or_tif_give_the_manual_features(data_with_clusters, tmp_path):
    predictions = tmp_path / "pred"
    predictions.mkdir()
    for i, item in enumerate(iter_manual_masks(data_with_clusters)):
        if i == 0:  # the kaggle layout
            shutil.copytree(data_with_clusters / item.patient, predictions / item.patient,
                            ignore=lambda _, names: [n for n in names if not n.endswith("_mask.tif")])
        else:
            np.savez(predictions / f"{item.patient}.npz", mask=item.mask.astype(np.uint8))
    manual = run(data_with_clusters, "manual", tmp_path / "manual", log=lambda _: None)
    predicted = run(data_with_clusters, predictions, tmp_path / "predicted", log=lambda _: None)
    assert predicted["mask_kind"] == "predicted" and manual["mask_kind"] == "manual"
    a = pd.read_csv(tmp_path / "manual" / "features.csv").drop(columns="mask_source")
    b = pd.read_csv(tmp_path / "predicted" / "features.csv").drop(columns="mask_source")
    pd.testing.assert_frame_equal(a, b)


def test_patients_with_an_empty_mask_are_counted_and_left_out_of_the_tests(data_with_clusters, tmp_path):
    predictions = tmp_path / "pred"
    predictions.mkdir()
    items = list(iter_manual_masks(data_with_clusters))
    for i, item in enumerate(items):
        np.savez(predictions / f"{item.patient}.npz", mask=item.mask if i else np.zeros_like(item.mask))
    summary = run(data_with_clusters, predictions, tmp_path / "out", log=lambda _: None)
    assert summary["empty_masks"] == {"count": 1, "patients": [items[0].patient],
                                      "note": "features NaN, excluded from every test"}
    tests = pd.read_csv(tmp_path / "out" / "tests.csv")
    assert (tests["n"] <= len(items) - 1).all()


def test_missing_data_csv_is_an_error_saying_where_it_comes_from(real_data_dir, tmp_path):
    root = tmp_path / "kaggle_3m"
    root.mkdir()
    with pytest.raises(DataError, match=r"data\.csv not found; it ships with the Kaggle download"):
        run(root, "manual", tmp_path / "out")


def test_a_prediction_in_preprocessed_geometry_is_an_error_naming_the_file(data_with_clusters, tmp_path):
    predictions = tmp_path / "pred"
    predictions.mkdir()
    np.savez(predictions / "TCGA_XX_0000_20000101.npz", mask=np.zeros((20, 128, 128), np.uint8))
    with pytest.raises(DataError, match=r"TCGA_XX_0000_20000101\.npz: mask has shape \(20, 128, 128\).*native"):
        run(data_with_clusters, predictions, tmp_path / "out")


def test_a_prediction_with_the_wrong_slice_count_is_an_error(data_with_clusters, tmp_path):
    patient = sorted(p.name for p in data_with_clusters.iterdir() if p.is_dir())[0]
    predictions = tmp_path / "pred"
    predictions.mkdir()
    np.savez(predictions / f"{patient}.npz", mask=np.zeros((2, 256, 256), bool))
    with pytest.raises(DataError, match=f"{patient}.npz: 2 slices, but"):
        run(data_with_clusters, predictions, tmp_path / "out")


def test_an_untrusted_ellipsoid_fit_is_an_error_naming_the_patient_and_mask(data_with_clusters, tmp_path, monkeypatch):
    from tfseg.radiogenomics import shape

    exact = shape.minimum_volume_ellipsoid
    monkeypatch.setattr(shape, "minimum_volume_ellipsoid", lambda points, tol: exact(points, tol=tol)._replace(gap=1.0))
    patient = sorted(p.name for p in data_with_clusters.iterdir() if p.is_dir())[0]
    with pytest.raises(DataError, match=f"{patient} \\(manual\\): bevr\\(\\).*MAX_BEVR_GAP"):
        run(data_with_clusters, "manual", tmp_path / "out")


def test_khachiyan_stopped_early_still_encloses_every_point_and_reports_its_gap():
    rng = np.random.default_rng(3)
    points = rng.normal(size=(200, 3)) * [3.0, 1.0, 0.5]
    early = minimum_volume_ellipsoid(points, tol=1e-12, max_iter=5)
    assert early.iterations == 5 and not early.converged(1e-3)
    # The gap reported is the returned ellipsoid's own: one more iteration starts from it.
    assert minimum_volume_ellipsoid(points, tol=early.gap * (1 + 1e-9), max_iter=6).iterations == 5
    offsets = points - early.centre
    assert np.einsum("ni,ij,nj->n", offsets, early.a, offsets).max() == pytest.approx(1.0)
    exact = minimum_volume_ellipsoid(points, tol=1e-9)
    assert exact.converged(1e-9)
    # Never smaller than the minimum; looser by roughly the gap.
    assert ellipsoid_volume(exact.a) <= ellipsoid_volume(early.a) <= ellipsoid_volume(exact.a) * (1 + 3 * early.gap)


def test_bevr_accepts_a_fit_stopped_within_the_allowed_gap_and_refuses_a_looser_one(monkeypatch):
    from tfseg.radiogenomics import shape

    box = np.zeros((4, 6, 6), bool)
    box[1:3, 1:4, 2:5] = True
    exact = shape.minimum_volume_ellipsoid
    for gap, accepted in ((shape.MAX_BEVR_GAP / 2, True), (shape.MAX_BEVR_GAP * 10, False)):
        stopped = lambda points, tol, gap=gap: exact(points, tol=tol)._replace(gap=gap)  # noqa: E731
        monkeypatch.setattr(shape, "minimum_volume_ellipsoid", stopped)
        if accepted:
            assert shape.bevr(box) == pytest.approx(2 / (math.pi * math.sqrt(3)), rel=1e-4)
        else:
            with pytest.raises(ValueError, match="MAX_BEVR_GAP"):
                shape.bevr(box)


def test_paper_verdict_is_one_rule_for_summary_and_report():
    """BEVR x RNASeq on the manual masks (p = 0.000215 against the paper's p < 0.0002) counts as reproduced in
    summary.json and in the report alike: within 1.5x of the bound and significant after the x10 correction."""
    import pandas as pd

    from tfseg.radiogenomics.study import BELOW_BOUND, NEAR_BOUND, NOT_REPRODUCED, compare_with_paper, paper_verdict

    assert paper_verdict(0.0001, 0.0002) == BELOW_BOUND
    assert paper_verdict(0.000215, 0.0002) == NEAR_BOUND
    assert paper_verdict(0.00031, 0.0002) == NOT_REPRODUCED  # more than 1.5x the bound
    assert paper_verdict(0.0074, 0.005) == NOT_REPRODUCED  # within 1.5x but 10p = 0.074: not significant
    tests = pd.DataFrame([{"family": "primary", "feature": f, "cluster": c, "p": 0.5}
                          for f in ("bevr", "asd", "mf")
                          for c in ("RNASeqCluster", "MethylationCluster", "miRNACluster", "CNCluster",
                                    "COCCluster", "OncosignCluster")])
    tests.loc[(tests.feature == "bevr") & (tests.cluster == "RNASeqCluster"), "p"] = 0.000215
    rows = compare_with_paper(tests)
    strongest = rows[0]
    assert (strongest["feature"], strongest["cluster"], strongest["verdict"], strongest["reproduced"]) == \
        ("bevr", "RNASeqCluster", NEAR_BOUND, True)
    assert [r["reproduced"] for r in rows].count(True) == 2  # the 0.0002 finding and BEVR x RNASeq < 0.02
