"""Batch normalization whose training step is TensorFlow's fused kernel (issue 9: training speed).

Keras 3's `BatchNormalization` is written in `keras.ops`: under the TensorFlow backend
a training step upcasts the activations to float32, reduces them for mean and variance,
normalizes and casts back, several passes over the largest tensors of a U-Net. One
`FusedBatchNormV3` op (oneDNN's kernel on CPU) does it in a single pass, in bfloat16
or float32. Measured on a 2-core AMD EPYC with AVX-512 BF16 (U-Net base 32, 128 px,
batch 16, plain Keras step; benchmarks/results/train_variants.json): mixed_bfloat16
11.9 -> 17.9 img/s, float32 9.0 -> 10.4 img/s.

`FusedBatchNormalization` is a drop-in subclass: same arguments, same variables (so
checkpoints and .keras files of either load into the other), the same inference path
(Keras's own), and the same training arithmetic:

- the batch statistics are the population mean and variance over (B, H, W), as Keras
  computes them; the kernel's variance output carries Bessel's correction n/(n-1), which
  is undone before the moving variance is updated;
- the moving averages are updated with Keras's momentum rule;
- epsilon is the layer's own (the raw op is used because `tf.nn.fused_batch_norm`
  raises it to at least 1.001e-5, and the reference's BatchNorm uses 1e-5).

Anything the fused kernel does not cover falls back to Keras's implementation: another
backend (the layer then is plain BatchNormalization, e.g. under JAX), inference, a
frozen layer, inputs that are not 4-D channels-last, masks, renorm, or synchronized
batch statistics.
"""
import contextlib
import contextvars

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="tfseg")
class FusedBatchNormalization(layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with TensorFlow's fused kernel for the training step (see module doc)."""

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        empty = tf.constant([], tf.float32)  # training mode: no running statistics go in
        y, mean, unbiased_variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=gamma, offset=beta, mean=empty, variance=empty, epsilon=self.epsilon,
            exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
        count = tf.cast(tf.size(inputs, out_type=tf.int64) // channels, tf.float32)
        variance = unbiased_variance * (count - 1.0) / tf.maximum(count, 1.0)
        momentum = self.momentum
        self.moving_mean.assign(tf.cast(self.moving_mean, tf.float32) * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(
            tf.cast(self.moving_variance, tf.float32) * momentum + variance * (1.0 - momentum))
        return tf.cast(y, self.compute_dtype)

    def _fusable(self, inputs, mask) -> bool:
        if keras.backend.backend() != "tensorflow":
            return False
        return (mask is None and len(inputs.shape) == 4 and self.axis in (-1, 3) and not getattr(self, "renorm", False)
                and not getattr(self, "synchronized", False)
                and keras.backend.standardize_dtype(inputs.dtype) in ("float32", "bfloat16", "float16")
                and inputs.shape[-1] is not None)


# What `build_model(..., batch_norm=...)` accepts. "keras" exists so that benchmarks (and anyone
# doubting the fused kernel) can build the same network with Keras's own layer.
BATCH_NORM_LAYERS = {"fused": FusedBatchNormalization, "keras": layers.BatchNormalization}
_BATCH_NORM_LAYER = contextvars.ContextVar("tfseg_batch_norm_layer", default=FusedBatchNormalization)


@contextlib.contextmanager
def batch_norm_layers(kind: str):
    """Within the block, the models' BatchNorm layers are of class ``BATCH_NORM_LAYERS[kind]``."""
    if kind not in BATCH_NORM_LAYERS:
        raise ValueError(f"batch_norm must be one of {', '.join(BATCH_NORM_LAYERS)}, got {kind!r}")
    token = _BATCH_NORM_LAYER.set(BATCH_NORM_LAYERS[kind])
    try:
        yield
    finally:
        _BATCH_NORM_LAYER.reset(token)


def batch_norm_layer(**kwargs) -> layers.BatchNormalization:
    """A new BatchNorm layer of the class chosen by the enclosing `batch_norm_layers` (fused by default)."""
    return _BATCH_NORM_LAYER.get()(**kwargs)
