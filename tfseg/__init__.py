"""tfseg: TensorFlow/Keras toolkit for FLAIR-abnormality segmentation in brain MRI (LGG, Kaggle kaggle_3m).

``import tfseg`` is cheap (no TensorFlow yet) and arranges two things for when TensorFlow and Keras
are first imported (tfseg.startup): TensorFlow starts without its C++ start-up notices, and tfseg's
Keras objects are registered, so ``keras.models.load_model("RUN/best.keras")`` works after
``import tfseg``. The command line is ``tfseg`` (tfseg.cli).
"""

__version__ = "0.1.0"

from tfseg import startup as _startup  # noqa: E402

_startup.install()
