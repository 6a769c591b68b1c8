"""A fine-tuned model taken part of the way back to the model it was fine-tuned from, in weight space (WiSE-FT).

Why: fine-tuning on mined false accepts (``kws mine``, then ``kws train
--init-from``) teaches the model the windows it wrongly fired on, and on
the real-speech benchmark it also moves it away from what the first
training knew about the keyword: a second mining round missed more real
keywords at every low false-accept budget. Wortsman et al. (2022, "Robust
fine-tuning of zero-shot models") average the weights of a model and its
fine-tuned descendant: both lie in one basin, so the average works as a
model, and it kept more of the original's robustness to other data than
either end. Here ``share`` is the fine-tuned model's weight: 1 is the
fine-tuned model, 0 the one it started from. Batch-normalisation
statistics are interpolated like the weights.

On the benchmark (``mining.fine_tuned_share`` 0.5) the first three seeds
missed fewer real keywords at 0.5 FA/h in all six rotations, the next two
gave most of it back (five seeds: lower in 7 of 10 rotations, the means
within a point), so no recipe uses it (benchmarks/REAL_SPEECH.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

from features.audio import sha256_file
from features.errors import ConfigError
from train.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

SAME = ("model_name", "model_args", "labels", "feature_config", "window_frames")  # what both checkpoints must share


def interpolate(start: str | Path, fine_tuned: str | Path, share: float, out: str | Path) -> dict:
    """Write ``out``: ``share * fine_tuned + (1 - share) * start``, weight by weight, with ``fine_tuned``'s other fields.

    Returns the record stored in the new checkpoint as ``interpolation``
    (and by export in the model's metadata): both sources with their sha256
    digests, and the share. ``ConfigError`` if the two are not the same
    network on the same features, or ``share`` is outside [0, 1].
    """
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"the fine-tuned model's share must be in [0, 1], got {share}")
    model0, ckpt0 = load_checkpoint(start)
    model1, ckpt1 = load_checkpoint(fine_tuned)
    differ = [k for k in SAME if ckpt0[k] != ckpt1[k]]
    if differ:
        raise ConfigError(f"{start} and {fine_tuned} are not the same network on the same features ({', '.join(differ)} differ): "
                          "only a model and one fine-tuned from it can be interpolated")
    state0, state1 = model0.state_dict(), model1.state_dict()
    # Counters (BatchNorm's num_batches_tracked) are not weights: the fine-tuned model's are kept.
    model1.load_state_dict({k: share * v + (1.0 - share) * state0[k] if v.is_floating_point() else v for k, v in state1.items()})
    record = {"share": share, "start": str(start), "start_sha256": sha256_file(start), "fine_tuned": str(fine_tuned),
              "fine_tuned_sha256": sha256_file(fine_tuned)}
    save_checkpoint(out, model1, **{k: v for k, v in ckpt1.items() if k != "model_state"}, interpolation=record)
    log.info("%s: %.2f of %s and %.2f of %s", out, share, fine_tuned, 1.0 - share, start)
    return record
