"""TFRecord format of packed slices, and the manifest that describes a packed folder.

One GZIP-compressed shard per patient (``<patient>.tfrecord.gz``), one
``tf.train.Example`` per preprocessed slice:

============  ======  ==========================================================
feature       type    content
============  ======  ==========================================================
image         bytes   (N, N, 3) float16, little-endian, normalized as docs/protocol.md
mask          bytes   (N, N) uint8 in {0, 1}
patient       bytes   patient folder name, UTF-8
slice         int64   index of the slice in the preprocessed volume (0-based)
geometry      int64   14 values of :class:`tfseg.data.protocol.Geometry`
============  ======  ==========================================================

``manifest.json`` beside the shards holds the source folder, the image size,
the preprocessing parameters, and per patient its shard, SHA-256 and slice counts.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tfseg.data.kaggle import DataError
from tfseg.data.protocol import GEOMETRY_LENGTH, Geometry
from tfseg.fileio import sha256_file

FORMAT_VERSION = 1
IMAGE_DTYPE = np.float16
MANIFEST = "manifest.json"
SHARD_SUFFIX = ".tfrecord.gz"


def serialize_slices(patient: str, image: np.ndarray, mask: np.ndarray, geometry: Geometry) -> list[bytes]:
    """Serialized Examples for a preprocessed volume: image (S, N, N, 3) float, mask (S, N, N) uint8."""
    import tensorflow as tf

    def _bytes(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def _ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    geo = geometry.to_list()
    records = []
    for index in range(image.shape[0]):
        features = {
            "image": _bytes(image[index].astype("<f2").tobytes()),
            "mask": _bytes(mask[index].astype(np.uint8).tobytes()),
            "patient": _bytes(patient.encode()),
            "slice": _ints([index]),
            "geometry": _ints(geo),
        }
        # deterministic: map fields (the feature dict) in a fixed order, so the same slices give the same
        # shard bytes (and SHA-256) in every process; by default the order varies with the hash seed.
        example = tf.train.Example(features=tf.train.Features(feature=features))
        records.append(example.SerializeToString(deterministic=True))
    return records


def write_shard(path: str | os.PathLike, records: list[bytes]) -> None:
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path), options=tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
        for record in records:
            writer.write(record)


def parse_example(serialized, image_size: int) -> dict:
    """tf.data map function: one serialized Example -> dict of tensors.

    image (N, N, 3) float16, mask (N, N) uint8, patient string, slice int64, geometry (14,) int64.
    """
    import tensorflow as tf

    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "mask": tf.io.FixedLenFeature([], tf.string),
        "patient": tf.io.FixedLenFeature([], tf.string),
        "slice": tf.io.FixedLenFeature([], tf.int64),
        "geometry": tf.io.FixedLenFeature([GEOMETRY_LENGTH], tf.int64),
    }
    ex = tf.io.parse_single_example(serialized, spec)
    ex["image"] = tf.reshape(tf.io.decode_raw(ex["image"], tf.float16, little_endian=True),
                             (image_size, image_size, 3))
    ex["mask"] = tf.reshape(tf.io.decode_raw(ex["mask"], tf.uint8), (image_size, image_size))
    return ex


# What every reader of a manifest needs, at the top and per patient (docs/reference/tfrecords.md).
MANIFEST_KEYS = ("format_version", "image_size", "patients")
PATIENT_KEYS = ("shard", "sha256", "slices")


def read_manifest(folder: str | os.PathLike) -> dict:
    """The manifest of a packed folder, checked; DataError naming it and saying what to do when it is
    missing, damaged (truncated, not a JSON object, without the keys above) or of another format version.

    Every reader of a manifest.json goes through here. A damaged manifest is left as it is; packing
    again (``tfseg pack``) writes a new one.
    """
    from tfseg.runs import read_json_object

    path = Path(folder) / MANIFEST
    repack = f"pack again with `tfseg pack --data ./kaggle_3m --out {folder}` (it writes a new manifest)."
    if not path.is_file():
        raise DataError(f"{folder} is not a packed TFRecord folder (no {MANIFEST}); pack it with "
                        f"`tfseg pack --data ./kaggle_3m --out {folder}`.")
    manifest = read_json_object(path, repack, MANIFEST_KEYS, error=DataError)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path} has format version {manifest.get('format_version')}, this tfseg reads "
                        f"{FORMAT_VERSION}; {repack}")
    patients = manifest["patients"]
    if not isinstance(patients, dict):
        raise DataError(f"{path} is damaged: \"patients\" is a JSON {type(patients).__name__}, not an object. "
                        f"It is left as it is; {repack}")
    for name, entry in patients.items():
        missing = [key for key in PATIENT_KEYS if key not in entry] if isinstance(entry, dict) else list(PATIENT_KEYS)
        if missing:
            raise DataError(f"{path} is damaged: patient {name} has no {', '.join(missing)}. It is left as it is; "
                            f"{repack}")
    return manifest


def verified_shards(folder: str | os.PathLike, manifest: dict, patients: list[str]) -> list[str]:
    """Paths of the patients' shards after checking each SHA-256 against the manifest."""
    folder = Path(folder)
    paths = []
    for patient in patients:
        entry = manifest["patients"].get(patient)
        if entry is None:
            raise DataError(f"patient {patient} is not in {folder / MANIFEST}; repack with "
                            "`python -m tfseg.data.pack` from a folder that holds it.")
        path = folder / entry["shard"]
        if not path.is_file():
            raise DataError(f"shard {path} is missing; repack with `python -m tfseg.data.pack`.")
        if sha256_file(path) != entry["sha256"]:
            raise DataError(f"shard {path} does not match the SHA-256 in {MANIFEST} (corrupt or changed); "
                            "repack with `python -m tfseg.data.pack` (it rewrites shards that do not match).")
        paths.append(str(path))
    return paths
