"""The report's reference-program section (issue 21): the program's runs, as its runner writes them, against
a tfseg recipe's seed group, and time to accuracy for runs timed on the same machine."""
import json
import sys

import pytest

from benchmarks.reference_program import run as runner
from tfseg import report
from tfseg.cli import report as report_cli
from tfseg.report_reference import ReferenceComparisonError

PATIENTS = ["TCGA_A", "TCGA_B", "TCGA_C", "TCGA_D", "TCGA_E", "TCGA_F"]
MACHINE = {"cpu": "AMD EPYC", "cpu_bf16": True, "cpu_count": 2, "platform": "Linux-test-vm-1"}


def program_run(tmp_path, k: int, dsc_by_epoch: list[float], shift: float = 0.0, epochs_planned: int = 12) -> None:
    """The program's run k through its runner's own collect(): per epoch 100 s training and 10 s validation,
    each patient at the epoch's mean + a patient offset + ``shift``."""
    offsets = [-0.05, -0.03, -0.01, 0.01, 0.03, 0.05]
    lines = [json.dumps({"startup_seconds": 400.0})]
    for epoch, mean in enumerate(dsc_by_epoch, 1):
        per_patient = {p: mean + o + shift for p, o in zip(PATIENTS, offsets)}
        lines.append(json.dumps({"epoch": epoch, "train_seconds": 100.0, "valid_seconds": 10.0,
                                 "images_seen": epoch * 3328, "val_dsc": sum(per_patient.values()) / 6,
                                 "val_dsc_by_patient": per_patient}))
    logs = tmp_path / "work" / f"run-{k}" / "logs"
    logs.mkdir(parents=True)
    (logs / runner.EPOCH_RECORDS).write_text("\n".join(lines) + "\n")
    args = runner.parse_args(["--reference-dir", "unused", "--reference-python", sys.executable, "--data", "kaggle_3m",
                              "--run", str(k), "--workdir", str(tmp_path / "work"),
                              "--results", str(tmp_path / "results" / "reference-program"), "--collect-only"])
    out = runner.collect(args, runner.program_command(args))
    config = json.loads((out / "config.json").read_text())
    config["machine"] = {**config["machine"], **MACHINE}
    config["finished"] = len(dsc_by_epoch) == epochs_planned
    (out / "config.json").write_text(json.dumps(config))


def tfseg_run(tmp_path, name: str, seed: int, dsc_by_patient: dict, dsc_by_epoch: list[float],
              machine: dict = MACHINE) -> None:
    """A flat tfseg results folder: evaluation per patient, history with cumulative wall seconds (60 s/epoch)."""
    run = tmp_path / "results" / "cpu-128" / name
    run.mkdir(parents=True)
    settings = {"arch": "attention_unet", "loss": "dice", "optimizer": "adam", "lr": 1e-3, "schedule": "onecycle",
                "image_size": 128, "base_filters": 16, "epochs": 12, "seed": seed}
    (run / "config.json").write_text(json.dumps({"config": settings, "machine": machine, "command": "x"}))
    values = list(dsc_by_patient.values())
    (run / "metrics.json").write_text(json.dumps({"best_val_volume_dsc": max(dsc_by_epoch), "epochs": 12,
                                                  "train_seconds": 60.0 * len(dsc_by_epoch)}))
    (run / "summary.json").write_text(json.dumps({"mean_dsc": sum(values) / len(values), "median_dsc": 0.9}))
    (run / "per_patient.csv").write_text("patient,dsc_pre,dsc_native\n" + "".join(
        f"{p},{v},{v}\n" for p, v in dsc_by_patient.items()))
    (run / "history.csv").write_text("epoch,val_volume_dsc,train_seconds,images_seen\n" + "".join(
        f"{e},{d},{60.0 * e},{3328 * e}\n" for e, d in enumerate(dsc_by_epoch, 1)))


PROGRAM_CURVE = [0.5, 0.7, 0.8, 0.85, 0.88, 0.89]  # final 0.89: reached at epoch 6 after 6 x 110 s = 11.0 min
TFSEG_CURVE = [0.6, 0.8, 0.9, 0.91, 0.92, 0.92]    # 0.89 first reached at epoch 3: 3 min


def build(tmp_path, recipe_shift: float, program_shifts=(0.0, 0.01, -0.01), pairs=(), extra=()) -> str:
    for k, shift in enumerate(program_shifts, 1):
        program_run(tmp_path, k, PROGRAM_CURVE, shift=shift, epochs_planned=len(PROGRAM_CURVE))
    program_mean = {p: 0.89 + o for p, o in zip(PATIENTS, [-0.05, -0.03, -0.01, 0.01, 0.03, 0.05])}
    for seed, spread in ((42, 0.0), (43, 0.005), (44, -0.005)):
        name = "b16-attention" if seed == 42 else f"b16-attention-s{seed}"
        tfseg_run(tmp_path, name, seed, {p: v + recipe_shift + spread for p, v in program_mean.items()}, TFSEG_CURVE)
    runs = sorted((tmp_path / "results").glob("*/*"))
    output = tmp_path / "REPORT.md"
    report.build_report(runs, output, recommended="b16-attention", time_pairs=list(pairs), time_runs=list(extra))
    return output.read_text()


def section(text: str) -> str:
    return text.split("## The reference program against tfseg")[1].split("\n## ")[0]


def test_a_recipe_ahead_by_more_than_both_spreads_is_said_to_beat_the_program(tmp_path):
    text = section(build(tmp_path, recipe_shift=0.03))
    assert "**Verdict: tfseg's recommended recipe beats the reference program beyond both groups' spread.**" in text
    # each patient +0.03 (both groups' per-run shifts average out); seed-means 0.92 vs 0.89, spread 0.005 + 0.01
    assert "mean difference +0.0300 over 6 patients, 6 better and 0 worse" in text
    assert "Difference of the seed-means +0.0300" in text and "the sum of the two sds, 0.0150" in text
    assert "paired Wilcoxon signed-rank p = 0.031" in text  # 6 equal positive differences: the exact two-sided p
    assert "| `TCGA_A` | 0.8400 | 0.8700 | +0.0300 |" in text
    assert "0.8900 ± 0.0100" in text and "0.9200 ± 0.0050" in text


def test_a_difference_inside_the_spread_is_said_plainly_not_to_beat_it(tmp_path):
    text = section(build(tmp_path, recipe_shift=0.005, program_shifts=(0.0, 0.03, -0.03)))
    assert "**Verdict: tfseg's recommended recipe does not beat the reference program beyond both groups' spread.**" in text
    assert "which does not exceed the spread" in text


def test_an_unfinished_program_run_is_listed_apart_and_not_counted(tmp_path):
    program_run(tmp_path, 4, PROGRAM_CURVE[:2], epochs_planned=12)
    text = section(build(tmp_path, recipe_shift=0.03))
    assert "In progress, not counted: `run-4` (2 of 12 epochs)." in text
    assert "`run-1`, `run-2`, `run-3`" in text and "`run-4`, " not in text


def test_time_to_accuracy_of_a_pair_timed_on_one_machine_gives_minutes_and_their_ratio(tmp_path):
    text = section(build(tmp_path, recipe_shift=0.03, pairs=[("b16-attention", "run-1")]))
    row = [line for line in text.splitlines() if line.startswith("| `b16-attention` | `run-1`")]
    # target: run-1's final 0.89, also its best; tfseg reaches it at epoch 3 (3.0 min), the program at epoch 6
    assert row == ["| `b16-attention` | `run-1` | 0.8900 (final and best epoch) | 3.0 min (epoch 3) | "
                   "11.0 min (epoch 6) | 3.7× | AMD EPYC (bf16) |"]


def test_a_program_run_that_falls_at_the_end_is_timed_to_its_final_and_to_its_best_figure(tmp_path):
    program_run(tmp_path, 4, [0.5, 0.7, 0.9, 0.8], epochs_planned=4)  # best 0.9 at epoch 3, final 0.8
    text = section(build(tmp_path, recipe_shift=0.03, pairs=[("b16-attention", "run-4")]))
    rows = [line for line in text.splitlines() if line.startswith("| `b16-attention` | `run-4`")]
    # tfseg (TFSEG_CURVE): 0.8 at epoch 2, 0.9 at epoch 3; the program: 0.8 and 0.9 both at epoch 3 (3 x 110 s)
    assert rows == ["| `b16-attention` | `run-4` | 0.8000 (final epoch) | 2.0 min (epoch 2) | 5.5 min (epoch 3) | "
                    "2.8× | AMD EPYC (bf16) |",
                    "| `b16-attention` | `run-4` | 0.9000 (best, epoch 3: the figure it reports) | 3.0 min (epoch 3) | "
                    "5.5 min (epoch 3) | 1.8× | AMD EPYC (bf16) |"]


def test_a_timing_run_outside_the_tables_is_used_for_the_pair_only(tmp_path):
    extra = tmp_path / "timing" / "b16-attention-timed"
    tfseg_run(tmp_path / "timing-root", "b16-attention-timed", 42, {p: 0.9 for p in PATIENTS}, [0.95] * 6)
    (tmp_path / "timing").mkdir()
    (tmp_path / "timing-root" / "results" / "cpu-128" / "b16-attention-timed").rename(extra)
    full = build(tmp_path, recipe_shift=0.03, pairs=[("b16-attention-timed", "run-2")], extra=[extra])
    assert ("| `b16-attention-timed` | `run-2` | 0.9000 (final and best epoch) | 1.0 min (epoch 1) | 11.0 min (epoch 6) "
            "| 11.0× |") in full
    assert "b16-attention-timed" not in full.split("## Results")[1].split("## Settings")[0]  # not in the tables


def test_a_pair_from_two_machines_is_refused_naming_what_differs(tmp_path):
    tfseg_run(tmp_path, "b16-elsewhere", 42, {p: 0.9 for p in PATIENTS}, TFSEG_CURVE,
              machine={**MACHINE, "platform": "Linux-other-vm"})
    with pytest.raises(ReferenceComparisonError, match="record different machines .*platform: 'Linux-other-vm'"):
        build(tmp_path, recipe_shift=0.03, pairs=[("b16-elsewhere", "run-1")])


def test_the_command_line_takes_the_recommended_run_and_pairs(tmp_path, capsys):
    build(tmp_path, recipe_shift=0.03)
    runs = [str(p) for p in sorted((tmp_path / "results").glob("*/*"))]
    out = tmp_path / "CLI.md"
    assert report_cli.main([*runs, "-o", str(out), "--recommended", "b16-attention",
                            "--time-pair", "b16-attention", "run-3"]) == 0
    assert "**Verdict:" in out.read_text() and "| `b16-attention` | `run-3` |" in out.read_text()
    assert report_cli.main([*runs, "-o", str(out), "--recommended", "nope"]) == 2
    assert "--recommended nope: no run of that name" in capsys.readouterr().err
