"""Keras callbacks of a training run.

Order matters: :class:`VolumeValidation` runs first and adds ``val_*`` entries
to the epoch logs, which the checkpoint, CSV and TensorBoard callbacks after it
then see.
"""
from __future__ import annotations

import errno
import json
import math
import os
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfseg import runs
from tfseg.data.pipeline import SliceTable, validation_dataset
from tfseg.errors import is_disk_full
from tfseg.fileio import atomic_path, remove_dead_temporaries, write_csv_atomic, write_json_atomic
from tfseg.metrics import score_slices
from tfseg.postprocess import THRESHOLD
from tfseg.training.resume import checkpoint_files, prune_checkpoints
from tfseg.visualize import FLAIR_CHANNEL, dsc_bar_chart, figure_to_array, grid, overlay


class VolumeValidation(keras.callbacks.Callback):
    """After every epoch: predict all validation slices, log the protocol's per-volume DSC.

    Adds to the epoch logs: ``val_loss`` and ``val_dsc`` (mean over batches of the
    training loss and the pooled pixel DSC), ``val_volume_dsc`` (mean over patients,
    the headline) and ``val_volume_dsc_median``; keeps ``self.last_dsc`` per patient
    and ``self.last_probabilities`` for the image callbacks.
    """

    def __init__(self, net: keras.Model, table: SliceTable, loss_fn, batch_size: int, context: int = 1):
        super().__init__()
        self.net, self.table, self.loss_fn, self.batch_size = net, table, loss_fn, batch_size
        self.dataset = validation_dataset(table, batch_size, context=context)
        self.last_dsc: dict[str, float] = {}
        self.last_probabilities: np.ndarray | None = None
        self.seconds = 0.0

    def on_epoch_end(self, epoch, logs=None):
        started = time.perf_counter()
        probs, losses, inter, total = [], [], 0.0, 0.0
        for image, mask in self.dataset:
            p = self.net(image, training=False)
            p = tf.cast(p[0] if isinstance(p, (list, tuple)) else p, tf.float32)
            losses.append(float(self.loss_fn(mask, p)))
            hard = tf.cast(p > THRESHOLD, tf.float32)
            inter += float(tf.reduce_sum(hard * mask))
            total += float(tf.reduce_sum(hard) + tf.reduce_sum(mask))
            probs.append(p.numpy()[..., 0])
        self.last_probabilities = np.concatenate(probs)
        scored = score_slices(self.last_probabilities, self.table.masks, self.table.patients)
        self.last_dsc = scored.values("dsc")
        dsc = scored.aggregate()["dsc"]
        if logs is not None:
            logs.update(val_loss=float(np.mean(losses)), val_dsc=2 * inter / total if total else 1.0,
                        val_volume_dsc=dsc["mean"], val_volume_dsc_median=dsc["median"])
        self.seconds += time.perf_counter() - started
        print(f"\nepoch {epoch + 1}: validation mean per-volume DSC {dsc['mean']:.4f} "
              f"(median {dsc['median']:.4f}, {dsc['n']} patients)")


class TensorBoardExtras(keras.callbacks.Callback):
    """Learning rate, HParams, per-patient DSC bar chart and validation overlays in TensorBoard.

    Overlays (every ``image_every`` epochs): the validation slices with the largest
    tumours, FLAIR channel, prediction outlined red and ground truth green. The
    hyperparameters go to the HParams plugin (with the validation DSC as metrics),
    so `tensorboard --logdir runs` compares runs side by side.
    """

    def __init__(self, logdir: str | os.PathLike, validation: VolumeValidation, hparams: dict,
                 image_every: int = 5, tiles: int = 8):
        super().__init__()
        self.logdir, self.hparams = Path(logdir), hparams
        self.validation, self.image_every = validation, max(1, image_every)
        self.writer = tf.summary.create_file_writer(str(self.logdir / "validation"))
        tumour = validation.table.masks.reshape(len(validation.table), -1).sum(axis=1)
        self.rows = np.sort(np.argsort(-tumour, kind="stable")[:tiles])

    def on_train_begin(self, logs=None):
        from tensorboard.plugins.hparams import api as hp

        metrics = [hp.Metric("epoch_volume_dsc", group="validation", display_name="val mean volume DSC"),
                   hp.Metric("epoch_volume_dsc_median", group="validation", display_name="val median volume DSC"),
                   hp.Metric("epoch_loss", group="validation", display_name="val loss")]
        with tf.summary.create_file_writer(str(self.logdir)).as_default():
            hp.hparams_config(hparams=[hp.HParam(name) for name in self.hparams], metrics=metrics)
            hp.hparams(self.hparams, trial_id=self.logdir.parent.name)

    def on_epoch_end(self, epoch, logs=None):
        lr = self.model.optimizer.learning_rate
        lr = float(lr(self.model.optimizer.iterations) if callable(lr) else keras.ops.convert_to_numpy(lr))
        if logs is not None:
            logs["learning_rate"] = lr
        with self.writer.as_default(step=epoch):
            chart = figure_to_array(dsc_bar_chart(self.validation.last_dsc, f"epoch {epoch + 1}"))
            tf.summary.image("dsc_per_patient", chart[None])
            if epoch % self.image_every == 0 or self.model.stop_training:
                tf.summary.image("overlays", self._overlays()[None])
        self.writer.flush()

    def _overlays(self) -> np.ndarray:
        table, probs = self.validation.table, self.validation.last_probabilities
        tiles = [overlay(table.images[r, ..., FLAIR_CHANNEL], probs[r] > THRESHOLD, table.masks[r]) for r in self.rows]
        return grid(tiles, columns=4)


class BestModel(keras.callbacks.Callback):
    """Save the network to ``best.keras`` whenever the validation mean per-volume DSC improves."""

    def __init__(self, path: str | os.PathLike, net: keras.Model, validation: VolumeValidation, state: dict):
        super().__init__()
        self.path, self.net, self.validation = Path(path), net, validation
        # Restored from state.json when resuming.
        self.best = state.get("best_val_volume_dsc", -1.0)
        self.best_epoch = state.get("best_epoch", 0)
        self.best_median = state.get("best_val_volume_dsc_median", math.nan)
        self.best_per_patient: dict[str, float] = state.get("best_per_patient", {})

    def on_epoch_end(self, epoch, logs=None):
        value = logs["val_volume_dsc"]
        # A NaN network predicts nothing, which still scores above the initial -1 (and 1.0 on
        # tumour-free patients): never let non-finite weights or loss become the best model.
        if not (math.isfinite(value) and math.isfinite(float(logs.get("loss", 0.0))) and weights_are_finite(self.net)):
            return
        if value > self.best:
            self.best, self.best_epoch = value, epoch + 1
            self.best_median = logs["val_volume_dsc_median"]
            self.best_per_patient = dict(self.validation.last_dsc)
            with atomic_path(self.path, keep_suffix=True) as tmp:  # Keras saves only to a name ending in .keras
                self.net.save(tmp)


def weights_are_finite(net: keras.Model) -> bool:
    return all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in net.weights)


class ResumeState(keras.callbacks.Callback):
    """Checkpoint everything a resumed run needs at the end of every epoch.

    ``checkpoints/epoch-<E>`` (tf.train.Checkpoint: weights, optimizer, augmentation
    RNG state) is written first; ``state.json`` (epoch, best, elapsed time, history)
    is then replaced atomically to point at it, so an interruption at any moment
    leaves a complete previous checkpoint. The previous epoch's checkpoint is kept
    too (tfseg.training.resume falls back to it when the last one is damaged). A run
    stopped by a non-finite loss keeps its last good checkpoint.
    """

    def __init__(self, run_dir: Path, checkpoint: tf.train.Checkpoint, state: dict, best: BestModel, clock,
                 images_per_epoch: int):
        super().__init__()
        self.run_dir, self.checkpoint, self.state, self.best, self.clock = run_dir, checkpoint, state, best, clock
        self.images_per_epoch = images_per_epoch

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not all(math.isfinite(float(v)) for v in logs.values()):
            return
        prefix = write_checkpoint(self.checkpoint, self.run_dir / runs.CHECKPOINTS / f"epoch-{epoch + 1}")
        self.state.update(epoch=epoch + 1, checkpoint=os.path.relpath(prefix, self.run_dir),
                          best_val_volume_dsc=self.best.best, best_epoch=self.best.best_epoch,
                          best_val_volume_dsc_median=self.best.best_median,
                          best_per_patient=self.best.best_per_patient,
                          train_seconds=self.clock())
        # Cumulative training time and images at this epoch: the report's time-to-accuracy curves.
        record = {k: float(v) for k, v in logs.items()}
        record.update(train_seconds=self.state["train_seconds"], images_seen=(epoch + 1) * self.images_per_epoch)
        self.state.setdefault("history", []).append(record)
        write_json_atomic(self.run_dir / runs.STATE, self.state)
        prune_checkpoints(self.run_dir, epoch + 1)  # the previous epoch's stays: resume's fallback if this one is damaged


def write_checkpoint(checkpoint: tf.train.Checkpoint, prefix: Path) -> str:
    """``checkpoint.write(prefix)``; on a full disk, remove what TensorFlow left of this checkpoint and raise
    OSError(ENOSPC) naming it.

    TensorFlow writes a checkpoint into ``<prefix>_temp/`` and names only a file in there when the disk
    fills; state.json still points at the previous checkpoint, so nothing of this one is worth keeping.
    """
    try:
        return checkpoint.write(str(prefix))
    except tf.errors.OpError as err:
        if not is_disk_full(err):
            raise
        for path in [*prefix.parent.glob(f"{prefix.name}_temp*"), *prefix.parent.glob(f"{prefix.name}.*")]:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(prefix)) from err


def remove_unfinished_writes(run_dir: Path, state: dict) -> list[Path]:
    """Delete what a run killed mid-write (kill -9, power loss) left in ``run_dir``; returns the paths.

    That is: temporary JSON files of dead processes, a half-saved best model, and in
    ``checkpoints/`` TensorFlow's ``*_temp`` folders, any other file, and any checkpoint newer than the
    one ``state.json`` points at (written, but the run died before recording it). Call it from
    the one process that writes ``run_dir`` before training starts.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    removed = remove_dead_temporaries(run_dir)
    leftovers = [run_dir / ".best-tmp.keras", run_dir / ".history.csv.tmp"]
    current = int(state.get("epoch", 0)) if state.get("checkpoint") else 0
    checkpoints = run_dir / runs.CHECKPOINTS
    if checkpoints.is_dir():
        kept = {path for epoch, paths in checkpoint_files(run_dir).items() if epoch <= current for path in paths}
        leftovers += [path for path in checkpoints.iterdir() if path not in kept]
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(path)
    if removed:
        print(f"removed {len(removed)} unfinished file(s) of an interrupted run in {run_dir}: "
              f"{', '.join(p.name for p in removed[:5])}{' ...' if len(removed) > 5 else ''}")
    return removed


class NonFiniteGuard(keras.callbacks.Callback):
    """Stop at the first NaN/inf training loss; the run then reports it and keeps its last good checkpoint."""

    def __init__(self):
        super().__init__()
        self.failure: str | None = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.failure = f"the training loss became {float(loss)} at batch {batch + 1} of epoch {self.epoch + 1}"
            self.model.stop_training = True

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch


class TimeBudget(keras.callbacks.Callback):
    """Plan the run's epochs to fit ``minutes`` of training wall time, never stopping mid-schedule.

    The first epoch of a run is timed (training and validation); the number of whole
    epochs that fit (at most the configured ``epochs``) is then written to
    ``state["planned_epochs"]`` and the learning-rate ``schedule`` (a
    :class:`~tfseg.training.schedules.PlannedSchedule`, or None) is re-planned over
    them, so a cosine still reaches its floor at the last step. The run stops after
    the planned epoch; ``state["stopped_by_time_budget"]`` records it, so a resumed
    run does not train an extra epoch.
    """

    def __init__(self, minutes: float | None, clock, state: dict, schedule=None, steps_per_epoch: int = 1):
        super().__init__()
        self.limit = None if minutes is None else minutes * 60.0
        self.clock, self.state, self.schedule, self.steps_per_epoch = clock, state, schedule, steps_per_epoch
        self.epoch_started = 0.0

    @property
    def stopped(self) -> bool:
        return bool(self.state.get("stopped_by_time_budget", False))

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = self.clock()

    def on_epoch_end(self, epoch, logs=None):
        if self.limit is None:
            return
        from tfseg.training.schedules import epochs_that_fit

        if "planned_epochs" not in self.state:
            seconds = self.clock() - self.epoch_started
            planned = epochs_that_fit(self.limit, seconds, self.params.get("epochs") or epoch + 1)
            self.state["planned_epochs"] = planned
            if self.schedule is not None:
                self.schedule.replan(planned * self.steps_per_epoch)
            print(f"\ntime budget: one epoch took {seconds / 60:.1f} min; planned {planned} epochs in "
                  f"{self.limit / 60:.1f} minutes, learning-rate schedule re-planned to end there")
        if epoch + 1 >= self.state["planned_epochs"]:
            self.state["stopped_by_time_budget"] = epoch + 1 < (self.params.get("epochs") or 0)
            self.model.stop_training = True


class TimeEstimate(keras.callbacks.Callback):
    """On a machine without a GPU, print the run's estimated training time after its first timed steps.

    README's main command (256 px, 100 epochs, base 32) trains for about a day on a 2-core CPU; a
    user should learn that in the first minute, not the next morning. The first ``warmup`` steps
    (graph tracing, the input pipeline filling up) are not timed; the next ``timed`` ones give the
    seconds per step, times the steps still to train. Validation after each epoch comes on top.
    A run that is not already on the CPU budget and would take over an hour is pointed to it.
    """

    CPU_PRESET = "cpu-128"
    HINT_AFTER_SECONDS = 3600.0

    def __init__(self, steps_per_epoch: int, epochs: int, start_epoch: int = 0, preset: str | None = None,
                 clock=time.perf_counter, warmup: int = 2, timed: int = 5, write=print):
        super().__init__()
        self.steps_per_epoch, self.epochs, self.start_epoch, self.preset = steps_per_epoch, epochs, start_epoch, preset
        self.clock, self.warmup, self.timed, self.write = clock, warmup, timed, write
        self.steps_done, self.timing_started, self.estimate = 0, None, None

    def on_train_batch_end(self, batch, logs=None):
        if self.estimate is not None:
            return
        self.steps_done += 1
        if self.steps_done == self.warmup:
            self.timing_started = self.clock()
        elif self.steps_done == self.warmup + self.timed:
            per_step = (self.clock() - self.timing_started) / self.timed
            remaining = (self.epochs - self.start_epoch) * self.steps_per_epoch - self.steps_done
            self.estimate = per_step * max(remaining, 0)
            self.write(self.message(per_step))

    def message(self, per_step: float) -> str:
        text = (f"\nestimated training time on this machine (no GPU): {_hours(self.estimate)} more for "
                f"{self.epochs - self.start_epoch} epochs of {self.steps_per_epoch} steps ({per_step:.2f} s per step; "
                "validation after each epoch comes on top)")
        if self.preset != self.CPU_PRESET and self.estimate > self.HINT_AFTER_SECONDS:
            text += (f"\nthe budget made for CPUs is --preset {self.CPU_PRESET} (128 px, 12 epochs; docs/protocol.md); "
                     "or let this run go on: an interrupted run continues after its last finished epoch with --resume RUN_DIR")
        return text


def _hours(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


class EmaSwap:
    """Evaluate with the optimizer's moving average of the weights (``--ema``), train with the raw ones.

    ``swap_in`` (before validation) stores the raw weights, loads the average and
    recomputes every BatchNorm layer's statistics for it on ``calibration`` (training
    images, (M, H, W, C) float32, the network's input): the running statistics belong to
    the raw weights, and with them an average taken early in training predicted no
    tumour at all (the failed ``b16-onecycle1e-3-ema`` attempt, see reports/REPORT.md).
    ``swap_out`` (after best.keras is saved, before the checkpoint) puts the raw weights
    and statistics back, so checkpoints and resume hold the raw network and the
    optimizer holds the average.
    """

    def __init__(self, net: keras.Model, optimizer, calibration: np.ndarray | None = None, batch_size: int = 32):
        self.net, self.optimizer = net, optimizer
        self.calibration, self.batch_size = calibration, batch_size
        self.raw: list | None = None

    def swap_in(self):
        self.raw = [keras.ops.convert_to_numpy(v) for v in self.net.weights]
        for variable, average in zip(self.net.trainable_variables, self.optimizer._model_variables_moving_average):
            variable.assign(average)
        if self.calibration is not None:
            recompute_batchnorm_statistics(self.net, self.calibration, self.batch_size)

    def swap_out(self):
        if self.raw is not None:
            for variable, value in zip(self.net.weights, self.raw):
                variable.assign(value)
            self.raw = None

    def callbacks(self) -> tuple[keras.callbacks.Callback, keras.callbacks.Callback]:
        """(swap-in callback: put first in the list, swap-out callback: put after BestModel)."""
        return (keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: self.swap_in()),
                keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: self.swap_out()))


def recompute_batchnorm_statistics(net: keras.Model, images: np.ndarray, batch_size: int = 32) -> int:
    """Set every BatchNorm layer's moving mean and variance to their mean over ``images`` (as SWA does).

    images: (M, H, W, C) float, the network's input. Forward passes in training mode with the
    momentum of batch i set to i / (i + 1), so the moving statistics become the plain average of
    the batch statistics. Only the BatchNorm statistics change. Returns the batches used.
    """
    layers = [layer for layer in _all_layers(net) if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers or len(images) == 0:
        return 0
    momenta = [layer.momentum for layer in layers]
    trainable = [keras.ops.convert_to_numpy(v) for v in net.trainable_variables]
    batches = 0
    try:
        for start in range(0, len(images), batch_size):
            for layer in layers:
                layer.momentum = batches / (batches + 1.0)
            net(np.asarray(images[start:start + batch_size], np.float32), training=True)
            batches += 1
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    for variable, value in zip(net.trainable_variables, trainable):  # a forward pass never changes them; be sure
        variable.assign(value)
    return batches


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def save_history_csv(path: Path, history: list[dict]) -> None:
    """history.csv from the per-epoch logs (one row per epoch, written atomically)."""
    write_csv_atomic(path, [{"epoch": epoch, **logs} for epoch, logs in enumerate(history, 1)])


def write_metrics(path: Path, metrics: dict) -> None:
    write_json_atomic(path, json.loads(json.dumps(metrics, default=float)))
