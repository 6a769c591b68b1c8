"""Small keyword-spotting networks over MFCC windows.

Input ``(batch, frames, n_mfcc)``, output logits ``(batch, n_labels)``. The
networks convolve over time only (the MFCC coefficients are channels), which
keeps them a few tens of thousands of parameters and cheap per hop. Two
families from the keyword-spotting literature: ``dscnn``, depthwise-separable
blocks after DS-CNN (Zhang et al., 2017, "Hello Edge"), and ``tcresnet``,
the residual temporal convolutions of TC-ResNet (Choi et al., 2019).

``DSCNN(..., padding="valid")`` is the streaming variant (``configs/dscnn-stream.json``):
every output position depends on real frames only, so ``DSCNNStream`` can run
the same network hop by hop on the new frames alone, carrying each layer's
input history as state (``deploy.export`` writes it as a second graph).

``build_model(name, **args)`` is the one way to make a model, so a checkpoint
that stores ``name`` and ``args`` rebuilds it exactly.
"""

from __future__ import annotations

import torch
from torch import nn

from features.errors import ConfigError


PADDINGS = ("same", "valid")  # DSCNN: zero padding to keep the length, or none (the streaming variant)
POOLS = ("avg", "max", "logit_max")  # how a model's time positions become one window score (see TCResNet)


def _check_pool(pool: str, model: str) -> str:
    if pool not in POOLS:
        raise ConfigError(f"{model} pool must be one of {', '.join(POOLS)}, got {pool!r}")
    return pool


def _check_flag(value, model: str, name: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{model} {name} must be true or false, got {value!r}")
    return value


NOISE_RANK = 0.2  # the noise estimate of a band: its level in the window's 20% quietest frame
NOISE_FLOOR = 0.1  # what subtraction leaves at least: a tenth of the noise power (-10 dB), so the log stays finite


def model_args_for(model_args: dict, n_mfcc: int, n_mels: int, n_labels: int) -> dict:
    """The arguments ``build_model`` gets from a run: the config's ``model_args`` plus the feature sizes the model needs.

    ``n_mels`` is added only for ``denoise``, which goes back from the MFCC
    to mel bands; other models' stored arguments stay as they were.
    """
    return {"n_mfcc": n_mfcc, "n_labels": n_labels, **model_args, **({"n_mels": n_mels} if model_args.get("denoise") else {})}


class WindowNoiseSubtraction(nn.Module):
    """Spectral subtraction of the window's stationary noise, done on the MFCC input: ``(batch, frames, n_mfcc)`` in and out.

    A quiet take under a steady noise (a fan, a hum, the benchmark's pink
    bed) loses its weaker bands to the noise, which a log compresses into
    the word's own features. Per mel band, the window's ``NOISE_RANK``
    quietest frame estimates the noise power, which is subtracted from every
    frame, leaving at least ``NOISE_FLOOR`` of it (Berouti et al., 1979).
    The mel bands are the MFCC's cepstrally smoothed log-mel envelope (the
    transposed orthonormal DCT of ``features.mfcc``), and the result goes back
    through the same DCT. A 1 s window around a keyword holds enough frames
    without speech for the estimate. Like ``cmn`` it lives in the network, so
    training, the exported graph and the detector compute it the same way,
    and the window (not the stream's history) is all it sees.
    """

    def __init__(self, n_mfcc: int, n_mels: int):
        super().__init__()
        from features.mfcc import dct_matrix

        if not 0 < n_mfcc <= n_mels:
            raise ConfigError(f"denoise needs 0 < n_mfcc <= n_mels, got n_mfcc {n_mfcc}, n_mels {n_mels}")
        self.register_buffer("basis", torch.from_numpy(dct_matrix(n_mfcc, n_mels)).float(), persistent=False)  # (n_mfcc, n_mels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        power = torch.pow(10.0, (x @ self.basis) / 10.0)  # (batch, frames, n_mels); the MFCC is the DCT of 10 log10 mel power
        k = max(1, int(NOISE_RANK * x.shape[1]))
        noise = torch.topk(power, k, dim=1, largest=False).values[:, -1:]  # (batch, 1, n_mels)
        clean = torch.maximum(power - noise, NOISE_FLOOR * noise)
        return (10.0 * torch.log10(clean)) @ self.basis.T


def remove_window_mean(x: torch.Tensor) -> torch.Tensor:
    """Cepstral mean normalisation over the window: ``(batch, frames, n_mfcc)`` minus its mean over frames.

    A fixed filter on the signal (a microphone's colouration, a room's
    long-term response, the level) adds a constant to every frame's MFCC, so
    subtracting the window's mean removes it. It is the classic remedy for a
    channel the training data lacks, which is what separates clean
    synthetic voices from crowd-sourced phones and laptops. It lives inside
    the network, so the exported graph, the detector and training compute it
    the same way.
    """
    return x - x.mean(dim=1, keepdim=True)


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
    """Depthwise temporal conv, pointwise conv, batch norm, ReLU, with a residual path.

    With ``padding="valid"`` the depthwise conv has no zero padding: the
    output is ``context = dilation * (kernel - 1)`` positions shorter than the
    input, each output aligned with the newest input position it sees, so the
    residual path adds the input without its first ``context`` positions.
    """

    def __init__(self, channels: int, kernel: int, dilation: int = 1, dropout: float = 0.0, padding: str = "same"):
        super().__init__()
        self.context = dilation * (kernel - 1) if padding == "valid" else 0  # input positions before the first output's own
        pad = 0 if padding == "valid" else dilation * (kernel - 1) // 2
        self.depthwise = nn.Conv1d(channels, channels, kernel, padding=pad, dilation=dilation, groups=channels, bias=False)
        self.pointwise = nn.Conv1d(channels, channels, 1, bias=False)
        self.norm = nn.BatchNorm1d(channels)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.drop(torch.relu(self.norm(self.pointwise(self.depthwise(x)))))
        return (x[..., self.context :] if self.context else x) + y


class DSCNN(nn.Module):
    """Depthwise-separable temporal CNN.

    A strided input convolution halves the frame rate, ``n_blocks`` separable
    blocks with growing dilation (``dilations``, default 1, 2, 4, 4, ...) widen
    the receptive field over the ~1 s window, and global max pooling over time
    lets the keyword sit anywhere in the window (a streaming-friendly choice:
    the score rises as soon as the whole keyword is inside).

    ``padding="same"`` (the default) zero-pads every convolution, so every
    time position of the window is kept and the receptive field may reach
    beyond the window's edges (into zeros). ``padding="valid"`` pads nothing:
    each output position depends only on real frames, the blocks shorten the
    sequence by their context, and the window score is the head applied to
    the max over the ``positions(window_frames)`` positions that remain. That
    is what makes it streamable exactly (``DSCNNStream``): a position's value
    never changes once computed, so each hop computes only the new positions
    and keeps the last ones as state. The receptive field must then fit well
    inside the window, leaving several positions for the max pooling (the
    keyword may sit anywhere among them): ``configs/dscnn-stream.json`` uses
    kernel 5 and dilations 1, 2, 2, 2, i.e. 5 + 2 * 4 * 7 = 61 frames
    (0.625 s, enough for a two- or three-syllable wake word; the default
    DS-CNN's reaches about 1.8 s, mostly padding) and leaves 19 positions,
    20 ms apart, over a 1 s window. Per hop of 8 frames a stream computes
    4 new positions per layer instead of the window's 47. The stem's stride
    (2) must divide the detector's hop.

    ``cmn=True`` subtracts the window's mean MFCC first (``remove_window_mean``);
    ``denoise=True`` subtracts the window's steady noise before that
    (``WindowNoiseSubtraction``; ``n_mels`` is the features'). Neither with
    ``padding="valid"``, whose positions must not depend on later frames.
    """

    def __init__(self, n_mfcc: int, n_labels: int, channels: int = 64, n_blocks: int = 4, kernel: int = 9, dropout: float = 0.1,
                 pool: str = "max", padding: str = "same", dilations: list[int] | tuple[int, ...] | None = None, cmn: bool = False,
                 denoise: bool = False, n_mels: int = 0):
        super().__init__()
        self.pool = _check_pool(pool, "dscnn")
        self.cmn = _check_flag(cmn, "dscnn", "cmn")
        self.denoise = WindowNoiseSubtraction(n_mfcc, n_mels) if _check_flag(denoise, "dscnn", "denoise") else None
        for name, on in (("cmn", cmn), ("denoise", denoise)):
            if on and padding == "valid":
                raise ConfigError(f"a valid-padding (streaming) dscnn cannot use {name}: the window's statistics would change "
                                  "every position it has already computed")
        if padding not in PADDINGS:
            raise ConfigError(f"dscnn padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
        dilations = [2 ** min(i, 2) for i in range(n_blocks)] if dilations is None else [int(d) for d in dilations]
        if len(dilations) != n_blocks or min(dilations, default=1) < 1:
            raise ConfigError(f"dscnn dilations must be {n_blocks} positive numbers (one per block), got {dilations}")
        if padding == "valid" and kernel < 2:
            raise ConfigError("a valid-padding dscnn needs kernel >= 2 (its blocks carry dilation * (kernel - 1) positions of state)")
        self.padding = padding
        self.stem_kernel, self.stride = 5, 2
        self.input_norm = nn.BatchNorm1d(n_mfcc)  # learned per-coefficient normalisation
        self.stem = nn.Sequential(
            nn.Conv1d(n_mfcc, channels, self.stem_kernel, stride=self.stride, padding=0 if padding == "valid" else 2, bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(),
        )
        self.blocks = nn.Sequential(*[SeparableBlock(channels, kernel, dilation=d, dropout=dropout, padding=padding) for d in dilations])
        self.head = nn.Linear(channels, n_labels)

    def positions(self, frames: int) -> int:
        """Time positions the blocks output for ``frames`` input frames (what the pooling sees)."""
        if self.padding == "same":
            return (frames - 1) // self.stride + 1
        return (frames - self.stem_kernel) // self.stride + 1 - sum(b.context for b in self.blocks)

    def receptive_field(self) -> int:
        """Input frames one output position of a valid-padding model depends on."""
        return self.stem_kernel + self.stride * sum(b.context for b in self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == "valid" and self.positions(x.shape[1]) < 1:
            raise ConfigError(f"a window of {x.shape[1]} frames is shorter than this valid-padding dscnn's receptive field ({self.receptive_field()} frames)")
        if self.denoise is not None:
            x = self.denoise(x)
        if self.cmn:
            x = remove_window_mean(x)
        x = self.input_norm(x.transpose(1, 2))  # (batch, n_mfcc, frames)
        return pool_and_classify(self.blocks(self.stem(x)), self.head, self.pool)


class DSCNNStream(nn.Module):
    """A valid-padding ``DSCNN`` run hop by hop: ``hop_frames`` new frames and the carried state in, window probabilities and the new state out.

    Equal to the window model on the last ``window_frames`` frames at every
    hop (``deploy.export`` checks it on a real stream before writing). Per
    hop only the ``hop_frames / stride`` new positions of each layer are
    computed. The state (``state_shapes``), all ``(1, channels, 1, length)``:

    - the stem's input history: the last ``stem_context`` normalised frames,
      chosen so that the stem's positions fall where the window model's do;
    - each block's input history: its last ``dilation * (kernel - 1)`` positions;
    - the ring of the last ``positions`` block outputs, which the window
      pools over.

    A stream starts from zero state after ``pad_frames`` zero frames, so that
    hops end at ``window_frames``, ``window_frames + hop_frames``, ...; what
    the zeros touch is never pooled at a scored hop (every pooled position's
    receptive field lies inside the window), so the first score, at
    ``window_frames`` frames, equals the window model's.

    The graph is 2-D convolutions of height 1 (ONNX Runtime's fast kernels,
    see ``deploy.onnxgraph``) on the 1-D model's weights.
    """

    def __init__(self, model: DSCNN, window_frames: int, hop_frames: int):
        super().__init__()
        if getattr(model, "padding", None) != "valid":
            raise ConfigError("only a dscnn with padding='valid' can stream with carried state")
        if hop_frames % model.stride:
            raise ConfigError(f"the hop ({hop_frames} frames) must be a multiple of the stem's stride ({model.stride})")
        self.model = model
        self.window_frames, self.hop_frames = window_frames, hop_frames
        self.positions = model.positions(window_frames)
        if self.positions < 1:
            raise ConfigError(f"the {window_frames}-frame window is shorter than the model's receptive field ({model.receptive_field()} frames)")
        k, s = model.stem_kernel, model.stride
        self.stem_context = window_frames - s * ((window_frames - k) // s) - s  # the window's last stem position ends its input
        self.pad_frames = (-window_frames) % hop_frames

    def input_shape(self) -> tuple[int, int, int, int]:
        """The new frames of one hop, transposed to the graph's layout: ``(1, n_mfcc, 1, hop_frames)``."""
        return (1, self.model.input_norm.num_features, 1, self.hop_frames)

    def state_shapes(self) -> list[tuple[int, int, int, int]]:
        m = self.model
        channels, n_mfcc = m.head.in_features, m.input_norm.num_features
        return [(1, n_mfcc, 1, self.stem_context)] + [(1, channels, 1, b.context) for b in m.blocks] + [(1, channels, 1, self.positions)]

    @staticmethod
    def _norm(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)

    @staticmethod
    def _conv(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, conv.weight.unsqueeze(2), None, (1, conv.stride[0]), 0, (1, conv.dilation[0]), conv.groups)

    def forward(self, frames: torch.Tensor, *states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``frames`` ``(1, n_mfcc, 1, hop_frames)`` (the new frames, transposed) and the states; the window logits and the new states.

        Written for few graph nodes, since per hop the graph's arithmetic is
        small next to ONNX Runtime's cost per node: the residual adds the
        block's new input (not a slice of the concatenation), a state as long
        as the new positions is the new input itself, max pooling reduces
        straight to ``(1, channels)``.
        """
        m = self.model
        x = self._norm(m.input_norm, frames)
        new = []
        x = self._keep(states[0], x, self.stem_context, new)
        stem_conv, stem_norm = m.stem[0], m.stem[1]
        x = torch.relu(self._norm(stem_norm, self._conv(stem_conv, x)))
        for block, state in zip(m.blocks, states[1:-1]):
            seen = self._keep(state, x, block.context, new)
            x = x + torch.relu(self._norm(block.norm, self._conv(block.pointwise, self._conv(block.depthwise, seen))))
        self._keep(states[-1], x, self.positions, new)
        ring = new[-1]  # the last positions: what the window pools over
        logits = m.head(ring.amax(dim=(2, 3))) if m.pool == "max" else pool_and_classify(ring.squeeze(2), m.head, m.pool)
        return (logits, *new)

    @staticmethod
    def _keep(state: torch.Tensor, x: torch.Tensor, length: int, new: list) -> torch.Tensor:
        """``state`` followed by ``x`` along time; appends its last ``length`` positions (the next state) to ``new``."""
        joined = torch.cat([state, x], dim=3)
        new.append(x if length == x.shape[3] else joined[..., -length:])
        return joined


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

    ``cmn=True`` subtracts the window's mean MFCC first (``remove_window_mean``);
    ``denoise=True`` subtracts the window's steady noise before that (``WindowNoiseSubtraction``).
    """

    def __init__(self, n_mfcc: int, n_labels: int, channels: list[int] | tuple[int, ...] = (16, 24, 32, 48), kernel: int = 9,
                 first_kernel: int = 3, dropout: float = 0.1, pool: str = "avg", cmn: bool = False, denoise: bool = False,
                 n_mels: int = 0):
        super().__init__()
        channels = [int(c) for c in channels]
        if len(channels) < 2 or min(channels) < 1:
            raise ConfigError(f"tcresnet channels must list at least two positive widths, got {channels}")
        if kernel < 1 or kernel % 2 == 0 or first_kernel < 1 or first_kernel % 2 == 0:
            raise ConfigError(f"tcresnet kernels must be odd and positive (same padding), got {kernel} and {first_kernel}")
        self.pool = _check_pool(pool, "tcresnet")
        self.cmn = _check_flag(cmn, "tcresnet", "cmn")
        self.denoise = WindowNoiseSubtraction(n_mfcc, n_mels) if _check_flag(denoise, "tcresnet", "denoise") else None
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
        if self.denoise is not None:
            x = self.denoise(x)
        if self.cmn:
            x = remove_window_mean(x)
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
