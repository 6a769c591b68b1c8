"""Wilson and Garwood intervals against published values, edge cases, the classification counts, and the
speaker-aware sample sizes, each on numbers worked out by hand in the comments."""

import math

import pytest

from deploy.stats import (
    classification_metrics,
    clustered_z_test,
    confusion_matrix,
    design_effect,
    n_for_half_width,
    poisson_interval,
    precision_recall_f1,
    rate_per_hour,
    speaker_icc,
    speakers_needed,
    wilson_half_width,
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


def test_wilson_half_width_is_half_the_interval_and_inverts():
    for k, n in [(3, 12), (0, 8), (12, 12), (5, 40), (81, 263)]:
        lo, hi = wilson_interval(k, n)
        assert wilson_half_width(k / n, n) == pytest.approx((hi - lo) / 2, abs=1e-12)
    # p = 0.5, h = 0.05, z = 1.96: h^2 n^2 + (2 h^2 z^2 - z^2 / 4) n + h^2 z^4 - z^4 / 4 = 0
    # 0.0025 n^2 - 0.941192 n - 3.652581 = 0  ->  n = (0.941192 + sqrt(0.922368)) / 0.005 = 380.318
    assert n_for_half_width(0.5, 0.05) == pytest.approx(380.318, abs=1e-3)
    # p = 0: the interval is [0, z^2 / (n + z^2)], half-width z^2 / (2 (n + z^2)) = h  ->  n = z^2 / (2h) - z^2 = 34.574
    assert n_for_half_width(0.0, 0.05) == pytest.approx(1.96**2 / 0.1 - 1.96**2, abs=1e-9)
    assert n_for_half_width(1.0, 0.05) == pytest.approx(n_for_half_width(0.0, 0.05))
    for p in (0.0, 0.1, 0.33, 0.5):
        assert wilson_half_width(p, n_for_half_width(p, 0.07)) == pytest.approx(0.07, abs=1e-9)
    with pytest.raises(KwsError, match="half-width"):
        n_for_half_width(0.5, 0.0)
    with pytest.raises(KwsError, match="half-width"):
        n_for_half_width(0.5, 0.6)


@pytest.mark.parametrize(
    "speakers, expected",
    [
        ([("a", 4, 4), ("a", 0, 4)], 1.0),  # every take decided by the speaker: MSW = 0
        ([("a", 2, 4), ("a", 2, 4)], 0.0),  # speakers identical: MSB = 0, rho = -1/3 clipped to 0
        # p = 3/4, 1/4 around 1/2: MSB = 4 (1/16) 2 / 1 = 0.5, MSW = 4 (3/16) 2 / 6 = 0.25, n0 = 4: 0.25 / (0.5 + 0.75)
        ([("a", 3, 4), ("a", 1, 4)], 0.2),
        # a second accent whose speakers agree adds nothing between speakers: MSB = 0.5 / 2, MSW = 1.5 / 12, n0 = 4
        ([("a", 3, 4), ("a", 1, 4), ("b", 0, 4), ("b", 0, 4)], 0.2),
        # accents that differ but whose speakers agree within each: no speaker effect at all (not rho = 1)
        ([("a", 4, 4), ("a", 4, 4), ("b", 0, 4), ("b", 0, 4)], None),
        ([("a", 3, 4), ("b", 1, 4)], None),  # one speaker per accent: nothing to compare a speaker with
    ],
)
def test_speaker_icc_by_hand(speakers, expected):
    got = speaker_icc(speakers)
    assert got == expected if expected is None else got == pytest.approx(expected)


def test_speakers_needed_by_hand():
    assert design_effect(10, 0.1) == pytest.approx(1.9)
    assert design_effect(1, 0.9) == 1.0  # one take per speaker: nothing to correlate
    # 380.318 effective takes x DE 1.9 = 722.6 takes, at 10 per speaker: 72.3 -> 73 speakers
    assert speakers_needed(0.5, 10, 0.1, 0.05) == 73
    # FRR 0 at 6 takes, rho 0.1: 34.574 x 1.5 = 51.86 takes -> 8.64 -> 9 speakers
    assert speakers_needed(0.0, 6, 0.1, 0.05) == 9
    # rho = 1: a speaker is worth one take, so speakers = effective takes, whatever the takes each
    assert speakers_needed(0.5, 10, 1.0, 0.05) == speakers_needed(0.5, 1, 0.0, 0.05) == 381
    with pytest.raises(KwsError):
        design_effect(5, 1.5)
    with pytest.raises(KwsError):
        speakers_needed(0.5, 0, 0.1, 0.05)


def test_clustered_z_test_by_hand():
    # 6/12 against 2/36: pooled 1/6, var = (1/6)(5/6)(1/12 + 1/36) = 0.0154321, z = 0.444444 / 0.124226 = 3.5777
    z = (0.5 - 2 / 36) / math.sqrt((1 / 6) * (5 / 6) * (1 / 12 + 1 / 36))
    assert clustered_z_test(6, 12, 1.0, 2, 36, 1.0) == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)))
    assert z == pytest.approx(3.5777, abs=1e-4)
    # a design effect of 2 on both doubles the variance: z / sqrt(2)
    assert clustered_z_test(6, 12, 2.0, 2, 36, 2.0) == pytest.approx(0.5 * math.erfc(z / 2))
    assert clustered_z_test(2, 36, 1.0, 6, 12, 1.0) > 0.99  # one-sided: lower is not "above"
    assert clustered_z_test(0, 10, 1.0, 0, 10, 1.0) == 1.0  # nothing happened: nothing to call out
    assert clustered_z_test(0, 0, 1.0, 0, 10, 1.0) == 1.0  # an empty sample


def test_accent_plan_by_hand():
    from deploy.advice import accent_plan

    per_speaker = {"s1": {"accent": "a", "misses": 3, "n_keyword": 4}, "s2": {"accent": "a", "misses": 1, "n_keyword": 4},
                   "s3": {"accent": "b", "misses": 0, "n_keyword": 4}, "s4": {"accent": "b", "misses": 0, "n_keyword": 4}}
    per_accent = {"a": {"misses": 4, "n_keyword": 8, "frr_ci": list(wilson_interval(4, 8))},
                  "b": {"misses": 0, "n_keyword": 8, "frr_ci": list(wilson_interval(0, 8))}}
    plan = accent_plan(per_speaker, per_accent, half_width=0.05, icc_floor=0.1)
    assert plan["icc_estimate"] == pytest.approx(0.2) and plan["icc"] == pytest.approx(0.2)  # above the floor: used
    a, b = plan["accents"]["a"], plan["accents"]["b"]
    # m = 4, DE = 1 + 3 x 0.2 = 1.6, effective takes 8 / 1.6 = 5
    assert a["design_effect"] == pytest.approx(1.6) and a["effective_n"] == pytest.approx(5.0)
    # Wilson at p = 0.5, n = 5: 1.96 sqrt(0.25 x 5 + 0.9604) / 8.8416 = 0.32958
    assert a["half_width"] == pytest.approx(0.32958, abs=1e-5)
    assert a["frr_ci_speakers"][1] - a["frr_ci_speakers"][0] == pytest.approx(2 * 0.32958, abs=1e-5)
    # speakers: ceil(380.318 x 1.6 / 4) = ceil(152.13) = 153, 151 more; b at 0%: ceil(34.574 x 1.6 / 4) = 14, 12 more
    assert (a["speakers_needed"], a["more_speakers"]) == (153, 151)
    assert (b["speakers_needed"], b["more_speakers"]) == (14, 12)
    # the floor wins when the data show less correlation than it
    flat = {k: {**v, "misses": 2 if v["accent"] == "a" else 0} for k, v in per_speaker.items()}
    plan = accent_plan(flat, per_accent, icc_floor=0.1)
    assert plan["icc_estimate"] == 0.0 and plan["icc"] == 0.1
    with pytest.raises(KwsError, match="--ci-target"):
        accent_plan(per_speaker, per_accent, half_width=0.0)
