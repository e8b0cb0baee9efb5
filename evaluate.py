"""Evaluate a trained model on kaggle_3m patients: `python evaluate.py --model RUN_DIR` (see --help).

The same command as `tfseg evaluate`. Writes per_patient.csv, summary.json, dsc.png and per-patient
overlays to --out (default RUN_DIR/eval); several models (`--model RUN_A RUN_B --out DIR`) are scored
as one ensemble.
"""
import sys

from tfseg.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
