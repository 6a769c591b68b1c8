"""Speaker-disjoint splits: deterministic everywhere, every accent in every split where it can be."""

import json
import os
import random
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from collect.manifest import NEGATIVE, NOISE, ClipRow
from features.errors import ConfigError
from rows import clip_row
from train.splits import assign_splits, speaker_order_key, speakers_by_split

REPO = Path(__file__).resolve().parent.parent


def row(speaker: str, accent: str, label: str = "computer", i: int = 0) -> ClipRow:
    return clip_row(path=f"s/{speaker}-{label}-{i}.wav", label=label, text=label, speaker=speaker, accent=accent, source="human")


def corpus(accents: dict[str, int], clips_per_speaker: int = 3, noise: int = 4) -> list[ClipRow]:
    rows = []
    for accent, n in accents.items():
        for s in range(n):
            for i in range(clips_per_speaker):
                rows.append(row(f"{accent}-spk{s}", accent, "computer" if i % 2 == 0 else NEGATIVE, i))
    rows += [row("noise", "none", NOISE, i) for i in range(noise)]
    return rows


def test_same_inputs_same_splits_in_any_row_order():
    rows = corpus({"en-US": 6, "en-GB": 5, "en-x-es": 7})
    first = assign_splits(rows, seed=3, val_fraction=0.15, test_fraction=0.15)
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    assert assign_splits(shuffled, seed=3, val_fraction=0.15, test_fraction=0.15) == first
    # A different seed reorders speakers, so some speaker changes split.
    assert assign_splits(rows, seed=4, val_fraction=0.15, test_fraction=0.15) != first


def test_splits_do_not_depend_on_python_hash_randomisation():
    code = (
        "import json, sys; sys.path.insert(0, 'tests');"
        "from test_splits import corpus; from train.splits import assign_splits;"
        "print(json.dumps(assign_splits(corpus({'en-US': 6, 'en-GB': 4}), 0, 0.2, 0.2), sort_keys=True))"
    )
    outputs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        outputs.add(subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout)
    assert len(outputs) == 1
    assert json.loads(outputs.pop()) == assign_splits(corpus({"en-US": 6, "en-GB": 4}), 0, 0.2, 0.2)


def test_order_and_splits_are_pinned():
    # Pinned values: the same dataset and seed must give the same splits on every machine and version.
    assert speaker_order_key(0, "spk") == "fae3d5a5535568684d8ac8706cf9ed1093e752e7cf7eea4e017437cf33f2e85f"
    assert speakers_by_split(assign_splits(corpus({"en-US": 6}), 0, 0.2, 0.2)) == {
        "train": ["en-US-spk0", "en-US-spk2", "en-US-spk4", "en-US-spk5", "noise"],
        "val": ["en-US-spk1"],
        "test": ["en-US-spk3"],
    }


def test_every_speaker_in_exactly_one_split_and_clips_follow_their_speaker():
    rows = corpus({"en-US": 6, "en-GB": 3, "en-029": 9})
    assignment = assign_splits(rows, seed=0, val_fraction=0.15, test_fraction=0.15)
    assert set(assignment) == {r.speaker for r in rows}
    by_split = speakers_by_split(assignment)
    sets = [set(by_split[s]) for s in ("train", "val", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert set().union(*sets) == set(assignment)
    clip_splits = defaultdict(set)
    for r in rows:
        clip_splits[r.speaker].add(assignment[r.speaker])
    assert all(len(s) == 1 for s in clip_splits.values())


def test_each_accent_with_three_or_more_speakers_is_in_every_split():
    rows = corpus({"en-US": 3, "en-GB": 4, "en-x-pl": 6, "en-x-it": 12})
    assignment = assign_splits(rows, seed=11, val_fraction=0.15, test_fraction=0.15)
    per_accent = defaultdict(lambda: defaultdict(int))
    for r in {r.speaker: r for r in rows if r.label != NOISE}.values():
        per_accent[r.accent][assignment[r.speaker]] += 1
    for accent, counts in per_accent.items():
        assert counts["val"] >= 1 and counts["test"] >= 1 and counts["train"] >= 1, (accent, dict(counts))
    # 12 speakers at 15 %: round(1.8) = 2 each for validation and test.
    assert per_accent["en-x-it"]["val"] == 2 and per_accent["en-x-it"]["test"] == 2


def test_small_accents_are_pooled_so_validation_still_exists():
    # Eight accents with one speaker each: no accent can be split, the pool can.
    rows = corpus({f"acc{i}": 1 for i in range(8)})
    by_split = speakers_by_split(assign_splits(rows, seed=0, val_fraction=0.2, test_fraction=0.2))
    assert len(by_split["val"]) == 2 and len(by_split["test"]) == 2
    # Two speakers in all: too few to split, both train.
    by_split = speakers_by_split(assign_splits(corpus({"a": 1, "b": 1}), seed=0, val_fraction=0.2, test_fraction=0.2))
    assert by_split["val"] == [] and by_split["test"] == [] and len(by_split["train"]) == 3


def test_noise_pseudo_speaker_always_trains():
    for seed in range(5):
        assert assign_splits(corpus({"en-US": 3}), seed=seed, val_fraction=0.3, test_fraction=0.3)["noise"] == "train"


def test_zero_test_fraction_gives_no_test_speakers():
    by_split = speakers_by_split(assign_splits(corpus({"en-US": 6}), seed=0, val_fraction=0.2, test_fraction=0.0))
    assert by_split["test"] == [] and len(by_split["val"]) == 1


@pytest.mark.parametrize("val,test", [(-0.1, 0.1), (0.6, 0.5), (1.0, 0.0)])
def test_bad_fractions_are_refused(val, test):
    with pytest.raises(ConfigError, match="fraction"):
        assign_splits(corpus({"en-US": 6}), seed=0, val_fraction=val, test_fraction=test)
