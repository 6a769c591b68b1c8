"""The MFCC definition written with librosa: the reference the numpy code must match.

``power_to_db`` gets ``top_db=None`` on purpose: librosa's default clips every
value more than 80 dB below the loudest one *in the whole input*, which a
stream that has not seen the future cannot know.
"""

from __future__ import annotations

import numpy as np

from features.config import FeatureConfig


def mfcc_librosa(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """MFCC of a 1-D signal with librosa, shape ``(n_frames, n_mfcc)``."""
    import librosa

    power = librosa.feature.melspectrogram(
        y=np.asarray(y, dtype=np.float32),
        sr=cfg.sample_rate,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        window="hann",
        center=False,
        power=2.0,
        n_mels=cfg.n_mels,
        fmin=cfg.fmin,
        fmax=cfg.fmax,
        htk=False,
        norm="slaney",
    )
    if cfg.pcen_s:  # librosa starts its smoother at zero; ours starts at the first frame (``features.mfcc.pcen``)
        import scipy.signal

        from features.mfcc import pcen_weight

        b = pcen_weight(cfg)
        zi = scipy.signal.lfilter_zi([b], [1, b - 1]) * power[:, :1]
        bands = librosa.pcen(power, sr=cfg.sample_rate, hop_length=cfg.hop_length, time_constant=cfg.pcen_s, zi=zi)
        return librosa.feature.mfcc(S=bands, n_mfcc=cfg.n_mfcc, dct_type=2, norm="ortho").T
    log_mel = librosa.power_to_db(power, ref=1.0, amin=cfg.amin, top_db=None)
    return librosa.feature.mfcc(S=log_mel, n_mfcc=cfg.n_mfcc, dct_type=2, norm="ortho").T
