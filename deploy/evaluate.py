"""Evaluation of an exported model, per clip and per stream, broken down by accent and speaker.

Everything runs on the exported ONNX file through ``deploy.detector.Detector``,
the same streaming code the listener uses, so the figures describe what a user
gets, not what the PyTorch model did in training.

Two passes over the held-out speakers' clips (see DESIGN.md, Evaluation):

- **Clip pass.** Each clip, padded with silence, is streamed through a fresh
  detector; the clip is predicted as a keyword if a detection fires. This
  gives accuracy, precision, recall, F1 and the confusion matrix, and per
  accent the false-accept rate on other speech (confusable words included).
- **Stream pass.** The keyword clips are inserted into long background audio
  (the held-out ordinary speech and noise clips, reused at different levels
  and gaps, plus a noise bed at ``snr_db``), and the whole stream goes through one detector
  with every hop's score recorded. Detections are matched to the keyword
  positions: false-reject rate (with a Wilson interval), false accepts per
  hour of background (with an exact Poisson interval), and, by replaying
  other thresholds over the recorded scores with the model's own smoothing
  and refractory period, the DET curve. Clips of kind ``confusable`` stay
  out of the background: a few hard words looped for an hour would make the
  FA/h a count of how often they repeat, not of how often ordinary speech
  wakes the device. They are measured one by one in the clip pass instead.
  The same holds for ``mined`` windows (``deploy.mine``): each is one the
  model itself once fired on, so a stream of them would make calibration
  choose a threshold above the worst of them rather than for ordinary speech.

Which clips: the rows of the model's ``split`` speakers (recorded in the
model's metadata at training time); ``split="all"`` takes every row, for a
dataset the model never saw. Rows whose audio cannot be read are listed in
the report and skipped. Labels the model does not know count as "negative".

Error analysis that feeds collection: the worst misses and false accepts
are cut out to WAV files (``deploy.error_clips``), and the per-accent
intervals become a number of speakers still to record and advice on what to
record next (``deploy.advice``).

Plots and Markdown live in ``deploy.report``; this module only computes.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from collect.manifest import NEGATIVE, NOISE, ClipRow, data_digest, read_dataset
from deploy.advice import DEFAULT_CI_TARGET, accent_plan, advise, check_ci_target
from deploy.detector import Detector, fire_indices, smooth
from deploy.error_clips import DEFAULT_CONTEXT_S, DEFAULT_TOP, background_at, check_options, cut_errors, keyword_snr
from deploy.mine import KIND as MINED_KIND
from deploy.modelfile import KwsModel
from deploy.stats import classification_metrics, confusion_matrix, rate_per_hour, wilson_interval
from deploy.streams import Event, StreamClip, build_stream, match_detections
from features.audio import load_audio
from features.errors import ConfigError, KwsError, ManifestError

log = logging.getLogger("kws")

SPLIT_CHOICES = ("train", "val", "test", "all")
CLIP_PAD_S = 0.5  # silence either side of a clip in the clip pass (at least half a window, see _pad_s)
TOLERANCE_AFTER_S = 1.0  # a detection up to this long after a keyword's end still counts as a hit
STREAM_CHUNK_S = 10.0  # audio handed to the detector at a time in the stream pass (results do not depend on it)
DET_TARGETS_FA_PER_HOUR = (0.5, 1.0, 2.0)  # operating points quoted in the report
UNATTRIBUTED = "(noise or gap)"  # a stream false accept with no background speech near it
CONFUSABLE = "confusable"  # manifest kinds kept out of the stream background (see the module docstring)
NOT_BACKGROUND = {CONFUSABLE, MINED_KIND}


@dataclass(frozen=True)
class EvalClip:
    row: ClipRow
    audio: np.ndarray
    truth: int  # index into the model's labels (0: not a keyword)


# ----------------------------------------------------------------------------- selection


def select_rows(dataset: Path, info, split: str) -> tuple[list[ClipRow], dict, list[dict]]:
    """Rows to evaluate, a description of how they were chosen, and the manifest lines that were skipped."""
    if split not in SPLIT_CHOICES:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLIT_CHOICES)}")
    rows, bad = read_dataset(dataset)
    skipped = [{"path": f"{b.manifest}:{b.line_no}", "reason": b.reason} for b in bad]
    seen, unique = set(), []
    for row in rows:
        if row.path not in seen:
            seen.add(row.path)
            unique.append(row)
    if not unique:
        raise ManifestError(f"{dataset}: no clips found in any */manifest.jsonl")
    same_data = data_digest(unique) == info.data_digest
    selection = {"split": split, "same_data_as_training": same_data, "notes": []}
    if split == "all":
        chosen = unique
        if same_data:
            selection["notes"].append("every clip of the training dataset is evaluated, including the ones the model was trained on: figures are optimistic")
    else:
        speakers = set((info.metadata.get("splits") or {}).get(split) or [])
        if not speakers:
            raise ConfigError(
                f"the model records no {split!r} speakers (it was not trained with a {split} split); "
                "evaluate it with split 'all' on a dataset it never saw"
            )
        chosen = [r for r in unique if r.speaker in speakers]
        if not chosen:
            raise ManifestError(
                f"{dataset}: none of the model's {len(speakers)} {split} speakers are in this dataset; "
                "pass the dataset the model was trained on, or use split 'all' for a dataset it never saw"
            )
        if not same_data:
            selection["notes"].append(
                f"this dataset differs from the model's training data (digest {info.data_digest[:12]}...); "
                f"evaluating the rows of the model's {split} speakers found in it"
            )
        missing = speakers - {r.speaker for r in chosen}
        if missing:
            selection["notes"].append(f"{len(missing)} {split} speaker(s) of the model are not in this dataset: {', '.join(sorted(missing))}")
    others = sorted({r.label for r in chosen} - set(info.labels) - {NEGATIVE, NOISE})
    if others:
        selection["notes"].append(f"labels the model does not know are scored as negative: {', '.join(others)}")
    selection["n_rows"] = len(chosen)
    selection["speakers"] = sorted({r.speaker for r in chosen})
    return chosen, selection, skipped


def load_eval_clips(dataset: Path, rows: list[ClipRow], info) -> tuple[list[EvalClip], list[dict]]:
    """Decode the rows' audio; unreadable, empty or silent files are returned as skipped, not raised."""
    clips, skipped = [], []
    for row in rows:
        try:
            audio = load_audio(dataset / row.path, sample_rate=info.feature_config.sample_rate)
        except KwsError as exc:
            skipped.append({"path": row.path, "reason": str(exc)})
            continue
        truth = info.labels.index(row.label) if row.label in info.keywords else 0
        clips.append(EvalClip(row, audio, truth))
    return clips, skipped


# ----------------------------------------------------------------------------- clip pass


def _pad_s(info) -> float:
    """Silence either side of a clip: at least half a window, so a short word is fully in view for several hops."""
    return max(CLIP_PAD_S, info.window_s / 2)


def clip_pass(model: KwsModel, clips: list[EvalClip], progress: bool = True) -> list[dict]:
    """Stream each padded clip through a fresh detector; one result per clip (prediction and peak smoothed score)."""
    from tqdm import tqdm

    info = model.info
    detector = Detector(model, record_scores=True)
    pad = np.zeros(int(round(_pad_s(info) * info.feature_config.sample_rate)), np.float32)
    results = []
    for clip in tqdm(clips, desc="clip pass", unit="clip", disable=not progress):
        audio = np.concatenate([pad, clip.audio, pad])
        detections = detector.process(audio, chunk_size=len(audio))
        predicted = 0
        if detections:
            best = max(detections, key=lambda d: d.score)
            predicted = info.labels.index(best.keyword)
        scores = smooth(np.stack(detector.scores), detector.smoothing) if detector.scores else np.zeros((1, len(info.keywords)))
        results.append({
            "path": clip.row.path, "speaker": clip.row.speaker, "accent": clip.row.accent, "label": clip.row.label,
            "kind": clip.row.kind, "text": clip.row.text,
            "truth": info.labels[clip.truth], "predicted": info.labels[predicted],
            "max_score": round(float(scores.max()), 4),
        })
    return results


def clip_metrics(results: list[dict], labels: tuple[str, ...]) -> dict:
    """Accuracy, macro precision / recall / F1 over the keywords, and the confusion matrix."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = confusion_matrix([index[r["truth"]] for r in results], [index[r["predicted"]] for r in results], len(labels))
    m = classification_metrics(matrix)
    return {
        "n": m["n"], "accuracy": m["accuracy"], "precision": m["precision"], "recall": m["recall"], "f1": m["f1"],
        "per_keyword": {labels[c]: v for c, v in m["per_class"].items()},
        "confusion": {"labels": list(labels), "matrix": matrix},
    }


# ----------------------------------------------------------------------------- stream pass


@dataclass
class StreamRun:
    events: list[Event]
    duration_s: float
    times: np.ndarray  # (n_hops,) end of each scored window, seconds
    scores: np.ndarray  # (n_hops, n_keywords) raw model scores
    detections: list  # live detections of the detector, at the model's threshold
    seconds: float  # wall time of the detector over the stream
    audio: np.ndarray | None = None  # the stream itself, when asked for (to cut errors out of it)


def stream_pass(model: KwsModel, clips: list[EvalClip], *, background_minutes: float, snr_db: float, seed: int,
                progress: bool = True, keep_audio: bool = False) -> StreamRun:
    """Build the evaluation stream and run it through one detector, recording every hop's scores.

    ``keep_audio`` keeps the stream in the result, for cutting errors out of
    it; off by default because a benchmark's two-hour stream is half a gigabyte.
    """
    from tqdm import tqdm

    info = model.info
    rate = info.feature_config.sample_rate

    def as_stream(c: EvalClip) -> StreamClip:  # labels the model does not know are background speech
        label = c.row.label if c.truth else NOISE if c.row.label == NOISE else NEGATIVE
        return StreamClip(c.audio, label, c.row.accent, c.row.speaker, c.row.path)

    keywords = [as_stream(c) for c in clips if c.truth]
    background = [as_stream(c) for c in clips if not c.truth and c.row.kind not in NOT_BACKGROUND]
    if not keywords:
        raise ManifestError("no keyword clips among the evaluated rows: a false-reject rate needs some")
    if not background:
        log.warning("no negative clips among the evaluated rows: the stream background is noise only")
    keyword_s = sum(len(c.audio) for c in keywords) / rate + len(keywords) * TOLERANCE_AFTER_S
    audio, events = build_stream(keywords, background, "pink", seed=seed, snr_db=snr_db, min_gap_s=0.3,
                                 target_s=background_minutes * 60 + keyword_s, sample_rate=rate)
    detector = Detector(model, record_scores=True)
    chunk = int(STREAM_CHUNK_S * rate)
    detections = []
    start = time.perf_counter()
    with tqdm(total=round(len(audio) / rate), desc="stream pass", unit="s", disable=not progress) as bar:
        for i in range(0, len(audio), chunk):
            part = audio[i : i + chunk]
            detections += detector.update(part)
            bar.update(round((i + len(part)) / rate) - bar.n)
    seconds = time.perf_counter() - start
    scores = np.stack(detector.scores) if detector.scores else np.zeros((0, len(info.keywords)), np.float32)
    return StreamRun(events, len(audio) / rate, np.asarray(detector.times), scores, detections, seconds,
                     audio if keep_audio else None)


def match_all(detections_by_keyword: dict[str, list[float]], events: list[Event]) -> tuple[list[int], list[float]]:
    """Hits per event and false-accept times over all keywords (each keyword's detections hit only its own events)."""
    hits = [0] * len(events)
    false_accepts: list[float] = []
    for keyword, times in detections_by_keyword.items():
        h, fa = match_detections(times, events, TOLERANCE_AFTER_S, keyword=keyword)
        hits = [a + b for a, b in zip(hits, h)]
        false_accepts += fa
    return hits, sorted(false_accepts)


def background_hours(events: list[Event], duration_s: float) -> float:
    """Stream time outside the keyword windows (``[start, end + tolerance]``), in hours."""
    windows = sum(min(e.end_s + TOLERANCE_AFTER_S, duration_s) - e.start_s for e in events if e.is_keyword)
    return max(duration_s - windows, 0.0) / 3600


def replay_at(run: StreamRun, keywords, smoothed: np.ndarray, threshold: float, refractory_hops: int) -> tuple[list[int], list[float]]:
    """``match_all`` of the detections ``run``'s recorded scores (already ``smoothed``) give at ``threshold``: no model runs."""
    fired = {k: run.times[fire_indices(smoothed[:, j], float(threshold), refractory_hops)].tolist() for j, k in enumerate(keywords)}
    return match_all(fired, run.events)


def det_curve(run: StreamRun, info, refractory_hops: int, smoothing: int, thresholds: np.ndarray | None = None) -> list[dict]:
    """FRR and FA/h at each threshold, replayed over the recorded scores with the model's smoothing and refractory period."""
    if thresholds is None:
        thresholds = np.unique(np.round(np.concatenate([np.linspace(0.02, 0.98, 49), np.linspace(0.99, 0.999, 10), [info.threshold]]), 4))
    smoothed = smooth(run.scores, smoothing)
    n_kw = sum(e.is_keyword for e in run.events)
    hours = background_hours(run.events, run.duration_s)
    curve = []
    for threshold in thresholds:
        hits, fa = replay_at(run, info.keywords, smoothed, threshold, refractory_hops) if len(smoothed) else ([0] * len(run.events), [])
        missed = sum(1 for e, h in zip(run.events, hits) if e.is_keyword and not h)
        curve.append({"threshold": float(threshold), "frr": missed / n_kw if n_kw else 0.0,
                      "fa_per_hour": len(fa) / hours if hours else 0.0, "false_accepts": len(fa)})
    return curve


def operating_points(curve: list[dict], targets=DET_TARGETS_FA_PER_HOUR) -> list[dict]:
    """For each FA/h budget, the DET point with the lowest FRR within it (None if no threshold meets it)."""
    out = []
    for target in targets:
        ok = [p for p in curve if p["fa_per_hour"] <= target]
        best = min(ok, key=lambda p: (p["frr"], p["fa_per_hour"], -p["threshold"])) if ok else None
        out.append({"target_fa_per_hour": target, **({k: best[k] for k in ("threshold", "frr", "fa_per_hour")} if best else
                                                     {"threshold": None, "frr": None, "fa_per_hour": None})})
    return out


BOOTSTRAP_BLOCK_S = 120.0  # stream time resampled as one piece: false accepts near each other stay together


def frr_intervals(run: StreamRun, info, refractory_hops: int, smoothing: int, thresholds: np.ndarray,
                  targets=DET_TARGETS_FA_PER_HOUR, *, n_boot: int = 1000, block_s: float = BOOTSTRAP_BLOCK_S, seed: int = 0,
                  level: float = 0.95) -> dict[float, list[float]]:
    """A bootstrap interval of ``operating_points``' FRR at each FA/h budget, replayed over ``run``'s recorded scores.

    Why: a low budget on a stream of a few hours allows a false accept or
    two (0.5 FA/h on 2.3 h of background: one), so the operating point rests
    on the highest background peaks and one run's FRR there can move by tens
    of points with another draw of background. Each of ``n_boot`` resamples
    draws the keyword events, and the stream's ``block_s`` blocks of time
    (their false accepts and background hours), with replacement, and
    chooses the operating point again among ``thresholds``; a resample
    with no threshold inside the budget counts as FRR 1 (only a detector
    that never fires meets it). Returns ``{budget: [low, high]}`` percentiles.
    """
    smoothed = smooth(run.scores, smoothing)
    keywords = [i for i, e in enumerate(run.events) if e.is_keyword]
    if not keywords or not len(smoothed):
        return {}
    n_blocks = max(1, math.ceil(run.duration_s / block_s))
    hours = np.full(n_blocks, block_s)
    hours[-1] = run.duration_s - block_s * (n_blocks - 1)
    for e in (run.events[i] for i in keywords):  # keyword windows are not background (as in background_hours)
        start, end = e.start_s, min(e.end_s + TOLERANCE_AFTER_S, run.duration_s)
        for b in range(int(start // block_s), min(int(end // block_s), n_blocks - 1) + 1):
            hours[b] -= max(0.0, min(end, (b + 1) * block_s) - max(start, b * block_s))
    hours = np.maximum(hours, 0.0) / 3600
    missed = np.zeros((len(keywords), len(thresholds)))
    false_accepts = np.zeros((n_blocks, len(thresholds)))
    for j, threshold in enumerate(thresholds):
        hits, fa = replay_at(run, info.keywords, smoothed, threshold, refractory_hops)
        missed[:, j] = [hits[i] == 0 for i in keywords]
        np.add.at(false_accepts[:, j], np.minimum(np.asarray(fa, dtype=float) // block_s, n_blocks - 1).astype(int), 1)
    rng = np.random.default_rng(seed)
    block_weights = rng.multinomial(n_blocks, np.full(n_blocks, 1 / n_blocks), size=n_boot)
    keyword_weights = rng.multinomial(len(keywords), np.full(len(keywords), 1 / len(keywords)), size=n_boot)
    fa_per_hour = (block_weights @ false_accepts) / np.maximum(block_weights @ hours, 1e-12)[:, None]
    frr = keyword_weights @ missed / len(keywords)
    tail = 100 * (1 - level) / 2
    out = {}
    for target in targets:
        best = np.where(fa_per_hour <= target, frr, 1.0).min(axis=1)
        out[target] = [float(np.percentile(best, tail)), float(np.percentile(best, 100 - tail))]
    return out


def _attribute(times: list[float], events: list[Event]) -> list[dict]:
    """Which background speech each false accept happened during (or just after), for per-accent counts."""
    out = []
    for t in times:
        e = background_at(t, events, TOLERANCE_AFTER_S)
        out.append({"time_s": round(t, 3), "accent": e.accent if e and e.label != NOISE else UNATTRIBUTED,
                    "speaker": e.speaker if e else "", "path": e.path if e else ""})
    return out


# ----------------------------------------------------------------------------- breakdowns


def _ci(k: int, n: int) -> list[float]:
    return [round(x, 6) for x in wilson_interval(k, n)]


def breakdown(clip_results: list[dict], events: list[Event], hits: list[int], false_accepts: list[dict]) -> tuple[dict, dict]:
    """Per-accent and per-speaker counts, rates and intervals (speech only: noise clips are not an accent)."""
    acc: dict[str, dict] = {}
    spk: dict[str, dict] = {}

    def slot(table, key, **init):
        return table.setdefault(key, {"n_keyword": 0, "misses": 0, "n_negative": 0, "false_fires": 0,
                                      "clip_keyword": 0, "clip_detected": 0, "speakers": set(), **init})

    for r in clip_results:
        if r["label"] == NOISE:
            continue
        for s in (slot(acc, r["accent"]), slot(spk, r["speaker"], accent=r["accent"])):
            s["speakers"].add(r["speaker"])
            if r["truth"] == NEGATIVE:
                s["n_negative"] += 1
                s["false_fires"] += r["predicted"] != NEGATIVE
            else:
                s["clip_keyword"] += 1
                s["clip_detected"] += r["predicted"] == r["truth"]
    for e, h in zip(events, hits):
        if e.is_keyword:
            for s in (slot(acc, e.accent), slot(spk, e.speaker, accent=e.accent)):
                s["speakers"].add(e.speaker)
                s["n_keyword"] += 1
                s["misses"] += h == 0
    for fa in false_accepts:
        if fa["accent"] in acc:
            acc[fa["accent"]]["stream_false_accepts"] = acc[fa["accent"]].get("stream_false_accepts", 0) + 1

    def finish(s: dict) -> dict:
        out = {
            "n_speakers": len(s.pop("speakers")),
            "n_keyword": s["n_keyword"],
            "frr": s["misses"] / s["n_keyword"] if s["n_keyword"] else 0.0,
            "frr_ci": _ci(s["misses"], s["n_keyword"]),
            "n_negative": s["n_negative"],
            "far": s["false_fires"] / s["n_negative"] if s["n_negative"] else 0.0,
            "far_ci": _ci(s["false_fires"], s["n_negative"]),
            "clip_recall": s["clip_detected"] / s["clip_keyword"] if s["clip_keyword"] else 0.0,
        }
        out.update({k: v for k, v in s.items() if k not in ("n_keyword", "n_negative", "clip_keyword", "clip_detected")})
        return out

    per_accent = {a: finish(s) for a, s in sorted(acc.items())}
    for a in per_accent.values():
        a.setdefault("stream_false_accepts", 0)
    per_speaker = {k: finish(s) for k, s in sorted(spk.items())}
    for s in per_speaker.values():
        s.pop("n_speakers")
    return per_accent, per_speaker


def voice_breakdown(clips: list[EvalClip], events: list[Event], hits: list[int], sample_rate: int,
                    snr: dict[str, float | None]) -> dict:
    """FRR by the speaker's pitch, the keyword's spoken length and its own SNR in the stream (``snr``, by path:
    ``deploy.error_clips.keyword_snr``; ``deploy.voice_bands``), and each keyword's traits.

    Accent labels say where a speaker is from; these say what their voice
    and recording are like, which a session's labels do not (``deploy.advice``
    asks for more of the voices that are missed).
    """
    from deploy.voice_bands import traits, voice_frr

    measured = {c.row.path: traits(c.audio, sample_rate) for c in clips if c.truth}
    keywords = [{"path": e.path, "speaker": e.speaker, **measured[e.path], "snr_db": snr.get(e.path), "missed": h == 0}
                for e, h in zip(events, hits) if e.is_keyword]
    return {**voice_frr([(k, k["missed"]) for k in keywords]), "keywords": keywords}


# ----------------------------------------------------------------------------- the whole evaluation


def evaluate(
    model_path: str | Path,
    dataset: str | Path,
    out_dir: str | Path,
    *,
    split: str = "test",
    background_minutes: float = 20.0,
    snr_db: float = 10.0,
    seed: int = 0,
    progress: bool = True,
    top: int = DEFAULT_TOP,
    context_s: float = DEFAULT_CONTEXT_S,
    ci_target: float = DEFAULT_CI_TARGET,
) -> dict:
    """Evaluate an exported model on ``dataset``; write the report files into ``out_dir`` and refresh the model card.

    Error analysis (``deploy.error_clips``, ``deploy.advice``): the ``top``
    worst misses and false accepts are cut out to ``out_dir/errors/`` with
    ``context_s`` seconds either side; per accent, the speakers needed for an
    FRR interval of half-width ``ci_target``; and advice on what to record next.

    Returns the report dict (also written as ``out_dir/report.json``).
    """
    from deploy.modelcard import card_path, write_model_card
    from deploy.report import write_report

    if not background_minutes > 0:
        raise ConfigError(f"background_minutes must be positive, got {background_minutes}")
    check_options(top, context_s)
    check_ci_target(ci_target)
    started = time.perf_counter()
    model_path, dataset, out_dir = Path(model_path), Path(dataset), Path(out_dir)
    model = KwsModel(model_path)
    info = model.info
    rows, selection, skipped = select_rows(dataset, info, split)
    clips, unreadable = load_eval_clips(dataset, rows, info)
    skipped += unreadable
    for s in unreadable:
        log.warning("skipping %s", s["reason"])
    if not clips:
        raise ManifestError(f"{dataset}: none of the {len(rows)} selected clips could be read")

    t = time.perf_counter()
    clip_results = clip_pass(model, clips, progress)
    clip_seconds = time.perf_counter() - t
    clips_report = clip_metrics(clip_results, info.labels)

    run = stream_pass(model, clips, background_minutes=background_minutes, snr_db=snr_db, seed=seed, progress=progress,
                      keep_audio=True)
    refractory_hops = int(round(info.refractory_s / info.hop_s))
    live = {k: [d.time_s for d in run.detections if d.keyword == k] for k in info.keywords}
    hits, fa_times = match_all(live, run.events)
    kw_events = [(e, h) for e, h in zip(run.events, hits) if e.is_keyword]
    misses = [e for e, h in kw_events if not h]
    hours = background_hours(run.events, run.duration_s)
    fa_rate, fa_ci = rate_per_hour(len(fa_times), hours)
    attributed = _attribute(fa_times, run.events)
    curve = det_curve(run, info, refractory_hops, info.smoothing)
    per_accent, per_speaker = breakdown(clip_results, run.events, hits, attributed)
    snr = keyword_snr(clips, snr_db)  # each keyword's own SNR: for the voice bands and the error cuts
    voices = voice_breakdown(clips, run.events, hits, info.feature_config.sample_rate, snr)
    errors = cut_errors(run, info, clips, clip_results, hits, snr=snr, top=top, context_s=context_s,
                        tolerance_after_s=TOLERANCE_AFTER_S, out_dir=out_dir)
    run.audio = None  # minutes of audio; nothing after this needs it
    noise_results = [r for r in clip_results if r["label"] == NOISE]
    noise_fires = sum(r["predicted"] != NEGATIVE for r in noise_results)

    report = {
        "dataset": str(dataset),
        "model": {
            "path": str(model_path), "data_digest": info.data_digest, "labels": list(info.labels),
            "threshold": info.threshold, "smoothing": info.smoothing, "refractory_s": info.refractory_s,
            "window_s": info.window_s, "hop_s": info.hop_s, "training_dataset": info.metadata.get("dataset"),
            "calibration": info.metadata.get("calibration"),
            "training_accents": sorted(a for a, c in (info.metadata.get("data_counts") or {}).items()
                                       if (c.get("train") or {}).get("keyword")),
        },
        "seed": seed,
        "selection": selection,
        "skipped": skipped,
        "clips": clips_report,
        "stream": {
            "duration_s": run.duration_s, "background_hours": hours, "snr_db": snr_db, "threshold": info.threshold,
            "n_keywords": len(kw_events), "misses": len(misses), "frr": len(misses) / len(kw_events),
            "frr_ci": _ci(len(misses), len(kw_events)),
            "false_accepts": len(fa_times), "fa_per_hour": fa_rate, "fa_per_hour_ci": list(fa_ci),
            "n_background_clips": sum(1 for e in run.events if not e.is_keyword),
            "tolerance_after_s": TOLERANCE_AFTER_S, "n_hops": len(run.times),
            "detector_seconds": run.seconds, "realtime_factor": run.duration_s / run.seconds if run.seconds else None,
            "missed": [e.path for e in misses], "false_accept_times": attributed,
        },
        "det": curve,
        "operating_points": operating_points(curve),
        "per_accent": per_accent,
        "per_speaker": per_speaker,
        "per_voice": voices,
        "noise_clips": {"n": len(noise_results), "false_fires": noise_fires, "far_ci": _ci(noise_fires, len(noise_results))},
        "clip_results": clip_results,
        "timing": {"clip_pass_s": clip_seconds, "stream_pass_s": run.seconds},
        "errors": errors,
    }
    report["collection"] = accent_plan(per_speaker, per_accent, ci_target)
    report["advice"] = advise(report, report["collection"])
    report["timing"]["total_s"] = time.perf_counter() - started
    report["files"] = {"model_card": str(card_path(model_path))}
    write_report(report, out_dir)  # adds the report's own files to report["files"]
    write_model_card(model_path, report)
    return report
