"""Overlays and charts shared by training (TensorBoard), evaluation and reports."""
from __future__ import annotations

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
