"""Segmentation networks for 2-D FLAIR slices: `build_model("unet", input_shape=(128, 128, 3), base_filters=32)`.

Every model is a Keras functional model built from `keras.layers` and tfseg's `FusedBatchNormalization`
(a registered subclass of Keras's BatchNormalization, plain BatchNormalization under other backends; importing
`tfseg.models` registers it for `keras.models.load_model`): (B, H, W, 3) float32 -> (B, H, W, 1) float32 probabilities,
or [out, aux1, aux2] with deep supervision (auxiliary heads on the decoder levels at 1/2 and 1/4
resolution, upsampled to full size; Lee et al., "Deeply-Supervised Nets", AISTATS 2015).

To add an architecture: write `tfseg/models/<name>.py` with a builder decorated `@register("<name>")`,
and import it on the line below.
"""
from tfseg.models.heads import deep_supervision_weights, inference_model
from tfseg.models.registry import ARCHITECTURES, build_model, register

from tfseg.models import attention_unet, resunet, unet  # noqa: E402,F401  (importing registers them)

__all__ = ["ARCHITECTURES", "build_model", "register", "inference_model", "deep_supervision_weights"]
