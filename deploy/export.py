"""Checkpoint to one ONNX file: the classifier, its metadata, and a check that it still agrees.

The exported graph maps an MFCC window ``(batch, window_frames, n_mfcc)`` to
softmax probabilities ``(batch, n_labels)``; the MFCC itself is computed by the
runtime in numpy (``features.mfcc``), from the feature config stored in the
metadata. Before the file is written under its final name, ONNX Runtime and
PyTorch score the same real clips and must agree within ``tolerance``;
otherwise the export fails loudly and nothing is left behind.

A streaming model (``DSCNN(padding="valid")``, ``train.models.DSCNNStream``)
gets a second graph in the same file: one hop's new frames and the carried
state in, the window probabilities and the new state out. It is stored in the
metadata (``stream``: names, shapes and start padding; ``stream_graph``: the
ONNX bytes, base64), and before the file is written the streaming detector
and the window detector score the same real stream (the check clips one
after another), which must agree within ``tolerance`` at every hop. The
window graph stays the model's main graph: ``KwsModel.predict`` and
anything that scores windows in batches use it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from collect.manifest import load_rows
from features.audio import center_in_window, load_audio
from features.config import FeatureConfig
from features.errors import ConfigError, ModelError
from features.mfcc import Mfcc
from deploy.modelfile import FORMAT, INPUT_NAME, OUTPUT_NAME, KwsModel
from deploy.modelcard import write_model_card
from train.checkpoint import load_checkpoint
from train.models import count_parameters

log = logging.getLogger("kws")


@contextmanager
def quiet_exporter():
    """Silence what the ONNX exporter says on every export and a user cannot act on.

    torch warns that torchvision's operators are not registered (we use
    none), and a deprecation inside torch.export; onnxscript's optimiser and
    onnx_ir's passes log each step at INFO. Real export failures still raise.
    """
    levels = {"torch.onnx._internal.exporter._registration": logging.ERROR, "onnxscript": logging.WARNING, "onnx_ir": logging.WARNING}
    before = {name: logging.getLogger(name).level for name in levels}
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*LeafSpec.*")
            yield
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)

AGREEMENT_TOLERANCE = 1e-4  # max |p_onnx - p_torch| on any class of any check window
# What a checkpoint may record about how its weights came to be, beyond its training; carried into the metadata when present:
# train.adapt_norm's statistics adaptation, train.interpolate's weight interpolation.
PROVENANCE = ("norm_adaptation", "interpolation")


class _WithSoftmax(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=-1)


def check_windows(ckpt: dict, check_audio: list[Path] | None, limit: int = 48) -> np.ndarray:
    """Real MFCC windows to compare PyTorch and ONNX on: given files, else clips of the training dataset."""
    cfg = FeatureConfig.from_dict(ckpt["feature_config"])
    clips = [center_in_window(load_audio(p), ckpt["window_samples"]) for p in check_paths(ckpt, check_audio, limit)]
    return Mfcc(cfg)(np.stack(clips))


def check_stream(ckpt: dict, check_audio: list[Path] | None, limit: int = 48) -> np.ndarray:
    """A real stream to compare streaming and window scoring on: the check clips one after another, 0.3 s apart."""
    gap = np.zeros(int(0.3 * FeatureConfig.from_dict(ckpt["feature_config"]).sample_rate), np.float32)
    return np.concatenate([np.concatenate([load_audio(p), gap]) for p in check_paths(ckpt, check_audio, limit)])


def check_paths(ckpt: dict, check_audio: list[Path] | None, limit: int) -> list[Path]:
    """The real clips an export is checked on: given files, else ``limit`` clips of the training dataset."""
    if check_audio:
        paths = list(check_audio)
    else:
        dataset = Path(ckpt["dataset"])
        if not dataset.is_dir():
            raise ModelError(
                f"cannot check the export: the training dataset {dataset} is not here; "
                "pass real clips to compare on with --check-audio"
            )
        rows = load_rows(dataset)
        rng = np.random.default_rng(0)
        picked = rng.choice(len(rows), size=min(limit, len(rows)), replace=False)
        paths = [dataset / rows[i].path for i in sorted(picked)]
    return paths[:limit]


def data_counts(ckpt: dict) -> dict:
    """Clips per accent, split and kind (keyword / other) of the training dataset, for the model card."""
    dataset = Path(ckpt["dataset"])
    if not dataset.is_dir():
        return {}
    split_of = {spk: name for name, spks in ckpt.get("splits", {}).items() for spk in spks}
    keywords = set(ckpt["labels"][1:])
    counts: dict = {}
    for row in load_rows(dataset):
        split = split_of.get(row.speaker)
        if split is None:
            continue
        kind = "keyword" if row.label in keywords else "other"
        per_split = counts.setdefault(row.accent, {}).setdefault(split, {})
        per_split[kind] = per_split.get(kind, 0) + 1
    return counts


def export_model(
    checkpoint: str | Path,
    out_path: str | Path | None = None,
    *,
    threshold: float | None = None,
    target_fa_per_hour: float = 1.0,
    smoothing: int = 3,
    refractory_s: float = 1.0,
    hop_frames: int = 8,
    check_audio: list[Path] | None = None,
    tolerance: float = AGREEMENT_TOLERANCE,
    int8: bool = False,
    progress: bool = True,
) -> Path:
    """Export a training checkpoint to ``out_path`` (default: ``model.onnx`` beside it) and write its card.

    Returns the model path. Raises ``ModelError`` if ONNX Runtime and PyTorch
    disagree by more than ``tolerance`` on real inputs. Without a
    ``threshold``, the operating threshold is chosen for ``target_fa_per_hour``
    on the validation speakers of the training dataset (``deploy.calibrate``). With ``int8``, also
    writes ``<stem>.int8.onnx`` (``deploy.quantize``), compared with the float
    model on the test speakers' clips, and records the comparison in both
    files' metadata and cards. ``progress``: show the calibration's progress bar.
    """
    checkpoint = Path(checkpoint)
    model, ckpt = load_checkpoint(checkpoint)
    out_path = Path(out_path) if out_path else checkpoint.with_name("model.onnx")
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise ModelError(f"threshold must be between 0 and 1, got {threshold}")
    if threshold is None and not Path(ckpt["dataset"]).is_dir():
        raise ModelError(
            f"cannot choose a threshold: the training dataset {ckpt['dataset']} is not here; pass --threshold"
        )
    if hop_frames < 1 or smoothing < 1 or refractory_s < 0:
        raise ModelError("hop_frames and smoothing must be at least 1, refractory_s not negative")
    window_frames = int(ckpt["window_frames"])
    n_mfcc = int(ckpt["feature_config"]["n_mfcc"])
    wrapped = _WithSoftmax(model).eval()

    metadata = {
        "kws_format": FORMAT,
        "labels": json.dumps(ckpt["labels"]),
        "feature_config": json.dumps(ckpt["feature_config"], sort_keys=True),
        "window_frames": str(window_frames),
        "hop_frames": str(hop_frames),
        "threshold": repr(float(0.5 if threshold is None else threshold)),  # replaced by calibration when None
        "smoothing": str(smoothing),
        "refractory_s": repr(float(refractory_s)),
        "data_digest": ckpt["data_digest"],
        "dataset": json.dumps(str(ckpt["dataset"])),
        "model_name": ckpt["model_name"],
        "model_args": json.dumps(ckpt["model_args"], sort_keys=True),
        "n_parameters": str(count_parameters(model)),
        "seed": str(ckpt["seed"]),
        "train_config": json.dumps(ckpt["train_config"], sort_keys=True),
        "val_metrics": json.dumps(ckpt.get("val_metrics", {}), sort_keys=True),
        "splits": json.dumps(ckpt.get("splits", {}), sort_keys=True),
        "data_counts": json.dumps(data_counts(ckpt), sort_keys=True),
    }
    for key in PROVENANCE:
        if ckpt.get(key):
            metadata[key] = json.dumps(ckpt[key], sort_keys=True)
    streaming = getattr(model, "padding", None) == "valid"
    if streaming:
        if int8:
            raise ModelError(
                "--int8 is not supported for a streaming model: its streaming graph would stay float32 "
                "(and be calibrated apart from the window graph); export it without --int8"
            )
        graph, spec = stream_graph(model, window_frames, hop_frames)
        metadata["stream"] = json.dumps(spec, sort_keys=True)
        metadata["stream_graph"] = base64.b64encode(graph).decode("ascii")

    windows = check_windows(ckpt, check_audio)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=".export-", suffix=".onnx")
    os.close(fd)
    try:
        _write_onnx(wrapped, window_frames, n_mfcc, metadata, Path(tmp))
        with torch.no_grad():
            expected = wrapped(torch.from_numpy(windows)).numpy()
        got = KwsModel(tmp).predict(windows)
        diff = float(np.max(np.abs(got - expected)))
        if not diff <= tolerance:
            raise ModelError(
                f"export check failed: ONNX and PyTorch differ by {diff:.2e} on real clips "
                f"(tolerance {tolerance:.0e}); {out_path} was not written"
            )
        if streaming:
            stream_diff, hops = check_streaming(Path(tmp), check_stream(ckpt, check_audio))
            if not stream_diff <= tolerance:
                raise ModelError(
                    f"export check failed: streaming and window scores differ by {stream_diff:.2e} on a real stream "
                    f"of {hops} hops (tolerance {tolerance:.0e}); {out_path} was not written"
                )
            log.info("export check: streaming vs window max |diff| %.2e over %d hops of a real stream", stream_diff, hops)
        os.replace(tmp, out_path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    log.info("export check: ONNX vs PyTorch max |diff| %.2e on %d real windows (tolerance %.0e)", diff, len(windows), tolerance)
    write_model_card(out_path)
    if threshold is None:
        from deploy.calibrate import calibrate_threshold

        calibrate_threshold(out_path, ckpt["dataset"], target_fa_per_hour=target_fa_per_hour, seed=int(ckpt["seed"]),
                            progress=progress)
    if int8:
        from deploy.quantize import add_int8

        add_int8(out_path, calibration_audio=check_audio)
    return out_path


def _write_onnx(model: torch.nn.Module, window_frames: int, n_mfcc: int, metadata: dict[str, str], path: Path) -> None:
    import onnx

    example = torch.zeros(1, window_frames, n_mfcc)
    with quiet_exporter():
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch", max=4096)},),
            verbose=False,
        )
    proto = program.model_proto
    for key, value in metadata.items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


STREAM_INPUT = "frames"  # float32 (1, n_mfcc, 1, hop_frames): the new frames of one hop, transposed


def stream_graph(model: torch.nn.Module, window_frames: int, hop_frames: int) -> tuple[bytes, dict]:
    """The streaming ONNX graph of a valid-padding DS-CNN and what the runtime needs to run it (the ``stream`` metadata)."""
    from train.models import DSCNNStream

    try:
        stream = DSCNNStream(model, window_frames, hop_frames).eval()
    except ConfigError as exc:
        raise ModelError(f"cannot export the streaming graph: {exc}") from None
    shapes = stream.state_shapes()
    states = [[f"state_in_{i}", f"state_out_{i}", list(s)] for i, s in enumerate(shapes)]

    class WithSoftmax(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stream = stream

        def forward(self, frames, *state):
            logits, *new = self.stream(frames, *state)
            return (torch.softmax(logits, dim=-1), *new)

    example = (torch.zeros(stream.input_shape()), *[torch.zeros(s) for s in shapes])
    with quiet_exporter():
        program = torch.onnx.export(
            WithSoftmax().eval(), example, dynamo=True, verbose=False,
            input_names=[STREAM_INPUT] + [s[0] for s in states], output_names=[OUTPUT_NAME] + [s[1] for s in states],
        )
    spec = {"input": STREAM_INPUT, "output": OUTPUT_NAME, "hop_frames": hop_frames, "pad_frames": stream.pad_frames, "states": states}
    return program.model_proto.SerializeToString(), spec


def check_streaming(path: Path, audio: np.ndarray) -> tuple[float, int]:
    """Max |difference| between the streaming and the window detector's scores over ``audio``, and the hops compared."""
    from deploy.detector import Detector

    scores = []
    for stream in (True, False):
        det = Detector(KwsModel(path, stream=stream), record_scores=True)
        if (det.model.stream is not None) != stream:
            raise ModelError(f"{path}: the streaming graph could not be opened")
        det.process(audio)
        scores.append(np.stack(det.scores))
    if scores[0].shape != scores[1].shape or len(scores[0]) == 0:
        return float("inf"), len(scores[1])
    return float(np.max(np.abs(scores[0] - scores[1]))), len(scores[1])


def update_metadata(path: str | Path, updates: dict[str, str]) -> None:
    """Set metadata entries of an exported model in place (atomically: temp file, then rename)."""
    import onnx

    path = Path(path)
    proto = onnx.load(str(path))
    kept = [p for p in proto.metadata_props if p.key not in updates]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept + [onnx.StringStringEntryProto(key=k, value=v) for k, v in updates.items()])
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".meta-", suffix=".onnx")
    os.close(fd)
    try:
        onnx.save(proto, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
