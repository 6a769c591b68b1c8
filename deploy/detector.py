"""The streaming detector: audio in chunks of any size, detections out.

``Detector.update(chunk)`` accepts whatever the microphone hands over (1
sample or 10 seconds). New audio becomes new MFCC frames only
(``features.mfcc.StreamingMfcc``); every ``hop_frames`` frames the last
``window_frames`` frames are scored by the model, and ``Trigger`` turns the
scores into detections. Because hops are counted in frames, not chunks, the
scores and detections do not depend on the chunk size.

A streaming model (one with a streaming graph, ``KwsModel.stream``) is run
differently but scores the same: every hop its graph gets only the
``hop_frames`` new frames and the state the previous hop left
(``deploy.modelfile.StreamRun``), instead of the whole window. ``HopFeed``
says which frames each run gets and which runs score, for both paths.

``Trigger`` (smoothing, threshold, refractory period) is separate from the
model so it can be tested on made-up score sequences, and ``fire_indices``
replays any threshold over recorded scores without running the model again.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from features.mfcc import StreamingMfcc
from deploy.modelfile import INPUT_NAME, OUTPUT_NAME, BoundRun, KwsModel, StreamRun


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


def hop_counts(before: int, after: int, window: int, hop: int) -> range:
    """Frame counts in ``(before, after]`` at which a window is scored: ``window``, ``window + hop``, ..."""
    first = max(before + 1, window)
    first += (-(first - window)) % hop  # the next scoring count at or after it
    return range(first, after + 1, hop)


class FrameBuffer:
    """The last MFCC frames of a stream in one preallocated array, so a window is a contiguous view.

    Frames are appended at the end; when the array is full, the last
    ``window`` frames are moved to its start (one copy every ``capacity -
    window`` frames, instead of a new array every chunk).
    """

    def __init__(self, window: int, n_mfcc: int, capacity: int | None = None):
        self.window = window
        self._buf = np.zeros((capacity or 4 * window, n_mfcc), np.float32)
        self._end = 0  # frames held: _buf[:_end]

    def append(self, frames: np.ndarray) -> None:
        k = len(frames)
        if self._end + k > len(self._buf):
            keep = min(self.window, self._end)
            if keep + k > len(self._buf):  # a chunk longer than the buffer: grow it
                grown = np.zeros((2 * (keep + k), self._buf.shape[1]), np.float32)
                grown[:keep] = self._buf[self._end - keep : self._end]
                self._buf = grown
            else:
                self._buf[:keep] = self._buf[self._end - keep : self._end]
            self._end = keep
        self._buf[self._end : self._end + k] = frames
        self._end += k

    def window_ending(self, offset: int) -> np.ndarray:
        """The ``window`` frames ending ``-offset`` frames before the newest one (offset 0: the newest)."""
        end = self._end + offset
        return self._buf[end - self.window : end]


class HopFeed:
    """The frames each graph run gets, hop by hop: the last window (window path) or the hop's new frames (streaming path).

    Window path (``pad_frames`` None): at frame counts ``window``, ``window +
    hop``, ... the ``window`` frames ending there. Streaming path: the stream
    is preceded by ``pad_frames`` zero frames so that runs fall on the same
    counts; every run gets the ``hop`` frames ending at its count, starting
    from the first count that has any real frame, and only the runs at
    ``window`` frames or more score (``push`` says which). Both hold the
    frames in one preallocated ``FrameBuffer``.
    """

    def __init__(self, window: int, hop: int, n_mfcc: int, pad_frames: int | None = None):
        self.window, self.hop, self.n_mfcc, self.pad_frames = window, hop, n_mfcc, pad_frames
        self.span = window if pad_frames is None else hop  # frames per run
        self.first = window if pad_frames is None else (window - 1) % hop + 1  # the first run's frame count
        self.reset()

    def reset(self) -> None:
        self.frames = FrameBuffer(self.span, self.n_mfcc)
        if self.pad_frames:
            self.frames.append(np.zeros((self.pad_frames, self.n_mfcc), np.float32))
        self.n_frames = 0  # real frames seen since reset

    def push(self, new: np.ndarray):
        """Append frames; yield ``(frame count, the run's input frames, whether it scores)`` for every run they complete."""
        before = self.n_frames
        self.n_frames += len(new)
        self.frames.append(new)
        for count in hop_counts(before, self.n_frames, self.first, self.hop):
            yield count, self.frames.window_ending(count - self.n_frames), count >= self.window


def hop_runner(model: KwsModel, session=None, outputs: dict | None = None, states=None):
    """The per-hop runner of a model: ``(run, input array, {output name: array})``, streaming or window path.

    ``session``, ``outputs`` (output name -> shape) and ``states`` override
    the model's own (``deploy.multi`` runs several models' merged graph,
    whose input is theirs and whose outputs and states are renamed).
    """
    info, spec = model.info, model.stream
    outputs = outputs or {OUTPUT_NAME if spec is None else spec.output: (1, len(info.labels))}
    if spec is None:
        name = INPUT_NAME
        run = BoundRun(session or model.session, {name: (1, info.window_frames, info.feature_config.n_mfcc)}, outputs)
    else:
        run = StreamRun(session or model.stream_session, {spec.input: (1, info.feature_config.n_mfcc, 1, spec.hop_frames)}, outputs,
                        spec.states if states is None else states)
        return run, run.inputs[spec.input][0, :, 0, :].T, {k: v[0] for k, v in run.outputs.items()}  # frames land transposed
    return run, run.inputs[name][0], {k: v[0] for k, v in run.outputs.items()}


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
        info, spec = self.info, self.model.stream
        self._feed = HopFeed(info.window_frames, info.hop_frames, info.feature_config.n_mfcc, None if spec is None else spec.pad_frames)
        self._n_frames = 0  # frames seen since reset
        self.triggers = [Trigger(self.threshold, self.smoothing, self.refractory_hops) for _ in self.keywords]
        self.times: list[float] = []
        self.scores: list[np.ndarray] = []
        if not hasattr(self, "_run"):
            self._run, self._input, outputs = hop_runner(self.model)
            (self._probs,) = outputs.values()
        if spec is not None:
            self._run.reset()

    def frame_end_time(self, frame_count: int) -> float:
        """Stream time (s) at the end of the ``frame_count``-th frame."""
        cfg = self.info.feature_config
        return cfg.samples_for_frames(frame_count) / cfg.sample_rate

    def update(self, chunk: np.ndarray) -> list[Detection]:
        """Feed audio (float32 in [-1, 1], 16 kHz mono, any length); return detections it completes."""
        return self.update_frames(self._mfcc.push(chunk))

    def update_frames(self, new: np.ndarray) -> list[Detection]:
        """Feed MFCC frames ``(k, n_mfcc)`` computed elsewhere (``deploy.multi`` shares one front end)."""
        if len(new) == 0:
            return []
        detections = []
        for count, frames, scored in self._feed.push(new):
            self._input[:] = frames
            self._run()
            if scored:
                detections += self._score_hop(self.frame_end_time(count), self._probs[1:])
        self._n_frames = self._feed.n_frames
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
