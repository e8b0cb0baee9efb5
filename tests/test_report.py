"""python -m tfseg.report: one row per run sorted by mean DSC, reproducing commands, figures that exist."""
import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest

from tfseg import report
from tfseg.data.pack import pack
from tfseg.runs import load_run
from tfseg.training.config import TrainConfig

TINY = dict(image_size=64, base_filters=8, batch_size=4, epochs=1, val_cases=2, precision="float32", image_every=1)


@pytest.fixture(scope="module")
def trained_runs(phantom_dir, tmp_path_factory):
    """Two 1-epoch phantom runs (unet seed 1, resunet seed 2); the first is also evaluated (RUN_DIR/eval)."""
    from tfseg.evaluation import evaluate_model
    from tfseg.training.loop import train

    root = tmp_path_factory.mktemp("report")
    packed = root / "tfr64"
    pack(phantom_dir, packed, image_size=64, progress=False)
    runs = []
    for arch, seed in (("unet", 1), ("resunet", 2)):
        run_dir = root / f"{arch}-seed{seed}"
        train(TrainConfig(data=str(packed), logdir=str(run_dir), arch=arch, seed=seed, **TINY), export=False)
        runs.append(run_dir)
    keras.mixed_precision.set_global_policy("float32")
    evaluate_model(runs[0], progress=False)  # data: the packed folder's kaggle_3m source
    return runs


def table(text: str, heading: str = "## Results") -> list[dict[str, str]]:
    """The rows of the Markdown table under ``heading``, as {column header: cell}."""
    after = text.split(heading + "\n", 1)[1].lstrip("\n")
    lines = []
    for line in after.splitlines():
        if not line.startswith("|"):
            break
        lines.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return [dict(zip(lines[0], row)) for row in lines[2:]]


def linked_images(text: str, report_path: Path) -> list[Path]:
    return [report_path.parent / link for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)]


def mean_dsc(run_dir: Path) -> float:
    summary = run_dir / "eval" / "summary.json"
    if summary.is_file():
        return json.loads(summary.read_text())["mean_dsc"]
    return json.loads((run_dir / "metrics.json").read_text())["best_val_volume_dsc"]


def test_report_of_two_trained_runs_lists_both_in_dsc_order_with_existing_figures(trained_runs, tmp_path):
    output = tmp_path / "reports" / "REPORT.md"
    assert report.main([str(r) for r in trained_runs] + ["-o", str(output)]) == 0
    text = output.read_text()
    rows = table(text)
    assert sorted(row["Run"].strip("`") for row in rows) == sorted(r.name for r in trained_runs)
    by_name = {r.name: r for r in trained_runs}
    listed = [mean_dsc(by_name[row["Run"].strip("`")]) for row in rows]
    assert listed == sorted(listed, reverse=True)
    evaluated = next(row for row in rows if row["Run"].strip("`") == trained_runs[0].name)
    assert evaluated["DSC from"] == "evaluate.py" and evaluated["Mean DSC (native)"] != report.DASH
    other = next(row for row in rows if row["Run"].strip("`") == trained_runs[1].name)
    assert other["DSC from"] == "training validation" and other["Mean DSC (native)"] == report.DASH
    settings = {row["Run"].strip("`"): row for row in table(text, "## Settings")}
    assert settings[trained_runs[1].name]["Architecture"] == "resunet"
    assert settings[trained_runs[1].name]["Context"] == "1" and settings[trained_runs[1].name]["EMA"] == "off"
    assert text.count("python train.py --arch") == 2
    images = linked_images(text, output)
    assert any("dsc_per_patient" in p.name for p in images)
    assert all(p.is_file() and p.parent == output.parent / "figures" for p in images), images


def _fake_run(root: Path, name: str, dsc: float | None, per_patient: dict | None = None, flat: bool = False,
              config: dict | None = None, extra: dict | None = None, history: list[dict] | None = None) -> Path:
    """A run folder with hand-written config/metrics (and an evaluation when ``per_patient`` is given).

    flat: the evaluation files beside config.json (a results folder) instead of in RUN_DIR/eval;
    config: settings on top of the defaults below; extra: top-level config.json keys (machine, code);
    history: rows of history.csv.
    """
    run = root / name
    run.mkdir(parents=True)
    settings = {"arch": "unet", "loss": "dice", "optimizer": "adamw", "lr": 3e-4, "weight_decay": 1e-4,
                "schedule": "cosine", "image_size": 128, "seed": 7, "epochs": 16, **(config or {})}
    (run / "config.json").write_text(json.dumps({"config": settings, "precision_policy": "mixed_bfloat16",
                                                 "command": f"python train.py --arch unet # {name}", **(extra or {})}))
    if dsc is not None:
        (run / "metrics.json").write_text(json.dumps({"best_val_volume_dsc": dsc, "val_volume_dsc_median": dsc,
                                                      "train_seconds": 1800.0, "images_per_second": 21.5,
                                                      "epochs": 16, "precision": "mixed_bfloat16"}))
    if history:
        columns = list(history[0])
        lines = [",".join(columns)] + [",".join(str(row[c]) for c in columns) for row in history]
        (run / "history.csv").write_text("\n".join(lines) + "\n")
    if per_patient:
        eval_dir = run if flat else run / "eval"
        (eval_dir / "overlays").mkdir(parents=True, exist_ok=True)
        values = list(per_patient.values())
        (eval_dir / "summary.json").write_text(json.dumps({
            "mean_dsc": float(np.mean(values)), "median_dsc": float(np.median(values)), "mean_dsc_native": 0.5,
            "median_dsc_native": 0.5, "mean_hd95_native": 4.25, "command": "python evaluate.py --model X"}))
        lines = ["patient,dsc_pre,dsc_native"] + [f"{p},{v},{v}" for p, v in per_patient.items()]
        (eval_dir / "per_patient.csv").write_text("\n".join(lines) + "\n")
        for patient in per_patient:
            (eval_dir / "overlays" / f"{patient}_montage.png").write_bytes(b"\x89PNG fake " + patient.encode())
    return run


def test_runs_are_sorted_by_mean_dsc_with_dashes_for_what_is_missing(tmp_path):
    runs = [_fake_run(tmp_path, "middle", 0.6), _fake_run(tmp_path, "unscored", None),
            _fake_run(tmp_path, "best", None, {"P_A": 0.95, "P_B": 0.65, "P_C": 0.8})]
    output = tmp_path / "out" / "cmp.md"
    report.build_report(runs, output)
    text = output.read_text()
    rows = table(text)
    assert [row["Run"] for row in rows] == ["`best`", "`middle`", "`unscored`"]
    best, middle, unscored = rows
    assert (best["Mean DSC"], best["Mean DSC (native)"], best["Mean HD95 (native, px)"], best["DSC from"]) == (
        "0.8000", "0.5000", "4.25", "evaluate.py")
    assert (middle["Mean DSC"], middle["Mean DSC (native)"], middle["DSC from"]) == (
        "0.6000", report.DASH, "training validation")
    assert middle["Training time"] == "30.0 min" and middle["Images/s"] == "21.5"
    assert table(text, "## Settings")[1]["Optimizer / schedule"] == "adamw lr 0.0003, wd 0.0001, cosine"
    assert unscored["Mean DSC"] == report.DASH and unscored["Training time"] == report.DASH
    # best / worst case of the best run: its montages copied next to the report
    figures = output.parent / "figures"
    assert (figures / "cmp_best_case_P_A.png").read_bytes().endswith(b"P_A")
    assert (figures / "cmp_worst_case_P_B.png").read_bytes().endswith(b"P_B")
    assert all(p.is_file() for p in linked_images(text, output))
    assert "python train.py --arch unet # middle" in text and "python evaluate.py --model X" in text


def test_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert report.main([str(tmp_path / "empty"), "-o", str(tmp_path / "r.md")]) == 2
    assert str(tmp_path / "empty") in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()


# ----------------------------------------------------------------------------
# Campaign reports: flat results folders, settings columns, time to accuracy, notes, baseline
# ----------------------------------------------------------------------------

PATIENTS = {"P_A": 0.95, "P_B": 0.65, "P_C": 0.8}
# A run of today's train.py: 12-epoch cpu-128 budget, machine with bf16 flag, code commit.
NEW_SETTINGS = dict(base_filters=16, context=3, ema=0.999, preset="cpu-128", epochs=12, time_budget_minutes=None)
NEW_RECORDS = {"machine": {"cpu": "Intel Xeon", "cpu_bf16": False, "cpu_count": 2, "gpus": []},
               "code": {"commit": "211bb6912faa7315598811f8d513f8873d86fb15", "dirty": True}}
# A run from before the campaign: the 60-minute cpu-128, no context/ema keys, no bf16 flag, no commit.
OLD_SETTINGS = dict(base_filters=32, preset="cpu-128", epochs=16, time_budget_minutes=60.0, precision="auto")
OLD_RECORDS = {"machine": {"cpu": "AMD EPYC", "cpu_count": 2, "gpus": []}}


def _history(epochs: int, timed: bool) -> list[dict]:
    """history.csv rows; ``timed`` adds today's cumulative train_seconds (100 s/epoch) and images_seen (1000/epoch)."""
    rows = []
    for e in range(1, epochs + 1):
        row = {"epoch": e, "loss": 1.0 / e, "dsc": 0.5, "val_volume_dsc": 0.5 + 0.03 * e,
               "val_volume_dsc_median": 0.5, "learning_rate": 3e-4}
        rows.append({**row, "train_seconds": 100.0 * e, "images_seen": 1000 * e} if timed else row)
    return rows


def test_a_flat_results_folder_is_read_like_a_live_run_folder(tmp_path):
    live = load_run(_fake_run(tmp_path / "runs", "unet", None, PATIENTS))
    flat = load_run(_fake_run(tmp_path / "results", "unet", None, PATIENTS, flat=True))
    assert live.eval_dir == live.path / "eval" and not live.flat
    assert flat.eval_dir == flat.path and flat.flat and flat.montages == flat.path / "overlays"
    for run in (live, flat):
        assert run.evaluated and run.dsc_by_patient() == PATIENTS and run.score("mean_dsc_native") == 0.5
    output = tmp_path / "out" / "flat.md"
    report.build_report([flat.path], output)
    assert table(output.read_text())[0]["DSC from"] == "evaluate.py"
    assert (output.parent / "figures" / "flat_worst_case_P_B.png").read_bytes().endswith(b"P_B")


def test_tables_show_context_ema_filters_cpu_budget_and_code_keyed_by_run(tmp_path):
    runs = [_fake_run(tmp_path, "unet-dice", 0.8, config=OLD_SETTINGS, extra=OLD_RECORDS),
            _fake_run(tmp_path, "b16-context3", 0.9, config=NEW_SETTINGS, extra=NEW_RECORDS)]
    output = tmp_path / "r.md"
    report.build_report(runs, output)
    results, settings = table(output.read_text()), table(output.read_text(), "## Settings")
    assert [r["Run"] for r in results] == [r["Run"] for r in settings] == ["`b16-context3`", "`unet-dice`"]
    assert [r["CPU"] for r in results] == ["Intel Xeon (no bf16)", "AMD EPYC (bf16)"]  # old: told by precision auto
    assert {"Mean DSC", "Mean HD95 (native, px)", "Training time", "Images/s"} <= set(results[0])
    new, old = settings
    assert (new["Base filters"], new["Context"], new["EMA"], new["Budget"], new["Code"]) == (
        "16", "3", "0.999", "cpu-128 (12 ep)", "211bb69+dirty")
    assert (old["Base filters"], old["Context"], old["EMA"], old["Budget"], old["Code"]) == (
        "32", "1", "off", "60 min wall clock (old)", report.DASH)


def test_time_to_accuracy_figure_draws_every_run_beside_the_reference_curve(tmp_path, monkeypatch):
    drawn = {}

    def spy(curves, reference=None, **kwargs):
        drawn.update(curves=curves, reference=reference)
        fig = chart(curves, reference, **kwargs)
        drawn["labels"] = [line.get_label() for line in fig.axes[0].get_lines()]
        return fig

    chart = report.time_to_accuracy_chart
    monkeypatch.setattr(report, "time_to_accuracy_chart", spy)
    runs = [_fake_run(tmp_path, "new", 0.9, config=NEW_SETTINGS, history=_history(3, timed=True)),
            _fake_run(tmp_path, "old", 0.8, config=OLD_SETTINGS, history=_history(2, timed=False))]
    output = tmp_path / "out" / "R.md"
    report.build_report(runs, output)
    png = output.parent / "figures" / "R_time_to_accuracy.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    text = output.read_text()
    assert "figures/R_time_to_accuracy.png" in text
    new, old = drawn["curves"]["new"], drawn["curves"]["old"]
    assert new["minutes"] == [100 / 60, 200 / 60, 300 / 60] and new["images"] == [1000, 2000, 3000]
    assert not new["estimated"] and new["dsc"] == pytest.approx([0.53, 0.56, 0.59])
    # no time columns: epoch × train_seconds / epochs (1800 s over 16 epochs) and epoch × 208 × 16
    assert old["estimated"] and old["minutes"] == pytest.approx([112.5 / 60, 225 / 60])
    assert old["images"] == [3328, 6656]
    ref = drawn["reference"]
    assert ref["dsc"] == list(report.REFERENCE_DSC_BY_EPOCH) and ref["minutes"][-1] == pytest.approx(44.6)
    assert ref["images"][-1] == 12 * 208 * 16 and "reference program (PROTOCOL.md)" in drawn["labels"]
    caption = text.split("## Time to accuracy", 1)[1].split("##", 1)[0]
    assert "(`old`)" in caption and "`new`" not in caption


def test_notes_are_inserted_verbatim_after_the_tables_and_survive_regeneration(tmp_path):
    notes = tmp_path / "NOTES.md"
    analysis = "## Analysis\n\nContext 3 gains *0.01* | not a table.\n\n- EMA: no gain\n"
    notes.write_text(analysis)
    run = _fake_run(tmp_path, "b16-context3", 0.9, config=NEW_SETTINGS, extra=NEW_RECORDS)
    output = tmp_path / "reports" / "REPORT.md"
    args = [str(run), "-o", str(output), "--title", "cpu-128 campaign", "--notes", str(notes)]
    assert report.main(args) == 0 and report.main(args) == 0  # regenerated: the notes come from their own file
    text = output.read_text()
    assert text.startswith("# cpu-128 campaign\n") and text.count(analysis) == 1
    assert text.index("## Settings") < text.index(analysis) < text.index("## Time to accuracy")


def test_a_missing_notes_file_or_notes_that_are_the_report_itself_is_an_error_naming_it(tmp_path, capsys):
    run = _fake_run(tmp_path, "a", 0.9)
    output = tmp_path / "REPORT.md"
    assert report.main([str(run), "-o", str(output), "--notes", str(tmp_path / "NOTES.md")]) == 2
    assert str(tmp_path / "NOTES.md") in capsys.readouterr().err and not output.exists()
    output.write_text("hand-written")
    assert report.main([str(run), "-o", str(output), "--notes", str(output)]) == 2
    assert "is the report itself" in capsys.readouterr().err and output.read_text() == "hand-written"


def test_baseline_figure_compares_the_best_run_with_the_reference_settings_run_and_the_reference_mean(
        tmp_path, monkeypatch, capsys):
    drawn = []

    def spy(by_run, lines=None, **kwargs):
        drawn.append((by_run, lines))
        return chart(by_run, lines, **kwargs)

    chart = report.dsc_patient_comparison
    monkeypatch.setattr(report, "dsc_patient_comparison", spy)
    runs = [_fake_run(tmp_path, "b16-cosine", None, PATIENTS, flat=True),
            _fake_run(tmp_path, "b16-reference-settings", None, {p: v - 0.1 for p, v in PATIENTS.items()}, flat=True),
            _fake_run(tmp_path, "b16-ema", None, {p: v - 0.05 for p, v in PATIENTS.items()}, flat=True)]
    output = tmp_path / "out" / "R.md"
    assert report.main([str(r) for r in runs] + ["-o", str(output)]) == 0
    by_run, lines = drawn[-1]
    assert list(by_run) == ["best: b16-cosine", "baseline: b16-reference-settings"]
    assert by_run["baseline: b16-reference-settings"]["P_A"] == pytest.approx(0.85)
    assert list(lines.values()) == [report.REFERENCE_MEAN_DSC] == [0.894]
    png = output.parent / "figures" / "R_best_vs_baseline.png"
    assert png.stat().st_size > 10_000 and "figures/R_best_vs_baseline.png" in output.read_text()
    assert report.main([str(r) for r in runs] + ["-o", str(output), "--baseline", "b16-ema"]) == 0
    assert list(drawn[-1][0]) == ["best: b16-cosine", "baseline: b16-ema"]
    assert report.main([str(r) for r in runs] + ["-o", str(output), "--baseline", "nosuch"]) == 2
    assert "b16-reference-settings" in capsys.readouterr().err  # the error lists the runs to choose from


def test_without_a_reference_settings_run_the_report_says_how_to_name_a_baseline(tmp_path):
    output = tmp_path / "R.md"
    report.build_report([_fake_run(tmp_path, "b16-cosine", None, PATIENTS, flat=True)], output)
    assert "--baseline NAME" in output.read_text()
    assert not (tmp_path / "figures" / "R_best_vs_baseline.png").exists()


SIX = {f"P_{c}": v for c, v in zip("ABCDEF", (0.9, 0.8, 0.85, 0.7, 0.95, 0.6))}


def _seed_runs(root: Path, name: str, lr: float, shifts: dict[int, float]) -> list[Path]:
    """One flat run per seed with the same settings; each seed's per-patient DSC is SIX shifted."""
    return [_fake_run(root, name if seed == 42 else f"{name}-s{seed}", None,
                      {p: v + shift for p, v in SIX.items()}, flat=True, config={"lr": lr, "seed": seed})
            for seed, shift in shifts.items()]


def test_seed_groups_give_mean_and_sd_and_a_paired_comparison_with_the_baseline_group(tmp_path):
    best = _seed_runs(tmp_path, "b16-onecycle", 1e-3, {42: 0.05, 43: 0.04, 44: 0.06})
    base = _seed_runs(tmp_path, "b16-reference-settings", 1e-4, {42: 0.0, 43: -0.01, 44: 0.01})
    single = _fake_run(tmp_path, "b16-other", None, SIX, flat=True, config={"lr": 5e-4})
    output = tmp_path / "R.md"
    report.build_report(best + base + [single], output)
    text = output.read_text()
    rows = table(text, "## Seed groups")
    assert [row["Seeds"] for row in rows] == ["42, 43, 44", "42, 43, 44"]  # the single run is no group
    mean = float(np.mean(list(SIX.values())))
    assert rows[0]["Runs"].startswith("`b16-onecycle`") and rows[1]["Runs"].startswith("`b16-reference-settings`")
    assert rows[0]["Mean ± sd"] == f"{mean + 0.05:.4f} ± 0.0100"
    assert rows[1]["Mean ± sd"] == f"{mean:.4f} ± 0.0100"
    assert rows[0]["Mean ± sd (native)"] == "0.5000 ± 0.0000"
    # every patient improves by exactly 0.05 (seed-averaged); 0.05 > 0.01 + 0.01
    assert "mean difference +0.0500" in text and "6 improved and 0 worsened" in text
    assert "+0.0500, exceeds the seeds' spread" in text and "0.0200" in text


def test_a_difference_within_the_seeds_spread_is_reported_as_such(tmp_path):
    best = _seed_runs(tmp_path, "b16-onecycle", 1e-3, {42: 0.08, 43: -0.05, 44: 0.03})
    base = _seed_runs(tmp_path, "b16-reference-settings", 1e-4, {42: 0.0, 43: -0.01, 44: 0.01})
    output = tmp_path / "R.md"
    report.build_report(best + base, output)
    assert "does not exceed the seeds' spread" in output.read_text()


def test_runs_from_before_a_setting_existed_group_with_runs_that_record_it_off(tmp_path):
    from tfseg.seed_groups import settings_key

    old = {"arch": "unet", "seed": 42, "augment": {"flip": 0.5}, "logdir": "runs/a"}
    new = {"arch": "unet", "seed": 43, "augment": {"flip": 0.5, "noise": 0.0}, "context": 1, "ema": None,
           "logdir": "runs/b"}
    assert settings_key(old) == settings_key(new)
    assert settings_key(old) != settings_key({**new, "augment": {"flip": 0.5, "noise": 0.1}})
    assert settings_key(old) != settings_key({**new, "context": 3})
