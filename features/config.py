"""The one MFCC definition, shared by training, export and the streaming runtime.

A ``FeatureConfig`` is small, frozen and stored (as JSON) in every exported
model's metadata, so the listener computes exactly the features the model was
trained on. Times are given in seconds and derived sample counts are properties,
which keeps the stored config readable and the arithmetic in one place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from features.errors import ConfigError


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel cepstral features, as librosa defines them, without centring.

    With ``pcen_s > 0`` the log is replaced by per-channel energy
    normalisation (``features.mfcc.pcen``) before the same DCT.

    ``center=False`` (no padding around the signal) is what lets the streaming
    runtime compute each frame once, from samples it has already seen.
    """

    sample_rate: int = 16000  # Hz; all audio inside the program is at this rate
    win_s: float = 0.025  # analysis window length (Hann), seconds
    hop_s: float = 0.010  # frame hop, seconds
    n_fft: int = 512  # FFT size in samples (window zero-padded to it, centred)
    n_mels: int = 40  # mel bands (Slaney mel scale and area normalisation)
    n_mfcc: int = 20  # cepstral coefficients kept (DCT-II, orthonormal)
    fmin: float = 20.0  # lowest mel band edge, Hz
    fmax: float = 7600.0  # highest mel band edge, Hz
    amin: float = 1e-10  # power floor before 10*log10 (librosa.power_to_db)
    pcen_s: float = 0.0  # 0: log mel energies (MFCC); > 0: PCEN instead of the log, smoother time constant in seconds

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ConfigError(f"sample_rate must be positive, got {self.sample_rate}")
        if not 0 < self.hop_length <= self.win_length <= self.n_fft:
            raise ConfigError(
                "need 0 < hop <= window <= n_fft samples, got "
                f"hop={self.hop_length}, window={self.win_length}, n_fft={self.n_fft}"
            )
        if not 0 < self.n_mfcc <= self.n_mels:
            raise ConfigError(f"need 0 < n_mfcc <= n_mels, got {self.n_mfcc} > {self.n_mels}")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ConfigError(f"need 0 <= fmin < fmax <= sample_rate/2, got {self.fmin}..{self.fmax}")
        if not self.pcen_s >= 0:
            raise ConfigError(f"pcen_s must be 0 (log mel) or a positive time constant in seconds, got {self.pcen_s}")

    @property
    def win_length(self) -> int:
        """Analysis window length in samples."""
        return int(round(self.win_s * self.sample_rate))

    @property
    def hop_length(self) -> int:
        """Frame hop in samples."""
        return int(round(self.hop_s * self.sample_rate))

    def n_frames(self, n_samples: int) -> int:
        """Number of complete frames in ``n_samples`` samples (0 if too short)."""
        if n_samples < self.n_fft:
            return 0
        return 1 + (n_samples - self.n_fft) // self.hop_length

    def samples_for_frames(self, n_frames: int) -> int:
        """Fewest samples that give ``n_frames`` frames."""
        return self.n_fft + (n_frames - 1) * self.hop_length

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureConfig":
        check_keys(cls, d, "feature config")
        return cls(**d)

    def digest(self) -> str:
        """Short sha256 of the config, to tell feature definitions apart at a glance."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]


def read_json_file(path, what: str):
    """Parse a hand-written JSON file; a missing file or bad JSON is a ``ConfigError`` naming the file."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None


def check_keys(cls, d: dict, what: str) -> None:
    """Refuse anything but a dict whose keys are fields of the dataclass ``cls``, naming the culprits.

    Config files are written by hand; a misspelt key silently ignored would
    train a different model than the user asked for.
    """
    if not isinstance(d, dict):
        raise ConfigError(f"{what} must be a JSON object of settings, got {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown {what} key(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
