"""Output heads shared by all architectures, and the helpers that rely on their naming.

The main output layer is named `out`; with deep supervision the model also has `aux1`
(from the decoder level at 1/2 resolution) and `aux2` (1/4 resolution), in that order.
"""
import keras
from keras import layers

# Loss weight of output i is AUX_DECAY**i: 1.0 for `out`, 0.5 for `aux1`, 0.25 for `aux2`.
AUX_DECAY = 0.5
N_AUX = 2


def _head(x, name: str, scale: int):
    """(B, H/scale, W/scale, C) -> (B, H, W, 1) float32 probabilities."""
    x = layers.Conv2D(1, 1, name=f"{name}_conv")(x)
    if scale > 1:
        # Upsample the logits, not the probabilities, so the sigmoid sees a smooth field.
        x = layers.UpSampling2D(scale, interpolation="bilinear", name=f"{name}_up")(x)
    # float32 even under a mixed policy: losses and thresholds need full-precision probabilities.
    return layers.Activation("sigmoid", dtype="float32", name=name)(x)


def segmentation_heads(decoder_features, deep_supervision: bool):
    """Sigmoid output(s) from the decoder.

    Args:
        decoder_features: decoder outputs finest first: [(B, H, W, f), (B, H/2, W/2, 2f), (B, H/4, W/4, 4f), ...].
        deep_supervision: also add the auxiliary outputs.

    Returns:
        The (B, H, W, 1) float32 main output, or [out, aux1, aux2] with deep supervision.
    """
    main = _head(decoder_features[0], "out", scale=1)
    if not deep_supervision:
        return main
    aux = [_head(decoder_features[i], f"aux{i}", scale=2**i) for i in range(1, N_AUX + 1)]
    return [main, *aux]


def inference_model(model: keras.Model) -> keras.Model:
    """The model with only its main output (the first), sharing weights; `model` itself if it has one output."""
    if len(model.outputs) == 1:
        return model
    return keras.Model(model.inputs, model.outputs[0], name=f"{model.name}_inference")


def deep_supervision_weights(model: keras.Model) -> list[float]:
    """Loss weight per output, in output order: [1.0] or [1.0, 0.5, 0.25]."""
    return [AUX_DECAY**i for i in range(len(model.outputs))]
