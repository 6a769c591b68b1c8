"""Confusable negatives are close to the phrase but never contain it."""

import numpy as np

from collect.phrases import (RANDOM_SENTENCE_WORDS, confusables, edit_distance, fragments, phonemes, random_word_sentences, sentences,
                             sound_alikes, syllables)


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


def test_random_word_sentences_are_seeded_varied_and_never_say_the_phrase():
    a = random_word_sentences("computer", 200, np.random.default_rng(3))
    assert a == random_word_sentences("computer", 200, np.random.default_rng(3)) and len(a) == 200
    assert a != random_word_sentences("computer", 200, np.random.default_rng(4))
    words = [w.strip(".").lower() for s in a for w in s.split()]
    assert "computer" not in words  # in the word list, so left out on purpose
    assert all(RANDOM_SENTENCE_WORDS[0] <= len(s.split()) <= RANDOM_SENTENCE_WORDS[1] for s in a)
    assert len(set(words)) > 500  # most of the thousand-word list turns up
    # a phrase is banned by each of its words, and by words whose sound contains it
    assert not any(w in ("hello", "world") for s in random_word_sentences("hello world", 300, np.random.default_rng(0))
                   for w in s.strip(".").lower().split())
    target = phonemes("car")
    assert not any((p := phonemes(w)) and any(p[i:i + len(target)] == target for i in range(len(p)))
                   for s in random_word_sentences("car", 300, np.random.default_rng(0)) for w in s.strip(".").lower().split())
