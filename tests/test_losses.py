"""tfseg.losses: hand-computed values, reduced precision, gradients, serialization."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfseg.losses import (EPSILON, LOSSES, BCEDiceLoss, DiceLoss, FocalTverskyLoss, TverskyLoss,
                          get_loss)


def _known_overlap():
    """A 4-pixel mask; the prediction hits 2 of its pixels and adds 2 false positives.

    TP = 2, FP = 2, FN = 2, sum(y) = 4, sum(p) = 4.
    """
    y = np.zeros((1, 4, 4, 1), np.float32)
    y[0, 0, :, 0] = 1
    p = np.zeros_like(y)
    p[0, 0, :2, 0] = 1
    p[0, 1, :2, 0] = 1
    return y, p


def _soft_batch(seed=0, shape=(2, 16, 16, 1)):
    rng = np.random.default_rng(seed)
    y = (rng.random(shape) > 0.7).astype(np.float32)
    p = np.clip(0.6 * y + 0.4 * rng.random(shape), 0.0, 1.0).astype(np.float32)
    return y, p


def _value(loss, y, p):
    return float(keras.ops.convert_to_numpy(loss(y, p)))


@pytest.mark.parametrize("loss", [DiceLoss(), TverskyLoss()], ids=["dice", "tversky"])
def test_perfect_prediction_costs_zero(loss):
    y, _ = _known_overlap()
    assert _value(loss, y, y) == pytest.approx(0.0, abs=1e-7)


def test_focal_tversky_perfect_prediction_costs_epsilon_to_the_gamma():
    y, _ = _known_overlap()
    assert _value(FocalTverskyLoss(), y, y) == pytest.approx(EPSILON ** 0.75, rel=1e-3)


@pytest.mark.parametrize("name", LOSSES)
def test_empty_mask_and_empty_prediction_cost_zero(name):
    y = np.zeros((2, 8, 8, 1), np.float32)
    assert _value(get_loss(name), y, y) == pytest.approx(0.0, abs=1e-5)


def test_dice_loss_of_known_overlap():
    y, p = _known_overlap()
    # 1 - (2*2 + 1) / (4 + 4 + 1)
    assert _value(DiceLoss(), y, p) == pytest.approx(1 - 5 / 9, abs=1e-6)


def test_tversky_loss_of_known_overlap():
    y, p = _known_overlap()
    # 1 - (2 + 1) / (2 + 0.3*2 + 0.7*2 + 1)
    assert _value(TverskyLoss(), y, p) == pytest.approx(1 - 3 / 5, abs=1e-6)


def test_tversky_alpha_weights_false_positives():
    y = np.zeros((1, 4, 4, 1), np.float32)
    y[0, 0, :, 0] = 1
    only_false_positives = y.copy()
    only_false_positives[0, 1, :, 0] = 1  # TP 4, FP 4, FN 0
    loss = TverskyLoss(alpha=0.5, beta=0.0, smooth=0.0)
    assert _value(loss, y, only_false_positives) == pytest.approx(1 - 4 / (4 + 0.5 * 4), abs=1e-6)


def test_focal_tversky_loss_of_known_overlap():
    y, p = _known_overlap()
    assert _value(FocalTverskyLoss(), y, p) == pytest.approx((1 - 3 / 5) ** 0.75, abs=1e-6)


def test_bce_dice_loss_of_an_undecided_prediction():
    y, _ = _known_overlap()
    p = np.full_like(y, 0.5)
    # BCE = log 2 at every pixel; Dice: I = 2, sum(y) = 4, sum(p) = 8.
    expected = 0.5 * math.log(2) + 0.5 * (1 - 5 / 13)
    assert _value(BCEDiceLoss(), y, p) == pytest.approx(expected, abs=1e-6)


def test_bce_of_saturated_wrong_predictions_is_clipped_to_about_minus_log_epsilon():
    y, _ = _known_overlap()
    value = _value(BCEDiceLoss(bce_weight=1.0), y, 1.0 - y)
    # 1 - EPSILON rounds in float32, so the y = 0 side costs -log(1.19e-7) = 15.9, not 16.1.
    assert value == pytest.approx(-math.log(EPSILON), rel=2e-2)


def test_dice_loss_is_computed_over_the_whole_batch_not_averaged_per_image():
    y = np.zeros((2, 4, 4, 1), np.float32)
    y[0, 0, :, 0] = 1  # image 0: 4-pixel mask, predicted perfectly
    p = y.copy()
    p[1, 0, 0, 0] = 1  # image 1: empty mask, 1 false positive
    # Batch: I = 4, sum(y) = 4, sum(p) = 5.
    assert _value(DiceLoss(), y, p) == pytest.approx(1 - 9 / 10, abs=1e-6)


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "mean"])
def test_keras_reduction_leaves_the_batch_value_unchanged(reduction):
    y, p = _known_overlap()
    y, p = np.concatenate([y] * 3), np.concatenate([p] * 3)
    loss = DiceLoss(reduction=reduction)(y, p)
    assert tuple(loss.shape) == ()
    assert float(loss) == pytest.approx(1 - 13 / 25, abs=1e-6)


def test_sample_weight_is_refused():
    y, p = _known_overlap()
    with pytest.raises(ValueError, match="sample_weight"):
        DiceLoss()(y, p, sample_weight=np.ones(1, np.float32))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", LOSSES)
def test_reduced_precision_predictions_give_the_float32_loss(name, dtype):
    y, p = _soft_batch()
    loss = get_loss(name)
    reference = _value(loss, y, p)
    low = _value(loss, tf.constant(y, dtype), tf.constant(p, dtype))
    assert math.isfinite(low)
    # bfloat16 keeps 8 bits of mantissa: the inputs themselves move by up to 0.4%.
    assert low == pytest.approx(reference, abs=1e-2)


@pytest.mark.parametrize("name", LOSSES)
def test_float16_sums_beyond_65504_do_not_overflow(name):
    # Two 256x256 all-foreground slices: sum(y) = 131072 is inf in float16.
    y = tf.ones((2, 256, 256, 1), "float16")
    p = tf.fill((2, 256, 256, 1), tf.constant(0.75, "float16"))
    y32, p32 = tf.cast(y, "float32"), tf.cast(p, "float32")
    loss = get_loss(name)
    assert _value(loss, y, p) == pytest.approx(_value(loss, y32, p32), rel=1e-6)


@pytest.mark.parametrize("perfect", [False, True], ids=["soft", "perfect"])
@pytest.mark.parametrize("name", LOSSES)
def test_gradients_are_finite(name, perfect):
    y, p = _soft_batch()
    if perfect:
        p = y.copy()
    p = tf.Variable(p)
    with tf.GradientTape() as tape:
        value = get_loss(name)(tf.constant(y), p)
    grad = tape.gradient(value, p).numpy()
    assert np.isfinite(grad).all()
    if not perfect:
        assert np.abs(grad).sum() > 0


@pytest.mark.parametrize("loss", [
    DiceLoss(smooth=2.0),
    TverskyLoss(alpha=0.4, beta=0.6, smooth=0.5),
    FocalTverskyLoss(alpha=0.2, beta=0.8, gamma=1.5, smooth=0.1),
    BCEDiceLoss(bce_weight=0.25, smooth=3.0),
], ids=LOSSES)
def test_serialization_round_trip(loss):
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    y, p = _soft_batch(seed=1)
    assert _value(restored, y, p) == pytest.approx(_value(loss, y, p), abs=1e-7)


def test_losses_are_registered_under_the_tfseg_package():
    assert keras.saving.get_registered_object("tfseg>DiceLoss") is DiceLoss
    assert keras.saving.get_registered_object("tfseg>FocalTverskyLoss") is FocalTverskyLoss


def test_get_loss_passes_keyword_arguments():
    loss = get_loss("focal_tversky", gamma=1.0)
    assert isinstance(loss, FocalTverskyLoss) and loss.gamma == 1.0


def test_get_loss_rejects_unknown_names_and_lists_the_known_ones():
    with pytest.raises(ValueError, match="dice, tversky, focal_tversky, bce_dice"):
        get_loss("jaccard")


def test_bce_weight_outside_unit_interval_is_rejected():
    with pytest.raises(ValueError, match="bce_weight"):
        BCEDiceLoss(bce_weight=1.5)


def test_under_two_mirrored_replicas_every_loss_and_its_gradient_are_those_of_the_whole_global_batch():
    """2 logical CPUs (a fresh process: devices are fixed at TensorFlow start-up), 4 + 4 images: the
    loss each replica reports and the gradient summed over replicas (what the optimizer applies) equal
    the single-device loss and gradient of all 8 images, not the mean of two per-replica losses."""
    import json
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    code = textwrap.dedent("""
        import json, numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from tfseg.losses import LOSSES, get_loss
        rng = np.random.default_rng(0)
        y = (rng.random((8, 16, 16, 1)) > 0.8).astype("float32")
        y[4:] = 0  # replica 1 sees no tumour: a per-replica mean would differ a lot from the global Dice
        logits = rng.normal(size=(8, 16, 16, 1)).astype("float32")

        def loss_and_grad(loss, y, logits, w):
            with tf.GradientTape() as tape:
                value = loss(y, tf.sigmoid(w * logits))
            return value, tape.gradient(value, w)

        mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        out = {}
        for name in LOSSES:
            loss = get_loss(name)
            w = tf.Variable(1.5)
            single, single_grad = loss_and_grad(loss, y, logits, w)
            with mirrored.scope():
                wm = tf.Variable(1.5)
            halves = mirrored.experimental_distribute_values_from_function(
                lambda ctx: (y[4 * ctx.replica_id_in_sync_group:][:4], logits[4 * ctx.replica_id_in_sync_group:][:4]))
            values, grads = mirrored.run(tf.function(lambda b: loss_and_grad(loss, b[0], b[1], wm)), args=(halves,))
            out[name] = {"single": float(single), "single_grad": float(single_grad),
                         # Keras scales each replica's loss by 1/2 and the optimizer sums the replicas' gradients
                         "replicas": [2 * float(v) for v in mirrored.experimental_local_results(values)],
                         "grad": float(mirrored.reduce("SUM", grads, axis=None))}
        print(json.dumps(out))
    """)
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for name, out in json.loads(result.stdout.strip().splitlines()[-1]).items():
        assert out["replicas"] == pytest.approx([out["single"]] * 2, rel=1e-5), name
        assert out["grad"] == pytest.approx(out["single_grad"], rel=1e-4, abs=1e-7), name
