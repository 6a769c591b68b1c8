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
