"""The training configuration: one frozen, JSON-round-trippable ``TrainConfig``.

A run's ``config.json`` is this config (plus the feature config it implies), so
any run can be repeated from its own folder. Reading a config is strict: an
unknown key is most likely a typo that would otherwise be silently ignored
(``"epoch": 5`` training for the default 30), so it is refused with
``ConfigError`` naming the key, as is any value of the wrong type or range.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path

from features.augment import AugmentConfig
from features.config import FeatureConfig, check_keys, read_json_file
from features.errors import ConfigError, first_line
from train.models import MODELS, build_model, model_args_for

CLASS_BALANCE = ("loss", "sampler", "none")  # class-weighted loss, balanced sampling, or neither
MONITORS = ("val_loss", "val_f1")  # what early stopping and the best checkpoint follow
# Filled in by the training loop from the data and the feature config, never by the user.
DERIVED_MODEL_ARGS = ("n_mfcc", "n_labels")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run, besides the data.

    ``monitor``: ``val_loss`` (mean cross-entropy on the validation clips,
    unweighted: smooth, so patience works well on small validation sets) or
    ``val_f1`` (macro F1 of the keyword classes at argmax). The best epoch by
    this metric is the one saved as ``best.pt``.

    ``ema_decay``: above 0, the model validated, saved and returned is an
    exponential moving average of the weights over the training steps
    (``train.loop.weight_average``), not the last step's weights. Averaged
    weights tend to sit in a flatter region of the loss (the idea behind SWA
    and SWAD), which is meant to carry over better from synthetic training
    voices to real speakers; benchmarks/REAL_SPEECH.md has what it did there.

    ``group_dro``: above 0, the step size of online group DRO (Sagawa et al.,
    2020, "Distributionally robust neural networks") over speaker groups, one
    per accent and class (keyword or not): instead of the mean loss, each
    step minimises a weighted sum of the groups' mean losses whose weights
    grow, by ``exp(group_dro * loss)``, for the groups the model does worst
    on. Why: the accent goal is about the worst accent, which plain averaging
    lets the many easy voices outvote (``train.loop.GroupWeights``).

    ``domain_adversarial``: above 0, the weight of a domain-adversarial loss
    (Ganin & Lempitsky, 2015, "Unsupervised domain adaptation by
    backpropagation"): a small head learns to tell recorded (``source``
    "human") from synthetic negatives by the network's pooled features, and
    the features are trained, through a reversed gradient, to make that
    impossible. Why: when every keyword is synthetic and some negatives are
    recorded, "sounds recorded" is a shortcut to "not the keyword" that
    real speakers of the keyword then pay for (``train.loop.DomainAdversary``).
    """

    model: str = "dscnn"
    model_args: dict = field(default_factory=dict)  # besides n_mfcc/n_labels, e.g. {"channels": 64}
    features: dict = field(default_factory=dict)  # FeatureConfig overrides; {} = the project default
    epochs: int = 30  # at most; early stopping may end sooner
    batch_size: int = 64
    windows_per_epoch: int = 0  # at least this many training windows per epoch (clips repeat, augmented anew); 0 = each clip once
    lr: float = 3e-3  # peak learning rate of the one-cycle schedule
    weight_decay: float = 1e-2  # AdamW decoupled weight decay
    patience: int = 8  # epochs without improvement of `monitor` before stopping; 0 = never stop early
    monitor: str = "val_loss"
    seed: int = 0
    val_fraction: float = 0.15  # of the speakers of each accent
    test_fraction: float = 0.15
    window_s: float = 1.0  # model input length, seconds (rounded down to whole frames)
    class_balance: str = "loss"
    far_target: float = 0.01  # validation false-accept rate at which keyword recall is reported
    num_threads: int = 0  # torch CPU threads; 0 = all cores but one (it prepares the next epoch), at most 4
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    init_from: str = ""  # a best.pt whose weights start this run (fine-tuning, e.g. after mining false accepts); "" = random
    ema_decay: float = 0.0  # validate and keep an exponential moving average of the weights (e.g. 0.999); 0 = the weights as trained
    group_dro: float = 0.0  # step size of group DRO over (accent, class) groups (e.g. 0.01); 0 = the plain mean loss
    domain_adversarial: float = 0.0  # weight of the reversed recorded-vs-synthetic loss on negatives (e.g. 1.0, the paper's); 0 = off

    def __post_init__(self) -> None:
        _check_types(self)
        if self.model not in MODELS:
            raise ConfigError(f"model: unknown model {self.model!r}; choose one of {', '.join(sorted(MODELS))}")
        accepted = set(inspect.signature(MODELS[self.model]).parameters) - set(DERIVED_MODEL_ARGS)
        for key in self.model_args:
            if key in DERIVED_MODEL_ARGS:
                raise ConfigError(f"model_args.{key} is set from the data and features; remove it")
            if key not in accepted:
                raise ConfigError(f"model_args.{key}: not an argument of {self.model!r}; known: {', '.join(sorted(accepted))}")
        try:
            self.feature_config()
        except ConfigError as exc:
            raise ConfigError(f"features: {exc}") from None
        except TypeError as exc:
            raise ConfigError(f"features: {exc}") from None
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "window_s": self.window_s}
        for key, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{key} must be positive, got {value}")
        for key in ("weight_decay", "patience", "num_threads", "windows_per_epoch"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must not be negative, got {getattr(self, key)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be above 0 (early stopping needs validation speakers) and below 1, got {self.val_fraction}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ConfigError(f"val_fraction + test_fraction must leave speakers to train on, got {self.val_fraction + self.test_fraction:.2f}")
        if self.group_dro < 0:
            raise ConfigError(f"group_dro must not be negative (0 = the plain mean loss), got {self.group_dro}")
        if self.domain_adversarial < 0:
            raise ConfigError(f"domain_adversarial must not be negative (0 = off), got {self.domain_adversarial}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1) (0 = no weight averaging), got {self.ema_decay}")
        if not 0.0 < self.far_target < 1.0:
            raise ConfigError(f"far_target must be in (0, 1), got {self.far_target}")
        if self.class_balance not in CLASS_BALANCE:
            raise ConfigError(f"class_balance must be one of {', '.join(CLASS_BALANCE)}, got {self.class_balance!r}")
        if self.monitor not in MONITORS:
            raise ConfigError(f"monitor must be one of {', '.join(MONITORS)}, got {self.monitor!r}")
        cfg = self.feature_config()
        if cfg.pcen_s and self.model_args.get("denoise"):
            raise ConfigError("model_args.denoise subtracts noise from log-mel bands in dB; it cannot follow PCEN (features.pcen_s > 0), "
                              "which already normalises each band by its own level: use one of them")
        if cfg.n_frames(int(self.window_s * cfg.sample_rate)) < 8:
            raise ConfigError(f"window_s={self.window_s} gives fewer than 8 feature frames; use a longer window")
        _check_model_args(self, cfg)

    def feature_config(self) -> FeatureConfig:
        """The MFCC definition this run trains with (project default plus ``features`` overrides)."""
        return FeatureConfig.from_dict(self.features)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["augment"] = self.augment.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Build from a plain dict (parsed JSON); unknown keys and bad values raise ``ConfigError``."""
        check_keys(cls, d, "training config")
        d = dict(d)
        if "augment" in d:
            d["augment"] = AugmentConfig.from_dict(d["augment"])
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        """Read a JSON config file; errors name the file and the offending key."""
        d = read_json_file(path, "training config")
        try:
            return cls.from_dict(d)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some settings changed, validated like any other config."""
        return dataclasses.replace(self, **changes)

    def with_settings(self, settings: dict) -> "TrainConfig":
        """A copy with ``settings`` changed by name, validated as a whole config.

        ``"augment.max_warp"`` changes one setting of a group and keeps the
        rest of it; a plain name replaces the setting whole. A search trial
        and a benchmark lever are both "this config, but ...", written as
        only the settings they change.
        """
        d = self.to_dict()
        for key, value in settings.items():
            top, _, rest = key.partition(".")
            if not rest:
                d[top] = value
            elif isinstance(d.get(top), dict):
                d[top] = {**d[top], rest: value}
            else:
                groups = ", ".join(k for k, v in d.items() if isinstance(v, dict))
                raise ConfigError(f"unknown setting {key!r}: {top!r} is not a group of settings ({groups})")
        return TrainConfig.from_dict(d)


_TYPES = {
    "model": str, "model_args": dict, "features": dict, "epochs": int, "batch_size": int, "windows_per_epoch": int, "lr": float,
    "weight_decay": float, "patience": int, "monitor": str, "seed": int, "val_fraction": float,
    "test_fraction": float, "window_s": float, "class_balance": str, "far_target": float, "num_threads": int,
    "augment": AugmentConfig, "init_from": str, "ema_decay": float, "group_dro": float,
    "domain_adversarial": float,
}


def _check_types(cfg: TrainConfig) -> None:
    """Refuse values of the wrong JSON type (``"epochs": "5"``, ``"lr": true``) naming the key."""
    for key, kind in _TYPES.items():
        value = getattr(cfg, key)
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) != float("inf")
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, kind)
        if not ok:
            raise ConfigError(f"{key} must be {'a number' if kind is float else kind.__name__}, got {value!r}")


def _check_model_args(cfg: TrainConfig, fcfg: FeatureConfig) -> None:
    """Build the model and score one window, so a bad ``model_args`` value fails here with its name, not mid-training."""
    import torch

    frames = fcfg.n_frames(int(cfg.window_s * fcfg.sample_rate))
    try:
        model = build_model(cfg.model, **model_args_for(cfg.model_args, fcfg.n_mfcc, fcfg.n_mels, 2))
        with torch.no_grad():
            model.eval()(torch.zeros(1, frames, fcfg.n_mfcc))
    except ConfigError as exc:
        raise ConfigError(f"model_args: {exc}") from None
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"model_args {cfg.model_args} do not make a working {cfg.model!r} "
                          f"for {frames}-frame windows: {first_line(exc)}") from None
