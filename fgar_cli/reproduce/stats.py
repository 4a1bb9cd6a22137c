"""The statistics every reproduced table reports (issue 11's "power").

A cell of a table (a method at one setting) is run several times: once per generator seed x label
split. For each cell: the mean and standard deviation of test top-1 over its runs. For each method
against the supervised arm of the same runs, the paired difference two ways:

* inside a run, a paired bootstrap over test videos (both arms scored on the same videos, which are
  resampled together), a 95% percentile interval: how sure one run is, given its test set;
* over runs, the mean difference with a Student t interval (n - 1 degrees of freedom): how sure the
  table is, given that training itself is noisy. This is the interval the tables' verdicts use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Two-sided 95% quantiles of Student's t, t_{0.975, df}, for df 1..30 (standard tables); beyond 30
# the normal's 1.96 is within 4% of it.
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: the half-width of a 95% interval is this times the standard error."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "low": self.low, "high": self.high}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value, NaN for none)."""
    if not values:
        return math.nan, math.nan
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def t_interval(differences: list[float]) -> Interval:
    """The mean of per-run differences with its 95% Student t interval (NaN bounds for one run)."""
    mean, std = mean_std(differences)
    if len(differences) < 2:
        return Interval(mean, math.nan, math.nan)
    half = t_quantile_975(len(differences) - 1) * std / math.sqrt(len(differences))
    return Interval(mean, mean - half, mean + half)


def paired_bootstrap(correct: np.ndarray, baseline_correct: np.ndarray, reps: int = 1000, seed: int = 0) -> Interval:
    """Top-1 difference (method minus baseline) on one test set, with a 95% paired bootstrap interval.

    `correct` and `baseline_correct` are per-video 0/1 (or booleans) for the same videos in the same
    order; each replicate resamples videos with replacement and takes both arms' accuracy on them."""
    a = np.asarray(correct, dtype=float)
    b = np.asarray(baseline_correct, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired_bootstrap: need two equal-length 1-D arrays, got {a.shape} and {b.shape}")
    difference = a - b
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(a), size=(reps, len(a)))
    replicates = difference[draws].mean(1)
    low, high = np.percentile(replicates, [2.5, 97.5])
    return Interval(float(difference.mean()), float(low), float(high))


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Average precision of ranking by `scores` (higher: more likely positive), ties broken by order
    of appearance, as scikit-learn's `average_precision_score` without interpolation."""
    scores = np.asarray(scores, dtype=float)
    positive = np.asarray(positive, dtype=bool)
    if positive.sum() == 0:
        return math.nan
    order = np.argsort(-scores, kind="stable")
    hits = positive[order]
    # precision at each distinct score threshold, counted at the last item of each tie group
    sorted_scores = scores[order]
    last_of_group = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    true_positives = np.cumsum(hits)[last_of_group]
    seen = np.nonzero(last_of_group)[0] + 1
    precision = true_positives / seen
    recall_gain = np.diff(np.r_[0, true_positives]) / positive.sum()
    return float((precision * recall_gain).sum())
