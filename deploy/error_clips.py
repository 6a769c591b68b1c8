"""The worst misses and false accepts of an evaluation, cut out to WAV files one can listen to.

A table of FRR per accent says *that* the model fails; listening to the
failures says *why*: a word clipped at the start, a voice far from any in
training, a sentence that really does sound like the keyword, a take that is
mostly noise. So ``kws eval`` writes, under ``<out>/errors/``:

- ``miss-NN-<speaker>-<accent>.wav``: keyword insertions of the stream that
  were missed, worst first (ranked by how far the keyword's peak smoothed
  score stayed below the threshold), cut from the stream as the detector
  heard it (with the noise bed and neighbouring audio), ``context_s`` either
  side of the word;
- ``clipmiss-NN-<speaker>-<accent>.wav``: keyword clips the clip pass missed
  (streamed alone), ranked the same way, the clip itself;
- ``fa-NN-<source>.wav``: false accepts of the stream, highest score first:
  the audio the detector's smoothed score was computed from (one window plus
  ``smoothing - 1`` hops before the detection), ``context_s`` either side;
  with the background clip that occupied that time;
- ``clipfa-NN-<speaker>-<kind>.wav``: other clips (confusable words,
  sentences, noise) that fired when streamed alone, highest score first.

Every cut's position in the stream is recorded, so a test (or a person) can
find it again. Earlier cuts in the folder are removed first: a second run
with a smaller ``top`` must not leave the first run's files looking current.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from collect.manifest import NEGATIVE, NOISE
from deploy.detector import smooth
from deploy.streams import Event, match_detections, speech_power, trim_silence
from features.audio import write_wav
from features.errors import ConfigError

ERRORS_DIR = "errors"
DEFAULT_TOP = 10
DEFAULT_CONTEXT_S = 0.5
PREFIXES = ("miss", "clipmiss", "fa", "clipfa")
GAP = "gap"  # a stream false accept with no background clip near it: only the noise bed was there


def check_options(top: int, context_s: float) -> None:
    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise ConfigError(f"--top must be a whole number of cuts, 0 or more, got {top!r}")
    if not (isinstance(context_s, (int, float)) and 0.0 <= context_s <= 10.0):
        raise ConfigError(f"--context must be between 0 and 10 seconds of audio either side of a cut, got {context_s!r}")


def _slug(text: str) -> str:
    """A file-name-safe version of a speaker id or accent tag."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.") or "x"


def keyword_snr(clips, snr_db: float) -> dict[str, float]:
    """SNR of each keyword clip in the stream, dB, by path.

    The stream's noise bed is set ``snr_db`` below the *mean* power of the
    (trimmed) keyword clips, while each clip keeps its recorded level, so a
    quiet take sits at ``snr_db + 10 log10(P_clip / P_mean)``: the condition it
    was actually heard in.
    """
    trimmed = {c.row.path: trim_silence(c.audio) for c in clips if c.truth}
    mean = speech_power(list(trimmed.values()))
    out = {}
    for path, audio in trimmed.items():
        p = speech_power([audio])
        out[path] = round(snr_db + 10 * math.log10(p / mean), 2) if p > 0 and mean > 0 else None  # JSON has no -inf
    return out


def _cut(audio: np.ndarray, start_s: float, end_s: float, rate: int) -> tuple[np.ndarray, float, float]:
    """``audio[start_s:end_s]`` clamped to the recording; returns the piece and its actual start and end, seconds."""
    a = max(0, int(round(start_s * rate)))
    b = min(len(audio), int(round(end_s * rate)))
    return audio[a:b], a / rate, b / rate


def _write(out_dir: Path, name: str, audio: np.ndarray, rate: int) -> str:
    write_wav(out_dir / name, audio, rate)
    return f"{ERRORS_DIR}/{name}"


def clear(out_dir: Path) -> None:
    """Remove the cuts of an earlier run (only files this module names; nothing else in the folder)."""
    if out_dir.is_dir():
        for prefix in PREFIXES:
            for f in out_dir.glob(f"{prefix}-[0-9]*.wav"):
                f.unlink()


def peak_scores(run, info, events: list[Event], tolerance_after_s: float) -> list[float]:
    """Each keyword event's highest smoothed score of its own keyword while a detection would count as a hit."""
    smoothed = smooth(run.scores, info.smoothing)
    out = []
    for e in events:
        if not e.is_keyword or not len(smoothed):
            out.append(0.0)
            continue
        inside = (run.times >= e.start_s) & (run.times <= e.end_s + tolerance_after_s)
        col = smoothed[inside, info.keywords.index(e.label)]
        out.append(round(float(col.max()), 4) if col.size else 0.0)
    return out


def stream_misses(run, info, events: list[Event], hits: list[int], peaks: list[float], snr: dict[str, float], *,
                  top: int, context_s: float, out_dir: Path) -> list[dict]:
    """The ``top`` missed keyword insertions furthest below the threshold, cut from the stream with context."""
    rate = info.feature_config.sample_rate
    missed = [(e, p) for e, h, p in zip(events, hits, peaks) if e.is_keyword and not h]
    missed.sort(key=lambda x: (x[1], x[0].start_s))  # lowest peak first: the furthest from being heard
    out = []
    for rank, (e, peak) in enumerate(missed[:top], 1):
        piece, a, b = _cut(run.audio, e.start_s - context_s, e.end_s + context_s, rate)
        name = f"miss-{rank:02d}-{_slug(e.speaker)}-{_slug(e.accent)}.wav"
        out.append({
            "rank": rank, "file": _write(out_dir, name, piece, rate), "speaker": e.speaker, "accent": e.accent,
            "path": e.path, "keyword": e.label, "peak_score": peak, "threshold": info.threshold,
            "below_threshold_by": round(info.threshold - peak, 4),
            # at or above the threshold and still missed: the refractory period of an earlier detection hid it
            "refractory": peak >= info.threshold, "snr_db": snr.get(e.path),
            "event_start_s": round(e.start_s, 4), "event_end_s": round(e.end_s, 4), "cut_start_s": a, "cut_end_s": b,
        })
    return out


def clip_misses(clip_results: list[dict], audio_by_path: dict[str, np.ndarray], info, *, top: int, out_dir: Path) -> list[dict]:
    """The ``top`` keyword clips the clip pass missed, lowest peak score first, each written as it is."""
    missed = [r for r in clip_results if r["truth"] != NEGATIVE and r["predicted"] != r["truth"]]
    missed.sort(key=lambda r: (r["max_score"], r["path"]))
    out = []
    for rank, r in enumerate(missed[:top], 1):
        name = f"clipmiss-{rank:02d}-{_slug(r['speaker'])}-{_slug(r['accent'])}.wav"
        out.append({"rank": rank, "file": _write(out_dir, name, audio_by_path[r["path"]], info.feature_config.sample_rate),
                    "speaker": r["speaker"], "accent": r["accent"], "path": r["path"], "keyword": r["truth"],
                    "peak_score": r["max_score"], "threshold": info.threshold,
                    "below_threshold_by": round(info.threshold - r["max_score"], 4), "predicted": r["predicted"]})
    return out


def source_of(event: Event | None, rows_by_path: dict) -> dict:
    """What occupied the stream where a false accept happened: the background clip, or only the noise bed."""
    if event is None:
        return {"kind": GAP, "label": NOISE, "accent": "", "speaker": "", "path": "", "text": "", "start_s": None, "end_s": None}
    row = rows_by_path.get(event.path)
    kind = row.kind if row is not None and row.kind else event.label
    return {"kind": kind, "label": event.label, "accent": event.accent, "speaker": event.speaker, "path": event.path,
            "text": row.text if row is not None else "", "start_s": event.start_s, "end_s": event.end_s}


def background_at(t: float, events: list[Event], tolerance_after_s: float) -> Event | None:
    """The background clip a detection at ``t`` heard: the latest one that started before ``t`` and ended at most
    ``tolerance_after_s`` before it (also the rule of the per-accent stream false-accept counts)."""
    near = [e for e in events if not e.is_keyword and e.start_s <= t <= e.end_s + tolerance_after_s]
    return max(near, key=lambda e: e.start_s) if near else None


def stream_false_accepts(run, info, events: list[Event], rows_by_path: dict, *, top: int, context_s: float,
                         tolerance_after_s: float, out_dir: Path) -> tuple[list[dict], dict]:
    """The ``top`` highest-scoring false detections, cut out, and every false accept counted by background kind.

    A detection at ``t`` fired on the smoothed score of the windows ending at
    the last ``smoothing`` hops, so the audio behind it is
    ``[t - window_s - (smoothing - 1) hop_s, t]``; the cut adds ``context_s``
    either side. Returns the cuts and ``{kind: {"false_accepts", "seconds"}}``:
    how many false accepts each kind of background caused and how long that
    kind was played, so a reader can tell a kind that fires often from one
    that is simply most of the stream.
    """
    rate = info.feature_config.sample_rate
    false = []
    for k in info.keywords:
        mine = [d for d in run.detections if d.keyword == k]
        _, fa_times = match_detections([d.time_s for d in mine], events, tolerance_after_s, keyword=k)
        fa_set = set(fa_times)
        false += [d for d in mine if d.time_s in fa_set]
    sources = [source_of(background_at(d.time_s, events, tolerance_after_s), rows_by_path) for d in false]
    by_kind: dict[str, dict] = {}
    for e in events:
        if not e.is_keyword:
            kind = source_of(e, rows_by_path)["kind"]
            by_kind.setdefault(kind, {"false_accepts": 0, "seconds": 0.0})["seconds"] += e.end_s - e.start_s
    by_clip: dict[str, dict] = {}
    for s in sources:
        by_kind.setdefault(s["kind"], {"false_accepts": 0, "seconds": 0.0})["false_accepts"] += 1
        if s["path"]:
            by_clip.setdefault(s["path"], {"false_accepts": 0, "kind": s["kind"], "text": s["text"]})["false_accepts"] += 1
    for v in by_kind.values():
        v["seconds"] = round(v["seconds"], 2)
    summary = {"by_kind": by_kind, "by_clip": dict(sorted(by_clip.items(), key=lambda x: -x[1]["false_accepts"]))}
    scored_s = info.window_s + (info.smoothing - 1) * info.hop_s
    ranked = sorted(zip(false, sources), key=lambda x: (-x[0].score, x[0].time_s))
    out = []
    for rank, (d, src) in enumerate(ranked[:top], 1):
        piece, a, b = _cut(run.audio, d.time_s - scored_s - context_s, d.time_s + context_s, rate)
        name = f"fa-{rank:02d}-{_slug(src['kind'])}" + (f"-{_slug(src['speaker'])}" if src["speaker"] else "") + ".wav"
        out.append({"rank": rank, "file": _write(out_dir, name, piece, rate), "keyword": d.keyword,
                    "time_s": round(d.time_s, 4), "score": round(float(d.score), 4), "threshold": info.threshold,
                    "scored_from_s": round(d.time_s - scored_s, 4), "cut_start_s": a, "cut_end_s": b, "source": src})
    return out, summary


def clip_false_accepts(clip_results: list[dict], audio_by_path: dict[str, np.ndarray], info, *, top: int,
                       out_dir: Path) -> list[dict]:
    """The ``top`` other clips (confusables, sentences, noise) that fired alone, highest score first, written as they are."""
    fired = [r for r in clip_results if r["truth"] == NEGATIVE and r["predicted"] != NEGATIVE]
    fired.sort(key=lambda r: (-r["max_score"], r["path"]))
    out = []
    for rank, r in enumerate(fired[:top], 1):
        kind = r.get("kind") or r["label"]
        name = f"clipfa-{rank:02d}-{_slug(r['speaker'])}-{_slug(kind)}.wav"
        out.append({"rank": rank, "file": _write(out_dir, name, audio_by_path[r["path"]], info.feature_config.sample_rate),
                    "speaker": r["speaker"], "accent": r["accent"], "path": r["path"], "kind": kind,
                    "text": r.get("text", ""), "score": r["max_score"], "threshold": info.threshold, "predicted": r["predicted"]})
    return out


def cut_errors(run, info, clips, clip_results: list[dict], hits: list[int], *, snr: dict[str, float | None], top: int,
               context_s: float, tolerance_after_s: float, out_dir: Path) -> dict:
    """Write every cut into ``out_dir / errors`` and return the report section describing them.

    ``snr``: each keyword clip's own SNR in the stream, by path (``keyword_snr``).
    """
    check_options(top, context_s)
    if run.audio is None:
        raise ConfigError("the stream's audio was not kept (stream_pass(keep_audio=True)); cannot cut errors out of it")
    folder = Path(out_dir) / ERRORS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    clear(folder)
    rows_by_path = {c.row.path: c.row for c in clips}
    audio_by_path = {c.row.path: c.audio for c in clips}
    fas, sources = stream_false_accepts(run, info, run.events, rows_by_path, top=top, context_s=context_s,
                                        tolerance_after_s=tolerance_after_s, out_dir=folder)
    peaks = peak_scores(run, info, run.events, tolerance_after_s)
    return {
        "folder": str(folder), "top": top, "context_s": context_s,
        "stream_misses": stream_misses(run, info, run.events, hits, peaks, snr, top=top, context_s=context_s, out_dir=folder),
        "clip_misses": clip_misses(clip_results, audio_by_path, info, top=top, out_dir=folder),
        "stream_false_accepts": fas,
        "clip_false_accepts": clip_false_accepts(clip_results, audio_by_path, info, top=top, out_dir=folder),
        "false_accept_sources": sources,
        # every keyword insertion's SNR, peak score and outcome: what the advice on conditions is computed from
        "keywords": [{"path": e.path, "speaker": e.speaker, "accent": e.accent, "snr_db": snr.get(e.path),
                      "peak_score": p, "hit": bool(h)}
                     for e, h, p in zip(run.events, hits, peaks) if e.is_keyword],
    }
