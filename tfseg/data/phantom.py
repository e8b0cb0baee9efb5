"""A synthetic stand-in for Kaggle's kaggle_3m folder, so every stage can run without the download.

`write_phantom(dest)` writes, for each made-up patient `TCGA_PH_0001_20000101`, ...::

    dest/<patient>/<patient>_<n>.tif        (256, 256, 3) uint8 RGB TIFF, n = 1, 2, ...
                                            channels: pre-contrast, FLAIR, post-contrast
    dest/<patient>/<patient>_<n>_mask.tif   (256, 256) uint8 grayscale TIFF, 0 or 255
    dest/data.csv, dest/README.md           (not slices; readers ignore them)

The files have the real set's format (uncompressed, contiguous, little-endian,
photometric RGB for images and MINISBLACK for masks, ~8 KiB strips). Each volume
looks roughly like an axial brain stack: a head ellipse (scalp, dark skull,
textured brain, ventricles) on an exactly-zero background, small and dim on the
first and last slices; on a contiguous middle run of about `lesion_fraction` of
the slices an irregular lesion that is bright in FLAIR, and whose mask is
exactly the set of brightened pixels. Everything is deterministic from `seed`.

Command line::

    python -m tfseg.data.phantom DEST [--patients 4] [--slices 12] [--seed 0] [--size 256]
"""
from __future__ import annotations

import sys
import datetime
import math
import pathlib

import numpy as np
import tifffile
from scipy import ndimage

__all__ = ["write_phantom", "main"]

# Header of Kaggle's kaggle_3m/data.csv; the phantom fills only the patient column.
_CSV_COLUMNS = (
    "Patient,RNASeqCluster,MethylationCluster,miRNACluster,CNCluster,RPPACluster,OncosignCluster,"
    "COCCluster,histological_type,neoplasm_histologic_grade,tumor_tissue_site,laterality,tumor_location,"
    "gender,age_at_initial_pathologic,race,ethnicity,death01"
)
_STRIP_BYTES = 8192  # the real files are written in ~8 KiB strips

# Mean intensity of each tissue per channel (pre-contrast, FLAIR, post-contrast), on a 0..255 scale.
_SCALP = np.array([115.0, 95.0, 105.0])
_SKULL = np.array([12.0, 10.0, 12.0])
_BRAIN = np.array([62.0, 64.0, 60.0])
_VENTRICLE = np.array([28.0, 18.0, 26.0])  # CSF is dark in FLAIR
_LESION_DELTA = np.array([-8.0, 60.0, 12.0])  # FLAIR hyperintensity


def write_phantom(dest, n_patients: int = 4, n_slices: int = 12, size: int = 256, seed: int = 0,
                  lesion_fraction: float = 0.5) -> pathlib.Path:
    """Write a kaggle_3m-shaped folder of synthetic patients and return `dest` as a Path.

    Args:
        dest: folder to write into (created if needed; existing phantom files are overwritten).
        n_patients: number of patient folders, named `TCGA_PH_0001_<date>`, `TCGA_PH_0002_<date>`, ...
        n_slices: slices per patient, files `<patient>_1.tif` ... `<patient>_<n_slices>.tif`.
        size: height and width of every slice (the real set has 256).
        seed: the whole folder is a deterministic function of the arguments.
        lesion_fraction: fraction of each patient's slices (a contiguous middle run) holding a lesion.
    """
    if n_patients < 1 or n_slices < 1:
        raise ValueError(f"need n_patients >= 1 and n_slices >= 1, got {n_patients} and {n_slices}")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    if not 0.0 <= lesion_fraction <= 1.0:
        raise ValueError(f"lesion_fraction must be in [0, 1], got {lesion_fraction}")

    dest = pathlib.Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [_patient_name(i) for i in range(n_patients)]
    for name in names:
        folder = dest / name
        folder.mkdir(exist_ok=True)
        images, masks = _patient_volume(rng, n_slices, size, lesion_fraction)
        for n, (image, mask) in enumerate(zip(images, masks), start=1):
            _write_tif(folder / f"{name}_{n}.tif", image, "rgb")
            _write_tif(folder / f"{name}_{n}_mask.tif", mask, "minisblack")

    rows = [_CSV_COLUMNS] + [name.rsplit("_", 1)[0] + "," * _CSV_COLUMNS.count(",") for name in names]
    (dest / "data.csv").write_text("\n".join(rows) + "\n")
    (dest / "README.md").write_text(
        "# Synthetic LGG phantom (tfseg)\n\n"
        "A made-up stand-in for Kaggle's `kaggle_3m` folder, written by `tfseg.data.phantom`: "
        f"{n_patients} patients x {n_slices} slices, {size}x{size}, seed {seed}. "
        "Same layout and file format as the real set (`<patient>_<n>.tif`: RGB uint8, channels "
        "pre-contrast, FLAIR, post-contrast; `<patient>_<n>_mask.tif`: uint8 0/255). "
        "Not medical data; for tests and dry runs only.\n")
    return dest


def _patient_name(index: int) -> str:
    date = datetime.date(2000, 1, 1) + datetime.timedelta(days=97 * index)
    return f"TCGA_PH_{index + 1:04d}_{date:%Y%m%d}"


def _write_tif(path: pathlib.Path, array: np.ndarray, photometric: str) -> None:
    samples = array.shape[2] if array.ndim == 3 else 1
    rows_per_strip = math.ceil(_STRIP_BYTES / (array.shape[1] * samples))
    tifffile.imwrite(path, array, photometric=photometric, rowsperstrip=rows_per_strip,
                     metadata=None, software=False)


def _patient_volume(rng: np.random.Generator, n_slices: int, size: int, lesion_fraction: float):
    """(S, H, W, 3) uint8 images and (S, H, W) uint8 0/255 masks of one synthetic patient."""
    centre = size / 2 + rng.uniform(-0.03, 0.03, size=2) * size
    half_height = rng.uniform(0.36, 0.42) * size
    half_width = half_height * rng.uniform(0.78, 0.88)
    tilt = np.deg2rad(rng.uniform(-10, 10))
    contrast = rng.uniform(0.85, 1.15, size=3)

    run = min(n_slices, int(round(lesion_fraction * n_slices)))
    start = int(np.clip((n_slices - run) // 2 + rng.integers(-1, 2), 0, n_slices - run))
    # Off the midline, clear of the ventricles.
    lesion_centre = centre + np.array([rng.uniform(-0.3, 0.3) * half_height,
                                       rng.choice([-1, 1]) * rng.uniform(0.35, 0.5) * half_width])
    lesion_radius = rng.uniform(0.07, 0.11) * size
    harmonics = rng.uniform(0.03, 0.14, size=3)  # amplitude of the 2nd..4th angular harmonics
    phases = rng.uniform(0, 2 * np.pi, size=3)

    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    dy, dx = rows - centre[0], cols - centre[1]
    along = np.cos(tilt) * dy + np.sin(tilt) * dx  # head axes, tilted
    across = -np.sin(tilt) * dy + np.cos(tilt) * dx

    images = np.zeros((n_slices, size, size, 3), np.uint8)
    masks = np.zeros((n_slices, size, size), np.uint8)
    for k in range(n_slices):
        u = 2 * (k + 0.5) / n_slices - 1  # -1 (bottom) .. 1 (top) of the stack
        extent = math.sqrt(1 - 0.8 * u * u)  # the head is smaller at both ends ...
        brightness = 1 - 0.55 * u ** 4  # ... and dimmer
        rho = np.hypot(along / (half_height * extent), across / (half_width * extent))
        head = rho < 1.0
        brain = rho < 0.86

        image = np.zeros((size, size, 3))
        image[head] = _SCALP
        image[(rho >= 0.86) & (rho < 0.9)] = _SKULL
        image[brain] = _BRAIN
        if abs(u) < 0.5:  # two ventricles in the middle of the stack
            for side in (-1, 1):
                v = np.hypot((along + 0.05 * half_height) / (0.2 * half_height * extent),
                             (across - side * 0.13 * half_width) / (0.05 * half_width * extent))
                image[brain & (v < 1)] = _VENTRICLE
        texture = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma=size / 50)
        texture /= texture.std() + 1e-12
        image[brain] += 6.0 * texture[brain, None]

        lesion = np.zeros((size, size), bool)
        if start <= k < start + run:
            v = (k - start + 0.5) / run * 2 - 1  # -1 .. 1 along the lesion run
            radius = lesion_radius * math.sqrt(1 - 0.75 * v * v)
            ly, lx = lesion_centre + rng.normal(0, 0.01 * size, size=2)
            theta = np.arctan2(rows - ly, cols - lx)
            wobble = sum(a * np.cos((h + 2) * theta + p + 0.3 * k)
                         for h, (a, p) in enumerate(zip(harmonics, phases)))
            lesion = (np.hypot(rows - ly, cols - lx) < radius * (1 + wobble)) & (rho < 0.8)
            inner = 0.8 + 0.2 * np.clip(texture, -1, 1)  # lesions are not uniform, but stay bright
            image[lesion] += _LESION_DELTA * inner[lesion, None]

        image = image * contrast * brightness + rng.normal(0, 2.5, size=image.shape)
        image[~head] = 0.0
        images[k] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        masks[k] = np.where(lesion, 255, 0).astype(np.uint8)
    return images, masks


if __name__ == "__main__":  # `python -m tfseg.data.phantom`: the same command as `tfseg phantom`
    from tfseg.cli.phantom import main

    sys.exit(main(prog="python -m tfseg.data.phantom"))
