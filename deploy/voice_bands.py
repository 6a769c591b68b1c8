"""Misses by the kind of voice: each keyword clip's pitch, spoken length and own SNR, measured from its audio.

Why: accent labels are what a recording session writes down, but they are
not all that makes a model miss. On the real-speech benchmark (real
"computer" clips with no labels at all) the rotation-A model of
``configs/bench-real-piper-roommic-mined.json``, trained mostly on Piper's
one male voice, missed 57 % of the clips spoken at 220 Hz and over and 9 %
of those under 120 Hz at 0.5 false accepts per hour; the voices, not the
accents, were missing from the training data. These bands make that
visible in ``kws eval`` and in the benchmark, and ``deploy.advice`` turns a
significant gap into "record more speakers with higher voices".

Pitch is librosa's YIN over the clip's loud frames (within ``LOUD_DB`` of
the loudest), their median. YIN has no voicing decision (pYIN does, at ten
times the cost), so loud unvoiced frames take part too: the figure is a
description for grouping, not a pitch tracker's verdict. The spoken length
is the non-silent span (``train.dataset.active_span``); noise around the
word lengthens it, so "drawn-out" means slow speech or sound around it.

The third band is the recording's level: an evaluation stream's noise bed
is set against the mean power of all its keyword clips, and each clip keeps
its recorded level, so a quiet recording meets the noise at a lower SNR than
the stream's nominal one (``deploy.error_clips.keyword_snr``). On the
real-speech benchmark's 411 real "computer" clips at a nominal 10 dB, the
clips' own SNRs run from -7 to 20 dB (10-90%: 0 to 14 dB), and 48 of the 56
clips whose spoken span is 1 s or more (mostly a constant low-frequency
noise within 35 dB of the word, not a slow word) are under 5 dB.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from deploy.stats import wilson_interval

PITCH_BANDS_HZ = (120.0, 165.0, 220.0)  # edges: under 120 Hz mostly men's voices, above 165 Hz mostly women's and children's
HIGH_PITCH_HZ = 165.0  # the advice's split between lower and higher voices
LENGTH_BANDS_S = (0.6, 0.8, 1.0)  # edges of the spoken length of the keyword clip
LONG_S = 0.8  # the advice's split between ordinary and drawn-out keywords
SNR_BANDS_DB = (0.0, 5.0, 10.0, 15.0)  # edges of a keyword's own SNR in an evaluation stream
VOICE_KINDS = {"pitch": "the speaker's median pitch", "length": "the spoken length of the clip", "snr": "the clip's own SNR in the stream"}
LOUD_DB = -20.0
FMIN_HZ, FMAX_HZ = 60.0, 400.0


def median_pitch_hz(audio: np.ndarray, sample_rate: int) -> float:
    """Median YIN pitch over the loud frames of ``audio`` (NaN for silence)."""
    import librosa

    if len(audio) < 1024 or not np.any(audio):
        return float("nan")
    hop = sample_rate // 100
    f0 = librosa.yin(audio.astype(np.float32), fmin=FMIN_HZ, fmax=FMAX_HZ, sr=sample_rate, frame_length=1024, hop_length=hop)
    rms = librosa.feature.rms(y=audio, frame_length=1024, hop_length=hop)[0]
    n = min(len(f0), len(rms))
    loud = rms[:n] >= rms[:n].max() * 10 ** (LOUD_DB / 20)
    return float(np.median(f0[:n][loud]))


def warm_pitch_cache(sample_rate: int = 16000) -> float:
    """Compile (or load) librosa's cached numba functions behind ``median_pitch_hz`` once, in this process.

    Why: librosa caches its numba gufuncs on disk, and two processes that
    compile one at the same moment can leave a cache that segfaults every
    later run (numba issue #10128; it happened to two rotations started
    together). Called before the benchmark starts other processes, so they
    only read a finished cache. Returns the pitch of a 200 Hz tone.
    """
    t = np.arange(sample_rate // 4) / sample_rate
    return median_pitch_hz(0.5 * np.sin(2 * np.pi * 200.0 * t), sample_rate)


def spoken_seconds(audio: np.ndarray, sample_rate: int) -> float:
    """Length of the non-silent span of ``audio``."""
    from train.dataset import active_span

    start, end = active_span(audio, sample_rate)
    return (end - start) / sample_rate


def traits(audio: np.ndarray, sample_rate: int) -> dict:
    """``{"pitch_hz", "spoken_s"}`` of one keyword clip; pitch None for silence (reports stay strict JSON)."""
    pitch = median_pitch_hz(audio, sample_rate)
    return {"pitch_hz": None if np.isnan(pitch) else round(pitch, 1), "spoken_s": round(spoken_seconds(audio, sample_rate), 3)}


def band_labels(edges: tuple[float, ...], unit: str, fmt: str) -> list[str]:
    """The names of the bands between ``edges``, lowest first: "under a", "a-b", ..., "z and over"."""
    inner = [f"{lo:{fmt}}-{hi:{fmt}} {unit}" for lo, hi in zip(edges, edges[1:])]
    return [f"under {edges[0]:{fmt}} {unit}", *inner, f"{edges[-1]:{fmt}} {unit} and over"]


PITCH_LABELS = band_labels(PITCH_BANDS_HZ, "Hz", ".0f")
LENGTH_LABELS = band_labels(LENGTH_BANDS_S, "s", ".1f")
SNR_LABELS = band_labels(SNR_BANDS_DB, "dB", ".0f")
UNKNOWN = "unknown"  # no pitch measured (a silent clip)


def _band(x: float | None, edges: tuple[float, ...], labels: list[str]) -> str:
    if x is None or np.isnan(x):
        return UNKNOWN
    return labels[int(np.searchsorted(edges, x, side="right"))]


def pitch_band(pitch_hz: float | None) -> str:
    return _band(pitch_hz, PITCH_BANDS_HZ, PITCH_LABELS)


def length_band(spoken_s: float) -> str:
    return _band(spoken_s, LENGTH_BANDS_S, LENGTH_LABELS)


def snr_band(snr_db: float | None) -> str:
    return _band(snr_db, SNR_BANDS_DB, SNR_LABELS)


def frr_table(items: Iterable[tuple[str, bool]], order: list[str] | None = None) -> dict:
    """``{group: {"n", "misses", "frr", "frr_ci"}}`` from ``(group, missed)`` pairs.

    Groups named in ``order`` come first, in that order (bands lowest first);
    the others follow alphabetically (accents).
    """
    counts: dict[str, list[int]] = {}
    for group, missed in items:
        c = counts.setdefault(group, [0, 0])
        c[0] += 1
        c[1] += bool(missed)
    rank = {g: i for i, g in enumerate(order or [])}
    return {g: {"n": n, "misses": m, "frr": m / n, "frr_ci": [round(x, 4) for x in wilson_interval(m, n)]}
            for g, (n, m) in sorted(counts.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))}


def voice_frr(keywords: list[tuple[dict, bool]]) -> dict:
    """FRR by pitch band and by spoken-length band from ``(traits, missed)`` per keyword clip.

    When the traits carry the keyword's own SNR in the stream (``"snr_db"``,
    from ``deploy.error_clips.keyword_snr``), FRR by SNR band too.
    """
    out = {"pitch": frr_table(((pitch_band(t["pitch_hz"]), m) for t, m in keywords), PITCH_LABELS + [UNKNOWN]),
           "length": frr_table(((length_band(t["spoken_s"]), m) for t, m in keywords), LENGTH_LABELS)}
    if any(t.get("snr_db") is not None for t, _ in keywords):
        out["snr"] = frr_table(((snr_band(t.get("snr_db")), m) for t, m in keywords), SNR_LABELS + [UNKNOWN])
    return out
