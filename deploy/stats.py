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


# ----------------------------------------------------------------------------- clustered proportions
#
# The takes of one speaker are not independent trials: a voice the model
# handles badly is missed on most of its takes. Treating 12 takes of one
# speaker as 12 independent keywords makes an interval look narrower than the
# data justify, and makes "record more takes" look as good as "record more
# speakers", which it is not. The functions below treat the speaker as the
# cluster, with the textbook design-effect correction (Kish 1965; Donner &
# Klar 2000): an intraclass correlation ``rho`` between takes of one speaker,
# a design effect ``DE = 1 + (m - 1) * rho`` for ``m`` takes per speaker, and an
# effective sample size ``n / DE`` in place of ``n`` in the Wilson interval.


def wilson_half_width(p: float, n: float, z: float = 1.96) -> float:
    """Half the width of the Wilson interval at proportion ``p`` and (possibly fractional, effective) size ``n``.

    ``z * sqrt(p (1 - p) n + z^2 / 4) / (n + z^2)``, the Wilson interval of
    ``wilson_interval`` written for a real ``n``; its lower bound is never
    below 0 nor its upper above 1, so this is exactly (upper - lower) / 2.
    """
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"a proportion must be between 0 and 1, got {p}")
    if not n > 0:
        return 0.5
    return z * math.sqrt(p * (1 - p) * n + z * z / 4) / (n + z * z)


def n_for_half_width(p: float, half_width: float, z: float = 1.96) -> float:
    """Smallest (real) sample size whose Wilson interval at proportion ``p`` has half-width ``half_width``.

    Solves ``h (n + z^2) = z sqrt(p q n + z^2 / 4)`` (``q = 1 - p``), i.e. the
    quadratic ``h^2 n^2 + (2 h^2 z^2 - z^2 p q) n + h^2 z^4 - z^4 / 4 = 0``,
    for its larger root. Example: p = 0.5, h = 0.05 gives 380.3 (the Wald
    formula's ``z^2 p q / h^2`` would say 384.2).
    """
    if not 0.0 < half_width < 0.5:
        raise ConfigError(f"the target half-width must be between 0 and 0.5 (0 and 50 points), got {half_width}")
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"a proportion must be between 0 and 1, got {p}")
    h2, z2, pq = half_width * half_width, z * z, p * (1 - p)
    a, b, c = h2, 2 * h2 * z2 - z2 * pq, h2 * z2 * z2 - z2 * z2 / 4
    return max((-b + math.sqrt(b * b - 4 * a * c)) / (2 * a), 0.0)


def speaker_icc(speakers: Sequence[tuple[str, int, int]]) -> float | None:
    """Intraclass correlation of misses between takes of one speaker, speakers nested in accents.

    ``speakers`` holds one ``(accent, misses, takes)`` per speaker. The
    one-way ANOVA estimator for binary outcomes (Fleiss 1981; Donner &
    Klar 2000), with each speaker compared with its own accent's rate so that a
    difference between accents is not mistaken for a speaker effect:

    - ``p_i = k_i / n_i`` per speaker, ``P_a`` the pooled rate of accent ``a``;
    - ``MSB = sum n_i (p_i - P_a)^2 / (S - A)`` over ``S`` speakers in ``A`` accents;
    - ``MSW = sum n_i p_i (1 - p_i) / (N - S)`` over ``N`` takes;
    - ``n0 = (N - sum_a sum_{i in a} n_i^2 / N_a) / (S - A)`` (the mean takes per speaker, corrected for unequal sizes);
    - ``rho = (MSB - MSW) / (MSB + (n0 - 1) MSW)``, clipped to [0, 1].

    Returns None when it cannot be estimated: no accent with two speakers,
    every speaker with a single take, or no variation at all (FRR 0% or 100%
    everywhere).
    """
    rows = [(a, k, n) for a, k, n in speakers if n > 0]
    for _, k, n in rows:
        _check_count(k, n)
    by_accent: dict[str, list[tuple[int, int]]] = {}
    for a, k, n in rows:
        by_accent.setdefault(a, []).append((k, n))
    n_total = sum(n for _, _, n in rows)
    df_b = len(rows) - len(by_accent)
    df_w = n_total - len(rows)
    if df_b <= 0 or df_w <= 0:
        return None
    ssb = ssw = size_sq = 0.0
    for members in by_accent.values():
        n_a = sum(n for _, n in members)
        p_a = sum(k for k, _ in members) / n_a
        for k, n in members:
            p = k / n
            ssb += n * (p - p_a) ** 2
            ssw += n * p * (1 - p)
            size_sq += n * n / n_a
    msb, msw = ssb / df_b, ssw / df_w
    n0 = (n_total - size_sq) / df_b
    denom = msb + (n0 - 1) * msw
    if denom <= 0:
        return None
    return min(max((msb - msw) / denom, 0.0), 1.0)


def design_effect(takes_per_speaker: float, icc: float) -> float:
    """``1 + (m - 1) rho``: how many correlated takes are worth one independent one."""
    if not 0.0 <= icc <= 1.0:
        raise ConfigError(f"an intraclass correlation must be between 0 and 1, got {icc}")
    return 1.0 + max(takes_per_speaker - 1.0, 0.0) * icc


def speakers_needed(p: float, takes_per_speaker: float, icc: float, half_width: float, z: float = 1.96) -> int:
    """Speakers (in all) at ``takes_per_speaker`` takes each for a speaker-aware Wilson half-width <= ``half_width``.

    ``ceil(n_for_half_width(p, h) * DE / m)`` with ``DE = 1 + (m - 1) rho``:
    the effective sample size the interval needs, times the design effect,
    is the number of takes; divided by the takes per speaker, the speakers.
    Example: p = 0.5, h = 0.05, m = 10, rho = 0.1: 380.3 effective takes,
    DE 1.9, 722.6 takes, 73 speakers.
    """
    if not takes_per_speaker >= 1:
        raise ConfigError(f"need at least one take per speaker, got {takes_per_speaker}")
    takes = n_for_half_width(p, half_width, z) * design_effect(takes_per_speaker, icc)
    return max(1, math.ceil(takes / takes_per_speaker - 1e-9))


def clustered_z_test(k1: int, n1: int, de1: float, k2: int, n2: int, de2: float) -> float:
    """One-sided p-value that proportion 1 is above proportion 2, each sample's variance inflated by its design effect.

    ``z = (p1 - p2) / sqrt(P (1 - P) (DE1 / n1 + DE2 / n2))`` with ``P`` the
    pooled proportion (the two-proportion z test of a survey-sampling text,
    with effective sizes ``n / DE``). Returns 1.0 when there is nothing to
    compare (an empty sample, or no event at all).
    """
    from scipy.stats import norm

    _check_count(k1, n1)
    _check_count(k2, n2)
    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = (k1 + k2) / (n1 + n2)
    var = pooled * (1 - pooled) * (de1 / n1 + de2 / n2)
    if var <= 0:
        return 1.0
    return float(norm.sf((k1 / n1 - k2 / n2) / math.sqrt(var)))
