"""Overlays and charts shared by training (TensorBoard), evaluation and reports.

The ``save_*`` functions write atomically (a temporary name in the same folder,
then a rename), so a reader never sees half an image.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
from scipy import ndimage

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


def largest_slices(mask: np.ndarray, count: int = 6, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``count`` slices of a (S, H, W) mask with the most foreground, in slice order.

    Ties (e.g. slices without tumour) are broken by ``tiebreak`` (S, H, W), e.g. the
    prediction, then by slice order.
    """
    area = mask.reshape(len(mask), -1).sum(axis=1).astype(np.int64)
    second = np.zeros_like(area) if tiebreak is None else tiebreak.reshape(len(mask), -1).sum(axis=1)
    order = np.lexsort((np.arange(len(mask)), -second, -area))  # last key sorts first
    return np.sort(order[:count])


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds, else remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
