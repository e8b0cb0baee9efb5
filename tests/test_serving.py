"""The exported segment_volume signature: PROTOCOL.md in the graph, equal to evaluate's native prediction."""
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfseg import export
from tfseg.data.kaggle import read_patient, scan_folder
from tfseg.evaluation import EvalOptions, evaluate_patient

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
        # One implementation (tfseg.data.preprocess, tfseg.postprocess) on both sides: the same mask.
        differing = int(np.count_nonzero((served_mask > 0) != expected))
        assert differing == 0, f"{volume.patient}: {differing} voxels differ"
        predicted += int(expected.sum())
    assert predicted > 0, "the stand-in predicted nothing: the comparison would be vacuous"


def test_segment_volume_in_a_fresh_process_matches_evaluate_on_the_phantom(served, phantom_dir, tmp_path):
    served_masks_match_evaluate(*served, phantom_dir, tmp_path)


def test_segment_volume_in_a_fresh_process_matches_evaluate_on_real_patients(served, real_data_dir, tmp_path):
    served_masks_match_evaluate(*served, real_data_dir, tmp_path)


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
    (np.full((5, 256, 256, 3), 100, np.uint8), "segment_volume: the image volume has constant intensity"),
])
def test_invalid_input_fails_with_a_clear_message(served, slices, message):
    segment = tf.saved_model.load(str(served[1])).signatures["segment_volume"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        segment(slices=tf.constant(slices))


def test_an_export_of_a_run_with_a_chosen_rule_applies_it_in_segment_volume_and_carries_the_file(phantom_dir,
                                                                                                 tmp_path):
    import json

    from tfseg.postprocess import PostprocessRule, rule_for_model

    run = tmp_path / "run"
    run.mkdir()
    model = flair_threshold_model()
    model.save(run / "best.keras")
    rule = PostprocessRule(threshold=0.4, components="largest_mass")
    (run / "postprocess.json").write_text(json.dumps({"rule": rule.to_dict()}))
    folder = export.export_run(run)
    assert rule_for_model(folder) == (rule, folder / "postprocess.json")
    segment = tf.saved_model.load(str(folder)).signatures["segment_volume"]
    predicted = 0
    for files in scan_folder(phantom_dir)[:2]:
        volume = read_patient(files)
        served_mask = segment(slices=tf.constant(volume.image))["mask"].numpy() > 0
        expected = evaluate_patient(volume, model.predict_on_batch, SIZE, EvalOptions(rule=rule)).prediction
        np.testing.assert_array_equal(served_mask, expected)
        predicted += int(expected.sum())
    assert predicted > 0, "the stand-in predicted nothing: the comparison would be vacuous"


def test_export_postprocess_flag_overrides_the_run_and_a_damaged_file_names_itself(tmp_path, capsys):
    from tfseg.cli import export as export_cli

    run = tmp_path / "run"
    run.mkdir()
    flair_threshold_model().save(run / "best.keras")
    damaged = tmp_path / "postprocess.json"
    damaged.write_text('{"rule": ')
    assert export_cli.main([str(run), "--postprocess", str(damaged)]) == 2
    assert str(damaged) in capsys.readouterr().err and not (run / "export").exists()
