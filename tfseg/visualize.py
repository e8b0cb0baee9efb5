"""Overlays and charts shared by training (TensorBoard), evaluation and reports.

The ``save_*`` functions write atomically (a temporary name in the same folder,
then a rename), so a reader never sees half an image.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from tfseg.fileio import atomic_path

RED = (255, 0, 0)
GREEN = (0, 255, 0)
FLAIR_CHANNEL = 1  # kaggle_3m channels: pre-contrast, FLAIR, post-contrast


def outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a binary (H, W) mask."""
    mask = mask.astype(bool)
    return mask & ~ndimage.binary_erosion(mask)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Min-max scale one (H, W) channel to uint8 (preprocessed images are standardized)."""
    image = image.astype(np.float32)
    low, high = float(image.min()), float(image.max())
    scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return (scaled * 255).round().astype(np.uint8)


def overlay(flair: np.ndarray, prediction: np.ndarray | None, truth: np.ndarray | None) -> np.ndarray:
    """(H, W) grey FLAIR with the prediction outlined in red and the truth in green -> (H, W, 3) uint8."""
    grey = flair if flair.dtype == np.uint8 else to_uint8(flair)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    if truth is not None:
        rgb[outline(truth)] = GREEN
    if prediction is not None:
        rgb[outline(prediction)] = RED
    return rgb


def grid(tiles: list[np.ndarray], columns: int = 4) -> np.ndarray:
    """Tile equally sized (H, W, 3) uint8 images row-major into one image (blank padding)."""
    rows = -(-len(tiles) // columns)
    h, w = tiles[0].shape[:2]
    out = np.zeros((rows * h, columns * w, 3), np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
    return out


def dsc_bar_chart(dsc_by_patient: dict[str, float], title: str = "validation DSC per patient", ax=None):
    """Horizontal bar chart sorted by DSC with mean (red) and median (green) lines, as the reference draws it.

    Returns the matplotlib Figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = sorted(dsc_by_patient.items(), key=lambda kv: kv[1])
    names, values = [k for k, _ in items], [v for _, v in items]
    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(items) + 1.5))
    else:
        fig = ax.figure
    ax.barh(range(len(values)), values, color="tab:blue")
    ax.set_yticks(range(len(values)), names, fontsize=8)
    ax.axvline(float(np.mean(values)), color="red", linestyle="--", label=f"mean {np.mean(values):.3f}")
    ax.axvline(float(np.median(values)), color="green", linestyle=":", label=f"median {np.median(values):.3f}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("DSC")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def figure_to_array(fig) -> np.ndarray:
    """Render a matplotlib figure to (H, W, 3) uint8 and close it."""
    import matplotlib.pyplot as plt

    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


# ----------------------------------------------------------------------------
# Volumes: per-slice overlays, the slices worth showing, files on disk.
# ----------------------------------------------------------------------------

def volume_overlays(flair: np.ndarray, prediction: np.ndarray | None, truth: np.ndarray | None) -> list[np.ndarray]:
    """One :func:`overlay` per slice.

    flair (S, H, W) uint8 (or float, min-max scaled per slice); prediction / truth (S, H, W) bool or None.
    Returns S images (H, W, 3) uint8.
    """
    return [overlay(flair[i], None if prediction is None else prediction[i], None if truth is None else truth[i])
            for i in range(len(flair))]


def heat_overlay(flair: np.ndarray, heat: np.ndarray, vmax: float, prediction: np.ndarray | None = None) -> np.ndarray:
    """(H, W) grey FLAIR under a heat map (H, W) float scaled to [0, ``vmax``] -> (H, W, 3) uint8.

    The colour ("inferno" of heat / vmax) is blended in with opacity sqrt(heat / vmax), so
    where the map is 0 the plain FLAIR shows and a small disagreement is still visible; the
    prediction, when given, is outlined in red as in :func:`overlay`.
    """
    from matplotlib import colormaps

    grey = (flair if flair.dtype == np.uint8 else to_uint8(flair)).astype(np.float32)
    level = np.clip(np.asarray(heat, np.float32) / vmax, 0.0, 1.0)
    colour = colormaps["inferno"](level)[..., :3] * 255.0
    alpha = np.sqrt(level)[..., None]
    rgb = ((1.0 - alpha) * grey[..., None] + alpha * colour).round().astype(np.uint8)
    if prediction is not None:
        rgb[outline(prediction)] = RED
    return rgb


def heat_overlays(flair: np.ndarray, heat: np.ndarray, vmax: float,
                  prediction: np.ndarray | None = None) -> list[np.ndarray]:
    """One :func:`heat_overlay` per slice: flair (S, H, W), heat (S, H, W) float -> S images (H, W, 3) uint8."""
    return [heat_overlay(flair[i], heat[i], vmax, None if prediction is None else prediction[i])
            for i in range(len(flair))]


def largest_slices(mask: np.ndarray, count: int = 6, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``count`` slices of a (S, H, W) mask with the most foreground, in slice order.

    Ties (e.g. slices without tumour) are broken by ``tiebreak`` (S, H, W), e.g. the
    prediction, then by slice order.
    """
    area = mask.reshape(len(mask), -1).sum(axis=1).astype(np.int64)
    second = np.zeros_like(area) if tiebreak is None else tiebreak.reshape(len(mask), -1).sum(axis=1)
    order = np.lexsort((np.arange(len(mask)), -second, -area))  # last key sorts first
    return np.sort(order[:count])


def save_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 image as PNG."""
    import imageio.v3 as iio

    with atomic_path(path) as tmp:
        iio.imwrite(tmp, image, extension=".png")
    return Path(path)


def save_gif(path: str | os.PathLike, frames: list[np.ndarray], fps: float = 4.0) -> Path:
    """Write (H, W, 3) uint8 frames as a looping animated GIF (identical neighbours may be merged)."""
    import imageio.v3 as iio

    with atomic_path(path) as tmp:
        iio.imwrite(tmp, np.stack(frames), extension=".gif", duration=1000.0 / fps, loop=0)
    return Path(path)


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Save a matplotlib figure as PNG and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return Path(path)


def dsc_bar_charts(panels: dict[str, dict[str, float]]):
    """Side-by-side :func:`dsc_bar_chart` panels, e.g. {"preprocessed": {...}, "native": {...}} -> Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(len(v) for v in panels.values())
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 0.35 * rows + 1.8), squeeze=False)
    for ax, (title, values) in zip(axes[0], panels.items()):
        dsc_bar_chart(values, title=title, ax=ax)
    return fig


def dsc_comparison_chart(dsc_by_run: dict[str, dict[str, float]], title: str = "validation DSC per patient"):
    """Per-patient DSC of several runs: one row per patient (sorted by the mean over runs), one marker per run.

    dsc_by_run: {run name: {patient: DSC}}; patients missing from a run are left out of its markers.
    Returns the matplotlib Figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    patients = sorted({p for scores in dsc_by_run.values() for p in scores},
                      key=lambda p: (np.mean([s[p] for s in dsc_by_run.values() if p in s]), p))
    row = {p: i for i, p in enumerate(patients)}
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(patients) + 2.0))
    markers = "os^Dv<>ph*"
    for k, (run, scores) in enumerate(dsc_by_run.items()):
        names = [p for p in patients if p in scores]
        mean = float(np.mean(list(scores.values()))) if scores else float("nan")
        ax.scatter([scores[p] for p in names], [row[p] for p in names], marker=markers[k % len(markers)],
                   label=f"{run} (mean {mean:.3f})", alpha=0.8)
    ax.set_yticks(range(len(patients)), patients, fontsize=8)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("DSC")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 if len(patients) > 3 else -0.3), fontsize=8,
              ncol=min(2, max(1, len(dsc_by_run))))
    fig.tight_layout()
    return fig


def time_to_accuracy_chart(curves: dict[str, dict], reference: dict | None = None,
                           title: str = "validation mean DSC by epoch"):
    """Validation DSC against cumulative training minutes (left) and images seen (right).

    curves: {label: {"minutes": [...] or None, "images": [...] or None, "dsc": [...], "estimated": bool}},
    one point per epoch (a panel leaves out a curve whose axis is None); ``estimated`` curves are dashed.
    reference: the same keys for the reference program, drawn in black with its best DSC as a dotted line.
    Returns the matplotlib Figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), sharey=True)
    panels = (("minutes", "cumulative training time (min)", 1.0), ("images", "training images seen (thousands)", 1e3))
    lowest = 1.0
    for ax, (key, xlabel, scale) in zip(axes, panels):
        for i, (label, curve) in enumerate(curves.items()):
            if curve.get(key) is not None:
                estimated = curve.get("estimated")
                ax.plot(np.asarray(curve[key]) / scale, curve["dsc"], marker="o", markersize=3, alpha=0.85,
                        color=f"C{i % 10}", label=label + (" (x estimated)" if estimated else ""),
                        linestyle="--" if estimated else "-")
                lowest = min([lowest] + [v for v in curve["dsc"] if np.isfinite(v)])
        if reference is not None:
            ax.plot(np.asarray(reference[key]) / scale, reference["dsc"], color="black", linewidth=2.2, marker="s",
                    markersize=4, label="reference program (docs/protocol.md)")
            ax.axhline(max(reference["dsc"]), color="black", linestyle=":", linewidth=1)
            lowest = min([lowest] + list(reference["dsc"]))
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation mean per-volume DSC")
    axes[0].set_ylim(max(0.0, lowest - 0.05), 1.0)
    legend = {}  # a curve may be missing from one panel: take every label once
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.suptitle(title)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=min(3, max(1, len(legend))), fontsize=8)
    rows = -(-len(legend) // 3)
    fig.tight_layout(rect=(0, 0.04 + 0.035 * rows, 1, 1))
    return fig


def dsc_patient_comparison(dsc_by_run: dict[str, dict[str, float]], lines: dict[str, float] | None = None,
                           title: str = "validation DSC per patient"):
    """Per-patient DSC of a few runs side by side (one marker per run and patient), with horizontal lines.

    dsc_by_run: {run label: {patient: DSC}}; patients go along x, sorted by their mean over runs (a patient a
    run lacks gets no marker). lines: {label: DSC}, e.g. {"reference program mean 0.894": 0.894}, dashed.
    Each run's own mean is a dotted line in its colour. The DSC axis starts just below the lowest value, so
    differences of a hundredth stay visible. Returns the matplotlib Figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    patients = sorted({p for scores in dsc_by_run.values() for p in scores},
                      key=lambda p: (np.mean([s[p] for s in dsc_by_run.values() if p in s]), p))
    offset = 0.5 / max(1, len(dsc_by_run))
    fig, ax = plt.subplots(figsize=(max(7.0, 0.75 * len(patients) + 3), 6.0))
    for k, (run, scores) in enumerate(dsc_by_run.items()):
        x = [i + (k - (len(dsc_by_run) - 1) / 2) * offset for i, p in enumerate(patients) if p in scores]
        mean = float(np.mean(list(scores.values())))
        ax.plot(x, [scores[p] for p in patients if p in scores], linestyle="none", marker="os^Dv"[k % 5],
                markersize=8, color=f"C{k % 10}", label=f"{run} (mean {mean:.3f})")
        ax.axhline(mean, color=f"C{k % 10}", linestyle=":", linewidth=1.2)
    for i, (label, value) in enumerate((lines or {}).items()):
        ax.axhline(value, color=("black", "dimgrey")[i % 2], linestyle="--", linewidth=1.5, label=label)
    values = [v for scores in dsc_by_run.values() for v in scores.values()] + list((lines or {}).values())
    ax.set_ylim(max(0.0, np.floor((min(values) - 0.02) * 20) / 20), 1.0)
    ax.set_xticks(range(len(patients)), patients, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("DSC")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8)
    rows = -(-(len(dsc_by_run) + len(lines or {})) // 2)
    fig.tight_layout(rect=(0, 0.03 + 0.035 * rows, 1, 1))
    return fig
