"""Residual U-Net (Zhang, Liu & Wang, "Road Extraction by Deep Residual U-Net", IEEE GRSL 15(5), 2018).

Every level is a pre-activation residual unit (He et al. 2016): BN-ReLU-conv3x3 twice, plus a 1x1 conv
shortcut (after 2x2 average pooling where the unit downsamples). The encoder halves the resolution with a
stride-2 first conv instead of max-pooling; the decoder upsamples, concatenates the skip and applies a
residual unit. To give base_filters the same meaning as in the U-Net we use 4 encoder levels
(f, 2f, 4f, 8f) + a 16f bridge, where the paper has 3 + bridge.

Layer names: `{level}_bn{i}`/`{level}_relu{i}` pre-activate `{level}_conv{i}`; `{level}_shortcut`;
the unit's output is the Add layer `{level}`, with levels enc1..enc4, bridge, dec4..dec1.
"""
import keras
from keras import layers

from tfseg.models.heads import segmentation_heads
from tfseg.models.registry import register
from tfseg.models.unet import batch_norm


def residual_unit(x, filters: int, strides: int, name: str, preactivate: bool = True):
    """(B, H, W, C) -> (B, H/strides, W/strides, filters).

    preactivate=False skips the BN-ReLU before the first conv (the paper's first unit, which sees the image).
    """
    # No biases anywhere in the unit: each conv's output reaches a BatchNorm or `out_conv` through linear
    # layers only, so a bias would be absorbed there.
    shortcut = x
    if strides > 1:
        # Average-pool then 1x1 conv (the "ResNet-D" shortcut) rather than a stride-2 1x1 conv, which would
        # drop three pixels in four, and whose filter gradient is broken in TF 2.21's oneDNN CPU kernels
        # for < 16 input channels (heap corruption / wrong values; oneDNN issue #6035).
        shortcut = layers.AveragePooling2D(strides, name=f"{name}_shortcut_pool")(shortcut)
    shortcut = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_shortcut")(shortcut)
    y = x
    if preactivate:
        y = batch_norm(f"{name}_bn1")(y)
        y = layers.ReLU(name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv1")(y)
    y = batch_norm(f"{name}_bn2")(y)
    y = layers.ReLU(name=f"{name}_relu2")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    return layers.Add(name=name)([y, shortcut])


@register("resunet")
def build_resunet(input_shape=(128, 128, 3), base_filters: int = 32, deep_supervision: bool = False,
                  name: str = "resunet") -> keras.Model:
    """(B, H, W, C) float32 -> (B, H, W, 1) float32 probabilities ([out, aux1, aux2] with deep supervision)."""
    inputs = keras.Input(input_shape, dtype="float32", name="image")
    x = residual_unit(inputs, base_filters, strides=1, name="enc1", preactivate=False)
    skips = [x]
    for level in (2, 3, 4):
        x = residual_unit(x, base_filters * 2 ** (level - 1), strides=2, name=f"enc{level}")
        skips.append(x)
    x = residual_unit(x, base_filters * 16, strides=2, name="bridge")

    features = []
    for level in (4, 3, 2, 1):
        x = layers.UpSampling2D(2, name=f"up{level}")(x)
        x = layers.Concatenate(name=f"dec{level}_concat")([x, skips[level - 1]])
        x = residual_unit(x, base_filters * 2 ** (level - 1), strides=1, name=f"dec{level}")
        features.insert(0, x)
    return keras.Model(inputs, segmentation_heads(features, deep_supervision), name=name)
