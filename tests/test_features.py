"""The numpy MFCC must match the librosa reference, in batch and in streaming.

Tolerance: relative 1e-4 plus absolute 2e-3 (MFCC values span about ±600 here;
the differences come from float32 FFTs against librosa's float64 path).
"""

import numpy as np
import pytest
import scipy.fft

from features.config import FeatureConfig
from features.errors import ConfigError
from features.mfcc import Mfcc, StreamingMfcc, dct_matrix, mel_filterbank
from features.reference import mfcc_librosa

RTOL, ATOL = 1e-4, 2e-3


@pytest.fixture(scope="module")
def speech():
    """About three seconds of real espeak-ng speech with quiet gaps, at 16 kHz."""
    from collect.synth import synthesize

    parts = [synthesize("hello computer, what is the weather like", "en-gb-scotland"), np.zeros(4000, np.float32), synthesize("turn on the lights", "en-us")]
    return np.concatenate(parts).astype(np.float32)


def test_filterbank_matches_librosa():
    import librosa

    cfg = FeatureConfig()
    ours = mel_filterbank(cfg)
    ref = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-8)


def test_dct_matches_scipy():
    x = np.random.default_rng(0).normal(size=(7, 40))
    ref = scipy.fft.dct(x, type=2, norm="ortho", axis=-1)[:, :20]
    np.testing.assert_allclose(x @ dct_matrix(20, 40).T, ref, atol=1e-10)


PCEN = FeatureConfig(pcen_s=0.4)


@pytest.mark.parametrize("cfg", [FeatureConfig(), FeatureConfig(n_mfcc=13, n_mels=32, win_s=0.032, hop_s=0.02, fmax=8000.0), PCEN])
def test_mfcc_matches_librosa_on_speech(speech, cfg):
    ours, ref = Mfcc(cfg)(speech), mfcc_librosa(speech, cfg)
    assert ours.shape == ref.shape == (cfg.n_frames(len(speech)), cfg.n_mfcc)
    np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("cfg", [FeatureConfig(), PCEN])
def test_mfcc_matches_librosa_on_quiet_and_silent_audio(speech, cfg):
    y = np.concatenate([speech * 1e-3, np.zeros(8000, np.float32)])
    np.testing.assert_allclose(Mfcc(cfg)(y), mfcc_librosa(y, cfg), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("cfg", [FeatureConfig(), PCEN])
@pytest.mark.parametrize("chunk", [1, 7, 160, 1000, 4000, 30000])
def test_streaming_equals_batch(speech, chunk, cfg):
    stream = StreamingMfcc(cfg)
    y = speech[:20000]
    frames = np.concatenate([stream.push(y[i : i + chunk]) for i in range(0, len(y), chunk)])
    np.testing.assert_allclose(frames, Mfcc(cfg)(y), rtol=RTOL, atol=ATOL)


def test_pcen_takes_out_the_level_that_the_log_keeps(speech):
    """PCEN divides each band by its own recent average: the same speech in the same noise 20 dB quieter
    gives nearly the same features, where the log shifts every band by 20 dB."""
    noisy = speech + 0.01 * np.random.default_rng(0).normal(size=len(speech)).astype(np.float32)

    def change(cfg):
        loud, quiet = Mfcc(cfg)(noisy), Mfcc(cfg)(0.1 * noisy)
        return loud - quiet, np.linalg.norm(loud - quiet) / np.linalg.norm(loud)

    log_diff, log_change = change(FeatureConfig())
    np.testing.assert_allclose(log_diff[:, 0], 20 * np.sqrt(40), rtol=1e-3)  # 20 dB in each of 40 bands, orthonormal c0
    _, pcen_change = change(PCEN)
    assert pcen_change < 0.15 and pcen_change < log_change / 2


def test_batch_shape_and_short_input():
    mfcc = Mfcc(FeatureConfig())
    assert mfcc(np.zeros((3, 16000), np.float32)).shape == (3, 97, 20)
    assert mfcc(np.zeros(100, np.float32)).shape == (0, 20)


def test_config_validation_and_roundtrip():
    cfg = FeatureConfig(n_mfcc=13)
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.digest() != FeatureConfig().digest()
    with pytest.raises(ConfigError, match="pcen_s"):
        FeatureConfig(pcen_s=-0.1)
    with pytest.raises(ConfigError, match="n_mfcc"):
        FeatureConfig(n_mfcc=50, n_mels=40)
    with pytest.raises(ConfigError, match="hop"):
        FeatureConfig(hop_s=0.05, win_s=0.025)
    with pytest.raises(ConfigError, match="unknown feature config key.*n_filters"):
        FeatureConfig.from_dict({"n_filters": 3})


def test_hop_windows_are_the_frames_every_hop_and_none_when_too_short():
    from features.mfcc import hop_windows

    feats = np.arange(22 * 3, dtype=np.float32).reshape(22, 3)
    w = hop_windows(feats, 10, 4)
    assert w.shape == (4, 10, 3)  # starts 0, 4, 8 and 12, whose window ends on the last frame
    assert all(np.array_equal(w[i], feats[4 * i : 4 * i + 10]) for i in range(4))
    assert hop_windows(feats[:9], 10, 4).shape == (0, 10, 3)
