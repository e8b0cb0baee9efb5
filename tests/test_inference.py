"""tfseg.inference: one way to load a model (one type, one error) and one order in which views are averaged."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tfseg.errors import TfsegError
from tfseg.inference import (EnsembleError, LoadedModel, ModelLoadError, ensemble_of, load_model, mean_of_views,
                             predict_views)

SIZE = 8


def constant_model(name: str, value: float, context: int = 1) -> LoadedModel:
    """A stand-in LoadedModel whose probabilities are ``value`` plus a little of the image's first channel."""

    def predict(batch):
        assert batch.shape[-1] == 3 * context, f"{name} got {batch.shape[-1]} channels"
        return (np.float32(value) + np.float32(0.01) * batch[..., :1]).astype(np.float32)

    return LoadedModel(Path(f"{name}.keras"), "keras", predict, SIZE, f"sha-{name}", context=context)


def test_the_inference_package_imports_none_of_the_commands_that_use_it():
    commands = ["tfseg.evaluation", "tfseg.robustness", "tfseg.cv", "tfseg.export", "tfseg.ensemble", "tfseg.cli"]
    code = f"import sys, tfseg.inference; print([m for m in {commands!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)
    assert out.stdout.strip() == "[]"


def test_every_reason_a_model_cannot_be_used_is_one_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    with pytest.raises(ModelLoadError, match="at least one model"):
        load_model([])
    assert issubclass(EnsembleError, ModelLoadError) and issubclass(ModelLoadError, TfsegError)


def test_model_load_error_is_still_importable_from_evaluation():
    from tfseg.evaluation import ModelLoadError as old_name

    assert old_name is ModelLoadError


def test_an_ensemble_predicts_the_mean_of_its_members_summed_in_the_order_given():
    members = [constant_model("a", 0.1), constant_model("b", 0.7), constant_model("c", 0.3)]
    ensemble = ensemble_of(members)
    batch = np.random.default_rng(0).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    outs = [m.predict(batch)[..., 0] for m in members]
    assert ensemble.predict(batch).dtype == np.float32
    np.testing.assert_array_equal(ensemble.predict(batch), ((outs[0] + outs[1]) + outs[2]) / np.float32(3))
    assert len(ensemble.sources) == 3 and ensemble.kind == "ensemble" and ensemble.run_dir is None
    assert [m["path"] for m in ensemble.describe()["members"]] == ["a.keras", "b.keras", "c.keras"]


def test_an_ensemble_hands_each_member_the_centre_of_the_widest_members_stack():
    ensemble = ensemble_of([constant_model("flat", 0.2), constant_model("stack", 0.4, context=3)])
    assert ensemble.context == 3
    batch = np.zeros((1, SIZE, SIZE, 9), np.float32)
    batch[..., 3] = 1.0  # the centre slice's first channel: what the 2-D member must see as its channel 0
    np.testing.assert_allclose(ensemble.sources[0](batch), np.full((1, SIZE, SIZE), 0.21), rtol=1e-6)


def test_the_views_of_an_ensemble_average_to_its_prediction_bit_for_bit():
    ensemble = ensemble_of([constant_model("a", 0.1), constant_model("b", 0.6)])
    image = np.random.default_rng(1).normal(size=(5, SIZE, SIZE, 3)).astype(np.float32)
    views = predict_views(ensemble.sources, image, batch_size=2, flip=True)
    assert views.shape == (4, 5, SIZE, SIZE)
    plain = mean_of_views(views, 2, tta=False)
    np.testing.assert_array_equal(plain, np.concatenate([ensemble.predict(image[i:i + 2]) for i in (0, 2, 4)]))


def test_a_keras_model_has_no_segment_volume_and_the_error_says_to_export_it():
    with pytest.raises(ModelLoadError, match=r"a\.keras is not a SavedModel.*python -m tfseg\.export"):
        constant_model("a", 0.5).segmenter()
