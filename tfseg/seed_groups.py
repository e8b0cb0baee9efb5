"""Seed groups: runs with the same settings and different seeds, and a paired comparison of two groups.

One seed on 10 validation patients cannot tell a 0.01 difference from noise; the
campaign (issue 8) confirms its best configuration and the baseline on 3 seeds
each. ``seed_groups`` finds such groups among report runs (equal ``config.json``
settings apart from the seed and the paths), ``describe_group`` gives mean ± sd
of their mean DSC, and ``paired_comparison`` compares two groups patient by
patient (each patient's DSC averaged over the group's seeds).

The decision rule reported: a group beats another when its seed-mean exceeds the
other's by more than the seeds' spread, taken as the sum of the two standard
deviations (conservative: each group's sd is the noise one seed choice adds).
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass

# Settings that do not change what is trained: the seed (the grouping variable) and where things are.
NOT_SETTINGS = frozenset({"seed", "logdir", "data", "tfrecords"})


@dataclass
class SeedGroup:
    """Runs sharing every setting but the seed; ``runs`` are report RunRecords, sorted by seed."""

    runs: list

    @property
    def seeds(self) -> list:
        return [run.config.get("seed") for run in self.runs]

    @property
    def label(self) -> str:
        return " + ".join(run.name for run in self.runs)

    def scores(self, key: str = "mean_dsc") -> list[float]:
        return [run.score(key) for run in self.runs if run.score(key) is not None]

    def dsc_by_patient(self) -> dict[str, float]:
        """Each patient's DSC (preprocessed geometry) averaged over the seeds that scored it."""
        by_patient: dict[str, list[float]] = {}
        for run in self.runs:
            for patient, value in run.dsc_by_patient().items():
                by_patient.setdefault(patient, []).append(value)
        return {patient: statistics.fmean(values) for patient, values in by_patient.items()}


# Settings whose default is not "off" (0, None, False): a run written before the key existed had this value.
DEFAULTS = {"context": 1}


def settings_key(config: dict) -> str:
    """What was trained, comparable across tfseg versions.

    Nested settings (``augment``) are flattened, and a setting that is off (0, None, False) or at its
    :data:`DEFAULTS` value is left out: options added later (e.g. ``augment.noise``) are off by default,
    so a run from before they existed trained the same thing as one that records them switched off.
    """
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    kept = {k: v for k, v in flat.items()
            if k not in NOT_SETTINGS and v not in (None, 0, False) and DEFAULTS.get(k, object()) != v}
    return json.dumps(kept, sort_keys=True)


def seed_groups(runs: list, min_size: int = 2) -> list[SeedGroup]:
    """Groups of at least ``min_size`` runs with equal settings and distinct seeds, best seed-mean first."""
    grouped: dict[str, list] = {}
    for run in runs:
        if run.config and run.score("mean_dsc") is not None:
            grouped.setdefault(settings_key(run.config), []).append(run)
    groups = []
    for members in grouped.values():
        by_seed = {run.config.get("seed"): run for run in members}  # one run per seed
        if len(by_seed) >= min_size:
            groups.append(SeedGroup([by_seed[s] for s in sorted(by_seed, key=lambda s: (s is None, s))]))
    return sorted(groups, key=lambda g: -statistics.fmean(g.scores()))


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def describe_group(group: SeedGroup) -> dict:
    pre, native = group.scores("mean_dsc"), group.scores("mean_dsc_native")
    out = {"runs": [run.name for run in group.runs], "seeds": group.seeds, "mean_dsc_by_seed": pre}
    out["mean"], out["sd"] = mean_sd(pre)
    if native:
        out["mean_native"], out["sd_native"] = mean_sd(native)
    return out


def paired_comparison(best: SeedGroup, baseline: SeedGroup) -> dict:
    """Per-patient seed-averaged DSC of ``best`` minus ``baseline`` over their shared patients.

    Returns the mean and sd of the differences, how many patients improved / worsened,
    the Wilcoxon signed-rank p-value (two-sided; None with fewer than 5 patients or
    all differences zero) and whether the seed-mean difference exceeds the spread.
    """
    a, b = best.dsc_by_patient(), baseline.dsc_by_patient()
    shared = sorted(set(a) & set(b))
    diffs = [a[p] - b[p] for p in shared]
    described_best, described_base = describe_group(best), describe_group(baseline)
    difference = described_best["mean"] - described_base["mean"]
    spread = described_best["sd"] + described_base["sd"]
    p_value = None
    if len(diffs) >= 5 and any(d != 0 for d in diffs):
        from scipy.stats import wilcoxon

        p_value = float(wilcoxon(diffs).pvalue)
    return {
        "patients": shared,
        "per_patient_difference": dict(zip(shared, diffs)),
        "mean_difference": statistics.fmean(diffs) if diffs else math.nan,
        "sd_difference": statistics.stdev(diffs) if len(diffs) > 1 else math.nan,
        "improved": sum(d > 0 for d in diffs),
        "worsened": sum(d < 0 for d in diffs),
        "wilcoxon_p": p_value,
        "seed_mean_difference": difference,
        "spread": spread,
        "beyond_spread": difference > spread,
    }
