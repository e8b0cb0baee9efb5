"""The reference program's runner (benchmarks/reference_program/run.py): its records read as tfseg runs."""
import json
import sys

import pytest

from benchmarks.reference_program import run as runner
from tfseg.runs import load_run
from tfseg.seed_groups import describe_group, seed_groups

PATIENTS = ["TCGA_A", "TCGA_B", "TCGA_C", "TCGA_D", "TCGA_E"]


def epoch_record(epoch: int, dsc_by_patient: list[float]) -> dict:
    return {"epoch": epoch, "train_seconds": 100.0, "valid_seconds": 10.0, "images_seen": epoch * 3328,
            "val_dsc": sum(dsc_by_patient) / len(dsc_by_patient),
            "val_dsc_by_patient": dict(zip(PATIENTS, dsc_by_patient))}


def write_records(workdir, run: int, lines: list[str]) -> None:
    logs = workdir / f"run-{run}" / "logs"
    logs.mkdir(parents=True)
    (logs / runner.EPOCH_RECORDS).write_text("".join(line + "\n" for line in lines))


def collect(tmp_path, run: int, epochs: list[dict], extra_lines=()):
    lines = [json.dumps({"startup_seconds": 420.0})] + [json.dumps(e) for e in epochs] + list(extra_lines)
    write_records(tmp_path / "work", run, lines)
    args = runner.parse_args(["--reference-dir", "unused", "--reference-python", sys.executable, "--data", "kaggle_3m",
                              "--run", str(run), "--workdir", str(tmp_path / "work"),
                              "--results", str(tmp_path / "results"), "--collect-only"])
    return runner.collect(args, runner.program_command(args))


def test_collected_run_reads_as_a_tfseg_run_with_the_best_epochs_patients(tmp_path):
    out = collect(tmp_path, 1, [epoch_record(1, [0.5] * 5), epoch_record(2, [0.9, 0.8, 0.7, 0.6, 0.5]),
                                epoch_record(3, [0.6] * 5)])
    run = load_run(out)
    assert run.score("mean_dsc") == pytest.approx(0.7)  # epoch 2, the one whose weights the program kept
    assert run.metric("best_epoch") == 2 and run.metric("epochs") == 3
    assert run.dsc_by_patient()["TCGA_A"] == pytest.approx(0.9)
    assert [row["train_seconds"] for row in run.history] == [100.0, 200.0, 300.0]  # cumulative, as tfseg's
    assert run.config_file["startup_seconds"] == 420.0
    assert set(run.config_file["patches"]) == {p.name for p in runner.patches()}
    assert run.metric("images_per_second") == pytest.approx(3 * 3328 / 300.0)


def test_a_resumed_epoch_recorded_twice_keeps_its_last_record_and_a_torn_last_line_is_skipped(tmp_path):
    first, again = epoch_record(1, [0.1] * 5), epoch_record(1, [0.3] * 5)
    out = collect(tmp_path, 1, [first, again], extra_lines=['{"epoch": 2, "train_sec'])
    run = load_run(out)
    assert run.metric("epochs") == 1
    assert run.score("mean_dsc") == pytest.approx(0.3)


def test_a_damaged_line_before_the_last_is_an_error_naming_the_file(tmp_path):
    write_records(tmp_path / "work", 1, ["not json", json.dumps(epoch_record(1, [0.5] * 5))])
    with pytest.raises(runner.ReferenceRunError, match="epochs.jsonl, line 1"):
        runner.read_records(tmp_path / "work" / "run-1" / "logs" / runner.EPOCH_RECORDS)


def test_three_runs_form_one_seed_group(tmp_path):
    for k, value in enumerate([0.88, 0.89, 0.90], 1):
        collect(tmp_path, k, [epoch_record(1, [value] * 5)])
    groups = seed_groups([load_run(tmp_path / "results" / f"run-{k}") for k in (1, 2, 3)])
    assert len(groups) == 1
    described = describe_group(groups[0])
    assert described["mean"] == pytest.approx(0.89) and described["sd"] == pytest.approx(0.01)


def test_a_folder_that_is_not_the_program_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(runner.ReferenceRunError, match="not a checkout of mateuszbuda/brain-segmentation-pytorch"):
        runner.apply_patches(tmp_path)


def test_no_epoch_yet_is_an_error_naming_the_records_file(tmp_path):
    with pytest.raises(runner.ReferenceRunError, match="has not finished an epoch"):
        runner.read_records(tmp_path / "epochs.jsonl")
