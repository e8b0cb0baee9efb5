"""Specification of tfseg.data.pipeline: packed shards -> SliceTable -> tf.data streams."""
import json

import numpy as np
import pytest
from scipy import stats

from tfseg.data.kaggle import read_kaggle_folder
from tfseg.data.pipeline import (SliceTable, load_slices, sampling_probabilities, training_dataset,
                                 validation_dataset)
from tfseg.data.preprocess import preprocess_volume


@pytest.fixture(scope="module")
def table(packed_phantom_dir):
    return load_slices(packed_phantom_dir)


def synthetic_table(pixels_per_patient):
    """A 4×4-pixel SliceTable: slice i of the table has ``images[i] == i`` and the given mask pixel count."""
    counts = [c for counts in pixels_per_patient.values() for c in counts]
    masks = np.zeros((len(counts), 16), np.uint8)
    for row, count in enumerate(counts):
        masks[row, :count] = 1
    images = np.broadcast_to(np.arange(len(counts), dtype=np.float16)[:, None, None, None], (len(counts), 4, 4, 3))
    patients = [name for name, c in pixels_per_patient.items() for _ in c]
    slices = [i for c in pixels_per_patient.values() for i in range(len(c))]
    return SliceTable(images.copy(), masks.reshape(-1, 4, 4), np.array(patients), np.array(slices, np.int64))


# Patient A: tumour growing over 5 slices; B: tumour on one slice of 4; C: no tumour at all.
PIXELS = {"A": [0, 1, 4, 9, 16], "B": [0, 0, 8, 0], "C": [0, 0, 0]}


def batches(ds, n):
    return [tuple(np.asarray(t) for t in element) for element in ds.take(n).as_numpy_iterator()]


def test_load_slices_returns_patients_in_sorted_order_and_slices_in_volume_order(table, packed_phantom_dir):
    manifest = json.loads((packed_phantom_dir / "manifest.json").read_text())
    names = sorted(manifest["patients"])
    assert table.patient_names == names
    expected_slices = [i for name in names for i in range(manifest["patients"][name]["slices"])]
    assert table.slices.tolist() == expected_slices
    assert len(table) == manifest["total_slices"]


def test_load_slices_gives_float16_images_and_0_1_uint8_masks(table):
    assert table.images.dtype == np.float16 and table.images.shape[1:] == (64, 64, 3)
    assert table.masks.dtype == np.uint8 and table.masks.shape[1:] == (64, 64)
    assert set(np.unique(table.masks)) == {0, 1}


def test_loaded_slices_are_preprocess_volumes_output(table, phantom_dir):
    name = table.patient_names[1]
    volume = read_kaggle_folder(phantom_dir, [name])[0]
    image, mask, geometry = preprocess_volume(volume.image, volume.mask, image_size=64)
    got_image, got_mask = table.volume(name)
    np.testing.assert_array_equal(got_image, image.astype(np.float16))
    np.testing.assert_array_equal(got_mask, mask)
    assert table.geometry[name] == geometry


def test_load_slices_can_select_patients(table, packed_phantom_dir):
    names = table.patient_names[2:0:-1]
    subset = load_slices(packed_phantom_dir, names)
    assert subset.patient_names == names
    np.testing.assert_array_equal(subset.volume(names[0])[0], table.volume(names[0])[0])


def test_sampling_probabilities_sum_to_one():
    assert sampling_probabilities(synthetic_table(PIXELS)).sum() == pytest.approx(1.0)


def test_every_patient_gets_the_same_total_probability():
    t = synthetic_table(PIXELS)
    probs = sampling_probabilities(t)
    for name in PIXELS:
        assert probs[t.patients == name].sum() == pytest.approx(1 / 3)


def test_a_slice_gets_the_reference_probability_so_more_tumour_means_more_probability():
    t = synthetic_table(PIXELS)
    probs = sampling_probabilities(t)[t.patients == "A"]
    s = np.array(PIXELS["A"], float)
    np.testing.assert_allclose(probs, (s + 0.1 * s.sum() / len(s)) / (1.1 * s.sum()) / 3)
    assert np.all(np.diff(probs) > 0)
    assert probs[0] > 0  # a tumour-free slice of a patient with tumour can still be drawn


def test_a_tumour_free_patient_has_its_slices_drawn_uniformly():
    t = synthetic_table(PIXELS)
    probs = sampling_probabilities(t)[t.patients == "C"]
    np.testing.assert_allclose(probs, 1 / 3 / 3)


def test_training_batches_are_float32_images_and_masks_with_a_channel(table):
    ds, _ = training_dataset(table, batch_size=4, seed=0)
    image, mask = batches(ds, 1)[0]
    assert image.shape == (4, 64, 64, 3) and image.dtype == np.float32
    assert mask.shape == (4, 64, 64, 1) and mask.dtype == np.float32
    assert set(np.unique(mask)) <= {0.0, 1.0}


def test_an_epoch_has_as_many_batches_as_whole_batches_of_slices(table):
    ds, steps = training_dataset(table, batch_size=4, seed=0, epochs=2)
    assert steps == len(table) // 4
    assert sum(1 for _ in ds) == 2 * steps


def test_the_same_seed_draws_the_same_batches(table):
    a = batches(training_dataset(table, batch_size=4, seed=7)[0], 3)
    b = batches(training_dataset(table, batch_size=4, seed=7)[0], 3)
    for (ia, ma), (ib, mb) in zip(a, b):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ma, mb)


def test_a_different_seed_draws_different_batches(table):
    a = batches(training_dataset(table, batch_size=4, seed=7)[0], 3)
    b = batches(training_dataset(table, batch_size=4, seed=8)[0], 3)
    assert any(not np.array_equal(ia, ib) for (ia, _), (ib, _) in zip(a, b))


def test_starting_at_epoch_1_continues_exactly_like_the_second_epoch_of_an_uninterrupted_run(table):
    """What makes a resumed run draw exactly what an uninterrupted one would have drawn."""
    full, steps = training_dataset(table, batch_size=4, seed=3)
    resumed, _ = training_dataset(table, batch_size=4, seed=3, start_epoch=1)
    uninterrupted = batches(full, 2 * steps)[steps:]
    for (ia, ma), (ib, mb) in zip(uninterrupted, batches(resumed, steps), strict=True):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ma, mb)


def test_epochs_differ_from_each_other(table):
    full, steps = training_dataset(table, batch_size=4, seed=3)
    drawn = batches(full, 2 * steps)
    first = np.concatenate([image for image, _ in drawn[:steps]])
    second = np.concatenate([image for image, _ in drawn[steps:]])
    assert not np.array_equal(first, second)


def test_training_draws_slices_with_the_sampling_probabilities():
    t = synthetic_table(PIXELS)
    ds, _ = training_dataset(t, batch_size=len(t), seed=0, epochs=1500)
    drawn = np.concatenate([image[:, 0, 0, 0] for image, _ in ds.as_numpy_iterator()]).astype(int)
    observed = np.bincount(drawn, minlength=len(t))
    expected = sampling_probabilities(t) * drawn.size
    assert drawn.size == 1500 * len(t)
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    np.testing.assert_allclose(observed / drawn.size, sampling_probabilities(t), atol=0.01)


def test_too_few_slices_for_one_batch_is_an_error_naming_batch_size():
    with pytest.raises(ValueError, match="--batch-size"):
        training_dataset(synthetic_table(PIXELS), batch_size=64)


def test_validation_yields_every_slice_exactly_once_in_table_order(table):
    got = list(validation_dataset(table, batch_size=7).as_numpy_iterator())
    assert [len(image) for image, _ in got[:-1]] == [7] * (len(got) - 1)
    images = np.concatenate([image for image, _ in got])
    masks = np.concatenate([mask for _, mask in got])
    assert images.dtype == np.float32 and masks.shape == (len(table), 64, 64, 1)
    np.testing.assert_array_equal(images, table.images.astype(np.float32))
    np.testing.assert_array_equal(masks[..., 0], table.masks.astype(np.float32))


def test_validation_with_patient_ids_labels_every_slice_with_its_patient(table):
    got = list(validation_dataset(table, batch_size=7, with_patient=True).as_numpy_iterator())
    assert all(len(element) == 3 for element in got)
    patients = np.concatenate([p for _, _, p in got])
    assert [p.decode() for p in patients] == table.patients.tolist()
