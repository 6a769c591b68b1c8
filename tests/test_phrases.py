"""Confusable negatives are close to the phrase but never contain it."""

import numpy as np

from collect.phrases import confusables, edit_distance, fragments, phonemes, sentences, sound_alikes, syllables


def test_edit_distance():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance(("K", "AH"), ("K", "AH")) == 0


def test_syllables_and_fragments():
    assert syllables("computer") == ["com", "pu", "ter"]
    frags = fragments("computer")
    assert "compu" in frags and "puter" in frags and "computer" not in frags
    assert {"hey", "jarvis"} <= set(fragments("hey jarvis"))


def test_sound_alikes_are_close_and_exclude_the_keyword():
    alikes = sound_alikes("computer")
    assert "commuter" in alikes[:5]
    target = phonemes("computer")
    for word in alikes:
        p = phonemes(word)
        assert p is not None and edit_distance(p, target) <= 3
        assert "computer" not in word


def test_confusables_and_sentences_are_seeded():
    a = confusables("computer", 8, np.random.default_rng(1))
    assert a == confusables("computer", 8, np.random.default_rng(1)) and len(a) == 8
    s = sentences("lights", 5, np.random.default_rng(0))
    assert len(s) == 5 and not any("lights" in x.lower().split() for x in s)


def test_unknown_word_still_gets_sound_alikes():
    assert len(sound_alikes("zorblax")) > 0 or len(fragments("zorblax")) > 0
