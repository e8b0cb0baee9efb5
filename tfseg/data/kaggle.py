"""Read and check a Kaggle ``kaggle_3m`` folder (LGG MRI segmentation set).

Layout: ``<root>/<patient>/<patient>_<n>.tif`` (256×256×3 uint8) and
``<patient>_<n>_mask.tif`` (256×256 uint8, 0/255), ``n`` = 1, 2, … with no gap.
``README.md``, ``data.csv`` and stray files such as ``.DS_Store`` are ignored.

Checking is split in two so that every layout problem is reported before any
pixel is read: :func:`scan_folder` looks at file names only, :func:`read_patient`
reads and validates the pixels of one patient.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfseg.errors import TfsegError

KAGGLE_HELP = (
    "Download the Kaggle dataset 'mateuszbuda/lgg-mri-segmentation' "
    "(https://www.kaggle.com/datasets/mateuszbuda/lgg-mri-segmentation, or "
    "`kaggle datasets download -d mateuszbuda/lgg-mri-segmentation`) and unzip it "
    "so that the folder kaggle_3m/ (110 patient folders) exists, then pass it with --data."
)
SLICE_SHAPE = (256, 256)
_SLICE_RE = re.compile(r"^(?P<patient>.+)_(?P<n>\d+)(?P<mask>_mask)?\.tif$")


class DataError(TfsegError, ValueError):
    """The input data is not a valid kaggle_3m layout; the message names the file and the fix."""


@dataclass(frozen=True)
class PatientFiles:
    """File names of one patient, in slice order (``_1``, ``_2``, … numerically)."""

    patient: str
    folder: Path
    images: tuple[Path, ...]
    masks: tuple[Path, ...]

    def fingerprint(self) -> list:
        """(name, size, mtime_ns) of every file: changes when the source changes."""
        out = []
        for path in self.images + self.masks:
            st = path.stat()
            out.append([path.name, st.st_size, st.st_mtime_ns])
        return out


@dataclass
class PatientVolume:
    """One patient: ``image`` (S, 256, 256, 3) uint8, ``mask`` (S, 256, 256) uint8 in {0, 1}."""

    patient: str
    image: np.ndarray
    mask: np.ndarray


def scan_folder(root: str | os.PathLike) -> list[PatientFiles]:
    """List the patients of a kaggle_3m folder, checking file names only.

    Returns PatientFiles sorted by patient name. Raises DataError for a missing or
    empty folder, a folder without patients, an image without its mask (or the
    reverse), a gap in slice numbers or a stray ``.tif`` with an unexpected name.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"data folder {root} does not exist. {KAGGLE_HELP}")
    if not root.is_dir():
        raise DataError(f"data path {root} is not a folder. {KAGGLE_HELP}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"data folder {root} holds no patient folders. {KAGGLE_HELP}")
    inner = archive_data_folders(root)
    if inner:
        raise DataError(f"{root} is the downloaded Kaggle archive, not its kaggle_3m folder: pass --data {inner[0]}"
                        + (f" (the archive holds kaggle_3m {len(inner)} times, the same files each time: "
                           f"{', '.join(str(p) for p in inner)})" if len(inner) > 1 else ""))
    return [_scan_patient(folder) for folder in folders]


ARCHIVE_FOLDER = "kaggle_3m"
ARCHIVE_NESTED = "lgg-mri-segmentation"  # the Kaggle download holds kaggle_3m again under this folder


def archive_data_folders(root: Path) -> list[Path]:
    """The kaggle_3m folders inside ``root`` when ``root`` is the Kaggle archive (itself, then nested), else []."""
    candidates = [root / ARCHIVE_FOLDER, root / ARCHIVE_NESTED / ARCHIVE_FOLDER]
    return [path for path in candidates if path.is_dir()]


def _scan_patient(folder: Path) -> PatientFiles:
    images: dict[int, Path] = {}
    masks: dict[int, Path] = {}
    for path in folder.iterdir():
        if path.name.startswith(".") or not path.name.endswith(".tif"):
            continue  # .DS_Store, notes and the like are not slices
        match = _SLICE_RE.match(path.name)
        if match is None or match["patient"] != folder.name:
            raise DataError(f"{path}: unexpected file name; slices must be named "
                            f"{folder.name}_<n>.tif and {folder.name}_<n>_mask.tif. Remove or rename it.")
        (masks if match["mask"] else images)[int(match["n"])] = path
    if not images and not masks:
        raise DataError(f"patient folder {folder} holds no slices (.tif files); remove it or restore its files.")
    for n in sorted(set(images) - set(masks)):
        raise DataError(f"{images[n]}: image without its mask {folder.name}_{n}_mask.tif; restore the mask or remove the image.")
    for n in sorted(set(masks) - set(images)):
        raise DataError(f"{masks[n]}: mask without its image {folder.name}_{n}.tif; restore the image or remove the mask.")
    numbers = sorted(images)
    expected = list(range(1, len(numbers) + 1))
    if numbers != expected:
        missing = sorted(set(range(1, numbers[-1] + 1)) - set(numbers))
        raise DataError(f"patient folder {folder}: slice numbers have a gap (missing {missing[:5]}); "
                        f"slices must be numbered 1..S without gaps. Re-download the patient.")
    return PatientFiles(folder.name, folder, tuple(images[n] for n in numbers), tuple(masks[n] for n in numbers))


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        return tifffile.imread(path)
    except Exception as err:  # tifffile raises several types for corrupt files
        raise DataError(f"{path}: not a readable TIFF file ({type(err).__name__}: {err}). "
                        "Re-download or restore this file.") from err


def read_patient(files: PatientFiles) -> PatientVolume:
    """Read and validate the slices of one patient.

    Images must be (256, 256, 3) uint8 and masks (256, 256) uint8 with values in
    {0, 255} or {0, 1}; the returned mask is 0/1.
    """
    images, masks = [], []
    for image_path, mask_path in zip(files.images, files.masks):
        image = _read_tiff(image_path)
        if image.shape != SLICE_SHAPE + (3,) or image.dtype != np.uint8:
            raise DataError(f"{image_path}: image has shape {image.shape} and dtype {image.dtype}, "
                            f"expected {SLICE_SHAPE + (3,)} uint8 (Kaggle kaggle_3m slices).")
        mask = _read_tiff(mask_path)
        if mask.ndim == 3 and mask.shape[-1] in (1, 3) and (mask == mask[..., :1]).all():
            mask = mask[..., 0]  # some tools save grey masks as RGB; identical channels are harmless
        if mask.shape != SLICE_SHAPE or mask.dtype != np.uint8:
            raise DataError(f"{mask_path}: mask has shape {mask.shape} and dtype {mask.dtype}, "
                            f"expected {SLICE_SHAPE} uint8.")
        values = set(np.unique(mask).tolist())
        if not (values <= {0, 255} or values <= {0, 1}):
            raise DataError(f"{mask_path}: mask values {sorted(values)[:6]} are not binary; "
                            "masks must hold 0/255 (or 0/1) only.")
        images.append(image)
        masks.append(mask)
    return PatientVolume(files.patient, np.stack(images), (np.stack(masks) > 0).astype(np.uint8))


def read_kaggle_folder(root: str | os.PathLike, patients: list[str] | None = None) -> list[PatientVolume]:
    """Read (and check) every patient of a kaggle_3m folder, or only ``patients``."""
    scanned = select_patients(scan_folder(root), patients)
    return [read_patient(files) for files in scanned]


def select_patients(scanned: list[PatientFiles], names: list[str] | None) -> list[PatientFiles]:
    """Keep the named patients (all when ``names`` is None); unknown or repeated names are an error."""
    if names is None:
        return scanned
    by_name = {p.patient: p for p in scanned}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise DataError(f"unknown patients {unknown[:5]}; known patients start with {sorted(by_name)[:3]}.")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        # Scoring a patient twice would weigh it double in the mean: name each patient once.
        raise DataError(f"patients named more than once: {repeated[:5]}; name each patient once.")
    return [by_name[n] for n in names]


# ----------------------------------------------------------------------------
# Images only: a patient folder to segment (tfseg predict), whose masks may be absent.
# ----------------------------------------------------------------------------

def scan_images(folder: str | os.PathLike) -> PatientFiles:
    """The image slices of one kaggle_3m-style patient folder, by file name only; ``_mask.tif`` files are ignored.

    Slices are ``<name>_<n>.tif`` with one ``<name>`` for the whole folder (not necessarily the folder's
    own name) and ``n`` = 1..S without a gap. Returns PatientFiles with ``patient`` = ``<name>`` and no
    masks. Raises DataError naming the folder or file: no slices, two names, an unexpected ``.tif``
    name, or a gap in the numbers.
    """
    folder = Path(folder)
    images: dict[int, Path] = {}
    names = set()
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.name.endswith(".tif"):
            continue
        match = _SLICE_RE.match(path.name)
        if match is None:
            raise DataError(f"{path}: unexpected file name; slices must be named <name>_<n>.tif (n = 1, 2, ...), "
                            "as in kaggle_3m. Remove or rename it.")
        if match["mask"]:
            continue  # a manual mask beside the images: not needed to segment them
        names.add(match["patient"])
        images[int(match["n"])] = path
    if not images:
        raise DataError(f"{folder} holds no image slices (<name>_<n>.tif files); give a patient folder of kaggle_3m "
                        "slices, a folder of such folders, or NIfTI files")
    if len(names) > 1:
        raise DataError(f"{folder} holds slices of several scans ({', '.join(sorted(names)[:3])}); put each scan's "
                        "<name>_<n>.tif slices in a folder of its own")
    numbers = sorted(images)
    if numbers != list(range(1, len(numbers) + 1)):
        missing = sorted(set(range(1, numbers[-1] + 1)) - set(numbers))
        raise DataError(f"{folder}: slice numbers have a gap (missing {names.pop()}_{missing[0]}.tif"
                        + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                        + "); slices must be numbered 1..S without gaps. Restore the missing slices.")
    return PatientFiles(names.pop(), folder, tuple(images[n] for n in numbers), ())


def read_images(files: PatientFiles) -> np.ndarray:
    """The image slices of :func:`scan_images`, checked and stacked: (S, H, W, 3) uint8.

    Every slice must be (H, W, 3) uint8 (pre-contrast, FLAIR, post-contrast, as kaggle_3m) of one size;
    256×256 is kaggle_3m's, other sizes are accepted. Raises DataError naming the first slice that is not.
    """
    slices = []
    for path in files.images:
        image = _read_tiff(path)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise DataError(f"{path}: image has shape {image.shape}, expected (H, W, 3): three channels "
                            "(pre-contrast, FLAIR, post-contrast) as kaggle_3m slices. For other data use NIfTI "
                            "(--flair for FLAIR alone)")
        if image.dtype != np.uint8:
            raise DataError(f"{path}: image has dtype {image.dtype}, expected uint8 as kaggle_3m slices; "
                            "convert the slices, or give the scan as NIfTI (any intensity type)")
        if slices and image.shape != slices[0].shape:
            raise DataError(f"{path}: slice of size {image.shape[:2]}, but {files.images[0].name} is "
                            f"{slices[0].shape[:2]}; every slice of a scan must have one size")
        slices.append(image)
    return np.stack(slices)
