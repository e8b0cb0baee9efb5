"""tfseg: TensorFlow/Keras toolkit for FLAIR-abnormality segmentation in brain MRI (LGG, Kaggle kaggle_3m).

Importing the package starts TensorFlow without its C++ start-up notices (tfseg.startup) and
registers tfseg's Keras objects (tfseg.custom_objects), so ``keras.models.load_model("RUN/best.keras")``
works after ``import tfseg``. The command line is ``tfseg`` (tfseg.cli).
"""

__version__ = "0.1.0"

from tfseg.startup import import_tensorflow_quietly as _import_tensorflow_quietly  # noqa: E402

_import_tensorflow_quietly()

from tfseg import custom_objects as _custom_objects  # noqa: E402,F401
