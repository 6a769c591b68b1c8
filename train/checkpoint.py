"""The training checkpoint: one ``best.pt`` holding the weights and everything export needs.

Keys: model_name, model_args, model_state, labels (``["negative", keyword...]``),
feature_config (dict), window_samples, window_frames, train_config (dict),
data_digest, dataset (path as str), seed, epoch, val_metrics, splits
(``{"train"|"val"|"test": [speaker ids]}``). Export reads it; nothing else
needs PyTorch to use a trained model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from features.config import FeatureConfig
from features.errors import ModelError
from train.models import build_model

REQUIRED = (
    "model_name", "model_args", "model_state", "labels", "feature_config", "window_samples",
    "window_frames", "train_config", "data_digest", "dataset", "seed", "epoch", "val_metrics", "splits",
)


def save_checkpoint(path: str | Path, model: torch.nn.Module, **fields) -> Path:
    """Write ``model``'s weights with ``fields`` (the keys above, except model_state) atomically."""
    missing = [k for k in REQUIRED if k != "model_state" and k not in fields]
    if missing:
        raise ValueError(f"checkpoint fields missing: {missing}")
    if isinstance(fields["feature_config"], FeatureConfig):
        fields["feature_config"] = fields["feature_config"].to_dict()
    fields["dataset"] = str(fields["dataset"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    torch.save({**fields, "model_state": model.state_dict()}, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """The model (eval mode, weights loaded) and the checkpoint dict; ``ModelError`` if it is not one of ours."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path}: not a readable training checkpoint ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED):
        raise ModelError(f"{path}: not a checkpoint written by 'kws train'")
    model = build_model(ckpt["model_name"], **ckpt["model_args"])
    model.load_state_dict(ckpt["model_state"])
    return model.eval(), ckpt
