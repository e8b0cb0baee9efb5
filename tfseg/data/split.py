"""Patient-level train/validation splits (docs/protocol.md "Split")."""
from __future__ import annotations

import random

VAL_SEED = 42
DEFAULT_VAL_CASES = 10
KAGGLE_3M_PATIENTS = 110
# docs/protocol.md's validation patients: what the reference rule gives on the full kaggle_3m set.
PROTOCOL_VALIDATION = frozenset({
    "TCGA_HT_7616_19940813", "TCGA_CS_6668_20011025", "TCGA_CS_4944_20010208", "TCGA_HT_7879_19981009",
    "TCGA_DU_7014_19860618", "TCGA_DU_6408_19860521", "TCGA_DU_6404_19850629", "TCGA_DU_5851_19950428",
    "TCGA_CS_6667_20011105", "TCGA_HT_7692_19960724"})


def split_patients(patients, val_cases: int = DEFAULT_VAL_CASES, fold: int | None = None,
                   folds: int | None = None, seed: int = VAL_SEED,
                   strata: dict[str, object] | None = None) -> tuple[list[str], list[str]]:
    """Split patient names into (train, validation), both sorted.

    Default: the reference rule ``random.seed(42); random.sample(sorted(patients), k=val_cases)``
    (on the full kaggle_3m set it gives docs/protocol.md's 10 validation patients).
    With ``fold=k, folds=K``: the sorted patients shuffled under ``seed`` and dealt
    into K near-equal folds; fold k is validation. Folds partition the patients.
    ``strata`` (patient -> label, e.g. whether it has tumour) makes the folds stratified:
    each label's patients are shuffled and dealt on in turn, so every fold gets its share
    of each label and the fold sizes still differ by at most one.
    """
    names = sorted(set(patients))
    if (fold is None) != (folds is None):
        raise ValueError("--fold and --folds go together: give both (e.g. --fold 0 --folds 5) or neither")
    if folds is not None:
        return _kfold(names, fold, folds, seed, strata)
    if not 1 <= val_cases < len(names):
        raise ValueError(f"cannot hold out {val_cases} validation patients from {len(names)} patients: "
                         f"at least one must remain for training; use a smaller --val-cases "
                         f"(at most {max(len(names) - 1, 0)})")
    val = random.Random(seed).sample(names, k=val_cases)  # same draw as random.seed(seed); random.sample
    _check_protocol_split(names, val, val_cases, seed)
    return [n for n in names if n not in val], sorted(val)


def _check_protocol_split(names: list[str], val: list[str], val_cases: int, seed: int) -> None:
    """On the full kaggle_3m set the default split must be docs/protocol.md's 10 patients, or no figure compares."""
    full_set = len(names) == KAGGLE_3M_PATIENTS and all(n.startswith("TCGA_") for n in names)
    if full_set and val_cases == DEFAULT_VAL_CASES and seed == VAL_SEED and set(val) != PROTOCOL_VALIDATION:
        raise ValueError(
            f"the validation split of these {len(names)} patients is not docs/protocol.md's: got {sorted(val)}, "
            f"expected {sorted(PROTOCOL_VALIDATION)}. The patient folder names differ from kaggle_3m's; "
            "restore the data set unchanged (python ../shared/lgg/restore.py or the Kaggle download).")


def _kfold(names: list[str], fold: int, folds: int, seed: int,
           strata: dict[str, object] | None = None) -> tuple[list[str], list[str]]:
    if folds < 2 or folds > len(names):
        raise ValueError(f"--folds must be between 2 and the number of patients ({len(names)}), got {folds}")
    if not 0 <= fold < folds:
        raise ValueError(f"--fold must be in 0..{folds - 1}, got {fold}")
    rng = random.Random(seed)
    if strata is None:
        order = list(names)
        rng.shuffle(order)
    else:
        # One stratum after another, each shuffled; dealing continues round-robin across them.
        order = []
        for label in sorted({str(strata[n]) for n in names}):
            group = [n for n in names if str(strata[n]) == label]
            rng.shuffle(group)
            order += group
    val = set(order[fold::folds])
    return [n for n in names if n not in val], sorted(val)


def validation_of_run(config_file: dict, patients) -> tuple[list[str], str]:
    """The validation patients of a trained run: (names, how they were found). One policy for every reader.

    ``config_file`` is the run's config.json as written (``split``, ``config``). The names
    ``train()`` recorded in ``split.validation`` are the answer. A run from before that field
    existed gets the training policy recomputed over ``patients`` (the reference rule with its
    ``val_cases``), except a cross-validation fold: its folds were stratified by the packed
    manifest's tumour counts, which an evaluation does not have, so that is a ValueError saying
    what to do rather than a different split.
    """
    recorded = (config_file.get("split") or {}).get("validation")
    if recorded:
        return list(recorded), "run config split"
    config = config_file.get("config", {})
    if config.get("folds") is not None:
        raise ValueError(f"the run is fold {config.get('fold')} of {config['folds']} but its config.json records no "
                         "validation patients (a run from an older tfseg); its stratified folds cannot be "
                         "recomputed here: retrain the fold, or name the patients with --patients")
    _, validation = split_patients(patients, config.get("val_cases") or DEFAULT_VAL_CASES)
    return validation, "run config (recomputed)"
