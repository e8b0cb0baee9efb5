"""`tfseg evaluate` / `python evaluate.py`: score a model (or an ensemble) on kaggle_3m patients."""
from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from tfseg.cli.common import (add_data_argument, add_model_argument, add_out_argument, add_patients_argument,
                              new_parser, run_command)
from tfseg.evaluation import EvalOptions
from tfseg.markdown import fixed


def build_parser(prog: str = "python evaluate.py"):
    d = EvalOptions()
    p = new_parser(prog, "Per-volume DSC / HD95 of a trained model (or the mean of several: an ensemble) on "
                   "kaggle_3m patients, in the preprocessed and the native geometry, with plots and overlays.",
                   defaults_in_help=True)
    add_model_argument(p, several=True, help="a training run folder (uses best.keras and its split), RUN_DIR/export "
                       "(SavedModel), a .keras file, or `pretrained` (the model tfseg ships: tfseg/pretrained/MODEL_CARD.md). "
                       "Several: an ensemble, scored on the mean of their "
                       "probabilities (each after its own --tta) before the threshold and the largest component; "
                       "they must take the same image size (their 2.5-D --context may differ) and need --out")
    add_data_argument(p)
    add_out_argument(p, "output folder (default: RUN_DIR/eval for one model; required for an ensemble)")
    add_patients_argument(p, "'all' or patient folder names (default: the validation patients of the run's split; "
                          "for an ensemble every member's run must have the same ones)")
    p.add_argument("--tta", action="store_true", help="average with the horizontally flipped prediction")
    p.add_argument("--no-lcc", action="store_true", help="keep every component, not only the largest")
    p.add_argument("--threshold", type=float, default=d.threshold, help="foreground where probability > threshold")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="slices per prediction batch")
    p.add_argument("--no-overlays", action="store_true", help="skip the per-patient GIFs and montages")
    p.add_argument("--uncertainty", action="store_true",
                   help="also measure where the views disagree (the image and its flip, for every ensemble "
                   "member): a per-voxel map in the overlays, an 'uncertainty' score per patient in "
                   "per_patient.csv and its Spearman rho with the DSC in summary.json. The masks and scores "
                   "do not change; without --tta it costs one more prediction per slice")
    p.add_argument("--postprocess", default=None, metavar="FILE",
                   help="a postprocess.json (`tfseg postprocess`) whose rule is applied and scored beside the "
                   "protocol's (default: the postprocess.json the model carries: beside its export, .keras file or "
                   "in its run folder; none for an ensemble). The headline mean_dsc stays the protocol's")
    p.add_argument("--save-probabilities", action="store_true",
                   help="also write OUT/probabilities/<patient>.npz (both geometries' probabilities and truth, "
                   "float16) for `tfseg postprocess`")
    return p


@dataclass
class EvalRequest:
    """What `python evaluate.py ...` asks for: the arguments of :func:`tfseg.evaluation.evaluate_model`."""

    models: list[str]
    data: str | None
    out: str | None
    patients: list[str] | None
    options: EvalOptions
    overlays: bool
    command: str
    postprocess: str | None = None


def request_from_args(argv: Sequence[str], prog: str = "python evaluate.py") -> EvalRequest:
    """Parse evaluate.py's command line (argparse exits with a usage message on bad flags)."""
    argv = list(argv)
    args = build_parser(prog).parse_args(argv)
    options = EvalOptions(threshold=args.threshold, lcc=not args.no_lcc, tta=args.tta, batch_size=args.batch_size,
                          uncertainty=args.uncertainty, keep_probabilities=args.save_probabilities)
    return EvalRequest(args.model, args.data, args.out, args.patients, options, not args.no_overlays,
                       f"{prog} " + shlex.join(argv), args.postprocess)


def summary_lines(summary: dict) -> list[str]:
    """The lines evaluate.py prints: the headline figures, and the uncertainty ranking when there is one."""
    lines = [f"{summary['n_patients']} patients: mean DSC {summary['mean_dsc']:.4f} (median {summary['median_dsc']:.4f}); "
             f"native geometry {summary['mean_dsc_native']:.4f} (median {summary['median_dsc_native']:.4f}); "
             f"mean HD95 (native) {fixed(summary['mean_hd95_native'], 2)} px"]
    rule = summary.get("postprocess") or {}
    if "mean_dsc_rule" in summary:
        source = f" from {rule['file']}" if rule.get("file") else ""
        lines.append(f"with the rule {rule['describe']}{source}: mean DSC {summary['mean_dsc_rule']:.4f} "
                     f"(median {summary['median_dsc_rule']:.4f}); native {summary['mean_dsc_rule_native']:.4f} "
                     f"(median {summary['median_dsc_rule_native']:.4f}); the figures above are the protocol's")
    if summary.get("suspect"):
        lines.append(f"suspect masks, check them first: {', '.join(summary['suspect'])}")
    if "uncertainty" in summary:
        ranking = summary["uncertainty"]
        rho = ranking["spearman_rho_with_dsc"]
        lines.append("uncertainty: Spearman rho with the native DSC " +
                     (f"{rho:.3f} (p = {ranking['p_value']:.3g})" if rho is not None else f"undefined ({ranking['why']})")
                     + f"; check first: {', '.join(ranking['check_first'][:3])}")
    return lines


def main(argv=None, prog: str = "python evaluate.py") -> int:
    import sys

    request = request_from_args(sys.argv[1:] if argv is None else argv, prog)

    def action():
        from tfseg.evaluation import evaluate_model

        summary = evaluate_model(request.models, request.data, request.out, request.patients, request.options,
                                 overlays=request.overlays, command=request.command,
                                 postprocess=request.postprocess)
        print("\n".join(summary_lines(summary)))

    return run_command(action)  # ModelLoadError (EnsembleError among them) and DataError are TfsegErrors
