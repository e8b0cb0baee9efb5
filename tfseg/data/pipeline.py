"""tf.data input pipelines over packed TFRecords.

The packed slices of a split are read once into memory (``SliceTable``: at
128 px the whole training set is ~370 MB as float16), then:

* :func:`training_dataset` draws each epoch's slices with the reference's
  tumour-weighted sampling *inside tf.data* (stateless under ``(seed, epoch)``, so
  a resumed run draws exactly what an uninterrupted one would), gathers whole
  batches from a variable holding the slices and prefetches;
* :func:`validation_dataset` yields every slice in fixed patient/slice order.

Augmentation is not here: it runs inside the training step (``tfseg.training.augment``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from tfseg.data.context import gather_stacks, neighbour_rows
from tfseg.data.protocol import Geometry
from tfseg.data.records import parse_example, read_manifest, verified_shards


@dataclass
class SliceTable:
    """Preprocessed slices of some patients, in patient/slice order.

    images (N, H, W, 3) float16; masks (N, H, W) uint8 0/1; patients (N,) str;
    slices (N,) int; geometry: patient -> Geometry.
    """

    images: np.ndarray
    masks: np.ndarray
    patients: np.ndarray
    slices: np.ndarray
    geometry: dict[str, Geometry] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.patients)

    @property
    def patient_names(self) -> list[str]:
        """Patients in table order."""
        return list(dict.fromkeys(self.patients.tolist()))

    def volume(self, patient: str) -> tuple[np.ndarray, np.ndarray]:
        """(image (S', H, W, 3) float16, mask (S', H, W) uint8) of one patient."""
        rows = self.patients == patient
        return self.images[rows], self.masks[rows]


def load_slices(folder: str | os.PathLike, patients: list[str] | None = None) -> SliceTable:
    """Read the (checksum-verified) shards of ``patients`` (default: all) from a packed folder."""
    manifest = read_manifest(folder)
    patients = sorted(manifest["patients"]) if patients is None else list(patients)
    size = int(manifest["image_size"])
    files = verified_shards(folder, manifest, patients)
    total = sum(manifest["patients"][p]["slices"] for p in patients)
    images = np.empty((total, size, size, 3), np.float16)
    masks = np.empty((total, size, size), np.uint8)
    names, slices, geometry = [], [], {}
    # Shards are read in order (deterministic=True keeps it) and decoded in parallel.
    ds = (tf.data.Dataset.from_tensor_slices(files)
          .interleave(lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"),
                      cycle_length=1, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .map(lambda s: parse_example(s, size), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .batch(256))
    row = 0
    for batch in ds.as_numpy_iterator():
        n = len(batch["slice"])
        images[row:row + n] = batch["image"]
        masks[row:row + n] = batch["mask"]
        row += n
        names.extend(p.decode() for p in batch["patient"])
        slices.extend(batch["slice"].tolist())
        for p, g in zip(batch["patient"], batch["geometry"]):
            geometry.setdefault(p.decode(), Geometry.from_list(g))
    if row != total:
        raise ValueError(f"{folder}: read {row} slices, the manifest lists {total}; repack with "
                         "`python -m tfseg.data.pack`.")
    return SliceTable(images, masks, np.array(names), np.array(slices, np.int64), geometry)


def sampling_probabilities(table: SliceTable) -> np.ndarray:
    """Per-slice probability of the reference sampler (docs/protocol.md), summing to 1.

    A patient is chosen uniformly, then a slice with probability
    ``(s + 0.1·S/n) / (1.1·S)`` (s: the slice's mask pixels, S: the patient's, n: its
    slices). A patient without any tumour pixel has its slices drawn uniformly
    (the reference would divide by zero there).
    """
    pixels = table.masks.reshape(len(table), -1).sum(axis=1, dtype=np.float64)
    probs = np.empty(len(table), np.float64)
    names = table.patient_names
    for patient in names:
        rows = table.patients == patient
        s = pixels[rows]
        total, n = s.sum(), rows.sum()
        probs[rows] = (s + 0.1 * total / n) / (1.1 * total) if total > 0 else 1.0 / n
    return probs / len(names)


def _host_variable(array: np.ndarray) -> tf.Variable:
    # A variable (not a constant) so tf.data captures it by reference: no copy
    # into the graph, no 2 GB GraphDef limit. Pinned to the host for the gather.
    with tf.device("/CPU:0"):
        return tf.Variable(array, trainable=False)


def _image_gather(images: tf.Variable, table: SliceTable, context: int):
    """rows (B,) -> (B, H, W, 3·context) float32: the slices, or their 2.5-D stacks (tfseg.data.context)."""
    if context == 1:
        return lambda rows: tf.cast(tf.gather(images, rows), tf.float32)
    neighbours = tf.constant(neighbour_rows(table.patients, context))
    return lambda rows: tf.cast(gather_stacks(images, tf.gather(neighbours, rows)), tf.float32)


def training_dataset(table: SliceTable, batch_size: int, seed: int = 0, start_epoch: int = 0,
                     epochs: int | None = None, context: int = 1) -> tuple[tf.data.Dataset, int]:
    """Infinite (or ``epochs``-long) training stream and its steps per epoch.

    Elements: (image (B, H, W, 3·context) float32, mask (B, H, W, 1) float32). An epoch
    holds ``len(table) // batch_size`` batches (epoch length = training slices),
    drawn with :func:`sampling_probabilities`; epoch ``e`` uses the stateless seed
    ``(seed, e)``, so the stream starting at ``start_epoch`` continues a run exactly.
    """
    make, steps = _training_stream(table, batch_size, seed, start_epoch, epochs, context)
    return make(0, 1, 1), steps


def distributed_training_dataset(strategy: tf.distribute.Strategy, table: SliceTable, batch_size: int,
                                 seed: int = 0, start_epoch: int = 0, context: int = 1):
    """:func:`training_dataset` split over the replicas of ``strategy``: (distributed dataset, steps).

    ``batch_size`` is the global batch. Every worker draws the same global batches (the
    same stateless seeds) and keeps its own share: worker w of W the columns
    ``[w·B/W, (w+1)·B/W)`` of each batch, cut into one piece per local replica. Together
    the replicas see exactly the global batches of a single-device run, no slice twice
    and none missing. With one replica this is :func:`training_dataset`.
    """
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return training_dataset(table, batch_size, seed, start_epoch, context=context)
    if batch_size % replicas:
        raise ValueError(f"--batch-size {batch_size} is the global batch and must be a multiple of the "
                         f"{replicas} replicas (workers x devices); use e.g. {replicas * max(1, batch_size // replicas)}")
    make, steps = _training_stream(table, batch_size, seed, start_epoch, None, context)

    def per_worker(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = replicas // input_context.num_input_pipelines
        return make(input_context.input_pipeline_id, input_context.num_input_pipelines, local)

    options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
    return strategy.distribute_datasets_from_function(per_worker, options), steps


def _training_stream(table: SliceTable, batch_size: int, seed: int, start_epoch: int, epochs: int | None,
                     context: int):
    """(make(part, parts, local_replicas) -> dataset, steps per epoch): the sampled stream, any share of it."""
    if len(table) < batch_size:
        raise ValueError(f"the training split has {len(table)} slices, fewer than --batch-size {batch_size}")
    steps = len(table) // batch_size
    logits = tf.constant(np.log(sampling_probabilities(table))[None, :], tf.float32)
    # Created once, outside any dataset function: one host copy shared by every pipeline of this worker.
    images, masks = _host_variable(table.images), _host_variable(table.masks)
    read_images = _image_gather(images, table, context)

    def gather(rows):
        image = read_images(rows)
        mask = tf.cast(tf.gather(masks, rows), tf.float32)[..., None]
        return image, mask

    def make(part: int, parts: int, local_replicas: int) -> tf.data.Dataset:
        def epoch_indices(epoch):
            draw = tf.random.stateless_categorical(logits, steps * batch_size,
                                                   seed=tf.stack([tf.cast(seed, tf.int64), epoch]))
            share = tf.reshape(draw, (steps, parts, batch_size // parts))[:, part]
            # One element per local replica and step, in step order: replica r of step s gets element s·L + r.
            return tf.data.Dataset.from_tensor_slices(
                tf.reshape(share, (steps * local_replicas, batch_size // parts // local_replicas)))

        epochs_ds = (tf.data.Dataset.counter(start_epoch) if epochs is None
                     else tf.data.Dataset.range(start_epoch, start_epoch + epochs))
        return (epochs_ds.flat_map(epoch_indices)
                .map(gather, num_parallel_calls=tf.data.AUTOTUNE)
                .prefetch(tf.data.AUTOTUNE))

    return make, steps


def validation_dataset(table: SliceTable, batch_size: int, with_patient: bool = False,
                       context: int = 1) -> tf.data.Dataset:
    """Every slice once, in table (patient, slice) order.

    Elements: (image (B, H, W, 3·context) float32, mask (B, H, W, 1) float32), plus the
    patient ids (B,) string when ``with_patient``.
    """
    images, masks = _host_variable(table.images), _host_variable(table.masks)
    read_images = _image_gather(images, table, context)

    def gather(start):
        rows = tf.range(start, tf.minimum(start + batch_size, len(table)))
        out = (read_images(rows), tf.cast(tf.gather(masks, rows), tf.float32)[..., None])
        return out + (tf.gather(patients, rows),) if with_patient else out

    patients = tf.constant(table.patients.astype(str))
    return (tf.data.Dataset.range(0, len(table), batch_size)
            .map(gather, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))
