"""Small statistics for evaluation reports: intervals, rates, and classification counts.

Why these intervals:

- A false-reject rate measured on 12 keyword clips of one accent is a
  proportion from a small sample. The Wilson score interval stays inside
  [0, 1], is not degenerate at 0 or n successes (the normal approximation
  gives a zero-width interval at FRR 0%, which is exactly where a reader most
  needs to see the uncertainty), and is close to nominal coverage for small n.
- False accepts are counts of rare events over a length of background audio,
  i.e. Poisson. The exact (Garwood) interval from chi-square quantiles is
  conservative and defined at 0 events, so "0 false accepts in 20 minutes" is
  reported as "0 per hour, up to 11 per hour", not as a perfect detector.

Pure functions of numbers and lists; no numpy arrays are required, so they
are trivially unit-testable.
"""

from __future__ import annotations

import math
from typing import Sequence

from features.errors import ConfigError

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def _check_count(k: int, n: int | None = None) -> None:
    if k < 0 or (n is not None and (n < 0 or k > n)):
        raise ConfigError(f"need 0 <= k <= n for a proportion, got k={k}, n={n}" if n is not None else f"a count cannot be negative, got {k}")


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for the proportion ``k / n`` (two-sided, ``z`` standard errors).

    ``n == 0`` carries no information and returns ``(0.0, 1.0)``.
    """
    _check_count(k, n)
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = (z / denom) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # Exact bounds at the edges (floating point would otherwise give 1e-17 instead of 0).
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def poisson_interval(k: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) two-sided interval for the mean of a Poisson count ``k``."""
    from scipy.stats import chi2

    _check_count(k)
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be between 0 and 1, got {confidence}")
    alpha = 1.0 - confidence
    lo = 0.0 if k == 0 else float(chi2.ppf(alpha / 2, 2 * k)) / 2
    hi = float(chi2.ppf(1 - alpha / 2, 2 * k + 2)) / 2
    return lo, hi


def rate_per_hour(k: int, hours: float, confidence: float = 0.95) -> tuple[float, tuple[float, float]]:
    """Events per hour and its exact Poisson interval, from ``k`` events in ``hours`` of audio."""
    if not hours > 0:
        raise ConfigError(f"cannot compute a rate per hour over {hours} hours of audio")
    lo, hi = poisson_interval(k, confidence)
    return k / hours, (lo / hours, hi / hours)


def confusion_matrix(true: Sequence[int], pred: Sequence[int], n_labels: int) -> list[list[int]]:
    """``matrix[i][j]`` = number of items of true class ``i`` predicted as ``j``."""
    if len(true) != len(pred):
        raise ConfigError(f"{len(true)} true labels but {len(pred)} predictions")
    matrix = [[0] * n_labels for _ in range(n_labels)]
    for t, p in zip(true, pred):
        if not (0 <= t < n_labels and 0 <= p < n_labels):
            raise ConfigError(f"label index out of range 0..{n_labels - 1}: true {t}, predicted {p}")
        matrix[t][p] += 1
    return matrix


def precision_recall_f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall and F1 from counts; a ratio with nothing to count is 0 (not NaN, so JSON stays valid)."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def classification_metrics(matrix: Sequence[Sequence[int]], positive: Sequence[int] | None = None) -> dict:
    """Accuracy and macro precision / recall / F1 over the ``positive`` classes (default: all but class 0).

    Class 0 is the non-keyword class: a wake-word detector is judged on its
    keywords, and averaging in the negative class would flatter it.
    """
    n_labels = len(matrix)
    total = sum(sum(row) for row in matrix)
    correct = sum(matrix[i][i] for i in range(n_labels))
    positive = list(range(1, n_labels)) if positive is None else list(positive)
    per_class = {}
    for c in positive:
        tp = matrix[c][c]
        fp = sum(matrix[r][c] for r in range(n_labels)) - tp
        fn = sum(matrix[c]) - tp
        per_class[c] = precision_recall_f1(tp, fp, fn)
    mean = (lambda i: sum(v[i] for v in per_class.values()) / len(per_class)) if per_class else (lambda i: 0.0)
    return {
        "n": total,
        "accuracy": correct / total if total else 0.0,
        "precision": mean(0),
        "recall": mean(1),
        "f1": mean(2),
        "per_class": {c: {"precision": p, "recall": r, "f1": f} for c, (p, r, f) in per_class.items()},
    }
