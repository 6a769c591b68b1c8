"""Levers of the real-speech benchmark that add training data: extra sessions beside the synthetic one.

``BenchConfig.extra_negatives`` names them (the key is historical: some add
keyword copies too). Each extra session is written once into the benchmark
cache, keyed by its parameters and the synthetic session it derives from, and
linked into every rotation's training dataset.

- ``"room_mic": {"copies": N, "keywords_only": bool}``: N copies of each
  synthetic clip through a simulated room (exponentially decaying noise
  impulse response, RT60 0.15-0.9 s, random direct-to-reverberant ratio) and
  a microphone (band-pass 80-400 Hz to 3-7.5 kHz, a random peaking EQ, level
  change). Why: espeak-ng output is dry, full-band and clean; the real
  recordings are made in rooms on laptop and phone microphones. The copies
  keep the speaker id of their source, so the speaker-disjoint splits stay
  disjoint (a val speaker's copies are val clips).

Done offline rather than in ``features.augment`` so the lever needs no change
to shared training code; the price is that each copy is one fixed draw, not a
new one every epoch.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from collect.manifest import ManifestWriter, read_dataset
from features.audio import SAMPLE_RATE, load_audio

SUPPORTED = ("room_mic",)


def room_impulse(rng: np.random.Generator, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A diffuse-room impulse response: direct path, then noise decaying by 60 dB over RT60."""
    rt60 = rng.uniform(0.15, 0.9)
    n = int(rate * min(rt60 * 1.2, 1.0))
    t = np.arange(n) / rate
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    tail[: int(rate * rng.uniform(0.002, 0.01))] = 0.0  # first reflections arrive a few ms after the direct sound
    drr_db = rng.uniform(-3, 12)  # direct-to-reverberant energy ratio
    tail *= np.sqrt(10 ** (-drr_db / 10) / (np.sum(tail**2) + 1e-12))
    tail[0] += 1.0
    return tail.astype(np.float32)


def microphone(audio: np.ndarray, rng: np.random.Generator, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limit and colour like a cheap microphone: band-pass plus one random peaking boost or cut."""
    from scipy.signal import butter, sosfilt

    low, high = rng.uniform(80, 400), rng.uniform(3000, 7500)
    out = sosfilt(butter(2, [low, high], btype="band", fs=rate, output="sos"), audio)
    f0, gain_db, q = rng.uniform(300, 4000), rng.uniform(-8, 8), rng.uniform(0.7, 3)
    # RBJ peaking EQ biquad
    a_ = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * f0 / rate
    alpha = np.sin(w0) / (2 * q)
    b = np.array([1 + alpha * a_, -2 * np.cos(w0), 1 - alpha * a_])
    a = np.array([1 + alpha / a_, -2 * np.cos(w0), 1 - alpha / a_])
    out = sosfilt(np.concatenate([b / a[0], a / a[0]])[None], out)
    return out.astype(np.float32)


def room_mic(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One room + microphone rendering of a clip, at its original peak level (the gain lever is separate)."""
    from scipy.signal import fftconvolve

    wet = fftconvolve(audio, room_impulse(rng))[: len(audio) + SAMPLE_RATE // 4]
    wet = microphone(wet, rng)
    peak_in, peak_out = float(np.max(np.abs(audio))) or 1.0, float(np.max(np.abs(wet))) or 1.0
    return (wet * (peak_in / peak_out)).astype(np.float32)


def extra_negative_sessions(cache: Path, cfg, synth: Path, progress: bool) -> list[Path]:
    """Build (or reuse) the extra sessions ``cfg.extra_negatives`` asks for; returns dataset folders to link in."""
    from tqdm import tqdm

    from collect.synth import write_clip
    from deploy.benchmark_real import _digest, _done, _mark_done

    unknown = sorted(set(cfg.extra_negatives) - set(SUPPORTED))
    if unknown:
        from features.errors import ConfigError

        raise ConfigError(f"extra_negatives: unknown lever(s) {', '.join(unknown)}; known: {', '.join(SUPPORTED)}")
    out = []
    if "room_mic" in cfg.extra_negatives:
        p = {"copies": 1, "keywords_only": False, **cfg.extra_negatives["room_mic"]}
        params = {**p, "source": synth.name, "seed": cfg.seed}
        folder = cache / f"roommic-{_digest(params)}"
        if not _done(folder):
            shutil.rmtree(folder, ignore_errors=True)
            rows, _ = read_dataset(synth)
            rows = [r for r in rows if r.kind != "noise" and (r.kind == "keyword" or not p["keywords_only"])]
            with ManifestWriter(folder, "room-mic") as writer:
                for r in tqdm(rows, desc="room+mic copies", unit="clip", disable=not progress):
                    rng = np.random.default_rng([cfg.seed, *map(ord, r.path)])
                    audio = load_audio(synth / r.path)
                    for c in range(p["copies"]):
                        rel = f"room-mic/{Path(r.path).stem}-rm{c}.wav"
                        write_clip(writer, folder, rel, room_mic(audio, rng),
                               replace(r, path=rel, session="room-mic", source=r.source + ":room-mic",
                                       extra={**r.extra, "derived_from": r.path}))
            _mark_done(folder, params)
        out.append(folder)
    (cache / "levers.json").write_text(json.dumps({"last": cfg.extra_negatives}, default=str))
    return out


# ----------------------------------------------------------------------------- decision lever: smoothing tuned on validation

SMOOTHING_CHOICES = (1, 2, 3, 5, 8)


def tune_decision(rotation_dir: str | Path, *, target_fa_per_hour: float = 0.5, background_minutes: float = 60.0,
                  snr_db: float = 10.0, seed: int = 0, choices=SMOOTHING_CHOICES, progress: bool = True) -> dict:
    """Choose the score smoothing on the validation stream, then read the recorded test stream with it.

    The validation stream is the one ``deploy.calibrate`` builds (same rows,
    same seed offset), run once; each smoothing is replayed over its recorded
    scores and calibrated to ``target_fa_per_hour`` there. The smoothing with
    the lowest validation FRR (ties: the smaller, which reacts sooner) is then
    applied, with its validation threshold, to the test stream scores the
    benchmark saved (``test_scores.npz``): no test data takes part in the choice.
    """
    from deploy.calibrate import CANDIDATES, choose_threshold
    from deploy.evaluate import StreamRun, det_curve, load_eval_clips, operating_points, select_rows, stream_pass
    from deploy.modelfile import KwsModel
    from deploy.streams import Event

    rotation_dir = Path(rotation_dir)
    model = KwsModel(rotation_dir / "model.onnx")
    info = model.info
    refractory = int(round(info.refractory_s / info.hop_s))
    rows, _, _ = select_rows(rotation_dir / "dataset", info, "val")
    clips, _ = load_eval_clips(rotation_dir / "dataset", rows, info)
    val = stream_pass(model, clips, background_minutes=background_minutes, snr_db=snr_db, seed=seed + 7919, progress=progress)
    saved = np.load(rotation_dir / "test_scores.npz")
    events = [Event(**e) for e in json.loads((rotation_dir / "test_events.json").read_text())]
    if "duration_s" in saved:
        duration = float(saved["duration_s"])
    else:  # scores saved before the duration was: the report beside the rotation folder has it
        report = json.loads((rotation_dir.parent / "report.json").read_text())
        duration = next(r["test"]["duration_s"] for r in report["rotations"] if f"rotation-{r['rotation']}" == rotation_dir.name)
    test = StreamRun(events, duration, saved["times"], saved["scores"], [], 0.0)
    table = []
    for s in choices:
        point = choose_threshold(det_curve(val, info, refractory, s, thresholds=CANDIDATES), target_fa_per_hour)
        from deploy.benchmark_real import REPORT_TARGETS, det_thresholds

        curve = det_curve(test, info, refractory, s, thresholds=det_thresholds([point["threshold"]]))
        at = next(p for p in curve if abs(p["threshold"] - round(point["threshold"], 7)) < 1e-9)
        table.append({"smoothing": s, "val_threshold": point["threshold"], "val_frr": point["frr"], "val_fa_per_hour": point["fa_per_hour"],
                      "test_at_val_threshold": at, "test_operating_points": operating_points(curve, REPORT_TARGETS)})
    best = min(table, key=lambda r: (r["val_frr"], r["smoothing"]))
    result = {"chosen_smoothing": best["smoothing"], "model_smoothing": info.smoothing, "table": table}
    (rotation_dir / "decision.json").write_text(json.dumps(result, indent=1))
    return result
