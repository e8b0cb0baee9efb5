"""U-Net of the reference program (Buda, Saha & Mazurowski, Computers in Biology and Medicine 109, 2019;
github.com/mateuszbuda/brain-segmentation-pytorch, unet.py), itself Ronneberger et al.'s U-Net (MICCAI 2015)
with BatchNorm and same padding.

Layer names follow the reference: enc1..enc4, bottleneck, upconv4..upconv1, dec4..dec1, then `out_conv`/`out`.
With base_filters=32 and 3 input channels it has 7,763,041 trainable parameters, like the reference.
"""
import keras
from keras import layers

from tfseg.models.heads import segmentation_heads
from tfseg.models.normalization import batch_norm_layer
from tfseg.models.registry import register

# PyTorch's BatchNorm2d defaults. PyTorch's momentum=0.1 weighs the new batch,
# Keras' momentum weighs the running value: 0.9 is the same update. Keras' own defaults are 0.99 / 1e-3.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def batch_norm(name: str):
    """The BatchNorm of every tfseg model: FusedBatchNormalization (1.5x faster training in bfloat16 on CPU,
    same arithmetic) unless build_model(..., batch_norm="keras") asks for Keras's own layer."""
    return batch_norm_layer(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def conv_block(x, filters: int, name: str):
    """2 x (3x3 conv, BatchNorm, ReLU): (B, H, W, C) -> (B, H, W, filters)."""
    for i in (1, 2):
        # No bias: BatchNorm's beta takes its place (as in the reference).
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
        x = batch_norm(f"{name}_bn{i}")(x)
        x = layers.ReLU(name=f"{name}_relu{i}")(x)
    return x


def unet_encoder(x, base_filters: int):
    """(B, H, W, C) -> (skips, bottleneck).

    skips: [enc1 (B, H, W, f), enc2 (B, H/2, W/2, 2f), enc3 (B, H/4, W/4, 4f), enc4 (B, H/8, W/8, 8f)];
    bottleneck: (B, H/16, W/16, 16f).
    """
    skips = []
    for level in range(1, 5):
        x = conv_block(x, base_filters * 2 ** (level - 1), f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    return skips, conv_block(x, base_filters * 16, "bottleneck")


def unet_decoder(x, skips, base_filters: int, gate=None):
    """Bottleneck + skips -> decoder outputs finest first: [dec1 (B, H, W, f), dec2, dec3, dec4 (B, H/8, W/8, 8f)].

    gate: optional `gate(skip, gating, name) -> skip` applied to each skip before concatenation,
        with the coarser decoder features as gating signal (used by attention_unet).
    """
    features = []
    for level in (4, 3, 2, 1):
        filters = base_filters * 2 ** (level - 1)
        skip = skips[level - 1]
        if gate is not None:
            skip = gate(skip, x, name=f"dec{level}_att")
        up = layers.Conv2DTranspose(filters, 2, strides=2, name=f"upconv{level}")(x)
        x = layers.Concatenate(name=f"dec{level}_concat")([up, skip])  # torch.cat((dec, enc)) order
        x = conv_block(x, filters, f"dec{level}")
        features.insert(0, x)
    return features


@register("unet")
def build_unet(input_shape=(128, 128, 3), base_filters: int = 32, deep_supervision: bool = False,
               name: str = "unet") -> keras.Model:
    """(B, H, W, C) float32 -> (B, H, W, 1) float32 probabilities ([out, aux1, aux2] with deep supervision)."""
    inputs = keras.Input(input_shape, dtype="float32", name="image")
    skips, x = unet_encoder(inputs, base_filters)
    features = unet_decoder(x, skips, base_filters)
    return keras.Model(inputs, segmentation_heads(features, deep_supervision), name=name)
