"""Patient-level train/validation splits (PROTOCOL.md "Split")."""
from __future__ import annotations

import random

VAL_SEED = 42
DEFAULT_VAL_CASES = 10


def split_patients(patients, val_cases: int = DEFAULT_VAL_CASES, fold: int | None = None,
                   folds: int | None = None, seed: int = VAL_SEED) -> tuple[list[str], list[str]]:
    """Split patient names into (train, validation), both sorted.

    Default: the reference rule ``random.seed(42); random.sample(sorted(patients), k=val_cases)``
    (on the full kaggle_3m set it gives PROTOCOL.md's 10 validation patients).
    With ``fold=k, folds=K``: the sorted patients shuffled under ``seed`` and dealt
    into K near-equal folds; fold k is validation. Folds partition the patients.
    """
    names = sorted(set(patients))
    if (fold is None) != (folds is None):
        raise ValueError("--fold and --folds go together: give both (e.g. --fold 0 --folds 5) or neither")
    if folds is not None:
        return _kfold(names, fold, folds, seed)
    if not 1 <= val_cases < len(names):
        raise ValueError(f"cannot hold out {val_cases} validation patients from {len(names)} patients: "
                         f"at least one must remain for training; use a smaller --val-cases "
                         f"(at most {max(len(names) - 1, 0)})")
    val = random.Random(seed).sample(names, k=val_cases)  # same draw as random.seed(seed); random.sample
    return [n for n in names if n not in val], sorted(val)


def _kfold(names: list[str], fold: int, folds: int, seed: int) -> tuple[list[str], list[str]]:
    if folds < 2 or folds > len(names):
        raise ValueError(f"--folds must be between 2 and the number of patients ({len(names)}), got {folds}")
    if not 0 <= fold < folds:
        raise ValueError(f"--fold must be in 0..{folds - 1}, got {fold}")
    order = list(names)
    random.Random(seed).shuffle(order)
    val = set(order[fold::folds])
    return [n for n in names if n not in val], sorted(val)
