"""Misses by the kind of voice: pitch and spoken length measured from the audio, their tables, and the advice they give."""

import numpy as np
import pytest

from deploy.advice import _voice_advice
from deploy.stats import wilson_interval
from deploy.voice_bands import frr_table, length_band, median_pitch_hz, pitch_band, snr_band, spoken_seconds, traits, voice_frr

RATE = 16000


def _voiced(f0: float, seconds: float = 0.6, lead_s: float = 0.3) -> np.ndarray:
    """A buzzy vowel-like tone (harmonics of ``f0`` with a falling spectrum) between stretches of silence."""
    t = np.arange(int(seconds * RATE)) / RATE
    tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 12) if f0 * h < 4000)
    tone *= np.hanning(len(t)) ** 0.2
    quiet = np.zeros(int(lead_s * RATE))
    return np.concatenate([quiet, 0.2 * tone, quiet]).astype(np.float32)


@pytest.mark.parametrize("f0", [95.0, 140.0, 210.0, 290.0])
def test_pitch_of_a_harmonic_tone(f0):
    assert median_pitch_hz(_voiced(f0), RATE) == pytest.approx(f0, rel=0.03)


def test_spoken_length_skips_the_silence_around():
    assert spoken_seconds(_voiced(150.0, seconds=0.7, lead_s=0.5), RATE) == pytest.approx(0.7, abs=0.03)
    assert np.isnan(median_pitch_hz(np.zeros(RATE, np.float32), RATE))
    assert traits(np.zeros(RATE, np.float32), RATE)["pitch_hz"] is None and pitch_band(None) == "unknown"


def test_espeak_female_variants_are_measured_higher():
    """Real synthesised speech: espeak-ng's female variants land in higher pitch bands than its male ones."""
    from collect.synth import synthesize

    male = [median_pitch_hz(synthesize("computer", f"en-us+{v}", pitch=40, seed=0), RATE) for v in ("m1", "m3")]
    female = [median_pitch_hz(synthesize("computer", f"en-us+{v}", pitch=60, seed=0), RATE) for v in ("f1", "f3")]
    assert max(male) < 165 <= min(female), (male, female)
    assert {pitch_band(p) for p in male} <= {"under 120 Hz", "120-165 Hz"}
    assert {pitch_band(p) for p in female} <= {"165-220 Hz", "220 Hz and over"}


def test_band_names_and_edges():
    assert [pitch_band(x) for x in (80, 120, 164.9, 165, 219, 220, 400)] == [
        "under 120 Hz", "120-165 Hz", "120-165 Hz", "165-220 Hz", "165-220 Hz", "220 Hz and over", "220 Hz and over"]
    assert [length_band(x) for x in (0.3, 0.6, 0.95, 1.4)] == ["under 0.6 s", "0.6-0.8 s", "0.8-1.0 s", "1.0 s and over"]
    assert pitch_band(float("nan")) == "unknown"
    assert [snr_band(x) for x in (-6.0, 0.0, 4.9, 9.99, 10.0, 15.0, None)] == [
        "under 0 dB", "0-5 dB", "0-5 dB", "5-10 dB", "10-15 dB", "15 dB and over", "unknown"]


def test_frr_table_counts_orders_and_bounds():
    items = [("220 Hz and over", True)] * 3 + [("under 120 Hz", False)] * 4 + [("unknown", True), ("120-165 Hz", False),
                                                                             ("120-165 Hz", True)]
    table = frr_table(items, ["under 120 Hz", "120-165 Hz", "165-220 Hz", "220 Hz and over", "unknown"])
    assert list(table) == ["under 120 Hz", "120-165 Hz", "220 Hz and over", "unknown"]
    assert list(frr_table([("en-US", True), ("en-029", False)])) == ["en-029", "en-US"]  # unordered names: alphabetical
    assert table["120-165 Hz"] == {"n": 2, "misses": 1, "frr": 0.5, "frr_ci": [round(x, 4) for x in wilson_interval(1, 2)]}
    assert table["220 Hz and over"]["frr"] == 1.0 and table["under 120 Hz"]["frr"] == 0.0
    both = voice_frr([({"pitch_hz": 100.0, "spoken_s": 0.9}, True), ({"pitch_hz": 250.0, "spoken_s": 0.5}, False)])
    assert both["pitch"]["under 120 Hz"]["misses"] == 1 and both["length"]["0.8-1.0 s"]["misses"] == 1
    assert list(voice_frr([({"pitch_hz": p, "spoken_s": 0.7}, False) for p in (300.0, 100.0, None, 150.0)])["pitch"]) == [
        "under 120 Hz", "120-165 Hz", "220 Hz and over", "unknown"]
    assert "snr" not in both  # no SNR known (a clip test, or a stream without noise): no SNR table
    snr = voice_frr([({"pitch_hz": 100.0, "spoken_s": 0.7, "snr_db": x}, x < 5) for x in (12.0, 3.0, -2.0, 3.5)])["snr"]
    assert {b: (t["n"], t["misses"]) for b, t in snr.items()} == {"under 0 dB": (1, 1), "0-5 dB": (2, 2), "10-15 dB": (1, 0)}
    assert list(snr) == ["under 0 dB", "0-5 dB", "10-15 dB"]


def _report(miss_high: float, miss_low: float, n_speakers: int = 40, takes: int = 5, seed: int = 0) -> dict:
    """Keywords of ``n_speakers`` speakers, half high-pitched; each group missed at its rate."""
    rng = np.random.default_rng(seed)
    keywords = []
    for s in range(n_speakers):
        high = s % 2 == 1
        for _ in range(takes):
            keywords.append({"path": f"s{s}/k.wav", "speaker": f"s{s}", "pitch_hz": 230.0 if high else 110.0, "spoken_s": 0.6,
                             "missed": bool(rng.random() < (miss_high if high else miss_low))})
    return {"per_voice": {"keywords": keywords}}


def test_advice_asks_for_the_voices_that_are_missed():
    advice = _voice_advice(_report(0.5, 0.05), {"icc": 0.1})
    assert [a["group"] for a in advice] == ["at or above 165 Hz"]
    assert advice[0]["frr"] > 0.3 and advice[0]["others_frr"] < 0.15 and advice[0]["p_value"] < 0.05
    assert "Record more speakers with higher voices" in advice[0]["text"]
    deeper = _voice_advice(_report(0.05, 0.5), {"icc": 0.1})
    assert [a["group"] for a in deeper] == ["below 165 Hz"] and "deeper voices" in deeper[0]["text"]


def test_advice_is_silent_when_the_gap_is_chance():
    assert _voice_advice(_report(0.2, 0.2), {"icc": 0.1}) == []
    # the same gap on four speakers with strongly correlated takes is not evidence
    assert _voice_advice(_report(0.5, 0.05, n_speakers=4), {"icc": 0.9}) == []
    assert _voice_advice({}, {"icc": 0.1}) == []


def test_warm_pitch_cache_tracks_a_tone():
    """The warm-up runs the real pitch tracker (so it compiles what the benchmark's processes will load)."""
    from deploy.voice_bands import warm_pitch_cache

    assert abs(warm_pitch_cache() - 200.0) < 5.0
