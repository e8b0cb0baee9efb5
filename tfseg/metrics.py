"""Segmentation metrics: a streaming Keras DSC and the per-volume protocol DSC.

Two different numbers, both named DSC:

- `DiceCoefficient`: a Keras metric for `model.compile(metrics=...)`. It pools
  every pixel seen in an epoch into one DSC, which is quick to watch but is
  **not** the published figure.
- `per_volume_dsc` / `volume_scores` / `summarize`: the metric of
  PROTOCOL.md ("The metric"): per patient, threshold the stacked slice
  probabilities, keep the largest 3-D connected component, DSC over the volume;
  then mean (the headline) and median over patients. The training callbacks
  and `evaluate.py` both call these functions, so both report the same number.

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
# Per-volume evaluation (PROTOCOL.md, "The metric"): numpy in, numpy out.
# ----------------------------------------------------------------------------

def volume_dsc(pred, true):
    """DSC = 2|P∩T| / (|P| + |T|) of two boolean volumes of the same shape; 1.0 when both are empty."""
    pred, true = _check_pair(pred, true)
    denominator = int(pred.sum()) + int(true.sum())
    if denominator == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, true).sum()) / denominator


def volume_scores(pred, true, voxelspacing=None):
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
    and report how many volumes were defined.
    """
    pred, true = _check_pair(pred, true)
    n_pred, n_true = int(pred.sum()), int(true.sum())
    n_both = int(np.logical_and(pred, true).sum())
    if n_pred and n_true:
        hd = float(_medpy_hd95(pred, true, voxelspacing=voxelspacing))
    else:
        hd = math.nan
    return {
        "dsc": volume_dsc(pred, true),
        "hd95": hd,
        "sensitivity": n_both / n_true if n_true else math.nan,
        "precision": n_both / n_pred if n_pred else math.nan,
        "pred_voxels": n_pred,
        "true_voxels": n_true,
    }


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
    """The protocol DSC of every patient.

    Args:
        probabilities: (N, H, W) or (N, H, W, 1) float predicted probabilities of N slices.
        masks: (N, H, W) or (N, H, W, 1) ground truth, 0/1 (foreground where > 0.5).
        patient_ids: N ids (str or bytes), the patient of each slice. A
            patient's slices must appear in slice order; patients may be
            interleaved.
        threshold, largest_component: as in `postprocess_volume`.

    Returns:
        {patient_id: DSC} in the order patients first appear.
    """
    probabilities = _slices(probabilities, "probabilities")
    masks = _slices(masks, "masks")
    if probabilities.shape != masks.shape or len(patient_ids) != len(masks):
        raise ValueError(f"per_volume_dsc() needs matching inputs: probabilities {probabilities.shape}, "
                         f"masks {masks.shape}, {len(patient_ids)} patient ids")
    scores = {}
    for pid, indices in group_by_patient(patient_ids).items():
        pred = postprocess_volume(probabilities[indices], threshold, largest_component)
        scores[pid] = volume_dsc(pred, masks[indices] > 0.5)
    return scores


def summarize(dsc_by_patient):
    """Mean (the headline), median and count of per-patient DSCs: {id: DSC} -> {"mean", "median", "n"}."""
    if not dsc_by_patient:
        raise ValueError("summarize() needs the DSC of at least one patient, got an empty dict")
    values = np.asarray(list(dsc_by_patient.values()), dtype=np.float64)
    return {"mean": float(np.mean(values)), "median": float(np.median(values)), "n": int(values.size)}


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
