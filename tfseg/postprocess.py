"""Post-processing of one patient's predicted probabilities: docs/protocol.md's rule and the rules chosen out of fold.

The protocol's rule: threshold at 0.5, then the largest 3-D component. One definition in two
forms that give the same mask (tests/test_postprocess.py):

* numpy/scipy, :func:`postprocess_volume`: evaluation (both geometries), training's
  per-volume DSC (:mod:`tfseg.metrics`) and cross-validation;
* TensorFlow graph ops, :func:`postprocess_graph`: the ``segment_volume`` serving
  signature (:mod:`tfseg.export`). TensorFlow is imported only when a graph function
  is called, so scipy users (tfseg.radiogenomics) do not pay for it.

A :class:`PostprocessRule` generalizes it (another threshold, another choice of components);
one is chosen on out-of-fold probabilities by ``tfseg postprocess`` (:mod:`tfseg.postprocess_choice`)
and carried beside a model as ``postprocess.json`` (:func:`rule_for_model`). Evaluation,
cross-validation and the export apply it (numpy :meth:`PostprocessRule.apply`, graph
:func:`rule_graph`; equal masks, tested) and report the protocol's figure beside it.
Training's validation (the per-volume DSC after every epoch, :mod:`tfseg.metrics`) always
scores the protocol's rule: the rule is chosen after training, on the trained folds.

Thresholding, everywhere: a voxel is foreground when ``p > THRESHOLD``. At 0.5 this is
what the reference's ``np.round`` does (it rounds 0.5 down to 0). The component is
6-connected (faces only), ties going to the component that starts first in raster
order, as in ``medpy.filter.binary.largest_connected_component``, the function
docs/protocol.md names.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.ndimage

from tfseg.errors import TfsegError

THRESHOLD = 0.5


def largest_connected_component(volume):
    """The largest connected component of a boolean volume, as a bool array of the same shape.

    Gives the same result as `medpy.filter.binary.largest_connected_component`:
    the same `scipy.ndimage.label` with its default connectivity (faces only,
    6-connected in 3-D) and the same tie-break (the component labelled first
    wins); tests check the two agree. medpy measures each component with a full
    pass over the volume, which takes about 24 s on a noisy 30x256x256
    early-training prediction (117,000 components); one `bincount` takes 0.1 s.

    `volume` must hold at least one foreground voxel.
    """
    labels, n_components = scipy.ndimage.label(volume)
    if n_components == 0:
        raise ValueError("largest_connected_component() needs at least one foreground voxel")
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0  # background
    return labels == int(np.argmax(sizes))


def postprocess_volume(probabilities, threshold=THRESHOLD, largest_component=True):
    """Binary segmentation of one patient volume, as the protocol post-processes it.

    Args:
        probabilities: (S, H, W) float, the stacked slice probabilities of one patient.
        threshold: foreground where `probabilities > threshold`.
        largest_component: keep only the largest 3-D connected component
            (when any voxel is foreground).

    Returns:
        (S, H, W) bool.
    """
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 3:
        raise ValueError(f"postprocess_volume() expects one (S, H, W) volume, got shape {probabilities.shape}")
    mask = probabilities > threshold
    if largest_component and mask.any():
        mask = largest_connected_component(mask)
    return mask


# ----------------------------------------------------------------------------
# Graph ops (the segment_volume signature).
# ----------------------------------------------------------------------------

def postprocess_graph(probabilities, threshold=THRESHOLD):
    """:func:`postprocess_volume` as graph ops: float (S, H, W) -> bool (S, H, W), the largest component kept."""
    return largest_component_3d(probabilities > threshold)


def rule_graph(probabilities, rule: PostprocessRule | None = None, voxel_scale: float = 1.0):
    """:meth:`PostprocessRule.apply` as graph ops: float (S, H, W) -> bool (S, H, W); every component mode.

    ``rule`` None is the protocol's (:func:`postprocess_graph`). ``voxel_scale`` as in ``apply``
    (``segment_volume`` post-processes the native geometry: 1).
    """
    import tensorflow as tf

    rule = PostprocessRule() if rule is None else rule
    mask = probabilities > rule.threshold
    if rule.components == "none":
        return mask
    if rule.components == "largest":
        return largest_component_3d(mask)
    return _select_components_3d(mask, tf.cast(probabilities, tf.float64), rule, voxel_scale)


def largest_component_3d(mask):
    """The largest 6-connected component of a bool (D, H, W) tensor (all False stays all False).

    Same result as :func:`largest_connected_component` (scipy.ndimage.label), ties included.
    """
    return _select_components_3d(mask, None, PostprocessRule(), 1.0)


def _select_components_3d(mask, probabilities, rule, voxel_scale):
    """The components of bool (D, H, W) ``mask`` that ``rule`` keeps (``probabilities`` float64, for "largest_mass")."""
    import tensorflow as tf

    from tfseg.data.preprocess import nonzero_range

    def select():
        (z0, z1), (y0, y1), (x0, x1) = (nonzero_range(tf.reduce_any(mask, axis=axes))
                                        for axes in ((1, 2), (0, 2), (0, 1)))
        # Label only the box around the foreground: every propagation step is cheaper.
        box = None if probabilities is None else probabilities[z0:z1, y0:y1, x0:x1]
        kept = _select_dense(mask[z0:z1, y0:y1, x0:x1], box, rule, voxel_scale)
        shape = tf.shape(mask)
        return tf.pad(kept, [[z0, shape[0] - z1], [y0, shape[1] - y1], [x0, shape[2] - x1]])

    return tf.cond(tf.reduce_any(mask), select, lambda: mask)


def _component_labels(mask):
    """Label propagation with pointer jumping in a ``tf.while_loop``: int32 labels, 0 = background.

    A component's label converges to 1 + the flat index of its last voxel.
    """
    import tensorflow as tf

    shape = tf.shape(mask)
    labels = tf.where(mask, tf.reshape(tf.range(1, tf.size(mask) + 1), shape), 0)

    def step(labels, _):
        padded = tf.pad(labels, [[1, 1], [1, 1], [1, 1]])
        d, h, w = shape[0], shape[1], shape[2]
        spread = labels
        for dz, dy, dx in ((0, 1, 1), (2, 1, 1), (1, 0, 1), (1, 2, 1), (1, 1, 0), (1, 1, 2)):
            spread = tf.maximum(spread, padded[dz:dz + d, dy:dy + h, dx:dx + w])
        spread = tf.where(mask, spread, 0)
        # Pointer jumping: take the label of the voxel a label points at (never smaller: labels only grow).
        flat = tf.reshape(spread, [-1])
        jumped = tf.reshape(tf.gather(tf.concat([[0], flat], 0), flat), shape)
        return jumped, tf.reduce_any(tf.not_equal(jumped, labels))

    labels, _ = tf.while_loop(lambda labels, changed: changed, step, (labels, tf.constant(True)))
    return labels


def _select_dense(mask, probabilities, rule, voxel_scale):
    """The kept components of a non-empty bool (D, H, W) ``mask``, with scipy's tie-break (first in raster order)."""
    import tensorflow as tf

    labels = _component_labels(mask)
    count = tf.size(mask)
    flat = tf.reshape(labels, [-1])
    table = tf.range(count + 1)  # one entry per possible label
    sizes = tf.math.unsorted_segment_sum(tf.ones_like(flat), flat, count + 1)
    sizes = tf.tensor_scatter_nd_update(sizes, [[0]], [0])  # background
    # scipy numbers components by their first voxel in raster order and argmax takes the lowest number.
    first = tf.math.unsorted_segment_min(tf.range(count), flat, count + 1)

    def one_of_the_largest(values):
        chosen = tf.argmin(tf.where(tf.equal(values, tf.reduce_max(values)), first, count), output_type=tf.int32)
        return tf.equal(table, chosen)

    if rule.components == "largest":
        keep = one_of_the_largest(sizes)
    elif rule.components == "largest_mass":
        mass = tf.math.unsorted_segment_sum(tf.reshape(probabilities, [-1]), flat, count + 1)
        keep = one_of_the_largest(tf.tensor_scatter_nd_update(mass, [[0]], tf.constant([-1.0], tf.float64)))
    elif rule.components == "top2":
        # Larger first, then the lower first voxel: one int64 key orders both.
        wide = tf.cast(count, tf.int64) + 1
        key = tf.where(sizes > 0, tf.cast(sizes, tf.int64) * wide + wide - 1 - tf.cast(first, tf.int64), -1)
        top = tf.math.top_k(key, k=2).indices
        top = tf.boolean_mask(top, tf.gather(key, top) > 0)
        keep = tf.reduce_any(tf.equal(table[:, None], top[None, :]), axis=1)
    elif rule.components == "min_size":
        large = tf.cast(sizes, tf.float64) >= rule.min_voxels * voxel_scale
        keep = (large & (sizes > 0)) | one_of_the_largest(sizes)
    else:
        raise PostprocessError(f"no graph form for component mode {rule.components!r}")
    return tf.gather(keep, labels) & mask


# ----------------------------------------------------------------------------
# Rules: the threshold and which components to keep, chosen out of fold and carried beside a model.
# ----------------------------------------------------------------------------

# How a rule picks components after the threshold:
COMPONENT_MODES = {
    "largest": "the largest 3-D component by voxel count (the protocol)",
    "largest_mass": "the 3-D component with the largest summed probability",
    "top2": "the two largest 3-D components by voxel count",
    "min_size": "every 3-D component of at least min_voxels native voxels (the largest is always kept)",
    "none": "every voxel above the threshold (no component step)",
}
# Modes whose mask is one component: the protocol's own largest-component step leaves it unchanged.
SINGLE_COMPONENT_MODES = ("largest", "largest_mass")


class PostprocessError(TfsegError, ValueError):
    """A post-processing rule file or value is not valid; the message names the file or value."""


@dataclass(frozen=True)
class PostprocessRule:
    """Threshold plus component selection for one patient volume of probabilities.

    ``min_voxels`` (mode ``"min_size"``) counts voxels of the native 256x256 grid; a volume in
    another geometry passes ``voxel_scale`` (its voxels per native voxel, (N/side)^2 for the
    preprocessed N x N slices) to :meth:`apply`. The default rule is the protocol's.
    """

    threshold: float = THRESHOLD
    components: str = "largest"
    min_voxels: int = 0

    def __post_init__(self):
        if self.components not in COMPONENT_MODES:
            raise PostprocessError(f"unknown component mode {self.components!r}: use one of {sorted(COMPONENT_MODES)}")
        if not 0.0 < self.threshold < 1.0:
            raise PostprocessError(f"threshold {self.threshold!r} must lie strictly between 0 and 1")
        if self.min_voxels < 0:
            raise PostprocessError(f"min_voxels {self.min_voxels!r} must not be negative")

    @property
    def is_protocol(self) -> bool:
        return self == PostprocessRule()

    @property
    def single_component(self) -> bool:
        """True when the mask is one component, so the protocol's largest-component step passes it unchanged."""
        return self.components in SINGLE_COMPONENT_MODES

    def describe(self) -> str:
        extra = f", min_voxels {self.min_voxels}" if self.components == "min_size" else ""
        return f"p > {self.threshold:g}, {COMPONENT_MODES[self.components]}{extra}"

    def apply(self, probabilities, voxel_scale: float = 1.0) -> np.ndarray:
        """(S, H, W) probabilities -> (S, H, W) bool mask under this rule."""
        probabilities = np.asarray(probabilities)
        if probabilities.ndim != 3:
            raise ValueError(f"PostprocessRule.apply() expects one (S, H, W) volume, got shape {probabilities.shape}")
        mask = probabilities > self.threshold
        if self.components == "none" or not mask.any():
            return mask
        if self.components == "largest":
            return largest_connected_component(mask)
        labels, _ = scipy.ndimage.label(mask)
        flat = labels.ravel()
        sizes = np.bincount(flat)
        masses = None
        if self.components == "largest_mass":
            masses = np.bincount(flat, weights=probabilities.ravel().astype(np.float64))
        return np.isin(labels, self.keep(sizes, masses, voxel_scale))

    def keep(self, sizes: np.ndarray, masses: np.ndarray | None = None, voxel_scale: float = 1.0) -> np.ndarray:
        """The labels this rule keeps, from per-label voxel counts (and summed probabilities, for "largest_mass").

        ``sizes[l]`` / ``masses[l]``: of ``scipy.ndimage.label``'s component ``l`` of the thresholded
        mask (index 0 is the background, ignored). Ties go to the lowest label (the first in raster
        order). Returns the kept labels, sorted (int64, empty when no component is kept).
        :meth:`apply` and the out-of-fold choice (:mod:`tfseg.postprocess_choice`) both select through it.
        """
        sizes = np.asarray(sizes, np.int64).copy()
        sizes[0] = 0  # background
        present = np.flatnonzero(sizes)
        if not present.size:
            return present
        if self.components == "none":
            return present
        if self.components == "largest":
            return np.array([int(np.argmax(sizes))])
        if self.components == "largest_mass":
            if masses is None:
                raise ValueError("PostprocessRule.keep(): mode 'largest_mass' needs the masses")
            masses = np.asarray(masses, np.float64).copy()
            masses[0] = -1.0
            return np.array([int(np.argmax(masses))])
        if self.components == "top2":
            order = np.argsort(-sizes, kind="stable")[:2]  # stable: ties to the lowest label
            return np.sort(order[sizes[order] > 0])
        # min_size
        keep = set(np.flatnonzero(sizes >= self.min_voxels * voxel_scale).tolist()) | {int(np.argmax(sizes))}
        return np.array(sorted(keep - {0}), np.int64)

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "components": self.components, "min_voxels": self.min_voxels}

    @classmethod
    def from_dict(cls, value: dict, source: str = "the rule") -> PostprocessRule:
        if not isinstance(value, dict):
            raise PostprocessError(f"{source}: a rule is a JSON object, got {type(value).__name__}")
        unknown = set(value) - {"threshold", "components", "min_voxels"}
        if unknown:
            raise PostprocessError(f"{source}: unknown rule keys {sorted(unknown)}")
        try:
            return cls(threshold=float(value.get("threshold", THRESHOLD)),
                       components=str(value.get("components", "largest")),
                       min_voxels=int(value.get("min_voxels", 0)))
        except PostprocessError as err:
            raise PostprocessError(f"{source}: {err}") from err
        except (TypeError, ValueError) as err:
            raise PostprocessError(f"{source}: {err}") from err


def load_rule(path: str | Path) -> PostprocessRule:
    """The rule of a postprocess.json file (its ``"rule"`` entry); PostprocessError naming the file when damaged."""
    from tfseg.runs import RunFolderError, read_run_json

    path = Path(path)
    try:
        payload = read_run_json(path, "choose the rule again with `tfseg postprocess`, or delete the file to use "
                                      "the protocol's rule")
    except RunFolderError as err:
        raise PostprocessError(str(err)) from err
    if "rule" not in payload:
        raise PostprocessError(f"{path} has no \"rule\" entry: it is not a tfseg postprocess.json")
    return PostprocessRule.from_dict(payload["rule"], str(path))


def rule_file_for(model_path: str | Path | None) -> Path | None:
    """Where a model's rule lives: RUN_DIR/postprocess.json for a run folder or a model inside one,
    EXPORT/postprocess.json for an export, FILE.keras's folder otherwise; None when there is none."""
    from tfseg.runs import POSTPROCESS, owning_run

    if model_path is None:
        return None
    model_path = Path(model_path)
    candidates = [model_path / POSTPROCESS] if model_path.is_dir() else []
    run = owning_run(model_path)
    if run is not None:
        candidates.append(run / POSTPROCESS)
    if model_path.is_file():
        candidates.append(model_path.parent / POSTPROCESS)
    return next((c for c in candidates if c.is_file()), None)


def rule_for_model(model_path: str | Path | None) -> tuple[PostprocessRule, Path | None]:
    """The rule a model carries and its file, or the protocol's rule and None."""
    path = rule_file_for(model_path)
    return (PostprocessRule(), None) if path is None else (load_rule(path), path)


# ----------------------------------------------------------------------------
# Suspect masks: never hand a user a catastrophic mask silently (issue 25, item 5).
# ----------------------------------------------------------------------------

# A mask is suspect when the components it keeps hold less than this share of the probability mass
# above the threshold (the tumour may be among the components thrown away) ...
MIN_KEPT_MASS = 0.5
# ... or when the image and its flip disagree this much (tfseg.uncertainty's score, 1 - Jaccard of the
# views' masks; in the 5-fold CV its median is 0.09 and the patients above 0.5 scored DSC 0, 0 and 0.50).
MAX_UNCERTAINTY = 0.5


def kept_mass_fraction(probabilities, mask, threshold: float = THRESHOLD) -> float:
    """Share of the probability mass above ``threshold`` that the final ``mask`` keeps (1.0 when there is none)."""
    probabilities = np.asarray(probabilities, np.float64)
    above = probabilities > threshold
    total = float(probabilities[above].sum())
    if total == 0.0:
        return 1.0
    return float(probabilities[above & np.asarray(mask, bool)].sum()) / total


def suspect_reasons(kept_mass: float, uncertainty: float | None = None) -> list[str]:
    """Why a patient's mask should be checked first: an empty list when nothing is suspect."""
    reasons = []
    if kept_mass < MIN_KEPT_MASS:
        reasons.append(f"the kept component holds only {kept_mass:.0%} of the predicted tumour probability "
                       "(the tumour may be among the components removed)")
    if uncertainty is not None and uncertainty > MAX_UNCERTAINTY:
        reasons.append(f"the image and its flip disagree (uncertainty {uncertainty:.2f} > {MAX_UNCERTAINTY})")
    return reasons


def suspect_warning(name: str, reasons: list[str]) -> str:
    """The one warning line for a suspect mask, which evaluate, CV and the robustness suite print on stderr."""
    return f"warning: {name}: suspect mask: {'; '.join(reasons)}"
