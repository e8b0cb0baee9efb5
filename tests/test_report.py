"""python -m tfseg.report: one row per run sorted by mean DSC, reproducing commands, figures that exist."""
import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest

from tfseg.cli import report as report_cli
from tfseg import report, report_studies
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
    assert report_cli.main([str(r) for r in trained_runs] + ["-o", str(output)]) == 0
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
    assert report_cli.main([str(tmp_path / "empty"), "-o", str(tmp_path / "r.md")]) == 2
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
    assert ref["images"][-1] == 12 * 208 * 16 and "reference program (docs/protocol.md)" in drawn["labels"]
    caption = text.split("## Time to accuracy", 1)[1].split("##", 1)[0]
    assert "(`old`)" in caption and "`new`" not in caption


def test_notes_are_inserted_verbatim_after_the_tables_and_survive_regeneration(tmp_path):
    notes = tmp_path / "NOTES.md"
    analysis = "## Analysis\n\nContext 3 gains *0.01* | not a table.\n\n- EMA: no gain\n"
    notes.write_text(analysis)
    run = _fake_run(tmp_path, "b16-context3", 0.9, config=NEW_SETTINGS, extra=NEW_RECORDS)
    output = tmp_path / "reports" / "REPORT.md"
    args = [str(run), "-o", str(output), "--title", "cpu-128 campaign", "--notes", str(notes)]
    assert report_cli.main(args) == 0 and report_cli.main(args) == 0  # regenerated: the notes come from their own file
    text = output.read_text()
    assert text.startswith("# cpu-128 campaign\n") and text.count(analysis) == 1
    assert text.index("## Settings") < text.index(analysis) < text.index("## Time to accuracy")


def test_a_missing_notes_file_or_notes_that_are_the_report_itself_is_an_error_naming_it(tmp_path, capsys):
    run = _fake_run(tmp_path, "a", 0.9)
    output = tmp_path / "REPORT.md"
    assert report_cli.main([str(run), "-o", str(output), "--notes", str(tmp_path / "NOTES.md")]) == 2
    assert str(tmp_path / "NOTES.md") in capsys.readouterr().err and not output.exists()
    output.write_text("hand-written")
    assert report_cli.main([str(run), "-o", str(output), "--notes", str(output)]) == 2
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
    assert report_cli.main([str(r) for r in runs] + ["-o", str(output)]) == 0
    by_run, lines = drawn[-1]
    assert list(by_run) == ["best: b16-cosine", "baseline: b16-reference-settings"]
    assert by_run["baseline: b16-reference-settings"]["P_A"] == pytest.approx(0.85)
    assert list(lines.values()) == [report.REFERENCE_MEAN_DSC] == [0.894]
    png = output.parent / "figures" / "R_best_vs_baseline.png"
    assert png.stat().st_size > 10_000 and "figures/R_best_vs_baseline.png" in output.read_text()
    assert report_cli.main([str(r) for r in runs] + ["-o", str(output), "--baseline", "b16-ema"]) == 0
    assert list(drawn[-1][0]) == ["best: b16-cosine", "baseline: b16-ema"]
    assert report_cli.main([str(r) for r in runs] + ["-o", str(output), "--baseline", "nosuch"]) == 2
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


def test_a_group_with_fewer_seeds_than_the_baselines_is_listed_but_not_the_one_compared(tmp_path):
    best = _seed_runs(tmp_path, "b16-onecycle", 1e-3, {42: 0.05, 43: 0.04, 44: 0.06})
    base = _seed_runs(tmp_path, "b16-reference-settings", 1e-4, {42: 0.0, 43: -0.01, 44: 0.01})
    pair = _seed_runs(tmp_path, "b16-pair", 3e-3, {42: 0.09, 43: 0.08})
    output = tmp_path / "R.md"
    report.build_report(best + base + pair, output)
    text = output.read_text()
    assert table(text, "## Seed groups")[0]["Runs"].startswith("`b16-pair`")  # the best mean, listed first
    assert "Best group with at least the baseline's 3 seeds (b16-onecycle" in text


def test_no_comparison_when_only_groups_with_fewer_seeds_beat_the_baseline(tmp_path):
    base = _seed_runs(tmp_path, "b16-reference-settings", 1e-4, {42: 0.0, 43: -0.01, 44: 0.01})
    pair = _seed_runs(tmp_path, "b16-pair", 3e-3, {42: 0.09, 43: 0.08})
    output = tmp_path / "R.md"
    report.build_report(base + pair, output)
    text = output.read_text()
    assert "No paired comparison: no group has as many seeds as the baseline's (3) and a better mean." in text
    assert "Best group with at least" not in text


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


# ----------------------------------------------------------------------------
# Cross-validation (--cv) and radiogenomics (--radiogenomics) sections
# ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_png(tmp_path_factory) -> Path:
    import matplotlib.pyplot as plt

    path = tmp_path_factory.mktemp("png") / "tiny.png"
    plt.imsave(path, np.arange(4.0).reshape(2, 2))
    return path


CV_PATIENTS = {"P_A": (0, 0.95), "P_B": (0, 0.60), "P_C": (0, 0.90), "P_D": (1, 0.70), "P_E": (1, 0.85),
               "P_F": (1, 0.99), "P_G": (1, 0.40)}
CV_TRAIN_CONFIG = {"arch": "attention_unet", "base_filters": 16, "loss": "dice", "lr": 1e-3, "schedule": "onecycle"}


def _fake_cv(root: Path, name: str, shift: float, png: Path | None, uncertainty: bool = False) -> Path:
    """A tfseg.cv folder over CV_PATIENTS (2 folds), every DSC + ``shift`` (native: a further -0.01)."""
    out = root / name
    out.mkdir(parents=True)
    rows = [{"patient": p, "fold": fold, "dsc_pre": dsc + shift, "dsc_native": dsc + shift - 0.01,
             "hd95_native": 3.5, **({"uncertainty": 1 - dsc} if uncertainty else {})}
            for p, (fold, dsc) in CV_PATIENTS.items()]
    (out / "per_patient.csv").write_text(
        "\n".join([",".join(rows[0])] + [",".join(str(v) for v in r.values()) for r in rows]) + "\n")

    def stats(key, fold=None):
        values = [r[key] for r in rows if fold is None or r["fold"] == fold]
        return {"mean": float(np.mean(values)), "median": float(np.median(values)), "n": len(values)}

    summary = {"patients": len(rows), "folds": 2, "pre": stats("dsc_pre"), "native": stats("dsc_native"),
               "pre_by_fold": {str(k): stats("dsc_pre", k) for k in (0, 1)},
               "native_by_fold": {str(k): stats("dsc_native", k) for k in (0, 1)}, "train_config": CV_TRAIN_CONFIG}
    if uncertainty:
        summary["uncertainty"] = {"views": "2 views", "spearman_rho_with_dsc": -0.75, "p_value": 0.05,
                                  "n_patients": len(rows), "check_first": ["P_G", "P_B"]}
    (out / "summary.json").write_text(json.dumps(summary))
    if png:
        (out / "dsc.png").write_bytes(png.read_bytes())
    return out


def test_cv_section_compares_each_folder_with_the_paper_and_says_whether_it_reaches_the_goal(tmp_path, tiny_png):
    # means: 0.7700 + shift; +0.13 -> 0.9000 (native 0.8900: reached in both), +0.0 -> 0.7700 (not reached)
    good = _fake_cv(tmp_path, "cv-good", 0.13, tiny_png, uncertainty=True)
    weak = _fake_cv(tmp_path, "cv-weak", 0.0, None)
    run = _fake_run(tmp_path, "b16", 0.9)
    output = tmp_path / "reports" / "R.md"
    assert report_cli.main([str(run), "-o", str(output), "--cv", str(good), "--cv", str(weak)]) == 0
    text = output.read_text()
    rows = table(text, "## Cross-validation")
    assert [r["CV"] for r in rows] == ["`cv-good`", "`cv-weak`", "Buda et al. 2019 (paper)"]
    g, w, paper = rows
    assert (g["Folds"], g["Patients"], g["Mean DSC"], g["Median DSC"], g["Mean DSC (native)"]) == (
        "2", "7", "0.9000", "0.9800", "0.8900")
    assert (g["Architecture"], g["Base filters"], g["Loss"], g["LR"], g["Schedule"]) == (
        "attention_unet", "16", "dice", "0.001", "onecycle")
    assert g["Goal (mean ≥ 0.88)"] == "reached" and w["Goal (mean ≥ 0.88)"] == "not reached"
    assert (paper["Folds"], paper["Mean DSC"], paper["Median DSC"]) == ("22", "0.82", "0.85")
    assert "mean 82% / median 85%" in text and "agree at about 84%" in text
    assert "`cv-good` reaches it in both geometries" in text and "`cv-weak` does not reach it" in text
    assert "+0.0800 against the paper's mean and +0.0600 against the human readers" in text
    folds = table(text, "Per fold of `cv-good`:")
    assert [(f["Fold"], f["Patients"], f["Mean DSC"]) for f in folds] == [("0", "3", "0.9467"), ("1", "4", "0.8650")]
    worst = table(text, "Worst 5 patients of `cv-good` (lowest DSC, preprocessed):")
    assert [r["Patient"] for r in worst] == ["`P_G`", "`P_B`", "`P_D`", "`P_E`", "`P_C`"]
    assert (worst[0]["Fold"], worst[0]["DSC"], worst[0]["DSC (native)"], worst[0]["Uncertainty"]) == (
        "1", "0.5300", "0.5200", "0.600")
    assert "Spearman rho -0.750 with the native DSC over 7 patients" in text and "Check first: `P_G`, `P_B`" in text
    assert "Uncertainty" not in table(text, "Worst 5 patients of `cv-weak` (lowest DSC, preprocessed):")[0]
    assert f"No dsc.png in {weak}" in text
    images = linked_images(text, output)
    copied = output.parent / "figures" / "R_cv_cv-good_dsc.png"
    assert copied in images and copied.read_bytes() == tiny_png.read_bytes()
    assert all(p.is_file() for p in images)
    assert text.index("## Cross-validation") < text.index("## How to reproduce each run")


def test_a_folder_reaching_the_goal_in_one_geometry_only_says_so(tmp_path):
    # 0.7700 + 0.115 = 0.8850 preprocessed, 0.8750 native
    folder = report_studies.load_cv(_fake_cv(tmp_path, "cv", 0.115, None))
    assert report_studies.cv_goal(folder) == "reached (preprocessed only)"
    output = tmp_path / "R.md"
    report.build_report([_fake_run(tmp_path, "b16", 0.9)], output, cv=[folder.path])
    assert "`cv` reaches it in the preprocessed geometry only" in output.read_text()


def test_a_cv_folder_without_summary_is_an_error_naming_it_and_the_folds_with_metrics(tmp_path, capsys):
    run = _fake_run(tmp_path, "b16", 0.9)
    output = tmp_path / "R.md"
    cv = tmp_path / "cv"
    cv.mkdir()
    assert report_cli.main([str(run), "-o", str(output), "--cv", str(cv)]) == 2
    err = capsys.readouterr().err
    assert str(cv / "summary.json") in err and "python -m tfseg.cv" in err and not output.exists()
    for fold, files in (("fold-0", ("history.csv", "metrics.json")), ("fold-1", ("history.csv",))):
        (cv / fold).mkdir()
        for name in files:
            (cv / fold / name).write_text("{}")
    assert report_cli.main([str(run), "-o", str(output), "--cv", str(cv)]) == 2
    err = capsys.readouterr().err
    assert "folds with metrics.json: fold-0; without: fold-1" in err and not output.exists()
    (cv / "summary.json").write_text(json.dumps({"patients": 3}))
    assert report_cli.main([str(run), "-o", str(output), "--cv", str(cv)]) == 2
    assert "has no folds, pre, native" in capsys.readouterr().err


RG_PAIRS = [(f, c) for f in ("bevr", "asd", "mf") for c in ("RNASeqCluster", "COCCluster")]


def _fake_radiogenomics(root: Path, name: str, mask_kind: str, p: dict, features: dict, png: Path | None) -> Path:
    """A tfseg.radiogenomics folder: tests.csv with raw ``p`` per (feature, cluster) (p×10 < 0.05 significant)
    plus one sensitivity row, features.csv from ``features`` {patient: (bevr, asd, mf)}, a METHOD.md beside it."""
    out = root / name
    out.mkdir(parents=True)
    (out / "summary.json").write_text(json.dumps({"mask_kind": mask_kind, "patients": len(features),
                                                  "command": {"masks": mask_kind}, "empty_masks": {"count": 0}}))
    lines = ["feature,cluster,family,median,n,k,levels,table,p,p_bonferroni_10,significant"]
    for (feature, cluster), value in list(p.items()) + [(("mf_w31", "RNASeqCluster"), 1e-5)]:
        family = "primary" if feature in ("bevr", "asd", "mf") else "sensitivity"
        lines.append(f'{feature},{cluster},{family},0.5,10,2,1|2,"[[1, 2], [3, 4]]",{value:g},{min(1, 10 * value):g},'
                     f"{10 * value < 0.05}")
    (out / "tests.csv").write_text("\n".join(lines) + "\n")
    rows = ["patient,bevr,asd,mf,mf_w31,voxels"] + [
        ",".join([patient, *("" if np.isnan(v) else f"{v:g}" for v in values), "0.1", "100"])
        for patient, values in features.items()]
    (out / "features.csv").write_text("\n".join(rows) + "\n")
    (root / "METHOD.md").write_text("# method\n")
    if png:
        (out / "figure.png").write_bytes(png.read_bytes())
    return out


def test_radiogenomics_section_sets_folders_side_by_side_with_the_paper_and_their_agreement(tmp_path, tiny_png):
    from scipy.stats import spearmanr

    manual_p = dict(zip(RG_PAIRS, (0.0001, 0.003, 0.06, 0.5, 0.2, 0.9)))
    predicted_p = dict(zip(RG_PAIRS, (0.0004, 0.02, 0.004, 0.5, 0.2, 0.9)))
    manual_f = {f"P{i}": (0.1 * i, 2.0 + i % 3, 0.01 * i) for i in range(8)}
    predicted_f = {f"P{i}": (0.1 * i + 0.15 * (i % 2), 2.0 + i % 3, np.nan if i == 3 else 0.02 * (8 - i))
                   for i in range(1, 9)}
    rg = tmp_path / "results" / "radiogenomics"
    manual = _fake_radiogenomics(rg, "manual", "manual", manual_p, manual_f, tiny_png)
    predicted = _fake_radiogenomics(rg, "cv-pred", "predicted", predicted_p, predicted_f, tiny_png)
    output = tmp_path / "reports" / "R.md"
    args = [str(_fake_run(tmp_path, "b16", 0.9)), "-o", str(output)]
    assert report_cli.main(args + ["--radiogenomics", str(manual), "--radiogenomics", str(predicted)]) == 0
    text = output.read_text()
    rows = {(r["Feature"], r["Subtype"]): r for r in table(text, next(
        line for line in text.splitlines() if line.startswith("Exact p per primary test")))}
    assert list(rows) == [(f.upper(), c) for f, c in RG_PAIRS]  # primary only: no MF_W31 row
    bevr, bevr_coc, asd = rows[("BEVR", "RNASeqCluster")], rows[("BEVR", "COCCluster")], rows[("ASD", "RNASeqCluster")]
    assert (bevr["manual p"], bevr["manual p×10"], bevr["cv-pred p"], bevr["cv-pred p×10"]) == (
        "0.0001", "**0.001** ✱", "0.0004", "**0.004** ✱")
    assert (bevr_coc["manual p×10"], bevr_coc["cv-pred p×10"]) == ("**0.03** ✱", "0.2")
    assert (asd["manual p×10"], asd["cv-pred p×10"]) == ("0.6", "**0.04** ✱")
    assert [rows[pair]["Paper (automatic masks)"] for pair in rows] == [
        "p < 0.0002", "p < 0.02", "p < 0.02", report.DASH, "p < 0.005", report.DASH]
    assert ("0 with an empty mask): significant (p×10 < 0.05): BEVR × RNASeqCluster, BEVR × COCCluster. Against "
            "the paper's p-values: 2 of 4 reproduced (below its bound, or within 1.5x of it and significant after its ×10 "
            "correction); not: ASD × RNASeqCluster (p 0.06, paper < 0.02), MF × "
            "RNASeqCluster (p 0.2, paper < 0.005).") in text
    assert "`cv-pred` (" in text and "significant (p×10 < 0.05): BEVR × RNASeqCluster, ASD × RNASeqCluster." in text
    assert ("`manual` and `cv-pred` agree on BEVR × RNASeqCluster (significant in both); significant in `manual` "
            "only: BEVR × COCCluster; in `cv-pred` only: ASD × RNASeqCluster.") in text
    common = [f"P{i}" for i in range(1, 8)]
    keep = [p for p in common if p != "P3"]  # P3's MF is undefined in cv-pred
    rho_bevr = spearmanr([manual_f[p][0] for p in common], [predicted_f[p][0] for p in common]).statistic
    rho_mf = spearmanr([manual_f[p][2] for p in keep], [predicted_f[p][2] for p in keep]).statistic
    assert f"over their 7 common patients (undefined values left out): BEVR {rho_bevr:.3f}, ASD 1.000, " \
           f"MF {rho_mf:.3f}." in text and rho_mf == pytest.approx(-1) and 0 < rho_bevr < 1
    figures = output.parent / "figures"
    assert {figures / "R_radiogenomics_manual.png", figures / "R_radiogenomics_cv-pred.png"} <= set(
        linked_images(text, output))
    assert all(p.is_file() for p in linked_images(text, output))
    method = re.search(r"\[METHOD\.md\]\(([^)]+)\)", text).group(1)
    assert (output.parent / method).resolve() == (rg / "METHOD.md").resolve()


def test_one_radiogenomics_folder_has_no_agreement_and_a_repeated_folder_gets_its_own_column(tmp_path):
    manual = _fake_radiogenomics(tmp_path, "manual", "manual", dict.fromkeys(RG_PAIRS, 0.5), {"P1": (1, 2, 3)}, None)
    run = _fake_run(tmp_path, "b16", 0.9)
    output = tmp_path / "R.md"
    report.build_report([run], output, radiogenomics=[manual])
    text = output.read_text()
    assert "significant (p×10 < 0.05): none" in text and "Agreement with" not in text
    assert f"No figure.png in {manual}" in text
    report.build_report([run], output, radiogenomics=[manual, manual])
    assert "| manual p | manual p×10 | manual-2 p | manual-2 p×10 |" in output.read_text()
    report.build_report([run], output)
    assert "## Radiogenomics" not in output.read_text() and "## Cross-validation" not in output.read_text()


def test_a_radiogenomics_folder_missing_a_file_or_a_column_is_an_error_naming_it(tmp_path, capsys):
    run = _fake_run(tmp_path, "b16", 0.9)
    output = tmp_path / "R.md"
    folder = _fake_radiogenomics(tmp_path, "pred", "predicted", dict.fromkeys(RG_PAIRS, 0.5), {"P1": (1, 2, 3)}, None)
    (folder / "summary.json").unlink()
    assert report_cli.main([str(run), "-o", str(output), "--radiogenomics", str(folder)]) == 2
    err = capsys.readouterr().err
    assert str(folder / "summary.json") in err and "python -m tfseg.radiogenomics" in err and not output.exists()
    (folder / "summary.json").write_text("{}")
    (folder / "features.csv").write_text("patient,bevr,asd\nP1,1,2\n")
    assert report_cli.main([str(run), "-o", str(output), "--radiogenomics", str(folder)]) == 2
    assert f"{folder / 'features.csv'}: no column mf" in capsys.readouterr().err and not output.exists()

