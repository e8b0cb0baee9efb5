"""Attention U-Net (Oktay et al., "Attention U-Net: Learning Where to Look for the Pancreas", MIDL 2018):
the reference U-Net (tfseg.models.unet) with an additive attention gate on every skip connection.

Gate of decoder level k (layers `deck_att_*`, output `deck_att`): the skip x from enc k is weighted by
alpha = sigmoid(psi(relu(W_x x + W_g g))), where the gating signal g is the coarser decoder feature map
(bottleneck for level 4, dec(k+1) otherwise). As in the paper, alpha is computed on g's grid and
resampled to x's grid.
"""
import keras
from keras import layers

from tfseg.models.heads import segmentation_heads
from tfseg.models.registry import register
from tfseg.models.unet import unet_decoder, unet_encoder


def attention_gate(x, g, name: str):
    """Additive attention gate.

    Args:
        x: skip features (B, H, W, C).
        g: gating features (B, H/2, W/2, Cg).
        name: prefix of the gate's layers; the gated skip is the layer `name`.

    Returns:
        x * alpha, (B, H, W, C), with alpha (B, H, W, 1) in [0, 1] (layer `{name}_up`).
    """
    inter = max(x.shape[-1] // 2, 1)  # the authors' default: half the skip channels
    # W_x brings x onto g's grid. A 2x2 stride-2 kernel (as in the authors' code) lets every skip
    # pixel contribute, where a strided 1x1 would ignore three in four.
    theta_x = layers.Conv2D(inter, 2, strides=2, use_bias=False, name=f"{name}_wx")(x)
    phi_g = layers.Conv2D(inter, 1, name=f"{name}_wg")(g)  # its bias is the paper's b_g
    f = layers.Add(name=f"{name}_add")([theta_x, phi_g])
    f = layers.ReLU(name=f"{name}_relu")(f)
    alpha = layers.Conv2D(1, 1, name=f"{name}_psi")(f)
    alpha = layers.Activation("sigmoid", name=f"{name}_sigmoid")(alpha)
    alpha = layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_up")(alpha)
    return layers.Multiply(name=name)([x, alpha])  # broadcast over channels


@register("attention_unet")
def build_attention_unet(input_shape=(128, 128, 3), base_filters: int = 32, deep_supervision: bool = False,
                         name: str = "attention_unet") -> keras.Model:
    """(B, H, W, C) float32 -> (B, H, W, 1) float32 probabilities ([out, aux1, aux2] with deep supervision)."""
    inputs = keras.Input(input_shape, dtype="float32", name="image")
    skips, x = unet_encoder(inputs, base_filters)
    features = unet_decoder(x, skips, base_filters, gate=attention_gate)
    return keras.Model(inputs, segmentation_heads(features, deep_supervision), name=name)
