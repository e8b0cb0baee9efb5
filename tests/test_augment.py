"""Specification of tfseg.training.augment: in-step batch augmentation of images and masks."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfseg.training.augment import Augment, AugmentConfig, affine_warp

SIZE = 64


def smooth_batch(batch=4, size=SIZE, channels=3, seed=0):
    """Images that are sums of Gaussian blobs, and masks that are exactly `image > 0.5`."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size].astype("float32")
    images = np.zeros((batch, size, size, 1), "float32")
    for b in range(batch):
        for _ in range(3):
            r, c = rng.uniform(0.25 * size, 0.75 * size, size=2)
            sigma = rng.uniform(0.08 * size, 0.15 * size)
            images[b, ..., 0] += np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * sigma ** 2))
    masks = (images > 0.5).astype("float32")
    return np.repeat(images, channels, axis=-1), masks


def as_numpy(pair):
    return tuple(keras.ops.convert_to_numpy(t) for t in pair)


def test_config_defaults_match_the_reference_geometric_augmentation_with_intensity_off():
    config = AugmentConfig()
    assert (config.scale, config.rotation, config.flip) == (0.05, 15.0, 0.5)
    assert (config.brightness, config.contrast, config.gamma) == (0.0, 0.0, 0.0)
    assert not config.intensity


def test_config_round_trips_through_a_dict():
    config = AugmentConfig(scale=0.1, rotation=5.0, flip=0.0, brightness=0.2, contrast=0.1, gamma=0.3)
    assert AugmentConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("bad", [{"flip": 1.5}, {"rotation": -1.0}, {"scale": 1.0}, {"zoom": 0.1}])
def test_config_rejects_invalid_values_and_unknown_keys(bad):
    with pytest.raises(ValueError):
        AugmentConfig.from_dict(bad)


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_affine_warp_matches_keras_affine_transform(interpolation):
    images = np.random.default_rng(0).random((6, 37, 45, 3)).astype("float32")
    transforms = Augment(AugmentConfig(scale=0.2, rotation=40.0), seed=0)._affine_transforms(images.shape)
    ours = keras.ops.convert_to_numpy(affine_warp(images, transforms, interpolation))
    reference = keras.ops.convert_to_numpy(keras.ops.image.affine_transform(
        images, transforms, interpolation=interpolation, fill_mode="constant", fill_value=0))
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_rotation_and_zoom_are_about_the_image_centre():
    # A centred disk is unchanged by any rotation, and a zoom keeps it centred.
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    disk = (np.hypot(rows - (SIZE - 1) / 2, cols - (SIZE - 1) / 2) < SIZE / 4).astype("float32")
    masks = np.repeat(disk[None, ..., None], 4, axis=0)
    for config in (AugmentConfig(scale=0.0, rotation=90.0, flip=0.0), AugmentConfig(scale=0.3, rotation=90.0)):
        _, out = as_numpy(Augment(config, seed=0)(masks, masks))
        for mask in out[..., 0]:
            r, c = np.argwhere(mask > 0).mean(axis=0)
            assert abs(r - (SIZE - 1) / 2) < 0.5 and abs(c - (SIZE - 1) / 2) < 0.5
    _, out = as_numpy(Augment(AugmentConfig(scale=0.0, rotation=90.0, flip=0.0), seed=0)(masks, masks))
    assert np.mean(out != masks) < 0.01  # only boundary pixels change


def test_pure_flip_equals_numpy_flip_along_width_exactly():
    images, masks = smooth_batch(batch=2)
    images = images + np.random.default_rng(1).normal(size=images.shape).astype("float32")
    augment = Augment(AugmentConfig(scale=0.0, rotation=0.0, flip=1.0), seed=0)
    out_images, out_masks = as_numpy(augment(images, masks, training=True))
    np.testing.assert_array_equal(out_images, np.flip(images, axis=2))
    np.testing.assert_array_equal(out_masks, np.flip(masks, axis=2))


def test_inputs_are_returned_unchanged_when_not_training():
    images, masks = smooth_batch()
    out_images, out_masks = as_numpy(Augment(seed=0)(images, masks, training=False))
    np.testing.assert_array_equal(out_images, images)
    np.testing.assert_array_equal(out_masks, masks)


def test_inputs_are_returned_unchanged_when_every_component_is_zero():
    images, masks = smooth_batch()
    off = AugmentConfig(scale=0.0, rotation=0.0, flip=0.0)
    out_images, out_masks = as_numpy(Augment(off, seed=0)(images, masks, training=True))
    np.testing.assert_array_equal(out_images, images)
    np.testing.assert_array_equal(out_masks, masks)


def test_image_and_mask_stay_aligned():
    images, masks = smooth_batch(batch=8)
    strong = AugmentConfig(scale=0.2, rotation=30.0, flip=0.5)
    out_images, out_masks = as_numpy(Augment(strong, seed=3)(images, masks, training=True))
    assert not np.array_equal(out_masks, masks)  # the transform did move things
    thresholded = out_images[..., :1] > 0.5
    truth = out_masks > 0.5
    agreement = np.mean(thresholded == truth)
    iou = np.sum(thresholded & truth) / np.sum(thresholded | truth)
    assert agreement >= 0.98, agreement
    assert iou > 0.93, iou  # ~0.96 observed; a mis-registered mask scores < 0.75


def test_masks_stay_exactly_binary():
    images, masks = smooth_batch(batch=8)
    _, out_masks = as_numpy(Augment(AugmentConfig(scale=0.2, rotation=30.0), seed=5)(images, masks))
    assert set(np.unique(out_masks)) <= {0.0, 1.0}
    assert out_masks.sum() > 0


def test_same_seed_gives_the_same_batch_and_a_different_seed_a_different_one():
    images, masks = smooth_batch()
    first = as_numpy(Augment(seed=7)(images, masks))
    again = as_numpy(Augment(seed=7)(images, masks))
    other = as_numpy(Augment(seed=8)(images, masks))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_successive_calls_draw_new_transforms():
    images, masks = smooth_batch()
    augment = Augment(seed=7)
    first, _ = as_numpy(augment(images, masks))
    second, _ = as_numpy(augment(images, masks))
    assert not np.array_equal(first, second)


def test_seed_generator_state_is_a_non_trainable_variable_of_the_layer():
    augment = Augment(seed=7)
    state = augment.seed_generator.state
    assert any(v is state for v in augment.non_trainable_variables)
    assert not augment.trainable_variables


def test_intensity_augmentation_changes_the_image_but_not_the_mask():
    images, masks = smooth_batch()
    intensity_only = AugmentConfig(scale=0.0, rotation=0.0, flip=0.0, brightness=0.2, contrast=0.2, gamma=0.3)
    out_images, out_masks = as_numpy(Augment(intensity_only, seed=0)(images, masks))
    np.testing.assert_array_equal(out_masks, masks)
    assert not np.allclose(out_images, images)
    assert np.all(np.isfinite(out_images))


def test_gamma_keeps_each_channels_minimum_and_maximum():
    images, masks = smooth_batch()
    standardized = (images - images.mean()) / images.std()
    gamma_only = AugmentConfig(scale=0.0, rotation=0.0, flip=0.0, gamma=0.5)
    out_images, _ = as_numpy(Augment(gamma_only, seed=0)(standardized, masks))
    assert not np.allclose(out_images, standardized)
    np.testing.assert_allclose(out_images.min(axis=(1, 2)), standardized.min(axis=(1, 2)), atol=1e-5)
    np.testing.assert_allclose(out_images.max(axis=(1, 2)), standardized.max(axis=(1, 2)), atol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_output_dtypes_match_input_dtypes(dtype):
    images, masks = smooth_batch(batch=2)
    out_images, out_masks = Augment(seed=0)(images.astype(dtype), masks.astype(dtype))
    assert keras.backend.standardize_dtype(out_images.dtype) == dtype
    assert keras.backend.standardize_dtype(out_masks.dtype) == dtype


def test_runs_inside_a_tf_function_train_step():
    images, masks = smooth_batch(batch=4)
    augment = Augment(seed=0)

    @tf.function(input_signature=[tf.TensorSpec((None, SIZE, SIZE, 3)), tf.TensorSpec((None, SIZE, SIZE, 1))])
    def step(x, y):
        return augment(x, y, training=True)

    first = as_numpy(step(images, masks))
    second = as_numpy(step(images, masks))
    assert first[0].shape == (4, SIZE, SIZE, 3) and first[1].shape == (4, SIZE, SIZE, 1)
    assert set(np.unique(first[1])) <= {0.0, 1.0}
    assert not np.array_equal(first[0], second[0])  # the seed state advances across calls


def test_compiles_with_xla_as_keras_does_for_a_train_step_on_a_gpu():
    images, masks = smooth_batch(batch=4)
    augment = Augment(AugmentConfig(brightness=0.1, contrast=0.1, gamma=0.2), seed=0)
    step = tf.function(lambda x, y: augment(x, y, training=True), jit_compile=True)
    out_images, out_masks = as_numpy(step(images, masks))
    assert out_images.shape == images.shape
    assert set(np.unique(out_masks)) <= {0.0, 1.0}


def test_runs_under_a_tf_distribute_strategy():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        augment = Augment(seed=0)
    images, masks = smooth_batch(batch=4)

    @tf.function
    def step(x, y):
        return strategy.run(lambda a, b: augment(a, b, training=True), args=(x, y))

    out_images, out_masks = as_numpy(step(tf.constant(images), tf.constant(masks)))
    assert out_images.shape == images.shape
    assert set(np.unique(out_masks)) <= {0.0, 1.0}


def test_get_config_round_trip():
    config = AugmentConfig(scale=0.1, rotation=10.0, flip=0.25, brightness=0.1)
    augment = Augment(config, seed=11, name="aug")
    restored = Augment.from_config(augment.get_config())
    assert restored.config == config and restored.seed == 11 and restored.name == "aug"
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(augment))
    assert isinstance(rebuilt, Augment) and rebuilt.config == config
    images, masks = smooth_batch(batch=2)
    np.testing.assert_array_equal(as_numpy(augment(images, masks))[0], as_numpy(rebuilt(images, masks))[0])


# ----------------------------------------------------------------------------
# Scan variation: sequence dropout (a missing sequence replaced by FLAIR) and noise
# ----------------------------------------------------------------------------

OFF = dict(scale=0.0, rotation=0.0, flip=0.0)


def distinct_channels(batch=64, channels=3, seed=0):
    """Standardized-looking images whose every channel differs from every other, and their masks."""
    images = np.random.default_rng(seed).normal(size=(batch, 16, 16, channels)).astype("float32")
    return images, (images[..., :1] > 0.5).astype("float32")


def test_scan_variation_components_are_off_by_default_and_round_trip_through_a_dict():
    assert (AugmentConfig().noise, AugmentConfig().sequence_dropout) == (0.0, 0.0)
    config = AugmentConfig(noise=0.1, sequence_dropout=0.3)
    assert AugmentConfig.from_dict(config.to_dict()) == config
    assert config.intensity and not AugmentConfig(sequence_dropout=0.3).intensity


@pytest.mark.parametrize("bad", [{"sequence_dropout": 1.5}, {"sequence_dropout": -0.1}, {"noise": -1.0}])
def test_config_rejects_a_sequence_dropout_outside_0_1_and_negative_noise(bad):
    with pytest.raises(ValueError):
        AugmentConfig(**bad)


def test_sequence_dropout_of_1_replaces_pre_post_or_both_by_flair_in_every_sample_and_leaves_masks():
    images, masks = distinct_channels()
    out, out_masks = as_numpy(Augment(AugmentConfig(**OFF, sequence_dropout=1.0), seed=0)(images, masks))
    np.testing.assert_array_equal(out_masks, masks)
    np.testing.assert_array_equal(out[..., 1], images[..., 1])  # FLAIR itself is kept
    pre_replaced = (out[..., 0] == images[..., 1]).all(axis=(1, 2))
    post_replaced = (out[..., 2] == images[..., 1]).all(axis=(1, 2))
    pre_kept = (out[..., 0] == images[..., 0]).all(axis=(1, 2))
    post_kept = (out[..., 2] == images[..., 2]).all(axis=(1, 2))
    assert ((pre_replaced | pre_kept) & (post_replaced | post_kept)).all()  # whole channels, nothing else
    assert (pre_replaced | post_replaced).all()
    kinds = {(bool(a), bool(b)) for a, b in zip(pre_replaced, post_replaced)}
    assert kinds == {(True, False), (False, True), (True, True)}  # all three choices occur in 64 samples


def test_sequence_dropout_of_0_changes_nothing():
    images, masks = distinct_channels()
    out, out_masks = as_numpy(Augment(AugmentConfig(**OFF, sequence_dropout=0.0), seed=0)(images, masks))
    np.testing.assert_array_equal(out, images)
    np.testing.assert_array_equal(out_masks, masks)


def test_sequence_dropout_replaces_about_the_given_share_of_samples():
    images, masks = distinct_channels(batch=400)
    out, _ = as_numpy(Augment(AugmentConfig(**OFF, sequence_dropout=0.25), seed=1)(images, masks))
    changed = (out != images).any(axis=(1, 2, 3)).mean()
    assert 0.18 < changed < 0.32


def test_sequence_dropout_of_a_context_model_makes_the_same_choice_in_every_stack():
    images, masks = distinct_channels(channels=9)  # --context 3: 3 stacks of pre, FLAIR, post
    out, _ = as_numpy(Augment(AugmentConfig(**OFF, sequence_dropout=1.0), seed=0)(images, masks))
    for sequence in (0, 2):
        replaced = np.stack([(out[..., 3 * k + sequence] == images[..., 3 * k + 1]).all(axis=(1, 2))
                             for k in range(3)])
        kept = np.stack([(out[..., 3 * k + sequence] == images[..., 3 * k + sequence]).all(axis=(1, 2))
                         for k in range(3)])
        assert (replaced.all(axis=0) | kept.all(axis=0)).all()
    np.testing.assert_array_equal(out[..., 1::3], images[..., 1::3])


def test_sequence_dropout_needs_channels_in_stacks_of_three():
    images, masks = distinct_channels(channels=4)
    with pytest.raises(ValueError, match="3·K channels"):
        Augment(AugmentConfig(**OFF, sequence_dropout=0.5), seed=0)(images, masks)


def test_noise_adds_unbiased_gaussian_noise_of_the_given_standard_deviation_to_the_image_only():
    images, masks = distinct_channels()
    out, out_masks = as_numpy(Augment(AugmentConfig(**OFF, noise=0.2), seed=0)(images, masks))
    np.testing.assert_array_equal(out_masks, masks)
    difference = out - images
    assert difference.std() == pytest.approx(0.2, rel=0.03)
    assert abs(difference.mean()) < 0.01


@pytest.mark.parametrize("components", [dict(noise=0.1, sequence_dropout=0.5), dict(blur=0.5, low_resolution=0.5)])
def test_scan_variation_and_resolution_components_compile_with_xla(components):
    images, masks = distinct_channels(batch=8)
    augment = Augment(AugmentConfig(**components), seed=0)
    step = tf.function(lambda x, y: augment(x, y, training=True), jit_compile=True)
    out_images, out_masks = as_numpy(step(images, masks))
    assert out_images.shape == images.shape and np.all(np.isfinite(out_images))
    assert set(np.unique(out_masks)) <= {0.0, 1.0}


def test_each_mirrored_replica_draws_its_own_augmentation():
    """2 logical CPUs in a fresh process: the same images on both replicas come out differently
    transformed, and the draws of a replica are reproducible from the layer's seed."""
    import json
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    code = textwrap.dedent("""
        import json, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from tfseg.training.augment import Augment
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

        def draws():
            with strategy.scope():
                augment = Augment({"scale": 0, "rotation": 0, "flip": 0, "brightness": 1.0}, seed=7)
            x, m = tf.zeros((2, 4, 4, 3)), tf.zeros((2, 4, 4, 1))
            step = tf.function(lambda: strategy.run(lambda: augment(x, m, training=True)[0][:, 0, 0, 0]))
            return [strategy.experimental_local_results(step())[r].numpy().tolist() for r in (0, 1)]

        print(json.dumps([draws(), draws()]))
    """)
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    first, again = json.loads(result.stdout.strip().splitlines()[-1])
    assert first[0] != first[1]  # the two replicas' brightness shifts differ
    assert first == again  # same seed, same draws per replica


# --- resolution: nnU-Net's Gaussian blur and simulated low resolution ---------------------------------------

def test_resolution_components_are_off_by_default_and_round_trip_through_a_dict():
    assert (AugmentConfig().blur, AugmentConfig().low_resolution) == (0.0, 0.0)
    config = AugmentConfig(blur=0.2, low_resolution=0.25)
    assert AugmentConfig.from_dict(config.to_dict()) == config
    assert config.resolution and not config.intensity and not AugmentConfig().resolution


@pytest.mark.parametrize("bad", [{"blur": 1.2}, {"blur": -0.1}, {"low_resolution": 2.0}])
def test_config_rejects_a_blur_or_low_resolution_probability_outside_0_1(bad):
    with pytest.raises(ValueError, match=f"AugmentConfig.{next(iter(bad))} "):
        AugmentConfig(**bad)


@pytest.mark.parametrize("sigma", [0.5, 0.8, 1.0])
def test_gaussian_blur_equals_scipy_with_mirrored_edges(sigma):
    from scipy import ndimage

    from tfseg.training.augment import BLUR_RADIUS, gaussian_blur

    images, _ = distinct_channels(batch=2, channels=3)
    out = keras.ops.convert_to_numpy(gaussian_blur(images, np.full(2, sigma, "float32")))
    for b in range(2):
        expected = ndimage.gaussian_filter(images[b], (sigma, sigma, 0), mode="reflect", radius=BLUR_RADIUS)
        np.testing.assert_allclose(out[b], expected, atol=1e-5)


def test_gaussian_blur_uses_each_samples_own_sigma():
    from tfseg.training.augment import gaussian_blur

    images, _ = distinct_channels(batch=2)
    out = keras.ops.convert_to_numpy(gaussian_blur(images, np.array([0.5, 1.0], "float32")))
    one_sigma = keras.ops.convert_to_numpy(gaussian_blur(images, np.array([0.5, 0.5], "float32")))
    np.testing.assert_allclose(out[0], one_sigma[0], atol=1e-6)
    assert out[1].std() < one_sigma[1].std()  # the wider kernel smooths white noise more


def reference_low_resolution(image, rows, cols):
    """Nearest-neighbour down to rows x cols, then linear back up: scikit-image's resize, order 0 then 1."""
    from skimage.transform import resize

    small = resize(image, (rows, cols) + image.shape[2:], order=0, mode="edge", anti_aliasing=False,
                   preserve_range=True)
    return resize(small, image.shape, order=1, mode="edge", anti_aliasing=False, preserve_range=True)


@pytest.mark.parametrize("zoom", [0.5, 0.75])
def test_simulated_low_resolution_equals_nearest_down_then_linear_up_in_scikit_image(zoom):
    from tfseg.training.augment import simulate_low_resolution

    images, _ = distinct_channels(batch=1, channels=3)  # 16 x 16: 8 x 8 and 12 x 12 coarse grids
    out = keras.ops.convert_to_numpy(simulate_low_resolution(images, np.array([zoom], "float32")))
    side = round(16 * zoom)
    np.testing.assert_allclose(out[0], reference_low_resolution(images[0], side, side), atol=1e-5)


def test_simulated_low_resolution_at_full_resolution_returns_the_image_exactly():
    from tfseg.training.augment import simulate_low_resolution

    images, _ = distinct_channels(batch=3)
    out = keras.ops.convert_to_numpy(simulate_low_resolution(images, np.ones(3, "float32")))
    np.testing.assert_array_equal(out, images)


@pytest.mark.parametrize("component", ["blur", "low_resolution"])
def test_resolution_augmentation_of_1_changes_every_image_and_no_mask_and_of_0_nothing(component):
    images, masks = distinct_channels(batch=16)
    out, out_masks = as_numpy(Augment(AugmentConfig(**OFF, **{component: 1.0}), seed=0)(images, masks))
    np.testing.assert_array_equal(out_masks, masks)
    # A zoom above 15.5/16 (6% of draws) rounds to the full 16 pixels and keeps the image.
    assert (np.abs(out - images).max(axis=(1, 2, 3)) > 1e-3).sum() >= 12
    assert out.std() < images.std()  # both smooth white noise
    same, _ = as_numpy(Augment(AugmentConfig(**OFF, **{component: 0.0}), seed=0)(images, masks))
    np.testing.assert_array_equal(same, images)


def test_resolution_augmentation_touches_about_the_given_share_of_samples():
    images, masks = distinct_channels(batch=400)
    out, _ = as_numpy(Augment(AugmentConfig(**OFF, blur=0.2), seed=3)(images, masks))
    changed = (np.abs(out - images) > 1e-6).any(axis=(1, 2, 3)).mean()
    assert 0.14 < changed < 0.26
