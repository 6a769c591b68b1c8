"""train.interpolate: a fine-tuned model taken part of the way back to its start, weight by weight."""

import json

import onnx
import pytest
import torch

from features.errors import ConfigError
from train.checkpoint import load_checkpoint, save_checkpoint
from train.interpolate import interpolate


@pytest.fixture(scope="module")
def descendant(tiny_run, tmp_path_factory):
    """The tiny model with every weight and statistic moved (as fine-tuning would) and its batch counters changed."""
    model, ckpt = load_checkpoint(tiny_run.checkpoint)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            t.add_(0.5 if t.is_floating_point() else 7)
    path = tmp_path_factory.mktemp("descendant") / "best.pt"
    save_checkpoint(path, model, **{k: v for k, v in ckpt.items() if k != "model_state"})
    return path


def test_share_weighs_the_fine_tuned_model(tiny_run, descendant, tmp_path):
    start, end = load_checkpoint(tiny_run.checkpoint)[0].state_dict(), load_checkpoint(descendant)[0].state_dict()
    for share in (0.0, 0.25, 1.0):
        record = interpolate(tiny_run.checkpoint, descendant, share, tmp_path / f"{share}.pt")
        mixed, ckpt = load_checkpoint(tmp_path / f"{share}.pt")
        assert ckpt["interpolation"] == record and record["share"] == share
        for name, t in mixed.state_dict().items():
            if t.is_floating_point():
                assert torch.allclose(t, share * end[name] + (1 - share) * start[name], atol=1e-6), name
            else:  # batch counters are not weights: the fine-tuned model's
                assert torch.equal(t, end[name]), name
    assert record["start_sha256"] != record["fine_tuned_sha256"]


def test_export_records_the_interpolation(tiny_run, descendant, tmp_path):
    from deploy.export import export_model

    record = interpolate(tiny_run.checkpoint, descendant, 0.5, tmp_path / "mid.pt")
    path = export_model(tmp_path / "mid.pt", tmp_path / "mid.onnx", threshold=0.8)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["interpolation"]) == record


def test_other_networks_and_bad_shares_are_refused(tiny_run, descendant, tmp_path):
    model, ckpt = load_checkpoint(descendant)
    fields = {k: v for k, v in ckpt.items() if k != "model_state"}
    save_checkpoint(tmp_path / "other.pt", model, **{**fields, "window_frames": ckpt["window_frames"] + 1})
    with pytest.raises(ConfigError, match="window_frames differ"):
        interpolate(tiny_run.checkpoint, tmp_path / "other.pt", 0.5, tmp_path / "x.pt")
    with pytest.raises(ConfigError, match="share must be in"):
        interpolate(tiny_run.checkpoint, descendant, 1.5, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()

