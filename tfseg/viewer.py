"""One patient's prediction as a single self-contained HTML page: slices, a slider, overlay toggles.

:func:`write_case_page` writes one ``.html`` file that opens in any browser without a server and
fetches nothing: every slice is a base64 PNG data URI, and the script and style are inline (the
page's Content-Security-Policy forbids anything else, so a stray reference fails loudly in the
console instead of leaking a request). Each layer is its own PNG per slice, stacked in the page:

* the base sequence (FLAIR by default, or pre-/post-contrast): 8-bit grey;
* the predicted mask's outline (the mask minus its erosion, :func:`tfseg.visualize.outline`), red as
  in every tfseg overlay: a two-colour palette PNG, transparent off the outline;
* the probability ("hot", 0..1) and the uncertainty ("inferno", 0..0.5, :data:`tfseg.uncertainty.MAP_MAX`)
  maps: 256-colour palette PNGs whose opacity grows with the value (0 is fully transparent).

A 30-slice 256x256 kaggle_3m case with every layer is about 4 MB, nearly all of it the three base
sequences (lossless: PNG, no JPEG). The page opens on the slice with the largest mask area.

Element ids (stable, for tests and scripts): ``#slice`` (the range input, 1..S),
``#slice-number`` (the shown slice, 1-based as kaggle_3m names them), ``#base`` (select: ``flair``,
``pre``, ``post``), ``#overlay-mask``, ``#overlay-probability``, ``#overlay-uncertainty`` (checkboxes,
absent when the map is not given), ``#view`` (the stacked images: ``#view-base``, ``#view-mask``,
``#view-probability``, ``#view-uncertainty``; an overlay switched off is ``hidden``), ``#info``.
"""
from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from tfseg.fileio import write_text_atomic
from tfseg.uncertainty import MAP_MAX
from tfseg.visualize import FLAIR_CHANNEL, RED, largest_slices, outline

# (value of #base, label, channel of the native slices: pre-contrast, FLAIR, post-contrast)
SEQUENCES = (("flair", "FLAIR", FLAIR_CHANNEL), ("pre", "pre-contrast", 0), ("post", "post-contrast", 2))
# (name, label, colour map, the value where the colour scale ends)
HEAT_MAPS = (("probability", "probability", "hot", 1.0), ("uncertainty", "uncertainty", "inferno", MAP_MAX))
HEAT_OPACITY = 0.75  # at the top of the scale: the anatomy still shows through


def write_case_page(path: str | os.PathLike, images: np.ndarray, mask: np.ndarray, probabilities: np.ndarray | None = None,
                    uncertainty: np.ndarray | None = None, info: Mapping[str, object] | None = None) -> Path:
    """Write the viewer page of one case to ``path`` (atomically) and return it.

    images: (S, H, W, 3) uint8 native slices (channels pre-contrast, FLAIR, post-contrast);
    mask: (S, H, W) bool, the predicted mask; probabilities, uncertainty: (S, H, W) float in [0, 1]
    or None (no toggle for a map not given; uncertainty's colours end at 0.5); info: label -> value,
    shown in a table (floats to 4 significant digits, lists joined by commas); its "case", else the
    file's name, is the page's title.
    Raises ValueError naming the argument whose shape, dtype or values are wrong.
    """
    _check_inputs(images, mask, probabilities, uncertainty, info)
    heats = {"probability": probabilities, "uncertainty": uncertainty}
    layers = {"base": {key: [_grey_png(images[i, ..., channel]) for i in range(len(images))]
                       for key, _, channel in SEQUENCES},
              "mask": [_outline_png(outline(m)) for m in mask]}
    for name, _, cmap, vmax in HEAT_MAPS:
        if heats[name] is not None:
            palette, alpha = _heat_palette(cmap)
            layers[name] = [_heat_png(h, vmax, palette, alpha) for h in heats[name]]
    start = int(largest_slices(mask, 1, tiebreak=probabilities)[0])
    data = {"start": start + 1, "slices": len(images), "layers": layers,
            "area": mask.reshape(len(mask), -1).sum(axis=1).tolist()}
    title = str(info["case"]) if info and "case" in info else Path(path).stem
    page = _page(title, data, images.shape[1:3], [n for n, *_ in HEAT_MAPS if heats[n] is not None], info)
    return write_text_atomic(path, page)


def _check_inputs(images, mask, probabilities, uncertainty, info) -> None:
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be an (S, H, W, 3) array (pre-contrast, FLAIR, post-contrast), "
                         f"got {_describe(images)}")
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (the native slices), got {images.dtype}")
    if min(images.shape[:3]) < 1:
        raise ValueError(f"images must hold at least one slice of at least 1x1 pixels, got shape {images.shape}")
    expected = images.shape[:3]
    if not isinstance(mask, np.ndarray) or mask.shape != expected:
        raise ValueError(f"mask must have the images' shape {expected} (S, H, W), got {_describe(mask)}")
    if mask.dtype != np.bool_:
        raise ValueError(f"mask must be bool, got {mask.dtype}: pass e.g. mask > 0 or probabilities >= threshold")
    for name, value in (("probabilities", probabilities), ("uncertainty", uncertainty)):
        if value is None:
            continue
        if not isinstance(value, np.ndarray) or value.shape != expected:
            raise ValueError(f"{name} must have the images' shape {expected} (S, H, W), got {_describe(value)}")
        if not np.issubdtype(value.dtype, np.floating):
            raise ValueError(f"{name} must be a float array with values in [0, 1], got {value.dtype}")
        if not np.isfinite(value).all():
            raise ValueError(f"{name} must hold finite values in [0, 1], got {np.count_nonzero(~np.isfinite(value))} "
                             "NaN or infinite values")
        if value.min() < 0 or value.max() > 1:
            raise ValueError(f"{name} must hold finite values in [0, 1], got values from {value.min():.4g} "
                             f"to {value.max():.4g}")
    if info is not None and not isinstance(info, Mapping):
        raise ValueError(f"info must be a dict of label -> value, got {type(info).__name__}")


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"shape {value.shape} ({value.dtype})"
    return type(value).__name__


# ----------------------------------------------------------------------------
# Layers: one small PNG per slice, as a data URI.
# ----------------------------------------------------------------------------

def _png_uri(image) -> str:
    buffer = io.BytesIO()
    # zlib's default level: optimize=True saves about 1% and takes twice as long. A palette image's
    # info["transparency"] (its tRNS chunk) is written too.
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _grey_png(channel: np.ndarray) -> str:
    from PIL import Image

    return _png_uri(Image.fromarray(np.ascontiguousarray(channel), mode="L"))


def _outline_png(edge: np.ndarray) -> str:
    """(H, W) bool outline -> palette PNG: index 0 transparent, index 1 red."""
    from PIL import Image

    image = Image.fromarray(edge.astype(np.uint8), mode="P")
    image.putpalette([0, 0, 0, *RED])
    image.info["transparency"] = bytes([0, 255])
    return _png_uri(image)


def _heat_palette(cmap: str) -> tuple[list[int], bytes]:
    """256 colours of a matplotlib colour map, and their opacities: HEAT_OPACITY * sqrt(level), 0 at level 0.

    The square root (as :func:`tfseg.visualize.heat_overlay` blends) keeps a small value visible.
    """
    from matplotlib import colormaps

    levels = np.linspace(0.0, 1.0, 256)
    colours = (colormaps[cmap](levels)[:, :3] * 255).round().astype(np.uint8)
    alpha = (HEAT_OPACITY * np.sqrt(levels) * 255).round().astype(np.uint8)
    return colours.reshape(-1).tolist(), alpha.tobytes()


def _heat_png(heat: np.ndarray, vmax: float, palette: list[int], alpha: bytes) -> str:
    from PIL import Image

    level = np.clip(np.asarray(heat, np.float32) / vmax, 0.0, 1.0)
    image = Image.fromarray((level * 255).round().astype(np.uint8), mode="P")
    image.putpalette(palette)
    image.info["transparency"] = alpha
    return _png_uri(image)


def _gradient(cmap: str) -> str:
    """A CSS linear-gradient of a colour map, for the scale beside its toggle."""
    from matplotlib import colormaps

    stops = ", ".join("rgb({}, {}, {})".format(*(np.asarray(colormaps[cmap](x)[:3]) * 255).round().astype(int))
                      for x in np.linspace(0, 1, 9))
    return f"linear-gradient(to right, {stops})"


# ----------------------------------------------------------------------------
# The page.
# ----------------------------------------------------------------------------

def _format(value) -> str:
    if isinstance(value, (float, np.floating)):
        return format(float(value), ".4g")
    if isinstance(value, (list, tuple)):
        return ", ".join(_format(v) for v in value) or "none"
    return str(value)


def _page(title: str, data: dict, size: tuple[int, int], heats: list[str], info: Mapping | None) -> str:
    height, width = size
    scale = max(1, 512 // max(height, width))  # small images drawn bigger (whole multiples stay sharp)
    toggles = ['<label><input type="checkbox" id="overlay-mask" checked> mask outline '
               '<span class="swatch" style="background: rgb({}, {}, {})"></span></label>'.format(*RED)]
    for name, label, cmap, vmax in HEAT_MAPS:
        if name in heats:
            toggles.append(f'<label><input type="checkbox" id="overlay-{name}"> {label} '
                           f'<span class="scale">0 <span class="bar" style="background: {_gradient(cmap)}"></span> '
                           f'{vmax:g}</span></label>')
    overlays = ["probability", "uncertainty", "mask"]  # drawing order: the outline on top
    stack = "\n".join([f'<img id="view-base" alt="base sequence" width="{width}" height="{height}">']
                      + [f'<img id="view-{name}" class="overlay" alt="{name}" width="{width}" height="{height}"'
                         f'{"" if name == "mask" else " hidden"}>'
                         for name in overlays if name == "mask" or name in heats])
    rows = "\n".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_format(v))}</td></tr>"
                     for k, v in (info or {}).items())
    options = "\n".join(f'<option value="{key}"{" selected" if key == "flair" else ""}>{label}</option>'
                        for key, label, _ in SEQUENCES)
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return _TEMPLATE.format(title=html.escape(title), width=width * scale, height=height * scale,
                            slices=data["slices"], start=data["start"], options=options,
                            toggles="\n".join(toggles), stack=stack, rows=rows, payload=payload, script=_SCRIPT)


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1em; background: #111; color: #ddd; }}
h1 {{ font-size: 1.2em; margin: 0 0 0.5em; }}
main {{ display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }}
#view {{ position: relative; width: {width}px; height: {height}px; max-width: 95vw; aspect-ratio: {width} / {height};
        background: #000; }}
#view img {{ position: absolute; inset: 0; width: 100%; height: 100%; image-rendering: pixelated; }}
#view img[hidden] {{ display: none; }}
.controls {{ display: flex; flex-direction: column; gap: 0.6em; min-width: 16em; }}
.controls label {{ display: flex; align-items: center; gap: 0.4em; }}
#slice {{ width: {width}px; max-width: 95vw; }}
.swatch {{ display: inline-block; width: 1.2em; height: 0.3em; }}
.scale {{ font-size: 0.8em; display: inline-flex; align-items: center; gap: 0.3em; }}
.bar {{ display: inline-block; width: 6em; height: 0.7em; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ text-align: left; padding: 0.15em 0.8em 0.15em 0; vertical-align: top; }}
th {{ color: #999; font-weight: normal; }}
.hint {{ color: #888; font-size: 0.8em; }}
</style>
</head>
<body>
<h1>{title}</h1>
<main>
<div>
<div id="view">
{stack}
</div>
<p><input type="range" id="slice" min="1" max="{slices}" value="{start}" aria-label="slice"></p>
<p>slice <span id="slice-number">{start}</span> of {slices} &middot; mask area <span id="slice-area"></span> pixels
<span class="hint">(arrow keys: previous / next slice)</span></p>
</div>
<div class="controls">
<label>base <select id="base">
{options}
</select></label>
{toggles}
<table id="info">
{rows}
</table>
</div>
</main>
<script type="application/json" id="case-data">{payload}</script>
<script>
{script}
</script>
</body>
</html>
"""

_SCRIPT = """"use strict";
const DATA = JSON.parse(document.getElementById("case-data").textContent);
const slider = document.getElementById("slice");
const base = document.getElementById("base");
const OVERLAYS = ["mask", "probability", "uncertainty"].filter((name) => name in DATA.layers);

function show() {
  const i = Number(slider.value) - 1;
  document.getElementById("slice-number").textContent = String(i + 1);
  document.getElementById("slice-area").textContent = String(DATA.area[i]);
  document.getElementById("view-base").src = DATA.layers.base[base.value][i];
  for (const name of OVERLAYS) {
    const img = document.getElementById("view-" + name);
    img.src = DATA.layers[name][i];
    img.hidden = !document.getElementById("overlay-" + name).checked;
  }
}

function step(delta) {
  const next = Math.min(DATA.slices, Math.max(1, Number(slider.value) + delta));
  if (next !== Number(slider.value)) {
    slider.value = String(next);
    show();
  }
}

slider.addEventListener("input", show);
base.addEventListener("change", show);
for (const name of OVERLAYS) {
  document.getElementById("overlay-" + name).addEventListener("change", show);
}
document.addEventListener("keydown", (event) => {
  if (event.target === slider || event.target === base) return;  // they move themselves on arrow keys
  const delta = {ArrowLeft: -1, ArrowDown: -1, ArrowRight: 1, ArrowUp: 1, PageDown: -5, PageUp: 5}[event.key];
  if (delta !== undefined) {
    event.preventDefault();
    step(delta);
  } else if (event.key === "Home" || event.key === "End") {
    event.preventDefault();
    step(event.key === "Home" ? -DATA.slices : DATA.slices);
  }
});
slider.value = String(DATA.start);
show();"""
