"""Synthetic voices: real espeak-ng speech, one manifest row per clip, deterministic by seed."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from collect.datacheck import check_dataset
from collect.manifest import NEGATIVE, NOISE, load_rows
from collect.synth import ACCENTS, SESSION, SESSIONS, make_voices, slug, synthesize, synthesize_dataset
from features.audio import load_audio, sha256_file
from features.errors import ConfigError


def session_beside_espeak(tmp_path, engine: str, n_sentences: int) -> list:
    """An espeak-ng session and ``engine``'s in one dataset: its rows, checked (counts, own speakers, digests, lengths)."""
    kw = dict(accents=["en-US", "en-x-de"], n_voices_per_accent=2, takes_per_voice=2, n_confusables=1, n_sentences=n_sentences,
              n_noise=1, seed=5, progress=False)
    synthesize_dataset(tmp_path, "computer", engine="espeak", **kw)
    synthesize_dataset(tmp_path, "computer", engine=engine, **kw)
    rows = load_rows(tmp_path)
    own = [r for r in rows if r.session == SESSIONS[engine]]
    assert len(own) == len(rows) - len(own) == 4 * (3 + n_sentences) + 1
    speakers = {r.speaker for r in own if r.kind != "noise"}
    assert len(speakers) == 4 and not speakers & {r.speaker for r in rows if r.session == SESSIONS["espeak"]}
    for r in own:
        assert r.sha256 == sha256_file(tmp_path / r.path)
        if r.kind != "noise":
            assert 0.3 < len(load_audio(tmp_path / r.path)) / 16000 < 12
    assert not check_dataset(tmp_path).problems
    return own


def test_synthesize_is_speech_at_16k():
    audio = synthesize("computer", "en-gb-scotland")
    assert audio.dtype == np.float32
    assert 0.3 < len(audio) / 16000 < 1.5  # one word
    assert np.max(np.abs(audio)) > 0.05


def test_voices_differ_by_accent():
    a, b = synthesize("computer", "en-us"), synthesize("computer", "es")
    n = min(len(a), len(b))
    assert not np.allclose(a[:n], b[:n], atol=1e-3)


def test_unknown_voice_is_a_clear_error():
    with pytest.raises(ConfigError, match="no voice"):
        synthesize("hello", "xx-nonexistent")


def test_at_least_eight_accents_with_distinct_speakers():
    assert len(ACCENTS) >= 8
    voices = make_voices(list(ACCENTS), 3, seed=0)
    assert len({v.speaker for v in voices}) == 3 * len(ACCENTS)
    assert len({(v.voice, v.pitch, v.rate) for v in voices}) == len(voices)


def test_slug():
    assert slug("Hey Jarvis!") == "hey_jarvis"
    with pytest.raises(ConfigError):
        slug("!!")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synthesize_dataset(root, "computer", accents=["en-US", "en-x-fr"], n_voices_per_accent=2, takes_per_voice=2,
                       n_confusables=2, n_sentences=1, n_noise=2, seed=3, progress=False)
    return root


def test_dataset_rows_match_files(small):
    rows = load_rows(small)
    assert len(rows) == 4 * (2 + 2 + 1) + 2
    assert {r.label for r in rows} == {"computer", NEGATIVE, NOISE}
    assert {r.accent for r in rows if r.label != NOISE} == {"en-US", "en-x-fr"}
    assert {r.kind for r in rows} == {"keyword", "confusable", "sentence", "noise"}
    for r in rows:
        assert r.sha256 == sha256_file(small / r.path)
        assert abs(len(load_audio(small / r.path)) / 16000 - r.duration_s) < 1e-3
        assert r.source.startswith(("espeak-ng:", "generated:"))
    assert not check_dataset(small).problems


def test_same_seed_same_dataset(small, tmp_path):
    """Voices, prompts and parameters are fixed by the seed. In one process espeak-ng carries a little
    state from one utterance to the next (the second dataset follows the first), so durations agree
    closely rather than bytes; a fresh process gives the same bytes (the next test)."""
    synthesize_dataset(tmp_path, "computer", accents=["en-US", "en-x-fr"], n_voices_per_accent=2, takes_per_voice=2,
                       n_confusables=2, n_sentences=1, n_noise=2, seed=3, progress=False)
    a, b = load_rows(tmp_path), load_rows(small)
    assert [(r.path, r.text, r.source, r.speaker) for r in a] == [(r.path, r.text, r.source, r.speaker) for r in b]
    assert np.allclose([r.duration_s for r in a], [r.duration_s for r in b], atol=0.05)


def test_same_seed_same_bytes_in_a_fresh_process(tmp_path):
    """``kws synth`` run twice with the same arguments writes byte-identical clips: espeak-ng's flutter is seeded per take."""
    kws = str(Path(sys.executable).with_name("kws"))
    args = ["--accents", "en-US,en-GB-scotland", "--voices", "2", "--takes", "2", "--confusables", "1", "--sentences", "1", "--seed", "5"]
    for name in ("a", "b"):
        subprocess.run([kws, "synth", str(tmp_path / name), *args], check=True, capture_output=True, timeout=300)
    a, b = load_rows(tmp_path / "a"), load_rows(tmp_path / "b")
    assert len(a) == 2 * 2 * (2 + 1 + 1) + 4
    assert [(r.path, r.sha256) for r in a] == [(r.path, r.sha256) for r in b]


def test_existing_session_needs_overwrite_and_keeps_other_sessions(small, tmp_path):
    synthesize_dataset(tmp_path, "computer", accents=["en-US"], n_voices_per_accent=1, takes_per_voice=1,
                       n_confusables=0, n_sentences=0, n_noise=0, progress=False)
    human = tmp_path / "session-1"
    human.mkdir()
    (human / "manifest.jsonl").write_text("")
    with pytest.raises(ConfigError, match="--overwrite"):
        synthesize_dataset(tmp_path, "computer", accents=["en-US"], n_voices_per_accent=1, progress=False)
    synthesize_dataset(tmp_path, "computer", accents=["en-US"], n_voices_per_accent=1, takes_per_voice=2,
                       n_confusables=0, n_sentences=0, n_noise=0, overwrite=True, progress=False)
    assert human.is_dir() and (tmp_path / SESSION / "manifest.jsonl").is_file()
    assert len(load_rows(tmp_path)) == 2


def test_random_word_sentences_leave_the_other_prompts_and_can_be_a_session_of_their_own(small, tmp_path):
    """Asking for random-word sentences adds them after a voice's other takes without changing those; the same
    voices reading only them into another session (what the benchmark caches) read the same text."""
    from collect import phrases

    kw = dict(accents=["en-US", "en-x-fr"], n_voices_per_accent=2, seed=3, progress=False)
    synthesize_dataset(tmp_path / "both", "computer", takes_per_voice=2, n_confusables=2, n_sentences=1, n_word_sentences=2,
                       n_noise=2, **kw)
    synthesize_dataset(tmp_path / "apart", "computer", takes_per_voice=0, n_confusables=0, n_sentences=0, n_word_sentences=2,
                       n_noise=0, session="synth-espeak-words", **kw)
    plain, both, apart = load_rows(small), load_rows(tmp_path / "both"), load_rows(tmp_path / "apart")
    shipped = set(phrases.sentence_pool("computer"))
    added = [r for r in both if r.kind == "sentence" and r.text not in shipped]
    assert len(added) == 4 * 2 and len(both) == len(plain) + len(added)
    assert [(r.path, r.text) for r in both if r not in added] == [(r.path, r.text) for r in plain]
    assert all(r.label == NEGATIVE and "computer" not in r.text.lower() for r in added)
    assert [(r.speaker, r.text) for r in apart] == [(r.speaker, r.text) for r in added]
    assert {r.session for r in apart} == {"synth-espeak-words"} and all(r.path.startswith("synth-espeak-words/") for r in apart)
    assert not check_dataset(tmp_path / "both").problems


def test_session_name_must_be_a_plain_folder_name(tmp_path):
    with pytest.raises(ConfigError, match="session name '../x'"):
        synthesize_dataset(tmp_path, "computer", accents=["en-US"], n_voices_per_accent=1, session="../x", progress=False)
    assert not any(tmp_path.iterdir())
