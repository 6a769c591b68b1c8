"""Can a trained model's features tell recorded from synthetic negatives? The shortcut domain-adversarial training fights.

When every keyword a model trains on is synthetic and some of its negatives
are recorded, "sounds recorded" predicts "not the keyword" in the training
data, and real speakers of the keyword pay for it. ``domain_probe`` measures
how much of that the model has learnt, two ways:

- a linear probe: logistic regression (scikit-learn, balanced classes) fitted
  on the pooled features the model's ``head`` sees for the training split's
  speech negatives, scored by balanced accuracy on the validation split's
  (0.5: the features carry no trace of the domain; 1.0: they separate it);
- the model's own keyword probability on the validation split's recorded
  and synthetic negatives: the shortcut shows as recorded negatives scored
  far lower than synthetic ones.

Mined windows and generated noise take no part (``DomainAdversary``'s rule).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from collect.manifest import read_dataset
from features.augment import AugmentConfig
from features.config import FeatureConfig
from features.errors import ConfigError
from train.checkpoint import load_checkpoint
from train.dataset import WindowMaker, load_clips
from train.loop import DomainAdversary, _predict, unique_by_path


def domain_probe(checkpoint: str | Path, dataset: str | Path | None = None) -> dict:
    """The probe's balanced accuracy and the keyword scores of recorded and synthetic validation negatives.

    ``dataset`` defaults to the one the checkpoint was trained on; its splits
    are the checkpoint's, so the probe is fitted on the training speakers and
    scored on the validation speakers.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    model, ckpt = load_checkpoint(checkpoint)
    dataset = Path(dataset or ckpt["dataset"])
    fcfg = FeatureConfig.from_dict(ckpt["feature_config"])
    maker = WindowMaker(fcfg, ckpt["train_config"]["window_s"], AugmentConfig(), seed=0, progress=False)
    rows, _ = read_dataset(dataset)
    rows = unique_by_path(rows)
    split_of = {s: split for split, speakers in ckpt["splits"].items() for s in speakers}
    out = {}
    for split in ("train", "val"):
        clips, _, _ = load_clips(dataset, [r for r in rows if split_of.get(r.speaker) == split], fcfg.sample_rate)
        domain = DomainAdversary.domains(clips)
        clips = [c for c, d in zip(clips, domain) if d >= 0]
        domain = np.array([d for d in domain if d >= 0])
        if len(set(domain)) < 2:
            raise ConfigError(f"{dataset}: the {split} split needs both recorded and synthetic negatives to probe, "
                              f"it has {int((domain == 1).sum())} recorded and {int((domain == 0).sum())} synthetic")
        pooled, keyword_p = _pooled_and_scores(model, maker.eval_set(clips)[0])
        out[split] = (pooled, keyword_p, domain)
    probe = LogisticRegression(class_weight="balanced", max_iter=2000).fit(out["train"][0], out["train"][2])
    pooled, keyword_p, domain = out["val"]
    return {
        "probe_balanced_accuracy": round(float(balanced_accuracy_score(domain, probe.predict(pooled))), 4),
        "val_negatives": {"recorded": int((domain == 1).sum()), "synthetic": int((domain == 0).sum())},
        "mean_keyword_probability": {"recorded": round(float(keyword_p[domain == 1].mean()), 5),
                                     "synthetic": round(float(keyword_p[domain == 0].mean()), 5)},
    }


def probe_run(run: Path) -> dict[str, dict]:
    """``domain_probe`` of every training in a benchmark run's folder (``<rotation>/<training>/best.pt``), written to ``domain_probe.json``."""
    import json

    checkpoints = sorted(Path(run).glob("*/*/best.pt"))
    if not checkpoints:
        raise ConfigError(f"{run}: no trainings (*/*/best.pt) here to probe")
    results = {f"{c.parent.parent.name}/{c.parent.name}": domain_probe(c) for c in checkpoints}
    (Path(run) / "domain_probe.json").write_text(json.dumps(results, indent=1) + "\n")
    return results


def _pooled_and_scores(model: torch.nn.Module, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The input of ``model.head`` (averaged over positions for logit-max pooling) and the keyword probability, per window."""
    seen: list[torch.Tensor] = []
    hook = model.head.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        logits = _predict(model, x)
    finally:
        hook.remove()
    pooled = torch.cat([s if s.dim() == 2 else s.mean(dim=1) for s in seen])
    return pooled.numpy(), (1.0 - torch.softmax(logits, dim=1)[:, 0]).numpy()
