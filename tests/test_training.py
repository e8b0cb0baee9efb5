"""train.py / tfseg.training: end-to-end runs, resume, export, distribution, failures."""
import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from tfseg.data.pack import pack
from tfseg.cli.train import config_from_args
from tfseg.training.config import TrainConfig
from tfseg.training.runtime import choose_precision

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(image_size=64, base_filters=8, batch_size=4, epochs=1, val_cases=1, precision="float32",
             image_every=1)


@pytest.fixture(scope="module")
def packed_phantom(phantom_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("tfr64")
    pack(phantom_dir, out, image_size=64, progress=False)
    return out


@pytest.fixture(autouse=True)
def float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def run_python(code: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter (fresh TensorFlow state) from the repo root."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                            text=True, timeout=timeout, env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _check_run(run_dir: Path, epochs: int):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("best_val_volume_dsc", "best_epoch", "val_volume_dsc_median", "train_seconds", "epochs",
                "images_per_second"):
        assert key in metrics, key
    assert 0.0 <= metrics["best_val_volume_dsc"] <= 1.0
    assert 1 <= metrics["best_epoch"] <= epochs == metrics["epochs"]
    assert metrics["train_seconds"] > 0 and metrics["images_per_second"] > 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["command"].startswith("python train.py --arch")
    assert {"cpu", "tensorflow", "keras"} <= set(config["machine"])
    for name in ("best.keras", "history.csv", "state.json", "export/saved_model.pb"):
        assert (run_dir / name).exists(), name
    _check_tensorboard(run_dir / "tensorboard")
    return metrics


def _check_tensorboard(logdir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def tags(folder):
        events = EventAccumulator(str(folder), size_guidance={"tensors": 0})
        events.Reload()
        return events

    assert {"epoch_loss", "epoch_dsc", "epoch_learning_rate"} <= set(tags(logdir / "train").Tags()["tensors"])
    validation = set(tags(logdir / "validation").Tags()["tensors"])
    assert {"epoch_loss", "epoch_volume_dsc", "epoch_volume_dsc_median", "dsc_per_patient", "overlays"} <= validation
    assert "_hparams_/session_start_info" in tags(logdir).PluginTagToContent("hparams")


def test_one_epoch_on_phantom_writes_a_complete_run_and_export_matches_keras(packed_phantom, tmp_path):
    from tfseg.training.loop import train

    run_dir = tmp_path / "run"
    train(TrainConfig(data=str(packed_phantom), logdir=str(run_dir), **SMALL))
    _check_run(run_dir, epochs=1)

    x = np.random.default_rng(0).normal(size=(3, 64, 64, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    expected = keras.models.load_model(run_dir / "best.keras", compile=False).predict(x, verbose=0)
    # Only TensorFlow in the serving process: the SavedModel must not need tfseg.
    run_python(f"""
        import numpy as np, tensorflow as tf
        model = tf.saved_model.load({str(run_dir / 'export')!r})
        out = model.signatures["serving_default"](image=tf.constant(np.load({str(tmp_path / 'x.npy')!r})))
        np.save({str(tmp_path / 'y.npy')!r}, out["probabilities"].numpy())
    """)
    served = np.load(tmp_path / "y.npy")
    assert served.shape == (3, 64, 64, 1) and served.dtype == np.float32
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_one_epoch_on_real_patients_with_every_architecture_step(real_data_dir, tmp_path):
    from tfseg.training.loop import train

    run_dir = tmp_path / "real"
    metrics = train(TrainConfig(data=real_data_dir, tfrecords=str(tmp_path / "tfr"), logdir=str(run_dir),
                                arch="attention_unet", **SMALL))
    _check_run(run_dir, epochs=1)
    assert metrics["arch"] == "attention_unet"


def test_resume_continues_exactly_like_an_uninterrupted_run(packed_phantom, tmp_path):
    # Both runs in one fresh process with op determinism on: 2 epochs in one go vs 1 + resume 1.
    run_python(f"""
        import json, numpy as np, tensorflow as tf
        tf.config.experimental.enable_op_determinism()
        from tfseg.training.config import TrainConfig
        from tfseg.training.loop import train
        base = dict(data={str(packed_phantom)!r}, image_size=64, base_filters=8, batch_size=4, val_cases=1,
                    precision="float32", seed=3)
        train(TrainConfig(logdir={str(tmp_path / 'full')!r}, epochs=2, **base), export=False)
        train(TrainConfig(logdir={str(tmp_path / 'part')!r}, epochs=1, **base), export=False)
        train(TrainConfig(), resume={str(tmp_path / 'part')!r}, overrides={{"epochs": 2}}, export=False)
    """)
    import tensorflow as tf

    full = tf.train.load_checkpoint(str(tmp_path / "full" / "checkpoints" / "epoch-2"))
    part = tf.train.load_checkpoint(str(tmp_path / "part" / "checkpoints" / "epoch-2"))
    names = [n for n in full.get_variable_to_shape_map() if "OBJECT_GRAPH" not in n]
    assert any("optimizer" in n for n in names) and any("augment_rng" in n for n in names)
    for name in names:
        np.testing.assert_allclose(part.get_tensor(name), full.get_tensor(name), rtol=1e-6, atol=1e-7, err_msg=name)
    history = [json.loads((tmp_path / r / "state.json").read_text())["history"] for r in ("full", "part")]
    assert len(history[1]) == 2
    assert history[1][1]["loss"] == pytest.approx(history[0][1]["loss"], rel=1e-6)


def test_mirrored_strategy_splits_the_batch_over_two_cpu_devices_with_the_same_loss(tmp_path):
    result = run_python("""
        import json, numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras
        from tfseg.losses import get_loss
        from tfseg.training.augment import Augment
        from tfseg.models import build_model
        from tfseg.training.trainer import AugmentedTrainer
        from tfseg.training.runtime import choose_strategy
        rng = np.random.default_rng(0)
        x = rng.normal(size=(8, 32, 32, 3)).astype("float32")
        y = (rng.random((8, 32, 32, 1)) > 0.7).astype("float32")
        def one_step(strategy):
            keras.utils.set_random_seed(1)
            with strategy.scope():
                net = build_model("unet", (32, 32, 3), base_filters=4)
                trainer = AugmentedTrainer(net, Augment({"scale": 0, "rotation": 0, "flip": 0}))
                trainer.compile(optimizer=keras.optimizers.SGD(0.01), loss=get_loss("bce_dice"))
            ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
            return trainer.fit(ds, epochs=1, verbose=0).history["loss"][0]
        mirrored = choose_strategy()
        print(json.dumps({"replicas": mirrored.num_replicas_in_sync, "mirrored": one_step(mirrored),
                          "single": one_step(tf.distribute.OneDeviceStrategy("/cpu:0"))}))
    """)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    assert np.isfinite(out["mirrored"]) and out["mirrored"] == pytest.approx(out["single"], abs=0.02)


def test_non_finite_loss_stops_with_a_clear_message(packed_phantom, tmp_path, monkeypatch):
    from tfseg.training import loop

    class NaNLoss(keras.losses.Loss):
        def call(self, y_true, y_pred):
            return keras.ops.mean(y_pred) * float("nan")

    monkeypatch.setattr(loop, "get_loss", lambda name: NaNLoss())
    with pytest.raises(loop.TrainingError, match="became nan.*last good checkpoint"):
        loop.train(TrainConfig(data=str(packed_phantom), logdir=str(tmp_path / "nan"), **SMALL))
    assert not (tmp_path / "nan" / "checkpoints").exists()
    # A NaN network predicts nothing, which scores above the initial best: it must not become best.keras.
    assert not (tmp_path / "nan" / "best.keras").exists()


def test_missing_data_folder_prints_the_kaggle_download_steps(tmp_path, capsys):
    from tfseg.cli import train

    assert train.main(["--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "mateuszbuda/lgg-mri-segmentation" in err and "nowhere" in err


def test_preset_sets_protocol_values_and_explicit_flags_win():
    config, _, _ = config_from_args(["--preset", "cpu-128"])
    # docs/protocol.md cpu-128: 12 epochs of batch 16 at 128 px, no wall-clock limit.
    assert (config.image_size, config.batch_size, config.epochs, config.time_budget_minutes) == (128, 16, 12, None)
    assert config.schedule == "cosine"
    config, resume, overrides = config_from_args(["--preset", "cpu-128", "--epochs", "3"])
    assert config.epochs == 3 and overrides == {"epochs": 3} and resume is None
    reference, _, _ = config_from_args(["--preset", "reference"])
    assert (reference.image_size, reference.epochs, reference.batch_size, reference.lr) == (256, 100, 16, 1e-4)


def test_the_cpu_256_preset_is_cpu_128_at_256_px():
    at_128, _, _ = config_from_args(["--preset", "cpu-128"])
    at_256, _, _ = config_from_args(["--preset", "cpu-256"])
    assert at_256.image_size == 256
    assert at_256.preset == "cpu-256"
    assert dataclasses.replace(at_256, image_size=128, preset="cpu-128") == at_128


def test_no_augment_turns_every_component_off():
    config, _, _ = config_from_args(["--no-augment"])
    assert config.augment["scale"] == config.augment["rotation"] == config.augment["flip"] == 0


def test_auto_precision_picks_bfloat16_only_on_cpus_that_have_it(monkeypatch):
    from tfseg.training import runtime

    monkeypatch.setattr(runtime.tf.config, "list_physical_devices", lambda kind: [])
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert choose_precision("auto")[0] == "mixed_bfloat16"
    monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx2"})
    assert choose_precision("auto")[0] == "float32"
    assert choose_precision("mixed_float16")[0] == "mixed_float16"


def test_deep_supervision_trains_all_outputs_and_keeps_only_the_main_one_for_inference(packed_phantom, tmp_path):
    from tfseg.training.loop import train

    run_dir = tmp_path / "ds"
    train(TrainConfig(data=str(packed_phantom), logdir=str(run_dir), deep_supervision=True, arch="resunet",
                      loss="focal_tversky", **SMALL), export=False)
    history = json.loads((run_dir / "state.json").read_text())["history"][0]
    # Keras logs the first output's loss on its own; the total adds the weighted auxiliary losses (1, 0.5, 0.25).
    main_loss = next(v for k, v in history.items() if k.endswith("_loss") and not k.startswith("val"))
    assert history["loss"] > 1.2 * main_loss
    model = keras.models.load_model(run_dir / "best.keras", compile=False)
    assert len(model.outputs) == 1 and model.outputs[0].shape[1:] == (64, 64, 1)


@pytest.mark.parametrize("flags, message", [
    (["--context", "2"], "--context must be an odd number"),
    (["--ema", "1.5"], "--ema is a decay between 0 and 1"),
    (["--warmup-epochs", "200", "--epochs", "10"], "--warmup-epochs must be"),
])
def test_bad_campaign_flags_are_rejected_naming_the_flag(flags, message, capsys):
    with pytest.raises(SystemExit):
        config_from_args(flags)
    assert message in capsys.readouterr().err


def test_cpu128_preset_on_real_patients_ends_at_the_cosine_floor_and_records_the_machine(real_data_dir, tmp_path):
    from tfseg.training.loop import train
    from tfseg.training.schedules import FLOOR

    config, _, _ = config_from_args(["--preset", "cpu-128", "--epochs", "2", "--base-filters", "4", "--val-cases", "1",
                                     "--precision", "float32", "--data", real_data_dir,
                                     "--tfrecords", str(tmp_path / "tfr"), "--logdir", str(tmp_path / "run")])
    metrics = train(config, export=False)
    history = json.loads((tmp_path / "run" / "state.json").read_text())["history"]
    assert metrics["epochs"] == metrics["planned_epochs"] == 2 and not metrics["stopped_by_time_budget"]
    assert history[-1]["learning_rate"] == pytest.approx(FLOOR * config.lr, rel=1e-4)
    steps = metrics["images_seen"] // 2 // 16
    assert [h["images_seen"] for h in history] == [steps * 16, 2 * steps * 16]
    assert 0 < history[0]["train_seconds"] < history[1]["train_seconds"] == pytest.approx(metrics["train_seconds"])
    assert {"cpu", "cpu_bf16", "precision", "images_seen", "train_seconds"} <= set(metrics)
    written = json.loads((tmp_path / "run" / "config.json").read_text())
    assert written["machine"]["cpu_bf16"] in (True, False) and written["precision_policy"] == "float32"
    assert len(written["split"]["validation"]) == 1 and len(written["split"]["training"]) == 2
    assert not set(written["split"]["validation"]) & set(written["split"]["training"])
    import pandas as pd

    assert {"train_seconds", "images_seen"} <= set(pd.read_csv(tmp_path / "run" / "history.csv").columns)


def test_time_budget_plans_whole_epochs_ends_the_schedule_and_resume_trains_no_extra_epoch(packed_phantom, tmp_path):
    from tfseg.training.loop import train

    run_dir = tmp_path / "budget"
    config = TrainConfig(data=str(packed_phantom), logdir=str(run_dir), schedule="cosine", lr=1e-3,
                         time_budget_minutes=1e-4, **{**SMALL, "epochs": 4})
    metrics = train(config, export=False)
    state = json.loads((run_dir / "state.json").read_text())
    # One epoch takes longer than the budget: the plan is 1 epoch, and the cosine was re-planned to end in it.
    assert state["planned_epochs"] == 1 and state["stopped_by_time_budget"] is True
    assert metrics["epochs"] == 1 and metrics["stopped_by_time_budget"]
    train(TrainConfig(), resume=str(run_dir), export=False)
    assert json.loads((run_dir / "state.json").read_text())["epoch"] == 1


def test_time_budget_replans_the_schedule_over_the_epochs_that_fit_after_timing_the_first():
    from tfseg.training.callbacks import TimeBudget
    from tfseg.training.schedules import FLOOR, PlannedSchedule

    now = [0.0]
    schedule = PlannedSchedule(1e-3, total_steps=10 * 50, kind="cosine")
    state = {}
    budget = TimeBudget(25 / 60, lambda: now[0], state, schedule, steps_per_epoch=50)
    model = keras.Sequential([keras.Input((1,))])
    model.stop_training = False
    budget.set_model(model)
    budget.set_params({"epochs": 10})
    for epoch in range(3):
        budget.on_epoch_begin(epoch)
        now[0] += 10.0  # every epoch takes 10 s of a 25 s budget: 2 fit
        budget.on_epoch_end(epoch)
        if budget.model.stop_training:
            break
    assert state["planned_epochs"] == 2 and epoch == 1 and budget.stopped
    assert schedule.total_steps == 100
    assert float(schedule(99)) == pytest.approx(FLOOR * 1e-3, rel=1e-5)


def test_ema_validates_with_the_average_and_checkpoints_the_raw_weights(packed_phantom, tmp_path):
    from tfseg.training.loop import train

    run_dir = tmp_path / "ema"
    train(TrainConfig(data=str(packed_phantom), logdir=str(run_dir), ema=0.9, lr=1e-2, **SMALL), export=False)
    import tensorflow as tf

    best = keras.models.load_model(run_dir / "best.keras", compile=False)
    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints" / "epoch-1"))
    names = reader.get_variable_to_shape_map()
    kernel = best.trainable_weights[0].numpy()  # the first convolution's kernel
    # The checkpoint holds the network's raw weights (as the optimizer's tracked variables) and the
    # optimizer's slots: its moving averages among them.
    raw = [reader.get_tensor(n) for n in names if "_trainable_variables/" in n and names[n] == list(kernel.shape)]
    slots = [reader.get_tensor(n) for n in names if "optimizer/_variables/" in n and names[n] == list(kernel.shape)]
    assert raw and not any(np.allclose(kernel, r) for r in raw), "best.keras holds the raw weights, not the EMA"
    assert any(np.array_equal(kernel, a) for a in slots), "best.keras is not the optimizer's average"


def test_ema_swap_loads_the_average_with_its_own_batchnorm_statistics_and_restores_everything():
    from tfseg.training.callbacks import EmaSwap

    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="dense"),
                            keras.layers.BatchNormalization(name="bn")])
    optimizer = keras.optimizers.Adam(0.1, use_ema=True, ema_momentum=0.5)
    optimizer.build(net.trainable_variables)
    rng = np.random.default_rng(0)
    for _ in range(3):  # (not fit(): it ends by overwriting the weights with the average)
        optimizer.apply([rng.normal(size=w.shape).astype("float32") for w in net.trainable_weights],
                        net.trainable_variables)
    raw = [w.numpy().copy() for w in net.weights]
    calibration = rng.normal(size=(64, 3)).astype("float32")
    swap = EmaSwap(net, optimizer, calibration, batch_size=32)
    swap.swap_in()
    averages = [a.numpy() for a in optimizer._model_variables_moving_average]
    for weight, average in zip(net.trainable_weights, averages):
        np.testing.assert_array_equal(weight.numpy(), average)
    assert not np.array_equal(averages[0], raw[0])
    # The BatchNorm statistics are those of the averaged network on the calibration images.
    dense = net.get_layer("dense")
    features = calibration @ dense.kernel.numpy() + dense.bias.numpy()
    np.testing.assert_allclose(net.get_layer("bn").moving_mean.numpy(), features.mean(axis=0), rtol=1e-4, atol=1e-5)
    assert net.get_layer("bn").momentum == 0.99
    swap.swap_out()
    for weight, r in zip(net.weights, raw):
        np.testing.assert_array_equal(weight.numpy(), r)


@pytest.mark.parametrize("data", ["phantom", "real"])
def test_context_run_trains_validates_and_exports_a_nine_channel_model(data, packed_phantom, request, tmp_path):
    from tfseg.training.loop import train

    source = str(packed_phantom) if data == "phantom" else request.getfixturevalue("real_data_dir")
    run_dir = tmp_path / "ctx"
    train(TrainConfig(data=source, tfrecords=str(tmp_path / "tfr"), logdir=str(run_dir), context=3, **SMALL))
    model = keras.models.load_model(run_dir / "best.keras", compile=False)
    assert model.inputs[0].shape[1:] == (64, 64, 9)
    import tensorflow as tf

    served = tf.saved_model.load(str(run_dir / "export"))
    assert {"serving_default", "segment_volume"} <= set(served.signatures)


def test_mixed_float16_checkpoints_hold_the_loss_scale_so_resume_is_exact():
    import tensorflow as tf

    keras.mixed_precision.set_global_policy("mixed_float16")
    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    net.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    optimizer = net.optimizer
    optimizer.build(net.trainable_variables)
    optimizer.dynamic_scale.assign(1234.0)
    optimizer.step_counter.assign(7)
    path = tf.train.Checkpoint(optimizer=optimizer).write(str(Path(__import__("tempfile").mkdtemp()) / "ck"))
    optimizer.dynamic_scale.assign(1.0)
    optimizer.step_counter.assign(0)
    tf.train.Checkpoint(optimizer=optimizer).read(path).assert_existing_objects_matched()
    assert float(optimizer.dynamic_scale.numpy()) == 1234.0 and int(optimizer.step_counter.numpy()) == 7


@pytest.mark.parametrize("flags, expected", [
    ({"--aug-noise": "0.1", "--aug-sequence-dropout": "0.3"}, {"noise": 0.1, "sequence_dropout": 0.3}),  # robustness
    ({"--aug-blur": "0.2", "--aug-low-resolution": "0.25"}, {"blur": 0.2, "low_resolution": 0.25}),  # nnU-Net's
])
def test_augmentation_flags_reach_the_config_and_the_recorded_command(flags, expected):
    from tfseg.training.loop import _flags

    config, _, _ = config_from_args([word for pair in flags.items() for word in pair])
    assert {key: config.augment[key] for key in expected} == expected
    command = _flags(config)
    assert all(f"{flag} {value}" in command for flag, value in flags.items())
    assert config_from_args(command.split())[0].augment == config.augment


def test_an_out_of_range_augmentation_flag_is_rejected_naming_it(capsys):
    with pytest.raises(SystemExit):
        config_from_args(["--aug-sequence-dropout", "1.5"])
    assert "sequence_dropout" in capsys.readouterr().err


def test_kill_9_in_epoch_3_then_resume_gives_the_uninterrupted_validation_dsc_at_every_epoch(packed_phantom, tmp_path):
    """A real SIGKILL (the process kills itself at the first batch of epoch 3, after epoch 2's checkpoint),
    then --resume in a fresh process: the same per-epoch validation DSC and loss as a 3-epoch run in one go."""
    import signal

    base = dict(data=str(packed_phantom), image_size=64, base_filters=4, batch_size=4, val_cases=1,
                precision="float32", seed=3, epochs=3)
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os, signal, tensorflow as tf
        tf.config.experimental.enable_op_determinism()
        from tfseg.training import callbacks as cb
        from tfseg.training.config import TrainConfig
        from tfseg.training.loop import train
        step = cb.NonFiniteGuard.on_train_batch_end
        def die_in_epoch_3(self, batch, logs=None):
            step(self, batch, logs)
            if self.epoch == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        cb.NonFiniteGuard.on_train_batch_end = die_in_epoch_3
        train(TrainConfig(logdir={str(tmp_path / 'part')!r}, **{base!r}), export=False)
    """)], cwd=ROOT, capture_output=True, text=True, timeout=300, env={**__import__("os").environ,
                                                                       "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert json.loads((tmp_path / "part" / "state.json").read_text())["epoch"] == 2
    run_python(f"""
        import tensorflow as tf
        tf.config.experimental.enable_op_determinism()
        from tfseg.training.config import TrainConfig
        from tfseg.training.loop import train
        train(TrainConfig(), resume={str(tmp_path / 'part')!r}, export=False)
        train(TrainConfig(logdir={str(tmp_path / 'full')!r}, **{base!r}), export=False)
    """)
    full, part = (json.loads((tmp_path / r / "state.json").read_text())["history"] for r in ("full", "part"))
    assert [h["val_volume_dsc"] for h in part] == [h["val_volume_dsc"] for h in full]
    assert [h["loss"] for h in part] == pytest.approx([h["loss"] for h in full], rel=1e-6)
    assert sorted(p.name for p in (tmp_path / "part" / "checkpoints").iterdir()) == \
        sorted(p.name for p in (tmp_path / "full" / "checkpoints").iterdir())  # nothing of the killed epoch 3 left
