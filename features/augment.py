"""On-the-fly training augmentation of 16 kHz float32 windows.

A wake word must be heard in a noisy kitchen, at any loudness, anywhere in the
listener's window, from voices the model never heard, yet volunteer and
synthetic clips are clean, levelled, centred and few. Each training epoch
therefore sees every clip changed a little. On the whole clip, before it is
cut to a window (:meth:`Augmenter.perturb_speed`):

0. played slightly faster or slower, which moves pitch, formants and tempo
   together ("speed perturbation", Ko et al. 2015): the cheapest way to make
   a few speakers sound like more. audiomentations has no such transform
   (``TimeStretch`` keeps the pitch, ``PitchShift`` the tempo, both slowly),
   so it is a linear-interpolation resampling here;
0b. given pauses between its syllables (:meth:`Augmenter.insert_pauses`):
   silence of up to ``max_pause_s`` inserted at up to ``max_pauses`` of the
   dips in the clip's loudness between its syllables
   (:func:`syllable_dips`). Real people saying a wake word to a recorder
   often say it carefully, "com - pu - ter"; synthetic voices run the
   syllables together. On the real-speech benchmark, a pause of 120 ms at
   the two deepest dips of real "computer" clips the Festival recipe's
   model detected at a score of 0.8 or more made 70 % of them missed
   (200 ms: 91 %), while slowing the same clips to 1.5 times their length
   made 15 % missed: the model knew slow speech but not pauses. The pauses
   fit in the window: a clip gets no more silence than its window has room
   for beside its spoken part.

Then on the window (:meth:`Augmenter.__call__`):

1. shifted in time within its window (``audiomentations.Shift``, no rollover:
   what leaves the window is gone, as in a stream);
2. heard in a room: convolved with one of a bank of simulated room impulse
   responses (``features.rooms``, pyroomacoustics), when the run has a bank;
3. heard through a cheap microphone: a high-pass (``HighPassFilter``, 60-400
   Hz), a low-pass (``LowPassFilter``, 3-7.5 kHz) and two peaking filters
   (``PeakingFilter``, one below and one above 1.5 kHz, +-6 dB) colour the
   spectrum the way laptop and phone microphones do; synthetic voices are
   full-band and flat. (``SevenBandParametricEQ`` would do too, at ten times
   the cost per window);
4. louder or quieter (``audiomentations.Gain``);
5. mixed with generated coloured noise at a random signal-to-noise ratio
   (``audiomentations.AddColorNoise``; its spectral slope is drawn between
   brown, -6 dB/octave, and white, 0 dB/octave, so pink and everything between
   occur too);
6. given a faint white noise floor (``audiomentations.AddGaussianNoise``, an
   absolute level): synthetic clips are padded with digital zeros, which no
   microphone ever delivers, and the model must not learn that silence is
   exactly zero;
7. mixed with one of the dataset's own ``noise`` clips at a random SNR, when
   the dataset has some. ``audiomentations.AddBackgroundNoise`` only takes
   files and re-reads one on every call (0.43 removed its cache), so this one
   step is done here on the in-memory clips, with audiomentations' own RMS/SNR
   helpers so the SNR means the same as in step 3;
8. mixed with babble (``p_babble``): one to ``max_babble_talkers`` other
   speech clips of the training split (``train.dataset.babble_sources``:
   sentences and other speech negatives, never keywords, confusables or
   mined windows), each from a random start and at equal loudness, summed
   and mixed at a random SNR. A wake word is said while a television or
   other people talk, and the model must not take every speech mixture for
   the keyword. audiomentations has no in-memory babble either.

And in the features (``train.dataset.WindowMaker.training_epoch``):

9. vocal tract length perturbation (Jaitly & Hinton 2013): the window's
   MFCC are computed with a mel filterbank read at ``warp`` times each
   frequency, ``warp`` in ``[1 - max_warp, 1 + max_warp]``; formants and
   pitch move together as if the speaker were smaller or larger, the tempo
   stays. Synthetic voices come from few vocal tracts, and real speakers
   missed most are those whose voices the synthetic ones do not cover
   (``deploy.voice_bands``). Done on the filterbank, not the audio, it costs
   nothing per window (resampling each window would cost more than the rest
   of the augmentation together).
10. SpecAugment-style masking (Park et al. 2019): one band of up to
   ``max_mask_bands`` adjacent mel bands and one span of up to
   ``max_mask_frames`` frames of the window's log-mel spectrogram (or its
   PCEN) are set to the window's mean before the DCT
   (``features.mfcc.mask_bands``). The model must then recognise the word
   with part of its spectrum or a moment of it missing, so it cannot lean
   on any one band in which clean synthetic voices and real microphones
   differ.

SNRs are relative to the RMS of the whole window the model sees, not of the
word alone. The result is clipped to [-1, 1], like audio from a sound card.

Reproducibility: audiomentations draws from the global ``random`` and
``numpy.random`` states. ``Augmenter`` owns an explicit ``numpy.random.Generator``;
for each clip it draws one seed from it, seeds those global states with it for
the duration of the call, and restores them afterwards, so a run is fixed by
its seed and nothing else in the process is disturbed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from features.audio import SAMPLE_RATE
from features.config import check_keys
from features.errors import ConfigError

WARP_STEPS = 9  # warp factors used: this many evenly spaced in [1 - max_warp, 1 + max_warp] (one filterbank each)
BROWN_DB_PER_OCTAVE = -6.02  # spectral slope of brown (1/f^2) noise
WHITE_DB_PER_OCTAVE = 0.0


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each augmentation; ``p_*`` = 0 turns one off."""

    p_speed: float = 0.8  # chance of a speed change of the whole clip
    min_speed: float = 0.9  # speed factor drawn uniformly in [min, max]; 1.1 = 10 % faster and higher
    max_speed: float = 1.1
    p_shift: float = 0.5  # chance of a time shift
    max_shift_s: float = 0.1  # shift drawn uniformly in [-max, +max] seconds
    p_gain: float = 1.0  # chance of a gain change
    min_gain_db: float = -6.0
    max_gain_db: float = 6.0
    p_color_noise: float = 0.7  # chance of generated white..brown noise
    min_snr_db: float = 5.0  # SNR of generated noise, dB
    max_snr_db: float = 30.0
    p_floor: float = 1.0  # chance of a faint white noise floor (absolute level, not relative to the signal)
    min_floor_db: float = -80.0  # RMS of the noise floor, dB re full scale
    max_floor_db: float = -55.0
    p_background: float = 0.5  # chance of mixing in a dataset noise clip (if there are any)
    min_background_snr_db: float = 0.0  # SNR of dataset noise clips, dB
    max_background_snr_db: float = 20.0
    p_room: float = 0.0  # chance of room reverberation (needs a bank of simulated rooms: n_rooms > 0)
    n_rooms: int = 0  # rooms simulated once per training run
    min_rt60_s: float = 0.15  # reverberation time of the simulated rooms, drawn uniformly
    max_rt60_s: float = 0.8
    p_mic: float = 0.0  # chance of microphone colouration (band limits and two peaking filters)
    max_mic_eq_db: float = 6.0  # each peaking filter's gain drawn in [-max, +max] dB
    p_warp: float = 0.0  # chance of vocal tract length perturbation (a warped mel filterbank, features.mfcc.mel_filterbank)
    max_warp: float = 0.1  # warp factor drawn in [1 - max, 1 + max], in WARP_STEPS steps
    p_mask: float = 0.0  # chance of SpecAugment masking of the window's log-mel spectrogram (features.mfcc.mask_bands)
    max_mask_bands: int = 6  # width of the masked band of mel bands, drawn in [0, max]
    max_mask_frames: int = 10  # width of the masked span of frames, drawn in [0, max]
    p_pause: float = 0.0  # chance of pauses between the syllables of a clip (syllable_dips)
    max_pause_s: float = 0.2  # each pause drawn uniformly in [0, max] seconds
    max_pauses: int = 2  # how many syllable boundaries get a pause, drawn in [1, max]
    p_babble: float = 0.0  # chance of babble: other speech clips of the training split mixed in (train.dataset.babble_sources)
    max_babble_talkers: int = 4  # talkers in the babble, drawn in [1, max]
    min_babble_snr_db: float = 5.0  # SNR of the babble against the window, dB
    max_babble_snr_db: float = 20.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ConfigError(f"augment.{f.name} must be a number, got {value!r}")
            if f.name.startswith("p_") and not 0.0 <= value <= 1.0:
                raise ConfigError(f"augment.{f.name} must be a probability in [0, 1], got {value}")
        if not 0.0 <= self.max_shift_s < 1.0:
            raise ConfigError(f"augment.max_shift_s must be in [0, 1) seconds, got {self.max_shift_s}")
        if not 0.5 <= self.min_speed <= self.max_speed <= 2.0:
            raise ConfigError(f"augment speed factors need 0.5 <= min_speed <= max_speed <= 2, got {self.min_speed}..{self.max_speed}")
        if self.n_rooms < 0 or int(self.n_rooms) != self.n_rooms:
            raise ConfigError(f"augment.n_rooms must be a whole number >= 0, got {self.n_rooms}")
        if self.p_room > 0 and self.n_rooms == 0:
            raise ConfigError("augment.p_room > 0 needs augment.n_rooms > 0 (how many rooms to simulate)")
        if not 0.05 <= self.min_rt60_s <= self.max_rt60_s <= 2.0:
            raise ConfigError(f"augment reverberation times need 0.05 <= min_rt60_s <= max_rt60_s <= 2 s, got {self.min_rt60_s}..{self.max_rt60_s}")
        if not 0.0 <= self.max_warp <= 0.3:
            raise ConfigError(f"augment.max_warp must be in [0, 0.3] (a warp factor of 0.7-1.3 at most), got {self.max_warp}")
        if not 0.0 <= self.max_pause_s <= 0.5:
            raise ConfigError(f"augment.max_pause_s must be in [0, 0.5] seconds, got {self.max_pause_s}")
        for name in ("max_pauses", "max_babble_talkers"):
            if getattr(self, name) < 1 or int(getattr(self, name)) != getattr(self, name):
                raise ConfigError(f"augment.{name} must be a whole number >= 1, got {getattr(self, name)}")
        for name in ("max_mask_bands", "max_mask_frames"):
            if getattr(self, name) < 0 or int(getattr(self, name)) != getattr(self, name):
                raise ConfigError(f"augment.{name} must be a whole number >= 0, got {getattr(self, name)}")
        if self.max_floor_db > 0:
            raise ConfigError(f"augment.max_floor_db must be at most 0 dB re full scale, got {self.max_floor_db}")
        for lo, hi in (("min_gain_db", "max_gain_db"), ("min_snr_db", "max_snr_db"), ("min_floor_db", "max_floor_db"),
                       ("min_background_snr_db", "max_background_snr_db"), ("min_babble_snr_db", "max_babble_snr_db")):
            if getattr(self, lo) > getattr(self, hi):
                raise ConfigError(f"augment.{lo} ({getattr(self, lo)}) is above augment.{hi} ({getattr(self, hi)})")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AugmentConfig":
        check_keys(cls, d, "augment")
        return cls(**d)

    @classmethod
    def off(cls) -> "AugmentConfig":
        """No augmentation at all (every probability 0)."""
        return cls(p_speed=0.0, p_shift=0.0, p_gain=0.0, p_color_noise=0.0, p_floor=0.0, p_background=0.0, p_room=0.0, p_mic=0.0,
                   p_warp=0.0, p_mask=0.0)


@contextlib.contextmanager
def _seeded_globals(seed: int) -> Iterator[None]:
    """Seed ``random`` and ``numpy.random`` (what audiomentations draws from), then restore them."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


class Augmenter:
    """Applies ``AugmentConfig`` to one window at a time, reproducibly from ``seed``.

    ``noise_clips`` are background recordings (the dataset's ``noise`` rows) to
    mix in; with none, step 7 is skipped. ``babble_clips`` are the speech
    clips babble is made of; with none, step 8 is skipped. ``rooms`` are room
    impulse responses (``features.rooms.impulse_responses``); with none, step
    2 is skipped.

    >>> aug = Augmenter(AugmentConfig(), seed=0)
    >>> aug(np.zeros(16000, np.float32)).shape
    (16000,)
    """

    def __init__(
        self,
        config: AugmentConfig,
        seed: int | Sequence[int] | np.random.Generator = 0,
        noise_clips: Sequence[np.ndarray] = (),
        sample_rate: int = SAMPLE_RATE,
        rooms: Sequence[np.ndarray] = (),
        babble_clips: Sequence[np.ndarray] = (),
    ):
        from audiomentations import (AddColorNoise, AddGaussianNoise, Compose, Gain, HighPassFilter, LowPassFilter,
                                     PeakingFilter, Shift)

        self.config = config
        self.sample_rate = sample_rate
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.noise_clips = [np.asarray(c, np.float32) for c in noise_clips if len(c)]
        self.babble_clips = [np.asarray(c, np.float32) for c in babble_clips if len(c)]
        self.rooms = list(rooms)
        c = config
        self._shift = Shift(min_shift=-c.max_shift_s, max_shift=c.max_shift_s, shift_unit="seconds", rollover=False,
                            fade_duration=0.0, p=c.p_shift if c.max_shift_s > 0 else 0.0)
        self._transform = Compose([
            Compose([
                HighPassFilter(min_cutoff_freq=60.0, max_cutoff_freq=400.0, min_rolloff=12, max_rolloff=12, p=1.0),
                LowPassFilter(min_cutoff_freq=3000.0, max_cutoff_freq=7500.0, min_rolloff=12, max_rolloff=12, p=1.0),
                PeakingFilter(min_center_freq=200.0, max_center_freq=1500.0, min_gain_db=-c.max_mic_eq_db,
                              max_gain_db=c.max_mic_eq_db, min_q=0.5, max_q=3.0, p=1.0),
                PeakingFilter(min_center_freq=1500.0, max_center_freq=6000.0, min_gain_db=-c.max_mic_eq_db,
                              max_gain_db=c.max_mic_eq_db, min_q=0.5, max_q=3.0, p=1.0),
            ], p=c.p_mic),
            Gain(min_gain_db=c.min_gain_db, max_gain_db=c.max_gain_db, p=c.p_gain),
            AddColorNoise(min_snr_db=c.min_snr_db, max_snr_db=c.max_snr_db, min_f_decay=BROWN_DB_PER_OCTAVE,
                          max_f_decay=WHITE_DB_PER_OCTAVE, p=c.p_color_noise),
            AddGaussianNoise(min_amplitude=10 ** (c.min_floor_db / 20), max_amplitude=10 ** (c.max_floor_db / 20), p=c.p_floor),
        ])

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """An augmented copy of ``audio`` (1-D float32), same length, clipped to [-1, 1]."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"Augmenter takes one mono window (1-D), got shape {audio.shape}")
        with _seeded_globals(int(self.rng.integers(2**32))):
            out = self._shift(audio.copy(), sample_rate=self.sample_rate)
            if self.rooms and self.rng.random() < self.config.p_room:
                out = self._in_room(out)
            out = self._transform(out, sample_rate=self.sample_rate)
        if self.noise_clips and self.rng.random() < self.config.p_background:
            snr = self.rng.uniform(self.config.min_background_snr_db, self.config.max_background_snr_db)
            out = mix_at_snr(out, self._background(len(out)), snr)
        # p_babble > 0 first: runs without babble draw exactly what they drew before it existed
        if self.config.p_babble > 0 and self.babble_clips and self.rng.random() < self.config.p_babble:
            snr = self.rng.uniform(self.config.min_babble_snr_db, self.config.max_babble_snr_db)
            out = mix_at_snr(out, self._babble(len(out)), snr)
        return np.clip(out, -1.0, 1.0).astype(np.float32, copy=False)

    def perturb_speed(self, audio: np.ndarray) -> np.ndarray:
        """The whole clip played at a random speed (length changes by 1/factor), or unchanged."""
        if self.config.p_speed <= 0 or self.rng.random() >= self.config.p_speed:
            return audio
        factor = self.rng.uniform(self.config.min_speed, self.config.max_speed)
        return change_speed(audio, factor)

    def insert_pauses(self, audio: np.ndarray, span: tuple[int, int], room: int) -> tuple[np.ndarray, tuple[int, int]]:
        """``(audio, span)`` with silence inserted at some of the syllable dips inside ``span``, or unchanged.

        ``room``: the most samples of silence that may be added in all (what
        the window has beside the spoken part); the span grows by what was added.
        """
        c = self.config
        if c.p_pause <= 0 or self.rng.random() >= c.p_pause:
            return audio, span
        dips = syllable_dips(audio, span, self.sample_rate)
        if not dips or room <= 0:
            return audio, span
        n = min(len(dips), int(self.rng.integers(1, c.max_pauses + 1)))
        chosen = np.sort(self.rng.choice(dips, size=n, replace=False))
        lengths = (self.rng.uniform(0.0, c.max_pause_s, size=n) * self.sample_rate).astype(int)
        if lengths.sum() > room:  # shrink them together so the keyword still fits its window
            lengths = (lengths * room / lengths.sum()).astype(int)
        return with_pauses(audio, chosen, lengths), (span[0], span[1] + int(lengths.sum()))

    def _in_room(self, audio: np.ndarray) -> np.ndarray:
        """The window convolved with a random room of the bank, cut back to its length (the tail leaves, as in a stream)."""
        from scipy.signal import fftconvolve

        room = self.rooms[int(self.rng.integers(len(self.rooms)))]
        return fftconvolve(audio, room)[: len(audio)].astype(np.float32)

    def _background(self, n: int) -> np.ndarray:
        """``n`` samples of a random noise clip from a random start, looped if the clip is shorter."""
        return self._looped(self.noise_clips[int(self.rng.integers(len(self.noise_clips)))], n)

    def _babble(self, n: int) -> np.ndarray:
        """``n`` samples of 1 to ``max_babble_talkers`` speech clips, each from a random start, at equal RMS, summed."""
        from audiomentations.core.utils import calculate_rms

        talkers = int(self.rng.integers(1, int(self.config.max_babble_talkers) + 1))
        out = np.zeros(n, np.float32)
        for i in self.rng.choice(len(self.babble_clips), size=min(talkers, len(self.babble_clips)), replace=False):
            part = self._looped(self.babble_clips[int(i)], n)
            rms = calculate_rms(part)
            if rms > 0:  # a start in a clip's silence can give a silent stretch: it adds nothing
                out += part / rms
        return out

    def _looped(self, clip: np.ndarray, n: int) -> np.ndarray:
        """``n`` samples of ``clip`` from a random start, looped if the clip is shorter."""
        start = int(self.rng.integers(len(clip)))
        reps = -(-(start + n) // len(clip))
        return np.tile(clip, reps)[start : start + n]


PAUSE_FRAME_S = 0.010  # loudness frames in which syllable_dips looks for the gaps between syllables
MIN_DIP_DB = 6.0  # a dip must be this far below the loudest frame on each side of it
DIP_EDGE = 0.15  # dips are looked for inside the span only, this share of it away from either end


def syllable_dips(audio: np.ndarray, span: tuple[int, int], sample_rate: int = SAMPLE_RATE, most: int | None = None) -> list[int]:
    """Sample positions inside ``span`` where the loudness dips between two syllables.

    A dip is a frame of the smoothed RMS envelope (10 ms frames, 30 ms
    smoothing) that is the quietest within 40 ms either side and at least
    ``MIN_DIP_DB`` below the loudest frame before it and after it: a stop
    closure or a weak consonant between two vowels. Returns the middles of
    those dips in time order (none for a single syllable or silence); a
    flat gap counts once, at its middle. ``most``: only that many, the
    deepest.

    >>> t = np.arange(16000) / 16000
    >>> two = np.sin(2 * np.pi * 200 * t) * (np.abs(t - 0.5) > 0.1)  # two "syllables" with 200 ms of silence between
    >>> [round(p / 16000, 1) for p in syllable_dips(two.astype(np.float32), (0, 16000))]
    [0.5]
    """
    start, end = span
    hop = max(1, int(PAUSE_FRAME_S * sample_rate))
    n = (end - start) // hop
    if n < 5:
        return []
    frames = audio[start : start + n * hop].reshape(n, hop).astype(np.float64)
    level = 20 * np.log10(np.convolve(np.sqrt(np.mean(frames**2, axis=1)), np.ones(3) / 3, "same") + 1e-9)
    inside = range(max(1, int(DIP_EDGE * n)), int((1 - DIP_EDGE) * n))  # a dip needs a frame before it and after it
    depth = {i: min(level[:i].max(), level[i + 1 :].max()) - level[i] for i in inside if level[i] == level[max(0, i - 4) : i + 5].min()}
    groups: list[list[int]] = []  # frames of one dip: no louder syllable between them (a flat-bottomed gap is one dip)
    for i in (i for i, d in depth.items() if d >= MIN_DIP_DB):
        if groups and level[groups[-1][-1] : i + 1].max() - max(level[groups[-1][-1]], level[i]) < MIN_DIP_DB:
            groups[-1].append(i)
        else:
            groups.append([i])
    if most is not None:
        groups = sorted(sorted(groups, key=lambda g: -max(depth[i] for i in g))[:most])
    return [start + ((g[0] + g[-1]) // 2) * hop + hop // 2 for g in groups]


def with_pauses(audio: np.ndarray, at: Sequence[int], lengths: Sequence[int]) -> np.ndarray:
    """``audio`` with ``lengths[k]`` samples of silence inserted at sample ``at[k]`` (``at`` in time order)."""
    parts, last = [], 0
    for position, length in zip(at, lengths):
        parts += [audio[last:position], np.zeros(int(length), np.float32)]
        last = position
    parts.append(audio[last:])
    return np.concatenate(parts).astype(np.float32, copy=False)


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``signal + noise`` with the noise scaled so that RMS(signal)/RMS(noise) is ``snr_db``.

    A silent signal gets no noise (an SNR is undefined there), as in
    audiomentations' relative-SNR transforms; a silent noise clip adds nothing.
    """
    from audiomentations.core.utils import calculate_desired_noise_rms, calculate_rms

    signal_rms, noise_rms = calculate_rms(signal), calculate_rms(noise)
    if signal_rms == 0 or noise_rms == 0:
        return signal
    gain = calculate_desired_noise_rms(signal_rms, snr_db) / noise_rms
    return (signal + gain * noise).astype(np.float32)


def change_speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """Resample by linear interpolation so the clip plays ``factor`` times faster (and higher)."""
    audio = np.asarray(audio, dtype=np.float32)
    n_out = max(1, int(round(len(audio) / factor)))
    positions = np.arange(n_out, dtype=np.float64) * factor
    return np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)
