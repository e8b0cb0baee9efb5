"""Segmentation metrics: a streaming Keras DSC and the per-volume protocol DSC.

Two different numbers, both named DSC:

- `DiceCoefficient`: a Keras metric for `model.compile(metrics=...)`. It pools
  every pixel seen in an epoch into one DSC, which is quick to watch but is
  **not** the published figure.
- `volume_scores`, `VolumeMetrics`, `score_slices` / `per_volume_dsc`: the metric of
  docs/protocol.md ("The metric"): per patient, threshold the stacked slice
  probabilities, keep the largest 3-D connected component, DSC over the volume; then mean (the headline) and median over patients.
  `VolumeMetrics` is a per-case accumulator the way MONAI's metrics are
  (`update(case, pred, true)` once per patient, then `aggregate()`): the
  validation during training and `evaluate.py` both score through it, so both
  report the same number.

The threshold and the largest component are :mod:`tfseg.postprocess`'s
(`THRESHOLD`, `postprocess_volume` and `largest_connected_component` are
importable from here too). A pixel is foreground when `p > threshold`.
"""
import math

import keras
import numpy as np
from keras import ops
from medpy.metric.binary import hd95 as _medpy_hd95

# largest_connected_component is not used here: importable from here for older callers (tfseg.radiogenomics)
from tfseg.postprocess import THRESHOLD, largest_connected_component, postprocess_volume  # noqa: F401


@keras.saving.register_keras_serializable(package="tfseg")
class DiceCoefficient(keras.metrics.Metric):
    """DSC of thresholded predictions, accumulated over all batches since the last reset.

    Keeps three float32 sums (|P∩T|, |P|, |T|) in variables and returns
    `2|P∩T| / (|P| + |T|)`, or 1.0 while both are empty. No smoothing term:
    the empty case is handled exactly instead.

    `update_state(y_true, y_pred, sample_weight=None)`: `y_true` (B, H, W, 1)
    0/1 mask (foreground where > 0.5), `y_pred` (B, H, W, 1) probabilities of
    any float dtype. `sample_weight`, if given, must broadcast against the
    inputs; a (B,) vector weights whole images.

    Args:
        threshold: a prediction is foreground where `y_pred > threshold`.
        name: the metric's name in logs.
        dtype: dtype of the result (the sums are always float32).
    """

    def __init__(self, threshold=THRESHOLD, name="dsc", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.threshold = float(threshold)
        self.intersection = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="intersection")
        self.pred_sum = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="pred_sum")
        self.true_sum = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="true_sum")

    def update_state(self, y_true, y_pred, sample_weight=None):
        t = ops.cast(ops.greater(ops.cast(y_true, "float32"), 0.5), "float32")
        p = ops.cast(ops.greater(ops.cast(y_pred, "float32"), self.threshold), "float32")
        both = t * p
        if sample_weight is not None:
            w = ops.cast(sample_weight, "float32")
            if len(w.shape) == 1:
                # One weight per image: (B,) -> (B, 1, 1, 1).
                w = ops.reshape(w, (-1,) + (1,) * (len(p.shape) - 1))
            t, p, both = t * w, p * w, both * w
        self.intersection.assign_add(ops.sum(both))
        self.pred_sum.assign_add(ops.sum(p))
        self.true_sum.assign_add(ops.sum(t))

    def result(self):
        denominator = self.pred_sum + self.true_sum
        dsc = ops.where(denominator > 0, 2.0 * self.intersection / ops.maximum(denominator, 1e-12), 1.0)
        return ops.cast(dsc, self.dtype)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


# ----------------------------------------------------------------------------
# Per-volume evaluation (docs/protocol.md, "The metric"): numpy in, numpy out.
# ----------------------------------------------------------------------------

def volume_dsc(pred, true):
    """DSC = 2|P∩T| / (|P| + |T|) of two boolean volumes of the same shape; 1.0 when both are empty."""
    pred, true = _check_pair(pred, true)
    return _dsc(int(np.logical_and(pred, true).sum()), int(pred.sum()), int(true.sum()))


def _dsc(n_both: int, n_pred: int, n_true: int) -> float:
    """2|P∩T| / (|P| + |T|) from voxel counts; 1.0 when both volumes are empty (nothing to find, nothing found)."""
    return 2.0 * n_both / (n_pred + n_true) if n_pred + n_true else 1.0


SCORE_KEYS = ("dsc", "hd95", "sensitivity", "precision", "pred_voxels", "true_voxels")
"""What `volume_scores` returns for one volume, in this order (per_patient.csv's columns)."""
AGGREGATED_KEYS = ("dsc", "hd95", "sensitivity", "precision")
"""The scores `VolumeMetrics.aggregate` summarizes over cases (the voxel counts are not)."""


def volume_scores(pred, true, voxelspacing=None, surface_distance=True):
    """All per-volume scores of one patient: boolean volumes (S, H, W) of the same shape in.

    Returns a dict of floats / ints:
        dsc: as `volume_dsc` (1.0 when both are empty).
        hd95: 95th percentile of the symmetric surface distance
            (`medpy.metric.binary.hd95`), in voxel units unless `voxelspacing`
            (one value per axis) is given; NaN when either volume is empty.
        sensitivity: |P∩T| / |T|, the fraction of the lesion found; NaN when
            T is empty (nothing to find).
        precision: |P∩T| / |P|, the fraction of the prediction that is lesion;
            NaN when P is empty (nothing predicted).
        pred_voxels, true_voxels: |P| and |T| (ints).
    NaN marks "undefined", never 0: aggregate with `np.nanmean`/`np.nanmedian`
    and report how many volumes were defined (`VolumeMetrics` does).
    With ``surface_distance=False`` there is no ``hd95`` key: the surface
    distance is by far the slowest score, and validation during training needs only the DSC.
    """
    pred, true = _check_pair(pred, true)
    n_pred, n_true = int(pred.sum()), int(true.sum())
    n_both = int(np.logical_and(pred, true).sum())
    if not surface_distance:
        hd = None
    elif n_pred and n_true:
        hd = float(_medpy_hd95(pred, true, voxelspacing=voxelspacing))
    else:
        hd = math.nan
    scores = {
        "dsc": _dsc(n_both, n_pred, n_true),
        "hd95": hd,
        "sensitivity": n_both / n_true if n_true else math.nan,
        "precision": n_both / n_pred if n_pred else math.nan,
        "pred_voxels": n_pred,
        "true_voxels": n_true,
    }
    if not surface_distance:
        del scores["hd95"]
    return scores


class VolumeMetrics:
    """Per-case accumulator of the per-volume scores: `update` once per patient, then `aggregate`.

    The shape of MONAI's metrics (`update(case, pred, true)`, `aggregate()`,
    `reset()`), with the case named so that per-patient tables and paired
    comparisons can be built from it. Training validation and evaluate.py both
    score through this class; the headline is ``aggregate()["dsc"]["mean"]``.

    Args:
        surface_distance: compute HD95 too (as `volume_scores`); off for the
            DSC-only validation after every training epoch.
    """

    def __init__(self, surface_distance: bool = True):
        self.surface_distance = surface_distance
        self._cases: dict[str, dict] = {}

    def update(self, case: str, pred, true, voxelspacing=None) -> dict:
        """Score one case's boolean volumes (post-processed prediction, ground truth); returns its scores.

        A case may be scored once: a second `update` of the same name is a ValueError
        (it would silently replace the first and change the mean).
        """
        case = case.decode("utf-8") if isinstance(case, bytes) else str(case)  # as group_by_patient
        if case in self._cases:
            raise ValueError(f"VolumeMetrics.update(): case {case!r} was already scored; call reset() first "
                             f"to score a new set of cases")
        scores = volume_scores(pred, true, voxelspacing, self.surface_distance)
        self._cases[case] = scores
        return scores

    def reset(self) -> None:
        self._cases.clear()

    def __len__(self) -> int:
        return len(self._cases)

    def cases(self) -> dict[str, dict]:
        """{case: scores} in the order the cases were scored (a copy)."""
        return {case: dict(scores) for case, scores in self._cases.items()}

    def values(self, key: str = "dsc") -> dict[str, float]:
        """{case: one score}, e.g. the DSC of every patient."""
        return {case: scores[key] for case, scores in self._cases.items()}

    def aggregate(self) -> dict:
        """Over the cases: ``{"n": cases, key: {"mean", "median", "n"}}`` for every aggregated score.

        Undefined (NaN) scores are left out of a key's mean and median, and its ``n``
        counts the cases where it is defined; mean and median are None when none is.
        """
        if not self._cases:
            raise ValueError("VolumeMetrics.aggregate() needs at least one scored case; call update() first")
        out: dict = {"n": len(self._cases)}
        for key in AGGREGATED_KEYS:
            if key in next(iter(self._cases.values())):
                values = np.array([scores[key] for scores in self._cases.values()], np.float64)
                out[key] = describe(values[~np.isnan(values)])
        return out


def describe(values) -> dict:
    """Mean, median and count of a sequence of numbers; mean and median are None when it is empty."""
    values = np.asarray(values, np.float64)
    if not values.size:
        return {"mean": None, "median": None, "n": 0}
    return {"mean": float(np.mean(values)), "median": float(np.median(values)), "n": int(values.size)}


def group_by_patient(patient_ids):
    """Slice indices of each patient, in order: sequence of N ids -> {id: (n,) int array}.

    Patients appear in the order of their first slice; each patient's indices
    keep the order of the input (which must be the slice order). Ids may be
    str or bytes (as read from tf.data); bytes are decoded as UTF-8.
    """
    groups = {}
    for index, pid in enumerate(patient_ids):
        if isinstance(pid, np.ndarray):
            pid = pid.item()
        if isinstance(pid, bytes):
            pid = pid.decode("utf-8")
        groups.setdefault(str(pid), []).append(index)
    return {pid: np.asarray(indices) for pid, indices in groups.items()}


def per_volume_dsc(probabilities, masks, patient_ids, threshold=THRESHOLD, largest_component=True):
    """The protocol DSC of every patient: `score_slices(...).values("dsc")`."""
    return score_slices(probabilities, masks, patient_ids, threshold, largest_component).values("dsc")


def score_slices(probabilities, masks, patient_ids, threshold=THRESHOLD, largest_component=True,
                 surface_distance=False) -> VolumeMetrics:
    """Stack slices into patients, post-process, and score each one: a filled `VolumeMetrics`.

    Args:
        probabilities: (N, H, W) or (N, H, W, 1) float predicted probabilities of N slices.
        masks: (N, H, W) or (N, H, W, 1) ground truth, 0/1 (foreground where > 0.5).
        patient_ids: N ids (str or bytes), the patient of each slice. A
            patient's slices must appear in slice order; patients may be
            interleaved.
        threshold, largest_component: as in `postprocess_volume`.
        surface_distance: as in `VolumeMetrics` (off: DSC, sensitivity, precision only).

    Returns:
        a `VolumeMetrics` whose cases are the patients, in the order they first appear.
    """
    probabilities = _slices(probabilities, "probabilities")
    masks = _slices(masks, "masks")
    if probabilities.shape != masks.shape or len(patient_ids) != len(masks):
        raise ValueError(f"per_volume_dsc()/score_slices() need matching inputs: probabilities {probabilities.shape}, "
                         f"masks {masks.shape}, {len(patient_ids)} patient ids")
    metric = VolumeMetrics(surface_distance=surface_distance)
    for pid, indices in group_by_patient(patient_ids).items():
        metric.update(pid, postprocess_volume(probabilities[indices], threshold, largest_component),
                      masks[indices] > 0.5)
    return metric


def _slices(array, what):
    array = np.asarray(array)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise ValueError(f"{what} must be (N, H, W) or (N, H, W, 1), got shape {array.shape}")
    return array


def _check_pair(pred, true):
    pred, true = np.asarray(pred, dtype=bool), np.asarray(true, dtype=bool)
    if pred.shape != true.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {true.shape} differ in shape")
    return pred, true
