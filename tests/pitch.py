"""Pitch of test speech, for the synthesis engines' voice-warp and pitch tests."""

import numpy as np


def median_f0(audio: np.ndarray, sample_rate: int = 16000) -> float:
    """Median fundamental frequency (Hz) over the voiced frames, by Praat's autocorrelation tracker.

    Not librosa's pYIN: on Piper's warped "computer" it reported twice the
    pitch for about one take in ten (an octave error over the whole word;
    seen 217-229 Hz where Praat measured 115-126 Hz), which failed CI at a
    time when Piper's takes still differed from run to run.
    """
    import parselmouth

    pitch = parselmouth.Sound(audio.astype(np.float64), sampling_frequency=sample_rate).to_pitch(pitch_floor=60, pitch_ceiling=500)
    f0 = pitch.selected_array["frequency"]
    return float(np.median(f0[f0 > 0]))
