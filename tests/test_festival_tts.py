"""The Festival engine: the real festival program and its recorded diphone voices, speaking espeak-ng's accents."""

import numpy as np
import pytest

from collect.espeak import phonemize
from collect.synth import engine_voices
from features.errors import ConfigError
from pitch import median_f0
from test_cli_errors import synth_twice
from test_synth import session_beside_espeak

festival_tts = pytest.importorskip("collect.festival_tts")
if not festival_tts.available():
    pytest.skip(f"festival or its voices are not installed ({festival_tts.INSTALL_HINT})", allow_module_level=True)


def test_ipa_becomes_each_voices_phones_with_stress_and_length():
    (ipa,) = phonemize("computer", "en-us")  # kəmpjˈuːɾɚ
    assert festival_tts.to_phones(ipa, "english") == [("k", 0), ("ax", 0), ("m", 0), ("p", 0), ("y", 0), ("uw", 2), ("t", 0), ("er", 0)]
    czech = festival_tts.to_phones(ipa.replace("ɾ", "t"), "czech")
    assert czech == [("k", 0), ("e", 0), ("m", 0), ("p", 0), ("j", 0), ("u:", 2), ("t", 0), ("e", 0), ("r", 0)]
    assert [p for p, _ in festival_tts.to_phones("(en)θˈɪŋk wˈɛl(fr)", "finnish")] == ["t", "i", "N", "k", "v", "e", "l"]
    rng = np.random.default_rng(0)
    segments = festival_tts.segments([festival_tts.to_phones("kompjˈuter", "italian")], "italian", 200.0, 1.0, rng)
    assert [s[0] for s in segments] == ["#", "k", "o", "m", "p", "j", "u1", "t", "e", "r", "#"]  # Italian marks stress
    pitch = {name: targets[0][1] for name, _, targets in segments if targets}
    assert pitch["u1"] > pitch["o"] > pitch["e"]  # the stressed vowel peaks, the last one falls
    for phoneset, table in festival_tts.PHONES.items():
        assert set(table) == set(festival_tts.PHONES["english"]), phoneset  # every phone set maps the same IPA


def test_speakers_half_high_voices_heard_at_their_pitch():
    speakers = engine_voices("festival", ["en-US", "en-x-it"], 4, seed=0)
    assert [s.accent for s in speakers] == ["en-US"] * 4 + ["en-x-it"] * 4
    assert all((s.voice in festival_tts.HIGH) == (i % 2 == 0) for i, s in enumerate(speakers[:4]))
    assert speakers == engine_voices("festival", ["en-US", "en-x-it"], 4, seed=0)
    rng = np.random.default_rng(0)
    for name in ("czech_krb", "lp_diphone", "czech_machac", "ked_diphone"):
        spec = festival_tts.VOICES[name]
        for warp in (1.0, 1.15):
            speaker = festival_tts.FestivalSpeaker("s", "en-US", "en-us", name, f0=float(np.mean(spec.f0)), stretch=1.0,
                                                   warp=warp, gender=spec.gender)
            audio = festival_tts.speak("please open the window", speaker, rng)
            assert audio.dtype == np.float32 and 0.8 < len(audio) / 16000 < 3
            assert 0.85 < median_f0(audio) / speaker.f0 < 1.2, (name, warp)  # the warp moves formants, not the pitch


def test_a_timing_festival_crashes_on_is_spoken_a_hair_slower():
    # Festival 2.5 dies of a segmentation fault on exactly these timings (one take of an 8-speaker session);
    # render retries a crash with every time 3 % longer, so the session is made instead of aborted.
    crashing = [("#", 0.15, []), ("k", 0.078, []), ("e", 0.09, [(0.045, 228.0)]), ("m", 0.078, []), ("p", 0.078, []),
                ("j", 0.078, []), ("u1", 0.135, [(0.068, 155.4)]), ("ts", 0.078, []), ("#", 0.15, [])]
    audio = festival_tts.render("lp_diphone", crashing)
    assert audio.dtype == np.float32 and 0.6 < len(audio) / 16000 < 1.2 and np.abs(audio).max() > 0.05
    with pytest.raises(ConfigError, match="unbound variable : voice_no_such_voice"):  # a Scheme error: reported, not retried
        festival_tts.render("no_such_voice", crashing)
    with pytest.raises(ConfigError, match=r"crashed \(signal 11\).*also with its times stretched by 1.03, 1.06"):
        festival_tts.render("lp_diphone", [("#", 0.15, []), ("no-such-phone", 0.1, []), ("#", 0.15, [])])  # crashes at any speed


def test_festival_session_beside_espeak(tmp_path):
    rows = session_beside_espeak(tmp_path, "festival", n_sentences=1)
    assert {r.source.split(":")[0] for r in rows if r.kind != "noise"} == {"festival"}


def test_kws_synth_engine_festival_repeats_its_bytes(tmp_path):
    rows = synth_twice(tmp_path, "festival", "--accents", "en-GB", "--voices", "2", "--takes", "1", "--confusables", "0",
                       "--sentences", "1", "--noise", "0", "--seed", "3")
    assert len(rows) == 4 and {r.device for r in rows} == {"festival"}


def test_missing_voices_are_named_before_anything_is_written(tmp_path, monkeypatch):
    from collect.synth import synthesize_dataset

    monkeypatch.setattr(festival_tts, "VOICE_DIR", tmp_path / "no-voices")
    with pytest.raises(ConfigError, match="festival engine needs festvox-czech-dita, .*apt-get install festival "):
        synthesize_dataset(tmp_path / "ds", "computer", accents=["en-US"], engine="festival", progress=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="festival engine needs festival, festvox"):
        synthesize_dataset(tmp_path / "ds", "computer", accents=["en-US"], engine="festival", progress=False)
    assert not (tmp_path / "ds").exists()
