"""Hyper-parameter search with speaker-grouped cross-validation: ``kws tune``.

A **search space** is a JSON file::

    {
      "base": "tiny.json",
      "params": {
        "lr": {"loguniform": [0.001, 0.01]},
        "model_args.channels": [16, 32],
        "augment.p_background": {"uniform": [0.1, 0.6]}
      }
    }

``base`` is a training config (a path relative to the space file, or the
config itself inline); each key of ``params`` addresses one setting of
``TrainConfig`` by a dotted path (``lr``, ``model``, ``model_args.channels``,
``augment.p_background``, ``features.n_mels``) and gives either a list of
choices or a distribution: ``{"loguniform": [a, b]}``, ``{"uniform": [a, b]}``
or ``{"int": [a, b]}`` (a to b inclusive). ``grid`` mode tries every
combination of the choices (a distribution is an error there); ``random`` mode
draws ``n_trials`` configurations with a seed (scikit-learn's ``ParameterGrid``
and ``ParameterSampler`` over scipy.stats distributions; drawn floats are
rounded to 4 significant digits so the configs stay readable). Every key and
every trial's whole config is validated before any training starts.

``seed``, ``val_fraction`` and ``test_fraction`` cannot be tuned: they decide
which speakers are held out for testing, and the search must never see them.

**Cross-validation by speaker.** The test speakers are the ones ``kws train``
would hold out with the base config (``assign_splits``); they are left out of
every run. The other speakers are dealt into ``n_folds`` folds, all of a
speaker's clips in one fold, with the accents spread across folds as evenly
as the counts allow (``StratifiedGroupKFold``: group = speaker, class =
accent). Each fold trains on the other folds' speakers and validates (early
stopping, best epoch) on its own. Non-speech pseudo-speakers (``noise``)
always train, as in ``train.splits``.

**The metric**, by default ``recall_at_far``: validation keyword recall with
the threshold set so that at most the config's ``far_target`` of the
validation negatives fire. That is the figure a wake word is judged by
(keywords caught while false wake-ups are held low), unlike accuracy, which
the many easy negatives dominate. It is coarse on small folds (a handful of
negatives decides the threshold), so trials tie on it often; ties go to the
lower mean validation loss. With fewer than ``1 / far_target`` validation
negatives in a fold (100 at 1 %), the threshold is simply the highest
negative's score and the figure swings from fold to fold; ``loss`` is the
steadier choice there. ``loss`` (smooth, lower is better), ``f1`` and
``accuracy`` can be chosen instead. Each trial records the metric per fold,
its mean and standard deviation over folds (ddof 1), seconds and epochs.

The output folder gets ``results.json`` (space, seed, folds, data digest,
library versions, every trial), ``results.md`` and ``results.csv`` (best
first), ``results.png`` (the metric per trial with its fold spread),
``best_config.json`` (a training config ``kws train --config`` reads) and
``trials/NNN-<key>/fold-K/``, the run folder of every fold (the key, a hash
of the trial's config, data and folds, keeps a reused trial's folder from
being overwritten by a new trial of the same number). ``results.json`` is
rewritten after every trial; a trial already in it with the same config,
data digest and folds is reused, not trained again, so an interrupted or
extended search resumes where it stopped.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import platform
import time
import warnings
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from collect.manifest import NOISE, data_digest, now_iso, read_dataset
from features.augment import AugmentConfig
from features.config import FeatureConfig, read_json_file
from features.errors import ConfigError, ManifestError
from train.config import TrainConfig
from train.splits import assign_splits

log = logging.getLogger("kws")

MODES = ("grid", "random")
METRICS = {"recall_at_far": True, "f1": True, "accuracy": True, "loss": False}  # name -> higher is better
DISTRIBUTIONS = ("loguniform", "uniform", "int")
FROZEN = ("seed", "val_fraction", "test_fraction")  # they choose the test speakers
SPACE_KEYS = ("base", "params", "description")
NESTED = {"augment": AugmentConfig, "features": FeatureConfig, "model_args": None}  # None: the model's own arguments


@dataclass(frozen=True)
class SearchSpace:
    """A base config and the settings to vary (dotted key -> list of choices or a distribution spec)."""

    base: TrainConfig
    params: dict
    source: str = "inline"

    def distributions(self) -> list[str]:
        return sorted(k for k, v in self.params.items() if isinstance(v, dict))

    def to_dict(self) -> dict:
        return {"source": self.source, "base": self.base.to_dict(), "params": self.params}


@dataclass
class TuneResult:
    """What a search found: the trials best first, the best config and where everything was written."""

    out_dir: Path
    trials: list[dict]  # best first
    best_config: TrainConfig
    results: dict  # the content of results.json


def load_space(path: str | Path) -> SearchSpace:
    """Read a search-space file; a relative ``base`` path is taken from the space file's folder."""
    path = Path(path)
    d = read_json_file(path, "search space")
    try:
        return parse_space(d, path.parent, source=str(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse_space(d: dict, base_dir: str | Path = ".", source: str = "inline") -> SearchSpace:
    """Check a parsed search space (keys, choices, distributions) and load its base config."""
    if not isinstance(d, dict):
        raise ConfigError(f"a search space must be a JSON object with 'base' and 'params', got {type(d).__name__}")
    unknown = sorted(set(d) - set(SPACE_KEYS))
    if unknown:
        raise ConfigError(f"unknown search space key(s): {', '.join(unknown)}; known: {', '.join(SPACE_KEYS)}")
    base = d.get("base")
    if isinstance(base, str):
        base = TrainConfig.from_file(Path(base_dir) / base)
    elif isinstance(base, dict):
        try:
            base = TrainConfig.from_dict(base)
        except ConfigError as exc:
            raise ConfigError(f"base: {exc}") from None
    else:
        raise ConfigError("base: give a training config file (relative to the space file) or the config itself as an object")
    params = d.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError(f"params must be an object of dotted key -> choices, got {type(params).__name__}")
    for key, spec in params.items():
        _check_key(key, params)
        _check_spec(key, spec)
    return SearchSpace(base=base, params=params, source=source)


def _check_key(key: str, params: dict) -> None:
    """A dotted key must address a setting of ``TrainConfig`` (or of its augment/features/model_args groups)."""
    known = [f.name for f in dataclasses.fields(TrainConfig)]
    top, _, rest = key.partition(".")
    if top not in known:
        raise ConfigError(f"params: unknown key {key!r}; known: {', '.join(known)} "
                          f"(and dotted keys into {', '.join(NESTED)}, e.g. model_args.channels)")
    if top in FROZEN:
        raise ConfigError(f"params: {key!r} cannot be tuned: it decides the held-out test speakers, "
                          "which the search must never see; set it in the base config")
    if not rest:
        return
    if top not in NESTED:
        raise ConfigError(f"params: {key!r}: {top} is a single setting, not a group to address with a dot")
    if "." in rest:
        raise ConfigError(f"params: {key!r}: one dot at most ({top}.<setting>)")
    if top in params:
        raise ConfigError(f"params: {key!r} and {top!r} both set {top}; keep one")
    group = NESTED[top]
    if group is not None:
        fields = [f.name for f in dataclasses.fields(group)]
        if rest not in fields:
            raise ConfigError(f"params: unknown key {key!r}; known {top} settings: {', '.join(fields)}")
    # model_args.* is checked against the model's signature when each trial's config is built


def _check_spec(key: str, spec) -> None:
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"params: {key!r} has an empty list of choices")
        seen = [json.dumps(c, sort_keys=True) for c in spec]
        twice = sorted({c for c in seen if seen.count(c) > 1})
        if twice:
            raise ConfigError(f"params: {key!r} lists {', '.join(twice)} more than once (each choice would train again)")
        return
    if not isinstance(spec, dict):
        raise ConfigError(f"params: {key!r} must be a list of choices or a distribution "
                          f"({', '.join(DISTRIBUTIONS)}: [low, high]), got {spec!r}")
    if len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise ConfigError(f"params: {key!r}: a distribution is one of {', '.join(DISTRIBUTIONS)} with [low, high], got {spec!r}")
    kind, bounds = next(iter(spec.items()))
    numbers = isinstance(bounds, list) and len(bounds) == 2 and all(
        isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
    if not numbers or not bounds[0] < bounds[1]:
        raise ConfigError(f"params: {key!r}: {kind} needs [low, high] with low < high, got {bounds!r}")
    if kind == "loguniform" and bounds[0] <= 0:
        raise ConfigError(f"params: {key!r}: loguniform needs low > 0, got {bounds!r}")
    if kind == "int" and not all(isinstance(b, int) for b in bounds):
        raise ConfigError(f"params: {key!r}: int needs whole numbers, got {bounds!r}")


def _distribution(spec: dict):
    from scipy import stats

    kind, (low, high) = next(iter(spec.items()))
    if kind == "loguniform":
        return stats.loguniform(low, high)
    if kind == "uniform":
        return stats.uniform(loc=low, scale=high - low)
    return stats.randint(low, high + 1)  # int: low..high inclusive


def candidates(space: SearchSpace, mode: str, n_trials: int = 10, seed: int = 0) -> list[dict]:
    """The parameter sets to try: every combination (grid) or ``n_trials`` seeded draws (random)."""
    from sklearn.model_selection import ParameterGrid, ParameterSampler

    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "grid":
        if space.distributions():
            raise ConfigError(f"grid mode needs a list of choices for every parameter; "
                              f"{', '.join(space.distributions())} {'is a distribution' if len(space.distributions()) == 1 else 'are distributions'} "
                              "(use --mode random, or list the values)")
        drawn = list(ParameterGrid(space.params))
    else:
        if n_trials < 1:
            raise ConfigError(f"random mode needs at least one trial, got {n_trials}")
        spec = {k: (_distribution(v) if isinstance(v, dict) else v) for k, v in space.params.items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # fewer combinations than n_trials: sklearn returns them all
            drawn = list(ParameterSampler(spec, n_iter=n_trials, random_state=seed))
        if len(drawn) < n_trials:
            log.info("the space has only %d combination(s); trying each once instead of %d draws", len(drawn), n_trials)
    return [{k: _plain(v) for k, v in sorted(p.items())} for p in drawn]


def _plain(value):
    """numpy scalars as JSON-friendly Python values; drawn floats to 4 significant digits."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(f"{float(value):.4g}")
    return value


def apply_params(base: TrainConfig, params: dict) -> TrainConfig:
    """``base`` with each dotted setting of ``params`` replaced, validated as a whole config."""
    try:
        return base.with_settings(params)
    except ConfigError as exc:
        raise ConfigError(f"the trial {json.dumps(params)}: {exc}") from None


def speaker_folds(rows, config: TrainConfig, n_folds: int, seed: int = 0) -> dict:
    """Speaker folds for cross-validation (see the module docstring).

    Returns ``{"folds": [[speaker, ...], ...], "test": [...], "always_train": [...]}``,
    all sorted: the validation speakers of each fold, the held-out test
    speakers (never in a fold) and the noise pseudo-speakers (always train).
    """
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    assignment = assign_splits(rows, config.seed, config.val_fraction, config.test_fraction)
    labels, accents = defaultdict(set), defaultdict(set)
    for row in rows:
        labels[row.speaker].add(row.label)
        accents[row.speaker].add(row.accent)
    always = sorted(s for s in assignment if labels[s] == {NOISE})
    test = sorted(s for s, split in assignment.items() if split == "test")
    pool = sorted(s for s, split in assignment.items() if split != "test" and s not in always)
    if n_folds < 2:
        raise ConfigError(f"cross-validation needs at least 2 folds, got {n_folds}")
    if len(pool) < n_folds:
        raise ConfigError(f"{n_folds} folds need at least {n_folds} speakers outside the test split; "
                          f"the dataset has {len(pool)} ({len(test)} more are held out for testing)")
    y = [min(accents[s]) for s in pool]
    x = np.zeros((len(pool), 1))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # an accent with fewer speakers than folds: some folds lack it
            parts = list(StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed).split(x, y, groups=pool))
    except ValueError:  # every accent has fewer speakers than folds: nothing to stratify
        log.info("every accent has fewer than %d speakers: folds by speaker without stratifying by accent", n_folds)
        parts = list(GroupKFold(n_folds, shuffle=True, random_state=seed).split(x, groups=pool))
    folds = [sorted(pool[i] for i in val_idx) for _, val_idx in parts]
    return {"folds": folds, "test": test, "always_train": always}


def fold_assignment(split: dict, k: int) -> dict[str, str]:
    """The explicit split of fold ``k``: its speakers validate, the other folds' and the noise train, test left out."""
    out = {s: "train" for s in split["always_train"]}
    for i, fold in enumerate(split["folds"]):
        out.update({s: "val" if i == k else "train" for s in fold})
    return out


def tune(dataset_dir: str | Path, space: SearchSpace, out_dir: str | Path, mode: str = "grid", n_trials: int = 10,
         seed: int = 0, n_folds: int = 3, metric: str = "recall_at_far", progress: bool = True) -> TuneResult:
    """Run the search (see the module docstring) and write its results into ``out_dir``."""
    from tqdm import tqdm

    from train.loop import train, unique_by_path, write_json

    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    dataset_dir = Path(dataset_dir).resolve()
    out_dir = Path(out_dir)
    trials = [(params, apply_params(space.base, params)) for params in candidates(space, mode, n_trials, seed)]
    rows, _ = read_dataset(dataset_dir)
    if not rows:
        raise ManifestError(f"{dataset_dir}: no clips found in any */manifest.jsonl")
    rows = unique_by_path(rows)
    digest = data_digest(rows)
    split = speaker_folds(rows, space.base, n_folds, seed)
    previous = _previous_trials(out_dir / "results.json")

    out_dir.mkdir(parents=True, exist_ok=True)
    header = {
        "dataset": str(dataset_dir), "data_digest": digest, "space": space.to_dict(), "mode": mode,
        "trials_requested": n_trials if mode == "random" else len(trials), "seed": seed, "n_folds": n_folds,
        "metric": metric, "higher_is_better": METRICS[metric], "splits": split, "versions": _versions(),
    }
    done: list[dict] = []
    bar = tqdm(total=len(trials) * n_folds, desc="tuning", unit="fold", disable=not progress, dynamic_ncols=True)
    try:
        for number, (params, config) in enumerate(trials, start=1):
            key = _trial_key(config, digest, split)
            if key in previous:  # summarised anew: the metric may differ from the earlier search's
                old = previous[key]
                done.append({**_summarise(number, params, config, key, old["folds"], metric, old["seconds"]), "reused": True})
                bar.update(n_folds)
                continue
            started, folds = time.perf_counter(), []
            for k in range(n_folds):
                bar.set_description(f"trial {number}/{len(trials)} fold {k + 1}/{n_folds}")
                with _quiet_training():
                    run = train(dataset_dir, config, out_dir / "trials" / f"{number:03d}-{key[:8]}" / f"fold-{k + 1}",
                                progress=False, assignment=fold_assignment(split, k))
                folds.append({"fold": k + 1, **{m: run.val_metrics[m] for m in METRICS}, "best_epoch": run.best_epoch,
                              "epochs_run": run.epochs_run, "seconds": run.seconds, "run_dir": str(run.run_dir)})
                bar.update(1)
            done.append(_summarise(number, params, config, key, folds, metric, time.perf_counter() - started))
            ranked = rank(done, metric)
            bar.set_postfix(best=f"trial {ranked[0]['trial']} {metric} {_num(ranked[0]['mean'])}")
            write_json(out_dir / "results.json", {**header, "created": now_iso(), "complete": False, "trials": done})
    finally:
        bar.close()

    ranked = rank(done, metric)
    best_config = TrainConfig.from_dict(ranked[0]["config"])
    results = {**header, "created": now_iso(), "complete": True, "trials": done,
               "ranking": [t["trial"] for t in ranked], "best": {"trial": ranked[0]["trial"], "params": ranked[0]["params"]}}
    write_json(out_dir / "results.json", results)
    write_json(out_dir / "best_config.json", best_config.to_dict())
    keys = sorted(space.params)
    (out_dir / "results.md").write_text(results_markdown(results, ranked, keys), encoding="utf-8")
    _write_csv(out_dir / "results.csv", ranked, keys, metric, n_folds)
    plot_trials(done, metric, out_dir / "results.png")
    return TuneResult(out_dir=out_dir, trials=ranked, best_config=best_config, results=results)


def _summarise(number, params, config, key, folds, metric, seconds) -> dict:
    """One trial's row. A fold whose metric is undefined (NaN: e.g. no keyword among its validation clips) is
    recorded as None and left out of the mean, so results.json stays valid JSON; no defined fold gives a None mean."""
    folds = [{k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in f.items()} for f in folds]
    values = [f[metric] for f in folds]
    defined = [v for v in values if v is not None]
    std = _round(np.std(defined, ddof=1)) if len(defined) > 1 else (0.0 if defined else None)
    return {
        "trial": number, "params": params, "key": key, "config": config.to_dict(), "folds": folds,
        "metric": metric, "per_fold": values, "mean": _round(np.mean(defined)) if defined else None, "std": std,
        "val_loss_mean": _round(np.mean([f["loss"] for f in folds])),
        "epochs": _round(np.mean([f["epochs_run"] for f in folds])), "seconds": round(seconds, 1),
    }


def _round(x) -> float:
    return round(float(x), 5)


def rank(trials: list[dict], metric: str) -> list[dict]:
    """Best first: by mean metric over folds (undefined last), then by lower mean validation loss."""
    sign = -1.0 if METRICS[metric] else 1.0
    return sorted(trials, key=lambda t: (t["mean"] is None, sign * t["mean"] if t["mean"] is not None else 0.0,
                                         t["val_loss_mean"], t["trial"]))


def _trial_key(config: TrainConfig, digest: str, split: dict) -> str:
    """What makes a trial's result reusable: the whole config, the data and the folds."""
    blob = json.dumps({"config": config.to_dict(), "data": digest, "splits": split}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _previous_trials(path: Path) -> dict[str, dict]:
    """Trials of an earlier search in the same folder, by key (nothing if there is none or it is unreadable)."""
    if not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        return {t["key"]: {k: v for k, v in t.items() if k != "reused"} for t in old.get("trials", [])}
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        log.warning("%s: unreadable, not resuming from it", path)
        return {}


@contextmanager
def _quiet_training():
    """The training loop's info lines, once per fold, would bury the progress bar; warnings still show."""
    logger, level = logging.getLogger("kws"), logging.getLogger("kws").level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _versions() -> dict:
    import scipy
    import sklearn
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "scikit-learn": sklearn.__version__, "scipy": scipy.__version__}


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def results_markdown(results: dict, ranked: list[dict], keys: list[str]) -> str:
    """The results as Markdown: what was searched, on what, and the table best first."""
    metric, n = results["metric"], results["n_folds"]
    split = results["splits"]
    lines = [
        "# kws tune", "",
        f"- dataset: `{results['dataset']}` (data digest `{results['data_digest'][:12]}`)",
        f"- search: {results['mode']}, {len(ranked)} trial(s), seed {results['seed']}, space `{results['space']['source']}`",
        f"- cross-validation: {n} speaker folds of {', '.join(str(len(f)) for f in split['folds'])} speakers; "
        f"{len(split['test'])} test speakers left out of every run",
        f"- metric: validation {metric} ({'higher' if results['higher_is_better'] else 'lower'} is better), "
        "mean ± std over folds; ties go to the lower validation loss",
        f"- best: trial {ranked[0]['trial']}, saved as `best_config.json`", "",
        "| rank | trial | " + " | ".join(f"`{k}`" for k in keys) + f" | {metric} mean ± std | per fold | val loss | epochs | seconds |",
        "|" + "---|" * (len(keys) + 7),
    ]
    for i, t in enumerate(ranked, start=1):
        folds = " / ".join(_num(v) for v in t["per_fold"])
        lines.append(f"| {i} | {t['trial']} | " + " | ".join(_cell(t["params"].get(k)) for k in keys)
                     + f" | {_num(t['mean'])} ± {_num(t['std'])} | {folds} | {t['val_loss_mean']:.3f} | {t['epochs']:g} | {t['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _write_csv(path: Path, ranked: list[dict], keys: list[str], metric: str, n_folds: int) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["rank", "trial", *keys, f"{metric}_mean", f"{metric}_std", *(f"fold_{k + 1}" for k in range(n_folds)),
                    "val_loss_mean", "epochs", "seconds"])
        for i, t in enumerate(ranked, start=1):
            w.writerow([i, t["trial"], *(_cell(t["params"].get(k)) for k in keys), t["mean"], t["std"], *t["per_fold"],
                        t["val_loss_mean"], t["epochs"], t["seconds"]])


def plot_trials(trials: list[dict], metric: str, path: Path) -> Path:
    """The metric of each trial: every fold as a dot, the mean with ± one standard deviation, the best in colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from train.loop import save_figure

    best = rank(trials, metric)[0]["trial"]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(trials) + 2), 4))
    for t in trials:
        colour = "tab:red" if t["trial"] == best else "tab:blue"
        defined = [v for v in t["per_fold"] if v is not None]
        ax.scatter([t["trial"]] * len(defined), defined, s=14, color="0.6", zorder=2)
        if t["mean"] is not None:
            ax.errorbar(t["trial"], t["mean"], yerr=t["std"], fmt="o", color=colour, capsize=4, zorder=3)
    ax.set(xlabel="trial", ylabel=f"validation {metric}", title=f"{metric} per trial (dots: folds; red: best, trial {best})")
    ax.set_xticks([t["trial"] for t in trials])
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
