"""MFCC in numpy: the implementation training and the streaming runtime share.

It imports only numpy, so the listener on a Raspberry Pi needs no librosa. It
computes exactly what ``features.reference.mfcc_librosa`` computes with librosa
(Hann window zero-padded to ``n_fft``, power spectrum, Slaney mel filterbank,
``10*log10(max(S, amin))``, orthonormal DCT-II, no centring); the tests hold
the two together on real speech.

Two entry points:

- ``Mfcc(cfg)(y)``: audio of shape ``(..., n_samples)`` to features of shape
  ``(..., n_frames, n_mfcc)``; used on training batches.
- ``StreamingMfcc(cfg).push(chunk)``: audio in chunks of any length, returns only
  the frames completed by that chunk, so each frame is computed exactly once.
"""

from __future__ import annotations

import numpy as np

from features.config import FeatureConfig


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale (librosa ``htk=False``): linear below 1 kHz, log above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(
        hz >= min_log_hz,
        min_log_mel + np.log(np.maximum(hz, 1e-12) / min_log_hz) / logstep,
        hz / f_sp,
    )


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_filterbank(cfg: FeatureConfig, warp: float = 1.0) -> np.ndarray:
    """Triangular Slaney-normalised mel filters, shape ``(n_mels, n_fft // 2 + 1)``.

    ``warp`` != 1 is vocal tract length perturbation (training only,
    ``features.augment.AugmentConfig.p_warp``): each filter reads the
    spectrum as if every frequency were ``warp`` times higher, so formants
    and pitch land in the bands a speaker with a ``warp`` times shorter vocal
    tract would put them in.
    """
    fft_freqs = np.fft.rfftfreq(cfg.n_fft, 1.0 / cfg.sample_rate) * warp
    mel_f = mel_to_hz(np.linspace(hz_to_mel(cfg.fmin), hz_to_mel(cfg.fmax), cfg.n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]  # equal area per band
    return weights


def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Orthonormal DCT-II as a matrix of shape ``(n_out, n_in)``."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    m = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    m[0] /= np.sqrt(2.0)
    return m


def analysis_window(cfg: FeatureConfig) -> np.ndarray:
    """Periodic Hann of ``win_length`` samples, zero-padded to ``n_fft``, centred."""
    n = np.arange(cfg.win_length)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / cfg.win_length)
    window = np.zeros(cfg.n_fft)
    start = (cfg.n_fft - cfg.win_length) // 2
    window[start : start + cfg.win_length] = hann
    return window


class Mfcc:
    """MFCC of whole signals: ``(..., n_samples) -> (..., n_frames, n_mfcc)``, float32.

    Frame ``t`` covers samples ``[t * hop, t * hop + n_fft)``; a signal shorter
    than ``n_fft`` has no frame.

    >>> feats = Mfcc(FeatureConfig())(np.zeros(16000, np.float32))
    >>> feats.shape
    (97, 20)
    """

    def __init__(self, cfg: FeatureConfig, warp: float = 1.0):
        self.cfg = cfg
        self.window = analysis_window(cfg).astype(np.float32)
        self.mel = mel_filterbank(cfg, warp).T.astype(np.float32)  # (n_bins, n_mels); warp: see mel_filterbank
        self.dct = dct_matrix(cfg.n_mfcc, cfg.n_mels).T.astype(np.float32)  # (n_mels, n_mfcc)
        self.dct_db = (10.0 * self.dct).astype(np.float32)  # 10 * log10 folded into the DCT (it is linear)
        self.log_amin = np.float32(cfg.amin)

    def frames_to_log_mel(self, frames: np.ndarray) -> np.ndarray:
        """Raw frames ``(..., n_fft)`` to ``log10`` mel energies ``(..., n_mels)``; the DCT of ``10 *`` these is the MFCC.

        Written for few numpy calls: the streaming detector calls it every
        chunk on about ten frames, where each call's overhead costs more than
        its arithmetic.
        """
        spectrum = np.fft.rfft(frames * self.window, axis=-1)
        power = np.abs(spectrum)  # |X|, then squared in place: two calls and one array for the power spectrum
        np.square(power, out=power)
        mel = power.astype(np.float32, copy=False) @ self.mel
        np.maximum(mel, self.log_amin, out=mel)
        np.log10(mel, out=mel)
        return mel

    def frames_to_mfcc(self, frames: np.ndarray) -> np.ndarray:
        """Raw frames ``(..., n_fft)`` to MFCC ``(..., n_mfcc)``."""
        return (self.frames_to_log_mel(frames) @ self.dct_db).astype(np.float32, copy=False)

    def frames(self, y: np.ndarray) -> np.ndarray:
        """Signals ``(..., n_samples)`` as frames ``(..., n_frames, n_fft)``: a strided view, no copy."""
        y = np.asarray(y, dtype=np.float32)
        n_frames = self.cfg.n_frames(y.shape[-1])
        # Frame t is y[..., t * hop : t * hop + n_fft] (as_strided is the cheapest way to build it; the shape and
        # strides below stay inside y).
        step = y.strides[-1]
        return np.lib.stride_tricks.as_strided(
            y, y.shape[:-1] + (n_frames, self.cfg.n_fft), y.strides[:-1] + (self.cfg.hop_length * step, step), writeable=False
        )

    def masked(self, y: np.ndarray, bands: np.ndarray, spans: np.ndarray) -> np.ndarray:
        """MFCC of windows ``(n, n_samples)`` with their log-mel masked first (training only, ``mask_log_mel``)."""
        if self.cfg.n_frames(y.shape[-1]) == 0:
            return self(y)
        log_mel = mask_log_mel(self.frames_to_log_mel(self.frames(y)), bands, spans)
        return (log_mel @ self.dct_db).astype(np.float32, copy=False)

    def __call__(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=np.float32)
        if self.cfg.n_frames(y.shape[-1]) == 0:
            return np.zeros(y.shape[:-1] + (0, self.cfg.n_mfcc), np.float32)
        return self.frames_to_mfcc(self.frames(y))


def mask_log_mel(log_mel: np.ndarray, bands: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """SpecAugment masks: in window ``i`` of ``log_mel`` ``(n, frames, n_mels)``, mel bands
    ``bands[i, 0]:bands[i, 1]`` and frames ``spans[i, 0]:spans[i, 1]`` are set to the window's mean
    (a copy; empty ranges mask nothing).

    The mean, not zero or silence: a masked stretch then carries no
    information but no sharp edge either, like the zero of SpecAugment's
    normalised features.
    """
    out = log_mel.copy()
    fill = log_mel.mean(axis=(1, 2))
    for i, ((b0, b1), (t0, t1)) in enumerate(zip(bands, spans)):
        out[i, :, b0:b1] = fill[i]
        out[i, t0:t1, :] = fill[i]
    return out


class StreamingMfcc:
    """MFCC of a stream, computed once per frame as audio arrives in chunks.

    Keeps the samples not yet consumed by a complete frame (fewer than ``n_fft``
    once a frame has been emitted), so the frames returned over any sequence
    of chunks equal ``Mfcc(cfg)`` of their concatenation.
    """

    def __init__(self, cfg: FeatureConfig):
        self.cfg = cfg
        self._mfcc = Mfcc(cfg)
        self.reset()

    def reset(self) -> None:
        """Forget all buffered audio."""
        self._buf = np.zeros(4 * self.cfg.n_fft, np.float32)  # grows for chunks longer than it
        self._n = 0  # samples held, not yet consumed by a complete frame: _buf[:_n]

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Add samples; return the frames they complete, shape ``(k, n_mfcc)``."""
        chunk = np.asarray(chunk, np.float32).reshape(-1)
        n = self._n + len(chunk)
        if n > len(self._buf):
            grown = np.zeros(2 * n, np.float32)
            grown[: self._n] = self._buf[: self._n]
            self._buf = grown
        self._buf[self._n : n] = chunk
        self._n = n
        n_frames = self.cfg.n_frames(n)
        if n_frames == 0:
            return np.zeros((0, self.cfg.n_mfcc), np.float32)
        feats = self._mfcc(self._buf[: self.cfg.samples_for_frames(n_frames)])
        consumed = n_frames * self.cfg.hop_length
        self._buf[: n - consumed] = self._buf[consumed:n]  # the samples of frames still to come (< n_fft)
        self._n = n - consumed
        return feats
