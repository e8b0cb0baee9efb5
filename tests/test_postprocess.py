"""tfseg.postprocess: the threshold and the largest 3-D component, in numpy/scipy and as graph ops; rules and their choice."""
import json

import medpy.filter.binary
import numpy as np
import pytest
import tensorflow as tf

from tfseg.metrics import volume_dsc
from tfseg.data.split import PROTOCOL_VALIDATION
from tfseg.postprocess import (THRESHOLD, PostprocessError, PostprocessRule, kept_mass_fraction, largest_component_3d,
                               largest_connected_component, load_rule, postprocess_graph, postprocess_volume,
                               rule_for_model, rule_graph, suspect_reasons)
from tfseg.postprocess_choice import (PROBABILITIES_DIR, choose_postprocessing, components_of, rule_dsc,
                                      write_probabilities)
from volumes import cube


def test_postprocess_thresholds_strictly_above_the_threshold():
    probabilities = np.array([0.2, 0.5, 0.51, 0.9], np.float32).reshape(1, 1, 4)
    mask = postprocess_volume(probabilities, largest_component=False)
    assert mask.dtype == bool
    assert mask.tolist() == [[[False, False, True, True]]]


def test_largest_component_removes_a_small_disconnected_blob():
    true = cube()
    probabilities = true.astype(np.float32) * 0.9
    probabilities[7, 15, 15] = 0.8  # a one-voxel false positive far from the lesion
    raw = postprocess_volume(probabilities, largest_component=False)
    kept = postprocess_volume(probabilities)
    assert raw.sum() == 65 and kept.sum() == 64
    np.testing.assert_array_equal(kept, true)
    assert volume_dsc(raw, true) == pytest.approx(128 / 129)
    assert volume_dsc(kept, true) == 1.0


def test_largest_component_connects_through_slices():
    # A blob continuing into the next slice is one 3-D component, larger than a 4-voxel blob elsewhere.
    volume = np.zeros((3, 8, 8), np.float32)
    volume[0, 0:2, 0:2] = 1
    volume[1, 0:2, 0:2] = 1
    volume[1, 6:8, 6:8] = 1
    kept = postprocess_volume(volume)
    assert kept.sum() == 8 and kept[0].sum() == 4 and kept[1, 6:8, 6:8].sum() == 0


def test_postprocess_of_an_empty_prediction_is_empty():
    assert not postprocess_volume(np.full((3, 8, 8), 0.3, np.float32)).any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_largest_connected_component_matches_medpy(seed):
    volume = np.random.default_rng(seed).random((4, 24, 24)) > 0.6
    expected = medpy.filter.binary.largest_connected_component(volume)
    np.testing.assert_array_equal(largest_connected_component(volume), expected)


def test_largest_connected_component_breaks_ties_like_medpy():
    volume = np.zeros((1, 5, 5), bool)
    volume[0, 0, 0] = volume[0, 4, 4] = volume[0, 0, 4] = True  # three equal components
    expected = medpy.filter.binary.largest_connected_component(volume)
    np.testing.assert_array_equal(largest_connected_component(volume), expected)


# --- the graph form (segment_volume) ------------------------------------------------

def test_graph_largest_component_equals_scipy_including_ties():
    rng = np.random.default_rng(0)
    lcc = tf.function(largest_component_3d)
    for _ in range(20):
        mask = rng.random(tuple(rng.integers(1, 20, 3))) < rng.uniform(0.05, 0.7)
        expected = largest_connected_component(mask) if mask.any() else mask
        np.testing.assert_array_equal(lcc(tf.constant(mask)).numpy(), expected)
    tie = np.zeros((3, 5, 5), bool)
    tie[2, 4, 0] = tie[0, 0, 4] = True  # two single voxels: scipy keeps the first in raster order
    np.testing.assert_array_equal(lcc(tf.constant(tie)).numpy(), largest_connected_component(tie))


def test_graph_post_processing_equals_postprocess_volume_with_the_same_strict_threshold():
    rng = np.random.default_rng(1)
    probabilities = rng.random((6, 24, 24)).astype(np.float32)
    probabilities[0, 0, :4] = [THRESHOLD, np.nextafter(np.float32(THRESHOLD), 1), 0.0, 1.0]
    graph = tf.function(postprocess_graph)
    np.testing.assert_array_equal(graph(tf.constant(probabilities)).numpy(), postprocess_volume(probabilities))
    empty = np.full((3, 8, 8), THRESHOLD, np.float32)  # 0.5 is background: nothing left
    assert not graph(tf.constant(empty)).numpy().any() and not postprocess_volume(empty).any()


# --- rules: threshold + component mode, chosen out of fold -----------------------------

ALL_MODES = ("largest", "largest_mass", "top2", "min_size", "none")


def decoy_volume():
    """(probabilities, truth): the largest component is a faint false positive (6³ voxels at 0.52),
    the tumour a smaller, confident one (5³ at 0.99, more summed probability)."""
    probabilities = np.zeros((12, 20, 20), np.float32)
    probabilities[0:6, 0:6, 0:6] = 0.52
    probabilities[6:11, 12:17, 12:17] = 0.99
    return probabilities, probabilities > 0.9


def test_largest_mass_keeps_the_confident_tumour_where_the_largest_component_is_a_false_positive():
    probabilities, tumour = decoy_volume()
    protocol = PostprocessRule().apply(probabilities)
    assert protocol.sum() == 216 and not (protocol & tumour).any()
    np.testing.assert_array_equal(PostprocessRule(components="largest_mass").apply(probabilities), tumour)


def test_the_protocol_mask_of_the_decoy_is_suspect_and_the_largest_mass_mask_is_not():
    probabilities, tumour = decoy_volume()
    kept = kept_mass_fraction(probabilities, PostprocessRule().apply(probabilities))
    assert kept == pytest.approx(216 * 0.52 / (216 * 0.52 + 125 * 0.99), rel=1e-6) and kept < 0.5
    assert "the kept component holds only" in suspect_reasons(kept)[0]
    assert suspect_reasons(kept_mass_fraction(probabilities, tumour)) == []


def test_min_size_counts_native_voxels_and_always_keeps_the_largest():
    probabilities = np.zeros((4, 16, 16), np.float32)
    probabilities[0, 0:2, 0:2] = 0.9       # 4 voxels
    probabilities[2:4, 8:16, 8:16] = 0.9   # 128 voxels
    probabilities[0, 10:13, 0:3] = 0.9     # 9 voxels
    assert PostprocessRule(components="min_size", min_voxels=5).apply(probabilities).sum() == 137
    # In a geometry of 2 voxels per native voxel, 5 native voxels are 10: only the largest stays.
    assert PostprocessRule(components="min_size", min_voxels=5).apply(probabilities, voxel_scale=2.0).sum() == 128
    assert PostprocessRule(components="min_size", min_voxels=10_000).apply(probabilities).sum() == 128
    assert PostprocessRule(components="top2").apply(probabilities).sum() == 137


def random_components(rng, ties: bool = False):
    """A probability volume with several components; with ``ties`` equal cubes of equal probability."""
    shape = tuple(int(n) for n in rng.integers(2, 14, 3))
    if ties:
        volume = np.zeros((6, 12, 12), np.float32)
        for z, y, x in ((4, 8, 8), (0, 0, 0), (0, 8, 0), (4, 0, 8)):
            volume[z:z + 2, y:y + 2, x:x + 2] = 0.75  # four 8-voxel cubes with the same mass
        volume[2, 5, 5] = 0.6
        return volume
    volume = rng.random(shape).astype(np.float32)
    return np.where(rng.random(shape) < rng.uniform(0.1, 0.6), 0.5 + 0.5 * volume, 0.5 * volume).astype(np.float32)


@pytest.mark.parametrize("components", ALL_MODES)
def test_graph_rule_equals_the_numpy_rule_on_random_volumes_with_ties(components):
    rule = PostprocessRule(threshold=0.5, components=components, min_voxels=3)
    graph = tf.function(lambda p: rule_graph(p, rule), input_signature=[tf.TensorSpec([None, None, None], tf.float32)])
    rng = np.random.default_rng(7)
    volumes = [random_components(rng) for _ in range(12)] + [random_components(rng, ties=True)]
    volumes.append(np.zeros((3, 4, 4), np.float32))  # nothing above the threshold
    for probabilities in volumes:
        np.testing.assert_array_equal(graph(tf.constant(probabilities)).numpy(), rule.apply(probabilities))


def test_graph_largest_mass_keeps_the_decoy_tumour():
    probabilities, tumour = decoy_volume()
    rule = PostprocessRule(components="largest_mass")
    np.testing.assert_array_equal(rule_graph(tf.constant(probabilities), rule).numpy(), tumour)


def test_the_protocol_rule_is_the_default_and_round_trips_through_json(tmp_path):
    assert PostprocessRule().is_protocol and PostprocessRule().single_component
    for rule in (PostprocessRule(0.4, "min_size", 250), PostprocessRule(0.6, "largest_mass"), PostprocessRule()):
        assert PostprocessRule.from_dict(json.loads(json.dumps(rule.to_dict()))) == rule
        path = tmp_path / f"{rule.components}.json"
        path.write_text(json.dumps({"rule": rule.to_dict()}))
        assert load_rule(path) == rule


@pytest.mark.parametrize("content, message", [
    ('{"rule": {"threshold": 0.5', "is damaged: not complete JSON"),
    ('[1, 2]', "not an object"),
    ('{"candidates": []}', 'has no "rule" entry'),
    ('{"rule": {"components": "biggest"}}', "unknown component mode 'biggest'"),
    ('{"rule": {"threshold": 1.5}}', "must lie strictly between 0 and 1"),
    ('{"rule": {"threshold": "half"}}', "could not convert"),
    ('{"rule": {"thresold": 0.4}}', "unknown rule keys"),
])
def test_a_damaged_rule_file_is_an_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "postprocess.json"
    path.write_text(content)
    with pytest.raises(PostprocessError, match=message) as caught:
        load_rule(path)
    assert str(path) in str(caught.value)


def test_a_model_carries_the_rule_of_its_run_or_export_folder(tmp_path):
    run = tmp_path / "run"
    (run / "export").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "best.keras").write_bytes(b"")
    assert rule_for_model(run / "best.keras") == (PostprocessRule(), None)
    (run / "postprocess.json").write_text(json.dumps({"rule": {"components": "largest_mass"}}))
    for model in (run, run / "best.keras", run / "export"):
        assert rule_for_model(model) == (PostprocessRule(components="largest_mass"), run / "postprocess.json")
    (run / "export" / "postprocess.json").write_text(json.dumps({"rule": {"components": "none"}}))
    assert rule_for_model(run / "export")[0].components == "none"


# --- the choice on out-of-fold probabilities (tfseg.postprocess_choice) -------------------

@pytest.mark.parametrize("components", ALL_MODES)
def test_the_choice_scores_a_rule_exactly_as_the_metric_scores_its_mask(components):
    rule = PostprocessRule(threshold=0.5, components=components, min_voxels=4)
    rng = np.random.default_rng(3)
    for _ in range(10):
        probabilities = random_components(rng)
        truth = rng.random(probabilities.shape) < 0.3
        own, metric = rule_dsc(rule, components_of(probabilities, truth, 0.5, 1.0))
        mask = rule.apply(probabilities)
        assert own == pytest.approx(volume_dsc(mask, truth), abs=1e-12)
        assert metric == pytest.approx(volume_dsc(postprocess_volume(mask.astype(np.float32)), truth), abs=1e-12)


def write_oof(folder, patients, decoys=()):
    """An out-of-fold probability folder: every patient has a tumour; ``decoys`` also a larger, fainter false positive."""
    for number, patient in enumerate(patients):
        probabilities, truth = decoy_volume()
        if patient not in decoys:
            probabilities[0:6, 0:6, 0:6] = 0.0
        write_probabilities(folder / PROBABILITIES_DIR / f"{patient}.npz", patient, probabilities, probabilities,
                            truth, truth, 1.0, fold=number % 2)


def test_the_chooser_picks_largest_mass_where_the_largest_component_is_a_false_positive(tmp_path):
    patients = [f"TCGA_XX_{i:04d}_20000101" for i in range(6)]
    write_oof(tmp_path, patients, decoys=patients[:2])
    payload = choose_postprocessing(tmp_path, progress=False)
    assert payload["rule"] == {"threshold": 0.5, "components": "largest_mass", "min_voxels": 0}
    rows = {row["name"]: row for row in payload["candidates"]}
    assert rows["protocol"]["pre"]["mean"] == pytest.approx(4 / 6) and rows["protocol"]["pre"]["n_zero"] == 2
    assert rows["largest_mass"]["pre"]["mean"] == 1.0 and rows["largest_mass"]["chosen"]
    # A rule keeping both components is scored on its own mask and after the metric's largest component.
    assert rows["none"]["own_pre"]["mean"] < 1.0 and rows["none"]["pre"]["mean"] == pytest.approx(4 / 6)
    saved = json.loads((tmp_path / "postprocess.json").read_text())
    assert load_rule(tmp_path / "postprocess.json") == PostprocessRule(components="largest_mass")
    assert saved["chosen_on"]["patients"] == patients and saved["cv_dir"] == str(tmp_path)
    assert "| largest_mass |" in (tmp_path / "postprocess.md").read_text()


def test_a_tie_keeps_the_protocol(tmp_path):
    patients = [f"TCGA_XX_{i:04d}_20000101" for i in range(3)]
    write_oof(tmp_path, patients)  # no decoys: every single-component rule scores the same
    payload = choose_postprocessing(tmp_path, progress=False)
    assert payload["is_protocol"] and payload["rule"] == PostprocessRule().to_dict()
    assert [row["name"] for row in payload["candidates"] if row["chosen"]] == ["protocol"]


def test_exclude_validation_leaves_out_exactly_the_protocols_10_patients(tmp_path):
    others = ["TCGA_XX_0001_20000101", "TCGA_XX_0002_20000101", "TCGA_XX_0003_20000101"]
    write_oof(tmp_path, sorted(PROTOCOL_VALIDATION) + others, decoys=sorted(PROTOCOL_VALIDATION))
    payload = choose_postprocessing(tmp_path, exclude_validation=True, progress=False)
    assert payload["chosen_on"]["patients"] == others
    assert payload["chosen_on"]["excluded"] == sorted(PROTOCOL_VALIDATION)
    assert payload["is_protocol"], "the decoys of the 10 validation patients must not decide the rule"
    assert set(payload["candidates"][0]["dsc_pre_by_patient"]) == set(others)


def test_exclude_of_an_unknown_patient_is_an_error_naming_it(tmp_path):
    write_oof(tmp_path, ["TCGA_XX_0001_20000101"])
    with pytest.raises(PostprocessError, match="TCGA_NO_SUCH"):
        choose_postprocessing(tmp_path, exclude=["TCGA_NO_SUCH"], progress=False)


def test_a_damaged_probability_file_is_an_error_naming_it(tmp_path):
    write_oof(tmp_path, ["TCGA_XX_0001_20000101", "TCGA_XX_0002_20000101"])
    damaged = tmp_path / PROBABILITIES_DIR / "TCGA_XX_0002_20000101.npz"
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.raises(PostprocessError, match="is damaged") as caught:
        choose_postprocessing(tmp_path, progress=False)
    assert str(damaged) in str(caught.value) and "--predict-only" in str(caught.value)


def test_tfseg_postprocess_writes_the_rule_and_prints_the_table(tmp_path, capsys):
    from tfseg.cli import main

    patients = [f"TCGA_XX_{i:04d}_20000101" for i in range(4)]
    write_oof(tmp_path / "cv", patients, decoys=patients[:1])
    out = tmp_path / "run" / "postprocess.json"
    assert main(["postprocess", "--cv", str(tmp_path / "cv"), "--exclude", patients[3], "--out", str(out)]) == 0
    assert "| largest_mass |" in capsys.readouterr().out
    assert load_rule(out).components == "largest_mass" and (out.parent / "postprocess.md").is_file()
    assert json.loads(out.read_text())["chosen_on"]["excluded"] == [patients[3]]
    assert main(["postprocess", "--cv", str(tmp_path / "nowhere")]) == 2
    assert "holds no out-of-fold probabilities" in capsys.readouterr().err


def test_float16_storage_keeps_every_voxel_on_its_side_of_every_candidate_threshold():
    from tfseg.postprocess_choice import THRESHOLDS, to_float16

    # float32 values a few float32 steps either side of each threshold, and some anywhere.
    near = [np.float32(t) + np.float32(k * 3e-8) for t in THRESHOLDS for k in range(-40, 41)]
    exact = np.concatenate([np.array(near, np.float32), np.random.default_rng(0).random(1000, dtype=np.float32)])
    stored = to_float16(exact).astype(np.float32)
    for t in np.asarray(THRESHOLDS, np.float32):
        np.testing.assert_array_equal(stored > t, exact > t)
    assert np.abs(stored - exact).max() < 1e-3
