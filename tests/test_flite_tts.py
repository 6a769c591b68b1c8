"""The Flite engine: the real flite program, speakers in the accents it has, none in the others."""

import numpy as np
import pytest

from collect.manifest import load_rows
from collect.synth import SESSIONS, synthesize_dataset
from pitch import median_f0
from features.audio import load_audio

flite_tts = pytest.importorskip("collect.flite_tts")
if not flite_tts.available():
    pytest.skip("the flite program is not installed (apt-get install flite)", allow_module_level=True)



def test_pitch_setting_is_heard():
    low = flite_tts.FliteSpeaker("a", "en-US", "slt", f0=150.0, stretch=1.0, warp=1.0, gender="female")
    high = flite_tts.FliteSpeaker("b", "en-US", "slt", f0=220.0, stretch=1.0, warp=1.0, gender="female")
    a = flite_tts.speak("please open the window", low, np.random.default_rng(1))
    b = flite_tts.speak("please open the window", high, np.random.default_rng(1))
    assert a.dtype == np.float32 and 0.8 < len(a) / 16000 < 3
    assert 1.25 < median_f0(b) / median_f0(a) < 1.7


def test_speakers_only_in_flites_accents(tmp_path):
    synthesize_dataset(tmp_path, "computer", accents=["en-US", "en-GB-scotland", "en-x-it"], n_voices_per_accent=3,
                       takes_per_voice=2, n_confusables=1, n_sentences=1, n_noise=0, engine="flite", seed=2, progress=False)
    rows = load_rows(tmp_path)
    assert {r.session for r in rows} == {SESSIONS["flite"]}
    assert {r.accent for r in rows} == {"en-US", "en-GB-scotland"}
    assert {r.source.split(":")[1] for r in rows} == {"rms", "slt", "kal16", "awb"}
    for r in rows:
        assert 0.3 < len(load_audio(tmp_path / r.path)) / 16000 < 12


def test_accents_without_a_flite_voice_are_refused(tmp_path):
    from features.errors import ConfigError

    with pytest.raises(ConfigError, match="flite engine has no voice for accent.*en-x-it"):
        synthesize_dataset(tmp_path / "ds", "computer", accents=["en-x-it"], engine="flite", progress=False)
    assert not (tmp_path / "ds").exists()


def test_missing_program_is_a_clear_error(tmp_path, monkeypatch):
    """Without flite on PATH the engine refuses before writing anything, saying how to install it."""
    from features.errors import ConfigError

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="apt-get install flite"):
        synthesize_dataset(tmp_path / "ds", "computer", accents=["en-US"], engine="flite", progress=False)
    assert not (tmp_path / "ds").exists()
