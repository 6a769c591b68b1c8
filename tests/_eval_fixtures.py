"""Fallback fixtures for tests/test_evaluate.py, to merge into conftest.py if it lacks them.

``tiny_dataset`` is the same multi-accent espeak-ng "computer" dataset as in
conftest.py. ``keyword_model`` is a small DS-CNN trained by hand on the
*train* speakers of that dataset (speaker-disjoint splits from
``train.splits``, recorded in the checkpoint so the evaluation has held-out
test speakers of every accent) and exported through ``deploy.export``.
Training draws from a pool of MFCC windows computed once (keyword placed
anywhere in the window; negatives are other speech, cut-off halves of the
keyword, silence and noise), so a few hundred steps take well under a minute.
Load with ``pytest -p _eval_fixtures`` from the tests folder when conftest.py
does not define them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

TINY_ACCENTS = ["en-US", "en-GB", "en-GB-scotland", "en-029", "en-x-es", "en-x-de"]


def build_eval_model(dataset: Path, out: Path, steps: int = 300, pool: int = 1500, seed: int = 0) -> Path:
    import torch

    from collect.manifest import load_rows
    from deploy.export import export_model
    from features.audio import load_audio
    from features.config import FeatureConfig
    from features.mfcc import Mfcc
    from train.checkpoint import save_checkpoint
    from train.dataset import data_digest
    from train.models import build_model
    from train.splits import assign_splits

    rows = load_rows(dataset)
    split_of = assign_splits(rows, seed, 0.15, 0.25)
    splits = {s: sorted(sp for sp, x in split_of.items() if x == s) for s in ("train", "val", "test")}
    cfg = FeatureConfig()
    window = cfg.sample_rate  # 1 s
    pos, neg = [], []
    for row in rows:
        if split_of[row.speaker] == "train":
            (pos if row.label == "computer" else neg).append(load_audio(dataset / row.path, allow_silence=True))
    rng = np.random.default_rng(seed)

    def place(a: np.ndarray) -> np.ndarray:
        w = np.zeros(window, np.float32)
        if len(a) >= window:
            s = rng.integers(0, len(a) - window + 1)
            return a[s : s + window].copy()
        s = rng.integers(0, window - len(a) + 1)
        w[s : s + len(a)] = a
        return w

    xs, ys = [], []
    for _ in range(pool):
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
        x = x * 10 ** (rng.uniform(-15, 6) / 20) + rng.standard_normal(window) * 10 ** (rng.uniform(-70, -35) / 20)
        xs.append(np.clip(x, -1, 1).astype(np.float32))
        ys.append(y)
    features = torch.from_numpy(Mfcc(cfg)(np.stack(xs)))
    labels = torch.tensor(ys)

    torch.manual_seed(seed)
    args = dict(n_mfcc=cfg.n_mfcc, n_labels=2, channels=32)
    model = build_model("dscnn", **args)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    model.train()
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, pool, 64))
        loss = torch.nn.functional.cross_entropy(model(features[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    ckpt = save_checkpoint(
        out / "best.pt", model, model_name="dscnn", model_args=args, labels=["negative", "computer"],
        feature_config=cfg, window_samples=window, window_frames=cfg.n_frames(window), train_config={"steps": steps},
        data_digest=data_digest(rows), dataset=dataset, seed=seed, epoch=steps, val_metrics={}, splits=splits,
    )
    return export_model(ckpt, out / "model.onnx", threshold=0.7, smoothing=3, refractory_s=1.0, hop_frames=8)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    from collect.synth import synthesize_dataset

    root = tmp_path_factory.mktemp("tiny_dataset")
    synthesize_dataset(root, "computer", accents=TINY_ACCENTS, n_voices_per_accent=4, takes_per_voice=6,
                       n_confusables=4, n_sentences=2, seed=0, progress=False)
    return root


@pytest.fixture(scope="session")
def keyword_model(tiny_dataset, tmp_path_factory) -> Path:
    return build_eval_model(tiny_dataset, tmp_path_factory.mktemp("eval_model"))
