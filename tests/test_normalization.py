"""tfseg.models.normalization: the fused BatchNorm does Keras's BatchNormalization arithmetic, faster."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfseg.models import build_model
from tfseg.models.normalization import FusedBatchNormalization


def _pair(channels=5, seed=0):
    """A Keras BatchNormalization and a FusedBatchNormalization with the same (non-trivial) weights."""
    rng = np.random.default_rng(seed)
    plain = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    fused = FusedBatchNormalization(momentum=0.9, epsilon=1e-5)
    for layer in (plain, fused):
        layer.build((None, 8, 8, channels))
    plain.gamma.assign(rng.random(channels) + 0.5)
    plain.beta.assign(rng.random(channels))
    plain.moving_mean.assign(rng.random(channels))
    plain.moving_variance.assign(rng.random(channels) + 0.5)
    fused.set_weights(plain.get_weights())
    return plain, fused


def _images(seed=1):
    rng = np.random.default_rng(seed)
    return tf.constant((rng.standard_normal((4, 8, 8, 5)) * 3 + 1).astype(np.float32))


def _step(layer, x):
    """One training call: outputs, then gradients of a loss w.r.t. input, gamma and beta.

    The loss weighs every output element differently: a per-channel sum would have a
    zero input gradient (normalization removes shifts and scales), which tests nothing.
    """
    weights = tf.constant(np.random.default_rng(2).standard_normal(x.shape).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights)
    return y, tape.gradient(loss, [x, layer.gamma, layer.beta])


# tol: outputs and gradients; stat_tol: moving statistics (in bfloat16 the two sum the rounded inputs
# in different orders: about 2e-4 relative).
@pytest.mark.parametrize("policy, tol, stat_tol", [("float32", 1e-5, 1e-5), ("mixed_bfloat16", 1e-2, 1e-3)])
def test_a_training_step_matches_keras_batch_normalization(policy, tol, stat_tol):
    keras.mixed_precision.set_global_policy(policy)
    plain, fused = _pair()
    x = _images()
    y_plain, grads_plain = _step(plain, x)
    y_fused, grads_fused = _step(fused, x)

    assert y_fused.dtype == y_plain.dtype
    np.testing.assert_allclose(np.float32(y_fused), np.float32(y_plain), atol=tol, rtol=tol)
    for g_fused, g_plain in zip(grads_fused, grads_plain):
        g_plain = np.float32(g_plain)
        np.testing.assert_allclose(np.float32(g_fused), g_plain, rtol=tol, atol=tol * np.abs(g_plain).max())
    # Moving statistics: Keras's momentum rule on the population variance (Bessel's correction undone).
    np.testing.assert_allclose(fused.moving_mean.numpy(), plain.moving_mean.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fused.moving_variance.numpy(), plain.moving_variance.numpy(), rtol=stat_tol)
    seen = np.float32(tf.cast(x, fused.compute_dtype))  # the inputs as the layer saw them
    previous = _pair()[0].moving_variance.numpy()
    np.testing.assert_allclose(fused.moving_variance.numpy(), 0.9 * previous + 0.1 * np.var(seen, axis=(0, 1, 2)),
                               rtol=stat_tol)


def test_inference_and_frozen_layers_use_the_moving_statistics_like_keras():
    plain, fused = _pair()
    x = _images()
    np.testing.assert_array_equal(fused(x, training=False).numpy(), plain(x, training=False).numpy())
    fused.trainable = plain.trainable = False
    np.testing.assert_array_equal(fused(x, training=True).numpy(), plain(x, training=True).numpy())
    np.testing.assert_array_equal(fused.moving_mean.numpy(), _pair()[1].moving_mean.numpy())  # not updated


def test_inputs_the_kernel_does_not_cover_fall_back_to_keras():
    layer = FusedBatchNormalization()
    assert layer._fusable(tf.zeros((2, 4, 4, 3)), None)
    assert not layer._fusable(tf.zeros((2, 4, 3)), None)  # 3-D
    assert not layer._fusable(tf.zeros((2, 4, 4, 3)), tf.ones((2, 4, 4)))  # a mask
    assert not FusedBatchNormalization(axis=1)._fusable(tf.zeros((2, 3, 4, 4)), None)  # channels first
    y = FusedBatchNormalization()(tf.ones((2, 6, 3)), training=True)  # still works, through Keras
    assert y.shape == (2, 6, 3)


def test_models_use_it_and_save_and_load_with_it(tmp_path):
    model = build_model("unet", (32, 32, 3), 4)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(isinstance(layer, FusedBatchNormalization) for layer in norms)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    assert isinstance(loaded.get_layer(norms[0].name), FusedBatchNormalization)
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict_on_batch(x), model.predict_on_batch(x))


@pytest.mark.parametrize("arch", ["unet", "attention_unet", "resunet"])
def test_build_model_batch_norm_keras_builds_the_same_network_with_keras_layers(arch):
    fused = build_model(arch, (32, 32, 3), 4)
    plain = build_model(arch, (32, 32, 3), 4, batch_norm="keras")
    kinds = {type(layer) for layer in plain.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert kinds == {keras.layers.BatchNormalization}
    plain.set_weights(fused.get_weights())  # same variables in the same order
    x = np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(plain.predict_on_batch(x), fused.predict_on_batch(x), atol=1e-6)
    # The choice is scoped to that call: the next model is fused again.
    again = build_model(arch, (32, 32, 3), 4)
    assert any(isinstance(layer, FusedBatchNormalization) for layer in again.layers)


def test_build_model_names_the_batch_norm_choices_on_a_wrong_one():
    with pytest.raises(ValueError, match="fused, keras"):
        build_model("unet", (32, 32, 3), 4, batch_norm="group")
