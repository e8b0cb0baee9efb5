"""tfseg.data.context: 2.5-D neighbour stacks stay inside one patient and repeat the edge slices."""
import numpy as np
import pytest

from tfseg.data.context import check_context, neighbour_rows, stack_context
from tfseg.data.pipeline import SliceTable, training_dataset, validation_dataset


def test_neighbour_rows_repeat_edge_slices_and_never_cross_patients():
    patients = np.array(["a", "a", "a", "b", "b"])
    rows = neighbour_rows(patients, 3)
    np.testing.assert_array_equal(rows, [[0, 0, 1], [0, 1, 2], [1, 2, 2], [3, 3, 4], [3, 4, 4]])
    np.testing.assert_array_equal(neighbour_rows(patients, 1), np.arange(5)[:, None])


def test_stack_context_puts_the_slice_in_the_middle_channels():
    volume = np.arange(4, dtype=np.float32)[:, None, None, None] * np.ones((4, 2, 2, 3), np.float32)
    volume[..., 1] += 10
    stacks = stack_context(volume, 5).numpy()
    assert stacks.shape == (4, 2, 2, 15)
    np.testing.assert_array_equal(stacks[..., 6:9], volume)  # the slice itself: channels 3·(K//2)…
    np.testing.assert_array_equal(stacks[0, 0, 0, 0::3], [0, 0, 0, 1, 2])  # slice indices of the stack of slice 0
    np.testing.assert_array_equal(stacks[3, 0, 0, 0::3], [1, 2, 3, 3, 3])
    np.testing.assert_array_equal(stack_context(volume, 1).numpy(), volume)


@pytest.mark.parametrize("bad", [0, 2, -1, 1.5])
def test_context_must_be_odd_and_positive(bad):
    with pytest.raises(ValueError, match="odd number"):
        check_context(bad)


def _table(n_per_patient=(3, 4), size=8):
    patients = np.concatenate([[f"p{i}"] * n for i, n in enumerate(n_per_patient)])
    images = np.stack([np.full((size, size, 3), r, np.float16) for r in range(len(patients))])
    masks = np.zeros((len(patients), size, size), np.uint8)
    masks[:, 2:4, 2:4] = 1
    slices = np.concatenate([np.arange(n) for n in n_per_patient])
    return SliceTable(images, masks, patients, slices)


def test_training_and_validation_batches_carry_the_neighbour_stacks():
    table = _table()
    expected = neighbour_rows(table.patients, 3)
    image, mask = next(iter(validation_dataset(table, batch_size=7, context=3)))
    assert image.shape == (7, 8, 8, 9) and mask.shape == (7, 8, 8, 1)
    np.testing.assert_array_equal(image.numpy()[:, 0, 0, 0::3], expected)
    ds, steps = training_dataset(table, batch_size=2, seed=1, context=3)
    image, _ = next(iter(ds))
    centre = image.numpy()[:, 0, 0, 3]  # the sampled row itself (each image is filled with its row index)
    np.testing.assert_array_equal(image.numpy()[:, 0, 0, 0::3], expected[centre.astype(int)])


def test_context_stacks_on_a_real_volume_match_the_plain_slices(real_data_dir):
    from tfseg.data.kaggle import read_patient, scan_folder
    from tfseg.data.preprocess import preprocess_volume

    volume = read_patient(scan_folder(real_data_dir)[0])
    image, _, _ = preprocess_volume(volume.image, volume.mask, 64)
    stacks = stack_context(image.astype(np.float32), 3).numpy()
    np.testing.assert_array_equal(stacks[:, ..., 3:6], image.astype(np.float32))
    np.testing.assert_array_equal(stacks[1:, ..., 0:3], image[:-1].astype(np.float32))
    np.testing.assert_array_equal(stacks[0, ..., 0:3], image[0].astype(np.float32))
