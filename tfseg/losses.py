"""Segmentation losses for binary masks: Dice, Tversky, focal Tversky, BCE + Dice.

Every loss takes `y_true` (B, H, W, 1) with values 0/1 and `y_pred` (B, H, W, 1)
sigmoid probabilities in [0, 1], of any float dtype. Both are cast to float32
before anything is summed, so float16 / bfloat16 predictions from a
mixed-precision model neither overflow (a float16 sum stops at 65504, i.e. one
256x256 slice) nor lose the small terms.

The overlap losses are computed over the **whole batch** (one intersection, one
sum of the mask, one sum of the prediction), as the reference PyTorch DiceLoss
of Buda et al. does, not per image and then averaged. Under `tf.distribute`
the whole batch is the **global** batch: each replica's sums are added over all
replicas (and workers) before the ratio is taken, so two replicas of 8 images
train on the Dice of the 16 images, exactly as one device would. See
`_BatchLoss` for how that single value passes through Keras' loss reduction.

Written with `keras.ops` only: the same objects run under TensorFlow and JAX.
"""
import keras
from keras import ops

# Probabilities are clipped to [EPSILON, 1 - EPSILON] before a log; 1e-7 is
# Keras' own epsilon and is still distinguishable from 1 in float32.
EPSILON = 1e-7

def _as_float32(y_true, y_pred):
    return ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")


def _overlap_sums(y_true, y_pred):
    """[sum(y * p), sum(y), sum(p)] over the replica's batch: (3,) float32."""
    return ops.stack([ops.sum(y_true * y_pred), ops.sum(y_true), ops.sum(y_pred)])


def _dice_loss(sums, smooth):
    """The soft Dice loss from `_overlap_sums` (of the whole global batch)."""
    intersection, mask, prediction = sums[0], sums[1], sums[2]
    return 1.0 - (2.0 * intersection + smooth) / (mask + prediction + smooth)


def _tversky_index(sums, alpha, beta, smooth):
    """TP / (TP + alpha FP + beta FN), smoothed, with FP = sum(p) - TP and FN = sum(y) - TP."""
    tp, mask, prediction = sums[0], sums[1], sums[2]
    fp, fn = prediction - tp, mask - tp
    return (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def sum_over_replicas(values):
    """Add a tensor of per-replica sums over every replica of the current `tf.distribute` strategy.

    Identity outside a replica context, with one replica, or under another backend.
    The all-reduce is differentiable (its gradient is the all-reduce of the incoming
    gradients), so each replica's gradient is that of the global loss.
    """
    if keras.backend.backend() != "tensorflow":
        return values
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values
    return context.all_reduce(tf.distribute.ReduceOp.SUM, values)


class _BatchLoss(keras.losses.Loss):
    """Base of the losses that reduce a whole batch to one value.

    Keras' `Loss.__call__` expects `call()` to return one value per sample and
    then reduces them (`"sum_over_batch_size"`: sum / number of values, then
    divides by the number of replicas under `tf.distribute`). Our `call()`
    already returns the batch value, shaped (1,): the mean over one value is
    that value, so every reduction except `None`/`"none"` returns it
    unchanged as a scalar, while the distribution scaling still applies.
    (A rank-0 value would skip that scaling and multi-replica gradients would
    be `num_replicas` times too large.) With `reduction=None` the result is
    the (1,) tensor.

    Under `tf.distribute` (R replicas) each replica computes `sums()` of its
    share of the batch; `sum_over_replicas` adds them, so every replica holds
    the loss of the global batch. Keras scales each replica's loss by 1/R and
    adds the replicas' gradients; the all-reduce's gradient hands each replica
    the sum of the R upstream gradients (R × 1/R = the full one), so the applied
    gradient is exactly that of the global-batch loss on one device.

    `sample_weight` is refused: a per-sample weight has no meaning for one
    value computed over the whole batch.
    """

    def __init__(self, name=None, reduction="sum_over_batch_size"):
        # dtype only sets what Keras casts the inputs and the result to; the
        # sums happen in float32 in any case (see `call`).
        super().__init__(name=name, reduction=reduction, dtype="float32")

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError(
                f"{type(self).__name__} is computed over the whole batch and takes no sample_weight; "
                "weight the pixels through the mask instead, or use a per-pixel loss.")
        return super().__call__(y_true, y_pred)

    def call(self, y_true, y_pred):
        y_true, y_pred = _as_float32(y_true, y_pred)
        return ops.reshape(self.batch_loss(y_true, y_pred), (1,))

    def batch_loss(self, y_true, y_pred):
        """The loss of the whole (global) batch: float32 (B, H, W, 1) inputs -> float32 scalar."""
        return self.from_sums(sum_over_replicas(self.sums(y_true, y_pred)))

    def sums(self, y_true, y_pred):
        """Additive statistics of one replica's batch: float32 (B, H, W, 1) inputs -> (K,) float32."""
        return _overlap_sums(y_true, y_pred)

    def from_sums(self, sums):
        """The loss from the statistics of the global batch: (K,) float32 -> float32 scalar."""
        raise NotImplementedError


@keras.saving.register_keras_serializable(package="tfseg")
class DiceLoss(_BatchLoss):
    """Soft Dice loss over the whole batch (the reference program's loss).

    `1 - (2 * sum(y * p) + smooth) / (sum(y) + sum(p) + smooth)`, sums over all
    pixels of all images of the batch.

    Args:
        smooth: added to numerator and denominator; makes an empty mask with an
            empty prediction a loss of 0 and keeps the gradient finite.
        name: the loss's name.
        reduction: Keras reduction; see `_BatchLoss` (leaves the batch value unchanged).
    """

    def __init__(self, smooth=1.0, name="dice_loss", reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction)
        self.smooth = float(smooth)

    def from_sums(self, sums):
        return _dice_loss(sums, self.smooth)

    def get_config(self):
        return {**super().get_config(), "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="tfseg")
class TverskyLoss(_BatchLoss):
    """Tversky loss over the whole batch (Salehi et al. 2017).

    `1 - TI` with `TI = (TP + smooth) / (TP + alpha * FP + beta * FN + smooth)`,
    where TP = sum(y * p), FP = sum((1 - y) * p), FN = sum(y * (1 - p)) over all
    pixels of the batch. alpha = beta = 0.5 is the Dice loss.

    Args:
        alpha: weight of false positives (over-segmentation).
        beta: weight of false negatives (missed lesion); the default
            beta > alpha favours recall, which helps small lesions.
        smooth: added to numerator and denominator (empty mask and empty
            prediction give 0).
        name: the loss's name.
        reduction: Keras reduction; see `_BatchLoss`.
    """

    def __init__(self, alpha=0.3, beta=0.7, smooth=1.0, name="tversky_loss",
                 reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.smooth = float(smooth)

    def from_sums(self, sums):
        return 1.0 - _tversky_index(sums, self.alpha, self.beta, self.smooth)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta, "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="tfseg")
class FocalTverskyLoss(_BatchLoss):
    """Focal Tversky loss over the whole batch (Abraham & Khan, ISBI 2019).

    `(1 - TI) ** gamma`, TI the Tversky index of `TverskyLoss`. With gamma < 1
    the loss keeps a large gradient when TI is already high.

    `1 - TI` is floored at `EPSILON` before the power: the derivative of
    `x ** 0.75` is infinite at 0, so a perfect batch would give NaN gradients.
    A perfect prediction therefore costs `EPSILON ** gamma` (about 6e-6 for
    gamma = 0.75) instead of exactly 0, with a zero gradient.

    Args:
        alpha: weight of false positives.
        beta: weight of false negatives.
        gamma: focal exponent (0.75 in the paper; 1 is the Tversky loss).
        smooth: added to numerator and denominator of TI.
        name: the loss's name.
        reduction: Keras reduction; see `_BatchLoss`.
    """

    def __init__(self, alpha=0.3, beta=0.7, gamma=0.75, smooth=1.0, name="focal_tversky_loss",
                 reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.gamma = float(gamma)
        self.smooth = float(smooth)

    def from_sums(self, sums):
        ti = _tversky_index(sums, self.alpha, self.beta, self.smooth)
        return ops.power(ops.maximum(1.0 - ti, EPSILON), self.gamma)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta,
                "gamma": self.gamma, "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="tfseg")
class BCEDiceLoss(_BatchLoss):
    """Weighted sum of binary cross-entropy and the batch Dice loss.

    `bce_weight * BCE + (1 - bce_weight) * Dice`, with BCE the mean over all
    pixels of the batch of `-(y log p + (1 - y) log(1 - p))`, p clipped to
    [EPSILON, 1 - EPSILON] so that saturated predictions give a finite loss
    (at most -log(EPSILON), about 16.1 per pixel) and finite gradients.

    Args:
        bce_weight: weight of the cross-entropy term, in [0, 1].
        smooth: the Dice term's smoothing (see `DiceLoss`).
        name: the loss's name.
        reduction: Keras reduction; see `_BatchLoss`.
    """

    def __init__(self, bce_weight=0.5, smooth=1.0, name="bce_dice_loss", reduction="sum_over_batch_size"):
        if not 0.0 <= bce_weight <= 1.0:
            raise ValueError(f"bce_weight must be in [0, 1], got {bce_weight}")
        super().__init__(name=name, reduction=reduction)
        self.bce_weight = float(bce_weight)
        self.smooth = float(smooth)

    def sums(self, y_true, y_pred):
        p = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
        log_likelihood = ops.sum(y_true * ops.log(p) + (1.0 - y_true) * ops.log(1.0 - p))
        pixels = ops.cast(ops.size(y_true), "float32")
        return ops.concatenate([_overlap_sums(y_true, y_pred), ops.stack([log_likelihood, pixels])])

    def from_sums(self, sums):
        bce = -sums[3] / sums[4]  # the mean over every pixel of the global batch
        return self.bce_weight * bce + (1.0 - self.bce_weight) * _dice_loss(sums[:3], self.smooth)

    def get_config(self):
        return {**super().get_config(), "bce_weight": self.bce_weight, "smooth": self.smooth}


_REGISTRY = {
    "dice": DiceLoss,
    "tversky": TverskyLoss,
    "focal_tversky": FocalTverskyLoss,
    "bce_dice": BCEDiceLoss,
}
# The names get_loss() accepts, e.g. for a --loss command-line choice.
LOSSES = tuple(_REGISTRY)


def get_loss(name, **kwargs):
    """A loss instance by name: `get_loss("tversky", alpha=0.3, beta=0.7)`.

    Args:
        name: one of `LOSSES` ("dice", "tversky", "focal_tversky", "bce_dice").
        **kwargs: passed to the loss's constructor.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}") from None
    return cls(**kwargs)
