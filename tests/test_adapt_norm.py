"""train.adapt_norm and ``kws adapt``: normalisation statistics re-estimated on unlabelled audio, weights untouched."""

import json

import numpy as np
import onnx
import pytest
import torch

from collect.synth import coloured_noise
from features.config import FeatureConfig
from features.errors import ConfigError
from features.mfcc import Mfcc
from train.adapt_norm import adapt_norm, norm_layers
from train.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def room():
    """Twenty seconds of loud brown noise (RMS 0.3): audio whose statistics differ from the tiny model's training windows."""
    return 0.3 * coloured_noise(20 * 16000, np.random.default_rng(5), 2.0)


def windows_of(audio, ckpt, hop):
    feats = Mfcc(FeatureConfig.from_dict(ckpt["feature_config"]))(audio)
    n = ckpt["window_frames"]
    return np.stack([feats[s : s + n] for s in range(0, len(feats) - n + 1, hop)])


def test_statistics_are_the_recordings_and_weights_stay(tiny_run, room, tmp_path):
    model, ckpt = load_checkpoint(tiny_run.checkpoint)
    record = adapt_norm(tiny_run.checkpoint, [room, room[: 5 * 16000]], tmp_path / "full.pt", blend=1.0, hop_frames=7)
    adapted, new = load_checkpoint(tmp_path / "full.pt")
    w = np.concatenate([windows_of(room, ckpt, 7), windows_of(room[: 5 * 16000], ckpt, 7)])
    assert record["windows"] == len(w) and new["norm_adaptation"] == record
    # The first layer normalises each coefficient over every frame of every window: its statistics are the windows' own.
    frames = w.reshape(-1, w.shape[-1]).astype(np.float64)
    assert np.allclose(adapted.input_norm.running_mean.numpy(), frames.mean(0), rtol=1e-4, atol=1e-3)
    # The variance is the windows-weighted average of each batch's own (one batch per recording here), as in AdaBN:
    # close to the pooled one, short of the spread between the batches' means.
    assert np.allclose(adapted.input_norm.running_var.numpy(), frames.var(0, ddof=1), rtol=3e-2)
    assert not np.allclose(model.input_norm.running_mean.numpy(), frames.mean(0), atol=1.0)  # so the check above means something
    # Only running statistics changed: every learnt parameter is the same tensor as before.
    for (name, p), (_, q) in zip(model.named_parameters(), adapted.named_parameters()):
        assert torch.equal(p, q), name
    assert any(not torch.equal(a.running_mean, b.running_mean) for a, b in zip(norm_layers(model), norm_layers(adapted)))


def test_blend_keeps_part_of_the_trained_statistics(tiny_run, room, tmp_path):
    trained, _ = load_checkpoint(tiny_run.checkpoint)
    adapt_norm(tiny_run.checkpoint, [room], tmp_path / "full.pt", blend=1.0)
    adapt_norm(tiny_run.checkpoint, [room], tmp_path / "half.pt", blend=0.5)
    full, half = load_checkpoint(tmp_path / "full.pt")[0], load_checkpoint(tmp_path / "half.pt")[0]
    for t, f, h in zip(norm_layers(trained), norm_layers(full), norm_layers(half)):
        assert torch.allclose(h.running_mean, (t.running_mean + f.running_mean) / 2, atol=1e-5)
        assert torch.allclose(h.running_var, (t.running_var + f.running_var) / 2, rtol=1e-5)


def test_bad_requests_name_the_problem(tiny_run, room, tmp_path):
    with pytest.raises(ConfigError, match="blend"):
        adapt_norm(tiny_run.checkpoint, [room], tmp_path / "a.pt", blend=0.0)
    with pytest.raises(ConfigError, match="too little"):
        adapt_norm(tiny_run.checkpoint, [room[:8000]], tmp_path / "a.pt")  # half a second: no whole window
    assert not (tmp_path / "a.pt").exists()
    adapt_norm(tiny_run.checkpoint, [room], tmp_path / "a.pt")
    with pytest.raises(ConfigError, match="adapted already"):
        adapt_norm(tmp_path / "a.pt", [room], tmp_path / "b.pt")


def test_export_records_it_and_scores_change(tiny_run, room, tmp_path):
    from deploy.export import export_model
    from deploy.modelfile import KwsModel

    adapt_norm(tiny_run.checkpoint, [room], tmp_path / "adapted.pt")
    path = export_model(tmp_path / "adapted.pt", tmp_path / "adapted.onnx", threshold=0.8)
    record = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["norm_adaptation"])
    assert record["blend"] == 0.5 and record["windows"] > 0 and record["source"] == str(tiny_run.checkpoint)
    # The adapted model scores the same audio otherwise than the original.
    original = export_model(tiny_run.checkpoint, tmp_path / "original.onnx", threshold=0.8)
    x = windows_of(room, load_checkpoint(tiny_run.checkpoint)[1], 50)
    assert not np.allclose(KwsModel(path).predict(x), KwsModel(original).predict(x), atol=1e-4)
