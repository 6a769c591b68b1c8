"""Manifest rows to fixed-length MFCC windows, the tensors the classifier trains on.

Why it works the way it does:

- **One window definition.** The model sees ``window_frames`` MFCC frames,
  i.e. ``window_samples`` audio samples (:func:`window_geometry`); export and the
  streaming detector read both numbers from the checkpoint, so training and
  listening cannot disagree.
- **Keywords anywhere in the window.** The streaming detector scores whatever
  the last second holds, so in training a keyword clip's *spoken part* (found by
  energy, :func:`active_span`) is placed at a random offset, fully inside the
  window and ``margin`` samples clear of its edges (room for the augmenter's
  time shift). Its own surrounding audio fills the rest of the window, zeros
  beyond the clip's ends. Other clips (sentences, noise) are cropped at a
  random offset. Evaluation windows are centred (:func:`features.audio.center_in_window`),
  as in export and evaluation, and never augmented.
- **Fresh augmentation every epoch**, reproducible: epoch ``e`` of a run with
  seed ``s`` draws from ``numpy.random.default_rng([s, e])`` only, so the same
  run gives the same windows whether or not the next epoch is prepared in a
  background thread.
- **Audio cached in memory**: datasets are small (2,000 one-second clips is
  about 100 MB as float32) and decoding dominates otherwise.
- **Features by the runtime's own code**: ``features.mfcc.Mfcc`` (numpy), the
  implementation the listener uses.

Labels: index 0 is ``negative`` (``negative`` and ``noise`` rows), then the
keywords in sorted order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from collect.manifest import MINED, NEGATIVE, NOISE, ClipRow
from features.audio import center_in_window, load_audio
from features.augment import WARP_STEPS, AugmentConfig, Augmenter
from features.config import FeatureConfig
from features.errors import AudioError, ManifestError
from features.mfcc import Mfcc

log = logging.getLogger("kws")

MFCC_CHUNK = 256  # windows per MFCC call: bounds the (chunk, frames, n_fft) frame buffer to ~50 MB
SPAN_FRAME_S = 0.010  # frame length used to find the spoken part of a clip
SPAN_FLOOR_DB = -35.0  # frames this far below the loudest frame are silence


def window_geometry(cfg: FeatureConfig, window_s: float) -> tuple[int, int]:
    """``(window_samples, window_frames)``: whole frames that fit in ``window_s`` seconds, and their samples.

    >>> window_geometry(FeatureConfig(), 1.0)
    (15872, 97)
    """
    frames = cfg.n_frames(int(window_s * cfg.sample_rate))
    return cfg.samples_for_frames(frames), frames


def label_names(rows: Sequence[ClipRow]) -> list[str]:
    """``["negative", keyword, ...]``: the model's output classes, keywords sorted."""
    return [NEGATIVE] + sorted({r.label for r in rows} - {NEGATIVE, NOISE})


def label_index(label: str, labels: Sequence[str]) -> int:
    """Class index of a row label (``noise`` counts as negative)."""
    return 0 if label in (NEGATIVE, NOISE) else labels.index(label)


@dataclass(frozen=True)
class Clip:
    """A decoded clip with its class and the part of it that is speech (sample indices)."""

    row: ClipRow
    audio: np.ndarray
    label: int
    span: tuple[int, int]


def active_span(audio: np.ndarray, sample_rate: int) -> tuple[int, int]:
    """``(start, end)`` samples of the non-silent part: 10 ms frames within 35 dB of the loudest one."""
    hop = max(1, int(SPAN_FRAME_S * sample_rate))
    n = len(audio) // hop
    if n == 0:
        return 0, len(audio)
    rms = np.sqrt(np.mean(audio[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1))
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (SPAN_FLOOR_DB / 20))
    if len(loud) == 0:
        return 0, len(audio)
    return int(loud[0] * hop), int(min(len(audio), (loud[-1] + 1) * hop))


def load_clips(dataset: str | Path, rows: Sequence[ClipRow], sample_rate: int) -> tuple[list[Clip], list[str], list[str]]:
    """Decode every row's file: ``(clips, labels, skipped)``.

    Rows whose file is missing or unusable are returned in ``skipped`` (one
    reason each, naming the file) rather than raised, so one bad file never
    stops a run. ``labels`` come from the usable rows only, so a keyword
    whose every file is gone does not become a class without examples.
    """
    dataset = Path(dataset)
    loaded, skipped = [], []
    for row in rows:
        try:
            loaded.append((row, load_audio(dataset / row.path, sample_rate, allow_silence=row.label == NOISE)))
        except AudioError as exc:
            skipped.append(str(exc))
    labels = label_names([row for row, _ in loaded])
    clips = [Clip(row, audio, label_index(row.label, labels), active_span(audio, sample_rate)) for row, audio in loaded]
    return clips, labels, skipped


def crop(audio: np.ndarray, start: int, n: int) -> np.ndarray:
    """``audio[start:start+n]`` where ``start`` may be negative or run past the end; zeros outside the clip."""
    out = np.zeros(n, np.float32)
    lo, hi = max(start, 0), min(start + n, len(audio))
    if hi > lo:
        out[lo - start : hi - start] = audio[lo:hi]
    return out


def training_window(clip: Clip, n: int, margin: int, rng: np.random.Generator) -> np.ndarray:
    """A window of ``n`` samples at a random position (see the module docstring)."""
    if clip.label > 0:  # a keyword: its spoken part goes fully inside, anywhere with `margin` to spare
        s, e = clip.span
        room = n - (e - s) - 2 * margin
        if room < 0:  # too long for the window: keep its middle
            return crop(clip.audio, s + (e - s - n) // 2, n)
        offset = margin + int(rng.integers(room + 1))
        return crop(clip.audio, s - offset, n)
    extra = len(clip.audio) - n  # anything else: a random crop, or the clip at a random place in the window
    start = int(rng.integers(min(0, extra), max(0, extra) + 1))
    return crop(clip.audio, start, n)


class WindowMaker:
    """Turns decoded clips into MFCC tensors: augmented training epochs and fixed evaluation sets."""

    def __init__(self, cfg: FeatureConfig, window_s: float, augment: AugmentConfig, seed: int,
                 noise_clips: Sequence[np.ndarray] = (), progress: bool = True, babble_clips: Sequence[np.ndarray] = ()):
        self.cfg = cfg
        self.window_samples, self.window_frames = window_geometry(cfg, window_s)
        self.augment = augment
        self.seed = seed
        self.noise_clips = list(noise_clips)
        self.babble_clips = list(babble_clips)
        self.rooms = []
        if augment.p_room > 0:  # simulated once per run; each window then picks one (features.rooms)
            from features.rooms import impulse_responses

            self.rooms = impulse_responses(int(augment.n_rooms), seed, min_rt60=augment.min_rt60_s, max_rt60=augment.max_rt60_s,
                                           sample_rate=cfg.sample_rate, progress=progress)
        self.margin = min(int(augment.max_shift_s * cfg.sample_rate), self.window_samples // 4) if augment.p_shift > 0 else 0
        self.mfcc = Mfcc(cfg)
        self.warps = np.linspace(1 - augment.max_warp, 1 + augment.max_warp, WARP_STEPS) if augment.p_warp > 0 else np.ones(1)
        self.warped = {float(w): Mfcc(cfg, warp=float(w)) for w in self.warps if w != 1.0}

    def features(self, windows: np.ndarray, warps: np.ndarray | None = None, masks: tuple[np.ndarray, np.ndarray] | None = None) -> torch.Tensor:
        """``(n, window_samples)`` audio to a ``(n, window_frames, n_mfcc)`` float32 tensor.

        ``warps``: one vocal-tract warp factor per window (one of ``self.warps``; 1 = none).
        ``masks``: per window, the mel bands and the frames to mask (``features.mfcc.mask_bands``), or None.
        """
        out = np.empty((len(windows), self.window_frames, self.cfg.n_mfcc), np.float32)
        warps = np.ones(len(windows)) if warps is None else warps
        for w in np.unique(warps):
            mfcc = self.mfcc if w == 1.0 else self.warped[float(w)]
            idx = np.flatnonzero(warps == w)
            for i in range(0, len(idx), MFCC_CHUNK):
                chunk = idx[i : i + MFCC_CHUNK]
                out[chunk] = mfcc(windows[chunk]) if masks is None else mfcc.masked(windows[chunk], masks[0][chunk], masks[1][chunk])
        return torch.from_numpy(out)

    def draw_masks(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """SpecAugment masks for ``n`` windows: ``(bands, spans)``, each ``(n, 2)`` start/stop; unmasked windows get empty ranges."""
        a, n_mels = self.augment, self.cfg.n_mels

        def ranges(max_width: int, size: int) -> np.ndarray:
            width = rng.integers(0, min(int(max_width), size) + 1, size=n)
            start = rng.integers(0, size - width + 1)
            return np.stack([start, start + width], axis=1)

        masked = rng.random(n) < a.p_mask
        bands, spans = ranges(a.max_mask_bands, n_mels), ranges(a.max_mask_frames, self.window_frames)
        bands[~masked] = 0
        spans[~masked] = 0
        return bands, spans

    def training_epoch(self, clips: Sequence[Clip], epoch: int, n_windows: int = 0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """Features, labels and clip indices (into ``clips``) of one epoch's windows, freshly placed and augmented.

        Deterministic in ``(seed, epoch)``. Every clip once, or, if
        ``n_windows`` is larger, every clip as often as fits and a random
        selection for the rest: a small dataset then still gives enough
        optimiser steps per epoch, each repeat differently augmented. The
        indices tell the loop which speaker group a window belongs to.
        """
        rng = np.random.default_rng([self.seed, epoch])
        full, rest = divmod(max(n_windows, len(clips)), len(clips))
        index = np.concatenate([np.tile(np.arange(len(clips)), full), rng.permutation(len(clips))[:rest]])
        picked = [clips[i] for i in index]
        augmenter = Augmenter(self.augment, seed=rng, noise_clips=self.noise_clips, sample_rate=self.cfg.sample_rate,
                              rooms=self.rooms, babble_clips=self.babble_clips)
        windows = np.stack([augmenter(training_window(self._perturbed(c, augmenter), self.window_samples, self.margin, rng))
                            for c in picked])
        warps = None
        if self.augment.p_warp > 0:  # drawn after the windows, so runs without warping draw exactly what they did before
            warped = rng.random(len(picked)) < self.augment.p_warp
            warps = np.where(warped, self.warps[rng.integers(len(self.warps), size=len(picked))], 1.0)
        masks = self.draw_masks(len(picked), rng) if self.augment.p_mask > 0 else None  # drawn last, for the same reason
        return self.features(windows, warps, masks), labels_tensor(picked), index

    def _perturbed(self, clip: Clip, augmenter: Augmenter) -> Clip:
        """The clip after the augmenter's speed change (its spoken part found again) and pauses between syllables."""
        audio = augmenter.perturb_speed(clip.audio)
        span = clip.span if audio is clip.audio else active_span(audio, self.cfg.sample_rate)
        room = self.window_samples - (span[1] - span[0]) - 2 * self.margin
        audio, span = augmenter.insert_pauses(audio, span, room)
        if audio is clip.audio:
            return clip
        return Clip(clip.row, audio, clip.label, span)

    def eval_set(self, clips: Sequence[Clip]) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and labels of every clip, centred in the window, not augmented."""
        if not clips:
            return torch.zeros(0, self.window_frames, self.cfg.n_mfcc), torch.zeros(0, dtype=torch.long)
        windows = np.stack([center_in_window(c.audio, self.window_samples) for c in clips])
        return self.features(windows), labels_tensor(clips)


BABBLE_EXCLUDED_KINDS = ("confusable", MINED)  # negatives never babbled: they could put (part of) the keyword into a negative


def babble_sources(clips: Sequence[Clip]) -> list[np.ndarray]:
    """The audio babble is made of (``augment.p_babble``): speech negatives (so never keywords) that are not confusables or mined windows.

    Pass the training split only, so no validation or test voice is heard in training.
    """
    return [c.audio for c in clips if c.row.label == NEGATIVE and c.row.kind not in BABBLE_EXCLUDED_KINDS]


def labels_tensor(clips: Sequence[Clip]) -> torch.Tensor:
    return torch.tensor([c.label for c in clips], dtype=torch.long)


def check_classes(clips: Sequence[Clip], labels: Sequence[str], dataset: str | Path) -> None:
    """Refuse to train without both keyword clips and negatives (``ManifestError`` saying which are missing)."""
    present = {c.label for c in clips}
    if len(labels) < 2 or not present - {0}:
        raise ManifestError(f"{dataset}: no usable keyword clips (every label is '{NEGATIVE}' or '{NOISE}'); "
                            "record or synthesise the wake word first")
    if 0 not in present:
        raise ManifestError(f"{dataset}: no usable negative clips ('{NEGATIVE}' speech or '{NOISE}'); "
                            "a detector needs examples of what is not the keyword")
