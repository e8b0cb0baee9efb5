"""Evaluate a trained model on kaggle_3m patients: `python evaluate.py --model RUN_DIR` (see --help).

Writes per_patient.csv, summary.json, dsc.png and per-patient overlays to --out
(default RUN_DIR/eval); the work is done by tfseg.evaluation. Several models
(`--model RUN_A RUN_B --out DIR`) are scored as one ensemble (tfseg.ensemble).
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    from tfseg.data.kaggle import DataError
    from tfseg.ensemble import EnsembleError
    from tfseg.evaluation import ModelLoadError, evaluate_model, request_from_args, summary_lines

    request = request_from_args(sys.argv[1:] if argv is None else argv)
    try:
        summary = evaluate_model(request.models, request.data, request.out, request.patients, request.options,
                                 overlays=request.overlays, command=request.command)
    except (ModelLoadError, DataError, EnsembleError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(summary)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
