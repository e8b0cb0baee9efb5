"""The command line: ``tfseg <command> ...`` (also ``python -m tfseg``), one module per command.

Each command module holds its parser (``build_parser(prog)``) and ``main(argv, prog)``; the
library modules they call hold no argparse. ``python train.py``, ``python evaluate.py`` and
``python -m tfseg.<module>`` run the same ``main`` under their own program name.
"""
from __future__ import annotations

import importlib
import sys

import tfseg

# name (its module under tfseg.cli) -> the line `tfseg --help` shows, in this order. The lines live here, not in
# the modules, so that `tfseg --help` imports no command (and no TensorFlow).
COMMANDS = {
    "train": "train a segmentation network (a run folder with checkpoints, best.keras, TensorBoard, an export)",
    "evaluate": "per-volume DSC / HD95 of a model or an ensemble, in both geometries, with plots and overlays",
    "predict": "segment scans without masks (.tif patient folders or NIfTI): masks, volumes, uncertainty, viewer pages",
    "export": "export RUN_DIR/best.keras, or several models as one ensemble, as a SavedModel for serving",
    "cv": "patient-level K-fold cross-validation over every patient, scored out of fold",
    "postprocess": "choose the post-processing (threshold, components) on a cross-validation's out-of-fold probabilities",
    "robustness": "DSC of an exported model under missing sequences, intensity changes, noise, blur, rotation, ...",
    "report": "a Markdown report comparing runs (tables, time to accuracy, seed groups, CV, radiogenomics)",
    "pack": "pack kaggle_3m into preprocessed TFRecord shards with a manifest (resumable, cached per patient)",
    "phantom": "write a small synthetic kaggle_3m-shaped folder (for tests and dry runs)",
    "radiogenomics": "shape features of manual or predicted masks against the genomic subtypes (the dataset's study)",
}
PROG = "tfseg"


def command_module(name: str):
    return importlib.import_module(f"tfseg.cli.{name}")


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} [-h] [--version] COMMAND [ARGS ...]", "",
             "tfseg: train, evaluate, export and compare brain-MRI (LGG FLAIR) segmentation models.", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {line}" for name, line in COMMANDS.items()]
    lines += ["", f"`{PROG} COMMAND --help` shows a command's flags."]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"{PROG} {tfseg.__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"{PROG}: error: unknown command {name!r}; the commands are: {', '.join(COMMANDS)} "
              f"(`{PROG} --help` says what each does)", file=sys.stderr)
        return 2
    return command_module(name).main(rest, prog=f"{PROG} {name}")
