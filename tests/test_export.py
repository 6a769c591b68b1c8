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


def test_threshold_is_chosen_on_validation_speakers(tiny_run, tmp_path):
    """Without a threshold, export replays the validation stream and stores the pick in the metadata."""
    path = export_model(tiny_run.checkpoint, tmp_path / "m.onnx", target_fa_per_hour=2.0)
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
