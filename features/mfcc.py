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

With ``cfg.pcen_s > 0`` the log of the mel energies is replaced by PCEN
(per-channel energy normalisation, Wang et al. 2017, as ``librosa.pcen``
computes it): each band divided by its own recent average and root-compressed,
an automatic gain per band that flattens a steady noise floor to about zero
while onsets stand out. A whole signal starts the average at its first frame;
a stream carries it from chunk to chunk.
"""

from __future__ import annotations

import functools

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


PCEN_GAIN, PCEN_BIAS, PCEN_POWER, PCEN_EPS = 0.98, 2.0, 0.5, 1e-6  # librosa.pcen's defaults
PCEN_BLOCK = 128  # frames smoothed per matrix product; longer signals go block by block


def pcen_weight(cfg: FeatureConfig) -> float:
    """The smoother's weight ``b`` of each new frame, from the time constant as ``librosa.pcen`` derives it."""
    t_frames = cfg.pcen_s * cfg.sample_rate / cfg.hop_length
    return float((np.sqrt(1 + 4 * t_frames**2) - 1) / (2 * t_frames**2))


@functools.lru_cache(maxsize=8)
def _pcen_matrices(b: float) -> tuple[np.ndarray, np.ndarray]:
    """The smoother over one block: ``W[t, k] = b (1 - b)^(t - k)`` for ``k <= t``, and ``decay[t] = (1 - b)^(t + 1)``.

    Made once per weight (the listener smooths every chunk); any shorter block uses their top-left corner.
    """
    lag = np.arange(PCEN_BLOCK)[:, None] - np.arange(PCEN_BLOCK)[None, :]
    weights = np.where(lag >= 0, b * (1 - b) ** np.maximum(lag, 0), 0.0).astype(np.float32)
    decay = ((1 - b) ** np.arange(1, PCEN_BLOCK + 1)).astype(np.float32)[:, None]
    weights.flags.writeable = decay.flags.writeable = False
    return weights, decay


def pcen(power: np.ndarray, b: float, last: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """PCEN of mel power ``(..., frames, n_mels)``; returns it and the smoother's last value ``(..., n_mels)``.

    The smoother is ``M[t] = (1 - b) M[t-1] + b E[t]``, started from ``last``
    (the previous chunk's return value) or, without it, as if the frames
    before the first had its energy (``M[0] = E[0]``). The recursion is
    written as a matrix product per block of frames, ``M = W @ E + decay *
    last``, because a Python loop over frames would cost more than the FFT on
    training batches.
    """
    power = np.asarray(power, np.float32)
    weights, decay = _pcen_matrices(b)
    prev = power[..., 0, :] if last is None else np.asarray(last, np.float32)
    smooth = np.empty_like(power)
    for start in range(0, power.shape[-2], PCEN_BLOCK):
        block = power[..., start : start + PCEN_BLOCK, :]
        k = block.shape[-2]
        smooth[..., start : start + k, :] = weights[:k, :k] @ block + decay[:k] * prev[..., None, :]
        prev = smooth[..., start + k - 1, :]
    gain = (smooth + np.float32(PCEN_EPS)) ** np.float32(-PCEN_GAIN)
    out = (power * gain + np.float32(PCEN_BIAS)) ** np.float32(PCEN_POWER) - np.float32(PCEN_BIAS**PCEN_POWER)
    return out.astype(np.float32, copy=False), prev.copy()


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
        # The DCT applied to the compressed bands: for the log, 10 * log10 is folded into it (it is linear).
        self.dct_out = (self.dct if cfg.pcen_s else 10.0 * self.dct).astype(np.float32)
        self.log_amin = np.float32(cfg.amin)
        self.pcen_b = pcen_weight(cfg) if cfg.pcen_s else 0.0

    def frames_to_bands(self, frames: np.ndarray, last: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw frames ``(..., n_fft)`` to compressed mel bands ``(..., n_mels)``: ``log10`` energies, or PCEN.

        Returns the bands and the PCEN smoother's last value to pass as
        ``last`` with the next frames of the same stream (None for the log,
        which has no state). Written for few numpy calls: the streaming
        detector calls it every chunk on about ten frames, where each call's
        overhead costs more than its arithmetic.
        """
        spectrum = np.fft.rfft(frames * self.window, axis=-1)
        power = np.abs(spectrum)  # |X|, then squared in place: two calls and one array for the power spectrum
        np.square(power, out=power)
        mel = power.astype(np.float32, copy=False) @ self.mel
        if self.pcen_b:
            return pcen(mel, self.pcen_b, last)
        np.maximum(mel, self.log_amin, out=mel)
        np.log10(mel, out=mel)
        return mel, None

    def frames_to_mfcc(self, frames: np.ndarray, last: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw frames ``(..., n_fft)`` to MFCC ``(..., n_mfcc)``, and the smoother state as ``frames_to_bands`` returns it."""
        bands, last = self.frames_to_bands(frames, last)
        return (bands @ self.dct_out).astype(np.float32, copy=False), last

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
        """MFCC of windows ``(n, n_samples)`` with their compressed mel bands masked first (training only, ``mask_bands``)."""
        if self.cfg.n_frames(y.shape[-1]) == 0:
            return self(y)
        mel = mask_bands(self.frames_to_bands(self.frames(y))[0], bands, spans)
        return (mel @ self.dct_out).astype(np.float32, copy=False)

    def __call__(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=np.float32)
        if self.cfg.n_frames(y.shape[-1]) == 0:
            return np.zeros(y.shape[:-1] + (0, self.cfg.n_mfcc), np.float32)
        return self.frames_to_mfcc(self.frames(y))[0]


def hop_windows(feats: np.ndarray, window_frames: int, hop_frames: int) -> np.ndarray:
    """Windows ``(n, window_frames, n_mfcc)`` of a recording's features ``(n_frames, n_mfcc)``, one starting every ``hop_frames``.

    What a model sees over a stream, one window per detector hop; a
    recording shorter than one window gives none (no padding).
    """
    starts = np.arange(0, len(feats) - window_frames + 1, hop_frames)
    if not len(starts):
        return np.zeros((0, window_frames, feats.shape[-1]), np.float32)
    return np.stack([feats[s : s + window_frames] for s in starts])


def mask_bands(mel: np.ndarray, bands: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """SpecAugment masks: in window ``i`` of the compressed mel bands ``mel`` ``(n, frames, n_mels)``,
    bands ``bands[i, 0]:bands[i, 1]`` and frames ``spans[i, 0]:spans[i, 1]`` are set to the window's mean
    (a copy; empty ranges mask nothing).

    The mean, not zero or silence: a masked stretch then carries no
    information but no sharp edge either, like the zero of SpecAugment's
    normalised features.
    """
    out = mel.copy()
    fill = mel.mean(axis=(1, 2))
    for i, ((b0, b1), (t0, t1)) in enumerate(zip(bands, spans)):
        out[i, :, b0:b1] = fill[i]
        out[i, t0:t1, :] = fill[i]
    return out


class StreamingMfcc:
    """MFCC of a stream, computed once per frame as audio arrives in chunks.

    Keeps the samples not yet consumed by a complete frame (fewer than ``n_fft``
    once a frame has been emitted), and PCEN's smoother, so the frames
    returned over any sequence of chunks equal ``Mfcc(cfg)`` of their
    concatenation.
    """

    def __init__(self, cfg: FeatureConfig):
        self.cfg = cfg
        self._mfcc = Mfcc(cfg)
        self.reset()

    def reset(self) -> None:
        """Forget all buffered audio."""
        self._buf = np.zeros(4 * self.cfg.n_fft, np.float32)  # grows for chunks longer than it
        self._n = 0  # samples held, not yet consumed by a complete frame: _buf[:_n]
        self._last = None  # PCEN smoother after the last frame (None before the first, and always for the log)

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
        feats, self._last = self._mfcc.frames_to_mfcc(self._mfcc.frames(self._buf[: self.cfg.samples_for_frames(n_frames)]), self._last)
        consumed = n_frames * self.cfg.hop_length
        self._buf[: n - consumed] = self._buf[consumed:n]  # the samples of frames still to come (< n_fft)
        self._n = n - consumed
        return feats
