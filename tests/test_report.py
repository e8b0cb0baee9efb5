"""python -m tfseg.report: one row per run sorted by mean DSC, reproducing commands, figures that exist."""
import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest

from tfseg import report
from tfseg.data.pack import pack
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


def table_rows(text: str) -> list[list[str]]:
    """The cells of the run table (rows after the header separator)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


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
    rows = table_rows(text)
    assert sorted(row[1].strip("`") for row in rows) == sorted(r.name for r in trained_runs)
    by_name = {r.name: r for r in trained_runs}
    listed = [mean_dsc(by_name[row[1].strip("`")]) for row in rows]
    assert listed == sorted(listed, reverse=True)
    evaluated = next(row for row in rows if row[1].strip("`") == trained_runs[0].name)
    assert evaluated[-1] == "evaluate.py" and evaluated[13] != report.DASH  # native DSC from the evaluation
    other = next(row for row in rows if row[1].strip("`") == trained_runs[1].name)
    assert other[-1] == "training validation" and other[13] == report.DASH
    assert text.count("python train.py --arch") == 2
    images = linked_images(text, output)
    assert any("dsc_per_patient" in p.name for p in images)
    assert all(p.is_file() and p.parent == output.parent / "figures" for p in images), images


def _fake_run(root: Path, name: str, dsc: float | None, per_patient: dict | None = None) -> Path:
    """A run folder with hand-written config/metrics (and an evaluation when ``per_patient`` is given)."""
    run = root / name
    run.mkdir(parents=True)
    config = {"arch": "unet", "loss": "dice", "optimizer": "adamw", "lr": 3e-4, "weight_decay": 1e-4,
              "schedule": "cosine", "image_size": 128, "seed": 7, "epochs": 16}
    (run / "config.json").write_text(json.dumps({"config": config, "command": f"python train.py --arch unet # {name}",
                                                 "precision_policy": "mixed_bfloat16"}))
    if dsc is not None:
        (run / "metrics.json").write_text(json.dumps({"best_val_volume_dsc": dsc, "val_volume_dsc_median": dsc,
                                                      "train_seconds": 1800.0, "images_per_second": 21.5,
                                                      "epochs": 16, "precision": "mixed_bfloat16"}))
    if per_patient:
        eval_dir = run / "eval"
        (eval_dir / "overlays").mkdir(parents=True)
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
    rows = table_rows(text)
    assert [row[1] for row in rows] == ["`best`", "`middle`", "`unscored`"]
    best, middle, unscored = rows
    assert best[11] == "0.8000" and best[13] == "0.5000" and best[15] == "4.25" and best[-1] == "evaluate.py"
    assert middle[11] == "0.6000" and middle[13] == report.DASH and middle[-1] == "training validation"
    assert middle[4] == "adamw lr 0.0003, wd 0.0001, cosine" and middle[9] == "30.0 min" and middle[10] == "21.5"
    assert unscored[11] == report.DASH and unscored[9] == report.DASH
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
