"""Damaged run files, made for real (the files of a tiny real run and a real pack, cut short or changed): an
error naming the file, what is damaged and what to do (exit code 2), the file left exactly as it was, and
nothing half-written; resume falls back to an older checkpoint only when it is proved consistent."""
import json
import shutil

import pytest

from tfseg import runs
from tfseg.cli import report as report_cli
from tfseg.cli import train as train_cli
from tfseg.data.kaggle import DataError
from tfseg.data.pipeline import load_slices
from tfseg.data.records import MANIFEST
from tfseg.fileio import TMP_MARK
from tfseg.training.config import TrainConfig
from tfseg.training.resume import DAMAGED


def truncate(path, keep: float = 0.5) -> bytes:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path.read_bytes()


def snapshot(folder) -> dict:
    """{relative path: bytes} of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def half_written(folder) -> list[str]:
    return [p.name for p in folder.rglob("*") if TMP_MARK in p.name or "_temp" in p.name]


@pytest.fixture(scope="module")
def trained_run(packed_phantom_dir, tmp_path_factory):
    """A finished 2-epoch run on the phantom (checkpoints epoch-1 and epoch-2 kept); read-only: copy it."""
    from tfseg.training.loop import train

    run = tmp_path_factory.mktemp("trained") / "run"
    train(TrainConfig(data=str(packed_phantom_dir), logdir=str(run), image_size=64, base_filters=4, batch_size=4,
                      epochs=2, val_cases=1, precision="float32", image_every=1), export=False)
    return run


@pytest.fixture
def run(trained_run, tmp_path):
    return shutil.copytree(trained_run, tmp_path / "run")


@pytest.fixture
def packed_copy(packed_phantom_dir, tmp_path):
    return shutil.copytree(packed_phantom_dir, tmp_path / "tfrecords")


def test_a_finished_run_keeps_the_checkpoints_of_its_last_two_epochs(trained_run):
    names = sorted(p.name.split(".")[0] for p in (trained_run / runs.CHECKPOINTS).iterdir())
    assert sorted(set(names)) == ["epoch-1", "epoch-2"]


# ---------------------------------------------------------------- metrics.json, history.csv and the report


@pytest.mark.parametrize("damage, what", [
    (lambda p: truncate(p), "not complete JSON"),
    (lambda p: p.write_text("[0.5]\n"), "a JSON list, not an object"),
    (lambda p: p.write_text('{"best_epoch": 2}\n'), "no 'best_val_volume_dsc', 'epochs' (a JSON object with 1 key)"),
])
def test_a_damaged_metrics_json_is_an_error_naming_it_and_what_is_damaged(run, damage, what):
    path = run / runs.METRICS
    damage(path)
    before = path.read_bytes()
    with pytest.raises(runs.DamagedRunFileError) as info:
        runs.load_run(run)
    assert str(info.value).startswith(f"{path} is damaged: {what}") and "It is left as it is" in str(info.value)
    assert info.value.path == path and path.read_bytes() == before


@pytest.mark.parametrize("damage, what", [
    (lambda p: truncate(p, 0.8), "its last line is cut short"),
    (lambda p: p.write_text("step,dsc\n1,0.5\n"), "its header 'step,dsc' lacks epoch, val_volume_dsc"),
    (lambda p: p.write_text(p.read_text().replace("\n2,", "\n2,0.1,", 1)), "line 3 has 11 cells, the header 10"),
    (lambda p: p.write_bytes(b"\xff\xfe\x00garbage"), "not text"),
])
def test_a_damaged_history_csv_is_an_error_naming_it_and_what_is_damaged(run, damage, what):
    path = run / runs.HISTORY
    damage(path)
    before = path.read_bytes()
    with pytest.raises(runs.DamagedRunFileError, match="is damaged") as info:
        runs.read_history_csv(path)
    assert str(info.value).startswith(f"{path} is damaged: {what}")
    assert path.read_bytes() == before


def test_the_report_skips_a_run_with_a_damaged_file_with_a_warning_naming_it(run, trained_run, tmp_path, capsys):
    damaged = truncate(run / runs.HISTORY, 0.8)
    out = tmp_path / "report" / "REPORT.md"
    assert report_cli.main([str(trained_run), str(run), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"warning: run {run} skipped: {run / runs.HISTORY} is damaged: its last line is cut short" in err
    text = out.read_text()
    assert "from 1 run(s)" in text and "Skipped: `run`, a damaged file:" in text
    assert (run / runs.HISTORY).read_bytes() == damaged and not half_written(out.parent)


def test_a_report_of_only_damaged_runs_exits_2_naming_the_file_and_writes_nothing(run, tmp_path, capsys):
    damaged = truncate(run / runs.METRICS)
    out = tmp_path / "report" / "REPORT.md"
    assert report_cli.main([str(run), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "every run has a damaged file" in err and f"{run / runs.METRICS} is damaged: not complete JSON" in err
    assert not out.exists() and (run / runs.METRICS).read_bytes() == damaged


# ---------------------------------------------------------------- manifest.json


@pytest.mark.parametrize("damage, what", [
    (lambda p: truncate(p), "not complete JSON"),
    (lambda p: p.write_text('"patients"'), "a JSON str, not an object"),
    (lambda p: p.write_text(json.dumps({k: v for k, v in json.loads(p.read_text()).items() if k != "patients"})),
     "no 'patients'"),
    (lambda p: p.write_text(p.read_text().replace('"sha256"', '"sha"', 1)), "patient TCGA_PH_0001_20000101 has no sha256"),
])
def test_a_damaged_manifest_is_a_data_error_naming_it_and_asking_for_a_new_pack(packed_copy, damage, what):
    path = packed_copy / MANIFEST
    damage(path)
    before = path.read_bytes()
    with pytest.raises(DataError) as info:
        load_slices(packed_copy)
    assert str(info.value).startswith(f"{path} is damaged: {what}")
    assert "It is left as it is; pack again with `tfseg pack" in str(info.value)
    assert path.read_bytes() == before


def test_training_on_a_truncated_manifest_exits_2_with_one_line_and_writes_no_run(packed_copy, tmp_path, capsys):
    damaged = truncate(packed_copy / MANIFEST)
    logdir = tmp_path / "new-run"
    assert train_cli.main(["--data", str(packed_copy), "--logdir", str(logdir), "--image-size", "64"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert f"{packed_copy / MANIFEST} is damaged: not complete JSON" in err
    assert (packed_copy / MANIFEST).read_bytes() == damaged and not half_written(packed_copy)
    assert not any(logdir.rglob("*")) if logdir.exists() else True


# ---------------------------------------------------------------- checkpoints and --resume


def test_resume_with_the_last_checkpoint_cut_short_falls_back_to_the_previous_one_and_trains_it_again(run, capsys):
    from tfseg.training.loop import train

    data = run / runs.CHECKPOINTS / "epoch-2.data-00000-of-00001"
    damaged = truncate(data)
    index = (run / runs.CHECKPOINTS / "epoch-2.index").read_bytes()
    named = (run / runs.STATE).read_bytes()
    metrics = train(TrainConfig(), resume=run, export=False)
    out = capsys.readouterr().out
    assert "resume: checkpoint checkpoints/epoch-2 (epoch 2) is damaged, cannot be read back" in out
    assert "falling back to checkpoints/epoch-1, the newest intact checkpoint" in out and "Epochs 2..2" in out
    aside = run / DAMAGED / "epoch-2"
    assert (aside / data.name).read_bytes() == damaged and (aside / "epoch-2.index").read_bytes() == index
    assert (aside / runs.STATE).read_bytes() == named
    state = json.loads((run / runs.STATE).read_text())
    assert state["epoch"] == 2 == metrics["epochs"] and len(state["history"]) == 2
    assert [row["images_seen"] for row in state["history"]] == [28, 56]
    assert len(runs.read_history_csv(run / runs.HISTORY)) == 2 and not half_written(run)


def test_resume_refuses_when_no_older_checkpoint_is_intact_listing_what_it_found(run, capsys):
    for name in ("epoch-2.data-00000-of-00001", "epoch-1.index"):
        truncate(run / runs.CHECKPOINTS / name)
    before = snapshot(run)
    assert train_cli.main(["--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "the checkpoint state.json names (checkpoints/epoch-2, epoch 2) is damaged" in err
    assert "no older intact checkpoint" in err and "Found: epoch-2 (damaged" in err and ", epoch-1 (damaged" in err
    assert "Nothing was changed" in err and snapshot(run) == before


def test_resume_refuses_an_older_checkpoint_whose_step_count_disagrees_with_state_json(run, capsys):
    truncate(run / runs.CHECKPOINTS / "epoch-2.index")
    state = json.loads((run / runs.STATE).read_text())
    state["history"][0]["images_seen"] = 40  # not what epoch-1 was trained on
    (run / runs.STATE).write_text(json.dumps(state))
    before = snapshot(run)
    assert train_cli.main(["--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "epoch-1 holds 7 steps of 4 images, state.json's history row 1 40 images" in err and "Found: " in err
    assert snapshot(run) == before


def test_resume_of_a_finished_run_keeps_a_damaged_history_csv_aside_and_writes_a_new_one(run, capsys):
    from tfseg.training.loop import train

    damaged = truncate(run / runs.HISTORY, 0.8)
    train(TrainConfig(), resume=run, export=False)
    out = capsys.readouterr().out
    aside = run / DAMAGED / runs.HISTORY
    assert "history.csv was damaged (its last line is cut short" in out and f"kept unchanged as {aside}" in out
    assert aside.read_bytes() == damaged and len(runs.read_history_csv(run / runs.HISTORY)) == 2


def test_loading_the_model_of_a_run_with_a_truncated_config_json_names_it(run):
    from tfseg.inference import load_model

    damaged = truncate(run / runs.CONFIG)
    with pytest.raises(runs.DamagedRunFileError, match=f"{run / runs.CONFIG} is damaged: not complete JSON"):
        load_model(run / runs.BEST_MODEL)
    assert (run / runs.CONFIG).read_bytes() == damaged
