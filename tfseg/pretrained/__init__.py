"""The one trained model tfseg ships (MODEL_CARD.md beside this file), named ``pretrained`` on the command line.

``--model pretrained`` resolves to the ``.keras`` file listed in ``SHA256SUMS`` here, after its
SHA-256 has been checked (a damaged or replaced file is refused, never loaded).
"""
from __future__ import annotations

from pathlib import Path

NAME = "pretrained"
FOLDER = Path(__file__).resolve().parent
SUMS = FOLDER / "SHA256SUMS"


class PretrainedError(ValueError):
    """The shipped model is missing or does not match its recorded SHA-256."""


def listed() -> tuple[Path, str]:
    """(the shipped model's path, its recorded SHA-256) from SHA256SUMS (``<hex>  <file name>``)."""
    if not SUMS.is_file():
        raise PretrainedError(f"this tfseg has no pretrained model ({SUMS} is missing); train one with `tfseg train` "
                              "and pass its run folder as --model")
    digest, name = SUMS.read_text().split()[:2]
    return FOLDER / name, digest


def resolve() -> Path:
    """The shipped model's path, checked against its SHA-256; PretrainedError naming the file otherwise."""
    from tfseg.fileio import sha256_file

    path, digest = listed()
    if not path.is_file():
        raise PretrainedError(f"the pretrained model {path} is missing (a clone without it?); fetch the repository "
                              "again or pass a run folder as --model")
    actual = sha256_file(path)
    if actual != digest:
        raise PretrainedError(f"the pretrained model {path} does not match its SHA-256 in {SUMS} (recorded {digest[:12]}…, "
                              f"found {actual[:12]}…): the file is damaged or was replaced; it is not loaded. Restore it "
                              "with `git checkout -- tfseg/pretrained`")
    return path
