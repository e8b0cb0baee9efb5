"""tfseg: TensorFlow/Keras toolkit for FLAIR-abnormality segmentation in brain MRI (LGG, Kaggle kaggle_3m)."""

__version__ = "0.1.0"
