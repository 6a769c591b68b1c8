"""The streaming detector: audio in chunks of any size, detections out.

``Detector.update(chunk)`` accepts whatever the microphone hands over (1
sample or 10 seconds). New audio becomes new MFCC frames only
(``features.mfcc.StreamingMfcc``); every ``hop_frames`` frames the last
``window_frames`` frames are scored by the model, and ``Trigger`` turns the
scores into detections. Because hops are counted in frames, not chunks, the
scores and detections do not depend on the chunk size.

``Trigger`` (smoothing, threshold, refractory period) is separate from the
model so it can be tested on made-up score sequences, and ``fire_indices``
replays any threshold over recorded scores without running the model again.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from features.mfcc import StreamingMfcc
from deploy.modelfile import KwsModel


@dataclass(frozen=True)
class Detection:
    keyword: str
    time_s: float  # stream time of the hop that fired: end of the scored window
    score: float  # smoothed score that crossed the threshold


def smooth(scores: np.ndarray, n: int) -> np.ndarray:
    """Moving mean over the last ``n`` scores (fewer at the start), along axis 0."""
    scores = np.asarray(scores, dtype=np.float64)
    if n <= 1 or len(scores) == 0:
        return scores
    c = np.cumsum(scores, axis=0)
    out = c.copy()
    out[n:] = c[n:] - c[:-n]
    counts = np.minimum(np.arange(1, len(scores) + 1), n).reshape((-1,) + (1,) * (scores.ndim - 1))
    return out / counts


def fire_indices(smoothed: np.ndarray, threshold: float, refractory_hops: int) -> np.ndarray:
    """Indices where a detection fires: score at or above threshold, not within refractory hops of the last one."""
    above = np.flatnonzero(np.asarray(smoothed) >= threshold)
    fired, last = [], -np.inf
    for i in above:
        if i - last > refractory_hops:
            fired.append(i)
            last = i
    return np.asarray(fired, dtype=np.int64)


class Trigger:
    """Smoothing, threshold and refractory period for one keyword's score stream."""

    def __init__(self, threshold: float, smoothing: int = 1, refractory_hops: int = 0):
        self.threshold = threshold
        self.smoothing = max(1, smoothing)
        self.refractory_hops = refractory_hops
        self.reset()

    def reset(self) -> None:
        self._recent: deque[float] = deque(maxlen=self.smoothing)
        self._since_fire = np.inf  # hops since the last detection

    def step(self, score: float) -> tuple[float, bool]:
        """Feed one hop's raw score; return the smoothed score and whether it fires now."""
        self._recent.append(float(score))
        smoothed = sum(self._recent) / len(self._recent)
        self._since_fire += 1
        fired = smoothed >= self.threshold and self._since_fire > self.refractory_hops
        if fired:
            self._since_fire = 0
        return smoothed, fired


class Detector:
    """Streaming keyword detector over one exported model.

    Threshold, smoothing and refractory period default to the model's metadata.
    With ``record_scores=True`` every hop's time and raw scores are kept in
    ``times`` and ``scores`` (for ``kws detect --scores`` and evaluation).
    """

    def __init__(
        self,
        model: KwsModel,
        threshold: float | None = None,
        smoothing: int | None = None,
        refractory_s: float | None = None,
        record_scores: bool = False,
    ):
        info = model.info
        self.model = model
        self.info = info
        self.keywords = info.keywords
        self.threshold = info.threshold if threshold is None else threshold
        self.smoothing = info.smoothing if smoothing is None else smoothing
        self.refractory_s = info.refractory_s if refractory_s is None else refractory_s
        self.refractory_hops = int(round(self.refractory_s / info.hop_s))
        self.record_scores = record_scores
        self._mfcc = StreamingMfcc(info.feature_config)
        self.reset()

    def reset(self) -> None:
        """Forget all audio, scores and refractory state: the next chunk starts a new stream."""
        self._mfcc.reset()
        self._frames = np.zeros((0, self.info.feature_config.n_mfcc), np.float32)
        self._n_frames = 0  # frames seen since reset
        self.triggers = [Trigger(self.threshold, self.smoothing, self.refractory_hops) for _ in self.keywords]
        self.times: list[float] = []
        self.scores: list[np.ndarray] = []

    def frame_end_time(self, frame_count: int) -> float:
        """Stream time (s) at the end of the ``frame_count``-th frame."""
        cfg = self.info.feature_config
        return cfg.samples_for_frames(frame_count) / cfg.sample_rate

    def update(self, chunk: np.ndarray) -> list[Detection]:
        """Feed audio (float32 in [-1, 1], 16 kHz mono, any length); return detections it completes."""
        new = self._mfcc.push(chunk)
        if len(new) == 0:
            return []
        window, hop = self.info.window_frames, self.info.hop_frames
        frames = np.concatenate([self._frames, new])
        first = self._n_frames + 1  # frame count after the first new frame
        self._n_frames += len(new)
        detections = []
        for count in range(first, self._n_frames + 1):
            if count < window or (count - window) % hop:
                continue
            end = len(frames) - (self._n_frames - count)
            probs = self.model.predict(frames[None, end - window : end])[0]
            detections += self._score_hop(self.frame_end_time(count), probs[1:])
        self._frames = frames[-window:]
        return detections

    def _score_hop(self, time_s: float, scores: np.ndarray) -> list[Detection]:
        if self.record_scores:
            self.times.append(time_s)
            self.scores.append(scores.astype(np.float32))
        out = []
        for keyword, trigger, score in zip(self.keywords, self.triggers, scores):
            smoothed, fired = trigger.step(score)
            if fired:
                out.append(Detection(keyword, time_s, smoothed))
        return out

    def process(self, audio: np.ndarray, chunk_size: int = 1600) -> list[Detection]:
        """Run a whole signal through ``update`` in chunks; the detector is reset first."""
        self.reset()
        detections = []
        for start in range(0, len(audio), chunk_size):
            detections += self.update(audio[start : start + chunk_size])
        return detections
