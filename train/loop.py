"""The training loop: a dataset folder and a ``TrainConfig`` in, a self-describing run folder out.

``train()`` writes into ``out_dir``:

- ``config.json``: the training config, the feature config, the seed, the
  window geometry, labels and library versions: enough to repeat the run;
- ``data.json``: the data digest (sha256 over the sorted ``(path, sha256,
  label)`` of the rows used), clip counts per split, accent and label, the
  speakers of each split, and every row or manifest line that was skipped;
- ``metrics.jsonl``: one JSON line per epoch (train loss, validation metrics,
  learning rate, seconds), appended as the run goes, so a cut-off run is still
  readable;
- ``best.pt``: the checkpoint of the best epoch (``train.checkpoint``), saved
  whenever validation improves, so there is always a usable model;
- ``curve.png``: train and validation loss, validation accuracy and keyword
  recall per epoch;
- ``summary.json``: best epoch, its validation metrics (with a per-accent
  breakdown) and the test-split metrics of the best model.

Choices, and why:

- Class balance: keywords are usually the minority; ``class_balance="loss"``
  weights cross-entropy by inverse class frequency (default), ``"sampler"``
  draws training clips with inverse-frequency probabilities instead.
- AdamW with a one-cycle learning-rate schedule: converges in few epochs,
  which is what a 3-minute budget on two cores needs.
- Early stopping on ``config.monitor`` (validation loss by default; see
  ``TrainConfig``) with ``patience`` epochs; the best epoch's weights are kept.
- Validation metrics include keyword recall at a fixed false-accept rate
  (``far_target`` of the validation negatives), the figure a wake word is
  judged by, besides accuracy and F1 at argmax.
- With ``ema_decay`` above 0, an exponential moving average of the weights
  (``weight_average``) is what is validated, early-stopped on and saved.
- With ``group_dro`` above 0, each step minimises group DRO's weighted loss
  over (accent, class) groups (``GroupWeights``) instead of the mean loss.
- With ``domain_adversarial`` above 0, a head trained to tell recorded from
  synthetic negatives is fought through a reversed gradient
  (``DomainAdversary``); its balanced accuracy per epoch is in the metrics.
- The next epoch's augmented windows are prepared in a background thread
  while the current one trains (numpy and PyTorch both release the GIL); each
  epoch's randomness comes only from ``(seed, epoch)``, so this changes timing,
  never results.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from collect.manifest import HUMAN, MINED, NEGATIVE, NOISE, ClipRow, data_digest, read_dataset
from features.audio import sha256_file
from features.errors import ConfigError, ManifestError
from train.checkpoint import save_checkpoint
from train.config import TrainConfig
from train.dataset import Clip, WindowMaker, babble_sources, check_classes, load_clips
from train.metrics import classification_metrics, per_accent
from train.models import build_model, count_parameters, model_args_for
from train.splits import SPLITS, assign_splits, speakers_by_split

log = logging.getLogger("kws")

LOSS_MIN_DELTA = 1e-4  # an improvement of val_loss smaller than this does not reset patience
EVAL_BATCH = 512


@dataclass
class RunResult:
    """Where a run went and how it did."""

    run_dir: Path
    checkpoint: Path  # best.pt
    best_epoch: int  # 1-based
    val_metrics: dict  # of the best epoch, with "per_accent"
    test_metrics: dict  # of the best model on the test speakers ({} if there are none)
    epochs_run: int
    seconds: float
    labels: list[str]
    data_digest: str
    history: list[dict] = field(default_factory=list)  # the metrics.jsonl lines


def train(dataset_dir: str | Path, config: TrainConfig, out_dir: str | Path, progress: bool = True,
          assignment: Mapping[str, str] | None = None) -> RunResult:
    """Train a classifier on ``dataset_dir`` with ``config``; write the run folder ``out_dir`` (see module doc).

    ``assignment`` (speaker -> ``"train"``, ``"val"`` or ``"test"``) replaces
    the split that ``assign_splits`` would make from the config's seed and
    fractions; speakers it does not name are left out of the run altogether
    (``kws tune`` uses this for its cross-validation folds, keeping the test
    speakers out). The data digest is then that of the clips the run used.
    """
    start_time = time.perf_counter()
    dataset_dir = Path(dataset_dir).resolve()
    out_dir = Path(out_dir)
    fcfg = config.feature_config()

    rows, bad_lines = read_dataset(dataset_dir)
    if bad_lines:
        log.warning("skipping %d unreadable manifest line(s):\n  %s", len(bad_lines), "\n  ".join(map(str, bad_lines)))
    if not rows:
        raise ManifestError(f"{dataset_dir}: no clips found in any */manifest.jsonl")
    rows = unique_by_path(rows)
    if assignment is not None:
        rows = _rows_in(assignment, rows)
    clips, labels, skipped = load_clips(dataset_dir, rows, fcfg.sample_rate)
    if skipped:
        log.warning("skipping %d clip(s) whose audio cannot be used:\n  %s", len(skipped), "\n  ".join(skipped))
    check_classes(clips, labels, dataset_dir)
    used_rows = [c.row for c in clips]
    if assignment is None:
        assignment = assign_splits(used_rows, config.seed, config.val_fraction, config.test_fraction)
    split_clips = {name: [c for c in clips if assignment[c.row.speaker] == name] for name in SPLITS}
    _check_splits(split_clips, labels, dataset_dir)
    digest = data_digest(used_rows)

    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("metrics.jsonl", "summary.json", "best.pt", "curve.png"):  # a previous run in the same folder
        (out_dir / stale).unlink(missing_ok=True)
    babble = babble_sources(split_clips["train"]) if config.augment.p_babble > 0 else []
    if config.augment.p_babble > 0 and not babble:
        log.warning("augment.p_babble is %g but the training speakers have no speech negatives besides confusables and "
                    "mined windows (record or synthesise sentences): training without babble", config.augment.p_babble)
    maker = WindowMaker(fcfg, config.window_s, config.augment, config.seed,
                        noise_clips=[c.audio for c in split_clips["train"] if c.row.label == NOISE], progress=progress,
                        babble_clips=babble)
    model_args = model_args_for(config.model_args, fcfg.n_mfcc, fcfg.n_mels, len(labels))
    splits = speakers_by_split(assignment)
    write_json(out_dir / "config.json", _run_config(config, fcfg, maker, labels, model_args, dataset_dir))
    write_json(out_dir / "data.json", _data_report(dataset_dir, digest, labels, split_clips, splits, skipped, bad_lines))

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(default_threads(config.num_threads))
    try:
        return _fit(config, maker, split_clips, labels, model_args, splits, digest, dataset_dir, out_dir, progress, start_time)
    finally:
        torch.set_num_threads(previous_threads)


def default_threads(requested: int = 0) -> int:
    """PyTorch threads: ``requested``, else one core fewer than the machine has (at most 4).

    The spare core prepares the next epoch's windows (augmentation and MFCC,
    which on two cores costs about as much as the training step); giving
    PyTorch every core instead makes its spinning threads and the preparing
    thread take turns on the same cores.
    """
    if requested:
        return requested
    return max(1, min((os.cpu_count() or 1) - 1, 4))


def _fit(config, maker, split_clips, labels, model_args, splits, digest, dataset_dir, out_dir, progress, start_time) -> RunResult:
    from tqdm import tqdm

    torch.manual_seed(config.seed)
    model = build_model(config.model, **model_args)
    init_digest = ""  # sha256 of the checkpoint the weights start from: what the run began with, whatever its path
    if config.init_from:
        _start_from(model, config, model_args, labels, maker.cfg)
        init_digest = sha256_file(config.init_from)
    train_clips = split_clips["train"]
    y_train = np.array([c.label for c in train_clips])
    counts = np.bincount(y_train, minlength=len(labels)).astype(np.float64)
    inverse = len(y_train) / (len(labels) * np.maximum(counts, 1))
    class_weight = torch.tensor(inverse, dtype=torch.float32) if config.class_balance == "loss" else None
    n_windows = max(len(train_clips), config.windows_per_epoch)
    steps_per_epoch = max(1, n_windows // config.batch_size)
    adversary = DomainAdversary(model, train_clips, config.domain_adversarial, config.seed) if config.domain_adversarial else None
    trained = [*model.parameters(), *(adversary.head.parameters() if adversary else ())]
    optimizer = torch.optim.AdamW(trained, lr=config.lr, weight_decay=config.weight_decay)
    # OneCycleLR needs a warm-up and a decay phase of at least one step each; a short fine-tuning run
    # (one epoch of a few batches) gets a schedule a little longer than it runs and a longer warm-up share.
    total_steps = max(config.epochs * steps_per_epoch, 4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total_steps,
                                                   pct_start=0.2 if total_steps >= 10 else 0.5)
    groups = GroupWeights(train_clips, config.group_dro) if config.group_dro else None
    average = weight_average(model, config.ema_decay)
    kept = average.module if average is not None else model  # the weights validated and saved
    x_val, y_val = maker.eval_set(split_clips["val"])
    log.info("training %s (%d parameters) on %d clips, validating on %d (%d + %d + %d speakers)",
             config.model, count_parameters(model), len(train_clips), len(y_val), *(len(splits[s]) for s in SPLITS))

    history: list[dict] = []
    best = {"score": None, "epoch": 0, "metrics": {}, "state": None}
    checkpoint = out_dir / "best.pt"
    sign = 1.0 if config.monitor == "val_loss" else -1.0  # minimise sign * metric
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kws-windows")
    future = pool.submit(maker.training_epoch, train_clips, 0, n_windows)
    bar = tqdm(range(config.epochs), desc="training", unit="epoch", disable=not progress, dynamic_ncols=True)
    try:
        for epoch in bar:
            t0 = time.perf_counter()
            x_train, y_epoch, clip_index = future.result()
            if epoch + 1 < config.epochs:
                future = pool.submit(maker.training_epoch, train_clips, epoch + 1, n_windows)
            order_rng = np.random.default_rng([config.seed, epoch, 1])
            if config.class_balance == "sampler":
                p = inverse[y_epoch.numpy()]
                order = order_rng.choice(len(y_epoch), size=len(y_epoch), replace=True, p=p / p.sum())
            else:
                order = order_rng.permutation(len(y_epoch))
            train_loss, train_acc = _train_epoch(model, optimizer, schedule, x_train, y_epoch, order, config.batch_size,
                                                 steps_per_epoch, class_weight, average, groups, adversary, clip_index)
            logits = _predict(kept, x_val)
            val = classification_metrics(logits, y_val, labels, config.far_target)
            row = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
                   **({"domain_balanced_acc": adversary.epoch_balanced_accuracy()} if adversary else {}),
                   **{f"val_{k}": v for k, v in val.items() if not isinstance(v, dict)},
                   "lr": schedule.get_last_lr()[0], "seconds": round(time.perf_counter() - t0, 3)}
            history.append(row)
            with open(out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            score = sign * row[config.monitor]
            improved = best["score"] is None or score < best["score"] - (LOSS_MIN_DELTA if config.monitor == "val_loss" else 0.0)
            if improved:
                val["per_accent"] = per_accent(logits, y_val, [c.row.accent for c in split_clips["val"]], labels)
                best = {"score": score, "epoch": epoch + 1, "metrics": val,
                        "state": {k: v.detach().clone() for k, v in kept.state_dict().items()}}
                save_checkpoint(
                    checkpoint, kept, model_name=config.model, model_args=model_args, labels=labels,
                    feature_config=maker.cfg, window_samples=maker.window_samples, window_frames=maker.window_frames,
                    train_config=config.to_dict(), data_digest=digest, dataset=dataset_dir, seed=config.seed,
                    epoch=epoch + 1, val_metrics=val, splits=splits, init_digest=init_digest,
                )
            bar.set_postfix(loss=f"{train_loss:.3f}", val_loss=f"{val['loss']:.3f}", val_acc=f"{val['accuracy']:.3f}",
                            recall=f"{val['recall_at_far']:.3f}", best=best["epoch"])
            if config.patience and epoch + 1 - best["epoch"] >= config.patience:
                log.info("early stop after epoch %d: %s has not improved for %d epochs (best: epoch %d)",
                         epoch + 1, config.monitor, config.patience, best["epoch"])
                break
    finally:
        bar.close()
        future.cancel()
        pool.shutdown(wait=True)
        if history:
            plot_curve(history, out_dir / "curve.png")

    model.load_state_dict(best["state"])
    test = {}
    if split_clips["test"]:
        x_test, y_test = maker.eval_set(split_clips["test"])
        logits = _predict(model, x_test)
        test = classification_metrics(logits, y_test, labels, config.far_target)
        test["per_accent"] = per_accent(logits, y_test, [c.row.accent for c in split_clips["test"]], labels)
    seconds = time.perf_counter() - start_time
    result = RunResult(run_dir=out_dir, checkpoint=checkpoint, best_epoch=best["epoch"], val_metrics=best["metrics"],
                       test_metrics=test, epochs_run=len(history), seconds=round(seconds, 2), labels=list(labels),
                       data_digest=digest, history=history)
    write_json(out_dir / "summary.json", {
        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "monitor": config.monitor,
        "seconds": result.seconds, "val_metrics": result.val_metrics, "test_metrics": test, "checkpoint": str(checkpoint),
        **({"group_weights": groups.weights()} if groups is not None else {}),
        **({"domain_adversary": adversary.summary()} if adversary is not None else {}),
    })
    return result


def _start_from(model: torch.nn.Module, config, model_args: dict, labels, fcfg) -> None:
    """Load ``config.init_from``'s weights into ``model``; it must be the same model on the same labels and features."""
    from train.checkpoint import load_checkpoint

    start, ckpt = load_checkpoint(config.init_from)
    mismatch = [name for name, ours, theirs in (
        ("model", config.model, ckpt["model_name"]), ("model_args", model_args, ckpt["model_args"]),
        ("labels", list(labels), list(ckpt["labels"])), ("features", fcfg.to_dict(), ckpt["feature_config"]),
    ) if ours != theirs]
    if mismatch:
        raise ConfigError(f"init_from {config.init_from}: its {', '.join(mismatch)} differ from this run's; "
                          "fine-tuning needs the same model, labels and features")
    model.load_state_dict(start.state_dict())
    log.info("starting from the weights of %s (epoch %d)", config.init_from, ckpt["epoch"])


def weight_average(model: torch.nn.Module, decay: float):
    """An exponential moving average of ``model``'s weights and batch-norm statistics, or None when ``decay`` is 0.

    PyTorch's ``AveragedModel`` keeps the copy; the decay warms up as
    ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so neither the
    random initial weights of a first round nor the starting weights of a
    short fine-tuning round (mining: a few hundred steps) dominate the average.
    Integer buffers (batch norm's step count) follow the model unaveraged.
    """
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel

    def ema(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        if not averaged.is_floating_point():
            return current
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        return averaged * d + current * (1.0 - d)

    return AveragedModel(model, avg_fn=ema, use_buffers=True)


class GroupWeights:
    """Online group DRO (Sagawa et al., 2020, algorithm 1) over speaker groups: one per accent and class of clip.

    It keeps a weight per group, uniform at first. Each step, every group in
    the batch has its mean loss; its weight is multiplied by
    ``exp(step * that loss)`` and the weights are normalised again; the loss
    minimised is the weighted mean of the present groups' losses. A group the
    model keeps failing (an accent whose keyword it misses) thus comes to
    weigh more than its share of windows, up to dominating the step, while
    groups it has learnt fade: the worst group is what is optimised, not the
    average. A group's class is part of it because a keyword missed and a
    negative accepted are different failures of the same accent; and so the
    group weights replace the class weights (uniform weights over groups
    already give both classes about half the loss at the start).
    """

    def __init__(self, clips: list[Clip], step: float):
        names = [f"{c.row.accent or 'unknown'}/{'keyword' if c.label > 0 else 'negative'}" for c in clips]
        self.names = sorted(set(names))
        index = {name: i for i, name in enumerate(self.names)}
        self.of_clips = torch.tensor([index[n] for n in names], dtype=torch.long)  # group of each training clip
        self.step = float(step)
        self.q = torch.full((len(self.names),), 1.0 / len(self.names), dtype=torch.float64)

    def loss(self, per_window: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """The step's loss from each window's loss and group; updates the weights first (with the losses detached)."""
        n = len(self.names)
        counts = torch.bincount(group, minlength=n)
        means = torch.zeros(n, dtype=per_window.dtype).index_add(0, group, per_window) / counts.clamp(min=1)
        present = counts > 0
        with torch.no_grad():
            self.q[present] *= torch.exp(self.step * means[present].detach().double())
            self.q /= self.q.sum()
        w = (self.q * present).to(per_window.dtype)
        return (w * means).sum() / w.sum()

    def weights(self) -> dict[str, float]:
        """The current weight of each group, by name (``accent/keyword`` or ``accent/negative``)."""
        return {name: round(float(q), 6) for name, q in zip(self.names, self.q)}


class _ReverseGradient(torch.autograd.Function):
    """Identity going forward; going back, the gradient times ``-scale`` (the gradient reversal layer)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


class DomainAdversary:
    """Domain-adversarial training (Ganin & Lempitsky, 2015) of recorded against synthetic negatives.

    A small head (one hidden layer of ``HIDDEN`` units, trained with the
    model, never exported) learns to tell, from the pooled features the
    model's ``head`` sees, whether a negative window was recorded (its row's
    ``source`` is "human...") or synthesised. Between the features and that
    head sits a gradient reversal layer, so the same step that makes the head
    better makes the features worse for it: the features are pushed to carry
    no trace of "recorded", and the keyword classifier cannot learn the
    shortcut "recorded, so not the keyword" that an all-synthetic keyword set
    next to recorded negatives invites. Only speech negatives take part
    (keywords are all of one domain, generated noise and mined windows of
    none). The reversal's strength ramps from 0 to ``weight`` over training,
    as in the paper (``2 / (1 + exp(-10 p)) - 1`` at progress ``p``), so the
    first steps, while the head is still random, leave the features alone.
    The head's loss weighs recorded windows up to the synthetic ones' count.
    Its balanced accuracy per epoch tells whether it was fooled (0.5) or not.
    """

    HIDDEN = 32

    def __init__(self, model: torch.nn.Module, clips: list[Clip], weight: float, seed: int = 0):
        self.of_clips = torch.tensor(self.domains(clips), dtype=torch.long)
        n_recorded, n_synthetic = int((self.of_clips == 1).sum()), int((self.of_clips == 0).sum())
        if not n_recorded or not n_synthetic:
            raise ConfigError(f"domain_adversarial needs both recorded (source \"{HUMAN}\") and synthetic negatives in the "
                              f"training split; it has {n_recorded} recorded and {n_synthetic} synthetic")
        self.weight = float(weight)
        self.counts = {"recorded": n_recorded, "synthetic": n_synthetic}
        self.pos_weight = torch.tensor(n_synthetic / n_recorded)
        with torch.random.fork_rng():  # its own random start, so the run's dropout draws stay those of the same seed without it
            torch.manual_seed(seed)
            self.head = torch.nn.Sequential(torch.nn.Linear(model.head.in_features, self.HIDDEN), torch.nn.ReLU(),
                                            torch.nn.Linear(self.HIDDEN, 1))
        self._features: torch.Tensor | None = None
        self._hits = torch.zeros(2, 2)  # [true domain, predicted domain] windows this epoch
        model.head.register_forward_pre_hook(self._keep)

    @staticmethod
    def domains(clips: list[Clip]) -> list[int]:
        """Each clip's domain: 1 recorded negative speech, 0 synthetic negative speech, -1 neither (keyword, noise, mined)."""
        def domain(c: Clip) -> int:
            if c.row.label != NEGATIVE or c.row.kind == MINED:
                return -1
            return 1 if c.row.source.split(":")[0] == HUMAN else 0

        return [domain(c) for c in clips]

    def _keep(self, module: torch.nn.Module, args: tuple) -> None:
        if module.training:  # only training batches; evaluation (and the averaged copy) run in eval mode
            self._features = args[0]

    def loss(self, window_domain: torch.Tensor, progress: float) -> torch.Tensor:
        """The head's loss on the last training batch's pooled features (``window_domain``: each window's domain)."""
        features = self._features if self._features.dim() == 2 else self._features.mean(dim=1)  # logit-max: per position
        keep = window_domain >= 0
        if not keep.any():
            return features.sum() * 0.0
        scale = self.weight * (2.0 / (1.0 + np.exp(-10.0 * progress)) - 1.0)
        logits = self.head(_ReverseGradient.apply(features[keep], scale)).squeeze(1)
        truth = window_domain[keep]
        with torch.no_grad():
            self._hits.index_put_((truth, (logits > 0).long()), torch.ones(len(truth)), accumulate=True)
        return F.binary_cross_entropy_with_logits(logits, truth.float(), pos_weight=self.pos_weight)

    def epoch_balanced_accuracy(self) -> float:
        """Mean of the head's recall on recorded and on synthetic windows since the last call (0.5 = fooled)."""
        recall = self._hits.diagonal() / self._hits.sum(dim=1).clamp(min=1)
        self._hits.zero_()
        return round(float(recall.mean()), 4)

    def summary(self) -> dict:
        """What ``summary.json`` keeps of it: the weight and the recorded and synthetic training clips it saw."""
        return {"weight": self.weight, "training_clips": self.counts}


def _train_epoch(model, optimizer, schedule, x, y, order, batch_size, steps, class_weight, average=None,
                 groups: GroupWeights | None = None, adversary: DomainAdversary | None = None,
                 clip_index: np.ndarray | None = None) -> tuple[float, float]:
    """One pass in ``steps`` full batches (a last batch of one sample would break batch norm); mean loss and accuracy.

    ``average`` (from ``weight_average``), when given, is updated after every
    step. With ``groups`` the loss is group DRO's; with ``adversary`` its
    domain loss is added. Both need each window's clip (``clip_index``). The
    mean loss reported is always the plain classification loss.
    """
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    total_steps = schedule.total_steps
    window_clip = None if clip_index is None else torch.from_numpy(np.asarray(clip_index))
    for step in range(steps):
        idx = torch.from_numpy(order[step * batch_size : (step + 1) * batch_size])
        if step == steps - 1:
            idx = torch.from_numpy(order[step * batch_size :])  # the remainder joins the last batch
        xb, yb = x[idx], y[idx]
        logits = model(xb)
        if groups is None:
            loss = F.cross_entropy(logits, yb, weight=class_weight)
            objective = loss
        else:  # each group is of one class, so its weight replaces the class weight
            per_window = F.cross_entropy(logits, yb, reduction="none")
            weights = torch.ones_like(per_window) if class_weight is None else class_weight[yb]
            loss = (weights * per_window).sum() / weights.sum()
            objective = groups.loss(per_window, groups.of_clips[window_clip[idx]])
        if adversary is not None:
            objective = objective + adversary.loss(adversary.of_clips[window_clip[idx]], schedule.last_epoch / total_steps)
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        schedule.step()
        if average is not None:
            average.update_parameters(model)
        total_loss += loss.item() * len(yb)
        correct += int((logits.argmax(1) == yb).sum())
        seen += len(yb)
    return round(total_loss / seen, 5), round(correct / seen, 5)


@torch.no_grad()
def _predict(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    if len(x) == 0:
        return torch.zeros(0, model.head.out_features if hasattr(model, "head") else 1)
    return torch.cat([model(x[i : i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)])


def unique_by_path(rows: list[ClipRow]) -> list[ClipRow]:
    """One row per clip path: a session folder copied twice must not double its weight (or leak across splits)."""
    seen, out = set(), []
    for row in rows:
        if row.path not in seen:
            seen.add(row.path)
            out.append(row)
    if len(out) < len(rows):
        log.warning("ignoring %d duplicate manifest row(s) (same clip path listed twice)", len(rows) - len(out))
    return out


def _rows_in(assignment: Mapping[str, str], rows: list[ClipRow]) -> list[ClipRow]:
    """The rows of the speakers an explicit split assignment names (its splits checked)."""
    wrong = sorted({split for split in assignment.values() if split not in SPLITS})
    if wrong:
        raise ConfigError(f"split assignment: unknown split(s) {', '.join(map(repr, wrong))}; use {', '.join(SPLITS)}")
    kept = [row for row in rows if row.speaker in assignment]
    left_out = {row.speaker for row in rows} - set(assignment)
    if left_out:
        log.info("leaving out %d speaker(s) that the split assignment does not name (%d clips)",
                 len(left_out), len(rows) - len(kept))
    return kept


def _check_splits(split_clips: dict[str, list[Clip]], labels: list[str], dataset: Path) -> None:
    """Training needs keywords and negatives; early stopping needs validation speakers."""
    train_labels = {c.label for c in split_clips["train"]}
    if not train_labels - {0} or 0 not in train_labels:
        raise ManifestError(f"{dataset}: the training speakers have no {'keyword' if 0 in train_labels else 'negative'} "
                            "clips; add speakers who recorded both")
    if not split_clips["val"]:
        n = len({c.row.speaker for c in split_clips["train"] if c.row.label != NOISE})
        raise ConfigError(f"{dataset}: no validation speakers ({n} speaker(s) in all); "
                          "speaker-disjoint validation needs at least 3 speakers")
    if not any(c.label > 0 for c in split_clips["val"]):
        log.warning("the validation speakers have no keyword clips: keyword recall cannot be measured")


def _run_config(config: TrainConfig, fcfg, maker: WindowMaker, labels, model_args, dataset_dir: Path) -> dict:
    import audiomentations

    return {
        "train": config.to_dict(), "features": fcfg.to_dict(), "seed": config.seed, "labels": labels,
        "window_samples": maker.window_samples, "window_frames": maker.window_frames, "model_args": model_args,
        "dataset": str(dataset_dir), "babble_clips": len(maker.babble_clips),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                     "audiomentations": audiomentations.__version__},
    }


def _data_report(dataset_dir, digest, labels, split_clips, splits, skipped, bad_lines) -> dict:
    by_split = {name: dict(sorted(Counter(c.row.label for c in cl).items())) for name, cl in split_clips.items()}
    by_accent: dict = {}
    for name, cl in split_clips.items():
        for c in cl:
            per = by_accent.setdefault(c.row.accent, {}).setdefault(name, {})
            per[c.row.label] = per.get(c.row.label, 0) + 1
    return {
        "dataset": str(dataset_dir), "digest": digest, "labels": labels,
        "n_clips": sum(len(cl) for cl in split_clips.values()),
        "counts": {"by_split": by_split, "by_accent": dict(sorted(by_accent.items()))},
        "splits": splits, "skipped": skipped, "bad_manifest_lines": [str(b) for b in bad_lines],
    }


def plot_curve(history: list[dict], path: Path) -> Path:
    """Train/validation loss and validation accuracy/recall per epoch, as a PNG (matplotlib Agg: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], label="train (augmented, weighted)")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_loss.legend()
    ax_acc.plot(epochs, [h["val_accuracy"] for h in history], label="validation accuracy")
    ax_acc.plot(epochs, [h["val_recall_at_far"] for h in history], label="keyword recall at target FAR")
    ax_acc.set(xlabel="epoch", ylim=(0, 1.02), title="validation")
    ax_acc.legend(loc="lower right")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    return save_figure(fig, path)


def save_figure(fig, path: Path) -> Path:
    """Write a matplotlib figure as a PNG atomically (a temp file, then a rename) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON atomically (a temp file, then a rename)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
