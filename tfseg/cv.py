"""Patient-level cross-validation: one training run per fold, out-of-fold predictions for every patient.

    python -m tfseg.cv --data kaggle_3m --folds 5 --out cv/ [train.py flags]

Folds are formed by patient (seeded, stratified by whether a patient has tumour;
``tfseg.data.split``), and every fold is an ordinary training run in ``OUT/fold-<k>``
with ``--fold k --folds K`` and the given train.py flags (default: ``--preset
cpu-128``). The command is resumable fold by fold: a finished fold (its
``metrics.json`` exists) is not trained again, an interrupted one resumes from its
checkpoint. Then each fold's ``best.keras`` predicts its own validation patients
(out of fold), scored in both geometries as ``evaluate.py`` does:

* ``OUT/predictions/<patient>.npz``: ``mask`` (S, 256, 256) uint8 0/1, the
  post-processed prediction on the original slices (native geometry);
* ``OUT/per_patient.csv``: patient, fold and the scores of ``evaluate.py``;
* ``OUT/summary.json``: mean and median DSC over all patients and per fold, in
  both geometries, with the settings; ``OUT/dsc.png``: DSC per patient.

With ``--uncertainty`` every patient also gets ``evaluate.py``'s uncertainty score (a
column of per_patient.csv) and summary.json its Spearman rho with the native DSC over
all patients (tfseg.uncertainty); the masks do not change.

The paper published with the data set (Buda et al. 2019) reports mean 82% /
median 85% per-volume DSC from its 22-fold cross-validation.
"""
from __future__ import annotations

import dataclasses
import io
import os
import sys
from pathlib import Path

import numpy as np

from tfseg.data.kaggle import DataError, read_patient, scan_folder, select_patients
from tfseg.data.split import validation_of_run
from tfseg.runs import CONFIG, METRICS, PER_PATIENT, STATE, SUMMARY
from tfseg.fileio import atomic_path, write_csv_atomic, write_json_atomic

FOLD_DIR = "fold-{}"


def fold_dir(out: Path, fold: int) -> Path:
    return out / FOLD_DIR.format(fold)


def train_folds(config, folds: int, out: Path) -> list[Path]:
    """Train (or resume, or skip) every fold of ``config`` (a TrainConfig); returns the fold run folders."""
    from tfseg.training.loop import train

    runs = []
    for fold in range(folds):
        run = fold_dir(out, fold)
        runs.append(run)
        if (run / METRICS).is_file():
            print(f"fold {fold}: finished earlier ({run}), not trained again")
        elif (run / STATE).is_file():
            print(f"fold {fold}: resuming {run}")
            train(config, resume=run, export=False)
        else:
            print(f"fold {fold}: training into {run}")
            # No SavedModel per fold: the out-of-fold step reads best.keras (export one with tfseg.export).
            train(dataclasses.replace(config, fold=fold, folds=folds, logdir=str(run)), export=False)
    return runs


def predict_out_of_fold(runs: list[Path], data: Path, out: Path, tta: bool = False,
                        uncertainty: bool = False) -> list[dict]:
    """Score every fold's validation patients with its best.keras; write the native masks; return the rows.

    With ``uncertainty`` each row also has the patient's "uncertainty" score (tfseg.uncertainty).
    """
    from tfseg.evaluation import EvalOptions, evaluate_patient
    from tfseg.inference import load_model

    scanned = scan_folder(data)
    predictions = out / "predictions"
    predictions.mkdir(parents=True, exist_ok=True)
    rows = []
    for fold, run in enumerate(runs):
        loaded = load_model(run)
        try:
            names, _ = validation_of_run(loaded.run_config or {}, [f.patient for f in scanned])
        except ValueError as err:
            raise DataError(f"{run / CONFIG}: {err}") from err
        options = EvalOptions(tta=tta, context=loaded.context, uncertainty=uncertainty)
        for files in select_patients(scanned, names):
            result = evaluate_patient(read_patient(files), loaded.predict, loaded.image_size, options)
            _save_mask(predictions / f"{result.patient}.npz", result.prediction)
            row = {"patient": result.patient, "fold": fold, **_scores(result)}
            rows.append(row | ({"uncertainty": result.uncertainty} if uncertainty else {}))
            print(f"fold {fold} {result.patient}: DSC {result.pre['dsc']:.4f} (native {result.native['dsc']:.4f})")
    return sorted(rows, key=lambda row: row["patient"])


def _scores(result) -> dict:
    from tfseg.metrics import SCORE_KEYS

    return {f"{key}_{geometry}": getattr(result, geometry)[key] for geometry in ("pre", "native")
            for key in SCORE_KEYS}


def _save_mask(path: Path, mask: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, mask=np.asarray(mask, np.uint8))
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def summarize_cv(rows: list[dict], folds: int) -> dict:
    """Mean and median DSC over all patients and per fold, in both geometries."""
    from tfseg.metrics import describe  # here, not at the top: tfseg.metrics imports keras

    summary = {"patients": len(rows), "folds": folds}
    for geometry in ("pre", "native"):
        summary[geometry] = describe([row[f"dsc_{geometry}"] for row in rows])
        summary[f"{geometry}_by_fold"] = {str(k): describe([r[f"dsc_{geometry}"] for r in rows if r["fold"] == k])
                                          for k in range(folds) if any(r["fold"] == k for r in rows)}
    return summary


def write_outputs(rows: list[dict], summary: dict, out: Path) -> None:
    from tfseg.visualize import dsc_bar_charts, save_figure

    write_csv_atomic(out / PER_PATIENT, rows)
    write_json_atomic(out / SUMMARY, summary)
    panels = {f"out-of-fold DSC, {name} (mean {summary[key]['mean']:.3f})":
              {row["patient"]: row[f"dsc_{key}"] for row in rows}
              for key, name in (("pre", "preprocessed"), ("native", "native 256x256"))}
    save_figure(dsc_bar_charts(panels), out / "dsc.png")


def run_cv(config, folds: int, out: str | os.PathLike, tta: bool = False, uncertainty: bool = False) -> dict:
    """Train every fold, predict out of fold, write the files; returns summary.json's content."""
    from tfseg.evaluation import resolve_data
    from tfseg.inference import views_description
    from tfseg.uncertainty import uncertainty_summary

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = train_folds(config, folds, out)
    data = resolve_data(config.data, None)
    rows = predict_out_of_fold(runs, data, out, tta, uncertainty)
    summary = summarize_cv(rows, folds) | {"data": str(data), "tta": tta,
                                           "train_config": dataclasses.asdict(config)}
    if uncertainty:
        summary["uncertainty"] = uncertainty_summary([r["patient"] for r in rows], [r["uncertainty"] for r in rows],
                                                     [r["dsc_native"] for r in rows], views_description(1))
    write_outputs(rows, summary, out)
    print(f"cross-validation over {len(rows)} patients: mean DSC {summary['pre']['mean']:.4f} "
          f"(median {summary['pre']['median']:.4f}); native {summary['native']['mean']:.4f}")
    return summary


if __name__ == "__main__":  # `python -m tfseg.cv`: the same command as `tfseg cv`
    from tfseg.cli.cv import main

    sys.exit(main(prog="python -m tfseg.cv"))
