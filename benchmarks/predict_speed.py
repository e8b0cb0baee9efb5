"""Seconds per patient of `tfseg predict` with the pretrained model on this machine, with and without --tta.

    python benchmarks/predict_speed.py [--data ./kaggle_3m] [--patients 3] [--repeats 3] [--viewer]
        [--reference-dir CHECKOUT --reference-weights unet.pt [--reference-python .venv-reference/bin/python]]

Times :func:`tfseg.predict.predict` on one real patient folder at a time, end to end: reading the
.tif slices, preprocessing, predicting the image and its flip (both are always predicted: the flip
gives the uncertainty score, so --tta only changes which views are averaged into the mask),
inverting to the native grid, post-processing and writing the masks (and, with ``--viewer``, the
viewer page). The model is loaded once before (its load time is recorded apart), as the command
loads it once for a folder of patients. Variants and patients are interleaved in every repeat and
the median per patient is reported. Writes benchmarks/results/predict_speed.json (or ``--output NAME``).

With ``--reference-dir`` (a checkout of mateuszbuda/brain-segmentation-pytorch, patched by
benchmarks/reference_program/run.py) the same run also times whole commands on one folder of 10
patients, interleaved A B C A B C: ``tfseg predict --model pretrained`` with and without ``--tta``,
and the program's own ``inference.py`` at 128 px with ``--reference-weights`` (e.g. the best weights
of a reference-program run: the program ships none at 128 px). Each is a fresh process (imports,
model load, reading, preprocessing, prediction, its outputs: tfseg's masks, predictions.csv and
viewer pages; the program's outline PNG of every slice and its DSC chart), so the figure is seconds
per patient of the command as a user runs it. 10 patients because the program's loader draws its
10 validation cases from the folder it is given (it reads every volume there).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import add_output_argument, median, write_result  # noqa: E402
from tfseg.data.kaggle import scan_folder  # noqa: E402
from tfseg.predict import PredictOptions, predict  # noqa: E402

VARIANTS = {"plain": False, "tta": True}
COMMAND_PATIENTS = 10  # the program's inference.py draws 10 validation cases from its folder


def command_variants(folder: Path, out: Path, args) -> dict[str, tuple[list[str], Path | None]]:
    """name -> (argv, working directory) of each whole command timed on ``folder`` (a kaggle_3m of 10)."""
    tfseg = [sys.executable, "-m", "tfseg", "predict", "--model", "pretrained", "--input", str(folder)]
    # inference.py runs in its checkout: a relative --reference-python is taken from here, not from there
    # (abspath, not resolve: resolving the venv's python link would leave the venv).
    python = os.path.abspath(args.reference_python) if os.sep in args.reference_python else args.reference_python
    reference = [python, "inference.py", "--device", "cpu", "--image-size", "128",
                 "--weights", str(Path(args.reference_weights).resolve()), "--images", str(folder),
                 "--predictions", str(out / "reference"), "--figure", str(out / "reference-dsc.png")]
    return {"tfseg predict": (tfseg + ["--out", str(out / "plain")], None),
            "tfseg predict --tta": (tfseg + ["--out", str(out / "tta"), "--tta"], None),
            "reference inference.py": (reference, Path(args.reference_dir))}


def time_commands(data: str, repeats: int, args) -> dict:
    """Whole-command seconds per patient, tfseg's predict against the program's inference.py (see above)."""
    from tfseg.data.kaggle import scan_folder

    work = Path(tempfile.mkdtemp(prefix="tfseg-predict-commands-"))
    try:
        folder = work / "kaggle_3m"
        patients = scan_folder(data)[:COMMAND_PATIENTS]
        for patient in patients:
            shutil.copytree(patient.folder, folder / patient.patient)
        variants = command_variants(folder, work / "out", args)
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(repeats):
            for name, (argv, cwd) in variants.items():
                shutil.rmtree(work / "out", ignore_errors=True)
                started = time.perf_counter()
                result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
                elapsed = time.perf_counter() - started
                if result.returncode != 0:
                    raise SystemExit(f"error: {name} failed (exit {result.returncode}): {result.stderr[-2000:]}")
                seconds[name].append(elapsed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    per_patient = {name: round(median(values) / len(patients), 3) for name, values in seconds.items()}
    return {"what": f"whole commands on one folder of {len(patients)} patients (fresh process each: imports, model "
                    "load, reading, preprocessing, prediction, outputs), interleaved; median over repeats / patients",
            "patients": [p.patient for p in patients],
            "commands": {name: " ".join(argv) for name, (argv, _) in variants.items()},
            "seconds_per_patient": per_patient,
            "reference_over_tfseg": round(per_patient["reference inference.py"] / per_patient["tfseg predict"], 2),
            "samples_seconds": {name: [round(v, 2) for v in values] for name, values in seconds.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("TFSEG_LGG_DIR", "kaggle_3m"), help="kaggle_3m folder")
    parser.add_argument("--patients", type=int, default=3, help="the first N patients (sorted by name)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--viewer", action="store_true", help="also write the viewer page (timed with the rest)")
    parser.add_argument("--reference-dir", help="a patched checkout of the reference program: also time its "
                        "inference.py against tfseg predict as whole commands")
    parser.add_argument("--reference-python", default=".venv-reference/bin/python",
                        help="python of the program's environment (benchmarks/requirements-reference.txt)")
    parser.add_argument("--reference-weights", help="the program's weights (unet.pt) at 128 px")
    add_output_argument(parser, "predict_speed.json")
    args = parser.parse_args(argv)
    if args.reference_dir and not args.reference_weights:
        parser.error("--reference-dir needs --reference-weights (the program's unet.pt trained at 128 px)")

    import tensorflow as tf

    from tfseg.inference import load_model

    started = time.perf_counter()
    loaded = load_model("pretrained")
    load_seconds = time.perf_counter() - started
    patients = scan_folder(args.data)[:args.patients]
    work = Path(tempfile.mkdtemp(prefix="tfseg-predict-bench-"))
    samples = {variant: {p.patient: [] for p in patients} for variant in VARIANTS}
    try:
        # One untimed prediction first: Keras traces its predict function on the first batch.
        predict("pretrained", work / "warmup", patients[0].folder, loaded=loaded, progress=False,
                options=PredictOptions(viewer=False))
        for _ in range(args.repeats):
            for patient in patients:
                for variant, tta in VARIANTS.items():
                    options = PredictOptions(tta=tta, viewer=args.viewer)
                    t = time.perf_counter()
                    predict("pretrained", work / variant, patient.folder, loaded=loaded, progress=False,
                            options=options)
                    samples[variant][patient.patient].append(time.perf_counter() - t)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    per_patient = {variant: {name: round(median(times), 3) for name, times in by_patient.items()}
                   for variant, by_patient in samples.items()}
    result = {
        "model": "pretrained (tfseg/pretrained: attention U-Net, base 16, 128 px)",
        "what": "seconds per patient of tfseg.predict.predict on one patient folder (read, preprocess, predict the "
                "image and its flip, invert, post-process, write masks" + (", viewer page" if args.viewer else "")
                + "), model loaded once beforehand; median over repeats",
        "note": "the flip is predicted in both variants (it gives the uncertainty score), so --tta costs "
                "only the averaging",
        "data": str(args.data), "repeats": args.repeats, "viewer": args.viewer,
        "slices": {p.patient: len(p.images) for p in patients},
        "model_load_seconds": round(load_seconds, 3),
        "tensorflow_threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                               "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
        "seconds_per_patient": per_patient,
        "median_seconds_per_patient": {variant: round(median(list(times.values())), 3)
                                       for variant, times in per_patient.items()},
        "samples": {variant: {name: [round(t, 3) for t in times] for name, times in by_patient.items()}
                    for variant, by_patient in samples.items()},
    }
    if args.reference_dir:
        result["commands"] = time_commands(args.data, args.repeats, args)
    write_result(args.output, result)
    print({variant: result["median_seconds_per_patient"][variant] for variant in VARIANTS})
    if args.reference_dir:
        print(result["commands"]["seconds_per_patient"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
