"""The command line (tfseg.cli), the package's start-up, and the CPU time estimate of training."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tfseg import cli, startup
from tfseg.cli import reference
from tfseg.training.callbacks import TimeEstimate

ROOT = Path(__file__).resolve().parents[1]
TF_NOTICES = ("cuInit", "cuda drivers", "cpu_feature_guard", "absl::InitializeLog", "oneDNN custom operations")


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    """A fresh interpreter (outside the repository, so only the installed package is importable)."""
    import os

    environment = {k: v for k, v in os.environ.items() if k != startup.LOG_LEVEL_VARIABLE}
    environment.update(env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd="/", env=environment,
                          capture_output=True, text=True, timeout=300)


def test_every_command_is_listed_and_has_its_own_help(capsys):
    assert cli.main(["--help"]) == 0
    listing = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert f"  {name} " in listing
        with pytest.raises(SystemExit) as exit_info:
            cli.main([name, "--help"])
        assert exit_info.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: tfseg {name}")


def test_an_unknown_command_is_an_error_that_lists_the_commands(capsys):
    assert cli.main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'" in err and "train, evaluate" in err


def test_no_command_prints_the_usage_and_fails(capsys):
    assert cli.main([]) == 2
    assert "usage: tfseg" in capsys.readouterr().out


def test_an_expected_error_is_one_line_with_exit_code_2(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "nowhere"), "-o", str(tmp_path / "r.md")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "nowhere" in err


def test_the_console_script_python_m_tfseg_and_the_top_level_shims_answer_help():
    scripts = Path(sys.executable).parent
    for command in ([str(scripts / "tfseg"), "--help"], [sys.executable, "-m", "tfseg", "--help"],
                    [str(scripts / "tfseg"), "train", "--help"]):
        done = subprocess.run(command, cwd="/", capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and done.stdout.startswith("usage: tfseg"), (command, done.stderr)
    done = subprocess.run([sys.executable, "train.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("usage: python train.py")


def test_the_cli_reference_page_matches_the_commands():
    page = (ROOT / reference.DEFAULT_PAGE).read_text()
    assert page == reference.reference_markdown(), (
        "docs/reference/cli.md is out of date: run `python -m tfseg.cli.reference --write docs/reference/cli.md`")


def test_importing_tfseg_prints_no_tensorflow_notice():
    done = run_python("import tfseg, tensorflow as tf; tf.constant(1) + 1; print('ready')")
    assert done.returncode == 0 and done.stdout.strip() == "ready", done.stderr
    assert not [notice for notice in TF_NOTICES if notice in done.stderr], done.stderr


def test_a_child_process_that_inherits_tfsegs_log_level_is_quiet_too():
    # pack's workers and a cluster's workers inherit the variable tfseg set in their parent
    done = run_python("import tfseg, tensorflow as tf; tf.constant(1) + 1",
                      **{startup.LOG_LEVEL_VARIABLE: "2", startup.CHOSEN_BY_TFSEG: "1"})
    assert done.returncode == 0 and not [n for n in TF_NOTICES if n in done.stderr], done.stderr


def test_a_user_who_sets_the_log_level_gets_tensorflow_output_untouched():
    done = run_python("import tfseg, tensorflow as tf; tf.config.list_physical_devices()",
                      **{startup.LOG_LEVEL_VARIABLE: "0"})
    assert done.returncode == 0 and any(notice in done.stderr for notice in TF_NOTICES), done.stderr


def test_only_the_known_notices_are_filtered_from_captured_output():
    captured = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
                "E0000 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n"
                "E0000 some_kernel.cc:1] a real error\n")
    assert startup.without_notices(captured) == "E0000 some_kernel.cc:1] a real error\n"


def test_import_tfseg_is_cheap_and_registers_every_keras_object_whoever_imports_keras_first():
    done = run_python("""
        import sys, tfseg
        print("tensorflow" in sys.modules, "keras" in sys.modules)
        import tfseg.training.augment  # a tfseg module that imports Keras itself, half-way through its own import
        import keras
        names = ("FusedBatchNormalization", "DiceLoss", "DiceCoefficient", "PlannedSchedule", "AugmentedTrainer")
        print(all(keras.saving.get_registered_object("tfseg>" + name) is not None for name in names))
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "True"]


def test_import_tfseg_alone_makes_a_best_keras_loadable(tmp_path):
    from tfseg.models import build_model

    path = tmp_path / "best.keras"
    build_model("unet", (32, 32, 3), base_filters=4).save(path)
    done = run_python(f"""
        import tfseg, keras
        model = keras.models.load_model({str(path)!r})
        print(type(model).__name__, model.output_shape)
    """)
    assert done.returncode == 0, done.stderr
    assert "(None, 32, 32, 1)" in done.stdout


def fake_clock(times):
    values = iter(times)
    return lambda: next(values)


def test_time_estimate_times_steps_after_warm_up_and_points_a_long_cpu_run_to_the_cpu_preset():
    lines = []
    # steps 1-2 warm up (untimed), the clock starts at 100 s, 5 steps later it reads 110 s: 2 s per step
    estimate = TimeEstimate(steps_per_epoch=208, epochs=100, clock=fake_clock([100.0, 110.0]), write=lines.append)
    for step in range(10):
        estimate.on_train_batch_end(step)
    assert len(lines) == 1
    assert estimate.estimate == pytest.approx(2.0 * (100 * 208 - 7))
    assert "11.6 h more for 100 epochs of 208 steps (2.00 s per step" in lines[0]
    assert "--preset cpu-128" in lines[0]


def test_time_estimate_of_a_run_on_the_cpu_budget_gives_no_preset_hint():
    lines = []
    estimate = TimeEstimate(steps_per_epoch=208, epochs=12, start_epoch=2, preset="cpu-128",
                            clock=fake_clock([0.0, 5.0]), write=lines.append)
    for step in range(7):
        estimate.on_train_batch_end(step)
    assert estimate.estimate == pytest.approx(1.0 * (10 * 208 - 7))
    assert "35 min more for 10 epochs" in lines[0] and "--preset" not in lines[0]
