"""Small keyword-spotting networks over MFCC windows.

Input ``(batch, frames, n_mfcc)``, output logits ``(batch, n_labels)``. The
networks convolve over time only (the MFCC coefficients are channels), which
keeps them a few tens of thousands of parameters and cheap per hop. Two
families from the keyword-spotting literature: ``dscnn``, depthwise-separable
blocks after DS-CNN (Zhang et al., 2017, "Hello Edge"), and ``tcresnet``,
the residual temporal convolutions of TC-ResNet (Choi et al., 2019).

``build_model(name, **args)`` is the one way to make a model, so a checkpoint
that stores ``name`` and ``args`` rebuilds it exactly.
"""

from __future__ import annotations

import torch
from torch import nn

from features.errors import ConfigError


POOLS = ("avg", "max", "logit_max")  # how a model's time positions become one window score (see TCResNet)


def _check_pool(pool: str, model: str) -> str:
    if pool not in POOLS:
        raise ConfigError(f"{model} pool must be one of {', '.join(POOLS)}, got {pool!r}")
    return pool


def pool_and_classify(x: torch.Tensor, head: nn.Linear, pool: str, drop: nn.Module | None = None) -> torch.Tensor:
    """Window logits from features ``(batch, channels, positions)``: pool over time, then ``head`` (or ``head``, then pick a position)."""
    drop = drop or nn.Identity()
    if pool == "avg":
        return head(drop(x.mean(dim=2)))
    if pool == "max":
        return head(drop(x.amax(dim=2)))
    logits = head(drop(x.transpose(1, 2)))  # (batch, positions, n_labels)
    margin = logits[:, :, 1:].amax(dim=2) - logits[:, :, 0]  # best keyword against negative, per position
    best = margin.argmax(dim=1)
    return logits.gather(1, best[:, None, None].expand(-1, 1, logits.shape[2])).squeeze(1)


class SeparableBlock(nn.Module):
    """Depthwise temporal conv, pointwise conv, batch norm, ReLU, with a residual path."""

    def __init__(self, channels: int, kernel: int, dilation: int = 1, dropout: float = 0.0):
        super().__init__()
        pad = dilation * (kernel - 1) // 2
        self.depthwise = nn.Conv1d(channels, channels, kernel, padding=pad, dilation=dilation, groups=channels, bias=False)
        self.pointwise = nn.Conv1d(channels, channels, 1, bias=False)
        self.norm = nn.BatchNorm1d(channels)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(torch.relu(self.norm(self.pointwise(self.depthwise(x)))))


class DSCNN(nn.Module):
    """Depthwise-separable temporal CNN.

    A strided input convolution halves the frame rate, ``n_blocks`` separable
    blocks with growing dilation widen the receptive field over the ~1 s
    window, and global max pooling over time lets the keyword sit anywhere in
    the window (a streaming-friendly choice: the score rises as soon as the
    whole keyword is inside).
    """

    def __init__(self, n_mfcc: int, n_labels: int, channels: int = 64, n_blocks: int = 4, kernel: int = 9, dropout: float = 0.1,
                 pool: str = "max"):
        super().__init__()
        self.pool = _check_pool(pool, "dscnn")
        self.input_norm = nn.BatchNorm1d(n_mfcc)  # learned per-coefficient normalisation
        self.stem = nn.Sequential(
            nn.Conv1d(n_mfcc, channels, 5, stride=2, padding=2, bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(),
        )
        self.blocks = nn.Sequential(*[SeparableBlock(channels, kernel, dilation=2 ** min(i, 2), dropout=dropout) for i in range(n_blocks)])
        self.head = nn.Linear(channels, n_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_norm(x.transpose(1, 2))  # (batch, n_mfcc, frames)
        return pool_and_classify(self.blocks(self.stem(x)), self.head, self.pool)


class TCResBlock(nn.Module):
    """One TC-ResNet residual block (Choi et al., 2019, fig. 2).

    Two temporal convolutions of ``kernel`` frames, each with batch norm, the
    first strided; the sum with the shortcut goes through the last ReLU. When
    the block changes the width or the frame rate, the shortcut is a strided
    1x1 convolution with batch norm and ReLU, as in the paper's fig. 2(b);
    otherwise it is the identity.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int):
        super().__init__()
        pad = (kernel - 1) // 2
        self.conv1 = nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=pad, bias=False)
        self.norm1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, padding=pad, bias=False)
        self.norm2 = nn.BatchNorm1d(c_out)
        if stride == 1 and c_in == c_out:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm1d(c_out), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm2(self.conv2(torch.relu(self.norm1(self.conv1(x)))))
        return torch.relu(y + self.shortcut(x))


class TCResNet(nn.Module):
    """Temporal-convolution ResNet (TC-ResNet, Choi et al., 2019, "Temporal Convolution for Real-time Keyword Spotting on Mobile Devices").

    The MFCC coefficients are the input channels and every convolution runs
    over time only, so the first layer already sees the whole spectrum of a
    frame and later layers need few channels: the paper's point is that this
    costs far fewer multiply-accumulates than 2-D convolution over the
    time-frequency image for the same accuracy. ``channels`` is the width of
    the first 3-frame convolution followed by one residual block per further
    entry, each halving the frame rate; the default ``(16, 24, 32, 48)`` is
    TC-ResNet8 at width 1 (64k parameters, 1.4M MACs per window: 2.5x the
    default DS-CNN's parameters, 1.15x its MACs). ``configs/tcresnet.json``
    narrows it to ``(16, 20, 28, 40)`` (47k parameters, 1.07M MACs) to compare
    the two at similar cost. With ``kernel=9`` and three strided blocks the last
    layer's receptive field (171 frames) covers the whole 1 s window, so every
    time position sees the whole word.

    ``pool`` decides how the time positions become one score:

    - ``"avg"``: global average pooling of the features, as in the paper;
    - ``"max"``: global max pooling of the features (what ``DSCNN`` does);
    - ``"logit_max"``: the classifier runs on every time position and the
      window takes the logits of the position where the keyword is most
      likely (largest best-keyword minus negative logit). Trained with plain
      cross-entropy, this is the max-pooling loss of Sun et al. (2016,
      "Max-pooling loss training of long short-term memory networks for
      small-footprint keyword spotting") within one window: a keyword window
      needs only one position that fires, a negative window is penalised at
      its most keyword-like position. With one keyword, the window's keyword
      probability is the largest of the positions' probabilities.
    """

    def __init__(self, n_mfcc: int, n_labels: int, channels: list[int] | tuple[int, ...] = (16, 24, 32, 48), kernel: int = 9,
                 first_kernel: int = 3, dropout: float = 0.1, pool: str = "avg"):
        super().__init__()
        channels = [int(c) for c in channels]
        if len(channels) < 2 or min(channels) < 1:
            raise ConfigError(f"tcresnet channels must list at least two positive widths, got {channels}")
        if kernel < 1 or kernel % 2 == 0 or first_kernel < 1 or first_kernel % 2 == 0:
            raise ConfigError(f"tcresnet kernels must be odd and positive (same padding), got {kernel} and {first_kernel}")
        self.pool = _check_pool(pool, "tcresnet")
        self.input_norm = nn.BatchNorm1d(n_mfcc)  # learned per-coefficient normalisation (MFCC values span about +-600)
        self.stem = nn.Sequential(
            nn.Conv1d(n_mfcc, channels[0], first_kernel, padding=(first_kernel - 1) // 2, bias=False),
            nn.BatchNorm1d(channels[0]),
            nn.ReLU(),
        )
        self.blocks = nn.Sequential(*[TCResBlock(a, b, kernel, stride=2) for a, b in zip(channels[:-1], channels[1:])])
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(channels[-1], n_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(self.input_norm(x.transpose(1, 2))))  # (batch, channels, positions)
        return pool_and_classify(x, self.head, self.pool, self.drop)


MODELS = {"dscnn": DSCNN, "tcresnet": TCResNet}


def build_model(name: str, **args) -> nn.Module:
    """Make a model by name (``MODELS``) with keyword arguments."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}")
    return MODELS[name](**args)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
