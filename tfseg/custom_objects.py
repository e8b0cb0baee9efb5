"""Every Keras object tfseg defines, registered (package "tfseg") by importing the modules that hold them.

``import tfseg`` imports this module, as KerasHub does, so that ``keras.models.load_model`` reads a
``best.keras`` (its fused BatchNorm, losses, metrics, schedules, the training wrapper) in any process
that has imported tfseg, without ``custom_objects``.
"""
import tfseg.losses  # noqa: F401  Dice, Tversky, ... losses
import tfseg.metrics  # noqa: F401  the DSC metric
import tfseg.models  # noqa: F401  every architecture and the fused BatchNorm
import tfseg.training.augment  # noqa: F401  the in-step augmentation layer
import tfseg.training.schedules  # noqa: F401  the planned learning-rate schedules
import tfseg.training.trainer  # noqa: F401  the training wrapper (never saved on its own, registered for clones)
