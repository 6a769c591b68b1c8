"""Clip-level validation metrics of a keyword classifier, from logits.

Accuracy and F1 at argmax say how well the classes are told apart; a wake word
is judged differently: how many keywords it catches when false wake-ups are
held to a low rate. ``recall_at_far`` is that figure on clips: the keyword
score of a clip is ``1 - p(negative)``; the threshold is set so that at most
``far_target`` of the negative clips score above it, and recall is the share
of keyword clips above it (with the right keyword on top). The streaming
evaluation in ``deploy`` measures the same thing per hour of audio.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def classification_metrics(logits: torch.Tensor, y: torch.Tensor, labels: Sequence[str], far_target: float) -> dict:
    """Loss, accuracy, keyword precision/recall/F1 (macro over keywords), FAR and recall at ``far_target``."""
    n = len(y)
    if n == 0:
        return {"n": 0, "loss": math.nan, "accuracy": math.nan, "f1": math.nan, "precision": math.nan,
                "recall": math.nan, "far": math.nan, "recall_at_far": math.nan, "threshold": math.nan}
    loss = float(F.cross_entropy(logits, y))
    probs = torch.softmax(logits, dim=1).numpy()
    y = y.numpy()
    pred = probs.argmax(1)
    precisions, recalls, f1s = [], [], []
    for k in range(1, len(labels)):
        tp = int(np.sum((pred == k) & (y == k)))
        p = tp / max(1, int(np.sum(pred == k)))
        r = tp / max(1, int(np.sum(y == k)))
        precisions.append(p)
        recalls.append(r)
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    negatives, positives = y == 0, y > 0
    score = 1.0 - probs[:, 0]
    threshold = threshold_at_far(score[negatives], far_target)
    right_keyword = probs[:, 1:].argmax(1) + 1 == y
    caught = (score > threshold) & right_keyword
    return {
        "n": n,
        "n_keyword": int(positives.sum()),
        "n_negative": int(negatives.sum()),
        "loss": round(loss, 5),
        "accuracy": round(float(np.mean(pred == y)), 5),
        "precision": round(float(np.mean(precisions)), 5),
        "recall": round(float(np.mean(recalls)), 5),
        "f1": round(float(np.mean(f1s)), 5),
        "far": round(float(np.mean(pred[negatives] > 0)), 5) if negatives.any() else math.nan,
        "recall_at_far": round(float(np.mean(caught[positives])), 5) if positives.any() else math.nan,
        "threshold": round(float(threshold), 6),
    }


def threshold_at_far(negative_scores: np.ndarray, far_target: float) -> float:
    """Lowest threshold with at most ``far_target`` of ``negative_scores`` strictly above it."""
    if len(negative_scores) == 0:
        return 0.5
    desc = np.sort(negative_scores)[::-1]
    allowed = int(math.floor(far_target * len(desc)))
    return float(desc[allowed]) if allowed < len(desc) else 0.0


def per_accent(logits: torch.Tensor, y: torch.Tensor, accents: Sequence[str], labels: Sequence[str]) -> dict:
    """Per accent: clip count, accuracy, keyword recall and negative false-accept rate at argmax."""
    pred = logits.argmax(1).numpy() if len(y) else np.zeros(0, int)
    y = y.numpy()
    accents = np.asarray(accents)
    out = {}
    for accent in sorted(set(accents.tolist())):
        m = accents == accent
        kw, neg = m & (y > 0), m & (y == 0)
        out[accent] = {
            "n": int(m.sum()),
            "accuracy": round(float(np.mean(pred[m] == y[m])), 4),
            "keyword_recall": round(float(np.mean(pred[kw] == y[kw])), 4) if kw.any() else None,
            "far": round(float(np.mean(pred[neg] > 0)), 4) if neg.any() else None,
        }
    return out
