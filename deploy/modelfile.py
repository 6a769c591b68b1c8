"""Opening an exported model: one ONNX file whose metadata carries everything the runtime needs.

Part of the runtime: imports only numpy and onnxruntime (and the pure-python
feature config). Metadata values are strings (ONNX ``metadata_props``); the
structured ones are JSON. ``kws_format`` marks a file made by ``kws export``;
any other ONNX file is refused with a message that says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features.config import FeatureConfig
from features.errors import ModelError

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


class KwsModel:
    """An exported model ready to score MFCC windows with ONNX Runtime.

    One intra-op thread by default: a listener shares the device with other
    work, and the per-hop model is too small to gain from more.
    """

    def __init__(self, path: str | Path, num_threads: int = 1):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: model file not found")
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: a user's terminal is not a log
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{self.path}: not a readable ONNX model ({first})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.info = ModelInfo.from_metadata(meta, self.path)
        inputs = [i.name for i in self.session.get_inputs()]
        if inputs != [INPUT_NAME]:
            raise ModelError(f"{self.path}: expected one input named {INPUT_NAME!r}, found {inputs}")

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Probabilities ``(batch, n_labels)`` for MFCC windows ``(batch, window_frames, n_mfcc)``."""
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(windows, dtype=np.float32)})[0]
