"""Pitch of test speech, for the synthesis engines' voice-warp and pitch tests."""

import numpy as np


def median_f0(audio: np.ndarray, sample_rate: int = 16000) -> float:
    """Median fundamental frequency (Hz) over the voiced frames (librosa's pYIN)."""
    import librosa

    f0, voiced, _ = librosa.pyin(audio, fmin=60, fmax=500, sr=sample_rate, frame_length=1024)
    return float(np.nanmedian(f0[voiced]))
