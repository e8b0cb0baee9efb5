"""Where the masks and the genomic clusters come from.

Masks, one (S, 256, 256) bool volume per patient in native geometry (the
original slices, in slice order):

- ``manual``: the ``<patient>_<n>_mask.tif`` files of a kaggle_3m folder;
- a folder of predictions holding, per patient, either ``<patient>.npz`` with
  an array ``mask`` (S, 256, 256) bool or uint8 (0/1 or 0/255), or the kaggle
  layout ``<patient>/<patient>_<n>_mask.tif``.

Genomic clusters: ``data.csv`` of the Kaggle download; its ``Patient`` column
is the first 12 characters of the folder name (``TCGA_CS_4941`` for
``TCGA_CS_4941_19960909``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from tfseg.data.kaggle import KAGGLE_HELP, SLICE_SHAPE, DataError, scan_folder

MANUAL = "manual"
GENOMIC_COLUMNS = ("RNASeqCluster", "MethylationCluster", "miRNACluster", "CNCluster",
                   "COCCluster", "OncosignCluster")
_MASK_RE = re.compile(r"^(?P<patient>.+)_(?P<n>\d+)_mask\.tif$")


@dataclass
class PatientMask:
    """One patient's mask: ``mask`` (S, 256, 256) bool; ``source`` says where it came from."""

    patient: str
    mask: np.ndarray
    source: str


def patient_key(patient: str) -> str:
    """data.csv's ``Patient`` of a patient folder name: its first 12 characters (``TCGA_CS_4941``)."""
    return patient[:12]


def read_clusters(data: str | os.PathLike):
    """The genomic cluster columns of ``<data>/data.csv``: a pandas DataFrame indexed by ``Patient``.

    Values are floats (cluster numbers), NaN where data.csv leaves them blank.

    Raises DataError when the file is missing or lacks a column of ``GENOMIC_COLUMNS``.
    """
    import pandas as pd

    path = Path(data) / "data.csv"
    if not path.is_file():
        raise DataError(f"{path} not found; it ships with the Kaggle download next to the patient folders "
                        f"(the genomic clusters of each patient). {KAGGLE_HELP}")
    try:
        frame = pd.read_csv(path)
    except Exception as err:  # pandas raises several types for unreadable files
        raise DataError(f"{path}: not a readable CSV file ({type(err).__name__}: {err}); re-download it.") from err
    missing = [c for c in ("Patient",) + GENOMIC_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: columns {missing} are missing (found {list(frame.columns)[:8]}...); "
                        "it must be the data.csv of the Kaggle kaggle_3m download.")
    if frame["Patient"].duplicated().any():
        raise DataError(f"{path}: patients {sorted(frame.loc[frame['Patient'].duplicated(), 'Patient'])[:3]} "
                        "appear twice; restore the original file.")
    return frame.set_index("Patient")[list(GENOMIC_COLUMNS)].apply(pd.to_numeric, errors="coerce")


def iter_masks(data: str | os.PathLike, masks: str | os.PathLike) -> Iterator[PatientMask]:
    """The masks named by ``--masks``: ``"manual"`` or a folder of predictions (see the module docstring)."""
    if str(masks) == MANUAL:
        yield from iter_manual_masks(data)
    else:
        yield from iter_predicted_masks(masks, data)


def iter_manual_masks(data: str | os.PathLike) -> Iterator[PatientMask]:
    """The manual masks of a kaggle_3m folder, patient by patient (file names checked first)."""
    for files in scan_folder(data):
        yield PatientMask(files.patient, read_mask_slices(files.masks), MANUAL)


def iter_predicted_masks(folder: str | os.PathLike, data: str | os.PathLike | None = None) -> Iterator[PatientMask]:
    """Predicted masks of ``folder`` (``<patient>.npz`` or ``<patient>/<patient>_<n>_mask.tif``).

    When ``data`` holds the patient's kaggle_3m folder, the slice count must match it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--masks {folder}: not a folder. Pass 'manual' for the kaggle_3m masks, or a folder "
                        "of predictions holding <patient>.npz (array 'mask', (S, 256, 256)) or "
                        "<patient>/<patient>_<n>_mask.tif.")
    npz = {p.stem: p for p in folder.glob("*.npz") if not p.name.startswith(".")}
    tif = {p.name: p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
           and any(p.glob(f"{p.name}_*_mask.tif"))}
    both = sorted(set(npz) & set(tif))
    if both:
        raise DataError(f"--masks {folder}: patients {both[:3]} have both a .npz file and a folder of .tif "
                        "masks; keep one of them.")
    if not npz and not tif:
        raise DataError(f"--masks {folder}: no <patient>.npz files and no <patient>/<patient>_<n>_mask.tif "
                        "folders found; write the predictions in one of these layouts.")
    for patient in sorted(set(npz) | set(tif)):
        if patient in npz:
            mask, source = read_mask_npz(npz[patient]), str(npz[patient])
        else:
            mask, source = read_mask_slices(_scan_mask_folder(tif[patient])), str(tif[patient])
        if data is not None:
            _check_slice_count(mask, Path(data) / patient, source)
        yield PatientMask(patient, mask, source)


def read_mask_npz(path: str | os.PathLike) -> np.ndarray:
    """``mask`` of an .npz file -> (S, 256, 256) bool; DataError naming the file when it is not one."""
    path = Path(path)
    try:
        with np.load(path) as archive:
            if "mask" not in archive.files:
                raise DataError(f"{path}: no array 'mask' (found {archive.files}); save the prediction "
                                "with np.savez(path, mask=mask).")
            mask = archive["mask"]
    except DataError:
        raise
    except Exception as err:  # zipfile, pickle and OS errors for corrupt files
        raise DataError(f"{path}: not a readable .npz file ({type(err).__name__}: {err}).") from err
    if mask.ndim != 3 or mask.shape[1:] != SLICE_SHAPE:
        raise DataError(f"{path}: mask has shape {mask.shape}, expected (S, {SLICE_SHAPE[0]}, {SLICE_SHAPE[1]}) "
                        "in native geometry; map predictions back onto the original slices first "
                        "(tfseg.data.invert_volume).")
    return _binary(mask, path)


def read_mask_slices(paths) -> np.ndarray:
    """Stack (256, 256) mask .tif files, in the order given -> (S, 256, 256) bool."""
    import tifffile

    slices = []
    for path in paths:
        try:
            mask = tifffile.imread(path)
        except Exception as err:  # tifffile raises several types for corrupt files
            raise DataError(f"{path}: not a readable TIFF file ({type(err).__name__}: {err}). "
                            "Re-download or restore this file.") from err
        if mask.ndim == 3 and mask.shape[-1] in (1, 3) and (mask == mask[..., :1]).all():
            mask = mask[..., 0]  # grey masks saved as RGB: identical channels are harmless
        if mask.shape != SLICE_SHAPE:
            raise DataError(f"{path}: mask has shape {mask.shape}, expected {SLICE_SHAPE}.")
        slices.append(_binary(mask, path))
    return np.stack(slices)


def _binary(mask: np.ndarray, path) -> np.ndarray:
    if mask.dtype != bool:
        values = set(np.unique(mask).tolist())
        if not (values <= {0, 1} or values <= {0, 255}):
            raise DataError(f"{path}: mask values {sorted(values)[:6]} are not binary; masks must hold "
                            "0/1, 0/255 or bool (threshold probabilities first).")
    return mask > 0


def _scan_mask_folder(folder: Path) -> list[Path]:
    numbered = {}
    for path in folder.glob("*_mask.tif"):
        match = _MASK_RE.match(path.name)
        if match is None or match["patient"] != folder.name:
            raise DataError(f"{path}: unexpected file name; masks must be named {folder.name}_<n>_mask.tif.")
        numbered[int(match["n"])] = path
    missing = sorted(set(range(1, max(numbered) + 1)) - set(numbered))
    if missing:
        raise DataError(f"{folder}: mask slice numbers have a gap (missing {missing[:5]}); write one "
                        f"{folder.name}_<n>_mask.tif per slice, n = 1..S.")
    return [numbered[n] for n in sorted(numbered)]


def _check_slice_count(mask: np.ndarray, patient_folder: Path, source: str) -> None:
    if not patient_folder.is_dir():
        return
    expected = sum(1 for p in patient_folder.glob("*_mask.tif") if _MASK_RE.match(p.name))
    if expected and len(mask) != expected:
        raise DataError(f"{source}: {len(mask)} slices, but {patient_folder} has {expected}; predicted masks "
                        "must cover every original slice in native geometry.")
