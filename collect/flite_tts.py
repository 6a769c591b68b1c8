"""Flite voices: four more recorded-voice synthesisers (Debian's ``flite`` package), many speakers from each.

Why a third engine: Flite's voices are built from recordings of real
people (``awb``, a Scottish man; ``rms``, an American man; ``slt``, an
American woman; ``kal16``, an American man), so they carry voice qualities
neither espeak-ng's formant voices nor Piper's single neural voice has. Each
becomes several synthetic speakers by its own pitch (``int_f0_target_mean``,
honoured by all but ``rms``), speaking rate (``duration_stretch``) and the
same vocal-tract warp as the Piper engine: synthesised ``warp`` times
slower, played back ``warp`` times faster.

Flite speaks only its own accents, so it makes speakers for the accent tags
of its voices (``VOICES``) and none for the others. It is run as the
``flite`` program (``apt-get install flite``); nothing is downloaded.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features.audio import SAMPLE_RATE, load_audio, resample
from features.errors import ConfigError

ENGINE = "flite"
INSTALL_HINT = "apt-get install flite"
# accent tag -> flite voices of that accent, with (gender, typical f0 range in Hz)
VOICES: dict[str, dict[str, tuple[str, tuple[float, float]]]] = {
    "en-US": {"rms": ("male", (90.0, 130.0)), "slt": ("female", (160.0, 230.0)), "kal16": ("male", (90.0, 140.0))},
    "en-GB-scotland": {"awb": ("male", (90.0, 140.0))},
}


@dataclass(frozen=True)
class FliteSpeaker:
    """One synthetic speaker made from a Flite voice."""

    speaker: str
    accent: str
    voice: str
    f0: float  # target mean pitch, Hz, before the warp
    stretch: float  # > 1 speaks slower
    warp: float  # pitch and formant factor
    gender: str

    @property
    def source(self) -> str:
        return f"{ENGINE}:{self.voice}:f{self.f0:.0f}:s{self.stretch:.2f}:w{self.warp:.2f}"


def binary() -> str:
    """Path of the ``flite`` program, or a ``ConfigError`` saying how to install it."""
    path = shutil.which("flite")
    if path is None:
        raise ConfigError(f"the flite engine needs the flite program: {INSTALL_HINT}")
    return path


def available() -> bool:
    return shutil.which("flite") is not None


def make_speakers(accents: list[str], n_per_accent: int, seed: int) -> list[FliteSpeaker]:
    """``n_per_accent`` speakers for each accent Flite has a voice for, cycling through its voices."""
    speakers = []
    for a, accent in enumerate(accents):
        voices = VOICES.get(accent, {})
        rng = np.random.default_rng([seed, 4099, a])
        names = list(voices)
        for i in range(n_per_accent if voices else 0):
            name = names[i % len(names)]
            gender, (lo, hi) = voices[name]
            speakers.append(FliteSpeaker(
                speaker=f"flite-{accent}-{i:02d}", accent=accent, voice=name, f0=round(float(rng.uniform(lo, hi)), 1),
                stretch=round(float(rng.uniform(0.85, 1.25)), 3), warp=round(float(rng.uniform(0.9, 1.2)), 3), gender=gender,
            ))
    return speakers


def speak(text: str, speaker: FliteSpeaker, rng: np.random.Generator) -> np.ndarray:
    """``text`` in this speaker's voice with per-take variation; float32 at 16 kHz (``collect.synth.take`` trims and pads it)."""
    stretch = speaker.stretch * float(rng.uniform(0.9, 1.1)) * speaker.warp
    f0 = speaker.f0 * float(rng.uniform(0.93, 1.07)) / speaker.warp
    with tempfile.TemporaryDirectory(prefix="kws-flite-") as tmp:
        out = Path(tmp) / "take.wav"
        cmd = [binary(), "-voice", speaker.voice, "--setf", f"duration_stretch={stretch:.3f}",
               "--setf", f"int_f0_target_mean={f0:.1f}", "-t", text, "-o", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0 or not out.is_file():
            raise ConfigError(f"flite failed for voice {speaker.voice!r}: {proc.stderr.strip() or 'no output'}")
        audio = load_audio(out)  # at 16 kHz whatever the voice's own rate
    return resample(audio, int(round(SAMPLE_RATE * speaker.warp)), SAMPLE_RATE)

