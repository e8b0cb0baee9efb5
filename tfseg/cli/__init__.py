"""The command line: ``tfseg <command> ...`` (also ``python -m tfseg``), one module per command.

Each command module holds its parser (``build_parser(prog)``) and ``main(argv, prog)``; the
library modules they call hold no argparse. ``python train.py``, ``python evaluate.py`` and
``python -m tfseg.<module>`` run the same ``main`` under their own program name.
"""
from __future__ import annotations

import importlib
import sys

import tfseg

# name -> module under tfseg.cli; the order is the order of `tfseg --help`.
COMMANDS = ("train", "evaluate", "export", "cv", "robustness", "report", "pack", "phantom", "radiogenomics")
PROG = "tfseg"


def command_module(name: str):
    return importlib.import_module(f"tfseg.cli.{name}")


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} [-h] [--version] COMMAND [ARGS ...]", "",
             "tfseg: train, evaluate, export and compare brain-MRI (LGG FLAIR) segmentation models.", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {command_module(name).HELP}" for name in COMMANDS]
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
