"""tfseg.data.download: finding kaggle_3m in a download and verifying it against the published checksums.

The download itself (kagglehub, network) cannot run here: `download_dataset` is a thin, separate
function, replaced in these tests.
"""
import shutil
from pathlib import Path

import pytest

from tfseg.data import download
from tfseg.data.kaggle import DataError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def subset(real_data_dir, tmp_path):
    """A writable copy of the restored real patients (their files are the published ones)."""
    copy = tmp_path / "kaggle_3m"
    shutil.copytree(real_data_dir, copy)
    return copy


def test_the_checksum_list_covers_the_whole_published_set():
    expected = download.expected_checksums()
    assert len(expected) == 7858
    assert len({name.split("/")[0] for name in expected}) == 110
    assert all(len(digest) == 64 for digest in expected.values())


def test_restored_real_patients_verify(subset):
    assert download.verify_kaggle_3m(subset, require_all=False, progress=False) == len(list(subset.glob("*/*.tif")))


def test_one_changed_byte_is_an_error_naming_the_file(subset):
    victim = sorted(subset.glob("*/*_mask.tif"))[3]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 1
    victim.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"{victim.name}.*SHA-256 mismatch"):
        download.verify_kaggle_3m(subset, require_all=False, progress=False)


def test_a_missing_file_is_an_error_naming_it(subset):
    victim = sorted(subset.glob("*/*.tif"))[5]
    victim.unlink()
    with pytest.raises(DataError, match="missing, e.g.") as err:
        download.verify_kaggle_3m(subset, require_all=True, progress=False)
    assert "download is incomplete" in str(err.value)


def test_an_unknown_file_is_an_error_naming_it(subset):
    stray = next(p for p in sorted(subset.iterdir()) if p.is_dir()) / "TCGA_XX_0000_20000101_1.tif"
    stray.write_bytes(b"not a slice")
    with pytest.raises(DataError, match="TCGA_XX_0000_20000101_1.tif is not a file of the published"):
        download.verify_kaggle_3m(subset, require_all=False, progress=False)


def test_kaggle_3m_is_found_inside_the_downloads_nested_layout(subset, tmp_path):
    download_root = tmp_path / "cache" / "datasets" / "mateuszbuda" / "lgg-mri-segmentation" / "versions" / "2"
    nested = download_root / "lgg-mri-segmentation" / "kaggle_3m"
    nested.parent.mkdir(parents=True)
    shutil.copytree(subset, download_root / "kaggle_3m")
    shutil.copytree(subset, nested)
    assert download.find_kaggle_3m(download_root) == download_root / "kaggle_3m"  # the shallowest copy
    assert download.find_kaggle_3m(nested) == nested
    (download_root / "empty").mkdir()
    with pytest.raises(DataError, match="no kaggle_3m folder"):
        download.find_kaggle_3m(download_root / "empty")


def test_a_failed_download_says_so_and_gives_the_manual_steps(monkeypatch, tmp_path):
    import kagglehub

    def refuse(handle):
        raise ConnectionError("Temporary failure in name resolution")

    monkeypatch.setattr(kagglehub, "dataset_download", refuse)
    monkeypatch.chdir(tmp_path)  # no ./kaggle_3m here
    with pytest.raises(DataError, match="could not download.*Offline, or Kaggle refused.*kaggle.json"):
        download.default_kaggle_3m()


def test_a_verified_download_is_used_and_a_corrupt_one_is_not(subset, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path / "kaggle_3m")  # no kaggle_3m folder below the working directory
    monkeypatch.setattr(download, "download_dataset", lambda: subset.parent)
    monkeypatch.setattr(download, "verify_kaggle_3m", lambda folder: None)
    assert download.default_kaggle_3m() == subset
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path / "kaggle_3m")
    monkeypatch.setattr(download, "download_dataset", lambda: subset.parent)
    with pytest.raises(DataError, match="files are missing"):  # 3 of 110 patients: a partial download
        download.default_kaggle_3m()


def test_explicit_data_never_downloads(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(download, "download_dataset", lambda: pytest.fail("--data given: must not download"))
    from tfseg.cli import train

    assert train.main(["--data", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_train_without_data_downloads_when_there_is_no_local_folder(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(download, "download_dataset",
                        lambda: (_ for _ in ()).throw(DataError("could not download (test)")))
    from tfseg.cli import train

    assert train.main(["--epochs", "1"]) == 2
    assert "could not download (test)" in capsys.readouterr().err
