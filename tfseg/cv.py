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
* ``OUT/probabilities/<patient>.npz``: the out-of-fold probabilities and truth in both
  geometries (float16; :mod:`tfseg.postprocess_choice`), from which ``tfseg postprocess``
  chooses a post-processing rule with no data folder and no prediction;
* ``OUT/per_patient.csv``: patient, fold and the scores of ``evaluate.py`` (``kept_mass``
  and ``suspect`` among them);
* ``OUT/summary.json``: mean and median DSC over all patients and per fold, in
  both geometries, with the settings; ``OUT/dsc.png``: DSC per patient.

``--predict-only`` redoes the out-of-fold step of a finished CV folder (every fold's
``best.keras``) without training: it writes the probabilities a CV from an older tfseg lacks.
``--postprocess FILE`` scores a chosen rule beside the protocol (``dsc_rule_pre`` /
``dsc_rule_native`` columns, ``rule`` / ``rule_native`` in summary.json, as evaluate.py does);
the masks in ``predictions/`` are then the rule's. The headline figures stay the protocol's.

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
from tfseg.runs import BEST_MODEL, CONFIG, METRICS, PER_PATIENT, STATE, SUMMARY, RunFolderError, read_run_json
from tfseg.fileio import atomic_path, write_csv_atomic, write_json_atomic
from tfseg.postprocess import PostprocessRule, suspect_reasons
from tfseg.postprocess_choice import PROBABILITIES_DIR

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
                        uncertainty: bool = False, rule: PostprocessRule | None = None) -> list[dict]:
    """Score every fold's validation patients with its best.keras; write the native masks and the
    probabilities (OUT/probabilities); return the rows.

    With ``uncertainty`` each row also has the patient's "uncertainty" score (tfseg.uncertainty);
    with a ``rule`` (not the protocol's) the rule's DSC columns, and the masks written are the rule's.
    """
    from tfseg.evaluation import EvalOptions, drop_volumes, evaluate_patient, save_probabilities, warn_if_suspect
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
        options = EvalOptions(tta=tta, context=loaded.context, uncertainty=uncertainty, rule=rule,
                              keep_probabilities=True)
        for files in select_patients(scanned, names):
            result = evaluate_patient(read_patient(files), loaded.predict, loaded.image_size, options)
            _save_mask(predictions / f"{result.patient}.npz", result.prediction)
            save_probabilities(out / PROBABILITIES_DIR, result, fold)
            drop_volumes(result)
            rows.append({"patient": result.patient, "fold": fold, **result.columns()})
            with_rule = f"; rule {result.rule_pre['dsc']:.4f}" if result.rule_pre is not None else ""
            print(f"fold {fold} {result.patient}: DSC {result.pre['dsc']:.4f} (native {result.native['dsc']:.4f})"
                  f"{with_rule}")
            warn_if_suspect(result)
    return sorted(rows, key=lambda row: row["patient"])


def _save_mask(path: Path, mask: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, mask=np.asarray(mask, np.uint8))
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def summarize_cv(rows: list[dict], folds: int, rule: PostprocessRule | None = None,
                 rule_file: str | Path | None = None) -> dict:
    """Mean and median DSC over all patients and per fold, in both geometries (the protocol's rule);
    with a rule also ``rule`` / ``rule_native`` (and by fold); ``postprocess``; ``suspect`` {patient: reasons}."""
    from tfseg.metrics import describe  # here, not at the top: tfseg.metrics imports keras

    summary = {"patients": len(rows), "folds": folds}
    keys = {"pre": "dsc_pre", "native": "dsc_native"}
    if rows and "dsc_rule_pre" in rows[0]:
        keys |= {"rule": "dsc_rule_pre", "rule_native": "dsc_rule_native"}
    for name, key in keys.items():
        summary[name] = describe([row[key] for row in rows])
        summary[f"{name}_by_fold"] = {str(k): describe([r[key] for r in rows if r["fold"] == k])
                                      for k in range(folds) if any(r["fold"] == k for r in rows)}
    rule = PostprocessRule() if rule is None else rule
    summary["postprocess"] = {"rule": rule.to_dict(), "describe": rule.describe(), "is_protocol": rule.is_protocol,
                              "file": None if rule_file is None else str(rule_file)}
    suspect = {row["patient"]: suspect_reasons(row["kept_mass"], row.get("uncertainty")) for row in rows}
    summary["suspect"] = {patient: reasons for patient, reasons in suspect.items() if reasons}
    return summary


def write_outputs(rows: list[dict], summary: dict, out: Path) -> None:
    from tfseg.visualize import dsc_bar_charts, save_figure

    write_csv_atomic(out / PER_PATIENT, rows)
    write_json_atomic(out / SUMMARY, summary)
    panels = {f"out-of-fold DSC, {name} (mean {summary[key]['mean']:.3f})":
              {row["patient"]: row[f"dsc_{key}"] for row in rows}
              for key, name in (("pre", "preprocessed"), ("native", "native 256x256"))}
    save_figure(dsc_bar_charts(panels), out / "dsc.png")


def run_cv(config, folds: int, out: str | os.PathLike, tta: bool = False, uncertainty: bool = False,
           postprocess: str | os.PathLike | None = None) -> dict:
    """Train every fold, predict out of fold, write the files; returns summary.json's content.

    ``postprocess``: a postprocess.json whose rule is scored beside the protocol.
    """
    from tfseg.evaluation import resolve_data

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rule = _load_rule(postprocess)
    runs = train_folds(config, folds, out)
    data = resolve_data(config.data, None)
    rows = predict_out_of_fold(runs, data, out, tta, uncertainty, rule)
    return _finish(rows, folds, out, data, tta, uncertainty, rule, postprocess, dataclasses.asdict(config))


def predict_only(out: str | os.PathLike, data: str | os.PathLike | None = None, folds: int | None = None,
                 tta: bool = False, uncertainty: bool = False, postprocess: str | os.PathLike | None = None) -> dict:
    """Redo the out-of-fold step of a finished CV folder without training; returns summary.json's content.

    Every fold ``OUT/fold-<k>`` must hold its ``best.keras``; ``folds`` defaults to the count
    recorded in fold-0's config.json, ``data`` to the data folder it was trained on.
    summary.json keeps the ``train_config`` of the summary it replaces.
    """
    from tfseg.evaluation import resolve_data

    out = Path(out)
    rule = _load_rule(postprocess)
    runs = finished_folds(out, folds)
    first = read_run_json(runs[0] / CONFIG, "the fold's run folder is needed as train.py wrote it")
    data = resolve_data(data, first)
    try:
        train_config = read_run_json(out / SUMMARY, "").get("train_config")
    except RunFolderError:
        train_config = None
    if train_config is None:
        train_config = {k: v for k, v in first.get("config", {}).items() if k not in ("fold", "logdir")}
    rows = predict_out_of_fold(runs, data, out, tta, uncertainty, rule)
    return _finish(rows, len(runs), out, data, tta, uncertainty, rule, postprocess, train_config)


def finished_folds(out: Path, folds: int | None = None) -> list[Path]:
    """The fold run folders of a finished CV folder; DataError naming what is missing."""
    if folds is None:
        try:
            folds = read_run_json(fold_dir(out, 0) / CONFIG, "").get("config", {}).get("folds")
        except RunFolderError as err:
            raise DataError(f"{out} is not a finished cross-validation folder: {err}") from err
        if not isinstance(folds, int):
            raise DataError(f"{fold_dir(out, 0) / CONFIG} records no fold count: pass --folds K")
    runs = [fold_dir(out, k) for k in range(folds)]
    missing = [str(run / BEST_MODEL) for run in runs if not (run / BEST_MODEL).is_file()]
    if missing:
        raise DataError(f"--predict-only needs every fold trained; missing: {', '.join(missing)} (run `tfseg cv` "
                        "without --predict-only to train them)")
    return runs


def _load_rule(postprocess) -> PostprocessRule | None:
    from tfseg.postprocess import load_rule

    if postprocess is None:
        return None
    rule = load_rule(postprocess)
    return None if rule.is_protocol else rule


def _finish(rows, folds, out, data, tta, uncertainty, rule, rule_file, train_config) -> dict:
    from tfseg.inference import views_description
    from tfseg.uncertainty import uncertainty_summary

    summary = summarize_cv(rows, folds, rule, rule_file) | {"data": str(data), "tta": tta, "train_config": train_config}
    if uncertainty:
        summary["uncertainty"] = uncertainty_summary([r["patient"] for r in rows], [r["uncertainty"] for r in rows],
                                                     [r["dsc_native"] for r in rows], views_description(1))
    write_outputs(rows, summary, out)
    print(f"cross-validation over {len(rows)} patients: mean DSC {summary['pre']['mean']:.4f} "
          f"(median {summary['pre']['median']:.4f}); native {summary['native']['mean']:.4f}")
    if "rule" in summary:
        print(f"with the rule {summary['postprocess']['describe']}: mean DSC {summary['rule']['mean']:.4f} "
              f"(median {summary['rule']['median']:.4f}); native {summary['rule_native']['mean']:.4f}")
    if summary["suspect"]:
        print(f"suspect masks ({len(summary['suspect'])}), check them first: {', '.join(summary['suspect'])}")
    return summary


if __name__ == "__main__":  # `python -m tfseg.cv`: the same command as `tfseg cv`
    from tfseg.cli.cv import main

    sys.exit(main(prog="python -m tfseg.cv"))
