"""Get kaggle_3m when the user has none: download with kagglehub, find the folder, verify every file.

``python train.py`` without ``--data`` uses ``./kaggle_3m`` when it exists and otherwise
calls :func:`default_kaggle_3m`, which

1. downloads the Kaggle dataset ``mateuszbuda/lgg-mri-segmentation`` with ``kagglehub``
   (:func:`download_dataset`, the only function that touches the network; it caches
   under ``~/.cache/kagglehub`` and reads ``~/.kaggle/kaggle.json`` or the
   ``KAGGLE_USERNAME``/``KAGGLE_KEY`` variables when Kaggle asks for credentials),
2. finds the ``kaggle_3m`` folder inside the download (:func:`find_kaggle_3m`), and
3. checks the SHA-256 of all 7,858 ``.tif`` files against the list shipped with
   tfseg (``kaggle_3m.sha256.gz``, :func:`verify_kaggle_3m`): a changed or missing
   file stops with its name, so a partial or corrupt download is never trained on.
   A verified folder gets a small stamp (file names, sizes and modification times),
   so later runs skip the 1 GB of hashing until a file changes.

``--data`` given explicitly never downloads anything.
"""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

from tfseg.data.kaggle import KAGGLE_HELP, DataError
from tfseg.fileio import sha256_file, write_text_atomic

DATASET = "mateuszbuda/lgg-mri-segmentation"
CHECKSUMS = Path(__file__).with_name("kaggle_3m.sha256.gz")
STAMP = ".tfseg-verified.json"
DEFAULT_FOLDER = Path("kaggle_3m")


def expected_checksums() -> dict[str, str]:
    """``{"<patient>/<file>.tif": sha256}`` of the published kaggle_3m set (7,858 files)."""
    with gzip.open(CHECKSUMS, "rt") as f:
        pairs = (line.split() for line in f if line.strip())
        return {name: digest for digest, name in pairs}


def download_dataset() -> Path:
    """Download (or reuse kagglehub's cached copy of) the Kaggle dataset; returns the download folder.

    Needs the network: not exercised by the tests. Any failure becomes a DataError that says what
    happened and how to download by hand.
    """
    try:
        import kagglehub
    except ImportError as err:
        raise DataError(f"kagglehub is not installed (pip install -r requirements.txt). {KAGGLE_HELP}") from err
    print(f"downloading the Kaggle dataset {DATASET} with kagglehub (about 1 GB, cached for later runs)…")
    try:
        return Path(kagglehub.dataset_download(DATASET))
    except Exception as err:  # network errors, HTTP 401/403 from Kaggle, disk full: all end the same way
        raise DataError(f"could not download {DATASET} from Kaggle ({type(err).__name__}: {str(err)[:300]}). "
                        "Offline, or Kaggle refused the request (it may want credentials: put your API token in "
                        "~/.kaggle/kaggle.json or set KAGGLE_USERNAME and KAGGLE_KEY). Or download by hand: "
                        f"{KAGGLE_HELP}") from err


def find_kaggle_3m(root: str | os.PathLike) -> Path:
    """The ``kaggle_3m`` folder in a download: ``root`` itself or the first (sorted) one below it.

    Kaggle's archive has held it at ``kaggle_3m/`` and at ``lgg-mri-segmentation/kaggle_3m/``.
    """
    root = Path(root)
    if _holds_patients(root):
        return root
    candidates = sorted(p for p in root.rglob("kaggle_3m") if p.is_dir() and _holds_patients(p))
    if not candidates:
        raise DataError(f"no kaggle_3m folder with patient folders (TCGA_*) under {root}; the download may be "
                        f"incomplete: delete it and run again, or {KAGGLE_HELP}")
    return min(candidates, key=lambda p: (len(p.parts), str(p)))


def _holds_patients(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_dir() and p.name.startswith("TCGA_") for p in folder.iterdir())


def verify_kaggle_3m(folder: str | os.PathLike, require_all: bool = True, progress: bool = True) -> int:
    """Check every ``.tif`` under ``folder`` against the published SHA-256 list; returns the files checked.

    ``require_all``: every one of the 7,858 files must be there (a download); False checks the
    files present (a subset of patients) but still rejects unknown or changed ones. Raises
    DataError naming the first missing, unknown or changed file.
    """
    folder = Path(folder)
    expected = expected_checksums()
    present = sorted(p.relative_to(folder).as_posix() for p in folder.glob("*/*.tif"))
    if require_all:
        missing = sorted(set(expected) - set(present))
        if missing:
            raise DataError(f"{folder}: {len(missing)} of {len(expected)} files are missing, e.g. "
                            f"{folder / missing[0]}; the download is incomplete: delete it and download again")
    unknown = [name for name in present if name not in expected]
    if unknown:
        raise DataError(f"{folder / unknown[0]} is not a file of the published kaggle_3m set "
                        f"({len(unknown)} such files); remove it or download the data set again")
    if _stamp_matches(folder, present):
        return len(present)
    from tqdm import tqdm

    for name in tqdm(present, desc="verifying SHA-256", unit="file", disable=not progress):
        if sha256_file(folder / name) != expected[name]:
            raise DataError(f"{folder / name} differs from the published kaggle_3m file (SHA-256 mismatch): "
                            "the file is corrupt or was changed; delete the folder and download it again")
    if require_all:
        _write_stamp(folder, present)
    return len(present)


def _fingerprint(folder: Path, names: list[str]) -> list:
    return [[name, (folder / name).stat().st_size, (folder / name).stat().st_mtime_ns] for name in names]


def _stamp_matches(folder: Path, names: list[str]) -> bool:
    try:
        return json.loads((folder / STAMP).read_text()) == _fingerprint(folder, names)
    except (OSError, json.JSONDecodeError):
        return False


def _write_stamp(folder: Path, names: list[str]) -> None:
    try:
        write_text_atomic(folder / STAMP, json.dumps(_fingerprint(folder, names)))
    except OSError:
        pass  # a read-only cache: verify again next time


def default_kaggle_3m(local: str | os.PathLike = DEFAULT_FOLDER) -> Path:
    """``--data`` when the user gave none: ``./kaggle_3m`` if present, else a verified download."""
    local = Path(local)
    if local.exists():
        return local
    folder = find_kaggle_3m(download_dataset())
    size = sum(p.stat().st_size for p in folder.glob("*/*.tif"))
    print(f"kaggle_3m: {folder} ({size / 2**30:.2f} GiB)")
    verify_kaggle_3m(folder)
    return folder
