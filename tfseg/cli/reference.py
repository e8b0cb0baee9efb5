"""docs/reference/cli.md, generated from the commands' own ``--help`` (a test fails when the two drift).

    python -m tfseg.cli.reference --write docs/reference/cli.md
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from tfseg.cli import COMMANDS, PROG, command_module, usage

# argparse wraps help text to the terminal's width: a fixed width keeps the page the same everywhere.
WIDTH = "100"
DEFAULT_PAGE = Path("docs/reference/cli.md")


def command_help(name: str) -> str:
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        return command_module(name).build_parser(f"{PROG} {name}").format_help()
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved


def reference_markdown() -> str:
    lines = ["# Command-line reference", "",
             "Generated from each command's `--help` by `python -m tfseg.cli.reference --write docs/reference/cli.md`;",
             "`tests/test_cli.py` fails when this page and the commands drift apart. `python train.py` and",
             "`python evaluate.py` are `tfseg train` and `tfseg evaluate`; `python -m tfseg.<module>` runs the same",
             "command as `tfseg <command>`.", "", "```text", usage(), "```", ""]
    for name in COMMANDS:
        lines += [f"## tfseg {name}", "", "```text", command_help(name).rstrip(), "```", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    from tfseg.fileio import write_text_atomic

    parser = argparse.ArgumentParser(prog="python -m tfseg.cli.reference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", metavar="FILE", default=None,
                        help=f"write the page there (e.g. {DEFAULT_PAGE}) instead of printing it")
    args = parser.parse_args(argv)
    text = reference_markdown()
    if args.write:
        write_text_atomic(args.write, text)
        print(f"wrote {args.write}")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
