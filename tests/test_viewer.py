"""The self-contained case viewer (tfseg.viewer): the file without a browser, then the page in headless Chromium."""
import base64
import contextlib
import io
import json
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from tfseg.viewer import write_case_page
from tfseg.visualize import outline

SLICES, SIZE = 5, 64
LARGEST = 3  # the slice (0-based) with the largest mask: the page opens on slice 4


def synthetic_case(slices=SLICES, size=SIZE):
    """(images, mask, probabilities, uncertainty) of a small case: a disc growing to slice LARGEST, then shrinking;
    the three channels differ (gradients in three directions), so the base sequences can be told apart."""
    yy, xx = np.mgrid[:size, :size]
    images = np.zeros((slices, size, size, 3), np.uint8)
    images[..., 0] = (yy * 255 // (size - 1))[None]
    images[..., 1] = (xx * 255 // (size - 1))[None]
    images[..., 2] = ((yy + xx) * 255 // (2 * size - 2))[None]
    images += np.arange(slices, dtype=np.uint8)[:, None, None, None]  # every slice its own pixels
    radius = np.array([2, 6, 9, 14, 5][:slices] + [3] * max(0, slices - 5))
    distance = np.hypot(yy - size / 2, xx - size / 2)
    mask = distance[None] < radius[:, None, None]
    probabilities = np.clip(1.2 - distance[None] / (radius[:, None, None] + 4), 0, 1).astype(np.float32)
    uncertainty = (0.5 - np.abs(probabilities - 0.5)).astype(np.float32)
    return images, mask, probabilities, uncertainty


def page_data(path):
    """The JSON the page's script reads: start, slices, area, layers {base: {flair, pre, post}, mask, ...}."""
    text = path.read_text()
    return json.loads(re.search(r'<script type="application/json" id="case-data">(.*?)</script>', text, re.S).group(1))


def decode(uri):
    assert uri.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


@pytest.fixture
def case_page(tmp_path):
    images, mask, probabilities, uncertainty = synthetic_case()
    info = {"case": "TCGA_XX_0000_<b>", "tumour volume (ml)": 12.34567, "suspect": ["small", "edge"]}
    return write_case_page(tmp_path / "case.html", images, mask, probabilities, uncertainty, info)


# ----------------------------------------------------------------------------
# The file, without a browser.
# ----------------------------------------------------------------------------

def test_page_is_written_to_path_without_leaving_a_temporary_file(tmp_path):
    images, mask, _, _ = synthetic_case()
    path = write_case_page(tmp_path / "cases" / "case.html", images, mask)
    assert path == tmp_path / "cases" / "case.html"
    assert path.read_text().startswith("<!DOCTYPE html>")
    assert os.listdir(path.parent) == ["case.html"]


def test_page_refers_to_no_network_resource(case_page):
    text = case_page.read_text()
    assert "http://" not in text and "https://" not in text
    references = re.findall(r"""\b(?:src|href)\s*=\s*["']([^"']*)["']""", text) + re.findall(r"url\(([^)]*)\)", text)
    assert references and all(ref.startswith("data:") for ref in references), references
    assert "<script src" not in text and "@import" not in text


def test_page_embeds_one_png_per_slice_per_layer(case_page):
    text = case_page.read_text()
    layers = page_data(case_page)["layers"]
    assert text.count("data:image/png;base64,") == SLICES * (3 + 3)  # 3 base sequences, 3 overlays
    assert sorted(layers) == ["base", "mask", "probability", "uncertainty"]
    assert sorted(layers["base"]) == ["flair", "post", "pre"]
    assert all(len(uris) == SLICES for uris in [*layers["base"].values(), layers["mask"]])


def test_maps_not_given_have_neither_layer_nor_toggle(tmp_path):
    images, mask, probabilities, _ = synthetic_case()
    path = write_case_page(tmp_path / "case.html", images, mask, probabilities=probabilities)
    text = path.read_text()
    assert text.count("data:image/png;base64,") == SLICES * (3 + 2)
    assert 'id="overlay-probability"' in text and 'id="overlay-mask"' in text
    assert 'id="overlay-uncertainty"' not in text and 'id="view-uncertainty"' not in text
    assert "uncertainty" not in page_data(path)["layers"]


def test_base_layers_are_the_native_channels_losslessly(case_page):
    images, *_ = synthetic_case()
    base = page_data(case_page)["layers"]["base"]
    for key, channel in (("pre", 0), ("flair", 1), ("post", 2)):
        for i, uri in enumerate(base[key]):
            np.testing.assert_array_equal(np.asarray(decode(uri).convert("L")), images[i, ..., channel])


def test_mask_layer_is_opaque_on_the_outline_only(case_page):
    _, mask, _, _ = synthetic_case()
    for i, uri in enumerate(page_data(case_page)["layers"]["mask"]):
        rgba = np.asarray(decode(uri).convert("RGBA"))
        np.testing.assert_array_equal(rgba[..., 3] == 255, outline(mask[i]))
        assert (rgba[..., 3][~outline(mask[i])] == 0).all()
        assert (rgba[outline(mask[i])][:, :3] == (255, 0, 0)).all()


def test_heat_layers_are_transparent_at_zero_and_most_opaque_at_the_top_of_their_scale(tmp_path):
    images, mask, _, _ = synthetic_case(slices=2)
    ramp = np.broadcast_to(np.linspace(0, 1, SIZE, dtype=np.float32), (2, SIZE, SIZE)).copy()
    path = write_case_page(tmp_path / "case.html", images, mask, ramp, ramp / 2)  # uncertainty ends at 0.5
    layers = page_data(path)["layers"]
    for name in ("probability", "uncertainty"):
        alpha = np.asarray(decode(layers[name][0]).convert("RGBA"))[0, :, 3]
        assert alpha[0] == 0 and 150 < alpha[-1] < 255  # semi-transparent even at the top
        assert (np.diff(alpha.astype(int)) >= 0).all()


def test_page_opens_on_the_slice_with_the_largest_mask(case_page):
    data = page_data(case_page)
    assert data["start"] == LARGEST + 1
    assert f'id="slice" min="1" max="{SLICES}" value="{LARGEST + 1}"' in case_page.read_text()


def test_page_is_titled_with_the_case_else_the_file_name(case_page, tmp_path):
    assert "<title>TCGA_XX_0000_&lt;b&gt;</title>" in case_page.read_text()
    images, mask, _, _ = synthetic_case()
    assert "<title>patient_7</title>" in write_case_page(tmp_path / "patient_7.html", images, mask).read_text()


def test_info_is_shown_escaped_with_floats_rounded(case_page):
    text = case_page.read_text()
    assert "<th>tumour volume (ml)</th><td>12.35</td>" in text
    assert "TCGA_XX_0000_&lt;b&gt;" in text and "<td>small, edge</td>" in text


def _bad(**changes):
    images, mask, probabilities, uncertainty = synthetic_case()
    arguments = dict(images=images, mask=mask, probabilities=probabilities, uncertainty=uncertainty, info=None)
    arguments.update(changes)
    return arguments


@pytest.mark.parametrize("arguments, message", [
    (_bad(images=synthetic_case()[0][..., :2]), r"images must be an \(S, H, W, 3\) array"),
    (_bad(images=synthetic_case()[0].astype(np.float32)), "images must be uint8"),
    (_bad(mask=synthetic_case()[1][:-1]), r"mask must have the images' shape \(5, 64, 64\)"),
    (_bad(mask=synthetic_case()[1].astype(np.uint8)), "mask must be bool, got uint8"),
    (_bad(probabilities=synthetic_case()[2][:, :32]), "probabilities must have the images' shape"),
    (_bad(uncertainty=synthetic_case()[3].astype(np.uint8)), "uncertainty must be a float array"),
    (_bad(probabilities=synthetic_case()[2] * 2), r"probabilities must hold finite values in \[0, 1\]"),
    (_bad(uncertainty=np.full((SLICES, SIZE, SIZE), np.nan, np.float32)), "uncertainty must hold finite values"),
    (_bad(info=[("case", "x")]), "info must be a dict"),
])
def test_inputs_are_checked_with_an_error_naming_the_argument(tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message):
        write_case_page(tmp_path / "case.html", **arguments)
    assert not (tmp_path / "case.html").exists()


def test_page_of_a_real_patient_stays_a_few_megabytes_for_30_slices(real_data_dir, tmp_path):
    from scipy import ndimage

    from tfseg.data import read_kaggle_folder, scan_folder

    volume = read_kaggle_folder(real_data_dir, [scan_folder(real_data_dir)[0].patient])[0]
    images, mask = volume.image[:30], volume.mask[:30].astype(bool)
    probabilities = ndimage.gaussian_filter(mask.astype(np.float32), 2)
    uncertainty = 0.5 - np.abs(probabilities - 0.5)
    path = write_case_page(tmp_path / "case.html", images, mask, probabilities, uncertainty)
    assert path.stat().st_size < 5e6 * len(images) / 30


def test_viewer_does_not_import_tensorflow():
    import subprocess
    import sys

    code = "import sys, tfseg.viewer; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------
# The page in a real headless browser (Chromium driven by Playwright).
# ----------------------------------------------------------------------------

def chromium_path():
    return os.environ.get("TFSEG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        pytest.skip(f"Playwright is not importable ({err}): pip install -r requirements.txt")
    executable = chromium_path()
    if not executable:
        pytest.skip("no Chromium: set TFSEG_CHROMIUM or put `chromium` on PATH (Debian: apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@contextlib.contextmanager
def open_page(browser, path):
    """(page, problems): the page at ``path`` loaded; problems collects console errors, page errors and every
    request that is neither the page's own file nor a data: URI (web requests are also aborted). On leaving,
    there must be none."""
    page = browser.new_page()
    problems, requests = [], []
    page.on("console", lambda msg: msg.type == "error" and problems.append(f"console: {msg.text}"))
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    page.on("request", lambda request: requests.append(request.url))
    page.route(re.compile(r"^(https?|wss?|ftp)://"), lambda route: route.abort())
    url = path.as_uri()
    page.goto(url)
    page.wait_for_load_state("load")
    yield page, problems
    assert url in requests  # the listener saw the page itself, so it would have seen any other request
    problems.extend(f"request: {r}" for r in requests if r != url and not r.startswith("data:"))
    page.close()
    assert problems == []


@pytest.fixture
def opened(browser, case_page):
    """(page, problems): the synthetic case page loaded (see :func:`open_page`)."""
    with open_page(browser, case_page) as opened:
        yield opened


def src(page, selector):
    return page.get_attribute(selector, "src")


def test_page_loads_on_the_largest_slice_with_every_image_drawn(opened):
    page, problems = opened
    assert page.input_value("#slice") == str(LARGEST + 1)
    assert page.text_content("#slice-number") == str(LARGEST + 1)
    layers = page_data_from(page)
    assert src(page, "#view-base") == layers["base"]["flair"][LARGEST]
    assert src(page, "#view-mask") == layers["mask"][LARGEST]
    assert page.is_visible("#view-mask") and not page.is_visible("#view-probability")
    complete = page.evaluate("[...document.querySelectorAll('#view img')].filter(i => i.src).every(i => i.complete "
                             "&& i.naturalWidth === %d)" % SIZE)
    assert complete
    assert problems == []


def page_data_from(page):
    return json.loads(page.text_content("#case-data"))["layers"]


def test_slider_and_arrow_keys_change_the_slice_and_its_images(opened):
    page, _ = opened
    layers = page_data_from(page)
    page.eval_on_selector("#slice", "(el) => { el.value = '2'; el.dispatchEvent(new Event('input', {bubbles: true})); }")
    assert page.text_content("#slice-number") == "2"
    assert src(page, "#view-base") == layers["base"]["flair"][1] and src(page, "#view-mask") == layers["mask"][1]
    page.focus("#slice")
    page.keyboard.press("ArrowRight")  # the range input moves itself
    assert page.text_content("#slice-number") == "3" and src(page, "#view-base") == layers["base"]["flair"][2]
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("ArrowLeft")  # the page's own keys, with nothing focused
    assert page.text_content("#slice-number") == "2" and page.input_value("#slice") == "2"
    page.keyboard.press("End")
    assert page.text_content("#slice-number") == str(SLICES)
    page.keyboard.press("ArrowRight")  # stays on the last slice
    assert page.text_content("#slice-number") == str(SLICES)
    assert src(page, "#view-probability") == layers["probability"][SLICES - 1]


@pytest.mark.parametrize("name, shown_at_start", [("mask", True), ("probability", False), ("uncertainty", False)])
def test_each_overlay_toggle_shows_and_hides_its_layer(opened, name, shown_at_start):
    page, _ = opened
    before = page.locator("#view").screenshot()
    assert page.is_visible(f"#view-{name}") is shown_at_start
    page.click(f"#overlay-{name}")
    assert page.is_visible(f"#view-{name}") is not shown_at_start
    assert page.locator("#view").screenshot() != before  # what is drawn changed, not only an attribute
    page.click(f"#overlay-{name}")
    assert page.is_visible(f"#view-{name}") is shown_at_start


def test_base_toggle_changes_the_base_image(opened):
    page, _ = opened
    layers = page_data_from(page)
    before = page.locator("#view").screenshot()
    for key in ("pre", "post", "flair"):
        page.select_option("#base", key)
        assert src(page, "#view-base") == layers["base"][key][LARGEST]
        if key == "pre":
            assert page.locator("#view").screenshot() != before
    page.evaluate("document.activeElement.blur()")  # a focused select takes the arrow keys for itself
    page.keyboard.press("ArrowLeft")
    assert src(page, "#view-base") == layers["base"]["flair"][LARGEST - 1]
    assert page.text_content("#slice-number") == str(LARGEST)



# ----------------------------------------------------------------------------
# A page that `tfseg predict` wrote, in the browser.
# ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def predicted_page(tmp_path_factory):
    """OUT/<case>/view.html as `tfseg predict` writes it: a tiny untrained net (tests/tiny_models.py) on one
    phantom patient of 8 native 256 x 256 slices."""
    from tfseg.cli.predict import main
    from tfseg.data.phantom import write_phantom
    from tiny_models import conv_model

    root = tmp_path_factory.mktemp("predicted")
    patient = next(p for p in write_phantom(root / "kaggle_3m", n_patients=1, n_slices=8, seed=1).iterdir()
                   if p.is_dir())
    out = root / "out"
    assert main(["--model", str(conv_model(root / "conv.keras")), "--input", str(patient), "--out", str(out),
                 "--no-progress"]) == 0
    return out / patient.name / "view.html"


def test_a_page_written_by_predict_loads_offline_and_its_slider_changes_the_slice(browser, predicted_page):
    with open_page(browser, predicted_page) as (page, problems):
        layers = page_data_from(page)
        assert len(layers["base"]["flair"]) == 8 and sorted(layers) == ["base", "mask", "probability", "uncertainty"]
        assert page.title() == predicted_page.parent.name
        assert page.evaluate("[...document.querySelectorAll('#view img')].filter(i => i.src).every(i => i.complete "
                             "&& i.naturalWidth === 256)")
        start = int(page.input_value("#slice"))
        before = page.locator("#view").screenshot()
        target = 1 if start != 1 else 2
        page.eval_on_selector("#slice", "(el, value) => { el.value = value; "
                              "el.dispatchEvent(new Event('input', {bubbles: true})); }", str(target))
        assert page.text_content("#slice-number") == str(target)
        assert src(page, "#view-base") == layers["base"]["flair"][target - 1] != layers["base"]["flair"][start - 1]
        assert src(page, "#view-mask") == layers["mask"][target - 1]
        assert page.locator("#view").screenshot() != before  # another slice is drawn, not only another attribute
        assert problems == []
