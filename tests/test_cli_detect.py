"""``kws detect`` end to end, as a user runs it: a real model, real files, a real process."""

import csv
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from deploy.detector import fire_indices, smooth
from deploy.modelfile import KwsModel
from features.audio import write_wav
from pulse import scene

# The commands as the installed ``kws`` runs them (main() turns KwsError into one line, exit 2).
KWS = [sys.executable, "-c", "import deploy.cli.detect, deploy.cli.listen, deploy.cli.devices; from deploy.cli import main; main()"]


def run_kws(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(KWS + [str(a) for a in args], capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def keyword_file(tmp_path_factory):
    """A 16 kHz WAV: silence, a sentence, silence, "computer", silence; and where the keyword is."""
    audio, segments = scene([
        ("silence", 0.8), ("say", ("the weather is nice today", "en-us+m3")), ("silence", 1.0),
        ("say", ("computer", "en-us+m1")), ("silence", 1.5),
    ])
    path = write_wav(tmp_path_factory.mktemp("detect") / "keyword.wav", audio)
    keyword = next(s for s in segments if s[1] == "computer")
    return path, audio, keyword


def test_detect_prints_the_keyword_where_it_is(keyword_model, keyword_file):
    path, audio, (_, _, start, end) = keyword_file
    out = run_kws("detect", keyword_model, path)
    assert out.returncode == 0, out.stderr
    lines = [line.split("\t") for line in out.stdout.splitlines() if "computer" in line]
    assert len(lines) == 1, out.stdout
    name, time_s, keyword, score = lines[0]
    assert name == str(path) and keyword == "computer"
    window_s = KwsModel(keyword_model).info.window_s
    assert start < float(time_s.rstrip(" s")) <= end + window_s
    assert KwsModel(keyword_model).info.threshold <= float(score) <= 1.0


def test_scores_csv_has_one_row_per_hop_and_replays_the_detections(keyword_model, keyword_file, tmp_path):
    path, audio, _ = keyword_file
    out_csv = tmp_path / "scores.csv"
    out = run_kws("detect", keyword_model, path, "--scores", out_csv, "--chunk", 512)
    assert out.returncode == 0, out.stderr
    with open(out_csv) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["time_s", "score"]
    times = np.array([float(r[0]) for r in rows[1:]])
    scores = np.array([float(r[1]) for r in rows[1:]])
    info = KwsModel(keyword_model).info
    n_frames = info.feature_config.n_frames(len(audio))
    assert len(times) == (n_frames - info.window_frames) // info.hop_frames + 1
    assert np.all(np.diff(times) > 0)
    np.testing.assert_allclose(np.diff(times), info.hop_s, atol=1e-4)
    assert np.all((scores >= 0) & (scores <= 1))
    # The CSV is enough to replay the detector's decision without the model.
    fired = fire_indices(smooth(scores, info.smoothing), info.threshold, round(info.refractory_s / info.hop_s))
    printed = [float(line.split("\t")[1].rstrip(" s")) for line in out.stdout.splitlines() if "\tcomputer\t" in line]
    np.testing.assert_allclose(times[fired], printed, atol=1e-3)


def test_threshold_option_overrides_the_model(keyword_model, keyword_file, tmp_path):
    path, _, _ = keyword_file
    info = KwsModel(keyword_model).info
    for threshold in (0.2, 0.95):
        out_csv = tmp_path / f"scores-{threshold}.csv"
        out = run_kws("detect", keyword_model, path, "--threshold", threshold, "--scores", out_csv)
        assert out.returncode == 0, out.stderr
        assert f"(threshold {threshold:g})" in out.stderr
        with open(out_csv) as f:
            rows = list(csv.reader(f))[1:]
        times = np.array([float(r[0]) for r in rows])
        scores = np.array([float(r[1]) for r in rows])
        fired = fire_indices(smooth(scores, info.smoothing), threshold, round(info.refractory_s / info.hop_s))
        printed = [float(line.split("\t")[1].rstrip(" s")) for line in out.stdout.splitlines() if "\tcomputer\t" in line]
        np.testing.assert_allclose(times[fired], printed, atol=1e-3)


def test_bad_files_are_reported_one_line_each_and_the_rest_processed(keyword_model, keyword_file, tmp_path):
    path, audio, _ = keyword_file
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
    missing = tmp_path / "missing.wav"
    stereo = tmp_path / "stereo44k.wav"
    t44 = np.interp(np.arange(int(len(audio) * 44100 / 16000)) * 16000 / 44100, np.arange(len(audio)), audio)
    sf.write(stereo, np.stack([t44, 0.8 * t44], axis=1), 44100)
    out_csv = tmp_path / "scores.csv"
    out = run_kws("detect", keyword_model, missing, path, corrupt, stereo, "--scores", out_csv)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("kws: error:")]
    assert len(errors) == 2
    assert str(missing) in errors[0] and "not found" in errors[0]
    assert str(corrupt) in errors[1]
    assert "2 of 4 files failed" in out.stderr
    assert "resampled 44100 Hz -> 16000 Hz" in out.stderr  # converted with a note, not rejected
    # The good file and the converted stereo 44.1 kHz file are both processed and both find the keyword.
    found = {line.split("\t")[0] for line in out.stdout.splitlines() if "\tcomputer\t" in line}
    assert found == {str(path), str(stereo)}
    with open(out_csv) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["file", "time_s", "score"]  # several files: a file column first
    assert {r[0] for r in rows[1:]} == {str(path), str(stereo)}


def test_a_file_that_is_not_a_model_is_one_line_error(keyword_file, tmp_path):
    path, _, _ = keyword_file
    not_model = tmp_path / "model.onnx"
    not_model.write_bytes(b"not an onnx file")
    out = run_kws("detect", not_model, path)
    assert out.returncode == 2
    assert out.stderr.startswith("kws: error:") and str(not_model) in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
