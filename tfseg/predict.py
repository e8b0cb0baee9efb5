"""Segment scans that have no masks (``tfseg predict``): kaggle_3m-style .tif folders or NIfTI files.

    tfseg predict --model pretrained --input PATIENT_DIR --out OUT
    tfseg predict --model RUN_DIR --input FOLDER_OF_PATIENTS --out OUT [--tta]
    tfseg predict --model pretrained --input scan.nii.gz --out OUT          # 4-D: pre, FLAIR, post
    tfseg predict --model pretrained --flair flair.nii.gz [--pre P --post Q] --out OUT

Per case (:func:`segment`), exactly as ``tfseg evaluate`` computes its native masks: the
protocol's preprocessing (:func:`tfseg.data.preprocess.preprocess_volume`), the image and its
flip predicted (:func:`tfseg.inference.predict_views`), their mean with ``--tta`` (else the
image's view alone), the probabilities mapped back onto the input's slices
(:func:`~tfseg.data.preprocess.invert_volume`, order 1), then the post-processing rule the
model carries (:func:`tfseg.postprocess.rule_for_model`; the protocol's threshold 0.5 and
largest 3-D component when it carries none). The flip is always predicted: its disagreement
with the image is the case's uncertainty score (:func:`tfseg.uncertainty.disagreement_score`,
in the preprocessed geometry, as ``evaluate --uncertainty``), which ranks the cases to check
first; with the share of the probability kept by the rule
(:func:`tfseg.postprocess.kept_mass_fraction`) it decides whether a mask is *suspect*
(:func:`tfseg.postprocess.suspect_reasons`).

Outputs, each case written into a temporary folder and renamed (no half-written case):

* ``OUT/<case>/<name>_<n>_mask.tif`` (uint8 0/255, kaggle_3m's names) for a .tif case, or
  ``OUT/<case>/<case>_mask.nii.gz`` (uint8 0/1, on the input's voxel grid, with its affine and
  header) for a NIfTI case; with ``--save-probabilities`` also ``<case>_probabilities.npz``
  (float16 (S, H, W), key ``probabilities``) or ``<case>_probabilities.nii.gz`` (16 bits per voxel:
  NIfTI has no float16, so uint16 steps of 1/65535 with that ``scl_slope``,
  :func:`tfseg.data.nifti.write_probabilities_like`);
* ``OUT/<case>/view.html``: a page to look through the slices (:mod:`tfseg.viewer`), unless ``--no-viewer``;
* ``OUT/predictions.csv``: one row per case (:data:`COLUMNS`), and ``OUT/predict.json``: the model,
  the rule and the options.

A case that cannot be read, segmented or written (a bad input, or an OSError: a full disk, a permission
refused) is named with the file, and left out: its temporary folder is removed, so nothing of it is
half-written. The others go on, and :class:`PredictError` lists the failed cases at the end (exit code 2).
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Sequence

import numpy as np

from tfseg.data import nifti
from tfseg.data.kaggle import DataError, archive_data_folders, read_images, scan_images
from tfseg.errors import TfsegError

PREDICTIONS = "predictions.csv"
PREDICT_JSON = "predict.json"
VIEWER_PAGE = "view.html"
COLUMNS = {
    "case": "the case's name: its folder (.tif) or its file without .nii/.nii.gz (NIfTI; the FLAIR file's)",
    "input": "the folder or file(s) read",
    "format": "tif or nifti",
    "slices": "axial slices",
    "tumour_voxels": "voxels of the final mask",
    "volume_ml": "the mask's volume in ml, where the voxel size is known (NIfTI); empty for .tif slices",
    "uncertainty": "1 - Jaccard index of the masks of the image and of its flip (0 = they agree)",
    "check_first_rank": "1 = the most uncertain case, to check first",
    "kept_mass": "share of the probability above the threshold that the final mask keeps",
    "suspect": "True when the mask should be checked first (suspect_reasons says why)",
    "suspect_reasons": "why, '; '-separated; empty when not suspect",
    "substituted": "sequences replaced by FLAIR (FLAIR-only input), '; '-separated",
    "rule": "the post-processing rule applied",
    "error": "why the case failed (then the other columns are empty)",
}


class PredictError(TfsegError, ValueError):
    """The input cannot be segmented as given, or some cases failed; the message names them."""


@dataclass
class PredictOptions:
    """How ``tfseg predict`` predicts and what it writes."""

    tta: bool = False  # the mask from the mean of the image and its flip (the flip is predicted anyway)
    batch_size: int = 16
    save_probabilities: bool = False
    viewer: bool = True


@dataclass
class Case:
    """One scan to segment: ``format`` "tif" (``path`` a patient folder) or "nifti" (``path`` a 4-D file,
    or ``sequences`` {"pre": ..., "flair": ..., "post": ...} with ``path`` the FLAIR file)."""

    name: str
    format: str
    path: Path
    sequences: dict[str, Path | None] = field(default_factory=dict)

    def describe_input(self) -> str:
        if self.sequences:
            return "; ".join(f"{k}={v}" for k, v in self.sequences.items() if v is not None)
        return str(self.path)


@dataclass
class Scan:
    """A case read: ``image`` (S, H, W, 3) uint8 slices; ``prefix`` the .tif slices' ``<name>`` (tif);
    ``nifti`` the NIfTI scan (its grid, for writing); ``voxel_ml`` None when unknown."""

    image: np.ndarray
    substituted: list[str] = field(default_factory=list)
    voxel_ml: float | None = None
    prefix: str | None = None
    nifti: nifti.NiftiScan | None = None


@dataclass
class Segmentation:
    """One case segmented, on its input slices: ``mask`` (S, H, W) bool, ``probabilities`` (S, H, W) float32,
    ``uncertainty_map`` (S, H, W) float32 in [0, 0.5] (the views' standard deviation), the scores."""

    mask: np.ndarray = field(repr=False)
    probabilities: np.ndarray = field(repr=False)
    uncertainty_map: np.ndarray = field(repr=False)
    uncertainty: float
    kept_mass: float
    suspect_reasons: list[str]


# ----------------------------------------------------------------------------
# Finding and reading the cases
# ----------------------------------------------------------------------------

def find_cases(input: str | Path | None = None, flair: str | Path | None = None, pre: str | Path | None = None,
               post: str | Path | None = None) -> list[Case]:
    """The cases of ``input`` (a patient folder, a folder of them and/or of 4-D NIfTI files, or one 4-D NIfTI
    file), or the one NIfTI case of ``flair`` (with ``pre``/``post`` when given). PredictError when neither
    or both are given, or the input holds nothing to segment."""
    if input is not None and any(p is not None for p in (flair, pre, post)):
        raise PredictError("give either --input (a .tif folder or a 4-D NIfTI file) or --flair [--pre --post] "
                           "(3-D NIfTI files), not both")
    if input is None:
        if flair is None:
            raise PredictError("nothing to segment: give --input (a patient folder of <name>_<n>.tif slices, a "
                               "folder of them, or a 4-D NIfTI file) or --flair FILE (3-D NIfTI, with --pre and "
                               "--post when you have them)")
        flair = Path(flair)
        return [Case(nifti.case_name(flair), "nifti", flair,
                     {"pre": _path(pre), "flair": flair, "post": _path(post)})]
    root = Path(input)
    if not root.exists():
        raise PredictError(f"input {root} does not exist; give a patient folder of <name>_<n>.tif slices, a "
                           "folder of them, or a NIfTI file")
    if root.is_file():
        if not nifti.is_nifti(root):
            raise PredictError(f"input {root} is a file but not NIfTI (.nii, .nii.gz); give a NIfTI file, or the "
                               "folder that holds the .tif slices")
        return [Case(nifti.case_name(root), "nifti", root)]
    if any(p.suffix == ".tif" and not p.name.startswith(".") for p in root.iterdir()):
        return [Case(root.name, "tif", root)]  # one patient folder
    inner = archive_data_folders(root)
    if inner:
        raise PredictError(f"{root} is the downloaded Kaggle archive: pass --input {inner[0]} (its patient folders)")
    cases = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            cases.append(Case(entry.name, "tif", entry))
        elif nifti.is_nifti(entry):
            cases.append(Case(nifti.case_name(entry), "nifti", entry))
    if not cases:
        raise PredictError(f"{root} holds no slices: no <name>_<n>.tif files, no patient folders and no NIfTI "
                           "files; give a patient folder, a folder of them, or a NIfTI file")
    names = [c.name for c in cases]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise PredictError(f"{root}: several inputs would be written as the same case {repeated[:3]} (e.g. a.nii and "
                           "a.nii.gz); rename or remove one of them")
    return cases


def _path(value) -> Path | None:
    return None if value is None else Path(value)


def read_case(case: Case) -> Scan:
    """The slices of one case (tfseg.data.kaggle for .tif, tfseg.data.nifti for NIfTI); DataError naming the file."""
    if case.format == "tif":
        files = scan_images(case.path)
        return Scan(read_images(files), prefix=files.patient)
    if case.sequences:
        scan = nifti.read_sequences(case.sequences["flair"], case.sequences["pre"], case.sequences["post"])
    else:
        scan = nifti.read_4d(case.path)
    return Scan(scan.image, scan.substituted, scan.voxel_ml, nifti=scan)


# ----------------------------------------------------------------------------
# Segmenting one case
# ----------------------------------------------------------------------------

def segment(image: np.ndarray, sources, image_size: int, rule=None, options: PredictOptions = PredictOptions(),
            context: int = 1, what: str = "the scan", bar=None) -> Segmentation:
    """Segment one scan: (S, H, W, 3) uint8 slices -> :class:`Segmentation` on the same slices.

    ``sources``: a LoadedModel's ``sources`` (one predict function per ensemble member); ``rule`` a
    :class:`tfseg.postprocess.PostprocessRule` (default: the protocol's). The mask equals the native
    mask ``tfseg evaluate`` scores for the same model, options and rule. ``what`` names the scan in errors;
    ``bar``, a tqdm bar, counts the slices predicted.
    """
    from tfseg.data.preprocess import invert_volume, preprocess_volume
    from tfseg.inference import as_sources, mean_of_views, predict_views
    from tfseg.postprocess import PostprocessRule, kept_mass_fraction, suspect_reasons
    from tfseg.uncertainty import disagreement_map, disagreement_score

    rule = PostprocessRule() if rule is None else rule
    sources = as_sources(sources)
    try:
        # No mask to predict: zeros stand in, and the crop depends on the image alone.
        preprocessed, _, geometry = preprocess_volume(image, np.zeros(image.shape[:3], np.uint8), image_size)
    except ValueError as err:
        raise DataError(f"{what}: {err}") from err
    if bar is not None:
        bar.reset(total=2 * len(sources) * len(preprocessed))
        sources = _counted(sources, bar)
    views = predict_views(sources, preprocessed, options.batch_size, True, context)
    probabilities = mean_of_views(views, len(sources), options.tta)
    native = invert_volume(probabilities, geometry, order=1)
    mask = rule.apply(native)
    uncertainty = disagreement_score(views, rule.threshold, rule.components != "none")
    kept_mass = kept_mass_fraction(native, mask, rule.threshold)
    uncertainty_map = invert_volume(disagreement_map(views), geometry, order=1)
    return Segmentation(mask, native, uncertainty_map, uncertainty, kept_mass, suspect_reasons(kept_mass, uncertainty))


def _counted(sources, bar) -> list:
    """``sources`` that advance the progress ``bar`` by the slices of every batch they predict."""
    def counting(source):
        def predict(batch):
            out = source(batch)
            bar.update(len(batch))
            return out
        return predict
    return [counting(source) for source in sources]


# ----------------------------------------------------------------------------
# Writing one case
# ----------------------------------------------------------------------------

def write_case(folder: Path, case: Case, scan: Scan, result: Segmentation, options: PredictOptions,
               info: dict) -> list[str]:
    """Fill ``folder`` (a temporary folder, renamed by the caller) with the case's files; returns their names.

    An OSError names the file it happened on (see :func:`_write_named`).
    """
    import tifffile

    written = []
    if case.format == "tif":
        for n, slice_mask in enumerate(result.mask, start=1):
            _write_named(folder / f"{scan.prefix}_{n}_mask.tif", lambda path, m=slice_mask: tifffile.imwrite(
                path, m.astype(np.uint8) * np.uint8(255), photometric="minisblack", metadata=None, software=False))
        written.append(f"{scan.prefix}_<n>_mask.tif")
        if options.save_probabilities:
            name = f"{case.name}_probabilities.npz"
            _write_named(folder / name, lambda path: np.savez_compressed(
                path, probabilities=result.probabilities.astype(np.float16)))
            written.append(name)
    else:
        name = f"{case.name}_mask.nii.gz"
        _write_named(folder / name, lambda path: nifti.write_like(path, result.mask, scan.nifti, np.uint8))
        written.append(name)
        if options.save_probabilities:
            name = f"{case.name}_probabilities.nii.gz"
            _write_named(folder / name, lambda path: nifti.write_probabilities_like(path, result.probabilities,
                                                                                    scan.nifti))
            written.append(name)
    if options.viewer:
        _write_named(folder / VIEWER_PAGE, lambda path: write_viewer(path, scan.image, result, info))
        written.append(VIEWER_PAGE)
    return written


def _write_named(path: Path, write) -> None:
    """``write(path)``; an OSError that does not say which file (a ``write()`` that ran out of space midway
    says only "No space left on device") is raised again with ``path`` as its file name."""
    try:
        write(path)
    except OSError as err:
        if err.filename is None:
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise


def write_case_folder(out: Path, case: Case, scan: Scan, result: Segmentation, options: PredictOptions,
                      info: dict) -> None:
    """``OUT/<case>/``, whole or not at all: filled as a temporary folder, then renamed.

    An OSError (a full disk, a permission refused) leaves no temporary folder and no half of the case
    (an older ``OUT/<case>/`` stays as it was) and becomes a PredictError naming the file by its final name.
    """
    from tfseg.fileio import atomic_directory, temporary_name

    final = out / case.name
    try:
        with atomic_directory(final) as folder:
            folder.mkdir(parents=True)
            write_case(folder, case, scan, result, options, info)
    except OSError as err:
        raise PredictError(os_error_text(err, "write", {temporary_name(final): final},
                                         "nothing of the case was written")) from err


def os_error_text(err: OSError, doing: str, renamed: dict[Path, Path] | None = None, consequence: str = "") -> str:
    """One line for an OSError while reading or writing (``doing``): the file (a temporary name given by its
    final one, from ``renamed``: temporary folder -> final folder), the reason, ``consequence``, what to do."""
    import errno

    name = err.filename
    for temporary, final in (renamed or {}).items():
        if name is not None and str(name).startswith(str(temporary)):
            name = str(final) + str(name)[len(str(temporary)):]
    reason = err.strerror or str(err) or type(err).__name__
    if err.errno == errno.ENOSPC:
        todo = "free some space and run again"
    elif doing == "write":
        todo = "check that the output folder can be written to and run again"
    else:
        todo = "check that the file can be read (permissions, a complete copy) and run again"
    where = f" {name}" if name is not None else ""
    return f"cannot {doing}{where}: {reason}" + (f"; {consequence}" if consequence else "") + f" ({todo})"


def write_viewer(path: Path, image: np.ndarray, result: Segmentation, info: dict) -> None:
    """The case's page (tfseg.viewer): the slices with the mask, the probabilities and the views' disagreement."""
    from tfseg.viewer import write_case_page

    write_case_page(path, image, result.mask, probabilities=result.probabilities,
                    uncertainty=result.uncertainty_map, info=info)


def case_row(case: Case, scan: Scan, result: Segmentation, rule_text: str) -> dict:
    """The case's predictions.csv row (``check_first_rank`` is filled in once every case is done)."""
    voxels = int(result.mask.sum())
    return {"case": case.name, "input": case.describe_input(), "format": case.format,
            "slices": int(scan.image.shape[0]), "tumour_voxels": voxels,
            "volume_ml": None if scan.voxel_ml is None else round(voxels * scan.voxel_ml, 3),
            "uncertainty": round(result.uncertainty, 6), "check_first_rank": None,
            "kept_mass": round(result.kept_mass, 6), "suspect": bool(result.suspect_reasons),
            "suspect_reasons": "; ".join(result.suspect_reasons), "substituted": "; ".join(scan.substituted),
            "rule": rule_text, "error": None}


def rank_by_uncertainty(rows: list[dict]) -> None:
    """``check_first_rank`` of every segmented row: 1 for the highest uncertainty (ties by case name)."""
    done = sorted((r for r in rows if r["error"] is None), key=lambda r: (-r["uncertainty"], r["case"]))
    for rank, row in enumerate(done, start=1):
        row["check_first_rank"] = rank


# ----------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------

def predict(model: str | Path | Sequence[str | Path], out: str | Path, input: str | Path | None = None, *,
            flair=None, pre=None, post=None, options: PredictOptions = PredictOptions(), progress: bool = True,
            command: str | None = None, loaded=None) -> dict:
    """Segment every case of the input into ``out``; see the module docstring.

    ``model``: what :func:`tfseg.inference.load_model` takes (a run folder, an export, a .keras file,
    ``pretrained``, or several: an ensemble), loaded once the first case has been read (a bad input is
    reported before TensorFlow starts); ``loaded``: an already loaded model instead (tests, benchmarks).
    Returns ``{"rows": predictions.csv's rows, "failed": {}, "out": out}``. When a case fails, the others
    are still written, then PredictError lists the failed cases (with one case: that case's own error).
    """
    from tqdm import tqdm

    cases = find_cases(input, flair, pre, post)
    out = Path(out)
    started = time.perf_counter()
    rows, failed, ready = [], {}, None

    def fail(case: Case, err: TfsegError) -> None:
        if len(cases) == 1:
            raise err
        failed[case.name] = str(err)
        print(f"error: case {case.name} failed and is not written: {err}", file=sys.stderr)
        rows.append({key: None for key in COLUMNS} | {"case": case.name, "input": case.describe_input(),
                                                       "format": case.format, "error": str(err)})

    for case in cases:
        try:
            scan = read_case(case)
        except (TfsegError, OSError) as err:  # OSError: a file that cannot be read (permissions, I/O)
            fail(case, err if isinstance(err, TfsegError) else PredictError(os_error_text(err, "read")))
            continue
        if ready is None:
            ready = model_and_rule(model, loaded)  # a model that does not load stops the command
        loaded, rule, rule_text = ready["loaded"], ready["rule"], ready["rule_text"]
        try:
            with tqdm(desc=case.name, unit="slice", disable=not progress, leave=False) as bar:
                result = segment(scan.image, loaded.sources, loaded.image_size, rule, options, loaded.context,
                                 what=case.describe_input(), bar=bar)
            row = case_row(case, scan, result, rule_text)
            write_case_folder(out, case, scan, result, options, viewer_info(row))
        except TfsegError as err:
            fail(case, err)
            continue
        rows.append(row)
        if scan.substituted:
            print(f"note: {case.name}: {' and '.join(scan.substituted)} replaced by FLAIR (FLAIR-only input, as "
                  "kaggle_3m does for its patients missing a sequence)", file=sys.stderr)
        for reason in result.suspect_reasons:
            print(f"warning: {case.name}: suspect mask, check it first: {reason}", file=sys.stderr)
    rank_by_uncertainty(rows)
    record = {"model": None if ready is None else ready["loaded"].describe(),
              "rule": None if ready is None else ready["rule"].to_dict() | {"text": ready["rule_text"],
                                                                             "file": ready["rule_file"]},
              "options": asdict(options), "intensity_mapping_nifti": nifti.INTENSITY_RULE, "columns": COLUMNS,
              "cases": len(cases), "failed": failed, "seconds": round(time.perf_counter() - started, 3),
              "command": command, "created": datetime.now().isoformat(timespec="seconds")}
    write_summary(out, rows, record)
    if failed:
        raise PredictError(f"{len(failed)} of {len(cases)} cases failed and were not written: "
                           + "; ".join(f"{name} ({message})" for name, message in failed.items())
                           + f". The others are in {out} ({PREDICTIONS}); mend the failed inputs and run again")
    return {"rows": rows, "failed": failed, "out": out}


def write_summary(out: Path, rows: list[dict], record: dict) -> None:
    """OUT/predictions.csv and OUT/predict.json; an OSError becomes a PredictError naming the file and any
    failed cases (the cases' own folders are already written)."""
    from tfseg.fileio import write_csv_atomic, write_json_atomic

    try:
        out.mkdir(parents=True, exist_ok=True)
        write_csv_atomic(out / PREDICTIONS, rows, list(COLUMNS))
        write_json_atomic(out / PREDICT_JSON, record)
    except OSError as err:
        failed = f"; failed cases: {', '.join(record['failed'])}" if record["failed"] else ""
        raise PredictError(os_error_text(err, "write") + failed) from err


def model_and_rule(model, loaded=None) -> dict:
    """The loaded model and the post-processing rule it carries (an ensemble: its first member's)."""
    from tfseg.inference import load_model
    from tfseg.postprocess import rule_for_model

    loaded = load_model(model) if loaded is None else loaded
    rule, rule_path = rule_for_model(loaded.members[0].path if loaded.members else loaded.path)
    text = rule.describe() + (f" ({rule_path})" if rule_path else " (the protocol's)")
    return {"loaded": loaded, "rule": rule, "rule_text": text, "rule_file": None if rule_path is None else str(rule_path)}


def viewer_info(row: dict) -> dict:
    """What the case's page shows beside the slices (label -> value)."""
    volume = f"{row['volume_ml']} ml" if row["volume_ml"] is not None else f"{row['tumour_voxels']} voxels"
    info = {"case": row["case"], "input": row["input"], "tumour": volume,
            "uncertainty": f"{row['uncertainty']:.3f}", "kept mass": f"{row['kept_mass']:.0%}",
            "suspect": row["suspect_reasons"] or "no", "rule": row["rule"]}
    if row["substituted"]:
        info["replaced by FLAIR"] = row["substituted"]
    return info


def summary_lines(result: dict) -> list[str]:
    """What the command prints when every case was written."""
    rows = result["rows"]
    suspect = [r["case"] for r in rows if r["suspect"]]
    lines = [f"{len(rows)} case{'s' if len(rows) != 1 else ''} segmented into {result['out']} "
             f"(per case: {result['out'] / PREDICTIONS})"]
    if suspect:
        lines.append(f"suspect masks, check them first: {', '.join(suspect)}")
    return lines


if __name__ == "__main__":  # `python -m tfseg.predict`: the same command as `tfseg predict`
    from tfseg.cli.predict import main

    sys.exit(main(prog="python -m tfseg.predict"))
