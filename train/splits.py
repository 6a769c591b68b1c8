"""Speaker-disjoint, deterministic train / validation / test splits.

A keyword model that has heard a speaker in training recognises that speaker
far better than a new one, so a clip-level split would flatter every figure.
Splits are therefore by speaker: all of a speaker's clips land in one split.

How speakers are assigned:

- Within each accent, speakers are ordered by ``sha256(f"{seed}:{speaker}")``
  (hashlib, not Python's salted ``hash()``), so the same rows and seed give the
  same splits on any machine, in any row order, and adding a speaker moves no
  other speaker of another accent.
- An accent with at least ``MIN_PER_ACCENT`` (3) speakers gives
  ``round(n * fraction)`` of them, but at least one, to validation and to test
  (test only if ``test_fraction > 0``), the first ones in hash order; the rest
  train. So every such accent is seen in every split, and per-accent figures
  exist for it.
- Accents with fewer speakers are pooled and the pool is split the same way,
  so a dataset of many one-speaker accents still has validation speakers.
- Non-speech sources (speakers whose rows are all ``noise``, e.g. the
  ``noise`` pseudo-speaker with accent ``none``) always train: they are not
  people whose voices could leak, training is where they are needed (as
  negatives and as background for augmentation), and the evaluation stage
  builds its own noisy streams.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from typing import Iterable

from collect.manifest import NOISE, ClipRow
from features.errors import ConfigError

SPLITS = ("train", "val", "test")
MIN_PER_ACCENT = 3  # an accent needs this many speakers to appear in every split
POOLED = "\0pooled"  # group key of the accents too small to split on their own


def speaker_order_key(seed: int, speaker: str) -> str:
    """Stable sort key of a speaker under a seed (hex sha256)."""
    return hashlib.sha256(f"{seed}:{speaker}".encode("utf-8")).hexdigest()


def _count(n: int, fraction: float) -> int:
    """Speakers of ``n`` for a split of ``fraction``: rounded half up, at least one if the fraction is not 0."""
    if fraction <= 0:
        return 0
    return max(1, math.floor(n * fraction + 0.5))


def assign_splits(rows: Iterable[ClipRow], seed: int, val_fraction: float, test_fraction: float) -> dict[str, str]:
    """Map every speaker of ``rows`` to ``"train"``, ``"val"`` or ``"test"`` (see the module docstring)."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(f"val_fraction and test_fraction must be in [0, 1) with a sum below 1, got {val_fraction}, {test_fraction}")
    accents: dict[str, set[str]] = defaultdict(set)
    labels: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        accents[row.speaker].add(row.accent)
        labels[row.speaker].add(row.label)

    out: dict[str, str] = {}
    groups: dict[str, list[str]] = defaultdict(list)
    for speaker in accents:
        if labels[speaker] == {NOISE}:
            out[speaker] = "train"
        else:
            # A speaker tagged with several accents (inconsistent rows) is grouped by the first, sorted.
            groups[min(accents[speaker])].append(speaker)

    small = [a for a, spks in groups.items() if len(spks) < MIN_PER_ACCENT]
    if small:
        groups[POOLED] = [s for a in small for s in groups.pop(a)]
    for group in sorted(groups):
        speakers = sorted(groups[group], key=lambda s: (speaker_order_key(seed, s), s))
        n = len(speakers)
        if n < MIN_PER_ACCENT:  # only a pool of fewer than 3 speakers: all train
            n_val = n_test = 0
        else:
            n_val, n_test = _count(n, val_fraction), _count(n, test_fraction)
            while n_val + n_test > n - 1:  # keep at least one training speaker
                if n_test >= n_val and n_test > 0:
                    n_test -= 1
                else:
                    n_val -= 1
        for i, speaker in enumerate(speakers):
            out[speaker] = "val" if i < n_val else "test" if i < n_val + n_test else "train"
    return out


def speakers_by_split(assignment: dict[str, str]) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...], "test": [...]}``, speakers sorted (the checkpoint's ``splits``)."""
    out: dict[str, list[str]] = {name: [] for name in SPLITS}
    for speaker, split in assignment.items():
        out[split].append(speaker)
    return {name: sorted(spks) for name, spks in out.items()}
