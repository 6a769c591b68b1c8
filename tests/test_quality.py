"""Quality checks and end-pointing on audio made to pass or fail each one (espeak-ng speech, silence, bursts)."""

import numpy as np
import pytest

from collect.quality import EndPointer, QualityLimits, check_take, find_speech, trim
from collect.synth import synthesize

RATE = 16000


@pytest.fixture(scope="module")
def word():
    a = synthesize("computer", "en-us")
    return 0.5 * a / np.max(np.abs(a))


def pad(audio, before=0.6, after=0.6):
    return np.concatenate([np.zeros(int(before * RATE), np.float32), audio, np.zeros(int(after * RATE), np.float32)]).astype(np.float32)


def test_good_take_is_kept_and_trimmed_with_margin(word):
    take = pad(word, 1.0, 1.0)
    report = check_take(take)
    assert report.ok, report.reason
    kept = trim(take, report)
    speech_s = (report.speech_end - report.speech_start) / RATE
    assert abs(speech_s - len(word) / RATE) < 0.08
    assert abs(len(kept) / RATE - (speech_s + 2 * QualityLimits().margin_s)) < 0.001
    assert 0.9 < report.speech_start / RATE < 1.1


def test_silence_is_no_speech():
    assert "no speech" in check_take(np.zeros(2 * RATE, np.float32)).reason


def test_steady_room_noise_is_no_speech(rng):
    assert "no speech" in check_take((0.01 * rng.standard_normal(2 * RATE)).astype(np.float32)).reason


def test_clipped_speech(word):
    assert check_take(pad(np.clip(8 * word, -1, 1))).reason.startswith("clipped")


def test_quiet_speech(word):
    assert check_take(pad(0.02 * word)).reason.startswith("too quiet")


def test_short_burst():
    burst = (0.4 * np.sin(2 * np.pi * 440 * np.arange(int(0.06 * RATE)) / RATE)).astype(np.float32)
    assert check_take(pad(burst)).reason.startswith("too short")


def test_too_long_for_a_keyword_but_fine_for_a_sentence():
    sentence = synthesize("The weather is nice today and we are going to the market this afternoon.", "en-us")
    take = pad(0.5 * sentence / np.max(np.abs(sentence)))
    assert check_take(take).reason.startswith("too long")
    assert check_take(take, limits=QualityLimits(max_speech_s=8.0)).ok


def test_cut_off_at_the_time_limit(word):
    take = np.concatenate([np.zeros(RATE, np.float32), word[: len(word) // 2]])
    assert "cut off" in check_take(take, hit_time_limit=True).reason
    assert check_take(pad(word), hit_time_limit=True).ok


def test_wrong_channels_and_rate(word):
    take = pad(word)
    assert "wrong channel count" in check_take(np.stack([take, take], axis=1)).reason
    assert "wrong sample rate" in check_take(take, sample_rate=44100).reason
    assert check_take(take[:, None]).ok  # (n, 1) is mono


def test_end_pointer_waits_for_silence_after_speech(word):
    take = pad(word, 0.5, 2.0)
    ep = EndPointer(RATE, trailing_silence_s=0.8)
    done_at = None
    for start in range(0, len(take), 800):
        if ep.push(take[start : start + 800]):
            done_at = (start + 800) / RATE
            break
    speech_end = find_speech(take)[1] / RATE
    assert done_at is not None and speech_end + 0.7 < done_at < speech_end + 1.0


def test_end_pointer_never_ends_on_silence():
    ep = EndPointer(RATE)
    assert not any(ep.push(np.zeros(800, np.float32)) for _ in range(100))
