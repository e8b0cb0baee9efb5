"""train.py / tfseg.training: end-to-end runs, resume, export, distribution, failures."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from tfseg.data.pack import pack
from tfseg.training.config import TrainConfig, config_from_args
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
        from tfseg.data.augment import Augment
        from tfseg.models import build_model
        from tfseg.training.loop import AugmentedTrainer
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


def test_missing_data_folder_prints_the_kaggle_download_steps(tmp_path, capsys):
    sys.path.insert(0, str(ROOT))
    import train

    assert train.main(["--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "mateuszbuda/lgg-mri-segmentation" in err and "nowhere" in err


def test_preset_sets_protocol_values_and_explicit_flags_win():
    config, resume, overrides = config_from_args(["--preset", "cpu-128", "--epochs", "3"])
    assert (config.image_size, config.batch_size, config.time_budget_minutes) == (128, 16, 60.0)
    assert config.epochs == 3 and overrides == {"epochs": 3} and resume is None
    reference, _, _ = config_from_args(["--preset", "reference"])
    assert (reference.image_size, reference.epochs, reference.batch_size, reference.lr) == (256, 100, 16, 1e-4)


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
