"""Damaged files as users' machines make them (truncated by a full disk or a killed copy): an error that names
the file and what to do, and the file left exactly as it was."""
import dataclasses
import json

import pytest

from tfseg.cli import train as train_cli
from tfseg.inference import ModelLoadError, load_model
from tfseg.models import build_model
from tfseg.runs import CHECKPOINTS, CONFIG, LOCK, STATE
from tfseg.training.config import TrainConfig


def truncate(path, keep: float = 0.5) -> bytes:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path.read_bytes()


def test_a_truncated_keras_file_is_called_damaged_not_missing_and_is_left_as_it_is(tmp_path):
    path = tmp_path / "best.keras"
    build_model("unet", (32, 32, 3), base_filters=4).save(path)
    damaged = truncate(path)
    with pytest.raises(ModelLoadError, match=r"best.keras is damaged: not a complete .keras archive \(\d+ bytes"):
        load_model(path)
    assert path.read_bytes() == damaged


def run_folder(tmp_path):
    run = tmp_path / "run"
    (run / CHECKPOINTS).mkdir(parents=True)
    (run / CONFIG).write_text(json.dumps({"config": dataclasses.asdict(TrainConfig(data=str(tmp_path)))}))
    (run / STATE).write_text(json.dumps({"epoch": 3, "checkpoint": "checkpoints/epoch-3", "history": []}))
    (run / CHECKPOINTS / "epoch-3.index").write_bytes(b"index")
    return run


def test_resume_with_a_truncated_state_json_refuses_naming_it_and_the_kept_checkpoints(tmp_path, capsys):
    run = run_folder(tmp_path)
    damaged = truncate(run / STATE)
    assert train_cli.main(["--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run / STATE} is damaged: not complete JSON" in err and "kept: epoch-3" in err
    assert err.count("\n") == 1
    assert (run / STATE).read_bytes() == damaged and not (run / LOCK).exists()


def test_resume_with_a_config_json_that_is_not_an_object_refuses_naming_it(tmp_path, capsys):
    run = run_folder(tmp_path)
    (run / CONFIG).write_text("[1, 2]")
    assert train_cli.main(["--resume", str(run)]) == 2
    assert f"{run / CONFIG} is damaged: a JSON list, not an object" in capsys.readouterr().err
