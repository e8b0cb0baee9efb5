"""Evaluate a trained model on kaggle_3m patients: `python evaluate.py --model RUN_DIR` (see --help).

Writes per_patient.csv, summary.json, dsc.png and per-patient overlays to --out
(default RUN_DIR/eval); the work is done by tfseg.evaluation. Several models
(`--model RUN_A RUN_B --out DIR`) are scored as one ensemble (tfseg.ensemble).
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    from tfseg.evaluation import main as evaluate_main

    return evaluate_main(argv)


if __name__ == "__main__":
    sys.exit(main())
