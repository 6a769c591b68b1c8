"""Each real keyword clip streamed alone: the per-clip follow-ups of the real-speech benchmark.

The benchmark's stream tells how many real "computer" clips a model misses,
not why. These checks look at the clips one at a time, clean (no noise bed,
no background), through the same exported model and detector
(``deploy.evaluate.clip_pass``: each clip between silences, its peak smoothed
score), and ask five questions of a finished run:

- **Does the model know the clips at all?** The median peak score, and the
  recall at the threshold where 1% of the test-side real negative clips
  (the other wake words the rotation never trained on) fire.
- **Are long clips missed for their speaking rate?** The clips whose spoken
  span (``deploy.voice_bands.spoken_seconds``) is ``LONG_S`` or more,
  time-compressed with pitch kept (librosa's ``time_stretch``): if slow
  speech were the cause, compressing them would raise their recall.
- **Do the missed clips sound different?** The share of a clip's energy
  above 4 kHz (hiss, clicks, a bright microphone) for the clips that score
  almost nothing against those the run detects.
- **Would a careful speaker be missed?** The clips the model detects, with
  a pause of ``PAUSES_S`` inserted at their two deepest dips between
  syllables (``features.augment.syllable_dips``), the way some volunteers
  say "com - pu - ter": the share still detected. This found that pauses,
  not slow speech, were what the synthetic-trained models missed
  (``augment.p_pause`` trains against it).
- **Are quiet takes missed for their level, or for how they were said?**
  Each clip under the test stream's pink noise bed, set as the stream sets
  it (``snr_db`` below the clips' mean power, ``deploy.streams``), three
  ways with the same noise: at its recorded level; scaled to the mean
  power, so that every take is heard at ``snr_db``; and clip and noise
  raised together until the clip is at the mean power (its SNR as recorded,
  its level equal). Recall by each clip's own SNR band as recorded
  (``deploy.voice_bands``): if the quiet bands gain from the second but not
  the third, their SNR is the cause and not their loudness.

Thresholds are the run's own: the report's 0.5 FA/h operating point on the
test stream, or the calibrated threshold when no threshold met 0.5 FA/h.
Writes ``clip_probe.json`` and ``clip_probe.md`` beside the report
(``benchmarks/real_speech.py --clip-probe``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from deploy.voice_bands import LONG_S  # spoken span from which a clip counts as long (the voice table's top two bands)

STRETCH_RATES = (1.25, 1.5)  # time compression of the long clips (1.5: two thirds of the length)
NEGATIVE_FIRING = 0.01  # share of real negative clips allowed to fire at the probe's own threshold
LOW_SCORE = 0.05  # a clip peaking below this is one the model does not know at all
HIGH_HZ = 4000.0
PAUSES_S = (0.06, 0.12, 0.2)  # silence inserted at each of a detected clip's two deepest syllable dips
PAUSED_DIPS = 2
NOISE = "pink"  # the test stream's noise bed (deploy.streams.build_stream's default)
NOISE_PAD_S = 1.0  # noise heard before and after each clip
NOISE_SEED = 0  # the same noise for the clips as recorded and at equal level


def high_band_share(audio: np.ndarray, sample_rate: int, above_hz: float = HIGH_HZ) -> float:
    """Fraction of the signal's energy at frequencies above ``above_hz``."""
    power = np.abs(np.fft.rfft(audio.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1.0 / sample_rate)
    total = power.sum()
    return float(power[freqs > above_hz].sum() / total) if total > 0 else 0.0


def _recall(peaks: np.ndarray, threshold: float) -> float | None:
    return round(float(np.mean(peaks >= threshold)), 4) if len(peaks) else None


def _median(values: list[float]) -> float | None:
    return round(float(np.median(values)), 4) if values else None


AS_RECORDED, CLIP_RAISED, MIXTURE_RAISED = LEVELS = ("as recorded", "at equal level", "mixture at equal level")  # under_stream_noise's levels


def under_stream_noise(clips: list[np.ndarray], snr_db: float, sample_rate: int, level: str = AS_RECORDED,
                       seed: int = NOISE_SEED) -> list[np.ndarray]:
    """Each clip with ``NOISE_PAD_S`` on both sides, under noise ``snr_db`` below the clips' mean (trimmed) power.

    That is the level the test stream gives its noise bed, while each clip
    keeps its recorded level (``deploy.streams.build_stream``): ``level``
    "as recorded". "at equal level": each clip is first scaled to the mean
    power, so every take is heard at ``snr_db``. "mixture at equal level":
    clip and noise are mixed as recorded, then scaled together so the clip
    is at the mean power (its SNR as recorded). The same noise every way.
    """
    from deploy.streams import make_noise, speech_power, trim_silence

    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    rng = np.random.default_rng(seed)
    trimmed = [trim_silence(c) for c in clips]
    mean = speech_power(trimmed)
    pad = np.zeros(int(round(NOISE_PAD_S * sample_rate)), np.float32)
    out = []
    for audio, part in zip(clips, trimmed):
        power = speech_power([part])
        gain = np.float32(np.sqrt(mean / power)) if power > 0 and level != AS_RECORDED else np.float32(1.0)
        x = np.concatenate([pad, audio * gain if level == CLIP_RAISED else audio, pad])
        x = x + make_noise(NOISE, len(x), rng) * np.float32(np.sqrt(mean / 10 ** (snr_db / 10)))
        if level == MIXTURE_RAISED:
            x = x * gain
        out.append(np.clip(x, -1.0, 1.0).astype(np.float32))
    return out


def level_check(model, keywords: list, threshold: float, snr_db: float, progress: bool = True) -> dict:
    """Recall by own-SNR band under the stream's noise, at each of ``LEVELS`` (the fifth question)."""
    from deploy.error_clips import keyword_snr
    from deploy.evaluate import EvalClip, clip_pass
    from deploy.voice_bands import SNR_LABELS, snr_band

    rate = model.info.feature_config.sample_rate
    own = keyword_snr(keywords, snr_db)
    bands = [snr_band(own[c.row.path]) if own.get(c.row.path) is not None else None for c in keywords]
    recall = {}
    for name in LEVELS:
        noisy = under_stream_noise([c.audio for c in keywords], snr_db, rate, level=name)
        recall[name] = np.array([r["max_score"] for r in clip_pass(
            model, [EvalClip(c.row, a, c.truth) for c, a in zip(keywords, noisy)], progress)]) >= threshold
    out = {}
    for label in [*SNR_LABELS, "all"]:
        idx = [i for i, b in enumerate(bands) if label in (b, "all")]
        if idx:
            out[label] = {"n": len(idx), **{k: round(float(np.mean(v[idx])), 4) for k, v in recall.items()}}
    return {"snr_db": snr_db, "noise": NOISE, "recall_by_own_snr": out}


def probe_model(model, keywords: list, negatives: list, threshold: float, progress: bool = True,
                snr_db: float | None = None) -> dict:
    """The checks for one model; ``keywords`` and ``negatives`` are ``EvalClip``s, ``threshold`` the run's operating threshold.

    ``snr_db`` (the run's stream SNR) adds the level check; None leaves it out.
    """
    import librosa

    from deploy.evaluate import EvalClip, clip_pass
    from deploy.voice_bands import spoken_seconds

    rate = model.info.feature_config.sample_rate
    peaks = np.array([r["max_score"] for r in clip_pass(model, keywords, progress)])
    neg_peaks = np.array([r["max_score"] for r in clip_pass(model, negatives, progress)])
    neg_threshold = float(np.quantile(neg_peaks, 1 - NEGATIVE_FIRING)) if len(neg_peaks) else None
    long_idx = [i for i, c in enumerate(keywords) if spoken_seconds(c.audio, rate) >= LONG_S]
    stretched = {"as recorded": _recall(peaks[long_idx], threshold)}
    for r in STRETCH_RATES:
        clips = [EvalClip(keywords[i].row, librosa.effects.time_stretch(keywords[i].audio, rate=r), 1) for i in long_idx]
        stretched[f"compressed x{r:g}"] = _recall(np.array([x["max_score"] for x in clip_pass(model, clips, progress)]), threshold)
    detected = [i for i, p in enumerate(peaks) if p >= threshold]
    paused = {}
    for pause in PAUSES_S:
        clips = [EvalClip(keywords[i].row, paused_at_dips(keywords[i].audio, rate, pause), 1) for i in detected]
        paused[f"pauses of {pause:g} s"] = _recall(np.array([x["max_score"] for x in clip_pass(model, clips, progress)]), threshold)
    share = [high_band_share(c.audio, rate) for c in keywords]
    low = [s for s, p in zip(share, peaks) if p < LOW_SCORE]
    hit = [s for s, p in zip(share, peaks) if p >= threshold]
    return {
        "threshold": threshold,
        "n_keyword_clips": len(keywords), "n_negative_clips": len(negatives),
        "median_peak": _median(list(peaks)),
        "recall_at_threshold": _recall(peaks, threshold),
        "threshold_1pct_negatives": None if neg_threshold is None else round(neg_threshold, 4),
        "recall_at_1pct_negatives": None if neg_threshold is None else _recall(peaks, neg_threshold),
        "long_clips": {"min_spoken_s": LONG_S, "n": len(long_idx), "recall_at_threshold": stretched},
        "paused_detected_clips": {"n": len(detected), "recall_at_threshold": paused},
        "high_band_share": {"above_hz": HIGH_HZ, "n_low": len(low), "n_detected": len(hit),
                            f"median_scoring_below_{LOW_SCORE:g}": _median(low), "median_detected": _median(hit)},
        **({"in_stream_noise": level_check(model, keywords, threshold, snr_db, progress)} if snr_db is not None else {}),
    }


def paused_at_dips(audio: np.ndarray, sample_rate: int, pause_s: float) -> np.ndarray:
    """``audio`` with ``pause_s`` of silence at each of its ``PAUSED_DIPS`` deepest syllable dips."""
    from features.augment import syllable_dips, with_pauses
    from train.dataset import active_span

    dips = syllable_dips(audio, active_span(audio, sample_rate), sample_rate, most=PAUSED_DIPS)
    return with_pauses(audio, dips, [int(pause_s * sample_rate)] * len(dips))


def _levels_of(noise: dict) -> list[str]:
    """The ``LEVELS`` a probe measured (probes made before the third have two)."""
    return [k for k in LEVELS if k in noise["recall_by_own_snr"]["all"]]


def probe_markdown(name: str, probes: dict[str, dict]) -> str:
    """A table of the checks, one column per rotation."""
    rows = [
        ("median peak score of the real keyword clips", lambda p: p["median_peak"]),
        ("threshold (the run's 0.5 FA/h point)", lambda p: p["threshold"]),
        ("recall at that threshold (clean clips)", lambda p: p["recall_at_threshold"]),
        ("recall where 1% of real negative clips fire", lambda p: p["recall_at_1pct_negatives"]),
        *[(f"long clips (>= {LONG_S} s), {k}: recall", lambda p, k=k: p["long_clips"]["recall_at_threshold"][k])
          for k in ["as recorded", *[f"compressed x{r:g}" for r in STRETCH_RATES]]],
        *[(f"detected clips, {k}: still detected", lambda p, k=k: p["paused_detected_clips"]["recall_at_threshold"][k])
          for k in [f"pauses of {s:g} s" for s in PAUSES_S]],
        (f"energy share above {HIGH_HZ:g} Hz, clips peaking below {LOW_SCORE:g} (median)",
         lambda p: p["high_band_share"][f"median_scoring_below_{LOW_SCORE:g}"]),
        (f"energy share above {HIGH_HZ:g} Hz, detected clips (median)", lambda p: p["high_band_share"]["median_detected"]),
    ]
    rots = sorted(probes)
    noise = [probes[r]["in_stream_noise"] for r in rots if "in_stream_noise" in probes[r]]
    if noise:
        bands = [b for b in noise[0]["recall_by_own_snr"] if all(b in n["recall_by_own_snr"] for n in noise)]
        rows += [(f"under the stream's {noise[0]['noise']} noise at {noise[0]['snr_db']:g} dB, "
                  f"{'all clips' if band == 'all' else 'own SNR ' + band}: recall " + " / ".join(_levels_of(noise[0])),
                  lambda p, b=band: " / ".join(str(p["in_stream_noise"]["recall_by_own_snr"][b][k]) for k in _levels_of(p["in_stream_noise"]))
                  + " (n={n})".format(**p["in_stream_noise"]["recall_by_own_snr"][b]))
                 for band in bands]
    lines = [f"# Clip probe: {name}", "", "Each real keyword clip streamed alone, clean unless the row says otherwise "
             "(`deploy/clip_probe.py`).", "",
             "| check | " + " | ".join(f"rotation {r}" for r in rots) + " |", "|---|" + "---|" * len(rots)]
    lines += [f"| {label} | " + " | ".join(str(get(probes[r])) for r in rots) + " |" for label, get in rows]
    counts = ", ".join(f"{r}: {probes[r]['long_clips']['n']} long clips, {probes[r]['high_band_share']['n_low']} below "
                       f"{LOW_SCORE:g}, {probes[r]['high_band_share']['n_detected']} detected" for r in rots)
    return "\n".join(lines + ["", f"Clip counts: {counts}.", ""])


def probe_run(out: str | Path, wake_words: str | Path, progress: bool = True) -> dict:
    """Run the checks on every rotation of a finished benchmark output folder; writes ``clip_probe.{json,md}`` there."""
    from deploy.benchmark_real import KEYWORD, ROTATIONS, BenchConfig, check_wake_words, finished_report, load_real_clips
    from deploy.modelfile import KwsModel

    out = Path(out)
    report = finished_report(out, "--clip-probe")
    files = check_wake_words(wake_words)
    keywords = load_real_clips(files[KEYWORD], KEYWORD)
    snr_db = report.get("config", {}).get("snr_db", BenchConfig().snr_db)
    probes = {}
    for r in report["rotations"]:
        rot = r["rotation"]
        negatives = [c for word in ROTATIONS[rot][1] for c in load_real_clips(files[word], word)]
        threshold = next(p for p in r["test"]["operating_points"] if p["target_fa_per_hour"] == 0.5)["threshold"]
        source = "test stream, 0.5 FA/h"
        if threshold is None:
            threshold, source = r["calibration"]["threshold"], "calibrated (no threshold met 0.5 FA/h on the test stream)"
        model = KwsModel(out / f"rotation-{rot}" / "model.onnx")
        probes[rot] = {"threshold_from": source, **probe_model(model, keywords, negatives, threshold, progress, snr_db)}
    (out / "clip_probe.json").write_text(json.dumps(probes, indent=2) + "\n")
    (out / "clip_probe.md").write_text(probe_markdown(out.name, probes))
    return probes
