"""Bad input at the command line: one line naming the problem, non-zero exit, never a traceback."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

KWS = str(Path(sys.executable).with_name("kws"))


def run(*args, cwd=None):
    return subprocess.run([KWS, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


def synth_twice(tmp_path, engine: str, *args) -> list:
    """``kws synth --engine`` in two fresh processes with the same arguments; asserts the same bytes, returns the rows."""
    from collect.manifest import load_rows

    for name in ("a", "b"):
        ok = run("synth", tmp_path / name, "--engine", engine, *args)
        assert ok.returncode == 0, ok.stderr
    a, b = load_rows(tmp_path / "a"), load_rows(tmp_path / "b")
    assert a and [(r.path, r.sha256) for r in a] == [(r.path, r.sha256) for r in b]
    return a


def assert_clean_error(result, *needles):
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    sf.write(d / "empty.wav", np.zeros(0, np.float32), 16000, subtype="PCM_16")
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" + bytes(range(256)))
    (d / "notes.txt").write_text("not a model")
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), d / "foreign.onnx")
    return d


def test_missing_audio_file(keyword_model, tmp_path):
    assert_clean_error(run("detect", keyword_model, tmp_path / "nope.wav"), "nope.wav", "file not found")


def test_empty_wav(keyword_model, bad_files):
    assert_clean_error(run("detect", keyword_model, bad_files / "empty.wav"), "empty.wav", "no samples")


def test_corrupt_wav(keyword_model, bad_files):
    assert_clean_error(run("detect", keyword_model, bad_files / "corrupt.wav"), "corrupt.wav", "cannot read audio")


def test_stereo_44k_is_converted_not_rejected(keyword_model, tmp_path):
    from collect.synth import synthesize
    from features.audio import resample

    speech = resample(np.concatenate([np.zeros(8000, np.float32), synthesize("computer", "en-us"), np.zeros(8000, np.float32)]), 16000, 44100)
    sf.write(tmp_path / "stereo.wav", np.stack([speech, 0.5 * speech], axis=1), 44100)
    result = run("detect", keyword_model, tmp_path / "stereo.wav")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "resampled 44100 Hz -> 16000 Hz" in result.stderr and "2 channels" in result.stderr


def test_model_not_ours(bad_files, tiny_dataset):
    clip = next(tiny_dataset.glob("*/*/*.wav"))
    assert_clean_error(run("detect", bad_files / "foreign.onnx", clip), "foreign.onnx", "not one made by 'kws export'")
    assert_clean_error(run("detect", bad_files / "notes.txt", clip), "notes.txt", "not a readable ONNX model")
    assert_clean_error(run("detect", bad_files / "missing.onnx", clip), "missing.onnx", "model file not found")


def test_export_of_something_that_is_not_a_checkpoint(bad_files):
    assert_clean_error(run("export", bad_files / "notes.txt"), "notes.txt", "checkpoint")


def test_manifest_row_pointing_nowhere(tmp_path):
    from collect.synth import synthesize_dataset
    from collect.manifest import load_rows

    synthesize_dataset(tmp_path, "computer", accents=["en-US"], n_voices_per_accent=1, takes_per_voice=2,
                       n_confusables=1, n_sentences=1, n_noise=0, progress=False)
    gone = load_rows(tmp_path)[0].path
    (tmp_path / gone).unlink()
    result = run("data", tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{gone}: file not found" in result.stdout
    assert "3 good clips" in result.stdout


def test_missing_dataset_folder(tmp_path):
    assert_clean_error(run("data", tmp_path / "nowhere"), "nowhere", "dataset folder not found")
