"""Several keyword models listening at once, sharing one MFCC front end.

A device that answers to "computer" and "lights on" should not compute the
same MFCC frames twice. ``MultiDetector(models)`` runs one
``features.mfcc.StreamingMfcc`` over the audio and hands the new frames to one
``deploy.detector.Detector`` per model, so the cost of N models is one front
end plus N small classifiers instead of N front ends; ``kws bench`` measures
how much that saves.

Each model keeps its own window, hop, threshold, smoothing and refractory
period (they may differ), and its own ``Detector`` does the scoring exactly as
it would alone: the frames it receives are the very frames its own
``StreamingMfcc`` would have computed, so the scores and detections are
identical to separate detectors (the tests hold them to equality). The only
requirement is that all models were trained on the same feature config; a
model with another one is refused, naming both configs.

Runtime code: imports only numpy and the project's runtime modules.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deploy.detector import Detection, Detector
from deploy.modelfile import KwsModel
from features.errors import ModelError
from features.mfcc import StreamingMfcc


class _SharedFrames:
    """Stands in for a detector's own ``StreamingMfcc``: hands over frames the shared one has computed."""

    def reset(self) -> None:
        pass

    def push(self, frames: np.ndarray) -> np.ndarray:
        return frames


class MultiDetector:
    """Detectors for several models over one stream, with the MFCC computed once.

    ``update(chunk)`` takes audio in chunks of any size, like
    ``Detector.update``, and returns the detections of all models in time
    order. Per-model options (threshold, smoothing, refractory, record_scores)
    are passed through to every ``Detector``; ``detectors[i]`` holds model
    ``i``'s recorded ``times`` and ``scores``.
    """

    def __init__(self, models: Sequence[KwsModel | str], **detector_options):
        if not models:
            raise ModelError("MultiDetector needs at least one model")
        models = [m if isinstance(m, KwsModel) else KwsModel(m) for m in models]
        cfg = models[0].info.feature_config
        for m in models[1:]:
            if m.info.feature_config != cfg:
                raise ModelError(
                    f"{m.path} was trained on other features than {models[0].path} "
                    f"(feature config {m.info.feature_config.digest()} vs {cfg.digest()}); "
                    "models listening together must share one feature config"
                )
        self.models = models
        self.feature_config = cfg
        self.detectors = [Detector(m, **detector_options) for m in models]
        for det in self.detectors:
            det._mfcc = _SharedFrames()  # the detector's update() now consumes frames computed below, once
        self._mfcc = StreamingMfcc(cfg)

    @property
    def keywords(self) -> tuple[str, ...]:
        """All keywords, model by model (a keyword two models share appears twice)."""
        return tuple(k for det in self.detectors for k in det.keywords)

    def reset(self) -> None:
        """Forget all audio and detector state: the next chunk starts a new stream."""
        self._mfcc.reset()
        for det in self.detectors:
            det.reset()

    def update(self, chunk: np.ndarray) -> list[Detection]:
        """Feed audio (float32, 16 kHz mono, any length); return every model's detections it completes."""
        frames = self._mfcc.push(chunk)
        if len(frames) == 0:
            return []
        detections: list[Detection] = []
        for det in self.detectors:
            detections += det.update(frames)
        detections.sort(key=lambda d: d.time_s)
        return detections

    def process(self, audio: np.ndarray, chunk_size: int = 1600) -> list[Detection]:
        """Run a whole signal through ``update`` in chunks; the detectors are reset first."""
        self.reset()
        detections: list[Detection] = []
        for start in range(0, len(audio), chunk_size):
            detections += self.update(audio[start : start + chunk_size])
        return detections
