"""Evaluation streams: events are where they say, gaps and spacing hold, the noise is at the stated SNR."""

import numpy as np
import pytest

from deploy.streams import Event, StreamClip, build_stream, match_detections, speech_power, trim_silence
from features.errors import KwsError

RATE = 16000


def _clip(rng, seconds, label, accent="en-US", speaker="s1", level=0.3, pad=0.2):
    """A noise burst with silence either side (like a recorded take): distinct content for every clip."""
    n, p = int(seconds * RATE), int(pad * RATE)
    body = (rng.standard_normal(n) * level / 3).astype(np.float32)
    return StreamClip(np.concatenate([np.zeros(p, np.float32), body, np.zeros(p, np.float32)]), label, accent, speaker,
                      f"{speaker}-{label}-{rng.integers(1 << 30)}.wav")


@pytest.fixture
def clips():
    rng = np.random.default_rng(7)
    keywords = [_clip(rng, rng.uniform(0.5, 0.9), "computer", accent=a, speaker=f"{a}-1") for a in ("en-US", "en-GB") for _ in range(4)]
    background = [_clip(rng, rng.uniform(0.5, 2.5), "negative", speaker=f"bg{i}") for i in range(6)]
    return keywords, background


def _find(clip: StreamClip, events):
    return [e for e in events if e.path == clip.path]


def test_events_mark_the_clips_exactly(clips):
    keywords, background = clips
    audio, events = build_stream(keywords, background, None, seed=1, snr_db=None, min_gap_s=0.3, target_s=60.0)
    assert audio.dtype == np.float32 and len(audio) >= 60 * RATE
    for clip in keywords:  # keywords are placed at their own level: the samples are the trimmed clip
        (e,) = _find(clip, events)
        s = int(round(e.start_s * RATE))
        body = trim_silence(clip.audio)
        np.testing.assert_array_equal(audio[s : s + len(body)], body)
        assert e.end_s == pytest.approx(e.start_s + len(body) / RATE)
        assert (e.label, e.accent, e.speaker) == (clip.label, clip.accent, clip.speaker)
    for clip in background:  # background clips are reused, each time at some gain
        found = _find(clip, events)
        assert len(found) >= 2  # 6 clips of ~1.5 s cannot fill a minute without reuse
        body = trim_silence(clip.audio)
        for e in found:
            s = int(round(e.start_s * RATE))
            placed = audio[s : s + len(body)]
            gain = float(placed @ body / (body @ body))
            assert 10 ** (-6.1 / 20) <= gain <= 10 ** (3.1 / 20)
            np.testing.assert_allclose(placed, body * gain, atol=1e-6)


def test_gaps_spacing_and_no_overlap(clips):
    keywords, background = clips
    _, events = build_stream(keywords, background, None, seed=3, snr_db=None, min_gap_s=0.3, target_s=60.0)
    assert [e.start_s for e in events] == sorted(e.start_s for e in events)
    for a, b in zip(events, events[1:]):
        assert b.start_s - a.end_s >= 0.3 - 1e-4  # nothing overlaps, and every gap is at least min_gap_s
    kw = [e for e in events if e.is_keyword]
    assert len(kw) == len(keywords)
    for a, b in zip(kw, kw[1:]):
        assert b.start_s - a.end_s >= 3.0 - 1e-4
    # keywords are spread over the stream, not bunched at its start
    assert kw[-1].start_s > 40.0 and kw[0].start_s < 15.0


def test_same_seed_same_stream_and_keywords_without_background(clips):
    keywords, background = clips
    a1, e1 = build_stream(keywords, background, "pink", seed=5, snr_db=10, target_s=30.0)
    a2, e2 = build_stream(keywords, background, "pink", seed=5, snr_db=10, target_s=30.0)
    np.testing.assert_array_equal(a1, a2)
    assert e1 == e2
    audio, events = build_stream(keywords, [], "white", seed=5, snr_db=20, target_s=10.0)
    assert len(events) == len(keywords) and all(e.is_keyword for e in events)
    assert len(audio) / RATE > events[-1].end_s  # the stream grew beyond target_s to fit the spaced keywords
    assert all(b.start_s - a.end_s >= 3.0 - 1e-4 for a, b in zip(events, events[1:]))  # no background: still spaced


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 25.0])
def test_noise_is_at_the_stated_snr(clips, snr_db):
    keywords, background = clips
    clean, events = build_stream(keywords, background, None, seed=9, snr_db=None, target_s=40.0)
    noisy, events2 = build_stream(keywords, background, "pink", seed=9, snr_db=snr_db, target_s=40.0)
    assert events == events2  # the layout does not depend on the noise
    noise = noisy - clean
    assert np.mean(noise**2) > 0
    measured = 10 * np.log10(speech_power([trim_silence(c.audio) for c in keywords]) / np.mean(noise.astype(np.float64) ** 2))
    assert measured == pytest.approx(snr_db, abs=0.2)


def test_bad_input_is_a_clear_error(clips):
    keywords, _ = clips
    with pytest.raises(KwsError, match="noise colour"):
        build_stream(keywords, [], "purple", seed=0, snr_db=10)
    with pytest.raises(KwsError, match="no keyword and no background"):
        build_stream([StreamClip(np.zeros(1000, np.float32), "computer")], [], None, snr_db=None)
    with pytest.raises(KwsError):
        build_stream(keywords, [], None, min_gap_s=-1)


def test_trim_silence():
    a = np.zeros(100, np.float32)
    a[10] = 0.5
    a[50] = -1.0
    assert len(trim_silence(a)) == 41
    assert len(trim_silence(np.zeros(10, np.float32))) == 0


def test_match_detections():
    events = [
        Event(1.0, 2.0, "negative"),
        Event(5.0, 6.0, "computer", "en-US", "a"),
        Event(10.0, 11.0, "jarvis", "en-GB", "b"),
        Event(20.0, 21.0, "computer", "en-GB", "c"),
    ]
    detections = [1.5, 4.99, 5.0, 6.2, 7.0, 7.01, 10.5, 30.0]
    hits, fa = match_detections(detections, events, tolerance_after_s=1.0)
    # 5.0, 6.2 and 7.0 (= end + tolerance, inclusive) hit event 1; 10.5 hits "jarvis"; event 3 is missed
    assert hits == [0, 3, 1, 0]
    assert fa == [1.5, 4.99, 7.01, 30.0]  # during background speech, just before, just too late, far away
    hits, fa = match_detections(detections, events, tolerance_after_s=1.0, keyword="computer")
    assert hits == [0, 3, 0, 0] and 10.5 in fa  # a "computer" detector firing on "jarvis" is a false accept
    assert match_detections([], events) == ([0, 0, 0, 0], [])
    assert match_detections([3.0], []) == ([], [3.0])
