"""The model tfseg ships (tfseg/pretrained): `--model pretrained` checks its SHA-256 before loading it."""
import hashlib

import pytest

from tfseg import pretrained
from tfseg.inference import ModelLoadError, load_model


@pytest.fixture
def shipped_copy(tmp_path, monkeypatch):
    """A stand-in pretrained folder: a file and its SHA256SUMS line; returns (file, sums)."""
    model = tmp_path / "model.keras"
    model.write_bytes(b"weights")
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{hashlib.sha256(b'weights').hexdigest()}  model.keras\n")
    monkeypatch.setattr(pretrained, "FOLDER", tmp_path)
    monkeypatch.setattr(pretrained, "SUMS", sums)
    return model, sums


def test_a_replaced_pretrained_file_is_refused_before_loading(shipped_copy):
    model, _ = shipped_copy
    model.write_bytes(b"other weights")
    with pytest.raises(ModelLoadError, match="does not match its SHA-256 .* it is not loaded"):
        load_model("pretrained")


def test_a_matching_pretrained_file_resolves_to_itself(shipped_copy):
    model, _ = shipped_copy
    assert pretrained.resolve() == model


def test_no_pretrained_model_says_how_to_get_a_model(shipped_copy):
    _, sums = shipped_copy
    sums.unlink()
    with pytest.raises(ModelLoadError, match="has no pretrained model"):
        load_model("pretrained")


def test_the_shipped_model_matches_its_checksum_and_segments_a_real_patient(real_data_dir, tmp_path):
    if not pretrained.SUMS.is_file():
        pytest.skip("this checkout ships no pretrained model")
    from tfseg.evaluation import evaluate_model

    loaded = load_model("pretrained")
    assert loaded.kind == "keras" and loaded.image_size == 128
    summary = evaluate_model("pretrained", data=real_data_dir, out=tmp_path / "eval", patients=["all"],
                             overlays=False, progress=False)
    # CI restores the first patients of the sorted set: training patients of this model, so well segmented.
    assert summary["n_patients"] >= 1 and summary["mean_dsc"] > 0.5
