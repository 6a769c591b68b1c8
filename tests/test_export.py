"""Export: the ONNX file carries its metadata and agrees with PyTorch on real clips, or fails loudly."""

import numpy as np
import pytest
import torch

from deploy.export import AGREEMENT_TOLERANCE, check_windows, export_model
from deploy.modelcard import card_path
from deploy.modelfile import KwsModel
from features.config import FeatureConfig
from features.errors import ModelError
from train.checkpoint import load_checkpoint


def test_metadata_describes_the_run(keyword_model, tiny_run):
    _, ckpt = load_checkpoint(tiny_run.checkpoint)
    info = KwsModel(keyword_model).info
    assert info.labels == tuple(ckpt["labels"]) == ("negative", "computer")
    assert info.feature_config == FeatureConfig.from_dict(ckpt["feature_config"])
    assert info.window_frames == ckpt["window_frames"]
    assert info.data_digest == ckpt["data_digest"] and len(info.data_digest) == 64
    assert info.metadata["splits"] == ckpt["splits"]
    assert card_path(keyword_model).read_text().startswith("# Model card: computer")


def test_onnx_agrees_with_pytorch_on_real_clips(keyword_model, tiny_run):
    model, ckpt = load_checkpoint(tiny_run.checkpoint)
    windows = check_windows(ckpt, None, limit=64)
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(windows)), dim=-1).numpy()
    got = KwsModel(keyword_model).predict(windows)
    assert np.max(np.abs(got - expected)) <= AGREEMENT_TOLERANCE
    assert got.argmax(1).tolist() == expected.argmax(1).tolist()


def test_disagreement_fails_and_writes_nothing(tiny_run, tmp_path):
    out = tmp_path / "m.onnx"
    with pytest.raises(ModelError, match="export check failed"):
        export_model(tiny_run.checkpoint, out, tolerance=-1.0)  # no difference can pass a negative tolerance
    assert not out.exists() and not list(tmp_path.glob(".export-*"))


def test_bad_settings_are_refused(tiny_run, tmp_path):
    with pytest.raises(ModelError, match="threshold"):
        export_model(tiny_run.checkpoint, tmp_path / "m.onnx", threshold=1.5)


def test_threshold_is_chosen_on_validation_speakers(tiny_run, tmp_path, capsys):
    """Without a threshold, export replays the validation stream and stores the pick in the metadata; ``progress=False`` hides only the bar."""
    path = export_model(tiny_run.checkpoint, tmp_path / "m.onnx", target_fa_per_hour=2.0)
    assert "stream pass" in capsys.readouterr().err
    quiet = export_model(tiny_run.checkpoint, tmp_path / "quiet.onnx", target_fa_per_hour=2.0, progress=False)
    assert "stream pass" not in capsys.readouterr().err
    assert KwsModel(quiet).info.metadata["calibration"] == KwsModel(path).info.metadata["calibration"]
    info = KwsModel(path).info
    cal = info.metadata["calibration"]
    assert cal["split"] == "val" and cal["target_fa_per_hour"] == 2.0 and cal["n_keywords"] > 0
    assert info.threshold == cal["threshold"] and 0.0 < info.threshold < 1.0
    assert info.smoothing == cal["smoothing"] >= 1
    assert cal["met"] == (cal["fa_per_hour"] <= 2.0)
    assert cal["background_hours"] > 0.2


def test_choose_threshold_prefers_low_frr_then_margin():
    from deploy.calibrate import choose_threshold

    curve = [
        {"threshold": 0.3, "frr": 0.0, "fa_per_hour": 9.0},
        {"threshold": 0.6, "frr": 0.1, "fa_per_hour": 0.0},
        {"threshold": 0.7, "frr": 0.1, "fa_per_hour": 0.0},
        {"threshold": 0.9, "frr": 0.4, "fa_per_hour": 0.0},
    ]
    assert choose_threshold(curve, 1.0)["threshold"] == 0.7
    assert choose_threshold(curve, 10.0)["threshold"] == 0.3
    # nothing meets the target: the fewest false accepts
    assert choose_threshold([{"threshold": 0.5, "frr": 0, "fa_per_hour": 5.0}, {"threshold": 0.8, "frr": 0.2, "fa_per_hour": 3.0}], 1.0)["threshold"] == 0.8


def test_extra_calibration_background_joins_the_stream(keyword_model, tiny_dataset, tmp_path):
    """Negatives the model fires on, added to the validation stream, make calibration pick a stricter threshold."""
    import shutil
    from dataclasses import replace

    from collect.manifest import read_dataset
    from deploy.calibrate import calibrate_threshold
    from deploy.evaluate import EvalClip
    from features.audio import load_audio
    from features.errors import ConfigError

    model = shutil.copy(keyword_model, tmp_path / "m.onnx")
    val = set(KwsModel(model).info.metadata["splits"]["val"])
    rows, _ = read_dataset(tiny_dataset)
    # keyword takes of training speakers, passed as "other speech": audio the model scores high, labelled negative
    fires = [EvalClip(replace(r, label="negative", kind="sentence"), load_audio(tiny_dataset / r.path), 0)
             for r in rows if r.label == "computer" and r.speaker not in val][:30]
    kwargs = dict(target_fa_per_hour=2.0, background_minutes=5.0, progress=False, write=False)
    plain = calibrate_threshold(model, tiny_dataset, **kwargs)
    harder = calibrate_threshold(model, tiny_dataset, extra_background=fires, **kwargs)
    assert plain["extra_background_clips"] == 0 and harder["extra_background_clips"] == 30
    assert harder["threshold"] > plain["threshold"]
    with pytest.raises(ConfigError, match="negatives only"):
        calibrate_threshold(model, tiny_dataset, extra_background=[replace(fires[0], truth=1)], **kwargs)
    # the smoothings offered: the default set, or the benchmark's longer one; nonsense is refused by name
    from deploy.calibrate import LOW_FA_SMOOTHINGS, SMOOTHING_CHOICES

    assert [p["smoothing"] for p in plain["by_smoothing"]] == list(SMOOTHING_CHOICES)
    longer = calibrate_threshold(model, tiny_dataset, smoothings=LOW_FA_SMOOTHINGS, **kwargs)
    assert [p["smoothing"] for p in longer["by_smoothing"]] == list(LOW_FA_SMOOTHINGS)
    assert longer["by_smoothing"][:len(SMOOTHING_CHOICES)] == plain["by_smoothing"]
    for bad in ([], [0, 2], [1.5]):
        with pytest.raises(ConfigError, match="smoothings must be whole numbers"):
            calibrate_threshold(model, tiny_dataset, smoothings=bad, **kwargs)


def test_choose_smoothing_takes_the_most_smoothing_within_the_noise():
    from deploy.calibrate import choose_smoothing

    def pt(s, frr, fa=0.0):
        return {"smoothing": s, "threshold": 0.5, "frr": frr, "fa_per_hour": fa}

    # 280 keywords: one standard error at FRR 0.10 is 1.8 points
    assert choose_smoothing([pt(1, 0.100), pt(2, 0.104), pt(3, 0.110), pt(4, 0.120)], 0.5, 280)["smoothing"] == 3
    assert choose_smoothing([pt(1, 0.100), pt(2, 0.104), pt(3, 0.110), pt(4, 0.101, fa=0.9)], 0.5, 280)["smoothing"] == 3
    assert choose_smoothing([pt(1, 0.05), pt(2, 0.30)], 0.5, 280)["smoothing"] == 1  # a real difference wins
    assert choose_smoothing([pt(1, 0.0), pt(2, 1 / 280), pt(3, 2 / 280)], 0.5, 280)["smoothing"] == 2  # FRR 0: one keyword of slack
    assert choose_smoothing([pt(1, 0.1, fa=3.0), pt(2, 0.2, fa=2.0)], 0.5, 280)["smoothing"] == 2  # none meets it: fewest FAs
    # The decision lever's preference: the most smoothing, then the longest refractory period, within the noise.
    from deploy.benchmark_levers import most_margin

    grid = [{**pt(s, frr), "refractory_s": r} for s, r, frr in [(3, 1.0, 0.110), (3, 2.0, 0.100), (4, 2.0, 0.105), (4, 0.5, 0.108), (5, 0.5, 0.2)]]
    chosen = choose_smoothing(grid, 0.5, 280, prefer=most_margin)
    assert (chosen["smoothing"], chosen["refractory_s"]) == (4, 2.0)
    grid[2]["frr"] = 0.2  # 4 hops and 2 s now outside the noise: the longest period left at 4 hops
    assert (choose_smoothing(grid, 0.5, 280, prefer=most_margin)["refractory_s"]) == 0.5
