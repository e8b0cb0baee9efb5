"""Seconds per patient of `tfseg predict` with the pretrained model on this machine, with and without --tta.

    python benchmarks/predict_speed.py [--data ./kaggle_3m] [--patients 3] [--repeats 3] [--viewer]

Times :func:`tfseg.predict.predict` on one real patient folder at a time, end to end: reading the
.tif slices, preprocessing, predicting the image and its flip (both are always predicted: the flip
gives the uncertainty score, so --tta only changes which views are averaged into the mask),
inverting to the native grid, post-processing and writing the masks (and, with ``--viewer``, the
viewer page). The model is loaded once before (its load time is recorded apart), as the command
loads it once for a folder of patients. Variants and patients are interleaved in every repeat and
the median per patient is reported. Writes benchmarks/results/predict_speed.json (or ``--output NAME``).
"""
from __future__ import annotations

import argparse
import os
import shutil
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("TFSEG_LGG_DIR", "kaggle_3m"), help="kaggle_3m folder")
    parser.add_argument("--patients", type=int, default=3, help="the first N patients (sorted by name)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--viewer", action="store_true", help="also write the viewer page (timed with the rest)")
    add_output_argument(parser, "predict_speed.json")
    args = parser.parse_args(argv)

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
    write_result(args.output, result)
    print({variant: result["median_seconds_per_patient"][variant] for variant in VARIANTS})
    return 0


if __name__ == "__main__":
    sys.exit(main())
