"""What every command shares: the one error wrapper and the flags that several commands take."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from tfseg.errors import TfsegError, disk_full_message, is_disk_full

USAGE_ERROR = 2  # argparse's own exit code for a bad command line; tfseg uses it for every expected error


def run_command(action: Callable[[], int | None], also: tuple[type[BaseException], ...] = ()) -> int:
    """Run ``action``; an expected error (a :class:`TfsegError`, or one of ``also``) becomes one line on stderr.

    Returns the action's exit code (0 when it returns None), or 2 after an expected error.
    """
    try:
        code = action()
    except (TfsegError, *also) as err:
        print(f"error: {err}", file=sys.stderr)
        return USAGE_ERROR
    except Exception as err:
        if not is_disk_full(err):
            raise  # a bug: keep its traceback
        print(f"error: {disk_full_message(err)}", file=sys.stderr)
        return USAGE_ERROR
    return 0 if code is None else code


def new_parser(prog: str, description: str, defaults_in_help: bool = False) -> argparse.ArgumentParser:
    formatter = argparse.ArgumentDefaultsHelpFormatter if defaults_in_help else argparse.HelpFormatter
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=formatter,
                                   allow_abbrev=False)


def add_model_argument(parser: argparse.ArgumentParser, several: bool, help: str) -> None:
    """``--model``: a run folder, an export or a .keras file (several of them when ``several``)."""
    parser.add_argument("--model", required=True, nargs="+" if several else None, metavar="MODEL", help=help)


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    """``--data``: the kaggle_3m folder, by default the one the (first) model's run was trained on."""
    parser.add_argument("--data", default=None, help="kaggle_3m folder (default: the (first) run's --data; a "
                        "packed folder leads to its source)")


def add_out_argument(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--out", default=None, help=help)


def add_patients_argument(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--patients", nargs="+", default=None, metavar="all|NAME", help=help)
