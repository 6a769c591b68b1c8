"""The trigger logic on made-up scores, and the streaming detector's independence from chunk size."""

import numpy as np
import pytest

from deploy.detector import Detector, Trigger, fire_indices, smooth
from deploy.modelfile import KwsModel
from features.mfcc import Mfcc
from pulse import scene


def test_smooth_is_a_moving_mean_with_a_short_start():
    s = smooth(np.array([0.0, 1.0, 1.0, 1.0, 0.0]), 2)
    np.testing.assert_allclose(s, [0.0, 0.5, 1.0, 1.0, 0.5])
    np.testing.assert_allclose(smooth([3.0, 6.0, 9.0], 3), [3.0, 4.5, 6.0])  # fewer at the start
    np.testing.assert_allclose(smooth([0.2, 0.4], 1), [0.2, 0.4])


def test_smooth_works_per_keyword_column():
    scores = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(smooth(scores, 2), [[0.0, 1.0], [0.5, 1.0], [1.0, 0.5]])


def test_fire_indices_threshold_is_inclusive_and_refractory_suppresses():
    s = np.array([0.1, 0.5, 0.9, 0.9, 0.2, 0.6, 0.1, 0.1, 0.7])
    np.testing.assert_array_equal(fire_indices(s, 0.5, 0), [1, 2, 3, 5, 8])
    np.testing.assert_array_equal(fire_indices(s, 0.5, 3), [1, 5])  # 2, 3 within 3 hops of 1; 8 is 3 after 5
    np.testing.assert_array_equal(fire_indices(s, 0.95, 0), [])


def test_trigger_fires_once_per_burst():
    trigger = Trigger(threshold=0.5, smoothing=1, refractory_hops=5)
    fired = [trigger.step(x)[1] for x in [0.1, 0.8, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.9]]
    assert fired == [False, True, False, False, False, False, False, False, True]


def test_trigger_smoothing_rejects_a_single_spike():
    trigger = Trigger(threshold=0.5, smoothing=3)
    results = [trigger.step(x) for x in [0.0, 0.0, 1.0, 0.0, 0.0]]
    assert not any(f for _, f in results)
    assert results[2][0] == pytest.approx(1 / 3)


def test_trigger_agrees_with_offline_replay():
    """Streaming (Trigger.step) and replay (smooth + fire_indices) are the same rule, as evaluation relies on."""
    rng = np.random.default_rng(0)
    scores = np.clip(np.convolve(rng.random(500), np.ones(4) / 4, mode="same") + rng.normal(0, 0.2, 500), 0, 1)
    for smoothing, refractory in [(1, 0), (3, 5), (5, 12)]:
        trigger = Trigger(0.6, smoothing, refractory)
        steps = [trigger.step(x) for x in scores]
        online = [i for i, (_, f) in enumerate(steps) if f]
        np.testing.assert_allclose([s for s, _ in steps], smooth(scores, smoothing))
        np.testing.assert_array_equal(online, fire_indices(smooth(scores, smoothing), 0.6, refractory))
        assert len(online) > 0


@pytest.fixture(scope="module")
def short_stream():
    """About 3 s: silence, "computer", silence, one other word."""
    audio, segments = scene([
        ("silence", 0.6), ("say", ("computer", "en-us+m1")), ("silence", 0.9), ("say", ("window", "en+f2")), ("silence", 0.4),
    ])
    return audio, segments


# The window path, the streaming path with carried state, and PCEN features (whose smoother the front end carries).
@pytest.mark.parametrize("which", ["keyword_model", "stream_model", "pcen_model"])
def test_detections_and_scores_do_not_depend_on_chunk_size(which, request, short_stream):
    audio, segments = short_stream
    model = KwsModel(request.getfixturevalue(which))
    assert (model.stream is not None) == (which == "stream_model")
    assert (model.info.feature_config.pcen_s > 0) == (which == "pcen_model")
    results = {}
    for chunk in (1, 160, 1000, 4000, len(audio)):  # the whole signal at once: the buffers grow
        detector = Detector(model, record_scores=True)
        detections = detector.process(audio, chunk_size=chunk)
        results[chunk] = (detections, np.array(detector.times), np.stack(detector.scores))
    detections, times, scores = results[160]
    assert len(detections) >= 1, "the keyword model should detect the spoken keyword"
    for chunk, (d, t, s) in results.items():
        # Same hops, same windows, same detections. Scores agree to float32 rounding, not bit for bit:
        # the MFCC matrix products run on batches of different sizes, which BLAS sums in different orders.
        assert [(x.keyword, x.time_s) for x in d] == [(x.keyword, x.time_s) for x in detections], f"chunk {chunk}"
        np.testing.assert_allclose([x.score for x in d], [x.score for x in detections], atol=1e-5)
        np.testing.assert_array_equal(t, times)
        np.testing.assert_allclose(s, scores, atol=1e-5, err_msg=f"chunk {chunk}")


@pytest.mark.parametrize("which", ["keyword_model", "pcen_model"])
def test_streaming_scores_equal_whole_signal_scoring(which, request, short_stream):
    """Each hop scores exactly the window that offline MFCC of the whole signal gives."""
    audio, _ = short_stream
    model = KwsModel(request.getfixturevalue(which))
    info = model.info
    detector = Detector(model, record_scores=True)
    detector.process(audio, chunk_size=777)
    feats = Mfcc(info.feature_config)(audio)
    ends = np.arange(info.window_frames, len(feats) + 1, info.hop_frames)
    windows = np.stack([feats[e - info.window_frames : e] for e in ends])
    expected = model.predict(windows)[:, 1:]
    assert len(detector.scores) == len(ends)
    np.testing.assert_allclose(np.stack(detector.scores), expected, atol=1e-5)
    np.testing.assert_allclose(detector.times, [detector.frame_end_time(e) for e in ends])


def test_reset_makes_runs_repeatable(keyword_model, short_stream):
    audio, _ = short_stream
    detector = Detector(KwsModel(keyword_model), record_scores=True)
    first = detector.process(audio)
    first_scores = np.stack(detector.scores)
    assert detector.process(audio) == first
    np.testing.assert_array_equal(np.stack(detector.scores), first_scores)
