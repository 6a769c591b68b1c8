"""Wilson and Garwood intervals against published values, edge cases, and the classification counts."""

import math

import pytest

from deploy.stats import (
    classification_metrics,
    confusion_matrix,
    poisson_interval,
    precision_recall_f1,
    rate_per_hour,
    wilson_interval,
)
from features.errors import KwsError


@pytest.mark.parametrize(
    "k, n, expected",
    [
        (5, 10, (0.2366, 0.7634)),  # Newcombe (1998), and any Wilson table
        (0, 10, (0.0, 0.2775)),
        (10, 10, (0.7225, 1.0)),
        (1, 29, (0.0061, 0.1718)),
        (81, 263, (0.2553, 0.3662)),  # Newcombe's example 81/263
    ],
)
def test_wilson_known_values(k, n, expected):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(expected[0], abs=1e-4)
    assert hi == pytest.approx(expected[1], abs=1e-4)


def test_wilson_edges_are_exact_and_ordered():
    assert wilson_interval(0, 1)[0] == 0.0
    assert wilson_interval(7, 7)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)  # no data, no information
    for n in (1, 3, 20, 500):
        for k in range(0, n + 1, max(1, n // 7)):
            lo, hi = wilson_interval(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0
    # wider z, wider interval
    assert wilson_interval(3, 10, z=2.576)[1] > wilson_interval(3, 10)[1]


@pytest.mark.parametrize("k, n", [(-1, 5), (6, 5), (1, -1)])
def test_wilson_rejects_bad_counts(k, n):
    with pytest.raises(KwsError):
        wilson_interval(k, n)


@pytest.mark.parametrize(
    "k, expected",
    [  # exact 95% Poisson limits (Garwood 1936; e.g. the tables in Ulm 1990)
        (0, (0.0, 3.6889)),
        (1, (0.0253, 5.5716)),
        (2, (0.2422, 7.2247)),
        (10, (4.7954, 18.3904)),
    ],
)
def test_poisson_known_values(k, expected):
    lo, hi = poisson_interval(k)
    assert lo == pytest.approx(expected[0], abs=1e-4)
    assert hi == pytest.approx(expected[1], abs=1e-4)


def test_rate_per_hour_scales_the_interval():
    rate, (lo, hi) = rate_per_hour(0, 1 / 3)  # 0 false accepts in 20 minutes
    assert rate == 0.0 and lo == 0.0
    assert hi == pytest.approx(3 * 3.6889, abs=1e-3)
    rate, (lo, hi) = rate_per_hour(4, 2.0)
    assert rate == 2.0 and lo < 2.0 < hi
    with pytest.raises(KwsError):
        rate_per_hour(1, 0.0)
    with pytest.raises(KwsError):
        poisson_interval(-1)


def test_confusion_and_metrics():
    true = [0, 0, 0, 1, 1, 1, 1]
    pred = [0, 1, 0, 1, 1, 0, 1]
    m = confusion_matrix(true, pred, 2)
    assert m == [[2, 1], [1, 3]]
    r = classification_metrics(m)
    assert r["n"] == 7 and r["accuracy"] == pytest.approx(5 / 7)
    assert r["precision"] == pytest.approx(3 / 4) and r["recall"] == pytest.approx(3 / 4)
    assert r["f1"] == pytest.approx(0.75)
    with pytest.raises(KwsError):
        confusion_matrix([0, 2], [0, 0], 2)
    with pytest.raises(KwsError):
        confusion_matrix([0], [0, 1], 2)


def test_metrics_with_two_keywords_average_the_keywords_only():
    m = [[5, 0, 0], [0, 2, 2], [0, 0, 4]]
    r = classification_metrics(m)
    assert r["precision"] == pytest.approx((1.0 + 4 / 6) / 2)
    assert r["recall"] == pytest.approx((0.5 + 1.0) / 2)


def test_precision_recall_f1_without_anything_to_count():
    assert precision_recall_f1(0, 0, 0) == (0.0, 0.0, 0.0)
    p, r, f = precision_recall_f1(3, 1, 2)
    assert (p, r) == (0.75, 0.6) and math.isclose(f, 2 * 0.75 * 0.6 / 1.35)
