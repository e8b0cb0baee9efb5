"""Data layer: kaggle_3m -> checked, preprocessed TFRecords -> tf.data.

Submodules: ``kaggle`` (read and check the Kaggle layout), ``preprocess``
(docs/protocol.md's preprocessing and its inverse, in TensorFlow), ``protocol`` (its
parameters and the Geometry record), ``split`` (patient-level
splits), ``records`` / ``pack`` (TFRecord shards + manifest), ``pipeline``
(tf.data), ``phantom`` (synthetic data). The in-train-step augmentation is
``tfseg.training.augment``.
"""
from tfseg.data.kaggle import DataError, PatientVolume, read_kaggle_folder, read_patient, scan_folder
from tfseg.data.protocol import Geometry
from tfseg.data.split import split_patients

__all__ = ["DataError", "Geometry", "PatientVolume", "invert_volume", "preprocess_volume",
           "read_kaggle_folder", "read_patient", "scan_folder", "split_patients"]


def __getattr__(name):
    # preprocess_volume and invert_volume run TensorFlow: import it when they are asked for, not whenever
    # a kaggle_3m folder is read or checked (packing's parent process, tfseg.radiogenomics).
    if name in ("preprocess_volume", "invert_volume"):
        from tfseg.data import preprocess

        return getattr(preprocess, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
