"""Specification of tfseg.robustness: the served model under perturbations of the raw slices."""
import csv
import json

import numpy as np
import pytest
from test_serving import SIZE, flair_threshold_model

from tfseg.cli import robustness as robustness_cli
from tfseg import export, robustness
from tfseg.data.kaggle import PatientVolume, read_patient, scan_folder
from tfseg.data.preprocess import preprocess_volume
from tfseg.evaluation import evaluate_patient
from tfseg.robustness import FLAIR, POST, PRE, PERTURBATIONS, perturb, perturbation_rng, score_patient

GEOMETRIC = [name for name, p in PERTURBATIONS.items() if p.kind == "geometry"]


@pytest.fixture(scope="module")
def real_volume(real_data_dir):
    """The first restored real patient, whole (about 20 slices)."""
    return read_patient(scan_folder(real_data_dir)[0])


@pytest.fixture(scope="module")
def framed_volume(real_volume):
    """The real patient with an 8-pixel frame blanked, so that a 5-pixel shift loses nothing but zeros."""
    image = np.zeros_like(real_volume.image)
    image[:, 8:-8, 8:-8] = real_volume.image[:, 8:-8, 8:-8]
    return PatientVolume(real_volume.patient, image, real_volume.mask)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(keras stand-in model, its segment_volume as a numpy function, its SavedModel folder)."""
    model = flair_threshold_model()
    folder = export.export_saved_model(model, tmp_path_factory.mktemp("robust") / "export")
    return model, robustness.load_served_model(folder).segment, folder


def apply(name, slices, seed=0, patient="P"):
    return perturb(PERTURBATIONS[name], slices, perturbation_rng(seed, patient, name))


def flair_above(level):
    """A pointwise segmenter (FLAIR > level): equivariant to every exact re-arrangement of the voxels."""
    return lambda slices: slices[..., FLAIR] > level


# ----------------------------------------------------------------------------
# The suite
# ----------------------------------------------------------------------------

def test_suite_covers_missing_sequences_intensity_noise_blur_and_geometry_with_clean_first():
    assert list(PERTURBATIONS)[0] == "clean"
    assert {"pre_missing", "post_missing", "both_missing", "scale_0.8", "scale_1.2", "gamma_0.7", "gamma_1.4",
            "contrast_0.7", "contrast_1.3", "noise_5", "noise_10", "blur_1", "rotate_+5", "rotate_-5", "shift_+5",
            "shift_-5", "mirror", "reverse_slices"} <= set(PERTURBATIONS)
    assert set(GEOMETRIC) == {n for n, p in PERTURBATIONS.items() if p.restore is not None}


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_every_perturbation_maps_uint8_slices_to_uint8_slices_of_the_same_shape_and_is_documented(name, real_volume):
    out = apply(name, real_volume.image)
    assert out.dtype == np.uint8 and out.shape == real_volume.image.shape
    function = PERTURBATIONS[name].apply
    assert (getattr(function, "func", function).__doc__ or "").strip()
    assert name == "clean" or not np.array_equal(out, real_volume.image)


@pytest.mark.parametrize("name, replaced", [("pre_missing", [PRE]), ("post_missing", [POST]),
                                            ("both_missing", [PRE, POST])])
def test_a_missing_sequence_is_replaced_by_flair_and_the_other_channels_are_kept(name, replaced, real_volume):
    image = real_volume.image
    out = apply(name, image)
    for channel in (PRE, FLAIR, POST):
        expected = image[..., FLAIR] if channel in replaced else image[..., channel]
        np.testing.assert_array_equal(out[..., channel], expected)


def test_intensity_scaling_moves_the_mean_in_its_direction_and_clips_at_255(real_volume):
    image = real_volume.image
    darker, brighter = apply("scale_0.8", image), apply("scale_1.2", image)
    assert darker.mean() < image.mean() < brighter.mean()
    np.testing.assert_array_equal(darker, np.rint(image * 0.8).astype(np.uint8))
    assert brighter[image >= 213].min() == 255  # 213 · 1.2 > 255: clipped, not wrapped around


def test_gamma_below_one_brightens_above_one_darkens_and_keeps_black_and_white():
    ramp = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, None, :, None], (3, 256, 256, 3)).copy()
    bright, dark = apply("gamma_0.7", ramp), apply("gamma_1.4", ramp)
    assert (bright >= ramp).all() and (dark <= ramp).all()
    assert (bright[..., 1:250, :] > ramp[..., 1:250, :]).all() and (dark[..., 1:250, :] < ramp[..., 1:250, :]).all()
    for out in (bright, dark):
        assert (out[..., 0, :] == 0).all() and (out[..., 255, :] == 255).all()


def test_contrast_scales_the_spread_about_the_channel_mean(real_volume):
    image = real_volume.image.astype(np.float64)
    for name, factor in (("contrast_0.7", 0.7), ("contrast_1.3", 1.3)):
        out = apply(name, real_volume.image).astype(np.float64)
        ratio = out.std(axis=(0, 1, 2)) / image.std(axis=(0, 1, 2))
        # 0.7 is exact up to rounding; 1.3 pushes the dark tissue below 0, where it is clipped.
        assert (abs(ratio - factor) < 0.02).all() if factor < 1 else ((ratio > 1.1) & (ratio <= factor + 0.01)).all()


@pytest.mark.parametrize("name, sigma", [("noise_5", 5.0), ("noise_10", 10.0)])
def test_noise_has_about_the_named_standard_deviation_and_no_bias(name, sigma, real_volume):
    image = real_volume.image.astype(np.float64)
    noise = apply(name, real_volume.image).astype(np.float64) - image
    unclipped = (image > 4 * sigma) & (image < 255 - 4 * sigma)
    assert unclipped.sum() > 100_000
    assert noise[unclipped].std() == pytest.approx(np.sqrt(sigma ** 2 + 1 / 12), rel=0.02)  # + rounding
    assert abs(noise[unclipped].mean()) < 0.05


def test_blur_smooths_each_slice_and_keeps_the_mean_brightness(real_volume):
    image = real_volume.image.astype(np.float64)
    out = apply("blur_1", real_volume.image).astype(np.float64)

    def roughness(x):
        return np.abs(np.diff(x, axis=2)).mean()

    assert roughness(out) < 0.7 * roughness(image)
    assert out.mean() == pytest.approx(image.mean(), rel=0.01)
    np.testing.assert_array_equal(apply("blur_1", real_volume.image[:1])[0], out[0])  # in-plane only


def test_rotation_by_zero_is_the_identity_and_by_five_degrees_turns_the_mask_around_the_centre(real_volume):
    image = real_volume.image
    np.testing.assert_array_equal(robustness.rotate(image, None, degrees=0.0), image)
    mask = real_volume.mask > 0
    turned = robustness._rotate(mask, 5.0, order=0)
    assert not np.array_equal(turned, mask)
    assert robustness.volume_dsc(robustness._rotate(turned, -5.0, order=0), mask) > 0.99


def test_mirroring_and_reversing_twice_are_the_identity(real_volume):
    image = real_volume.image
    for name in ("mirror", "reverse_slices"):
        np.testing.assert_array_equal(apply(name, apply(name, image)), image)
    np.testing.assert_array_equal(apply("mirror", image)[:, :, 0], image[:, :, -1])
    np.testing.assert_array_equal(apply("reverse_slices", image)[0], image[-1])


def test_shift_moves_every_slice_by_whole_pixels_and_fills_with_zero(real_volume):
    image = real_volume.image
    moved = apply("shift_+5", image)
    np.testing.assert_array_equal(moved[:, 5:, 5:], image[:, :-5, :-5])
    assert not moved[:, :5].any() and not moved[:, :, :5].any()
    np.testing.assert_array_equal(apply("shift_-5", moved)[:, 5:-5, 5:-5], image[:, 5:-5, 5:-5])


@pytest.mark.parametrize("name", GEOMETRIC)
def test_geometric_perturbations_scored_through_the_inverse_give_the_clean_dsc_for_an_equivariant_model(
        name, framed_volume):
    segment = flair_above(100)  # pointwise, so it commutes with every exact re-arrangement of the voxels
    clean, perturbed = score_patient(framed_volume, segment, [PERTURBATIONS["clean"], PERTURBATIONS[name]])
    assert 0.05 < clean["dsc"] < 1
    if name.startswith("rotate"):
        # Bilinear image rotation and nearest-neighbour rotation back are not exact inverses.
        assert perturbed["dsc"] == pytest.approx(clean["dsc"], abs=0.02)
    else:
        assert perturbed["dsc"] == clean["dsc"]


def test_scoring_without_the_inverse_would_penalise_a_perfectly_equivariant_model(framed_volume):
    # Why geometric rows map the prediction back: the same pointwise model, scored on the moved prediction.
    volume, segment = framed_volume, flair_above(100)
    clean = robustness.volume_dsc(segment(volume.image), volume.mask > 0)
    unrestored = robustness.volume_dsc(segment(apply("mirror", volume.image)), volume.mask > 0)
    assert unrestored < 0.5 * clean


# ----------------------------------------------------------------------------
# Seeds
# ----------------------------------------------------------------------------

def test_noise_depends_on_seed_patient_and_perturbation_but_not_on_what_ran_before(real_volume):
    image = real_volume.image[:4]
    first = apply("noise_5", image, seed=0, patient="A")
    assert np.array_equal(first, apply("noise_5", image, seed=0, patient="A"))
    assert not np.array_equal(first, apply("noise_5", image, seed=1, patient="A"))
    assert not np.array_equal(first, apply("noise_5", image, seed=0, patient="B"))
    volume, segment = real_volume, flair_above(100)
    suite = [PERTURBATIONS[n] for n in ("clean", "noise_5", "noise_10")]
    forward = score_patient(volume, segment, suite, seed=3)
    backward = score_patient(volume, segment, suite[::-1], seed=3)
    assert forward == backward[::-1]


# ----------------------------------------------------------------------------
# The served model: clean equals evaluate.py
# ----------------------------------------------------------------------------

def clean_equals_evaluate(served, data_dir, patients=None):
    model, segment, _ = served
    for files in scan_folder(data_dir)[:patients]:
        volume = read_patient(files)
        expected = evaluate_patient(volume, model.predict_on_batch, SIZE).native
        (row,) = score_patient(volume, segment, [PERTURBATIONS["clean"]])
        assert expected["true_voxels"] > 0 and expected["pred_voxels"] > 0, "a vacuous comparison"
        assert (row["dsc"], row["pred_voxels"], row["true_voxels"]) == \
            (expected["dsc"], expected["pred_voxels"], expected["true_voxels"]), volume.patient


def test_clean_pass_equals_the_native_dsc_of_evaluate_on_the_phantom(served, phantom_dir):
    clean_equals_evaluate(served, phantom_dir)


def test_clean_pass_equals_the_native_dsc_of_evaluate_on_a_real_patient(served, real_data_dir):
    clean_equals_evaluate(served, real_data_dir, patients=1)


# ----------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_dir(served, phantom_dir, tmp_path_factory):
    """A training run folder holding the stand-in's export and a config.json naming 2 validation patients
    (the stand-in scores 0.44 on the first of them, 0 on the second: it segments the phantom's scalp)."""
    import shutil

    run = tmp_path_factory.mktemp("run")
    shutil.copytree(served[2], run / "export")
    names = [f.patient for f in scan_folder(phantom_dir)]
    (run / "config.json").write_text(json.dumps({"config": {"data": str(phantom_dir), "image_size": SIZE},
                                                 "split": {"training": names[:2], "validation": names[2:]}}))
    return run


def test_command_line_scores_the_runs_validation_patients_under_every_perturbation(run_dir, tmp_path, capsys):
    out = tmp_path / "robust"
    assert robustness_cli.main(["--model", str(run_dir), "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["figure.png", "robustness.csv", "summary.json", "table.md"]
    summary = json.loads((out / "summary.json").read_text())
    validation = json.loads((run_dir / "config.json").read_text())["split"]["validation"]
    assert summary["patients"] == validation
    assert summary["order"] == list(PERTURBATIONS) and set(summary["perturbations"]) == set(PERTURBATIONS)
    assert summary["perturbations"]["clean"]["drop_mean"] == 0.0
    rows = (out / "robustness.csv").read_text().splitlines()
    assert rows[0] == ("patient,perturbation,kind,dsc,drop,pred_voxels,true_voxels,kept_mass,uncertainty,suspect,"
                       "suspect_reasons")
    assert len(rows) == 1 + len(validation) * len(PERTURBATIONS)
    # Every served mask is judged (the export's serving_default gives the probabilities): no empty cell.
    judged = list(csv.DictReader(rows))
    assert all(r["suspect"] in ("0", "1") and 0.0 <= float(r["kept_mass"]) <= 1.0 and r["uncertainty"] for r in judged)
    suspect = [r for r in judged if r["suspect"] == "1"]
    assert capsys.readouterr().err.count(": suspect mask: ") == len(suspect) == summary_n_suspect(summary)
    table = (out / "table.md").read_text()
    assert all(f"| {name} |" in table for name in PERTURBATIONS)
    assert (out / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["model"]["path"] == str(run_dir / "export")


def summary_n_suspect(summary):
    return sum(entry["n_suspect"] for entry in summary["perturbations"].values())


def test_export_folder_of_a_run_uses_the_parent_runs_split_and_reruns_identically(run_dir, phantom_dir, tmp_path):
    args = ["--perturbations", "noise_10", "mirror", "--seed", "5", "--quiet", "--data", str(phantom_dir)]
    assert robustness_cli.main(["--model", str(run_dir), "--out", str(tmp_path / "a"), *args]) == 0
    assert robustness_cli.main(["--model", str(run_dir / "export"), "--out", str(tmp_path / "b"), *args]) == 0
    first = (tmp_path / "a" / "robustness.csv").read_text()
    assert first == (tmp_path / "b" / "robustness.csv").read_text()
    assert [line.split(",")[1] for line in first.splitlines()[1:4]] == ["clean", "noise_10", "mirror"]


def test_a_saved_model_outside_a_run_needs_patients(served, phantom_dir, tmp_path, capsys):
    folder = served[2]
    assert robustness_cli.main(["--model", str(folder), "--data", str(phantom_dir), "--out", str(tmp_path)]) == 2
    assert "--patients" in capsys.readouterr().err
    name = scan_folder(phantom_dir)[0].patient
    assert robustness_cli.main(["--model", str(folder), "--data", str(phantom_dir), "--out", str(tmp_path),
                            "--patients", name, "--perturbations", "pre_missing", "--quiet"]) == 0
    assert len((tmp_path / "robustness.csv").read_text().splitlines()) == 3


def test_a_run_without_an_export_and_an_unknown_perturbation_are_errors_that_say_what_to_do(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    assert robustness_cli.main(["--model", str(tmp_path)]) == 2
    assert "python -m tfseg.export" in capsys.readouterr().err
    assert robustness_cli.main(["--model", str(tmp_path), "--perturbations", "snow"]) == 2
    assert "unknown perturbations ['snow']" in capsys.readouterr().err


# ----------------------------------------------------------------------------
# Suspect masks: a perturbed volume whose largest component is a false positive is flagged, never a hidden 0
# ----------------------------------------------------------------------------

DECOYED = "blur_1"


def decoy_oracle(volume, perturbation, image_size):
    """A predict function keyed on the preprocessed slices (as tests/test_evaluate.py's decoy_oracle): the true
    mask at 0.99 on the clean slices; on the perturbed ones also, on every tumour slice, a square false positive
    of 1.5 times the tumour's area at 0.52 (less summed probability than the tumour), placed inside the crop
    and away from its padding so it stays the larger component on the native slices. It answers the
    left-right flipped slices too (the judge predicts the flip), with its answer flipped."""
    answers = {}

    def learn(image, decoy):
        slices, mask, _ = preprocess_volume(image, volume.mask, image_size)
        for x, truth in zip(slices, mask):
            answer = 0.99 * (truth > 0).astype(np.float32)
            area = int(np.count_nonzero(truth))
            if decoy and area:
                side = int(np.ceil(np.sqrt(1.5 * area)))
                answer[8:8 + side, 8:8 + side] = 0.52
            answers[x.tobytes()] = answer
            answers[np.ascontiguousarray(x[:, ::-1]).tobytes()] = np.ascontiguousarray(answer[:, ::-1])

    learn(volume.image, decoy=False)
    learn(apply(perturbation, volume.image, patient=volume.patient), decoy=True)

    def predict(batch):
        return np.stack([answers[x.tobytes()] for x in batch])

    return predict


def test_a_perturbation_whose_largest_component_is_a_false_positive_is_flagged_suspect_with_a_warning(
        phantom_dir, tmp_path, capsys):
    from tfseg.predict import segment as predict_scan

    volume = read_patient(scan_folder(phantom_dir)[0])
    oracle = decoy_oracle(volume, DECOYED, SIZE)
    segment = lambda slices: predict_scan(slices, [oracle], SIZE).mask  # noqa: E731  (the served mask, in numpy)
    judge = robustness.probability_judge([oracle], SIZE)
    summary = robustness.run_robustness(phantom_dir, segment, tmp_path, [volume.patient], [DECOYED], progress=False,
                                        judge=judge)
    with open(tmp_path / "robustness.csv") as f:
        rows = {row["perturbation"]: row for row in csv.DictReader(f)}
    clean, decoyed = rows["clean"], rows[DECOYED]
    assert float(clean["dsc"]) > 0.9 and clean["suspect"] == "0" and float(clean["kept_mass"]) == 1.0
    assert float(decoyed["dsc"]) == 0.0  # the false positive is the component kept
    assert decoyed["suspect"] == "1" and float(decoyed["kept_mass"]) < 0.5 and float(decoyed["uncertainty"]) == 0.0
    assert decoyed["suspect_reasons"].startswith("the kept component holds only")
    err = capsys.readouterr().err
    assert err.count("suspect mask") == 1
    assert f"warning: {volume.patient} under {DECOYED}: suspect mask: the kept component holds only" in err
    assert summary["suspect"] == [{"patient": volume.patient, "perturbation": DECOYED,
                                   "reasons": decoyed["suspect_reasons"]}]
    assert (summary["perturbations"]["clean"]["n_suspect"], summary["perturbations"][DECOYED]["n_suspect"]) == (0, 1)
    assert (tmp_path / "table.md").read_text().splitlines()[-1].endswith("| 1 |")


def test_without_a_judge_the_suspect_columns_are_empty_not_zero(phantom_dir, tmp_path):
    name = scan_folder(phantom_dir)[0].patient
    summary = robustness.run_robustness(phantom_dir, flair_above(100), tmp_path, [name], [], progress=False)
    with open(tmp_path / "robustness.csv") as f:
        (row,) = csv.DictReader(f)
    assert (row["kept_mass"], row["suspect"], row["suspect_reasons"]) == ("", "", "")  # not judged: no claim
    assert summary["suspect"] is None and "| — |" in (tmp_path / "table.md").read_text()

