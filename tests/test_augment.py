"""Augmentation: each step does what its setting says (SNR, gain, shift, speed), reproducibly by seed."""

import random
from pathlib import Path

import numpy as np
import pytest

from features.augment import AugmentConfig, Augmenter, change_speed, mix_at_snr, syllable_dips
from features.errors import ConfigError
from rows import clip_row

SR = 16000
ONLY = AugmentConfig.off()


def speechlike(n: int = SR, seed: int = 0) -> np.ndarray:
    """A decaying harmonic burst in silence: loud in the middle, zeros at the ends, like a word in a window."""
    t = np.arange(n) / SR
    env = np.exp(-(((t - t.mean()) / 0.15) ** 2))
    rng = np.random.default_rng(seed)
    tone = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) / k for k, f in enumerate((180, 360, 720, 1440), 1))
    return (0.2 * env * tone).astype(np.float32)


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    noise = noisy.astype(np.float64) - clean
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2))


def with_(**kw) -> AugmentConfig:
    return AugmentConfig(**{**ONLY.to_dict(), **kw})


@pytest.mark.parametrize("snr", [0.0, 10.0, 25.0])
def test_coloured_noise_is_added_at_the_drawn_snr(snr):
    x = speechlike()
    aug = Augmenter(with_(p_color_noise=1.0, min_snr_db=snr, max_snr_db=snr), seed=1)
    for _ in range(3):
        y = aug(x)
        assert abs(snr_db(x, y) - snr) < 0.05


def test_noise_colour_ranges_from_white_to_brown():
    x = speechlike()
    lows = []
    for seed in range(12):
        noise = Augmenter(with_(p_color_noise=1.0, min_snr_db=0, max_snr_db=0), seed=seed)(x) - x
        spectrum = np.abs(np.fft.rfft(noise)) ** 2
        lows.append(spectrum[: len(spectrum) // 8].sum() / spectrum.sum())  # share of power below 1 kHz
    # white noise has 1/8 of its power below 1 kHz, brown almost all of it: both ends occur.
    assert min(lows) < 0.3 and max(lows) > 0.8


def test_gain_scales_by_the_drawn_decibels():
    x = speechlike()
    y = Augmenter(with_(p_gain=1.0, min_gain_db=-6.0, max_gain_db=-6.0), seed=0)(x)
    np.testing.assert_allclose(y, x * 10 ** (-6 / 20), rtol=1e-5, atol=1e-7)
    ys = [Augmenter(with_(p_gain=1.0, min_gain_db=-12, max_gain_db=12), seed=s)(x) for s in range(20)]
    gains = [20 * np.log10(np.max(np.abs(y)) / np.max(np.abs(x))) for y in ys]
    assert -12.01 <= min(gains) and max(gains) <= 12.01 and max(gains) - min(gains) > 6


def test_output_is_clipped_like_a_sound_card():
    y = Augmenter(with_(p_gain=1.0, min_gain_db=30, max_gain_db=30), seed=0)(speechlike())
    assert y.max() <= 1.0 and y.min() >= -1.0 and np.sum(np.abs(y) == 1.0) > 10


def test_shift_moves_the_window_content_without_rollover():
    x = speechlike()
    for seed in range(5):
        y = Augmenter(with_(p_shift=1.0, max_shift_s=0.1), seed=seed)(x)
        lags = np.arange(-1600, 1601)
        k = lags[np.argmax([np.dot(np.roll(x, lag), y) for lag in lags])]
        assert k != 0
        expected = np.roll(x, k)
        if k > 0:
            expected[:k] = 0
        else:
            expected[k:] = 0
        np.testing.assert_allclose(y, expected, atol=1e-6)


def test_background_clips_are_mixed_at_the_drawn_snr():
    x = speechlike()
    noise = np.random.default_rng(5).standard_normal(7000).astype(np.float32) * 0.01  # shorter than the window: looped
    aug = Augmenter(with_(p_background=1.0, min_background_snr_db=3.0, max_background_snr_db=3.0), seed=2, noise_clips=[noise])
    y = aug(x)
    assert abs(snr_db(x, y) - 3.0) < 0.05
    added = y - x
    # The added signal is the noise clip itself, scaled: it correlates perfectly with a stretch of it.
    from scipy.signal import correlate

    looped = np.tile(noise, 4).astype(np.float64)
    segment = added[:5000].astype(np.float64)
    start = int(np.argmax(correlate(looped[: len(noise) + 5000], segment, mode="valid", method="fft")))
    assert abs(np.corrcoef(segment, looped[start : start + 5000])[0, 1]) > 0.999


def test_without_noise_clips_background_is_skipped():
    x = speechlike()
    y = Augmenter(with_(p_background=1.0), seed=0, noise_clips=[])(x)
    np.testing.assert_array_equal(x, y)


def test_mix_at_snr_leaves_silence_silent():
    z = np.zeros(100, np.float32)
    np.testing.assert_array_equal(mix_at_snr(z, np.ones(100, np.float32), 0.0), z)


def test_speed_change_moves_pitch_and_length_together():
    t = np.arange(SR) / SR
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    fast = change_speed(tone, 1.1)
    assert len(fast) == round(SR / 1.1)
    freqs = np.fft.rfftfreq(len(fast), 1 / SR)
    assert abs(freqs[np.argmax(np.abs(np.fft.rfft(fast)))] - 484) < 3
    aug = Augmenter(with_(p_speed=1.0, min_speed=0.9, max_speed=1.1), seed=0)
    lengths = {len(aug.perturb_speed(tone)) for _ in range(10)}
    assert len(lengths) > 5 and all(SR / 1.1 - 1 <= n <= SR / 0.9 + 1 for n in lengths)
    assert Augmenter(ONLY, seed=0).perturb_speed(tone) is tone


def test_shapes_dtype_and_input_untouched():
    x = speechlike()
    before = x.copy()
    y = Augmenter(AugmentConfig(), seed=0, noise_clips=[speechlike(3000, 1)])(x)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_array_equal(x, before)
    with pytest.raises(ValueError, match="1-D"):
        Augmenter(AugmentConfig(), seed=0)(np.zeros((2, 100), np.float32))


def test_same_seed_same_result_and_global_random_state_untouched():
    x = speechlike()
    noise = [speechlike(5000, 3)]
    a = [Augmenter(AugmentConfig(), seed=[7, 1], noise_clips=noise)(x) for _ in range(2)]
    np.testing.assert_array_equal(a[0], a[1])
    b = Augmenter(AugmentConfig(), seed=[7, 2], noise_clips=noise)(x)
    assert not np.array_equal(a[0], b)

    random.seed(42)
    np.random.seed(42)
    expected = (random.random(), np.random.random())
    random.seed(42)
    np.random.seed(42)
    Augmenter(AugmentConfig(p_color_noise=1.0, p_shift=1.0), seed=0)(x)
    assert (random.random(), np.random.random()) == expected


def test_config_errors_name_the_setting():
    with pytest.raises(ConfigError, match="augment.p_gain"):
        AugmentConfig(p_gain=1.5)
    with pytest.raises(ConfigError, match="augment.min_snr_db"):
        AugmentConfig(min_snr_db=40, max_snr_db=10)
    with pytest.raises(ConfigError, match="unknown augment key.*snr"):
        AugmentConfig.from_dict({"snr": 3})
    with pytest.raises(ConfigError, match="augment.max_shift_s"):
        AugmentConfig(max_shift_s="0.1")
    assert AugmentConfig.from_dict(AugmentConfig().to_dict()) == AugmentConfig()


def test_noise_floor_has_the_drawn_absolute_level():
    silence = np.zeros(SR, np.float32)
    y = Augmenter(with_(p_floor=1.0, min_floor_db=-60.0, max_floor_db=-60.0), seed=0)(silence)
    assert abs(20 * np.log10(np.sqrt(np.mean(y.astype(np.float64) ** 2))) + 60.0) < 0.2


def test_room_bank_is_seeded_and_has_the_drawn_reverberation():
    """Simulated rooms start at their direct path (amplitude 1) and ring for about the drawn RT60.

    The image-source rooms ring somewhat longer than Sabine's formula, which sets their absorption, predicts."""
    from features.rooms import impulse_responses, import_pyroomacoustics

    pra = import_pyroomacoustics()  # not a plain import: that would leave SIGPIPE blocked for the rest of the session

    rooms = impulse_responses(4, seed=1, min_rt60=0.3, max_rt60=0.6)
    again = impulse_responses(4, seed=1, min_rt60=0.3, max_rt60=0.6)
    assert all(np.array_equal(a, b) for a, b in zip(rooms, again))
    for h in rooms:
        assert h.dtype == np.float32 and np.argmax(np.abs(h)) < 50 and np.max(np.abs(h)) == pytest.approx(1.0)
        assert 0.2 < pra.experimental.measure_rt60(h, fs=SR, decay_db=20) < 0.9


def test_room_adds_a_reverberant_tail_after_the_word():
    from features.rooms import impulse_responses

    x = speechlike()
    rooms = impulse_responses(3, seed=0, min_rt60=0.5, max_rt60=0.7)
    y = Augmenter(with_(p_room=1.0, n_rooms=3), seed=0, rooms=rooms)(x)
    assert y.shape == x.shape
    after = slice(int(0.8 * SR), int(0.9 * SR))  # the burst has died away here: only the room still rings
    assert np.sqrt(np.mean(y[after] ** 2)) > 10 * np.sqrt(np.mean(x[after] ** 2)) + 1e-4
    dry = Augmenter(with_(p_room=1.0, n_rooms=3), seed=0)(x)  # no bank: the step is skipped
    assert np.array_equal(dry, x)


def test_microphone_cuts_the_band_edges():
    """The microphone colouration takes away the lowest and highest frequencies of white noise."""
    x = (np.random.default_rng(0).standard_normal(SR) * 0.05).astype(np.float32)
    spec = lambda a: np.abs(np.fft.rfft(a)) ** 2  # noqa: E731
    f = np.fft.rfftfreq(SR, 1 / SR)
    low, high, mid = f < 40, f > 7800, (f > 1000) & (f < 1400)
    y = Augmenter(with_(p_mic=1.0, max_mic_eq_db=0.0), seed=3)(x)
    sx, sy = spec(x), spec(y)
    assert sy[low].mean() < 0.3 * sx[low].mean()
    assert sy[high].mean() < 0.3 * sx[high].mean()
    assert 0.5 < sy[mid].mean() / sx[mid].mean() < 1.5


def test_room_settings_are_checked():
    with pytest.raises(ConfigError, match="n_rooms"):
        AugmentConfig(p_room=0.5)
    with pytest.raises(ConfigError, match="rt60"):
        AugmentConfig(min_rt60_s=1.0, max_rt60_s=0.5)
    with pytest.raises(ConfigError, match="n_rooms"):
        AugmentConfig(n_rooms=2.5)


def _harmonic(f0: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.1 * sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 20) if f0 * h < 7000)).astype(np.float32)


def test_vocal_tract_warp_reads_the_spectrum_higher():
    """MFCC of a 150 Hz voice through a filterbank warped by 1.1 match a 165 Hz voice, not the 150 Hz one."""
    from features.config import FeatureConfig
    from features.mfcc import Mfcc

    cfg = FeatureConfig()
    warped, higher, plain = Mfcc(cfg, warp=1.1)(_harmonic(150)), Mfcc(cfg)(_harmonic(165)), Mfcc(cfg)(_harmonic(150))
    assert np.abs(warped - higher).mean() < 0.1 * np.abs(plain - higher).mean()
    with pytest.raises(ConfigError, match="augment.max_warp"):
        AugmentConfig(max_warp=0.5)


def test_warped_epochs_differ_only_in_the_features_and_are_seeded():
    """p_warp changes the MFCC of the warped windows, leaves the unwarped ones and the labels alone, and repeats by seed."""
    from features.config import FeatureConfig
    from train.dataset import Clip, WindowMaker

    row = clip_row(sample_rate=SR)
    clips = [Clip(row, speechlike(SR, seed=i), i % 2, (4000, 12000)) for i in range(12)]
    base = with_(p_shift=1.0, p_gain=1.0)
    plain = WindowMaker(FeatureConfig(), 1.0, base, seed=3, progress=False).training_epoch(clips, 0)
    maker = WindowMaker(FeatureConfig(), 1.0, with_(**{**base.to_dict(), "p_warp": 0.5, "max_warp": 0.15}), seed=3, progress=False)
    warped = maker.training_epoch(clips, 0)
    assert torch_equal(warped[1], plain[1])
    same = [bool(np.allclose(a, b)) for a, b in zip(warped[0].numpy(), plain[0].numpy())]
    assert 0 < sum(same) < len(clips)  # the windows drawn unwarped are exactly as without warping
    assert torch_equal(maker.training_epoch(clips, 0)[0], warped[0])
    assert maker.warps.min() == pytest.approx(0.85) and maker.warps.max() == pytest.approx(1.15)


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_mask_bands_sets_the_masked_band_and_span_to_the_window_mean():
    from features.mfcc import mask_bands

    rng = np.random.default_rng(0)
    log_mel = rng.normal(size=(3, 20, 8)).astype(np.float32)
    before = log_mel.copy()
    out = mask_bands(log_mel, np.array([[2, 5], [0, 0], [7, 8]]), np.array([[0, 0], [4, 9], [19, 20]]))
    keep = np.ones_like(log_mel, bool)
    keep[0, :, 2:5] = keep[1, 4:9, :] = keep[2, :, 7:8] = keep[2, 19:20, :] = False
    assert np.array_equal(out[keep], log_mel[keep])  # everything else untouched
    for i in range(3):
        assert np.all(out[i][~keep[i]] == log_mel[i].mean())
    assert np.array_equal(log_mel, before)  # a copy: the input is left as it was


def test_masked_epochs_differ_only_in_the_features_and_are_seeded():
    """p_mask masks some windows' features, leaves the others as without it (warps included), and repeats by seed."""
    from features.config import FeatureConfig
    from features.mfcc import Mfcc
    from train.dataset import Clip, WindowMaker

    row = clip_row(sample_rate=SR)
    clips = [Clip(row, speechlike(SR, seed=i), i % 2, (4000, 12000)) for i in range(16)]
    base = with_(p_shift=1.0, p_gain=1.0, p_warp=0.5, max_warp=0.1)
    plain = WindowMaker(FeatureConfig(), 1.0, base, seed=3, progress=False).training_epoch(clips, 0)
    maker = WindowMaker(FeatureConfig(), 1.0, with_(**{**base.to_dict(), "p_mask": 0.5, "max_mask_bands": 8, "max_mask_frames": 20}),
                        seed=3, progress=False)
    masked = maker.training_epoch(clips, 0)
    assert torch_equal(masked[1], plain[1])
    same = [bool(np.array_equal(a, b)) for a, b in zip(masked[0].numpy(), plain[0].numpy())]
    assert 0 < sum(same) < len(clips)  # unmasked windows (and empty masks) are exactly as before
    assert torch_equal(maker.training_epoch(clips, 0)[0], masked[0])
    # Masking nothing through the masked path gives the plain MFCC.
    windows = np.stack([speechlike(SR, seed=i) for i in range(3)])
    empty = np.zeros((3, 2), int)
    assert np.array_equal(Mfcc(FeatureConfig()).masked(windows, empty, empty), Mfcc(FeatureConfig())(windows))
    for bad in ({"max_mask_bands": -1}, {"max_mask_frames": 2.5}, {"p_mask": 1.5}):
        with pytest.raises(ConfigError, match="augment"):
            AugmentConfig(**bad)


def three_syllables(gap_db: float = -30.0) -> tuple[np.ndarray, tuple[int, int], list[int]]:
    """A "com-pu-ter": a 220 Hz tone loud for three 150 ms syllables, at ``gap_db`` for the 40 ms between them.

    Returns the audio (300 ms of silence either side), the word's span and the middles of the two gaps.
    """
    syl, gap, lead = int(0.15 * SR), int(0.04 * SR), int(0.3 * SR)
    envelope = np.concatenate([np.ones(syl), np.full(gap, 10 ** (gap_db / 20)), np.ones(syl), np.full(gap, 10 ** (gap_db / 20)), np.ones(syl)])
    ramp = np.hanning(int(0.01 * SR))
    envelope = np.convolve(envelope, ramp / ramp.sum(), "same")  # 10 ms transitions, like onsets and closures
    word = 0.3 * envelope * np.sin(2 * np.pi * 220 * np.arange(len(envelope)) / SR)
    audio = np.concatenate([np.zeros(lead), word, np.zeros(lead)]).astype(np.float32)
    return audio, (lead, lead + len(word)), [lead + syl + gap // 2, lead + 2 * syl + gap + gap // 2]


def test_syllable_dips_are_found_between_syllables_only():
    audio, span, middles = three_syllables()
    dips = syllable_dips(audio, span, SR)
    assert len(dips) == 2 and all(abs(d - m) <= 0.03 * SR for d, m in zip(dips, middles))
    assert syllable_dips(*three_syllables(gap_db=-3.0)[:2], SR) == []  # dips too shallow to be syllable boundaries
    one = speechlike()
    assert syllable_dips(one, (4000, 12000), SR) == []
    assert syllable_dips(np.zeros(SR, np.float32), (0, SR), SR) == []
    for frames in range(5, 9):  # spans of 50-80 ms (a mined window's short blip): too short to hold two syllables
        assert syllable_dips(audio, (span[0], span[0] + frames * SR // 100), SR) == []


def test_pauses_are_silence_at_the_dips_within_the_room_and_seeded():
    audio, span, _ = three_syllables()
    aug = Augmenter(with_(p_pause=1.0, max_pause_s=0.2, max_pauses=2), seed=5)
    dips = syllable_dips(audio, span, SR)
    lengths = set()
    for _ in range(20):
        out, new_span = aug.insert_pauses(audio, span, room=int(0.25 * SR))
        added = len(out) - len(audio)
        lengths.add(added)
        assert 0 <= added <= 0.25 * SR and new_span == (span[0], span[1] + added)
        assert np.array_equal(out[: dips[0]], audio[: dips[0]])  # nothing moves before the first dip
        assert np.array_equal(out[-(len(audio) - dips[1]):], audio[dips[1]:])  # nor after the last, only later
        zeros = np.flatnonzero(out[span[0] : new_span[1]] == 0)
        assert len(zeros) >= added  # the inserted samples are digital silence inside the word
    assert len(lengths) > 10  # lengths are drawn, not fixed
    first, second = (Augmenter(with_(p_pause=1.0, max_pause_s=0.2, max_pauses=2), seed=5) for _ in range(2))
    assert np.array_equal(first.insert_pauses(audio, span, int(0.25 * SR))[0], second.insert_pauses(audio, span, int(0.25 * SR))[0])
    # No room in the window, or pauses off: the clip comes back as it was, and nothing is drawn when off.
    assert aug.insert_pauses(audio, span, room=0)[0] is audio
    off = Augmenter(ONLY, seed=1)
    state = off.rng.bit_generator.state
    assert off.insert_pauses(audio, span, SR)[0] is audio and off.rng.bit_generator.state == state
    for bad, name in (({"max_pause_s": 0.8}, "max_pause_s"), ({"max_pauses": 0}, "max_pauses must be a whole number >= 1"),
                      ({"max_pauses": 1.5}, "max_pauses must be a whole number >= 1"), ({"p_pause": -0.1}, "p_pause")):
        with pytest.raises(ConfigError, match=f"augment.{name}"):
            AugmentConfig(**bad)


def test_a_paused_keyword_still_fits_its_training_window():
    """The window keeps the whole spoken part of a keyword however long the pauses drawn, so no window is a cut keyword."""
    from features.config import FeatureConfig
    from train.dataset import Clip, WindowMaker

    audio, span, _ = three_syllables()
    row = clip_row(sample_rate=SR, duration_s=len(audio) / SR)
    maker = WindowMaker(FeatureConfig(), 1.0, with_(p_pause=1.0, max_pause_s=0.5, max_pauses=2, p_shift=1.0), seed=0, progress=False)
    aug = Augmenter(maker.augment, seed=0)
    grown = 0
    for _ in range(30):
        clip = maker._perturbed(Clip(row, audio, 1, span), aug)
        s, e = clip.span
        assert e - s <= maker.window_samples - 2 * maker.margin
        grown = max(grown, e - s - (span[1] - span[0]))
    assert grown > 0.2 * SR  # long pauses were drawn and shrunk to the room there was (0.26 s), not dropped


def test_simulating_rooms_leaves_sigpipe_unblocked():
    """pyroomacoustics' import blocks SIGPIPE, which every later child process would inherit; rooms.py undoes it (fresh interpreter)."""
    import subprocess
    import sys

    code = ("import signal; signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGPIPE]); "  # whatever the test process's mask
            "from features.rooms import impulse_responses; impulse_responses(1, seed=0); "
            "print(signal.SIGPIPE in signal.pthread_sigmask(signal.SIG_BLOCK, []))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"


def test_babble_is_other_speech_at_the_drawn_snr():
    x = speechlike()
    talkers = [np.random.default_rng(s).standard_normal(9000).astype(np.float32) * 0.05 for s in (11, 12, 13)]
    aug = Augmenter(with_(p_babble=1.0, max_babble_talkers=1, min_babble_snr_db=7.0, max_babble_snr_db=7.0), seed=3,
                    babble_clips=talkers)
    y = aug(x)
    assert abs(snr_db(x, y) - 7.0) < 0.05
    # With one talker the added signal is a stretch of one of the clips (looped from a random start), scaled.
    from scipy.signal import correlate

    segment = (y - x)[:5000].astype(np.float64)
    best = 0.0
    for t in talkers:
        looped = np.tile(t, 3).astype(np.float64)
        start = int(np.argmax(np.abs(correlate(looped[: len(t) + 5000], segment, mode="valid", method="fft"))))
        best = max(best, abs(np.corrcoef(segment, looped[start : start + 5000])[0, 1]))
    assert best > 0.999


def test_babble_talkers_are_summed_at_equal_loudness():
    n = 4000
    quiet, loud = (np.random.default_rng(s).standard_normal(n).astype(np.float32) * a for s, a in ((1, 0.001), (2, 0.5)))
    aug = Augmenter(with_(p_babble=1.0, max_babble_talkers=2), seed=0, babble_clips=[quiet, loud])
    babble = [aug._babble(n) for _ in range(40)]
    both = [b for b in babble if np.std(b) > 1.2]  # two unit-RMS talkers sum to RMS ~1.41, one to 1
    assert both and len(both) < len(babble)
    for b in both:  # the quiet clip counts as much as the loud one, whatever their recorded levels
        assert abs(np.std(b) - np.sqrt(2)) < 0.1


def test_babble_off_or_without_sources_changes_nothing():
    x = speechlike()
    talkers = [speechlike(9000, 4)]
    np.testing.assert_array_equal(Augmenter(with_(p_babble=1.0), seed=0, babble_clips=[])(x), x)
    # p_babble 0 draws nothing: the same windows as an augmenter given no babble at all
    cfg = AugmentConfig()
    np.testing.assert_array_equal(Augmenter(cfg, seed=5, babble_clips=talkers)(x), Augmenter(cfg, seed=5)(x))


def test_babble_settings_are_checked():
    with pytest.raises(ConfigError, match="max_babble_talkers"):
        AugmentConfig(max_babble_talkers=0)
    with pytest.raises(ConfigError, match="min_babble_snr_db"):
        AugmentConfig(min_babble_snr_db=30.0, max_babble_snr_db=10.0)
