"""Evaluation streams: long recordings made from clips, with the truth of where each keyword is.

A wake-word detector runs on continuous audio, so its false-reject rate and
false accepts per hour must be measured on continuous audio, not on isolated
clips: background speech, the transitions between utterances and a constant
noise bed all produce detections that a clip test never sees.

``build_stream`` lays background speech (negative clips) end to end with
random gaps and levels, reusing the clips as often as needed to reach the
requested length, and inserts keyword clips at spaced positions (never
overlapping other speech, at least ``keyword_spacing_s`` apart so one
detection can only belong to one keyword), then adds a continuous noise bed
at a given SNR. Every clip is trimmed of its leading and trailing silence
before it is placed, so an ``Event`` spans exactly the speech of its clip.

``match_detections`` turns detection times into hits per keyword event and
false accepts. ``make_demo_stream`` writes a short WAV for people to listen to.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from collect.manifest import NEGATIVE, NOISE, load_rows
from collect.synth import coloured_noise
from features.audio import SAMPLE_RATE, load_audio, write_wav
from features.errors import ConfigError, KwsError, ManifestError

NON_KEYWORD = (NEGATIVE, NOISE)
NOISE_EXPONENTS = {"white": 0.0, "pink": 1.0, "brown": 2.0}
TRIM_RATIO = 0.01  # samples below 1% of the clip's peak at either end count as silence


@dataclass(frozen=True)
class Event:
    """One clip placed in a stream, in stream seconds (start inclusive, end exclusive)."""

    start_s: float
    end_s: float
    label: str  # a keyword, NEGATIVE or NOISE
    accent: str = ""
    speaker: str = ""
    path: str = ""  # the clip's path relative to its dataset

    @property
    def is_keyword(self) -> bool:
        return self.label not in NON_KEYWORD

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StreamClip:
    """A decoded clip and what is known about it, ready to be placed in a stream."""

    audio: np.ndarray  # float32, 16 kHz mono
    label: str
    accent: str = ""
    speaker: str = ""
    path: str = ""


def trim_silence(audio: np.ndarray, ratio: float = TRIM_RATIO) -> np.ndarray:
    """The part of ``audio`` between its first and last sample above ``ratio`` times its peak."""
    audio = np.asarray(audio, dtype=np.float32)
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    if peak == 0.0:
        return audio[:0]
    loud = np.flatnonzero(np.abs(audio) > ratio * peak)
    return audio[loud[0] : loud[-1] + 1]


def speech_power(clips: Sequence[np.ndarray]) -> float:
    """Mean power of the (trimmed) clips: the speech level an SNR is stated against."""
    powers = [float(np.mean(np.square(c, dtype=np.float64))) for c in clips if len(c)]
    return float(np.mean(powers)) if powers else 0.0


def make_noise(kind: str | np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A unit-RMS noise bed of ``n`` samples: a colour name, or a given signal looped from a random offset."""
    if isinstance(kind, str):
        if kind not in NOISE_EXPONENTS:
            raise ConfigError(f"unknown noise colour {kind!r}; choose one of {', '.join(NOISE_EXPONENTS)}")
        # An FFT of a length with large prime factors can take minutes; one of a 2-3-5-smooth length, cut, takes a second.
        from scipy.fft import next_fast_len

        bed = coloured_noise(next_fast_len(max(n, 1), real=True), rng, NOISE_EXPONENTS[kind])[:n]
        bed /= np.std(bed) + 1e-12
        return bed
    signal = np.asarray(kind, dtype=np.float32).reshape(-1)
    rms = float(np.sqrt(np.mean(np.square(signal, dtype=np.float64)))) if len(signal) else 0.0
    if rms == 0.0:
        raise ConfigError("the noise signal for the stream is empty or silent")
    reps = math.ceil((n + len(signal)) / len(signal))
    offset = int(rng.integers(len(signal)))
    return (np.tile(signal, reps)[offset : offset + n] / rms).astype(np.float32)


def build_stream(
    keyword_clips: Sequence[StreamClip],
    background_clips: Sequence[StreamClip],
    noise: str | np.ndarray | None = "pink",
    *,
    seed: int = 0,
    snr_db: float | None = 10.0,
    min_gap_s: float = 0.3,
    target_s: float = 60.0,
    keyword_spacing_s: float = 3.0,
    background_gain_db: tuple[float, float] = (-6.0, 3.0),
    sample_rate: int = SAMPLE_RATE,
) -> tuple[np.ndarray, list[Event]]:
    """Build one evaluation stream; return ``(audio, events)`` with events of every placed clip, in time order.

    - Background clips are shuffled and laid end to end, each at a random
      gain in ``background_gain_db`` (limited so it never clips) after a random
      gap of ``min_gap_s`` to ``3 * min_gap_s``; when all have been used, they
      are reshuffled and used again with new gains and gaps, until the stream
      reaches ``target_s``.
    - Keyword clips (at their own level: their recorded level is part of the
      test) are inserted in shuffled order at evenly planned times between the
      background clips, each at least ``keyword_spacing_s`` after the end of
      the previous keyword. If the background runs out first, the remaining
      keywords follow one another, still that far apart, so the stream may
      exceed ``target_s``.
    - ``noise`` (a colour name, a signal to loop, or ``None`` for none) is
      added over the whole stream at ``snr_db`` below the mean power of the
      keyword clips (of the background clips if there are no keywords).
    """
    if min_gap_s < 0 or keyword_spacing_s < 0 or target_s < 0:
        raise ConfigError("min_gap_s, keyword_spacing_s and target_s must not be negative")
    rng = np.random.default_rng(seed)
    keywords = [_trimmed(c) for c in keyword_clips]
    keywords = [c for c in keywords if len(c.audio)]
    background = [c for c in (_trimmed(c) for c in background_clips) if len(c.audio)]
    if not keywords and not background:
        raise ConfigError("cannot build a stream: no keyword and no background clip has any sound")
    order = [keywords[i] for i in rng.permutation(len(keywords))]
    # Planned keyword times, evenly over the stream (the first one after half a slot).
    slot = target_s / max(1, len(order))
    planned = [(i + 0.5) * slot for i in range(len(order))]

    pieces: list[tuple[int, float, StreamClip]] = []  # (start sample, gain, clip): scaled only when added, not kept twice
    cursor = 0.0  # end of the last placed clip, seconds
    last_keyword_end = -math.inf
    next_kw = 0
    bg_queue: list[StreamClip] = []

    def gap() -> float:
        return float(rng.uniform(min_gap_s, 3 * min_gap_s)) if min_gap_s > 0 else 0.0

    def place(start_s: float, clip: StreamClip, gain: float = 1.0) -> float:
        start = int(round(start_s * sample_rate))
        pieces.append((start, gain, clip))
        return (start + len(clip.audio)) / sample_rate

    while True:
        if next_kw < len(order) and (cursor >= planned[next_kw] or not background or cursor >= target_s):
            clip = order[next_kw]
            start_s = max(cursor + gap(), last_keyword_end + keyword_spacing_s)
            cursor = last_keyword_end = place(start_s, clip)
            next_kw += 1
            continue
        if not background or cursor >= target_s:
            if next_kw >= len(order):
                break
            continue
        if not bg_queue:
            bg_queue = [background[i] for i in rng.permutation(len(background))]
        clip = bg_queue.pop()
        peak = float(np.max(np.abs(clip.audio)))
        gain = min(10 ** (rng.uniform(*background_gain_db) / 20), 0.9 / peak)
        start_s = cursor + gap()
        if start_s < last_keyword_end + min_gap_s:  # never start right on a keyword's heels
            start_s = last_keyword_end + min_gap_s
        cursor = place(start_s, clip, gain)

    total = max(int(round(target_s * sample_rate)), max(s + len(c.audio) for s, _, c in pieces) + int(min_gap_s * sample_rate))
    audio = np.zeros(total, np.float32)
    events = []
    for start, gain, clip in pieces:
        n = len(clip.audio)
        audio[start : start + n] += clip.audio * gain
        events.append(Event(start / sample_rate, (start + n) / sample_rate, clip.label, clip.accent, clip.speaker, clip.path))
    if noise is not None and snr_db is not None:
        level = speech_power([c.audio for c in keywords]) or speech_power([c.audio for c in background])
        bed = make_noise(noise, total, rng)
        bed *= np.float32(math.sqrt(level / 10 ** (snr_db / 10)))
        audio += bed
        del bed
    np.clip(audio, -1.0, 1.0, out=audio)
    events.sort(key=lambda e: e.start_s)
    return audio, events


def _trimmed(clip: StreamClip) -> StreamClip:
    return StreamClip(trim_silence(clip.audio), clip.label, clip.accent, clip.speaker, clip.path)


def match_detections(
    detection_times: Sequence[float],
    events: Sequence[Event],
    tolerance_after_s: float = 1.0,
    keyword: str | None = None,
) -> tuple[list[int], list[float]]:
    """Hits per event (aligned with ``events``) and the times of false accepts.

    A detection is a hit for a keyword event if it falls in
    ``[event.start_s, event.end_s + tolerance_after_s]`` (the detector reports
    a word when it has heard it, so a little after its end); several
    detections in one window count as one hit's worth of evidence, not as false
    accepts. Any other detection, including one during background speech, is a
    false accept. With ``keyword`` given, only events of that keyword are
    targets (a detector for "computer" firing on "jarvis" is a false accept);
    non-target events always get 0 hits.
    """
    targets = [i for i, e in enumerate(events) if e.is_keyword and (keyword is None or e.label == keyword)]
    starts = np.array([events[i].start_s for i in targets], dtype=np.float64)
    ends = np.array([events[i].end_s for i in targets], dtype=np.float64) + tolerance_after_s
    hits = [0] * len(events)
    false_accepts = []
    for t in detection_times:
        inside = np.flatnonzero((starts <= t) & (t <= ends))
        if inside.size:  # overlapping windows (keywords closer than the tolerance): the latest-starting one
            hits[targets[inside[np.argmax(starts[inside])]]] += 1
        else:
            false_accepts.append(float(t))
    return hits, false_accepts


def held_out_speakers(info, dataset_rows) -> set[str]:
    """Speakers of the model's test split (``info.metadata["splits"]["test"]``) present in the rows."""
    splits = info.metadata.get("splits") or {}
    present = {r.speaker for r in dataset_rows}
    return set(splits.get("test") or []) & present


def make_demo_stream(dataset: str | Path, info, out_wav: str | Path, seed: int = 0, *, n_keywords: int = 6,
                     snr_db: float = 20.0) -> tuple[Path, list[Event]]:
    """Write a ~40-60 s demo WAV of ``n_keywords`` wake words among other speech and noise.

    Keywords and background speech come from the model's held-out test
    speakers (all speakers if the model records none found in this dataset),
    keywords picked round-robin over accents so several accents are heard.
    Returns the WAV path and the keyword events only (start and end of each
    spoken wake word), which is what a listener compares detections with.
    """
    dataset = Path(dataset)
    rows = load_rows(dataset)
    speakers = held_out_speakers(info, rows) or {r.speaker for r in rows}
    keywords = set(info.keywords)
    rng = np.random.default_rng(seed)
    kw_rows = [r for r in rows if r.speaker in speakers and r.label in keywords]
    bg_rows = [r for r in rows if r.speaker in speakers and r.label == NEGATIVE]
    if not kw_rows:
        raise ManifestError(f"{dataset}: no clips of {', '.join(sorted(keywords))} to build a demo stream from")
    by_accent: dict[str, list] = {}
    for i in rng.permutation(len(kw_rows)):
        by_accent.setdefault(kw_rows[i].accent, []).append(kw_rows[i])
    picked, accents = [], sorted(by_accent)
    while len(picked) < n_keywords and any(by_accent.values()):
        for accent in accents:
            if by_accent[accent] and len(picked) < n_keywords:
                picked.append(by_accent[accent].pop())
    bg_picked = [bg_rows[i] for i in rng.permutation(len(bg_rows))[:40]]
    kw_clips = _load_clips(dataset, picked)
    bg_clips = _load_clips(dataset, bg_picked)
    if not kw_clips:
        raise ManifestError(f"{dataset}: none of the keyword clips picked for the demo could be read")
    target_s = float(np.clip(8.0 * len(kw_clips), 40.0, 60.0))
    audio, events = build_stream(kw_clips, bg_clips, "pink", seed=seed, snr_db=snr_db, min_gap_s=0.4, target_s=target_s,
                                 keyword_spacing_s=4.0, sample_rate=info.feature_config.sample_rate)
    path = write_wav(out_wav, audio, info.feature_config.sample_rate)
    return path, [e for e in events if e.is_keyword]


def _load_clips(dataset: Path, rows) -> list[StreamClip]:
    """Decoded clips of the rows that can be read (the others are left out: a demo does not need them all)."""
    clips = []
    for r in rows:
        try:
            audio = load_audio(dataset / r.path)
        except KwsError:
            continue
        clips.append(StreamClip(audio, r.label, r.accent, r.speaker, r.path))
    return clips
