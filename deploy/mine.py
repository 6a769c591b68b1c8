"""Hard-negative mining: the windows of non-keyword audio a model fires on become negatives for the next round.

Why: a random one-second crop of a long negative clip is almost never the
one-second stretch that sounds like the keyword, so most training negatives
are easy, while the false accepts that decide the false-alarm rate come
from a few rare stretches ("... put it back", "the choir ..."). Running the
model over long non-keyword audio and keeping exactly the windows it scores
high turns those rare stretches into training examples. Mycroft Precise
calls this incremental training; the next round fine-tunes the model on the
dataset plus the mined session (``kws train --init-from``).

In noise too (``noise_snr_db``): every clip is also streamed with pink noise
at that SNR below its own speech power, the way the real-speech benchmark's
test stream plays background speech under a noise bed. A window can be
harmless clean and a false accept in noise: on that benchmark the one false
accept that set the 0.5 FA/h threshold in most runs was an espeak-ng
read-aloud passage the Festival recipe's models scored 0.04 clean and
0.83-0.97 under pink noise at the stream's level (eight noise draws),
while mining had only ever streamed clean audio. The noisy window is what
is written, as it was scored. On that benchmark it did not help (five
seeds; benchmarks/REAL_SPEECH.md): the passage's voice and text are held
out of training, and the noisy windows of the training voices did not
carry over to it. It stays an option for a deployment whose own negatives
are recorded in quieter rooms than it will listen in.

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

from collect.manifest import MINED, NEGATIVE, ClipRow, ManifestWriter, now_iso
from features.errors import ConfigError

log = logging.getLogger("kws")

SESSION = "mined"
KIND = MINED


def find_false_accepts(model, clips: Sequence[tuple[ClipRow, np.ndarray]], *, threshold: float = 0.2,
                       refractory_s: float = 0.5, noise_snr_db: float | None = None, seed: int = 0,
                       progress: bool = True) -> list[dict]:
    """Every window of the non-keyword ``clips`` whose keyword score reaches ``threshold``, highest first.

    ``model`` is a ``deploy.modelfile.KwsModel``; each clip is streamed through
    a fresh detector (raw scores, no smoothing) with half a window of silence
    either side, so a keyword-like start or end of a clip is scored too.
    ``noise_snr_db``: each clip is streamed a second time with pink noise that
    far below its speech power (``seed`` draws the noise); those windows carry
    ``"noise_snr_db"``. A window of pure digital silence is left out: the
    dataset would refuse it as a clip, and the noise floor of training's
    augmentation already teaches silence.
    """
    from tqdm import tqdm

    from deploy.detector import Detector
    from deploy.streams import make_noise, speech_power, trim_silence

    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"mining threshold must be between 0 and 1, got {threshold}")
    info = model.info
    sr = info.feature_config.sample_rate
    n = int(round(info.window_s * sr))
    pad = np.zeros(n // 2, np.float32)
    detector = Detector(model, threshold=threshold, smoothing=1, refractory_s=refractory_s)
    rng = np.random.default_rng([seed, 7211])
    found = []
    for row, audio in tqdm(clips, desc="mining false accepts", unit="clip", disable=not progress):
        if row.label != NEGATIVE:
            continue
        padded = np.concatenate([pad, np.asarray(audio, np.float32), pad])
        versions = [(padded, None)]
        power = 0.0 if noise_snr_db is None else speech_power([trim_silence(padded)])
        if power > 0:
            bed = make_noise("pink", len(padded), rng) * np.float32(np.sqrt(power / 10 ** (noise_snr_db / 10)))
            versions.append((np.clip(padded + bed, -1.0, 1.0).astype(np.float32), noise_snr_db))
        for stream, snr in versions:
            for d in detector.process(stream, chunk_size=len(stream)):
                end = int(round(d.time_s * sr))
                window = stream[max(0, end - n): end]
                if not np.any(window):  # digital silence cannot be a dataset clip (features.audio.load_audio refuses it)
                    continue
                found.append({"row": row, "audio": window, "score": float(d.score),
                              "time_s": round(d.time_s - len(pad) / sr, 3), "noise_snr_db": snr})
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
                created=created, source=f"mined:{src.path}@{f['time_s']}s:score{f['score']:.3f}"
                + ("" if f.get("noise_snr_db") is None else f":pink{f['noise_snr_db']:g}dB"),
            ))
    log.info("mined %d false-accept windows (of %d found) into %s", min(len(found), max_clips), len(found), dataset / session)
    return writer.path
