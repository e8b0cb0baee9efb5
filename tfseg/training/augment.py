"""Batch augmentation that runs inside the training step, on the accelerator.

`Augment` is a Keras layer written with `keras.ops` and `keras.random` only, so
it runs under any backend, inside a `tf.function` train step and under
`tf.distribute` (where each replica draws its own numbers: the one
TensorFlow-specific line reads the replica's index). It transforms image and
mask together:

- geometric (image and mask): one affine transform per sample, composed of a
  zoom about the centre by U(1 - scale, 1 + scale), a rotation about the centre
  by U(-rotation, rotation) degrees and a horizontal flip with probability
  `flip` (the reference program's augmentation, see docs/protocol.md). Images are
  resampled bilinearly, masks with nearest neighbour so they stay exactly 0/1;
  points that come from outside the image are filled with 0 (as the reference
  does, on standardized images). The warp (`affine_warp`) gives the same result
  as `keras.ops.image.affine_transform` but also compiles under XLA.
- intensity (image only, off by default): brightness, contrast, gamma and
  additive Gaussian noise.
- resolution (image only, off by default): nnU-Net's Gaussian blur and
  simulated low resolution (nearest-neighbour down-sampling, then linear
  up-sampling back to the slice size), each with a probability per sample.
- sequence dropout (image only, off by default): the pre-contrast or the
  post-contrast channel (or both) replaced by the FLAIR channel, as kaggle_3m
  does for the patients whose sequence was not acquired (see
  `tfseg.robustness`, which measures what a model loses on such scans).

Typical use, in a custom train step::

    augment = Augment(AugmentConfig(), seed=1)
    images, masks = augment(images, masks, training=True)
"""
from __future__ import annotations

import dataclasses
import math

import keras
from keras import ops

__all__ = ["AugmentConfig", "Augment", "affine_warp", "gaussian_blur", "simulate_low_resolution"]

# nnU-Net's ranges (batchgenerators' GaussianBlurTransform and SimulateLowResolutionTransform).
BLUR_SIGMA = (0.5, 1.0)
LOW_RESOLUTION_ZOOM = (0.5, 1.0)
# Kernel half-width of the blur: 3 sigma at the largest sigma, as scipy's default truncate of 4
# would make the kernel 2 pixels wider for no visible difference.
BLUR_RADIUS = 3


@dataclasses.dataclass
class AugmentConfig:
    """Strengths of each augmentation component; 0 turns a component off.

    Attributes:
        scale: zoom about the image centre by a factor drawn from
            U(1 - scale, 1 + scale); a factor > 1 enlarges the content.
        rotation: rotation about the image centre by U(-rotation, rotation)
            degrees.
        flip: probability of a horizontal (left-right) flip.
        brightness: adds U(-brightness, brightness) to the whole image.
        contrast: scales every channel about its mean over the image by
            U(1 - contrast, 1 + contrast).
        gamma: gamma correction with exponent exp(U(-gamma, gamma)). Images are
            standardized (zero mean, negative values), so the exponent is
            applied to a copy min-max rescaled to [0, 1] per image and channel,
            and the result is mapped back to the original [min, max]; the
            minimum and maximum of every channel are kept.
        noise: adds independent Gaussian noise of this standard deviation to
            every pixel and channel, in the units of the (standardized) image.
        sequence_dropout: probability per sample of replacing a sequence by
            FLAIR: then, with equal chance, the pre-contrast channel, the
            post-contrast channel or both become copies of the FLAIR channel.
            Images are standardized per channel over the volume, so this copies
            the standardized FLAIR, which is what the preprocessing makes of a
            kaggle_3m volume whose missing sequence was filled with FLAIR.
            With a 2.5-D input (3·K channels, K stacks of pre, FLAIR, post) the
            same choice is applied in every stack.
        blur: probability per sample of an in-plane Gaussian blur of every
            channel with sigma U(BLUR_SIGMA) pixels (nnU-Net: 0.2, sigma
            0.5-1; edges mirrored).
        low_resolution: probability per sample of simulating a coarser
            acquisition: the slice is sampled at round(side x zoom) pixels per
            side, zoom U(LOW_RESOLUTION_ZOOM), by nearest neighbour, and
            interpolated back linearly (nnU-Net: 0.25, zoom 0.5-1, cubic back).
    """

    scale: float = 0.05
    rotation: float = 15.0
    flip: float = 0.5
    brightness: float = 0.0
    contrast: float = 0.0
    gamma: float = 0.0
    noise: float = 0.0
    sequence_dropout: float = 0.0
    blur: float = 0.0
    low_resolution: float = 0.0

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"AugmentConfig.{field.name} must be a number >= 0, got {value!r}")
        for name in ("flip", "sequence_dropout", "blur", "low_resolution"):
            if getattr(self, name) > 1:
                raise ValueError(f"AugmentConfig.{name} is a probability in [0, 1], got {getattr(self, name)!r}")
        if self.scale >= 1 or self.contrast >= 1:
            raise ValueError(
                f"AugmentConfig.scale and .contrast must be < 1 (factors are drawn from U(1 - x, 1 + x)), "
                f"got scale={self.scale!r}, contrast={self.contrast!r}")

    @property
    def geometric(self) -> bool:
        """Whether any geometric component is on."""
        return bool(self.scale or self.rotation or self.flip)

    @property
    def intensity(self) -> bool:
        """Whether any intensity component is on."""
        return bool(self.brightness or self.contrast or self.gamma or self.noise)

    @property
    def resolution(self) -> bool:
        """Whether blur or simulated low resolution is on."""
        return bool(self.blur or self.low_resolution)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "AugmentConfig":
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown AugmentConfig keys {unknown}; expected some of {sorted(known)}")
        return cls(**values)


def affine_warp(images, transform, interpolation="bilinear"):
    """Warp a batch with one affine transform per image, filling with 0 outside it.

    Same convention and result as `keras.ops.image.affine_transform(images,
    transform, interpolation, fill_mode="constant", fill_value=0)`, but built
    from `keras.ops` gathers, so it also compiles under XLA: on the TensorFlow
    backend that op is `ImageProjectiveTransformV3`, which has no XLA kernel, and
    Keras compiles the train step with XLA by default on a GPU.

    Args:
        images: (B, H, W, C) float32.
        transform: (B, 8) float32 rows `[a0, a1, a2, b0, b1, b2, c0, c1]`, each
            mapping an output pixel (x = column, y = row) to the input point
            (a0 x + a1 y + a2, b0 x + b1 y + b2); c0 and c1 must be 0 (affine).
        interpolation: "bilinear" or "nearest" (rounds to the nearest pixel,
            so values stay in the input's set plus the fill value 0).

    Returns:
        (B, H, W, C) float32.
    """
    if interpolation not in ("bilinear", "nearest"):
        raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
    shape = ops.shape(images)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    rows = ops.cast(ops.arange(height), "float32")[None, :, None]
    cols = ops.cast(ops.arange(width), "float32")[None, None, :]
    t = ops.cast(transform, "float32")[:, :, None, None]
    x = t[:, 0] * cols + t[:, 1] * rows + t[:, 2]  # (B, H, W) input column of each output pixel
    y = t[:, 3] * cols + t[:, 4] * rows + t[:, 5]  # (B, H, W) input row
    flat = ops.reshape(images, (-1, channels))
    first = ops.reshape(ops.arange(batch) * (height * width), (-1, 1, 1))

    def read(yi, xi):
        """Pixels at integer float coordinates (B, H, W), 0 where outside the image."""
        inside = (yi >= 0) & (yi <= ops.cast(height - 1, "float32")) & \
                 (xi >= 0) & (xi <= ops.cast(width - 1, "float32"))
        yc = ops.clip(ops.cast(yi, "int32"), 0, height - 1)
        xc = ops.clip(ops.cast(xi, "int32"), 0, width - 1)
        values = ops.take(flat, ops.reshape(first + yc * width + xc, (-1,)), axis=0)
        values = ops.reshape(values, shape)
        return values * ops.cast(inside, "float32")[..., None]

    if interpolation == "nearest":
        return read(ops.floor(y + 0.5), ops.floor(x + 0.5))
    y0, x0 = ops.floor(y), ops.floor(x)
    wy, wx = (y - y0)[..., None], (x - x0)[..., None]
    top = read(y0, x0) * (1 - wx) + read(y0, x0 + 1) * wx
    bottom = read(y0 + 1, x0) * (1 - wx) + read(y0 + 1, x0 + 1) * wx
    return top * (1 - wy) + bottom * wy


# Random draws per call (at most 7 today); each call's seeds are spaced this far apart.
DRAWS_PER_CALL = 16
# Replica r of a distributed step offsets the first seed word by r times this.
REPLICA_SEED_STRIDE = 1 << 20


def gaussian_blur(images, sigma, radius: int = BLUR_RADIUS):
    """Blur a (B, H, W, C) float32 batch in-plane, each image with its own Gaussian ``sigma`` (B,).

    Separable, kernel half-width ``radius`` pixels, edges mirrored: the result equals
    ``scipy.ndimage.gaussian_filter(image, (sigma, sigma, 0), mode="reflect", radius=radius)``
    per image. Written as shifted sums of `keras.ops`, so per-sample kernels need no
    depthwise convolution and it compiles under XLA.
    """
    sigma = ops.reshape(ops.cast(sigma, "float32"), (-1, 1))
    offsets = ops.reshape(ops.arange(-radius, radius + 1, dtype="float32"), (1, -1))
    weights = ops.exp(-0.5 * ops.square(offsets / ops.maximum(sigma, 1e-3)))
    weights = weights / ops.sum(weights, axis=1, keepdims=True)  # (B, 2r+1)
    for axis in (1, 2):
        padding = [[0, 0]] * 4
        padding[axis] = [radius, radius]
        padded = ops.pad(images, padding, mode="symmetric")
        size = images.shape[axis]
        total = 0.0
        for k in range(2 * radius + 1):
            window = padded[:, k:k + size] if axis == 1 else padded[:, :, k:k + size]
            total = total + ops.reshape(weights[:, k], (-1, 1, 1, 1)) * window
        images = total
    return images


def _resample_axis(images, coarse, axis: int):
    """Nearest-neighbour down to ``coarse`` (B,) pixels along ``axis`` (1 rows, 2 columns), then
    linear back to the original length; pixel centres at i + 0.5 (scikit-image's ``resize``
    convention), clamped at the edges. ``coarse`` equal to the length gives the input back."""
    size = images.shape[axis]
    coarse = ops.reshape(ops.cast(coarse, "float32"), (-1, 1))
    position = ops.reshape(ops.arange(size, dtype="float32"), (1, -1))
    # Each output pixel's position on the coarse grid, and its two coarse neighbours.
    on_coarse = ops.clip((position + 0.5) * coarse / size - 0.5, 0.0, coarse - 1.0)
    lower = ops.floor(on_coarse)
    fraction = on_coarse - lower
    upper = ops.minimum(lower + 1.0, coarse - 1.0)

    def source(index):  # the input pixel that the nearest-neighbour down-sampling put at a coarse pixel
        # floor(v + 0.5), not round(): ties go up, as in scipy.ndimage (round() would go to even).
        return ops.cast(ops.clip(ops.floor((index + 0.5) * size / coarse), 0, size - 1), "int32")

    def gather(index):
        shape = (-1, size, 1, 1) if axis == 1 else (-1, 1, size, 1)
        index = ops.broadcast_to(ops.reshape(index, shape), ops.shape(images))
        return ops.take_along_axis(images, index, axis=axis)

    weight = ops.reshape(fraction, (-1, size, 1, 1) if axis == 1 else (-1, 1, size, 1))
    return (1.0 - weight) * gather(source(lower)) + weight * gather(source(upper))


def simulate_low_resolution(images, zoom):
    """A (B, H, W, C) float32 batch as if acquired at ``zoom`` (B,) of its resolution: each image
    sampled at round(H·zoom) x round(W·zoom) pixels by nearest neighbour and interpolated back to
    H x W linearly. ``zoom`` 1 returns the image exactly."""
    zoom = ops.cast(zoom, "float32")
    rows = ops.maximum(ops.round(images.shape[1] * zoom), 1.0)
    cols = ops.maximum(ops.round(images.shape[2] * zoom), 1.0)
    return _resample_axis(_resample_axis(images, rows, axis=1), cols, axis=2)


def _replica_index():
    """This replica's index in the current `tf.distribute` step (global over workers); 0 elsewhere."""
    if keras.backend.backend() != "tensorflow":
        return 0
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    return 0 if context is None else context.replica_id_in_sync_group


class _CallSeeds(keras.random.SeedGenerator):
    """The seeds of one `Augment` call: what `keras.random` functions take as ``seed=``.

    Built from the layer generator's state for this call ``[s, c]`` and the replica index
    ``r``: draw ``k`` uses ``[s + r * REPLICA_SEED_STRIDE, c * DRAWS_PER_CALL + k]``. The layer's
    generator is a mirrored variable, identical on every replica; without ``r`` all replicas
    of a step would flip, rotate and zoom their images alike. Holds no variable of its own.
    """

    def __init__(self, call_seed, replica):  # deliberately no super().__init__: no state variable
        self.first = call_seed[0] + ops.cast(replica, call_seed.dtype) * REPLICA_SEED_STRIDE
        self.second = call_seed[1] * DRAWS_PER_CALL
        self.draws = 0

    def next(self, ordered=True):
        if self.draws >= DRAWS_PER_CALL:
            raise RuntimeError(f"Augment draws more than DRAWS_PER_CALL={DRAWS_PER_CALL} random tensors per call")
        self.draws += 1
        return ops.stack([self.first, self.second + self.draws])


@keras.saving.register_keras_serializable(package="tfseg")
class Augment(keras.layers.Layer):
    """Random augmentation of a batch of images and their masks.

    Args:
        config: an `AugmentConfig`, a dict of its fields, or None for the
            defaults (the reference program's geometric augmentation).
        seed: integer seed of the layer's `keras.random.SeedGenerator`
            (`self.seed_generator`, whose state is a non-trainable variable
            and so is saved with checkpoints); None draws a random seed.
            Every call advances the generator once; under `tf.distribute` the
            replica's index is folded into that call's seed, so each replica
            (and worker) draws its own transforms (`_CallSeeds`).

    Call arguments:
        images: (B, H, W, C) float tensor.
        masks: (B, H, W, 1) float tensor of 0/1.
        training: when False, inputs are returned unchanged.

    Returns:
        `(images, masks)`, same shapes and dtypes as the inputs; masks stay
        exactly 0/1.
    """

    def __init__(self, config: AugmentConfig | dict | None = None, seed: int | None = None, **kwargs):
        # Keep the caller's dtypes: no casting of float inputs under a mixed policy.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if config is None:
            config = AugmentConfig()
        elif isinstance(config, dict):
            config = AugmentConfig.from_dict(config)
        elif not isinstance(config, AugmentConfig):
            raise TypeError(f"config must be an AugmentConfig, a dict or None, got {type(config).__name__}")
        self.config = config
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._build_at_init()

    def call(self, images, masks, training=True):
        cfg = self.config
        if not training or not (cfg.geometric or cfg.intensity or cfg.resolution or cfg.sequence_dropout):
            return images, masks
        image_dtype, mask_dtype = images.dtype, masks.dtype
        seeds = _CallSeeds(self.seed_generator.next(), _replica_index())
        x = ops.cast(images, "float32")
        y = ops.cast(masks, "float32")
        # Intensity first, so the area filled by the geometric transform stays exactly 0.
        if self.config.intensity:
            x = self._intensity(x, seeds)
        if self.config.resolution:
            x = self._resolution(x, seeds)
        # After the noise, so that a copied channel carries FLAIR's noise, as in kaggle_3m.
        if self.config.sequence_dropout:
            x = self._drop_sequences(x, seeds)
        if self.config.geometric:
            transform = self._affine_transforms(ops.shape(x), seeds)
            x = affine_warp(x, transform, interpolation="bilinear")
            y = affine_warp(y, transform, interpolation="nearest")
        return ops.cast(x, image_dtype), ops.cast(y, mask_dtype)

    @staticmethod
    def _uniform(batch, low, high, seeds):
        return keras.random.uniform((batch,), minval=low, maxval=high, dtype="float32", seed=seeds)

    def _affine_transforms(self, shape, seeds=None):
        """(B, 8) transforms for `affine_warp` / `ops.image.affine_transform`.

        Both map each *output* pixel (x = column, y = row, pixel centres at
        integer coordinates) to the input point
        (a0 x + a1 y + a2, b0 x + b1 y + b2), so we build the inverse of the
        forward map  p_out = c + zoom * R(angle) * F (p_in - c):
            p_in = c + A (p_out - c),  A = F R(-angle) / zoom,
        with c = ((W - 1) / 2, (H - 1) / 2) the image centre and F = diag(±1, 1)
        the horizontal flip.
        """
        seeds = seeds or self.seed_generator  # called alone (tests): the layer's generator
        batch = shape[0]
        height = ops.cast(shape[1], "float32")
        width = ops.cast(shape[2], "float32")
        cfg = self.config
        ones = ops.ones((batch,), dtype="float32")

        zoom = self._uniform(batch, 1.0 - cfg.scale, 1.0 + cfg.scale, seeds) if cfg.scale else ones
        if cfg.rotation:
            limit = cfg.rotation * math.pi / 180.0
            angle = self._uniform(batch, -limit, limit, seeds)
            cos, sin = ops.cos(angle), ops.sin(angle)
        else:
            cos, sin = ones, ops.zeros((batch,), dtype="float32")
        if cfg.flip:
            flip = ops.where(self._uniform(batch, 0.0, 1.0, seeds) < cfg.flip, -ones, ones)
        else:
            flip = ones

        a00, a01 = flip * cos / zoom, flip * sin / zoom
        a10, a11 = -sin / zoom, cos / zoom
        cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
        a02 = cx - a00 * cx - a01 * cy
        a12 = cy - a10 * cx - a11 * cy
        zeros = ops.zeros((batch,), dtype="float32")
        return ops.stack([a00, a01, a02, a10, a11, a12, zeros, zeros], axis=1)

    def _intensity(self, x, seeds=None):
        """Brightness, contrast, gamma and noise on a (B, H, W, C) float32 batch."""
        seeds = seeds or self.seed_generator  # called alone (tests): the layer's generator
        cfg = self.config
        batch = ops.shape(x)[0]

        def per_sample(values):
            return ops.reshape(values, (-1, 1, 1, 1))

        if cfg.gamma:
            exponent = per_sample(ops.exp(self._uniform(batch, -cfg.gamma, cfg.gamma, seeds)))
            low = ops.min(x, axis=(1, 2), keepdims=True)
            span = ops.max(x, axis=(1, 2), keepdims=True) - low
            unit = ops.clip((x - low) / ops.maximum(span, 1e-6), 0.0, 1.0)
            x = low + ops.power(unit, exponent) * span
        if cfg.contrast:
            factor = per_sample(self._uniform(batch, 1.0 - cfg.contrast, 1.0 + cfg.contrast, seeds))
            mean = ops.mean(x, axis=(1, 2), keepdims=True)
            x = mean + (x - mean) * factor
        if cfg.brightness:
            x = x + per_sample(self._uniform(batch, -cfg.brightness, cfg.brightness, seeds))
        if cfg.noise:
            x = x + cfg.noise * keras.random.normal(ops.shape(x), dtype="float32", seed=seeds)
        return x

    def _resolution(self, x, seeds=None):
        """Gaussian blur and simulated low resolution, each on its share of a (B, H, W, C) batch."""
        seeds = seeds or self.seed_generator  # called alone (tests): the layer's generator
        cfg = self.config
        batch = ops.shape(x)[0]

        def chosen(probability):
            return ops.reshape(self._uniform(batch, 0.0, 1.0, seeds) < probability, (-1, 1, 1, 1))

        if cfg.blur:
            apply = chosen(cfg.blur)
            x = ops.where(apply, gaussian_blur(x, self._uniform(batch, *BLUR_SIGMA, seeds)), x)
        if cfg.low_resolution:
            apply = chosen(cfg.low_resolution)
            x = ops.where(apply, simulate_low_resolution(x, self._uniform(batch, *LOW_RESOLUTION_ZOOM, seeds)), x)
        return x

    def _drop_sequences(self, x, seeds=None):
        """Replace pre-contrast, post-contrast or both by FLAIR in a ``sequence_dropout`` share of a
        (B, H, W, 3·K) float32 batch (channels: K stacks of pre, FLAIR, post)."""
        seeds = seeds or self.seed_generator  # called alone (tests): the layer's generator
        channels = x.shape[-1]
        if channels is None or channels % 3:
            raise ValueError(f"sequence_dropout needs 3·K channels (stacks of pre-contrast, FLAIR, post-contrast), "
                             f"got a batch of shape {tuple(x.shape)}")
        batch = ops.shape(x)[0]
        drop = self._uniform(batch, 0.0, 1.0, seeds) < self.config.sequence_dropout
        which = self._uniform(batch, 0.0, 3.0, seeds)  # [0, 1): pre, [1, 2): post, [2, 3): both
        drop_pre = drop & ((which < 1.0) | (which >= 2.0))
        drop_post = drop & (which >= 1.0)
        is_pre = ops.convert_to_tensor([1.0, 0.0, 0.0] * (channels // 3))
        is_post = ops.convert_to_tensor([0.0, 0.0, 1.0] * (channels // 3))
        replace = (ops.cast(drop_pre, "float32")[:, None] * is_pre +
                   ops.cast(drop_post, "float32")[:, None] * is_post)  # (B, 3·K): 1 where FLAIR goes
        flair = ops.repeat(x[..., 1::3], 3, axis=-1)  # each stack's FLAIR in all three of its places
        return ops.where(replace[:, None, None, :] > 0, flair, x)

    def compute_output_spec(self, images, masks, training=True):
        return (keras.KerasTensor(images.shape, dtype=images.dtype),
                keras.KerasTensor(masks.shape, dtype=masks.dtype))

    def get_config(self):
        return {**super().get_config(), "config": self.config.to_dict(), "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
