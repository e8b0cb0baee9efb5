"""Specification of tfseg.models: shapes, dtypes, training, saving and the registry.

Kept small for CPU runs: 64x64 inputs and base_filters 8, except the parameter-count test (build only).
"""
import keras
import numpy as np
import pytest

from tfseg.models import (ARCHITECTURES, build_model, deep_supervision_weights,
                          inference_model, register)

ARCHS = ["unet", "attention_unet", "resunet"]
SIZE = 64
BASE = 8


def small_model(arch, deep_supervision=False):
    return build_model(arch, input_shape=(SIZE, SIZE, 3), base_filters=BASE, deep_supervision=deep_supervision)


def random_batch(n=2, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, SIZE, SIZE, 3)).astype("float32")
    masks = (rng.random((n, SIZE, SIZE, 1)) > 0.9).astype("float32")
    return images, masks


def n_params(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


@pytest.fixture
def policy(request):
    """Sets the global dtype policy named by the test parameter; restores float32 afterwards."""
    keras.mixed_precision.set_global_policy(request.param)
    try:
        yield request.param
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_all_three_architectures_are_registered():
    assert set(ARCHS) <= set(ARCHITECTURES)


def test_unet_has_the_reference_parameter_count():
    model = build_model("unet", input_shape=(128, 128, 3), base_filters=32)
    assert n_params(model.trainable_weights) == 7_763_041


@pytest.mark.parametrize("arch", ARCHS)
def test_batchnorm_uses_pytorch_momentum_and_epsilon(arch):
    norms = [layer for layer in small_model(arch).layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms
    assert all(layer.momentum == 0.9 and layer.epsilon == 1e-5 for layer in norms)


@pytest.mark.parametrize("arch", ARCHS)
def test_models_contain_no_lambda_layers(arch):
    model = small_model(arch, deep_supervision=True)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)


@pytest.mark.parametrize("arch", ARCHS)
def test_output_is_a_float32_probability_map_of_the_input_size(arch):
    images, _ = random_batch()
    probs = small_model(arch).predict(images, verbose=0)
    assert probs.shape == (2, SIZE, SIZE, 1)
    assert probs.dtype == np.float32
    assert 0.0 <= probs.min() and probs.max() <= 1.0


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"], indirect=True)
@pytest.mark.parametrize("arch", ARCHS)
def test_two_training_steps_give_a_finite_loss(arch, policy):
    model = small_model(arch)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    images, masks = random_batch(n=4)
    history = model.fit(images, masks, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.parametrize("policy", ["mixed_bfloat16"], indirect=True)
@pytest.mark.parametrize("arch", ARCHS)
def test_outputs_stay_float32_under_mixed_precision(arch, policy):
    model = small_model(arch, deep_supervision=True)
    assert model.get_layer("enc1_conv1").compute_dtype == "bfloat16"
    assert [out.dtype for out in model.outputs] == ["float32"] * 3
    images, _ = random_batch()
    assert all(probs.dtype == np.float32 for probs in model.predict(images, verbose=0))


@pytest.mark.parametrize("deep_supervision", [False, True], ids=["single", "deep_supervision"])
@pytest.mark.parametrize("arch", ARCHS)
def test_keras_file_reloads_with_identical_predictions(arch, deep_supervision, tmp_path):
    model = small_model(arch, deep_supervision)
    images, _ = random_batch()
    path = tmp_path / f"{arch}.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    expected, actual = model.predict(images, verbose=0), reloaded.predict(images, verbose=0)
    if not deep_supervision:
        expected, actual = [expected], [actual]
    assert len(actual) == len(expected)
    for e, a in zip(expected, actual):
        np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("arch", ARCHS)
def test_deep_supervision_adds_two_full_resolution_auxiliary_outputs(arch):
    model = small_model(arch, deep_supervision=True)
    assert model.output_names == ["out", "aux1", "aux2"]
    assert [tuple(out.shape) for out in model.outputs] == [(None, SIZE, SIZE, 1)] * 3


def test_deep_supervision_is_off_by_default():
    model = build_model("unet", input_shape=(SIZE, SIZE, 3), base_filters=BASE)
    assert model.output_names == ["out"]


def test_inference_model_keeps_only_the_main_output_with_shared_weights():
    model = small_model("unet", deep_supervision=True)
    single = inference_model(model)
    assert len(single.outputs) == 1
    assert single.get_layer("out_conv") is model.get_layer("out_conv")
    images, _ = random_batch()
    np.testing.assert_array_equal(single.predict(images, verbose=0), model.predict(images, verbose=0)[0])


def test_inference_model_returns_a_single_output_model_itself():
    model = small_model("unet")
    assert inference_model(model) is model


def test_deep_supervision_weights_halve_per_auxiliary_output():
    assert deep_supervision_weights(small_model("unet", deep_supervision=True)) == [1.0, 0.5, 0.25]
    assert deep_supervision_weights(small_model("unet")) == [1.0]


def test_deep_supervision_model_trains_with_weighted_losses():
    model = small_model("resunet", deep_supervision=True)
    model.compile(optimizer="adam", loss=["binary_crossentropy"] * 3, loss_weights=deep_supervision_weights(model))
    images, masks = random_batch(n=4)
    history = model.fit(images, [masks] * 3, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_unknown_architecture_error_lists_the_known_names():
    with pytest.raises(ValueError, match="unknown architecture 'vnet'") as error:
        build_model("vnet")
    for arch in ARCHS:
        assert arch in str(error.value)


def test_input_size_not_divisible_by_16_is_rejected():
    with pytest.raises(ValueError, match="divisible by 16"):
        build_model("unet", input_shape=(100, 100, 3))


def test_register_makes_a_builder_available_to_build_model():
    @register("tiny_test_net")
    def build_tiny(input_shape, base_filters, deep_supervision, name="tiny"):
        inputs = keras.Input(input_shape)
        return keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(inputs), name=name)

    try:
        assert build_model("tiny_test_net", input_shape=(16, 16, 3), name="custom").name == "custom"
    finally:
        ARCHITECTURES.pop("tiny_test_net")


def test_registering_a_taken_name_with_another_builder_fails():
    with pytest.raises(ValueError, match="already registered"):
        register("unet")(lambda **kwargs: None)
