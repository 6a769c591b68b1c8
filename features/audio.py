"""Reading and writing audio in the house format (16 kHz, mono, float32 in [-1, 1]).

Anything soundfile can read is accepted: other rates are resampled and extra
channels averaged, with a note on the ``kws`` logger (the command line prints
it), never a silent rejection. A file that is missing, unreadable, empty or pure
silence raises ``AudioError`` naming the file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from features.errors import AudioError

SAMPLE_RATE = 16000
SILENCE_PEAK = 1.0 / 32768  # below one 16-bit step: nothing was recorded

log = logging.getLogger("kws")


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE, allow_silence: bool = False) -> np.ndarray:
    """Load a file as mono float32 at ``sample_rate``, shape ``(n_samples,)``.

    Raises ``AudioError`` if the file is missing, unreadable, empty, or (unless
    ``allow_silence``) has no sample above one 16-bit step.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: file not found")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    try:
        audio, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise AudioError(f"{path}: cannot read audio ({reason})") from None
    if audio.shape[0] == 0:
        raise AudioError(f"{path}: contains no samples")
    notes = []
    if audio.shape[1] > 1:
        notes.append(f"{audio.shape[1]} channels averaged to mono")
        audio = audio.mean(axis=1, keepdims=True)
    audio = audio[:, 0]
    if file_rate != sample_rate:
        notes.append(f"resampled {file_rate} Hz -> {sample_rate} Hz")
        audio = resample(audio, file_rate, sample_rate)
    if notes:
        log.info("note: %s: %s", path, ", ".join(notes))
    if not allow_silence and float(np.max(np.abs(audio))) < SILENCE_PEAK:
        raise AudioError(f"{path}: is pure silence")
    return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)


def resample(audio: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling (soxr through librosa), float32 out."""
    if orig_rate == target_rate:
        return np.asarray(audio, dtype=np.float32)
    import librosa  # imported here: the Pi runtime never resamples files

    return librosa.resample(np.asarray(audio, np.float32), orig_sr=orig_rate, target_sr=target_rate).astype(np.float32)


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write 16-bit PCM mono WAV atomically: a temp file in the same folder, fsync, rename.

    A crash mid-write leaves at most a ``.tmp`` file that no reader picks up,
    never a half-written WAV under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.stem, suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a clip is an ordinary file
        with os.fdopen(fd, "wb") as f:
            sf.write(f, audio, sample_rate, subtype="PCM_16", format="WAV")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def center_in_window(audio: np.ndarray, n: int) -> np.ndarray:
    """Crop or zero-pad a clip to ``n`` samples, keeping its middle.

    Lives here (numpy only) because training (evaluation windows), export (its
    check windows) and evaluation must all frame a clip the same way.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if len(audio) >= n:
        start = (len(audio) - n) // 2
        return audio[start : start + n]
    out = np.zeros(n, np.float32)
    start = (n - len(audio)) // 2
    out[start : start + len(audio)] = audio
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
