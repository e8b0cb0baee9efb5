"""The exact Fisher–Freeman–Halton test of a 2×k table, and Bonferroni's correction.

`scipy.stats.fisher_exact` is exact for 2×2 tables only; for larger tables it
needs a resampling ``method`` (Monte Carlo by default, or a permutation test
over all N! orderings). A 2×k table with fixed margins is fixed by its first
row, so every table can be enumerated: the first-row vectors ``x`` with
``0 <= x_j <= c_j`` and ``Σ x_j = r_1``, each with the multivariate
hypergeometric probability ``Π_j C(c_j, x_j) / C(N, r_1)``.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln

# A table counts as "at most as probable as the observed one" up to this
# relative tolerance, so that rounding cannot split tables of equal probability
# (SciPy's 2×2 test uses the same 1 + 1e-7).
RELATIVE_TOLERANCE = 1e-7
MAX_TABLES = 50_000_000


def _log_binomial(n, k):
    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)


def ffh_exact(table) -> float:
    """Two-sided exact p-value of a 2×k contingency table (k >= 2) of non-negative integer counts.

    p = the total probability, under independence with both margins fixed, of
    every table whose probability is <= the observed table's (relative
    tolerance ``RELATIVE_TOLERANCE``). Equal to `scipy.stats.fisher_exact` on
    2×2 tables. All-zero columns are dropped; a table with an empty row or a
    single non-empty column gives 1.0.
    """
    table = np.asarray(table)
    if table.ndim != 2 or table.shape[0] != 2 or table.shape[1] < 2:
        raise ValueError(f"ffh_exact() needs a 2×k table with k >= 2, got shape {table.shape}")
    if not np.issubdtype(table.dtype, np.integer):
        if not np.all(np.isfinite(table)) or np.any(table != np.round(table)):
            raise ValueError(f"ffh_exact() needs integer counts, got {table.tolist()}")
        table = table.astype(np.int64)
    if np.any(table < 0):
        raise ValueError(f"ffh_exact() needs non-negative counts, got {table.tolist()}")
    table = table[:, table.sum(axis=0) > 0]
    columns = table.sum(axis=0)
    row = int(table[0].sum())
    total = int(columns.sum())
    if table.shape[1] < 2 or row == 0 or row == total:
        return 1.0
    if math.prod(int(c) + 1 for c in columns[:-1]) > MAX_TABLES:
        raise ValueError(f"ffh_exact(): table {table.tolist()} has too many tables to enumerate exactly")

    # Partial first-row vectors over the columns seen so far: their sums and log-probabilities.
    sums = np.zeros(1, dtype=np.int64)
    log_p = np.zeros(1)
    for j, count in enumerate(columns[:-1]):
        x = np.arange(count + 1)
        sums = (sums[:, None] + x[None, :]).ravel()
        log_p = (log_p[:, None] + _log_binomial(count, x)[None, :]).ravel()
        remaining = int(columns[j + 1:].sum())
        feasible = (sums <= row) & (sums + remaining >= row)
        sums, log_p = sums[feasible], log_p[feasible]
    log_p = log_p + _log_binomial(columns[-1], row - sums) - _log_binomial(total, row)
    observed = float(np.sum(_log_binomial(columns, table[0])) - _log_binomial(total, row))
    p = float(np.exp(log_p[log_p <= observed + math.log1p(RELATIVE_TOLERANCE)]).sum())
    return min(1.0, p)


def bonferroni(p: float, hypotheses: int) -> float:
    """Bonferroni-corrected p-value: ``min(1, p · hypotheses)`` (NaN stays NaN)."""
    return p if math.isnan(p) else min(1.0, p * hypotheses)
