"""The exported segment_volume signature: PROTOCOL.md in the graph, equal to evaluate's native prediction."""
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from skimage.transform import resize

from tfseg import export
from tfseg.data import preprocess_graph
from tfseg.data.kaggle import read_patient, scan_folder
from tfseg.data.preprocess import preprocess_volume
from tfseg.evaluation import EvalOptions, evaluate_patient
from tfseg.metrics import largest_connected_component, volume_dsc

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64


def flair_threshold_model(image_size: int = SIZE, context: int = 1):
    """A stand-in network with decisive, image-dependent output: sigmoid(4·(mean 3×3 FLAIR − 1)).

    An untrained U-Net predicts ~0.5 everywhere, where any float difference flips voxels; this one has a
    real boundary (bright FLAIR, like a lesion), so comparing masks tests the preprocessing.
    """
    import keras

    inputs = keras.Input((image_size, image_size, 3 * context))
    conv = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid", name="flair")
    outputs = conv(inputs)
    kernel = np.zeros((3, 3, 3 * context, 1), np.float32)
    # FLAIR channel of every slice of the (2.5-D) stack, averaged over 3×3 and over the stack, so the
    # neighbours change the answer and a wrong stack in serving would show.
    kernel[:, :, 1::3, 0] = 4.0 / 9.0 / context
    conv.set_weights([kernel, np.array([-4.0], np.float32)])
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(keras model, its SavedModel folder)."""
    model = flair_threshold_model()
    folder = export.export_saved_model(model, tmp_path_factory.mktemp("serving") / "export")
    return model, folder


def run_fresh(code: str) -> str:
    """Run ``code`` in a fresh interpreter (only what it imports is loaded)."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                            timeout=600, env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def served_masks_match_evaluate(model, folder: Path, data: str, tmp_path: Path, patients: int | None = None,
                                context: int = 1):
    volumes = [read_patient(f) for f in scan_folder(data)][:patients]
    for i, volume in enumerate(volumes):
        np.save(tmp_path / f"slices{i}.npy", volume.image)
    # Only numpy and TensorFlow in the serving process: the SavedModel must carry the whole protocol.
    out = run_fresh(f"""
        import sys, numpy as np, tensorflow as tf
        segment = tf.saved_model.load({str(folder)!r}).signatures["segment_volume"]
        for i in range({len(volumes)}):
            mask = segment(slices=tf.constant(np.load({str(tmp_path)!r} + f"/slices{{i}}.npy")))["mask"]
            np.save({str(tmp_path)!r} + f"/mask{{i}}.npy", mask.numpy())
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("tfseg", "keras", "skimage", "scipy")))
    """)
    assert "tfseg" not in out and "skimage" not in out
    predicted = 0
    for i, volume in enumerate(volumes):
        served_mask = np.load(tmp_path / f"mask{i}.npy")
        assert served_mask.dtype == np.uint8 and served_mask.shape == volume.mask.shape
        assert set(np.unique(served_mask)) <= {0, 255}
        expected = evaluate_patient(volume, model.predict_on_batch, SIZE, EvalOptions(context=context)).prediction
        differing = int(np.count_nonzero((served_mask > 0) != expected))
        # Same float32 network input and float64 inverse resize: identical in practice; allow a handful of
        # voxels whose probability sits within float rounding of 0.5.
        assert differing <= 5, f"{volume.patient}: {differing} voxels differ"
        assert volume_dsc(served_mask > 0, expected) >= 0.99
        predicted += int(expected.sum())
    assert predicted > 0, "the stand-in predicted nothing: the comparison would be vacuous"


def test_segment_volume_in_a_fresh_process_matches_evaluate_on_the_phantom(served, phantom_dir, tmp_path):
    served_masks_match_evaluate(*served, phantom_dir, tmp_path)


def test_segment_volume_in_a_fresh_process_matches_evaluate_on_a_real_patient(served, real_data_dir, tmp_path):
    served_masks_match_evaluate(*served, real_data_dir, tmp_path, patients=1)


@pytest.fixture(scope="module")
def served_context(tmp_path_factory):
    """A 2.5-D (--context 3) stand-in and its SavedModel folder."""
    model = flair_threshold_model(context=3)
    return model, export.export_saved_model(model, tmp_path_factory.mktemp("serving3") / "export")


def test_segment_volume_of_a_context_model_builds_the_neighbour_stacks_like_evaluate_on_the_phantom(
        served_context, phantom_dir, tmp_path):
    served_masks_match_evaluate(*served_context, phantom_dir, tmp_path, context=3)


def test_segment_volume_of_a_context_model_matches_evaluate_on_a_real_patient(served_context, real_data_dir,
                                                                              tmp_path):
    served_masks_match_evaluate(*served_context, real_data_dir, tmp_path, patients=1, context=3)


@pytest.mark.parametrize("slices, message", [
    (np.zeros((5, 256, 256), np.uint8), "must be one patient volume of shape"),
    (np.ones((5, 128, 128, 3), np.uint8), "every slice must be 256x256x3"),
    (np.ones((2, 256, 256, 3), np.uint8), "at least 3 slices"),
    (np.zeros((5, 256, 256, 3), np.uint8), "all zeros"),
    (np.ones((5, 256, 256, 3), np.float32), "uint8"),
])
def test_invalid_input_fails_with_a_clear_message(served, slices, message):
    segment = tf.saved_model.load(str(served[1])).signatures["segment_volume"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        segment(slices=tf.constant(slices))


# ----------------------------------------------------------------------------
# The graph pieces against the numpy/scipy/skimage implementation they replace.
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("size_in, size_out", [(57, 64), (173, 128), (256, 128), (201, 256)])
def test_resize_matrices_reproduce_skimage_resize(size_in, size_out):
    rng = np.random.default_rng(size_in)
    image = rng.random((size_in, size_in))
    spline = preprocess_graph.spline2_resize_matrix(size_in, size_out).numpy()
    expected = resize(image, (size_out, size_out), order=2, mode="constant", cval=0, anti_aliasing=False)
    np.testing.assert_allclose(_clip(spline @ image @ spline.T, image), expected, atol=1e-12)
    linear = preprocess_graph.linear_resize_matrix(size_out, size_in).numpy()
    small = rng.random((size_out, size_out))
    expected = resize(small, (size_in, size_in), order=1, mode="constant", cval=0, anti_aliasing=False)
    np.testing.assert_allclose(_clip(linear @ small @ linear.T, small), expected, atol=1e-12)


def _clip(output, source):
    return preprocess_graph._clip_like_skimage(tf.constant(output), tf.constant(source)).numpy()


def test_graph_preprocessing_equals_preprocess_volume(phantom_dir):
    volume = read_patient(scan_folder(phantom_dir)[0])
    image, _, geometry = preprocess_volume(volume.image, volume.mask, SIZE)
    graph_image, graph_geometry = preprocess_graph.preprocess_graph(tf.constant(volume.image), SIZE)
    np.testing.assert_allclose(graph_image.numpy(), image, atol=1e-5)
    g = {k: int(v) for k, v in graph_geometry.items()}
    assert (g["z0"], g["z1"], g["y0"], g["y1"], g["x0"], g["x1"]) == (geometry.z0, geometry.z1, geometry.y0,
                                                                      geometry.y1, geometry.x0, geometry.x1)
    assert ((g["pad_y0"], g["pad_y1"]), (g["pad_x0"], g["pad_x1"])) == (geometry.pad_y, geometry.pad_x)


def test_percentile_matches_numpy_linear_interpolation():
    values = np.random.default_rng(0).random(1001) ** 3
    ordered = tf.sort(tf.constant(values))
    for q in (0.0, 10.0, 37.5, 99.0, 100.0):
        assert float(preprocess_graph.percentile_sorted(ordered, q)) == pytest.approx(np.percentile(values, q), abs=1e-15)


def test_graph_largest_component_equals_scipy_including_ties():
    rng = np.random.default_rng(0)
    lcc = tf.function(preprocess_graph.largest_component_3d)
    for _ in range(20):
        mask = rng.random(tuple(rng.integers(1, 20, 3))) < rng.uniform(0.05, 0.7)
        expected = largest_connected_component(mask) if mask.any() else mask
        np.testing.assert_array_equal(lcc(tf.constant(mask)).numpy(), expected)
    tie = np.zeros((3, 5, 5), bool)
    tie[2, 4, 0] = tie[0, 0, 4] = True  # two single voxels: scipy keeps the first in raster order
    np.testing.assert_array_equal(lcc(tf.constant(tie)).numpy(), largest_connected_component(tie))
