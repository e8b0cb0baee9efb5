"""How much a prediction's *views* disagree: a per-voxel map and a per-patient score (``evaluate.py --uncertainty``).

A view is one probability volume of one patient: the model on the image and the
model on the left-right flipped image (flipped back), and with an ensemble every
member on both (K = 2 · members views; :func:`tfseg.inference.predict_views`).
The mask that is scored stays the mean of the views that ``--tta`` / the ensemble
always averaged; the views only say how sure that mask is.

* **Map** (:func:`disagreement_map`): the standard deviation, voxel by voxel, of the
  K probabilities. 0 where every view gives the same probability; 0.5 at most (half
  the views say 0, half say 1).
* **Score** (:func:`disagreement_score`): 1 − |voxels every view calls tumour| /
  |voxels any view calls tumour|, each view's mask post-processed as docs/protocol.md does
  (threshold, largest 3-D component): 1 minus the Jaccard index of the K masks.
  0 when the masks are identical, 1 when no voxel is shared. When no view finds
  tumour the views agree: 0. It measures disagreement, not error: a tumour that every
  view misses alike scores 0.
* **Ranking** (:func:`spearman_with_dsc`): Spearman's rho between the score and the
  native DSC over patients. Negative is what a useful score gives (more disagreement,
  lower DSC); near -1 means checking the most uncertain masks first finds the bad ones.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tfseg.postprocess import THRESHOLD, postprocess_volume

MAP_MAX = 0.5  # the largest standard deviation of values in [0, 1]: the overlays' colour scale ends here
MAP_DEFINITION = "per-voxel standard deviation of the K view probabilities (0 = all agree, at most 0.5)"
SCORE_DEFINITION = ("1 - |all K view masks say tumour| / |any view mask says tumour| (1 - Jaccard index of "
                    "the K masks, each thresholded and kept to its largest 3-D component; 0 when no view "
                    "finds tumour)")


def disagreement_map(views: np.ndarray) -> np.ndarray:
    """Standard deviation over the K views: (K, S, H, W) float -> (S, H, W) float32 in [0, 0.5]."""
    views = _check_views(views)
    return views.std(axis=0, dtype=np.float64).astype(np.float32)


def disagreement_score(views: np.ndarray, threshold: float = THRESHOLD, lcc: bool = True) -> float:
    """1 − Jaccard index of the K views' post-processed masks: (K, S, H, W) float -> float in [0, 1].

    The masks are made exactly as the scored mask is (``threshold``, ``lcc``), so a
    voxel counts as disputed only where the post-processing makes a difference.
    """
    views = _check_views(views)
    every = np.ones(views.shape[1:], bool)
    some = np.zeros(views.shape[1:], bool)
    for view in views:
        mask = postprocess_volume(view, threshold, lcc)
        every &= mask
        some |= mask
    union = int(some.sum())
    if union == 0:
        return 0.0  # no view finds tumour: they agree (nothing to check by disagreement)
    return 1.0 - int(every.sum()) / union


def spearman_with_dsc(scores: Sequence[float], dsc: Sequence[float]) -> dict:
    """Spearman's rho of per-patient ``scores`` against their ``dsc``; None where it is undefined.

    Returns {"spearman_rho_with_dsc": float | None, "p_value": float | None, "n_patients": n}
    and, when None, "why": fewer than 3 patients, or one of the two is the same for every
    patient (a rank correlation of a constant does not exist).
    """
    from scipy.stats import spearmanr

    scores, dsc = np.asarray(scores, np.float64), np.asarray(dsc, np.float64)
    if scores.shape != dsc.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and dsc {dsc.shape} must be two lists of one value per patient")
    out = {"spearman_rho_with_dsc": None, "p_value": None, "n_patients": int(scores.size)}
    keep = ~(np.isnan(scores) | np.isnan(dsc))
    scores, dsc = scores[keep], dsc[keep]
    if scores.size < 3:
        return out | {"why": f"needs at least 3 patients with a score and a DSC, got {scores.size}"}
    if np.ptp(scores) == 0 or np.ptp(dsc) == 0:
        constant = "uncertainty" if np.ptp(scores) == 0 else "DSC"
        return out | {"why": f"the {constant} is the same for every patient: no ranking to compare"}
    result = spearmanr(scores, dsc)
    return out | {"spearman_rho_with_dsc": float(result.statistic), "p_value": float(result.pvalue)}


def uncertainty_summary(patients: Sequence[str], scores: Sequence[float], dsc: Sequence[float],
                        views: str) -> dict:
    """summary.json's "uncertainty" entry: the definitions, rho against ``dsc``, and the patients to check first."""
    order = sorted(range(len(patients)), key=lambda i: (-scores[i], patients[i]))
    return {"score": SCORE_DEFINITION, "map": MAP_DEFINITION, "views": views,
            **spearman_with_dsc(scores, dsc),
            "check_first": [patients[i] for i in order]}


def _check_views(views: np.ndarray) -> np.ndarray:
    views = np.asarray(views)
    if views.ndim != 4 or len(views) < 2:
        raise ValueError(f"expected K >= 2 probability volumes stacked as (K, S, H, W), got shape {views.shape}")
    return views
