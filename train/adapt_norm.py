"""A trained model's normalisation statistics moved towards the audio it will hear (AdaBN).

Why: every batch-normalisation layer of our models divides by the mean and
variance it saw in training, and training saw synthetic voices under
generated noise and simulated rooms. Real microphones, rooms and speakers
shift those statistics; the layers then pass on inputs a little off the
scale the next layer learnt. Li et al. (2016, "Revisiting batch
normalization for practical domain adaptation") re-estimate the statistics
on unlabelled audio of the new kind and leave every weight as it is. No
label is needed, so the real-speech benchmark (``adapt_norm`` in its
config) adapts each rotation's model to the real recordings of its
training-side wake words, never to its test speech.

The adaptation audio holds no keyword (one does not know where it would be),
so the re-estimated statistics are those of background only. Taken whole
they misplaced the keyword (a scratch check on the benchmark's seed 0: FRR
at 0.5 FA/h 14.6 % -> 18.0 % in rotation A, 18.0 % -> 25.3 % in B);
``blend`` keeps part of the trained statistics: the saved mean and variance
are ``blend * adapted + (1 - blend) * trained``. At 0.5, over three seeds,
it lowered the benchmark's FRR at 10-20 FA/h by about a point and left
0.5 FA/h where it was (benchmarks/REAL_SPEECH.md), so no recipe uses it.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from features.config import FeatureConfig
from features.errors import ConfigError
from features.mfcc import Mfcc, hop_windows
from train.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

DEFAULT_BLEND = 0.5
DEFAULT_HOP_FRAMES = 10  # one window every 0.1 s at the default 10 ms hop: neighbours overlap by 90 %
BATCH = 512


def norm_layers(model: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    """The model's batch-normalisation layers, in forward order (the statistics adapted)."""
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def feature_windows(recordings: Iterable[np.ndarray], cfg: FeatureConfig, window_frames: int, hop_frames: int) -> Iterable[np.ndarray]:
    """Batches of at most ``BATCH`` MFCC windows of each recording, one every ``hop_frames`` frames (``hop_windows``).

    A recording shorter than one window gives none (a padded window would
    teach the layers the padding).
    """
    mfcc = Mfcc(cfg)
    for audio in recordings:
        windows = hop_windows(mfcc(audio), window_frames, hop_frames)
        for i in range(0, len(windows), BATCH):
            yield windows[i : i + BATCH]


def adapt_norm(checkpoint: str | Path, recordings: Sequence[np.ndarray], out: str | Path, *, blend: float = DEFAULT_BLEND,
               hop_frames: int = DEFAULT_HOP_FRAMES) -> dict:
    """Write ``out``: ``checkpoint`` with its normalisation statistics re-estimated on ``recordings`` and blended in.

    ``recordings``: float32 16 kHz mono arrays, unlabelled. Returns the record
    also stored in the new checkpoint as ``norm_adaptation`` (and by export
    in the model's metadata): the blend, the windows and seconds of audio
    used, a digest of that audio, and the source checkpoint's path.
    """
    if not 0.0 < blend <= 1.0:
        raise ConfigError(f"blend must be in (0, 1] (the share of the adapted statistics), got {blend}")
    if hop_frames < 1:
        raise ConfigError(f"hop_frames must be at least 1, got {hop_frames}")
    model, ckpt = load_checkpoint(checkpoint)
    if ckpt.get("norm_adaptation"):
        raise ConfigError(f"{checkpoint}: its statistics were adapted already; adapt the checkpoint it came from "
                          f"({ckpt['norm_adaptation']['source']})")
    layers = norm_layers(model)
    if not layers:
        raise ConfigError(f"{checkpoint}: the model ({ckpt['model_name']}) has no batch normalisation to adapt")
    cfg = FeatureConfig.from_dict(ckpt["feature_config"])
    recordings = [np.asarray(a, np.float32) for a in recordings]
    digest = hashlib.sha256()
    for a in recordings:
        digest.update(a.tobytes())
    trained = [(layer.running_mean.clone(), layer.running_var.clone(), layer.momentum) for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.train()
    windows = 0
    with torch.no_grad():  # the model stays in eval mode but for these layers: dropout off, no weight changes
        for batch in feature_windows(recordings, cfg, int(ckpt["window_frames"]), hop_frames):
            windows += len(batch)
            for layer in layers:  # each batch weighs by its windows: the running values become the average over all
                layer.momentum = len(batch) / windows
            model(torch.from_numpy(batch))
    if windows < 2:
        raise ConfigError(f"the adaptation audio gives {windows} window(s) of {ckpt['window_samples'] / cfg.sample_rate:.2f} s: too little "
                          "to estimate statistics from")
    shift = []
    for layer, (mean, var, momentum) in zip(layers, trained):
        shift.append(float(((layer.running_mean - mean).abs() / var.sqrt()).mean()))
        layer.running_mean.mul_(blend).add_(mean, alpha=1.0 - blend)
        layer.running_var.mul_(blend).add_(var, alpha=1.0 - blend)
        layer.momentum = momentum
        layer.eval()
    record = {"blend": blend, "windows": windows, "hop_frames": hop_frames,
              "audio_seconds": round(sum(len(a) for a in recordings) / cfg.sample_rate, 1), "audio_sha256": digest.hexdigest(),
              "source": str(checkpoint), "mean_shift_in_sd": [round(s, 4) for s in shift]}
    fields = {k: v for k, v in ckpt.items() if k != "model_state"}
    save_checkpoint(out, model, **fields, norm_adaptation=record)
    log.info("adapted %d normalisation layers on %d windows (%.0f s of audio, blend %.2f): %s", len(layers), windows,
             record["audio_seconds"], blend, out)
    return record
