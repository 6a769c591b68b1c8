"""Opening an exported model: one ONNX file whose metadata carries everything the runtime needs.

Part of the runtime: imports only numpy and onnxruntime (and the pure-python
feature config). Metadata values are strings (ONNX ``metadata_props``); the
structured ones are JSON. ``kws_format`` marks a file made by ``kws export``;
any other ONNX file is refused with a message that says so.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features.config import FeatureConfig
from features.errors import ModelError, first_line

FORMAT = "kws-onnx-1"
INPUT_NAME = "mfcc"  # float32 (batch, window_frames, n_mfcc)
OUTPUT_NAME = "probs"  # float32 (batch, n_labels), softmax; index 0 is "negative"


@dataclass(frozen=True)
class ModelInfo:
    """What the runtime reads from a model's metadata."""

    labels: tuple[str, ...]  # labels[0] is the non-keyword class
    feature_config: FeatureConfig
    window_frames: int  # MFCC frames the classifier sees
    hop_frames: int  # frames between two scorings of the window
    threshold: float  # on the smoothed score, "at or above" fires
    smoothing: int  # scores averaged (moving mean over hops)
    refractory_s: float  # quiet time after a detection, seconds
    data_digest: str
    metadata: dict  # every metadata entry, decoded where it is JSON

    @property
    def keywords(self) -> tuple[str, ...]:
        return self.labels[1:]

    @property
    def hop_s(self) -> float:
        return self.hop_frames * self.feature_config.hop_s

    @property
    def window_s(self) -> float:
        cfg = self.feature_config
        return cfg.samples_for_frames(self.window_frames) / cfg.sample_rate

    @classmethod
    def from_metadata(cls, meta: dict[str, str], path: Path) -> "ModelInfo":
        if meta.get("kws_format") != FORMAT:
            found = f"kws_format={meta['kws_format']!r}" if "kws_format" in meta else "no kws metadata"
            raise ModelError(f"{path}: an ONNX model, but not one made by 'kws export' ({found})")
        decoded = {}
        for key, value in meta.items():
            try:
                decoded[key] = json.loads(value)
            except json.JSONDecodeError:
                decoded[key] = value
        try:
            return cls(
                labels=tuple(decoded["labels"]),
                feature_config=FeatureConfig.from_dict(decoded["feature_config"]),
                window_frames=int(decoded["window_frames"]),
                hop_frames=int(decoded["hop_frames"]),
                threshold=float(decoded["threshold"]),
                smoothing=int(decoded["smoothing"]),
                refractory_s=float(decoded["refractory_s"]),
                data_digest=str(decoded["data_digest"]),
                metadata=decoded,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{path}: kws metadata is incomplete or invalid ({exc})") from None


def session_options(num_threads: int = 1):
    """ONNX Runtime options for a listener: one intra-op thread (the calling one), errors-only logging.

    With one intra-op thread ONNX Runtime creates no thread pool, so there is
    no pool to spin. The other usual knobs were measured on the demo model and
    left at their defaults because they changed nothing: the CPU memory arena
    and memory pattern off (peak RSS 71.5 MiB either way, CPU per hop within
    noise), sequential execution mode (already the default), and the
    ``allow_spinning`` entries (no pool).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: a user's terminal is not a log
    return options


def runtime_graph(raw: bytes) -> bytes:
    """The graph ONNX Runtime should run for a model file: 1-D convolutions as 2-D ones where that applies.

    ``deploy.onnxgraph.conv1d_as_conv2d`` explains why (ONNX Runtime's 2-D
    convolution kernels are much faster for the same arithmetic); a graph it
    does not apply to runs as it is.
    """
    from deploy.onnxgraph import GraphError, conv1d_as_conv2d

    try:
        return conv1d_as_conv2d(raw)
    except (GraphError, IndexError, UnicodeDecodeError):
        return raw


def stored_metadata(raw: bytes) -> dict[str, str] | None:
    """The metadata of an ONNX file's bytes, read without ONNX Runtime (``deploy.onnxgraph``); None if they cannot be read."""
    from deploy.onnxgraph import GraphError, Message, metadata

    try:
        return metadata(Message.parse(raw))
    except (GraphError, IndexError, UnicodeDecodeError):
        return None


def open_session(graph: bytes | str, num_threads: int = 1):
    import onnxruntime as ort

    return ort.InferenceSession(graph, session_options(num_threads), providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class StreamSpec:
    """How to run a model's streaming graph (the ``stream`` metadata ``deploy.export`` writes).

    Per hop: ``hop_frames`` new MFCC frames into ``input`` ``(1, n_mfcc, 1,
    hop_frames)`` (transposed: the layout of its first convolution), each state ``(input name, output name, shape)`` fed with what
    the previous hop output (zeros at the start), ``output`` the window
    probabilities. A stream starts after ``pad_frames`` zero frames, so hops
    end where the window detector's do; scores before a full window are not
    used.
    """

    input: str
    output: str
    hop_frames: int
    pad_frames: int
    states: tuple[tuple[str, str, tuple[int, ...]], ...]

    @classmethod
    def from_dict(cls, d: dict) -> "StreamSpec":
        states = tuple((str(i), str(o), tuple(int(x) for x in shape)) for i, o, shape in d["states"])
        return cls(str(d["input"]), str(d["output"]), int(d["hop_frames"]), int(d["pad_frames"]), states)


class KwsModel:
    """An exported model ready to score MFCC windows with ONNX Runtime.

    One intra-op thread by default: a listener shares the device with other
    work, and the per-hop model is too small to gain from more. The session
    runs ``runtime_graph`` of the file (the same function, faster kernels);
    ``optimize=False`` runs the file's graph exactly as stored.

    A model with a streaming graph (``stream`` and ``stream_graph`` in its
    metadata) opens that graph in ``stream_session``, and ``stream`` says how
    to run it (``Detector`` then streams with carried state); its window
    graph opens only when ``session`` is first used (``predict``, merging),
    so a listener does not hold it. ``stream=False`` ignores the streaming
    graph, leaving ``stream`` None (window scoring only).
    """

    def __init__(self, path: str | Path, num_threads: int = 1, optimize: bool = True, stream: bool = True):
        self.path = Path(path)
        self.num_threads = num_threads
        if not self.path.is_file():
            raise ModelError(f"{self.path}: model file not found")
        raw = self.path.read_bytes()
        self._optimize, self._session = optimize, None
        self.optimized = False
        meta = stored_metadata(raw) if stream else None
        if meta is not None and "stream" in meta and meta.get("kws_format") == FORMAT:
            self.info = ModelInfo.from_metadata(meta, self.path)  # the window graph opens on first use (``session``)
        else:
            self._open_window(raw)
            self.info = ModelInfo.from_metadata(self._session.get_modelmeta().custom_metadata_map, self.path)
        self.stream: StreamSpec | None = None
        self.stream_session = None
        if stream and "stream" in self.info.metadata:
            try:
                self.stream = StreamSpec.from_dict(self.info.metadata["stream"])
                self.stream_session = open_session(self.stream_graph(), num_threads)
            except Exception as exc:
                raise ModelError(f"{self.path}: its streaming graph is missing or unreadable ({first_line(exc)})") from None
            if self.stream.hop_frames != self.info.hop_frames:
                raise ModelError(f"{self.path}: streaming graph for a hop of {self.stream.hop_frames} frames, metadata says {self.info.hop_frames}")

    @property
    def session(self):
        """The window graph's session (opened on first use for a streaming model, whose detector does not need it)."""
        if self._session is None:
            self._open_window(self.path.read_bytes())
        return self._session

    def _open_window(self, raw: bytes) -> None:
        graph = runtime_graph(raw) if self._optimize else raw
        try:
            session = open_session(graph, self.num_threads)
        except Exception as exc:
            if graph is not raw:  # a rewrite ONNX Runtime refuses: run the stored graph instead
                self._optimize = False
                return self._open_window(raw)
            raise ModelError(f"{self.path}: not a readable ONNX model ({first_line(exc)})") from None
        meta = session.get_modelmeta().custom_metadata_map
        if meta.get("kws_format") != FORMAT:
            ModelInfo.from_metadata(meta, self.path)  # raises: a foreign model is named as such before its inputs are checked
        inputs = [i.name for i in session.get_inputs()]
        if inputs != [INPUT_NAME]:
            raise ModelError(f"{self.path}: expected one input named {INPUT_NAME!r}, found {inputs}")
        self._session, self.optimized = session, graph is not raw

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Probabilities ``(batch, n_labels)`` for MFCC windows ``(batch, window_frames, n_mfcc)``."""
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(windows, dtype=np.float32)})[0]

    def stream_graph(self) -> bytes:
        """The streaming graph ``stream_session`` runs (for merging several streaming models into one session)."""
        return base64.b64decode(self.info.metadata["stream_graph"])

    def runtime_graph(self) -> bytes:
        """The graph this model's session runs (for merging several models into one session)."""
        assert self.session is not None  # opened, so ``optimized`` says which graph it runs
        raw = self.path.read_bytes()
        return runtime_graph(raw) if self.optimized else raw


class BoundRun:
    """One ``session.run`` per call into arrays allocated once: the per-hop call of a listener.

    The input and output arrays are bound to the session through an
    ``IOBinding`` by address, so a call allocates nothing in Python and
    copies nothing across the binding: fill ``inputs[name]`` in place, call,
    read ``outputs[name]``. The arrays must stay alive and in place (they are
    owned here).
    """

    def __init__(self, session, input_shapes: dict[str, tuple[int, ...]], output_shapes: dict[str, tuple[int, ...]],
                 arrays: dict[str, np.ndarray] | None = None):
        self.session = session
        arrays = arrays or {}  # arrays to bind by name instead of new ones (owned by the caller)
        self.inputs = {k: arrays[k] if k in arrays else np.zeros(s, np.float32) for k, s in input_shapes.items()}
        self.outputs = {k: arrays[k] if k in arrays else np.zeros(s, np.float32) for k, s in output_shapes.items()}
        self.binding = session.io_binding()
        for name, arr in self.inputs.items():
            self.binding.bind_input(name, "cpu", 0, np.float32, list(arr.shape), arr.ctypes.data)
        for name, arr in self.outputs.items():
            self.binding.bind_output(name, "cpu", 0, np.float32, list(arr.shape), arr.ctypes.data)

    def __call__(self) -> None:
        self.session.run_with_iobinding(self.binding)


class StreamRun:
    """One hop of a streaming graph per call, its state carried from call to call without copies or allocation.

    Two ``BoundRun`` over the same session share the input and output arrays
    (``inputs``, ``outputs``: fill and read them as with ``BoundRun``) and
    swap two sets of state arrays: one reads set A and writes set B, the next
    call the reverse. ``states`` are ``(input name, output name, shape)``;
    ``reset`` zeroes them (a new stream).
    """

    def __init__(self, session, input_shapes: dict[str, tuple[int, ...]], output_shapes: dict[str, tuple[int, ...]],
                 states: list[tuple[str, str, tuple[int, ...]]] | tuple):
        shared = {k: np.zeros(s, np.float32) for k, s in {**input_shapes, **output_shapes}.items()}
        sets = [[np.zeros(shape, np.float32) for _, _, shape in states] for _ in range(2)]
        self._state_arrays = sets[0] + sets[1]
        self._runs = []
        for a, b in ((sets[0], sets[1]), (sets[1], sets[0])):
            arrays = {**shared, **{i: x for (i, _, _), x in zip(states, a)}, **{o: y for (_, o, _), y in zip(states, b)}}
            self._runs.append(BoundRun(
                session, {**input_shapes, **{i: s for i, _, s in states}}, {**output_shapes, **{o: s for _, o, s in states}}, arrays
            ))
        self.inputs = {k: shared[k] for k in input_shapes}
        self.outputs = {k: shared[k] for k in output_shapes}
        self._next = 0

    def reset(self) -> None:
        for x in self._state_arrays:
            x.fill(0.0)
        self._next = 0

    def __call__(self) -> None:
        self._runs[self._next]()
        self._next ^= 1
