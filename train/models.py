"""Small keyword-spotting networks over MFCC windows.

Input ``(batch, frames, n_mfcc)``, output logits ``(batch, n_labels)``. The
networks convolve over time only (the MFCC coefficients are channels), which
keeps them a few tens of thousands of parameters and cheap per hop, like the
temporal convolutions of TC-ResNet (Choi et al., 2019) and the
depthwise-separable blocks of DS-CNN (Zhang et al., 2017).

``build_model(name, **args)`` is the one way to make a model, so a checkpoint
that stores ``name`` and ``args`` rebuilds it exactly.
"""

from __future__ import annotations

import torch
from torch import nn

from features.errors import ConfigError


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

    def __init__(self, n_mfcc: int, n_labels: int, channels: int = 64, n_blocks: int = 4, kernel: int = 9, dropout: float = 0.1):
        super().__init__()
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
        x = self.blocks(self.stem(x))
        return self.head(x.amax(dim=2))


MODELS = {"dscnn": DSCNN}


def build_model(name: str, **args) -> nn.Module:
    """Make a model by name (``MODELS``) with keyword arguments."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}")
    return MODELS[name](**args)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
