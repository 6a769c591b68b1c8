"""Several keyword models listening at once, sharing one MFCC front end.

A device that answers to "computer" and "lights on" should not compute the
same MFCC frames twice. ``MultiDetector(models)`` runs one
``features.mfcc.StreamingMfcc`` over the audio, and the models that see the
same window at the same hops are merged into ONE ONNX graph
(``deploy.onnxgraph.merge_models``: the graphs side by side, one shared
input, one output per model), so one ONNX Runtime call per hop scores them
all: the cost of N models is one front end, one frame buffer, one call's
overhead and N classifiers' arithmetic. ``kws bench`` measures it.

Streaming models (``KwsModel.stream``) form groups of their own, run by
one ``deploy.modelfile.StreamRun``. Models of one architecture (same
layers and shapes, e.g. one config trained for several keywords) are
*stacked* into one graph of the same nodes with N times the channels
(``deploy.onnxgraph.stack_stream_models``): per hop a streaming model does
little arithmetic and ONNX Runtime's cost is mostly per node, so this costs
far less than N graphs side by side. Others are merged side by side, each
with its own state under its prefix.

Each model keeps its own window, hop, threshold, smoothing and refractory
period (they may differ; models with another window or hop form another
group, with its own merged graph), and its own ``Detector`` turns the scores
into detections exactly as it would alone: the windows are built from the
very frames its own ``StreamingMfcc`` would have computed, and the merged
graph runs each model's nodes unchanged, so the scores and detections are
identical to separate detectors (the tests hold them to equality). The only
requirement is that all models were trained on the same feature config; a
model with another one is refused, naming both configs.

Runtime code: imports only numpy and the project's runtime modules.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deploy.detector import Detection, Detector, HopFeed, hop_runner
from deploy.modelfile import INPUT_NAME, OUTPUT_NAME, KwsModel, StreamRun, open_session
from features.errors import ModelError
from features.mfcc import StreamingMfcc


class _Group:
    """Models with the same window and hop (and path: window or streaming), scored together by one merged graph in one session."""

    def __init__(self, detectors: list[Detector]):
        from deploy.onnxgraph import merge_models

        self.detectors = detectors
        model = detectors[0].model
        info, spec = model.info, model.stream
        prefixes = [f"m{i}/" for i in range(len(detectors))]
        self.stacked = spec is not None and self._stack(detectors)
        if spec is None:
            merged = merge_models([d.model.runtime_graph() for d in detectors], INPUT_NAME, prefixes)
            self._merged(model, merged, prefixes, None)
        elif not self.stacked:  # side by side, each model's state its own under its prefix
            merged = merge_models([d.model.stream_graph() for d in detectors], spec.input, prefixes, own_inputs=True)
            self._merged(model, merged, prefixes, [(p + i, p + o, shape) for p, d in zip(prefixes, detectors) for i, o, shape in d.model.stream.states])
        self.feed = HopFeed(info.window_frames, info.hop_frames, info.feature_config.n_mfcc, None if spec is None else spec.pad_frames)

    def _merged(self, model: KwsModel, graph: bytes, prefixes: list[str], states) -> None:
        """The graphs side by side (``merge_models``), one output (and state) per model under its prefix."""
        session = open_session(graph, model.num_threads)
        name = OUTPUT_NAME if model.stream is None else model.stream.output
        outputs = {p + name: (1, len(d.info.labels)) for p, d in zip(prefixes, self.detectors)}
        self.run, self._input, probs = hop_runner(model, session, outputs, states)
        self._scores = [p[1:] for p in probs.values()]  # views: filled in place by every run

    def _stack(self, detectors: list[Detector]) -> bool:
        """Streaming models of one architecture as one stacked graph (``stack_stream_models``); False if they are not."""
        from deploy.onnxgraph import GraphError, stack_stream_models

        model, spec, n = detectors[0].model, detectors[0].model.stream, len(detectors)
        if any(d.model.stream.states != spec.states or len(d.info.labels) != len(model.info.labels) for d in detectors):
            return False
        try:
            session = open_session(stack_stream_models([d.model.stream_graph() for d in detectors], spec.input), model.num_threads)
        except (GraphError, IndexError, ValueError, UnicodeDecodeError):
            return False
        states = [(i, o, (s[0], s[1] * n, *s[2:])) for i, o, s in spec.states]  # model k: channels k*C to (k+1)*C
        n_mfcc = model.info.feature_config.n_mfcc
        self.run = StreamRun(session, {spec.input: (1, n_mfcc, 1, spec.hop_frames)}, {spec.output: (n, len(model.info.labels))}, states)
        self._input = self.run.inputs[spec.input][0, :, 0, :].T  # frames land transposed, as in hop_runner
        probs = self.run.outputs[spec.output]
        self._scores = [probs[k, 1:] for k in range(n)]  # views: filled in place by every run
        return True

    def reset(self) -> None:
        self.feed.reset()
        if isinstance(self.run, StreamRun):
            self.run.reset()

    def update_frames(self, new: np.ndarray) -> list[Detection]:
        detections: list[Detection] = []
        for count, frames, scored in self.feed.push(new):
            self._input[:] = frames
            self.run()
            if scored:
                time_s = self.detectors[0].frame_end_time(count)
                for det, scores in zip(self.detectors, self._scores):
                    detections += det._score_hop(time_s, scores)
        for det in self.detectors:
            det._n_frames = self.feed.n_frames  # what each detector would have counted alone
        return detections


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
        self._mfcc = StreamingMfcc(cfg)
        by_shape: dict[tuple[int, int, bool], list[Detector]] = {}
        for det in self.detectors:
            by_shape.setdefault((det.info.window_frames, det.info.hop_frames, det.model.stream is not None), []).append(det)
        self._groups: list = []  # a _Group per window and hop, or a lone Detector (fed frames directly)
        for dets in by_shape.values():
            self._groups += self._group(dets) if len(dets) > 1 else dets

    @staticmethod
    def _group(dets: list[Detector]) -> list:
        """One merged session for these detectors, or the detectors themselves if their graphs cannot be merged."""
        try:
            return [_Group(dets)]
        except Exception:  # a graph merge_models cannot read, or one ONNX Runtime refuses: each model runs alone
            return dets

    @property
    def keywords(self) -> tuple[str, ...]:
        """All keywords, model by model (a keyword two models share appears twice)."""
        return tuple(k for det in self.detectors for k in det.keywords)

    def reset(self) -> None:
        """Forget all audio and detector state: the next chunk starts a new stream."""
        self._mfcc.reset()
        for det in self.detectors:
            det.reset()
        for group in self._groups:
            group.reset()

    def update(self, chunk: np.ndarray) -> list[Detection]:
        """Feed audio (float32, 16 kHz mono, any length); return every model's detections it completes."""
        frames = self._mfcc.push(chunk)
        if len(frames) == 0:
            return []
        detections: list[Detection] = []
        for group in self._groups:
            detections += group.update_frames(frames)
        detections.sort(key=lambda d: d.time_s)
        return detections

    def process(self, audio: np.ndarray, chunk_size: int = 1600) -> list[Detection]:
        """Run a whole signal through ``update`` in chunks; the detectors are reset first."""
        self.reset()
        detections: list[Detection] = []
        for start in range(0, len(audio), chunk_size):
            detections += self.update(audio[start : start + chunk_size])
        return detections
