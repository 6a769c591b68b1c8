"""Audio loading converts what it can and names the file when it cannot."""

import numpy as np
import pytest
import soundfile as sf

from features.audio import load_audio, sha256_file, write_wav
from features.errors import AudioError


def test_stereo_44k_is_converted_with_a_note(tmp_path, caplog):
    t = np.arange(44100) / 44100
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.1 * np.sin(2 * np.pi * 440 * t)], axis=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 44100)
    with caplog.at_level("INFO", logger="kws"):
        audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 16000) <= 1
    assert 0.25 < np.max(np.abs(audio)) < 0.35  # the two channels averaged
    assert "resampled 44100 Hz -> 16000 Hz" in caplog.text and "2 channels" in caplog.text


def test_write_is_house_format_and_atomic(tmp_path):
    path = write_wav(tmp_path / "a" / "clip.wav", np.full(1600, 0.25, np.float32))
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert [p.name for p in path.parent.iterdir()] == ["clip.wav"]  # no temp file left
    assert len(sha256_file(path)) == 64


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "file not found"),
        (b"RIFF\x00\x00garbage that is no wave", "cannot read audio"),
        ("empty", "contains no samples"),
        ("silent", "is pure silence"),
    ],
)
def test_bad_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.wav"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "empty":
        sf.write(path, np.zeros(0, np.float32), 16000)
    elif content == "silent":
        sf.write(path, np.zeros(1600, np.float32), 16000)
    with pytest.raises(AudioError, match=f"{path}.*{message}"):
        load_audio(path)
