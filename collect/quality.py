"""Is this take worth keeping? Voice-activity end-pointing, silence trimming and the quality checks.

All of it is plain numpy on a 1-D float32 take, so the same code runs live (the
``EndPointer`` sees the microphone blocks as they arrive) and in tests (on
arrays made to fail one check each).

Speech is found by frame energy: 20 ms frames whose RMS level is well above
the take's own noise floor (its quietest frames) and above an absolute floor.
A relative threshold is what makes it work both on a quiet laptop microphone
and in a noisy room; the absolute floor keeps digital silence (a muted input,
a null sink) from counting its own dither as speech.

Each failed check has a plain-words reason the volunteer can act on ("too
quiet: speak closer to the microphone"), because the recorder shows it and
asks for a re-take.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from features.audio import SAMPLE_RATE

FRAME_S = 0.02  # energy frame length
FLOOR_DB = -90.0  # the level of digital silence, so log(0) never appears


@dataclass(frozen=True)
class QualityLimits:
    """Thresholds of the checks. Levels in dBFS (0 = full scale), times in seconds."""

    speech_above_floor_db: float = 12.0  # a frame is speech if this far above the noise floor...
    speech_min_db: float = -60.0  # ...and above this absolute level
    too_quiet_peak: float = 0.03  # speech whose peak stays below this (about -30 dBFS) is too quiet
    clip_level: float = 0.985  # samples at or above this magnitude count as clipped
    max_clipped_fraction: float = 0.001  # more than 0.1 % clipped samples of the speech: clipped
    min_clipped_samples: int = 4  # ...and never fewer than this (one hot sample is not clipping)
    min_speech_s: float = 0.2  # shorter speech than this is a click or a cough, not a word
    max_speech_s: float = 2.5  # longer than this is not one keyword (sentences get their own limit)
    margin_s: float = 0.15  # silence kept before and after the speech when trimming


@dataclass
class TakeReport:
    """What the checks found: ``ok``, the reasons if not, and where the speech is."""

    reasons: list[str] = field(default_factory=list)
    speech_start: int = 0  # sample index of the first speech frame
    speech_end: int = 0  # sample index just after the last speech frame
    trim_start: int = 0  # the kept part, speech plus margins
    trim_end: int = 0
    peak: float = 0.0
    notes: list[str] = field(default_factory=list)  # things worth saying that do not fail the take

    @property
    def ok(self) -> bool:
        return not self.reasons

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def frame_levels_db(audio: np.ndarray, sample_rate: int = SAMPLE_RATE, frame_s: float = FRAME_S) -> np.ndarray:
    """RMS level of each non-overlapping frame in dBFS, shape ``(n_frames,)``; a partial last frame counts."""
    n = max(1, int(round(frame_s * sample_rate)))
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if len(audio) == 0:
        return np.zeros(0, np.float32)
    pad = (-len(audio)) % n
    frames = np.pad(audio, (0, pad)).reshape(-1, n)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    return np.maximum(20 * np.log10(np.maximum(rms, 1e-12)), FLOOR_DB).astype(np.float32)


def level_dbfs(block: np.ndarray) -> float:
    """Peak level of a block in dBFS, for the live meter."""
    peak = float(np.max(np.abs(block))) if len(block) else 0.0
    return max(20 * np.log10(max(peak, 1e-12)), FLOOR_DB)


def speech_threshold_db(levels: np.ndarray, limits: QualityLimits = QualityLimits()) -> float:
    """The frame level above which a frame counts as speech, for this take's noise floor.

    The floor is the 10th percentile of frame levels: a take always starts and
    ends with some silence, so its quietest tenth is the room, not the voice.
    """
    floor = float(np.percentile(levels, 10)) if len(levels) else FLOOR_DB
    return max(floor + limits.speech_above_floor_db, limits.speech_min_db)


def find_speech(audio: np.ndarray, sample_rate: int = SAMPLE_RATE, limits: QualityLimits = QualityLimits()) -> tuple[int, int] | None:
    """``(start, end)`` sample indices from the first to the end of the last speech frame, or None."""
    levels = frame_levels_db(audio, sample_rate)
    active = np.flatnonzero(levels > speech_threshold_db(levels, limits))
    if len(active) == 0:
        return None
    n = int(round(FRAME_S * sample_rate))
    return int(active[0] * n), int(min(len(audio), (active[-1] + 1) * n))


def check_take(
    audio: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    channels: int = 1,
    limits: QualityLimits = QualityLimits(),
    hit_time_limit: bool = False,
) -> TakeReport:
    """Run every check on a take as it will be written; say in plain words what is wrong.

    ``audio`` is what the recorder will save: it must already be mono at 16 kHz
    (the microphone layer converts). A different rate or channel count here
    means the device delivered something other than what it announced, and the
    take is refused rather than saved with a wrong header. ``hit_time_limit``
    says the recording stopped at its maximum length, not at the end of speech:
    speech that runs into that end was cut off.
    """
    report = TakeReport()
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2 and audio.shape[1] == 1:
        audio = audio[:, 0]
    if channels != 1 or audio.ndim != 1:
        got = channels if channels != 1 else (audio.shape[1] if audio.ndim == 2 else audio.ndim)
        report.reasons.append(f"wrong channel count from the device: got {got}, expected 1 (mono); choose another --device")
        return report
    if sample_rate != SAMPLE_RATE:
        report.reasons.append(f"wrong sample rate from the device: got {sample_rate} Hz, expected {SAMPLE_RATE} Hz; choose another --device")
        return report
    if len(audio) == 0:
        report.reasons.append("no audio arrived from the device")
        return report
    report.peak = float(np.max(np.abs(audio)))
    span = find_speech(audio, sample_rate, limits)
    if span is None:
        report.reasons.append("no speech found: nothing louder than the background was heard")
        report.trim_end = len(audio)
        return report
    start, end = span
    margin = int(round(limits.margin_s * sample_rate))
    report.speech_start, report.speech_end = start, end
    report.trim_start, report.trim_end = max(0, start - margin), min(len(audio), end + margin)
    speech = audio[start:end]
    speech_s = (end - start) / sample_rate
    speech_peak = float(np.max(np.abs(speech)))
    n_clipped = int(np.count_nonzero(np.abs(speech) >= limits.clip_level))
    if n_clipped >= max(limits.min_clipped_samples, limits.max_clipped_fraction * len(speech)):
        report.reasons.append(f"clipped: {n_clipped} samples hit full scale; speak a little further from the microphone or lower the input gain")
    elif speech_peak < limits.too_quiet_peak:
        report.reasons.append(f"too quiet: the loudest part is {20 * np.log10(max(speech_peak, 1e-12)):.0f} dBFS; speak closer to the microphone or raise the input gain")
    if speech_s < limits.min_speech_s:
        report.reasons.append(f"too short: only {speech_s:.2f} s of sound; say the whole prompt")
    elif speech_s > limits.max_speech_s:
        report.reasons.append(f"too long: {speech_s:.1f} s of speech, at most {limits.max_speech_s:.1f} s expected; say only the prompt")
    elif hit_time_limit and len(audio) - end < int(0.1 * sample_rate):
        report.reasons.append("cut off: still speaking when the recording time ran out; start speaking sooner or raise --max-seconds")
    return report


def trim(audio: np.ndarray, report: TakeReport) -> np.ndarray:
    """The kept part of a take: its speech with ``margin_s`` of silence either side."""
    return np.asarray(audio, dtype=np.float32).reshape(-1)[report.trim_start : report.trim_end]


class EndPointer:
    """Decides, block by block, when the speaker has finished: speech heard, then enough silence.

    The noise floor is tracked as the quietest frame seen so far (the take
    starts before the speaker does, so that is the room). Pauses between the
    words of a sentence are shorter than ``trailing_silence_s``; a speaker who
    has finished stays silent longer.
    """

    def __init__(self, sample_rate: int, trailing_silence_s: float = 0.8, limits: QualityLimits = QualityLimits()):
        self.sample_rate = sample_rate
        self.limits = limits
        self.frame = max(1, int(round(FRAME_S * sample_rate)))
        self.trailing_frames = int(np.ceil(trailing_silence_s / FRAME_S))
        self._rest = np.zeros(0, np.float32)
        self.floor_db = 0.0
        self.heard_speech = False
        self.silent_frames = 0

    def push(self, block: np.ndarray) -> bool:
        """Feed the next block (mono); True once speech has been followed by enough silence."""
        audio = np.concatenate([self._rest, np.asarray(block, np.float32).reshape(-1)])
        n_full = len(audio) // self.frame
        self._rest = audio[n_full * self.frame :]
        if n_full == 0:
            return self.done
        levels = frame_levels_db(audio[: n_full * self.frame], self.sample_rate)
        for level in levels:
            self.floor_db = min(self.floor_db, float(level))
            threshold = max(self.floor_db + self.limits.speech_above_floor_db, self.limits.speech_min_db)
            if level > threshold:
                self.heard_speech = True
                self.silent_frames = 0
            elif self.heard_speech:
                self.silent_frames += 1
        return self.done

    @property
    def done(self) -> bool:
        return self.heard_speech and self.silent_frames >= self.trailing_frames
