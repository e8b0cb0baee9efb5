"""NIfTI scans in and masks out, in kaggle_3m's slice layout (``tfseg predict``).

A scan is either one 4-D file holding the three sequences in kaggle_3m's channel order
(pre-contrast, FLAIR, post-contrast), or one 3-D file per sequence (:func:`read_sequences`;
FLAIR is required, a missing pre- or post-contrast volume is replaced by the FLAIR volume,
as kaggle_3m does for its patients that lack a sequence).

Reading (:func:`read_4d`, :func:`read_sequences`):

1. The orientation must be known: a finite, invertible affine, from a qform or an sform
   (a header with both codes 0 says nothing about orientation), whose every voxel axis lies
   clearly closer to one of the world's axes than to the others (an axis at 45° between two
   of them is ambiguous). Otherwise :class:`NiftiError`.
2. The volume is reoriented to the closest canonical orientation (``nibabel.as_closest_canonical``,
   RAS+: x to the patient's right, y anterior, z superior) and cut into axial slices, each shown
   as kaggle_3m's slices are (radiological convention): rows from anterior to posterior, columns
   from the patient's right to left; slice 1 is the lowest. ``(X, Y, Z) -> (S = Z, H = Y, W = X)``.
3. Intensities are mapped to uint8, per volume and sequence, by one rule
   (:func:`intensity_to_uint8`): clip to the 0.5th..99.5th percentile of the volume's non-zero
   voxels, scale that range linearly to 0..255 and round; zero (and non-finite) voxels stay 0,
   so the background the protocol crops away stays background. Any dtype is accepted.

Writing (:func:`write_like`): a volume in slice layout is turned back (:func:`to_input_grid`)
onto the input file's own voxel grid and saved with the input's affine and header; probabilities
(:func:`write_probabilities_like`) in 16 bits per voxel, uint16 with a ``scl_slope`` of 1/65535.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tfseg.data.kaggle import DataError

SEQUENCES = ("pre-contrast", "FLAIR", "post-contrast")  # kaggle_3m's channel order
SUFFIXES = (".nii.gz", ".nii")
PERCENTILES = (0.5, 99.5)  # the intensity window, over the non-zero voxels of one volume and sequence
AXIS_TOLERANCE = 1e-3  # how much closer to one world axis than to the next a voxel axis must lie
# Probabilities are stored as uint16 steps of 1/PROBABILITY_STEPS (scl_slope): NIfTI has no float16.
PROBABILITY_DTYPE = np.uint16
PROBABILITY_STEPS = 65535
INTENSITY_RULE = ("per volume and sequence: clip to the 0.5th..99.5th percentile of the non-zero voxels, "
                  "scale to 0..255; zero voxels stay 0")


class NiftiError(DataError):
    """A NIfTI file cannot be segmented as given; the message names the file and says what to do."""


@dataclass
class NiftiScan:
    """One scan read from NIfTI.

    ``image``: (S, H, W, 3) uint8 axial slices (see the module docstring), channels in kaggle_3m's order.
    ``reference``: the nibabel image whose voxel grid, affine and header the outputs take (the 4-D file,
    or the FLAIR file); ``orientation``: its ``nibabel.io_orientation``. ``spacing_mm``: (slice, row,
    column) voxel size in mm, None when the header's unit is not a length. ``substituted``: the sequences
    replaced by FLAIR. ``files``: the files read.
    """

    image: np.ndarray
    reference: object = field(repr=False)
    orientation: np.ndarray = field(repr=False)
    spacing_mm: tuple[float, float, float] | None
    substituted: list[str]
    files: list[Path]

    @property
    def voxel_ml(self) -> float | None:
        """One voxel's volume in millilitres (cm³), None when the spacing is unknown."""
        return None if self.spacing_mm is None else float(np.prod(self.spacing_mm)) / 1000.0


def is_nifti(path: str | os.PathLike) -> bool:
    return Path(path).name.lower().endswith(SUFFIXES)


def case_name(path: str | os.PathLike) -> str:
    """The file name without ``.nii`` / ``.nii.gz``."""
    name = Path(path).name
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return Path(path).stem


def load(path: str | os.PathLike):
    """The nibabel image of a NIfTI file, its orientation checked; NiftiError naming the file otherwise."""
    import nibabel

    path = Path(path)
    if not path.is_file():
        raise NiftiError(f"{path} does not exist; give the path of a .nii or .nii.gz file")
    try:
        image = nibabel.load(path)
    except Exception as err:  # nibabel raises ImageFileError, EOFError, zlib errors... for a bad file
        raise NiftiError(f"{path}: not a readable NIfTI file ({type(err).__name__}: {err}); check that it is a "
                         "complete .nii or .nii.gz file") from err
    if not isinstance(image, (nibabel.Nifti1Image, nibabel.Nifti2Image)):
        raise NiftiError(f"{path}: a {type(image).__name__}, not a NIfTI image; convert it to NIfTI (.nii.gz)")
    check_orientation(image, path)
    return image


def check_orientation(image, path: Path) -> np.ndarray:
    """``nibabel.io_orientation`` of ``image``; NiftiError when its orientation is unknown or ambiguous."""
    import nibabel

    header = image.header
    fix = ("set the file's orientation (its sform or qform, e.g. with `fslorient` or nibabel's set_sform) and "
           "run again")
    if int(header["sform_code"]) == 0 and int(header["qform_code"]) == 0:
        raise NiftiError(f"{path}: the orientation is unknown (the header's sform_code and qform_code are both 0, "
                         f"so nothing says where the axial slices lie); {fix}")
    affine = image.affine
    linear = affine[:3, :3]
    if not np.isfinite(affine).all() or abs(np.linalg.det(linear)) < 1e-12:
        raise NiftiError(f"{path}: the affine is {'not finite' if not np.isfinite(affine).all() else 'singular'} "
                         f"({np.array2string(linear, precision=3, separator=', ').replace(chr(10), '')}), so the "
                         f"orientation is unknown; {fix}")
    cosines = np.sort(np.abs(linear / np.linalg.norm(linear, axis=0)), axis=0)
    ambiguous = np.flatnonzero(cosines[-1] - cosines[-2] < AXIS_TOLERANCE)
    orientation = nibabel.io_orientation(affine)
    if ambiguous.size or np.isnan(orientation).any():
        axis = int(ambiguous[0]) if ambiguous.size else int(np.flatnonzero(np.isnan(orientation[:, 0]))[0])
        raise NiftiError(f"{path}: the orientation is ambiguous: voxel axis {axis} lies as close to one of the "
                         "world's axes as to another (an oblique scan at 45°), so the axial slices cannot be chosen; "
                         "resample the scan onto a grid aligned with the patient (e.g. with `mri_convert` or "
                         "`flirt -applyxfm`) and run again")
    return orientation


def intensity_to_uint8(volume: np.ndarray) -> np.ndarray:
    """Any-dtype volume -> uint8 of the same shape, by :data:`INTENSITY_RULE`.

    The 0.5th and 99.5th percentiles of the non-zero finite voxels are mapped to 0 and 255 (linear
    between, clipped outside); zero and non-finite voxels become 0. A volume whose non-zero voxels
    all have one value maps them to 255; an all-zero volume stays zero.
    """
    values = np.asarray(volume, np.float64)
    values = np.where(np.isfinite(values), values, 0.0)
    foreground = values != 0
    if not foreground.any():
        return np.zeros(values.shape, np.uint8)
    low, high = np.percentile(values[foreground], PERCENTILES)
    if high > low:
        scaled = np.clip((values - low) / (high - low), 0.0, 1.0) * 255.0
    else:
        scaled = np.full(values.shape, 255.0)
    out = np.rint(scaled).astype(np.uint8)
    out[~foreground] = 0
    return out


def canonical_to_slices(volume: np.ndarray) -> np.ndarray:
    """A canonical (RAS+) (X, Y, Z[, C]) volume -> (S = Z, H = Y, W = X[, C]) slices, rows anterior -> posterior,
    columns right -> left (kaggle_3m's, radiological)."""
    volume = np.asarray(volume)[::-1, ::-1]
    return np.ascontiguousarray(np.swapaxes(volume, 0, 2))


def slices_to_canonical(slices: np.ndarray) -> np.ndarray:
    """The inverse of :func:`canonical_to_slices`: (S, H, W[, C]) -> canonical (X, Y, Z[, C])."""
    return np.ascontiguousarray(np.swapaxes(np.asarray(slices), 0, 2)[::-1, ::-1])


def to_input_grid(slices: np.ndarray, scan: NiftiScan) -> np.ndarray:
    """A (S, H, W) volume in :attr:`NiftiScan.image`'s slice layout -> the reference file's own (I, J, K) grid."""
    import nibabel.orientations as orientations

    canonical = slices_to_canonical(slices)
    back = orientations.ornt_transform(orientations.axcodes2ornt(("R", "A", "S")), scan.orientation)
    return np.ascontiguousarray(orientations.apply_orientation(canonical, back))


def _canonical_data(image, path: Path) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    """(the voxels of ``image`` in canonical orientation, (x, y, z) voxel size in mm or None)."""
    import nibabel

    canonical = nibabel.as_closest_canonical(image)
    try:
        data = np.asanyarray(canonical.dataobj)
    except Exception as err:
        raise NiftiError(f"{path}: the voxel data cannot be read ({type(err).__name__}: {err}); the file may be "
                         "truncated: copy it again") from err
    unit = image.header.get_xyzt_units()[0]
    # NIfTI writers that leave the unit unset ("unknown") mean millimetres in practice (ITK, FSL, nibabel).
    scale = {"mm": 1.0, "unknown": 1.0, "meter": 1000.0, "micron": 0.001}.get(unit)
    zooms = canonical.header.get_zooms()[:3]
    spacing = None if scale is None or not all(np.isfinite(zooms)) or min(zooms) <= 0 else \
        tuple(float(z) * scale for z in zooms)
    return data, spacing


def _slice_spacing(spacing_xyz):
    return None if spacing_xyz is None else (spacing_xyz[2], spacing_xyz[1], spacing_xyz[0])


def read_4d(path: str | os.PathLike) -> NiftiScan:
    """One 4-D file holding (X, Y, Z, 3) voxels: pre-contrast, FLAIR, post-contrast. NiftiError otherwise."""
    path = Path(path)
    image = load(path)
    shape = image.shape
    if len(shape) == 3 or (len(shape) == 4 and shape[3] == 1):
        raise NiftiError(f"{path} holds one 3-D volume {shape[:3]}, not the three sequences: pass it with --flair "
                         "(FLAIR alone; the other two are replaced by it), or give --pre, --flair and --post")
    if len(shape) != 4:
        raise NiftiError(f"{path} is {len(shape)}-D {tuple(shape)}: tfseg reads a 4-D file of shape (X, Y, Z, 3) "
                         "(pre-contrast, FLAIR, post-contrast) or one 3-D file per sequence (--pre, --flair, --post)")
    if shape[3] != 3:
        raise NiftiError(f"{path} holds {shape[3]} volumes along its 4th axis, expected 3 (pre-contrast, FLAIR, "
                         "post-contrast, in that order); give the sequences as 3-D files with --pre/--flair/--post")
    data, spacing = _canonical_data(image, path)
    channels = [intensity_to_uint8(data[..., c]) for c in range(3)]
    return NiftiScan(canonical_to_slices(np.stack(channels, axis=-1)), image, check_orientation(image, path),
                     _slice_spacing(spacing), [], [path])


def read_sequences(flair: str | os.PathLike, pre: str | os.PathLike | None = None,
                   post: str | os.PathLike | None = None) -> NiftiScan:
    """One 3-D file per sequence on one voxel grid; a missing ``pre`` or ``post`` is replaced by ``flair``.

    The outputs take the FLAIR file's grid. NiftiError naming the file: not 3-D, or not on the FLAIR's grid.
    """
    given = {"pre-contrast": pre, "FLAIR": flair, "post-contrast": post}
    paths = {name: Path(p) for name, p in given.items() if p is not None}
    images = {}
    for name, path in paths.items():
        image = load(path)
        shape = image.shape
        if len(shape) == 4 and shape[3] == 1:
            image = image.slicer[..., 0]
        elif len(shape) != 3:
            hint = (" (a 4-D file with the three sequences goes in --input)" if len(shape) == 4 and shape[3] == 3
                    else "")
            raise NiftiError(f"{path} ({name}) is {len(shape)}-D {tuple(shape)}, expected one 3-D volume{hint}")
        images[name] = image
    reference = images["FLAIR"]
    for name, image in images.items():
        if image.shape != reference.shape or not np.allclose(image.affine, reference.affine, atol=1e-3):
            raise NiftiError(f"{paths[name]} ({name}) does not lie on the FLAIR's voxel grid ({paths['FLAIR']}: shape "
                             f"{reference.shape}; this one {image.shape}, or a different affine); resample it onto "
                             "the FLAIR's grid first (tfseg does not register sequences)")
    flair_data, spacing = _canonical_data(reference, paths["FLAIR"])
    flair_uint8 = intensity_to_uint8(flair_data)
    channels, substituted = [], []
    for name in SEQUENCES:
        if name == "FLAIR":
            channels.append(flair_uint8)
        elif name in images:
            channels.append(intensity_to_uint8(_canonical_data(images[name], paths[name])[0]))
        else:
            channels.append(flair_uint8)
            substituted.append(name)
    return NiftiScan(canonical_to_slices(np.stack(channels, axis=-1)), reference,
                     check_orientation(reference, paths["FLAIR"]), _slice_spacing(spacing), substituted,
                     [paths[name] for name in SEQUENCES if name in paths])


def write_like(path: str | os.PathLike, slices: np.ndarray, scan: NiftiScan, dtype, slope: float = 1.0) -> Path:
    """Save a (S, H, W) volume in slice layout on the reference file's grid, with its affine and header.

    ``dtype``: the stored type, uint8 for a 0/1 mask; ``slope``: the header's ``scl_slope`` (stored value x
    ``slope`` = the value a reader sees; 1: none), as :func:`write_probabilities_like` stores probabilities.
    The file type follows ``path``'s suffix (.nii.gz compressed).
    """
    import nibabel

    path = Path(path)
    reference = scan.reference
    data = to_input_grid(np.asarray(slices).astype(dtype), scan)
    header = reference.header.copy()
    header.set_data_dtype(dtype)
    out = type(reference)(data, reference.affine, header)
    out.header.set_slope_inter(slope, 0.0)
    out.header["cal_min"], out.header["cal_max"] = (0, 1)
    out.header["intent_code"] = 0
    nibabel.save(out, path)
    return path


def write_probabilities_like(path: str | os.PathLike, probabilities: np.ndarray, scan: NiftiScan) -> Path:
    """Save (S, H, W) probabilities in [0, 1] like :func:`write_like`, in 16 bits per voxel.

    NIfTI has no float16 data type (nibabel refuses it), so the 16-bit form is NIfTI's own:
    uint16 steps of 1/65535 with that ``scl_slope`` in the header, which NIfTI readers apply as the
    standard asks (nibabel's ``get_fdata``, ITK, FSL). Half the bytes of float32, the size of float16,
    and finer than float16 near 1 (a step of 1.5e-5 against 4.9e-4).
    """
    steps = np.rint(np.clip(np.asarray(probabilities, np.float64), 0.0, 1.0) * PROBABILITY_STEPS)
    return write_like(path, steps.astype(PROBABILITY_DTYPE), scan, PROBABILITY_DTYPE, slope=1.0 / PROBABILITY_STEPS)
