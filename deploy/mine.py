"""Hard-negative mining: the windows of non-keyword audio a model fires on become negatives for the next round.

Why: a random one-second crop of a long negative clip is almost never the
one-second stretch that sounds like the keyword, so most training negatives
are easy, while the false accepts that decide the false-alarm rate come
from a few rare stretches ("... put it back", "the choir ..."). Running the
model over long non-keyword audio and keeping exactly the windows it scores
high turns those rare stretches into training examples. Mycroft Precise
calls this incremental training; the next round fine-tunes the model on the
dataset plus the mined session (``kws train --init-from``).

Mined windows keep the speaker and accent of the clip they were cut from, so
the speaker-disjoint splits stay disjoint: windows of a validation speaker
are validation clips. Only clips the caller passes are mined; the real-speech
benchmark passes training-side audio only, never its test background.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from collect.manifest import NEGATIVE, ClipRow, ManifestWriter, now_iso
from features.errors import ConfigError

log = logging.getLogger("kws")

SESSION = "mined"
KIND = "mined"


def find_false_accepts(model, clips: Sequence[tuple[ClipRow, np.ndarray]], *, threshold: float = 0.2,
                       refractory_s: float = 0.5, progress: bool = True) -> list[dict]:
    """Every window of the non-keyword ``clips`` whose keyword score reaches ``threshold``, highest first.

    ``model`` is a ``deploy.modelfile.KwsModel``; each clip is streamed through
    a fresh detector (raw scores, no smoothing) with half a window of silence
    either side, so a keyword-like start or end of a clip is scored too.
    """
    from tqdm import tqdm

    from deploy.detector import Detector

    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"mining threshold must be between 0 and 1, got {threshold}")
    info = model.info
    sr = info.feature_config.sample_rate
    n = int(round(info.window_s * sr))
    pad = np.zeros(n // 2, np.float32)
    detector = Detector(model, threshold=threshold, smoothing=1, refractory_s=refractory_s)
    found = []
    for row, audio in tqdm(clips, desc="mining false accepts", unit="clip", disable=not progress):
        if row.label != NEGATIVE:
            continue
        padded = np.concatenate([pad, np.asarray(audio, np.float32), pad])
        for d in detector.process(padded, chunk_size=len(padded)):
            end = int(round(d.time_s * sr))
            found.append({"row": row, "audio": padded[max(0, end - n): end], "score": float(d.score),
                          "time_s": round(d.time_s - len(pad) / sr, 3)})
    found.sort(key=lambda f: -f["score"])
    return found


def write_mined(dataset: str | Path, found: Sequence[dict], *, max_clips: int = 2000, session: str = SESSION) -> Path:
    """Write the ``max_clips`` highest-scoring windows as a negative session of ``dataset``; return its manifest."""
    from collect.synth import write_clip

    dataset = Path(dataset)
    if (dataset / session).exists():
        raise ConfigError(f"{dataset / session} already exists; mine into a new session name")
    created = now_iso()
    with ManifestWriter(dataset, session) as writer:
        for i, f in enumerate(found[:max_clips]):
            src: ClipRow = f["row"]
            rel = f"{session}/{src.accent}/{i:05d}.wav"
            write_clip(writer, dataset, rel, f["audio"], replace(
                src, path=rel, label=NEGATIVE, kind=KIND, text="", session=session, duration_s=0.0, sha256="",
                created=created, source=f"mined:{src.path}@{f['time_s']}s:score{f['score']:.3f}",
            ))
    log.info("mined %d false-accept windows (of %d found) into %s", min(len(found), max_clips), len(found), dataset / session)
    return writer.path
