"""One training run: data -> model -> fit with callbacks -> metrics.json -> SavedModel export.

``train(config)`` is what ``python train.py`` calls; ``train(config, resume=DIR)``
continues an interrupted run from its last checkpoint.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path

import keras
import tensorflow as tf

from tfseg.errors import TfsegError, disk_full_message, is_disk_full
from tfseg.data.kaggle import DataError
from tfseg.data.pack import pack
from tfseg.data.pipeline import distributed_training_dataset, load_slices, training_dataset
from tfseg.data.records import MANIFEST, read_manifest
from tfseg.fileio import write_json_atomic
from tfseg.data.split import split_patients
from tfseg.losses import get_loss
from tfseg.runlock import hold_run
from tfseg.metrics import DiceCoefficient
from tfseg.models import build_model, deep_supervision_weights, inference_model
from tfseg import runs
from tfseg.training import callbacks as cb
from tfseg.training.augment import Augment
from tfseg.training.config import TrainConfig
from tfseg.training.runtime import (FIRST_STEP_EXTRA_SECONDS, ClusterError, Watchdog, choose_strategy, cluster_spec,
                                    code_version, cpu_has_bf16, cpu_model, describe, is_chief, machine_info,
                                    set_precision, worker_timeout)
from tfseg.training.resume import read_resume_state, resumable_state, set_aside_if_damaged
from tfseg.training.schedules import PlannedSchedule
from tfseg.training.trainer import AugmentedTrainer


class TrainingError(TfsegError, RuntimeError):
    """A run could not complete (e.g. a non-finite loss); the message says what was kept."""


def resolve_tfrecords(config: TrainConfig) -> Path:
    """The packed folder for this run: ``--data`` itself when already packed, else pack it (cached)."""
    data = Path(config.data)
    if (data / MANIFEST).is_file():
        manifest = read_manifest(data)
        if int(manifest["image_size"]) != config.image_size:
            raise DataError(f"{data} was packed at {manifest['image_size']} px but --image-size is "
                            f"{config.image_size}; pass --image-size {manifest['image_size']} or pack again.")
        return data
    out = Path(config.tfrecords or Path("tfrecords") / f"{config.image_size}px")
    pack(data, out, config.image_size)
    return out


def make_schedule(config: TrainConfig, steps_per_epoch: int, epochs: int) -> PlannedSchedule | None:
    """The run's learning-rate schedule planned over ``epochs`` (None: a plain float, e.g. for plateau)."""
    warmup = None if config.warmup_epochs is None else round(config.warmup_epochs * steps_per_epoch)
    if config.schedule == "plateau" or (config.schedule == "constant" and not warmup):
        return None
    return PlannedSchedule(config.lr, epochs * steps_per_epoch, kind=config.schedule, warmup_steps=warmup)


def make_optimizer(config: TrainConfig, schedule: PlannedSchedule | None) -> keras.optimizers.Optimizer:
    lr = config.lr if schedule is None else schedule
    ema = dict(use_ema=True, ema_momentum=config.ema) if config.ema else {}
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=config.weight_decay, **ema)
    return keras.optimizers.Adam(learning_rate=lr, **ema)


def new_run_dir(config: TrainConfig) -> Path:
    if config.logdir:
        return Path(config.logdir)
    return Path("runs") / f"{config.arch}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def train(config: TrainConfig, resume: str | os.PathLike | None = None, export: bool = True,
          overrides: dict | None = None) -> dict:
    """Run (or resume) training; returns the metrics written to ``metrics.json``.

    When resuming, the run's own config.json is used, updated with ``overrides``
    (e.g. ``{"epochs": 30}`` to train a finished run longer).

    With TF_CONFIG set every worker calls this; only the chief writes ``run_dir``
    (config, checkpoints, best.keras, metrics, export). The other workers write the
    same files to a temporary folder that is removed at the end (TensorFlow's
    multi-worker convention: every worker saves, so collective ops stay in step).
    """
    # First of all: MultiWorkerMirroredStrategy must be created before TensorFlow's context starts.
    strategy = choose_strategy()
    chief = is_chief(strategy)
    run_dir = new_run_dir(config) if resume is None else Path(resume)
    if resume is not None and not (run_dir / runs.CONFIG).is_file():
        shared = "" if chief else " Every worker must see the chief's run folder (a shared filesystem) to resume."
        raise DataError(f"--resume {run_dir}: no config.json there; give the folder of an earlier run.{shared}")
    # One process per run folder, from before its state is read until the export is written.
    with hold_run(run_dir) if chief else contextlib.nullcontext():
        state = {}
        if resume is not None:
            stored = runs.read_run_json(run_dir / runs.CONFIG, "it holds the run's settings, which --resume cannot "
                                        "guess: restore it from a copy, or start a new run")
            if not isinstance(stored.get("config"), dict):
                raise runs.RunFolderError(f"{run_dir / runs.CONFIG} has no \"config\" settings: it was not written by "
                                          "train.py; restore it from a copy, or start a new run")
            config = TrainConfig.from_dict({**stored["config"], **(overrides or {})})
            state = resumable_state(run_dir, read_resume_state(run_dir), config.batch_size, write=chief)
            if overrides and ("epochs" in overrides or "time_budget_minutes" in overrides):
                # Training a run longer (or on a new budget) plans its schedule and stop anew.
                state.pop("planned_epochs", None)
                state.pop("stopped_by_time_budget", None)
        out = run_dir if chief else Path(tempfile.mkdtemp(prefix="tfseg-worker-"))
        try:
            return _train(config, strategy, run_dir, out, state, export and chief)
        except Exception as err:
            if not is_disk_full(err):
                raise
            # Running the same command again would start the run anew over its trained epochs.
            raise TrainingError(disk_full_message(err, f"continue the run with --resume {run_dir}")) from err
        finally:
            if not chief:
                shutil.rmtree(out, ignore_errors=True)


def _train(config: TrainConfig, strategy, run_dir: Path, out: Path, state: dict, export: bool) -> dict:
    """train() once the run folder is known: reads a resumed run from ``run_dir``, writes to ``out``."""
    if config.data is None:
        from tfseg.data.download import default_kaggle_3m

        config = dataclasses.replace(config, data=str(default_kaggle_3m()))
    precision = set_precision(config.precision)
    keras.utils.set_random_seed(config.seed)

    folder = resolve_tfrecords(config)
    manifest = read_manifest(folder)
    try:
        # Cross-validation folds are stratified by whether a patient has tumour (the manifest knows).
        strata = {name: int(info.get("tumor_pixels", 0)) > 0 for name, info in manifest["patients"].items()}
        train_names, val_names = split_patients(manifest["patients"], config.val_cases, config.fold, config.folds,
                                                strata=strata if config.folds else None)
    except ValueError as err:
        raise DataError(f"{folder}: {err}") from err
    started = time.perf_counter()
    train_table, val_table = load_slices(folder, train_names), load_slices(folder, val_names)
    print(f"data: {len(train_names)} training patients ({len(train_table)} slices), {len(val_names)} validation "
          f"patients ({len(val_table)} slices) from {folder}, loaded in {time.perf_counter() - started:.1f} s")

    start_epoch = int(state.get("epoch", 0))
    # A time-budgeted run that was planned (and maybe stopped) keeps its plan when resumed.
    epochs = min(config.epochs, int(state.get("planned_epochs", config.epochs)))
    try:
        train_ds, steps = distributed_training_dataset(strategy, train_table, config.batch_size, config.seed,
                                                       start_epoch, context=config.context)
    except ValueError as err:
        raise DataError(str(err)) from err
    with strategy.scope():
        net = build_model(config.arch, (config.image_size, config.image_size, 3 * config.context),
                          config.base_filters, deep_supervision=config.deep_supervision)
        augment = Augment(config.augment, seed=config.seed, name="augment")
        trainer = AugmentedTrainer(net, augment, name="trainer")
        loss = get_loss(config.loss)
        schedule = make_schedule(config, steps, epochs)
        optimizer = make_optimizer(config, schedule)
        n_out = len(net.outputs)
        trainer.compile(optimizer=optimizer, loss=loss if n_out == 1 else [loss] * n_out,
                        loss_weights=None if n_out == 1 else deep_supervision_weights(net),
                        metrics=[DiceCoefficient()] if n_out == 1 else [[DiceCoefficient()]] + [[]] * (n_out - 1))
        optimizer.build(net.trainable_variables)
    checkpoint = tf.train.Checkpoint(net=net, optimizer=optimizer, augment_rng=augment.seed_generator.state)
    if out == run_dir:  # the chief (or a single process) tidies what a killed run left behind
        cb.remove_unfinished_writes(run_dir, state)
    if start_epoch:
        checkpoint.read(str(run_dir / state["checkpoint"])).assert_existing_objects_matched()
        print(f"resumed {run_dir} after epoch {start_epoch}")
    else:
        _write_config(out, config, precision, strategy, train_names, val_names)

    elapsed_before = float(state.get("train_seconds", 0.0))
    fit_started = time.perf_counter()
    clock = lambda: elapsed_before + time.perf_counter() - fit_started  # noqa: E731
    infer = inference_model(net)
    validation = cb.VolumeValidation(infer, val_table, loss, config.batch_size, context=config.context)
    best = cb.BestModel(out / runs.BEST_MODEL, infer, validation, state)
    guard = cb.NonFiniteGuard()
    budget = cb.TimeBudget(config.time_budget_minutes, clock, state, schedule, steps)
    ema_in, ema_out = (cb.EmaSwap(net, optimizer, _calibration_images(train_table, config)).callbacks()
                       if config.ema else (None, None))
    watch_in, watch_out = _cluster_watch(strategy)
    # Order matters: the EMA weights are in place for validation and best.keras, the raw ones
    # are back before the checkpoint; the budget plans before the state is written.
    callbacks = [watch_in, ema_in, validation,
                 cb.TensorBoardExtras(out / runs.TENSORBOARD, validation, _hparams(config, precision),
                                      config.image_every),
                 best, ema_out, budget, cb.ResumeState(out, checkpoint, state, best, clock, steps * config.batch_size),
                 guard, keras.callbacks.TensorBoard(str(out / runs.TENSORBOARD), write_graph=False, profile_batch=0),
                 cb.TimeEstimate(steps, epochs, start_epoch, config.preset) if not tf.config.list_logical_devices("GPU")
                 else None,
                 watch_out]
    callbacks = [c for c in callbacks if c is not None]
    if config.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau("val_volume_dsc", factor=0.5, patience=5, mode="max"))
    if watch_in is not None:
        example, _ = training_dataset(train_table, config.batch_size, config.seed, start_epoch, 1, config.context)
        trainer.example_batch = next(iter(example))
    if start_epoch >= epochs:
        print(f"{run_dir} already finished {start_epoch} epochs")
    else:
        try:
            # shuffle=False: the tf.data stream is already drawn by the protocol's sampler; Keras's
            # default (True) cannot shuffle a dataset and only prints a warning at every run.
            trainer.fit(train_ds, epochs=epochs, initial_epoch=start_epoch, steps_per_epoch=steps,
                        callbacks=callbacks, verbose=_verbosity(), shuffle=False)
        except tf.errors.OpError as err:
            if watch_in is None:
                raise
            raise ClusterError(f"a collective operation failed ({type(err).__name__}: {err.message[:300]}): a worker "
                               f"probably died. Restart every worker with --resume {run_dir}.") from err
    if guard.failure:
        raise TrainingError(f"{guard.failure}; training stopped. The last good checkpoint (epoch {state.get('epoch', 0)}) "
                            f"and best.keras are kept in {run_dir}. Try a lower --lr or --precision float32, "
                            f"then --resume {run_dir}.")
    metrics = _final_metrics(out, config, state, steps, precision, budget.stopped)
    if export and (run_dir / runs.BEST_MODEL).is_file():
        from tfseg.export import export_run

        export_run(run_dir)
    print(f"best validation mean DSC: {metrics['best_val_volume_dsc']:.4f} (epoch {metrics['best_epoch']})")
    return metrics


# Training slices on which the BatchNorm statistics of the averaged (--ema) weights are recomputed.
EMA_CALIBRATION_BATCHES = 16


def _calibration_images(table, config: TrainConfig):
    """A fixed sample of (unaugmented) training inputs: the first batches of the training stream."""
    import numpy as np

    stream, _ = training_dataset(table, config.batch_size, config.seed, 0, context=config.context)
    return np.concatenate([image.numpy() for image, _ in stream.take(EMA_CALIBRATION_BATCHES)])


def _cluster_watch(strategy) -> tuple:
    """(first, last) callbacks that keep a Watchdog armed while the cluster trains (None, None: one process).

    Armed from the start of fit and refreshed at every batch; paused while this worker
    validates and checkpoints at the end of an epoch (its own work, however long).
    """
    if getattr(strategy, "cluster_resolver", None) is None or not strategy.cluster_resolver.task_type:
        return None, None
    watchdog = Watchdog(worker_timeout(), cluster_spec(), "training")
    arm = lambda *args, **kwargs: watchdog.arm("training: in a step or at the end of an epoch")  # noqa: E731
    first = lambda *args, **kwargs: watchdog.arm("training: the first step (tracing it)",  # noqa: E731
                                                 FIRST_STEP_EXTRA_SECONDS)
    pause = keras.callbacks.LambdaCallback(on_train_begin=first, on_train_batch_end=arm,
                                           on_epoch_end=lambda *args, **kwargs: watchdog.disarm(),
                                           on_train_end=lambda *args, **kwargs: watchdog.disarm())
    resume = keras.callbacks.LambdaCallback(on_epoch_end=arm)
    return pause, resume


def _verbosity() -> int:
    """A progress bar on a terminal; one line per epoch in a log file (``nohup … > log``) or with TFSEG_QUIET."""
    import sys

    return 1 if sys.stdout.isatty() and os.environ.get("TFSEG_QUIET") is None else 2


def _hparams(config: TrainConfig, precision: str) -> dict:
    """Scalar settings for TensorBoard's HParams plugin (bool/int/float/str only)."""
    values = {k: v for k, v in dataclasses.asdict(config).items()
              if isinstance(v, (bool, int, float, str)) and k not in ("data", "tfrecords", "logdir", "image_every")}
    values.update({f"aug_{k}": float(v) for k, v in config.augment.items()}, precision_policy=precision)
    return values


def _write_config(run_dir: Path, config: TrainConfig, precision: str, strategy, train_names: list[str],
                  val_names: list[str]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    # The split is written here once; evaluation and the report read it instead of recomputing it.
    payload = {"config": dataclasses.asdict(config), "precision_policy": precision,
               "split": {"training": list(train_names), "validation": list(val_names)},
               "strategy": json.loads(describe(strategy)), "machine": machine_info(), "code": code_version(),
               "command": "python train.py " + _flags(config), "created": datetime.now().isoformat(timespec="seconds")}
    write_json_atomic(run_dir / runs.CONFIG, payload)


def _flags(config: TrainConfig) -> str:
    """A command line that reproduces ``config`` (every non-augmentation setting spelled out)."""
    parts = []
    for key, value in dataclasses.asdict(config).items():
        if key in ("augment", "preset", "tfrecords") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        parts.append(flag if value is True else f"{flag} {value}")
    aug = config.augment
    parts += [f"--aug-{k.replace('_', '-')} {v}" for k, v in aug.items()]
    return " ".join(parts)


def _final_metrics(run_dir: Path, config: TrainConfig, state: dict, steps: int, precision: str,
                   budget_stopped: bool) -> dict:
    history = state.get("history", [])
    # Both are written anew from state.json; a damaged one of an earlier end of training is kept aside.
    set_aside_if_damaged(run_dir / runs.HISTORY, runs.read_history_csv)
    set_aside_if_damaged(run_dir / runs.METRICS, lambda path: runs.read_metrics(path.parent))
    cb.save_history_csv(run_dir / runs.HISTORY, history)
    epochs_done = int(state.get("epoch", 0))
    train_seconds = float(state.get("train_seconds", 0.0))
    images = epochs_done * steps * config.batch_size
    metrics = {
        "best_val_volume_dsc": state.get("best_val_volume_dsc"),
        "best_epoch": state.get("best_epoch"),
        "val_volume_dsc_median": state.get("best_val_volume_dsc_median"),
        "val_volume_dsc_by_patient": state.get("best_per_patient"),
        "final_val_volume_dsc": history[-1]["val_volume_dsc"] if history else None,
        "val_volume_dsc_by_epoch": [h["val_volume_dsc"] for h in history],
        "train_seconds": train_seconds,
        "epochs": epochs_done,
        # Whole training wall time, per-epoch validation included: the honest end-to-end rate.
        "images_per_second": images / train_seconds if train_seconds else None,
        "images_seen": images,
        "precision": precision,
        "cpu": cpu_model(),
        "cpu_bf16": cpu_has_bf16(),
        "planned_epochs": int(state.get("planned_epochs", config.epochs)),
        "stopped_by_time_budget": budget_stopped,
        "arch": config.arch, "loss": config.loss, "image_size": config.image_size,
    }
    cb.write_metrics(run_dir / runs.METRICS, metrics)
    return metrics
