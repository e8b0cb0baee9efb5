"""Specification of tfseg.data.split: patient-level train/validation splits (docs/protocol.md "Split")."""
import os
from pathlib import Path

import pytest

from tfseg.data.split import split_patients, validation_of_run

# docs/protocol.md's 10 validation patients.
PROTOCOL_VALIDATION = {
    "TCGA_HT_7616_19940813", "TCGA_CS_6668_20011025", "TCGA_CS_4944_20010208",
    "TCGA_HT_7879_19981009", "TCGA_DU_7014_19860618", "TCGA_DU_6408_19860521",
    "TCGA_DU_6404_19850629", "TCGA_DU_5851_19950428", "TCGA_CS_6667_20011105",
    "TCGA_HT_7692_19960724",
}
SHARED = Path(os.environ.get("TFSEG_SHARED", Path(__file__).resolve().parents[2] / "shared"))

NAMES = [f"TCGA_XX_{i:04d}_20000101" for i in range(23)]


@pytest.fixture(scope="module")
def kaggle_patients():
    """The 110 patient folder names of the full set, from the shared lossless copy."""
    folder = SHARED / "lgg" / "kaggle_3m"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent: the full set's patient names are not available")
    names = [p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(names) == 110, f"{folder} should hold 110 patient folders, found {len(names)}"
    return names


def test_default_split_gives_the_protocols_10_validation_patients(kaggle_patients):
    train, val = split_patients(kaggle_patients)
    assert set(val) == PROTOCOL_VALIDATION
    assert len(train) == 100 and not set(train) & set(val)
    assert sorted(train + val) == sorted(kaggle_patients)


def test_default_split_does_not_depend_on_the_order_of_the_names(kaggle_patients):
    assert split_patients(list(reversed(kaggle_patients))) == split_patients(kaggle_patients)


def test_both_halves_are_sorted():
    train, val = split_patients(NAMES, val_cases=5)
    assert train == sorted(train) and val == sorted(val)


def test_too_few_patients_for_the_validation_cases_is_an_error_naming_val_cases():
    with pytest.raises(ValueError, match="--val-cases"):
        split_patients(NAMES[:5], val_cases=10)
    with pytest.raises(ValueError, match="--val-cases"):
        split_patients(NAMES[:5], val_cases=5)  # nothing would be left for training


def test_folds_partition_the_patients():
    vals = [split_patients(NAMES, fold=k, folds=5)[1] for k in range(5)]
    assert sorted(name for val in vals for name in val) == sorted(NAMES)
    assert sum(len(val) for val in vals) == len(NAMES)
    assert max(map(len, vals)) - min(map(len, vals)) <= 1


def test_each_folds_train_and_validation_are_disjoint_and_cover_all_patients():
    for k in range(5):
        train, val = split_patients(NAMES, fold=k, folds=5)
        assert not set(train) & set(val)
        assert sorted(train + val) == sorted(NAMES)


def test_fold_without_folds_is_an_error():
    with pytest.raises(ValueError, match="--fold and --folds go together"):
        split_patients(NAMES, fold=0)
    with pytest.raises(ValueError, match="--fold and --folds go together"):
        split_patients(NAMES, folds=5)


def test_fold_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="--fold must be in 0..4"):
        split_patients(NAMES, fold=5, folds=5)
    with pytest.raises(ValueError, match="--folds must be between 2"):
        split_patients(NAMES, fold=0, folds=1)


def test_a_full_set_whose_default_split_is_not_the_protocols_is_an_error():
    # 110 kaggle_3m-like names that are not kaggle_3m's: the default split can't be docs/protocol.md's 10 patients.
    fake = [f"TCGA_XX_{i:04d}_20000101" for i in range(110)]
    with pytest.raises(ValueError, match="not docs/protocol.md's"):
        split_patients(fake, 10)
    # Other splits of the same names are not the protocol's and are allowed.
    assert len(split_patients(fake, 12)[1]) == 12
    assert len(split_patients(fake, fold=0, folds=5)[1]) == 22


def test_stratified_folds_partition_the_patients_and_share_out_each_label():
    names = [f"TCGA_XX_{i:04d}_20000101" for i in range(23)]
    has_tumour = {n: i % 3 != 0 for i, n in enumerate(names)}  # 8 without tumour, 15 with
    folds = [split_patients(names, fold=k, folds=5, strata=has_tumour)[1] for k in range(5)]
    assert sorted(n for f in folds for n in f) == sorted(names)
    assert {len(f) for f in folds} <= {4, 5}
    for fold in folds:
        assert sum(not has_tumour[n] for n in fold) in (1, 2)
    assert folds == [split_patients(names, fold=k, folds=5, strata=has_tumour)[1] for k in range(5)]


def test_a_runs_recorded_validation_patients_are_its_split():
    names = [f"P{i:03d}" for i in range(20)]
    config_file = {"split": {"validation": ["P001", "P007"]}, "config": {"val_cases": 10}}
    assert validation_of_run(config_file, names) == (["P001", "P007"], "run config split")


def test_an_old_run_without_a_recorded_split_gets_the_training_policy():
    names = [f"P{i:03d}" for i in range(20)]
    validation, source = validation_of_run({"config": {"val_cases": 3}}, names)
    assert validation == split_patients(names, 3)[1] and source == "run config (recomputed)"


def test_an_old_cross_validation_fold_without_a_recorded_split_is_an_error_saying_what_to_do():
    with pytest.raises(ValueError, match="retrain the fold, or name the patients with --patients"):
        validation_of_run({"config": {"fold": 1, "folds": 5, "val_cases": 10}}, [f"P{i}" for i in range(20)])
