"""Post-training static int8 quantisation of an exported model, calibrated on real training clips, and its check.

``kws export --int8`` runs this after the float export. ONNX Runtime's
static quantiser (QDQ format, per-channel int8 weights, uint8 activations)
needs the range of every activation; those come from MFCC windows of the
model's own *training* clips (``CalibrationDataReader``), never from its test
clips, and include both clips centred in the window and windows taken every
hop from a stream of clips, which is what the detector really feeds the model.
Weights are quantised to 7 bits (``reduce_range``): x86 CPUs without VNNI
saturate 8-bit products, and the file must run on any machine.

The quantised model is then held to the float one on the *test* speakers'
clips, streamed through the real ``Detector``: false-reject rate (FRR) and
false accepts per hour (FA/h) of both, the int8 FRR at the same FA/h as the
float model (threshold re-chosen on its own scores), and how many detections
the two share. Int8 is recommended as the model to deploy only if it loses
less than one point of FRR at the same FA/h (``INT8_MAX_FRR_LOSS``). Both files
carry the comparison in their metadata (``int8_eval``).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features.config import FeatureConfig
from features.errors import ModelError

log = logging.getLogger("kws")

INT8_MAX_FRR_LOSS = 0.01  # int8 may lose less than one point of FRR at the same FA/h to be the default
MATCH_TOLERANCE_S = 0.25  # an int8 and a float detection this close are the same detection
DETECTION_WINDOW_S = 2.0  # a detection up to this long after a keyword's end detects it
QUANTIZED_OPS = ["Conv", "Gemm", "MatMul"]  # the multiply-accumulate operators; softmax and norms stay float


def int8_path(float_path: Path) -> Path:
    """Where the int8 model of ``model.onnx`` goes: ``model.int8.onnx`` (``kws bench`` looks there too)."""
    return float_path.with_name(float_path.stem + ".int8.onnx")


@dataclass
class EvalStream:
    """Clips played one after the other, with the keyword intervals known."""

    audio: np.ndarray
    keywords: list[tuple[float, float]]  # (start_s, end_s) of every keyword clip
    n_clips: int


def _clips(meta: dict, split: str, audio_files: list[Path] | None, limit: int, seed: int) -> tuple[list[np.ndarray], list[bool], str]:
    """Audio and is-keyword flags of up to ``limit`` clips of ``split``'s speakers (or of the given files)."""
    from features.audio import load_audio

    if audio_files:
        files = list(audio_files)[:limit]
        return [load_audio(p, allow_silence=True) for p in files], [False] * len(files), f"{len(files)} given files"
    from collect.manifest import load_rows

    dataset = Path(meta.get("dataset") or "")
    if not dataset.is_dir():
        raise ModelError(
            f"cannot quantise: the training dataset {dataset} is not here, and int8 calibration needs real clips; "
            "pass clips with --check-audio"
        )
    rows = load_rows(dataset)
    speakers = set((meta.get("splits") or {}).get(split) or [])
    picked = [r for r in rows if r.speaker in speakers]
    note = f"the {split} split"
    if not picked:
        picked, note = rows, f"the whole dataset (the model records no {split} split)"
    rng = np.random.default_rng(seed)
    idx = sorted(rng.choice(len(picked), size=min(limit, len(picked)), replace=False))
    keywords = set(meta["labels"][1:])
    clips = [load_audio(dataset / picked[i].path, allow_silence=True) for i in idx]
    return clips, [picked[i].label in keywords for i in idx], f"{len(idx)} clips of {note}"


def make_eval_stream(clips: list[np.ndarray], is_keyword: list[bool], seed: int = 0, sample_rate: int = 16000) -> EvalStream:
    """The clips in a random order with 0.3-1.0 s of faint noise between them; keyword times recorded."""
    rng = np.random.default_rng(seed)
    pieces, keywords, t = [], [], 0
    for i in rng.permutation(len(clips)):
        gap = rng.standard_normal(int(sample_rate * rng.uniform(0.3, 1.0))).astype(np.float32) * 1e-4
        clip = np.asarray(clips[i], np.float32)
        pieces += [gap, clip]
        t += len(gap)
        if is_keyword[i]:
            keywords.append((t / sample_rate, (t + len(clip)) / sample_rate))
        t += len(clip)
    pieces.append(np.zeros(sample_rate, np.float32))  # one quiet second so the last keyword can be detected
    return EvalStream(np.concatenate(pieces), keywords, len(clips))


class WindowReader:
    """``CalibrationDataReader`` over MFCC windows: one window per ``get_next`` call, then None."""

    def __init__(self, windows: np.ndarray, input_name: str):
        self.windows = windows.astype(np.float32)
        self.input_name = input_name
        self.rewind()

    def get_next(self):
        if self.i >= len(self.windows):
            return None
        self.i += 1
        return {self.input_name: self.windows[self.i - 1 : self.i]}

    def rewind(self) -> None:
        self.i = 0


def calibration_windows(cfg: FeatureConfig, window_frames: int, hop_frames: int, clips: list[np.ndarray], limit: int = 400, seed: int = 0) -> np.ndarray:
    """Clips centred in the window, plus every hop's window over a stream of the same clips (what the detector sees)."""
    from features.audio import center_in_window
    from features.mfcc import Mfcc, hop_windows

    mfcc = Mfcc(cfg)
    n = cfg.samples_for_frames(window_frames)
    centred = mfcc(np.stack([center_in_window(c, n) for c in clips]))
    stream = make_eval_stream(clips, [False] * len(clips), seed=seed, sample_rate=cfg.sample_rate)
    windows = np.concatenate([centred, hop_windows(mfcc(stream.audio), window_frames, hop_frames)])
    rng = np.random.default_rng(seed)
    if len(windows) > limit:
        windows = windows[np.sort(rng.choice(len(windows), size=limit, replace=False))]
    return windows


def stream_scores(model_path: Path, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, object]:
    """Every hop's time and raw keyword scores of ``model_path`` over ``audio``, through the real detector."""
    from deploy.detector import Detector
    from deploy.modelfile import KwsModel

    det = Detector(KwsModel(model_path), record_scores=True)
    det.process(audio)
    return np.asarray(det.times), np.stack(det.scores) if det.scores else np.zeros((0, len(det.keywords))), det


def frr_fa(times: np.ndarray, scores: np.ndarray, det, threshold: float, stream: EvalStream) -> dict:
    """FRR and false accepts of the first keyword's scores at ``threshold`` (replayed: smoothing and refractory as the detector)."""
    from deploy.detector import fire_indices, smooth

    fired = times[fire_indices(smooth(scores[:, 0], det.smoothing), threshold, det.refractory_hops)]
    hit = np.zeros(len(stream.keywords), bool)
    false = 0
    for t in fired:
        for k, (s, e) in enumerate(stream.keywords):
            if s <= t <= e + DETECTION_WINDOW_S:
                hit[k] = True
                break
        else:
            false += 1
    hours = len(stream.audio) / det.info.feature_config.sample_rate / 3600
    return {
        "threshold": float(threshold),
        "frr": float(1 - hit.mean()) if len(hit) else None,
        "false_accepts": int(false),
        "fa_per_hour": false / hours,
        "detections": [float(t) for t in fired],
    }


def matched(a: list[float], b: list[float], tol: float = MATCH_TOLERANCE_S) -> int:
    """How many detections of ``a`` have a distinct detection of ``b`` within ``tol`` seconds."""
    used, n = set(), 0
    for t in a:
        for j, u in enumerate(b):
            if j not in used and abs(t - u) <= tol:
                used.add(j)
                n += 1
                break
    return n


def _at_fa(times, scores, det, stream: EvalStream, max_false: int) -> dict | None:
    """The lowest threshold (0.01 steps) with at most ``max_false`` false accepts, and its FRR."""
    for t in np.round(np.arange(0.01, 1.0, 0.01), 2):
        r = frr_fa(times, scores, det, float(t), stream)
        if r["false_accepts"] <= max_false:
            return r
    return None


def compare(float_path: Path, int8: Path, stream: EvalStream) -> dict:
    """Float and int8 on the same stream: FRR and FA/h of each at the model's threshold and at the same FA/h, shared detections."""
    tf, sf, det_f = stream_scores(float_path, stream.audio)
    ti, si, det_i = stream_scores(int8, stream.audio)
    if len(tf) != len(ti) or not np.allclose(tf, ti):
        raise ModelError("int8 and float models score different hops: their windows or hops differ")
    thr = det_f.threshold
    f = frr_fa(tf, sf, det_f, thr, stream)
    same_thr = frr_fa(ti, si, det_i, thr, stream)
    # At the same false-accept budget (float's at its threshold), each model at its own best threshold: a DET-curve point.
    f_same = _at_fa(tf, sf, det_f, stream, f["false_accepts"]) or f
    same_fa = _at_fa(ti, si, det_i, stream, f["false_accepts"]) or same_thr
    n_f, n_i = len(f["detections"]), len(same_thr["detections"])
    shared = matched(f["detections"], same_thr["detections"])
    loss = None if f_same["frr"] is None or same_fa["frr"] is None else same_fa["frr"] - f_same["frr"]
    return {
        "stream_s": len(stream.audio) / det_f.info.feature_config.sample_rate,
        "keywords": len(stream.keywords),
        "float": {k: v for k, v in f.items() if k != "detections"},
        "int8_same_threshold": {k: v for k, v in same_thr.items() if k != "detections"},
        "float_same_fa": {k: v for k, v in f_same.items() if k != "detections"},
        "int8_same_fa": {k: v for k, v in same_fa.items() if k != "detections"},
        "frr_loss_at_same_fa": loss,
        "score_max_abs_diff": float(np.max(np.abs(sf - si))) if len(sf) else 0.0,
        "score_mean_abs_diff": float(np.mean(np.abs(sf - si))) if len(sf) else 0.0,
        "detections_float": n_f,
        "detections_int8": n_i,
        "detections_shared": shared,
        "match_tolerance_s": MATCH_TOLERANCE_S,
        "int8_default": loss is not None and loss < INT8_MAX_FRR_LOSS,
    }


def _set_metadata(path: Path, entries: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in entries.items():
        if key in existing:
            existing[key].value = value
        else:
            proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    tmp = path.with_name(f".{path.name}.tmp")
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)


def quantize_model(
    float_path: str | Path,
    out_path: str | Path | None = None,
    *,
    calibration_audio: list[Path] | None = None,
    eval_audio: list[Path] | None = None,
    calibration_clips: int = 120,
    eval_clips: int = 200,
    seed: int = 0,
) -> tuple[Path, dict]:
    """Quantise ``float_path`` to ``out_path`` (default ``<stem>.int8.onnx``); return it and the float/int8 comparison.

    Calibration uses the training split's clips named in the model's metadata
    (or ``calibration_audio``); the comparison uses the test split's
    (or ``eval_audio``). Both files get the comparison as ``int8_eval`` metadata.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    from deploy.modelfile import INPUT_NAME, KwsModel

    float_path = Path(float_path)
    out = Path(out_path) if out_path else int8_path(float_path)
    info = KwsModel(float_path).info
    meta = info.metadata
    if str(meta.get("quantization", "float32")) != "float32":
        raise ModelError(f"{float_path}: already quantised ({meta['quantization']}); quantise the float model")
    if "stream" in meta:
        raise ModelError(
            f"{float_path}: a streaming model; int8 is not supported for it yet (its streaming graph, which the detector "
            "runs, would stay float32 and the int8 window graph would no longer match it); use the float model"
        )
    cfg = info.feature_config

    calib, _, calib_note = _clips(meta, "train", calibration_audio, calibration_clips, seed)
    windows = calibration_windows(cfg, info.window_frames, info.hop_frames, calib, seed=seed)
    with tempfile.TemporaryDirectory(prefix="kws-int8-", dir=out.parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        staged = Path(tmp) / "int8.onnx"
        quant_pre_process(str(float_path), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(staged),
            WindowReader(windows, INPUT_NAME),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=QUANTIZED_OPS,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        # The quantiser keeps the graph but not our metadata: carry every entry over, then mark it.
        _set_metadata(staged, {k: v for k, v in KwsModel(float_path).session.get_modelmeta().custom_metadata_map.items()})
        _set_metadata(
            staged,
            {
                "quantization": "int8",
                "quantization_detail": json.dumps(
                    {"format": "QDQ", "weights": "int8 per channel, 7 bit", "activations": "uint8", "ops": QUANTIZED_OPS,
                     "calibration": f"MinMax on {len(windows)} MFCC windows from {calib_note}", "float_model": float_path.name},
                    sort_keys=True,
                ),
            },
        )
        clips, is_kw, eval_note = _clips(meta, "test", eval_audio, eval_clips, seed + 1)
        stream = make_eval_stream(clips, is_kw, seed=seed)
        result = compare(float_path, staged, stream)
        result["eval_clips"] = eval_note
        result["calibration"] = f"{len(windows)} windows from {calib_note}"
        _set_metadata(staged, {"int8_eval": json.dumps(result, sort_keys=True)})
        os.replace(staged, out)
    _set_metadata(float_path, {"int8_eval": json.dumps(result, sort_keys=True), "int8_model": out.name})
    log.info(
        "int8: FRR %s -> %s at the same FA/h (%d vs %d false accepts), %d/%d detections shared; %s",
        _pct(result["float_same_fa"]["frr"]), _pct(result["int8_same_fa"]["frr"]), result["float"]["false_accepts"],
        result["int8_same_fa"]["false_accepts"], result["detections_shared"], result["detections_float"],
        "int8 is the default" if result["int8_default"] else "float stays the default",
    )
    return out, result


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def int8_card_section(result: dict, float_name: str, int8_name: str) -> list[str]:
    """Markdown lines for a model card: float against int8 on the same evaluation."""
    f, s, a, fs = result["float"], result["int8_same_threshold"], result["int8_same_fa"], result["float_same_fa"]
    chosen = int8_name if result["int8_default"] else float_name
    return [
        "## int8 against float",
        "",
        f"Static int8 quantisation (calibrated on {result['calibration']}), compared on a stream of {result['eval_clips']} "
        f"({result['keywords']} keywords, {result['stream_s'] / 60:.1f} min) through the streaming detector:",
        "",
        "| model | threshold | FRR | false accepts | FA/h |",
        "|---|---|---|---|---|",
        f"| float (`{float_name}`) | {f['threshold']:.2f} | {_pct(f['frr'])} | {f['false_accepts']} | {f['fa_per_hour']:.1f} |",
        f"| int8 (`{int8_name}`), same threshold | {s['threshold']:.2f} | {_pct(s['frr'])} | {s['false_accepts']} | {s['fa_per_hour']:.1f} |",
        f"| float, at most {f['false_accepts']} false accepts | {fs['threshold']:.2f} | {_pct(fs['frr'])} | {fs['false_accepts']} | {fs['fa_per_hour']:.1f} |",
        f"| int8, at most {f['false_accepts']} false accepts | {a['threshold']:.2f} | {_pct(a['frr'])} | {a['false_accepts']} | {a['fa_per_hour']:.1f} |",
        "",
        f"Scores differ by at most {result['score_max_abs_diff']:.3f} (mean {result['score_mean_abs_diff']:.4f}); "
        f"{result['detections_shared']} of {result['detections_float']} float detections have an int8 detection within "
        f"{result['match_tolerance_s']:.2f} s ({result['detections_int8']} int8 detections). "
        f"Int8 is the default only if it loses less than {100 * INT8_MAX_FRR_LOSS:.0f} point of FRR at the same FA/h: "
        f"deploy `{chosen}`.",
        "",
    ]


def add_int8(float_path: str | Path, *, calibration_audio: list[Path] | None = None, eval_audio: list[Path] | None = None) -> tuple[Path, dict]:
    """What ``kws export --int8`` does after the float export: quantise, compare, and write both cards.

    The int8 model gets its own card (``<stem>.int8.md``); both cards end
    with the float-against-int8 section, which says which file to deploy.
    """
    from deploy.modelcard import card_path, write_model_card

    float_path = Path(float_path)
    out, result = quantize_model(float_path, calibration_audio=calibration_audio, eval_audio=eval_audio or calibration_audio)
    section = int8_card_section(result, float_path.name, out.name)
    for model in (float_path, out):
        card = card_path(model) if model == float_path and card_path(model).is_file() else write_model_card(model)
        text = card.read_text(encoding="utf-8").rstrip("\n") + "\n\n" + "\n".join(section)
        card.write_text(text, encoding="utf-8")
    return out, result


def int8_summary(float_path: str | Path) -> str:
    """One line on the int8 comparison recorded in a float model's metadata (for the command line)."""
    from deploy.modelfile import KwsModel

    r = KwsModel(float_path).info.metadata.get("int8_eval")
    if not isinstance(r, dict):
        return "no int8 comparison recorded"
    return (
        f"FRR float {_pct(r['float_same_fa']['frr'])} vs int8 {_pct(r['int8_same_fa']['frr'])} at <= {r['float']['false_accepts']} "
        f"false accepts; {r['detections_shared']}/{r['detections_float']} detections shared; "
        f"deploy {'the int8 model' if r['int8_default'] else 'the float model'}"
    )
