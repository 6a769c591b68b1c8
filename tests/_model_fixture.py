"""Fallback ``keyword_model`` fixture (merge into conftest.py, or load with ``pytest -p _model_fixture``).

Builds a small but real "computer" detector: an espeak-ng dataset of two
accents, a DS-CNN trained for a few hundred steps on 1 s windows (keyword
placed anywhere in the window; negatives are other speech, cut-off halves of
the keyword, silence and noise), exported through ``deploy.export`` with its
ONNX-vs-PyTorch check. About a minute and a half on 2 cores. The model is
good enough that the listener and ``kws detect`` tests can assert real
detections on held-out espeak voices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def build_keyword_model(out: Path, steps: int = 400, seed: int = 0) -> Path:
    import torch

    from collect.manifest import load_rows
    from collect.synth import synthesize_dataset
    from deploy.export import export_model
    from features.audio import load_audio
    from features.config import FeatureConfig
    from features.mfcc import Mfcc
    from train.checkpoint import save_checkpoint
    from train.models import build_model

    dataset = out / "dataset"
    synthesize_dataset(dataset, "computer", accents=["en-US", "en-GB"], n_voices_per_accent=3, takes_per_voice=8,
                       n_confusables=4, n_sentences=4, seed=seed, progress=False)
    cfg = FeatureConfig()
    window = cfg.sample_rate  # 1 s
    pos, neg = [], []
    for row in load_rows(dataset):
        audio = load_audio(dataset / row.path, allow_silence=True)
        (pos if row.label == "computer" else neg).append(audio)
    rng = np.random.default_rng(seed)
    mfcc = Mfcc(cfg)

    def place(a: np.ndarray) -> np.ndarray:
        if len(a) >= window:
            s = rng.integers(0, len(a) - window + 1)
            return a[s : s + window].copy()
        w = np.zeros(window, np.float32)
        s = rng.integers(0, window - len(a) + 1)
        w[s : s + len(a)] = a
        return w

    def batch(n: int):
        xs, ys = [], []
        for _ in range(n):
            u = rng.random()
            if u < 0.4:
                x, y = place(pos[rng.integers(len(pos))]), 1
            elif u < 0.5:  # a cut-off keyword is not the keyword
                p = pos[rng.integers(len(pos))]
                loud = np.flatnonzero(np.abs(p) > 0.02 * np.abs(p).max())
                s, e = loud[0], loud[-1]
                k = int((e - s) * rng.uniform(0.2, 0.5))
                x, y = place(p[s : s + k] if rng.random() < 0.5 else p[e - k : e]), 0
            elif u < 0.6:
                x, y = np.zeros(window, np.float32), 0
            else:
                x, y = place(neg[rng.integers(len(neg))]), 0
            x = x * 10 ** (rng.uniform(-15, 6) / 20) + rng.standard_normal(window) * 10 ** (rng.uniform(-70, -40) / 20)
            xs.append(np.clip(x, -1, 1).astype(np.float32))
            ys.append(y)
        return torch.from_numpy(mfcc(np.stack(xs))), torch.tensor(ys)

    torch.manual_seed(seed)
    args = dict(n_mfcc=cfg.n_mfcc, n_labels=2, channels=32)
    model = build_model("dscnn", **args)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    model.train()
    for _ in range(steps):
        x, y = batch(64)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    ckpt = save_checkpoint(
        out / "best.pt", model, model_name="dscnn", model_args=args, labels=["negative", "computer"],
        feature_config=cfg, window_samples=window, window_frames=cfg.n_frames(window), train_config={"steps": steps},
        data_digest="test", dataset=dataset, seed=seed, epoch=steps, val_metrics={}, splits={},
    )
    return export_model(ckpt, out / "model.onnx", threshold=0.7, smoothing=3, refractory_s=1.0, hop_frames=8)


@pytest.fixture(scope="session")
def keyword_model(tmp_path_factory) -> Path:
    """Path of an exported ONNX "computer" detector trained on a tiny espeak dataset."""
    return build_keyword_model(tmp_path_factory.mktemp("keyword_model"))
