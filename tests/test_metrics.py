"""tfseg.metrics: the streaming Keras DSC and the per-volume protocol DSC."""
import math

import keras
import numpy as np
import pytest

import tfseg.postprocess
from tfseg.metrics import (DiceCoefficient, VolumeMetrics, describe, group_by_patient, per_volume_dsc, score_slices,
                           volume_dsc, volume_scores)
from volumes import cube


# --- volume_dsc / volume_scores ------------------------------------------------

def test_perfect_prediction_has_dsc_1():
    volume = cube()
    assert volume_dsc(volume, volume) == 1.0


def test_both_empty_has_dsc_1():
    empty = np.zeros((4, 8, 8), bool)
    assert volume_dsc(empty, empty) == 1.0


def test_prediction_on_empty_truth_has_dsc_0():
    assert volume_dsc(cube(), np.zeros((8, 16, 16), bool)) == 0.0


def test_one_voxel_shift_of_a_cube_gives_the_hand_computed_dsc():
    # Two 4x4x4 cubes shifted by one column overlap in 4x4x3 = 48 voxels: DSC = 96 / 128.
    assert volume_dsc(cube(start=(2, 4, 5)), cube()) == pytest.approx(0.75)


def test_volume_dsc_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        volume_dsc(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 5), bool))


def test_hd95_of_identical_masks_is_0():
    volume = cube()
    assert volume_scores(volume, volume)["hd95"] == 0.0


def test_volume_scores_of_a_shifted_cube():
    pred, true = cube(start=(2, 4, 5)), cube()
    scores = volume_scores(pred, true)
    assert scores["dsc"] == pytest.approx(0.75)
    assert scores["sensitivity"] == pytest.approx(48 / 64)
    assert scores["precision"] == pytest.approx(48 / 64)
    assert scores["pred_voxels"] == 64 and scores["true_voxels"] == 64
    assert scores["hd95"] == pytest.approx(1.0)


def test_volume_scores_are_nan_where_undefined():
    empty = np.zeros((8, 16, 16), bool)
    missed = volume_scores(empty, cube())  # nothing predicted
    assert math.isnan(missed["hd95"]) and math.isnan(missed["precision"])
    assert missed["sensitivity"] == 0.0 and missed["dsc"] == 0.0
    both_empty = volume_scores(empty, empty)
    assert both_empty["dsc"] == 1.0
    assert all(math.isnan(both_empty[k]) for k in ("hd95", "sensitivity", "precision"))


# --- per_volume_dsc / describe ---------------------------------------------------

def test_group_by_patient_keeps_first_appearance_and_slice_order():
    groups = group_by_patient(["b", "a", b"b", "a", "b"])
    assert list(groups) == ["b", "a"]
    assert groups["b"].tolist() == [0, 2, 4] and groups["a"].tolist() == [1, 3]


def test_per_volume_dsc_groups_interleaved_patients_in_slice_order():
    # Patient A: a lesion across its slices 1-2, plus a stray voxel in slice 0 that LCC removes.
    # Patient B: slice 0 predicted perfectly, plus a false-positive voxel in slice 1 that
    # touches the lesion only once B's two slices are stacked next to each other: LCC keeps it.
    a_true = np.zeros((3, 8, 8), np.float32)
    a_true[1:3, 2:4, 2:4] = 1  # 8 voxels
    a_prob = a_true * 0.9
    a_prob[0, 6, 6] = 0.9
    b_true = np.zeros((2, 8, 8), np.float32)
    b_true[0, 0:2, 0:2] = 1  # 4 voxels
    b_prob = b_true * 0.9
    b_prob[1, 0, 0] = 0.9
    order = [("A", 0), ("B", 0), ("A", 1), ("B", 1), ("A", 2)]
    probabilities = np.stack([{"A": a_prob, "B": b_prob}[p][i] for p, i in order])[..., None]
    masks = np.stack([{"A": a_true, "B": b_true}[p][i] for p, i in order])[..., None]
    ids = [p for p, _ in order]

    scores = per_volume_dsc(probabilities, masks, ids)

    assert list(scores) == ["A", "B"]
    assert scores["A"] == 1.0
    assert scores["B"] == pytest.approx(2 * 4 / (5 + 4))
    without_lcc = per_volume_dsc(probabilities[..., 0], masks[..., 0], ids, largest_component=False)
    assert without_lcc["A"] == pytest.approx(2 * 8 / (9 + 8))


def test_per_volume_dsc_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="patient ids"):
        per_volume_dsc(np.zeros((3, 4, 4)), np.zeros((3, 4, 4)), ["a", "b"])


def test_the_post_processing_is_tfseg_postprocess_and_still_importable_from_metrics():
    import tfseg.metrics

    assert tfseg.metrics.postprocess_volume is tfseg.postprocess.postprocess_volume
    assert tfseg.metrics.largest_connected_component is tfseg.postprocess.largest_connected_component
    assert DiceCoefficient().threshold == tfseg.postprocess.THRESHOLD == 0.5


def test_describe_gives_mean_median_and_count_and_none_for_nothing():
    assert describe([0.9, 0.5, 1.0]) == {"mean": pytest.approx(0.8), "median": 0.9, "n": 3}
    assert describe([]) == {"mean": None, "median": None, "n": 0}



# --- VolumeMetrics: the per-case accumulator -----------------------------------------

def test_volume_metrics_scores_each_case_and_aggregates_over_them():
    metric = VolumeMetrics()
    perfect = metric.update("p1", cube(), cube())
    shifted = metric.update("p2", cube(start=(2, 4, 5)), cube())
    missed = metric.update("p3", np.zeros((8, 16, 16), bool), cube())

    assert perfect == volume_scores(cube(), cube()) and shifted["dsc"] == pytest.approx(0.75)
    assert len(metric) == 3 and list(metric.cases()) == ["p1", "p2", "p3"]
    assert metric.values("dsc") == {"p1": 1.0, "p2": pytest.approx(0.75), "p3": 0.0}
    aggregated = metric.aggregate()
    assert aggregated["n"] == 3
    assert aggregated["dsc"] == {"mean": pytest.approx(1.75 / 3), "median": 0.75, "n": 3}
    # Nothing predicted for p3: HD95 and precision are undefined there, left out and counted.
    assert aggregated["hd95"]["n"] == 2 and aggregated["precision"]["n"] == 2
    assert aggregated["precision"]["mean"] == pytest.approx((1.0 + 0.75) / 2)
    assert aggregated["sensitivity"] == {"mean": pytest.approx(1.75 / 3), "median": 0.75, "n": 3}
    assert math.isnan(missed["precision"])


def test_volume_metrics_refuses_a_case_twice_and_an_empty_aggregate():
    metric = VolumeMetrics()
    with pytest.raises(ValueError, match="at least one scored case"):
        metric.aggregate()
    metric.update("p1", cube(), cube())
    with pytest.raises(ValueError, match="'p1' was already scored"):
        metric.update("p1", cube(), cube())
    metric.reset()
    assert len(metric) == 0
    metric.update("p1", cube(), np.zeros((8, 16, 16), bool))
    assert metric.values() == {"p1": 0.0}


def test_volume_metrics_without_surface_distance_skips_hd95_only():
    metric = VolumeMetrics(surface_distance=False)
    scores = metric.update("p1", cube(start=(2, 4, 5)), cube())
    assert "hd95" not in scores and "hd95" not in metric.aggregate()
    assert {k: v for k, v in volume_scores(cube(start=(2, 4, 5)), cube()).items() if k != "hd95"} == scores


def test_volume_metrics_reads_bytes_case_ids_as_group_by_patient_does():
    metric = VolumeMetrics(surface_distance=False)
    metric.update(b"TCGA_A", cube(), cube())
    assert list(metric.cases()) == ["TCGA_A"] == list(group_by_patient([b"TCGA_A"]))
    with pytest.raises(ValueError):
        metric.update("TCGA_A", cube(), cube())


def test_score_slices_is_the_accumulator_behind_per_volume_dsc_and_describe():
    rng = np.random.default_rng(0)
    probabilities = rng.random((6, 8, 8)).astype(np.float32)
    masks = (rng.random((6, 8, 8)) > 0.6).astype(np.float32)
    ids = ["a", "b", "a", "b", "a", "b"]
    scored = score_slices(probabilities, masks, ids)
    assert scored.values("dsc") == per_volume_dsc(probabilities, masks, ids)
    # Independently: each patient's slices stacked in order, thresholded, largest component, DSC.
    by_hand = {pid: volume_dsc(tfseg.postprocess.postprocess_volume(probabilities[pid == np.array(ids)]),
                               masks[pid == np.array(ids)] > 0.5) for pid in ("a", "b")}
    assert scored.values("dsc") == pytest.approx(by_hand)
    assert scored.aggregate()["dsc"] == {"mean": pytest.approx(np.mean(list(by_hand.values()))),
                                         "median": pytest.approx(np.median(list(by_hand.values()))), "n": 2}
    assert "hd95" in score_slices(probabilities, masks, ids, surface_distance=True).aggregate()

# --- DiceCoefficient -------------------------------------------------------------

def _batch(true_pixels, pred_pixels, shape=(1, 4, 4, 1)):
    y, p = np.zeros(shape, np.float32), np.full(shape, 0.1, np.float32)
    y.reshape(-1)[list(true_pixels)] = 1
    p.reshape(-1)[list(pred_pixels)] = 0.9
    return y, p


def test_dice_coefficient_accumulates_over_batches_and_resets():
    metric = DiceCoefficient()
    metric.update_state(*_batch(range(4), range(2)))  # I 2, P 2, T 4
    metric.update_state(*_batch(range(2), range(2, 6)))  # I 0, P 4, T 2
    assert float(metric.result()) == pytest.approx(2 * 2 / (6 + 6))
    metric.reset_state()
    assert float(metric.result()) == 1.0
    metric.update_state(*_batch(range(4), range(4)))
    assert float(metric.result()) == pytest.approx(1.0)


def test_dice_coefficient_of_empty_mask_and_prediction_is_1():
    metric = DiceCoefficient()
    metric.update_state(*_batch([], []))
    assert float(metric.result()) == 1.0


def test_dice_coefficient_thresholds_at_0_5_strictly():
    y = np.ones((1, 1, 2, 1), np.float32)
    p = np.array([0.5, 0.51], np.float32).reshape(1, 1, 2, 1)
    metric = DiceCoefficient()
    metric.update_state(y, p)
    assert float(metric.result()) == pytest.approx(2 * 1 / (1 + 2))


def test_dice_coefficient_accepts_bfloat16_predictions():
    y, p = _batch(range(4), range(2))
    metric = DiceCoefficient()
    metric.update_state(y, keras.ops.cast(p, "bfloat16"))
    assert float(metric.result()) == pytest.approx(4 / 6)


def test_dice_coefficient_weights_whole_images():
    y0, p0 = _batch(range(4), range(4))
    y1, p1 = _batch(range(4), [])
    metric = DiceCoefficient()
    metric.update_state(np.concatenate([y0, y1]), np.concatenate([p0, p1]), sample_weight=np.array([1.0, 0.0]))
    assert float(metric.result()) == pytest.approx(1.0)


def test_dice_coefficient_serialization_round_trip():
    metric = DiceCoefficient(threshold=0.3, name="val_dsc")
    restored = keras.metrics.deserialize(keras.metrics.serialize(metric))
    assert isinstance(restored, DiceCoefficient)
    assert restored.threshold == 0.3 and restored.name == "val_dsc"
