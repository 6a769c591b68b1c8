"""Mining false accepts and fine-tuning on them: real model, real dataset, windows that really scored high."""

import shutil

import numpy as np
import pytest

from collect.manifest import NEGATIVE, load_rows
from deploy.mine import find_false_accepts, write_mined
from deploy.modelfile import KwsModel
from features.audio import load_audio
from features.errors import ConfigError
from features.mfcc import Mfcc


@pytest.fixture(scope="module")
def negatives(tiny_dataset):
    return [(r, load_audio(tiny_dataset / r.path)) for r in load_rows(tiny_dataset) if r.label == NEGATIVE]


def test_mined_windows_are_what_the_model_scored_high(keyword_model, negatives):
    model = KwsModel(keyword_model)
    found = find_false_accepts(model, negatives, threshold=0.05, progress=False)
    assert found, "the tiny model scores some confusable at least 0.05"
    scores = [f["score"] for f in found]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 0.05
    n = int(round(model.info.window_s * 16000))
    for f in found[:5]:
        assert len(f["audio"]) == n and f["row"].label == NEGATIVE
        again = float(model.predict(Mfcc(model.info.feature_config)(f["audio"][None])[:, -model.info.window_frames:])[0, 1])
        assert again == pytest.approx(f["score"], abs=0.05)  # the cut window is the window that was scored


def test_mining_in_noise_adds_the_windows_scored_under_noise(keyword_model, negatives, tiny_dataset, tmp_path):
    """noise_snr_db: the clean windows as before, plus windows of each clip under pink noise, written as scored; seeded."""
    from deploy.streams import speech_power, trim_silence

    model = KwsModel(keyword_model)
    clean = find_false_accepts(model, negatives, threshold=0.05, progress=False)
    both = find_false_accepts(model, negatives, threshold=0.05, noise_snr_db=5.0, seed=3, progress=False)
    key = lambda f: (f["row"].path, f["time_s"], round(f["score"], 6))  # noqa: E731
    assert sorted(map(key, clean)) == sorted(key(f) for f in both if f["noise_snr_db"] is None)
    noisy = [f for f in both if f["noise_snr_db"] == 5.0]
    assert noisy, "under noise at 5 dB SNR the tiny model fires somewhere"
    n = int(round(model.info.window_s * 16000))
    for f in noisy[:5]:
        again = float(model.predict(Mfcc(model.info.feature_config)(f["audio"][None])[:, -model.info.window_frames:])[0, 1])
        assert again == pytest.approx(f["score"], abs=0.05)  # the noisy window, as scored, is what is kept
        source = next(a for r, a in negatives if r == f["row"])
        padded = np.concatenate([np.zeros(n // 2, np.float32), source, np.zeros(n // 2, np.float32)])
        end = int(round(f["time_s"] * 16000)) + n // 2  # where the window ends in the padded clip (time_s is rounded to 1 ms)
        added = min(np.mean(np.square(f["audio"] - padded[end + k - n : end + k], dtype=np.float64)) for k in range(-16, 17)
                    if end + k - n >= 0 and end + k <= len(padded))
        power = speech_power([trim_silence(padded)])
        assert len(f["audio"]) == n and 10 * np.log10(power / added) == pytest.approx(5.0, abs=1.5)  # the noise is at the SNR asked for
    again = find_false_accepts(model, negatives, threshold=0.05, noise_snr_db=5.0, seed=3, progress=False)
    assert [key(f) for f in again] == [key(f) for f in both]
    dataset = tmp_path / "ds"
    shutil.copytree(tiny_dataset, dataset)
    write_mined(dataset, noisy, max_clips=2, session="mined-noisy")
    assert all(r.source.endswith(":pink5dB") for r in load_rows(dataset) if r.session == "mined-noisy")


def test_write_mined_keeps_speakers_and_refuses_to_overwrite(keyword_model, negatives, tiny_dataset, tmp_path):
    dataset = tmp_path / "ds"
    shutil.copytree(tiny_dataset, dataset)
    found = find_false_accepts(KwsModel(keyword_model), negatives, threshold=0.05, progress=False)
    write_mined(dataset, found, max_clips=3, session="mined-1")
    mined = [r for r in load_rows(dataset) if r.session == "mined-1"]
    assert len(mined) == min(3, len(found))
    for r, f in zip(mined, found):
        assert r.label == NEGATIVE and r.kind == "mined"
        assert (r.speaker, r.accent) == (f["row"].speaker, f["row"].accent)
        assert np.allclose(load_audio(dataset / r.path), f["audio"], atol=1e-4)
    with pytest.raises(ConfigError, match="already exists"):
        write_mined(dataset, found, session="mined-1")
    assert len([r for r in load_rows(dataset) if r.session == "mined-1"]) == len(mined)


def test_fine_tuning_starts_from_the_given_weights(tiny_run, tiny_dataset, tmp_path):
    """One epoch at a tiny learning rate from the tiny run's weights stays close to them; a mismatched start is refused."""
    import torch

    from train.checkpoint import load_checkpoint
    from train.config import TrainConfig
    from train.loop import train

    base = TrainConfig.from_file("configs/tiny.json")
    result = train(tiny_dataset, base.replace(init_from=str(tiny_run.checkpoint), epochs=1, lr=1e-7, windows_per_epoch=0, patience=0),
                   tmp_path / "ft", progress=False)
    start, _ = load_checkpoint(tiny_run.checkpoint)
    tuned, _ = load_checkpoint(result.checkpoint)
    fresh = train(tiny_dataset, base.replace(epochs=1, lr=1e-7, windows_per_epoch=0, patience=0), tmp_path / "fresh", progress=False)
    scratch, _ = load_checkpoint(fresh.checkpoint)
    w = lambda m: torch.cat([p.flatten() for n, p in m.state_dict().items() if "weight" in n])  # noqa: E731
    assert torch.norm(w(tuned) - w(start)) < 0.1 * torch.norm(w(scratch) - w(start))
    other = base.replace(init_from=str(tiny_run.checkpoint), model_args={**base.model_args, "channels": 8}, epochs=1)
    with pytest.raises(ConfigError, match="model_args differ"):
        train(tiny_dataset, other, tmp_path / "bad", progress=False)

    # --resume of the real-speech benchmark: the fine-tuning run counts when it started from the same
    # weights, found by digest wherever they lie now, and not when it started from other weights.
    import shutil

    from deploy.benchmark_real import finished_run

    moved = tmp_path / "moved" / "best.pt"
    moved.parent.mkdir()
    shutil.copy(tiny_run.checkpoint, moved)
    same = base.replace(init_from=str(moved), epochs=1, lr=1e-7, windows_per_epoch=0, patience=0)
    assert finished_run(tmp_path / "ft", tiny_dataset, same) is not None
    assert finished_run(tmp_path / "ft", tiny_dataset, same.replace(init_from=str(fresh.checkpoint))) is None


def test_kws_mine_cli(keyword_model, tiny_dataset, tmp_path):
    from test_cli_errors import assert_clean_error, run

    dataset = tmp_path / "ds"
    shutil.copytree(tiny_dataset, dataset)
    ok = run("mine", keyword_model, dataset, "--threshold", "0.05", "--max-clips", "4", "--session", "m", "--no-progress")
    assert ok.returncode == 0, ok.stderr
    assert "--init-from" in ok.stdout
    assert 1 <= len([r for r in load_rows(dataset) if r.session == "m"]) <= 4
    noisy = run("mine", keyword_model, dataset, "--threshold", "0.05", "--noise-snr-db", "5", "--session", "n", "--no-progress")
    assert noisy.returncode == 0, noisy.stderr
    assert any(r.source.endswith(":pink5dB") for r in load_rows(dataset) if r.session == "n")
    assert_clean_error(run("mine", keyword_model, dataset, "--threshold", "1.5"), "threshold")


def test_mined_windows_stay_out_of_stream_background(keyword_model, negatives, tiny_dataset, tmp_path):
    """Calibration streams ordinary speech: the model's own mined worst windows, looped, would set the threshold."""
    from deploy.evaluate import EvalClip, stream_pass

    dataset = tmp_path / "ds"
    shutil.copytree(tiny_dataset, dataset)
    model = KwsModel(keyword_model)
    write_mined(dataset, find_false_accepts(model, negatives, threshold=0.05, progress=False), max_clips=5, session="mined")
    rows = load_rows(dataset)
    assert any(r.kind == "mined" for r in rows)
    clips = [EvalClip(r, load_audio(dataset / r.path), int(r.label == "computer")) for r in rows]
    run = stream_pass(model, clips, background_minutes=5.0, snr_db=10.0, seed=0, progress=False)
    paths = {e.path for e in run.events}
    assert not any(p.startswith("mined/") for p in paths)
    assert any("sentence" in p for p in paths), sorted(paths)[:5]
