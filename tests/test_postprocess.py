"""tfseg.postprocess: the threshold and the largest 3-D component, in numpy/scipy and as graph ops."""
import medpy.filter.binary
import numpy as np
import pytest
import tensorflow as tf

from tfseg.metrics import volume_dsc
from tfseg.postprocess import (THRESHOLD, largest_component_3d, largest_connected_component, postprocess_graph,
                               postprocess_volume)
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
