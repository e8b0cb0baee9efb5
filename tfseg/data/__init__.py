"""Data layer: kaggle_3m -> checked, preprocessed TFRecords -> tf.data.

Submodules: ``kaggle`` (read and check the Kaggle layout), ``preprocess``
(PROTOCOL.md's preprocessing and its inverse), ``split`` (patient-level
splits), ``records`` / ``pack`` (TFRecord shards + manifest), ``pipeline``
(tf.data), ``augment`` (in-train-step augmentation), ``phantom`` (synthetic data).
"""
from tfseg.data.kaggle import DataError, PatientVolume, read_kaggle_folder, read_patient, scan_folder
from tfseg.data.preprocess import Geometry, invert_volume, preprocess_volume
from tfseg.data.split import split_patients

__all__ = ["DataError", "Geometry", "PatientVolume", "invert_volume", "preprocess_volume",
           "read_kaggle_folder", "read_patient", "scan_folder", "split_patients"]
