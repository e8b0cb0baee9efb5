"""Name -> builder registry behind `build_model`.

A builder is `builder(input_shape, base_filters, deep_supervision, **kwargs) -> keras.Model`;
decorate it with `@register("name")` and import its module in `tfseg/models/__init__.py`.
"""
from typing import Callable

import keras

from tfseg.models.normalization import batch_norm_layers

Builder = Callable[..., keras.Model]

ARCHITECTURES: dict[str, Builder] = {}

# 4 pooling steps between the input and the bottleneck.
DOWNSAMPLING_FACTOR = 16


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator that makes `builder` available as `build_model(name, ...)`."""

    def decorator(builder: Builder) -> Builder:
        known = ARCHITECTURES.get(name)
        # Re-registering the same function (module reload in a notebook) is fine; a clash is not.
        if known is not None and (known.__module__, known.__qualname__) != (builder.__module__, builder.__qualname__):
            raise ValueError(f"architecture {name!r} is already registered by {known.__module__}.{known.__qualname__}")
        ARCHITECTURES[name] = builder
        return builder

    return decorator


def build_model(arch: str, input_shape=(128, 128, 3), base_filters: int = 32,
                deep_supervision: bool = False, batch_norm: str = "fused", **kwargs) -> keras.Model:
    """Build a registered segmentation network.

    Args:
        arch: a key of `ARCHITECTURES` ("unet", "attention_unet", "resunet").
        input_shape: (H, W, C) of one image; H and W divisible by 16 (or None for any such size).
        base_filters: channels of the first encoder level; level k has base_filters * 2**(k-1),
            the bottleneck 16 * base_filters.
        deep_supervision: if True the model has three outputs [out, aux1, aux2].
        batch_norm: "fused" (tfseg.models.normalization.FusedBatchNormalization, the default) or "keras"
            (keras.layers.BatchNormalization): the same arithmetic, the fused one trains faster on CPU.
        **kwargs: passed on to the architecture's builder (e.g. `name`).

    Returns:
        A functional keras.Model: (B, H, W, C) float32 -> (B, H, W, 1) float32 probabilities,
        or a list of three such tensors with deep supervision.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known architectures: {', '.join(sorted(ARCHITECTURES))}")
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (H, W, C), got {input_shape}")
    for size in input_shape[:2]:
        if size is not None and size % DOWNSAMPLING_FACTOR:
            raise ValueError(f"input_shape {input_shape}: H and W must be divisible by {DOWNSAMPLING_FACTOR} "
                             f"(the encoder halves them 4 times); resize or pad the images")
    if not isinstance(base_filters, int) or base_filters < 1:
        raise ValueError(f"base_filters must be a positive int, got {base_filters!r}")
    with batch_norm_layers(batch_norm):
        return ARCHITECTURES[arch](input_shape=input_shape, base_filters=base_filters,
                                   deep_supervision=deep_supervision, **kwargs)
