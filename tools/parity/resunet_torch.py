"""PyTorch reference of the SpherosegV4 ResUNet, plus deterministic parity weights.

The network follows shared/spec/backend-contract.md section 5. It is written for the
parity tools, not copied from the old service, but its ``state_dict`` keys, shapes and
key order are those of the old service's checkpoints:

* ``ResidualBlock(i, o)``: ``conv1`` (3x3, pad 1, no bias) -> ``gn1`` GroupNorm -> ReLU
  -> dropout -> ``conv2`` (3x3, no bias) -> ``gn2`` -> + residual (``adjust_channels``,
  a 1x1 no-bias conv, only when ``i != o``) -> ReLU -> ``se`` squeeze-excitation
  (mean over H, W -> ``fc.0`` Linear(o, o // 16, no bias) -> ReLU -> ``fc.2``
  Linear(o // 16, o, no bias) -> sigmoid -> channel scale).
* ``downs.k``: ResidualBlocks in_channels -> features[0] -> ... -> features[-1], each
  followed by a 2x2 max-pool (the skip is taken before the pool);
  ``bottleneck`` = ResidualBlock(features[-1], 2 * features[-1]).
* Decoder, for f in reversed(features), k = 0, 1, ...: ``ups.{2k}`` =
  ConvTranspose2d(2f, f, 2, stride 2); ``attentions.k`` gates the skip with
  ``W_g``/``W_x`` (1x1 conv f -> f // 2 with bias + BatchNorm2d) and ``psi`` (1x1 conv
  f // 2 -> 1 with bias + BatchNorm2d(1) + sigmoid): ``skip * psi(relu(W_g(g) + W_x(skip)))``;
  ``ups.{2k+1}`` = ResidualBlock(2f, f) on ``cat(gated_skip, x)``.
* ``final_conv``: Conv2d(features[0], out_channels, 1) with bias, giving logits.

Key order: the old model registers ``ups`` before ``downs`` and ``attentions``, then
``bottleneck`` and ``final_conv``; ``ResUNet.__init__`` below keeps that order, so
``state_dict()`` lists ``ups.*``, ``downs.*``, ``attentions.*``, ``bottleneck.*``,
``final_conv.*``. The Rust ``resunet_state_dict_shapes`` lists the same order.

Parity weight formula, version ``parity-v2`` (re-implemented bit for bit in Rust by
``spheromesh_inference::test_utils::parity_value``)
---------------------------------------------------------------------------------------
For every state-dict entry ``name`` (no ``module.`` prefix) of shape ``shape`` with
``n`` elements, in row-major (C) order, index ``i = 0 .. n-1``:

1. ``h`` = FNV-1a 32-bit hash of the UTF-8 bytes of ``name``: ``h = 2166136261``;
   for each byte ``b``: ``h = ((h ^ b) * 16777619) mod 2**32``.
2. ``phase = (h % 10007) / 10007 * 2 * pi`` (float64).
3. ``t = sin(phase + 12.9898 * i + 78.233) * 43758.5453``, ``base[i] = 2 * (t - floor(t)) - 1``
   (float64; ``i`` as float64): hash-like values in [-1, 1). (``parity-v2`` used the smooth
   ``sin(phase + 1.2345 i) cos(0.5 + 0.0173 i)``, whose correlated features made the network
   ill-conditioned: PyTorch's own float32 output differed from float64 by 1.5e-4, above the
   1e-4 parity bound. With ``parity-v2`` that difference is 1.6e-6.)
4. The value, computed in float64 and then rounded once to float32:

   * ``.num_batches_tracked``: int64 scalar ``0`` (left as PyTorch creates it);
   * ``ndim >= 2`` (conv, conv-transpose, linear weights):
     ``base * (1.5 / sqrt(n / shape[0]))``;
   * names ending ``.bias``: ``0.1 * base``;
   * 1-d ``.weight`` (GroupNorm / BatchNorm affine): ``1 + 0.2 * base``;
   * ``.running_mean``: ``0.1 * base``; ``.running_var``: ``1 + 0.3 * base``.

   The rules are tried in that order. Evaluation order inside each expression is as
   written (e.g. the scale ``1.5 / sqrt(n / shape[0])`` is formed first, then
   multiplied with ``base``).

Parity input: a ``[1, 3, H, W]`` float32 tensor with flat index ``i`` (row-major):
``x[i] = 0.5 + 0.5 * sin(0.1 * i) * cos(0.013 * i)`` in float64, rounded to float32.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

#: Name of the weight formula above; bump it when the formula changes.
FORMULA_VERSION = "parity-v2"
#: The features of the model the old service ran.
ORIGINAL_FEATURES = [64, 128, 256, 512, 1024]
#: Parameter count of ``ResUNet(3, 1, ORIGINAL_FEATURES)`` (backend-contract.md section 5).
ORIGINAL_PARAMETERS = 132_238_512


class SqueezeExcite(nn.Module):
    """Channel attention: global average pool, bottleneck MLP, sigmoid scale."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = channels // reduction
        # Index 1 is the ReLU and 3 the sigmoid, so the Linear keys are fc.0 and fc.2.
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.ReLU(),
            nn.Linear(hidden, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc(x.mean(dim=(2, 3)))
        return x * scale[:, :, None, None]


class ResidualBlock(nn.Module):
    """Two 3x3 conv + GroupNorm stages with a (projected) identity path and SE."""

    def __init__(self, cin: int, cout: int, gn_groups: int = 32, dropout: float = 0.1) -> None:
        super().__init__()
        # Registration order fixes the state-dict order: conv1, gn1, conv2, gn2,
        # adjust_channels, se.
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.gn1 = nn.GroupNorm(gn_groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.gn2 = nn.GroupNorm(gn_groups, cout)
        self.adjust_channels = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else None
        self.se = SqueezeExcite(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.adjust_channels is None else self.adjust_channels(x)
        y = self.dropout(torch.relu(self.gn1(self.conv1(x))))
        y = torch.relu(self.gn2(self.conv2(y)) + identity)
        return self.se(y)


def _conv1x1_bn(cin: int, cout: int) -> nn.Sequential:
    """1x1 conv with bias followed by BatchNorm2d: keys ``0.weight``, ``0.bias``, ``1.*``."""
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=True), nn.BatchNorm2d(cout))


class AttentionGate(nn.Module):
    """Additive attention gate on a skip connection (Oktay et al., Attention U-Net, 2018)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        inter = channels // 2
        self.W_g = _conv1x1_bn(channels, inter)
        self.W_x = _conv1x1_bn(channels, inter)
        self.psi = nn.Sequential(*_conv1x1_bn(inter, 1), nn.Sigmoid())

    def forward(self, gate: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return skip * self.psi(torch.relu(self.W_g(gate) + self.W_x(skip)))


class ResUNet(nn.Module):
    """Residual U-Net with SE blocks and attention-gated skips (see the module doc)."""

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        features: list[int] | None = None,
        gn_groups: int = 32,
    ) -> None:
        super().__init__()
        features = list(features or ORIGINAL_FEATURES)
        # Same registration order as the old service: ups, downs, attentions, ...
        self.ups = nn.ModuleList()
        self.downs = nn.ModuleList()
        self.attentions = nn.ModuleList()
        cin = in_channels
        for f in features:
            self.downs.append(ResidualBlock(cin, f, gn_groups))
            cin = f
        self.bottleneck = ResidualBlock(features[-1], 2 * features[-1], gn_groups)
        for f in reversed(features):
            self.ups.append(nn.ConvTranspose2d(2 * f, f, 2, stride=2))
            self.ups.append(ResidualBlock(2 * f, f, gn_groups))
            self.attentions.append(AttentionGate(f))
        self.final_conv = nn.Conv2d(features[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
            x = nn.functional.max_pool2d(x, 2, 2)
        x = self.bottleneck(x)
        for k, skip in enumerate(reversed(skips)):
            x = self.ups[2 * k](x)
            gated = self.attentions[k](x, skip)
            x = self.ups[2 * k + 1](torch.cat((gated, x), dim=1))
        return self.final_conv(x)


def fnv1a32(name: str) -> int:
    """FNV-1a 32-bit hash of the UTF-8 bytes of ``name``."""
    h = 2166136261
    for b in name.encode("utf-8"):
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def parity_value(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The ``parity-v2`` float32 values of one state-dict entry (see the module doc)."""
    n = math.prod(shape)
    phase = (fnv1a32(name) % 10007) / 10007 * 2 * math.pi
    i = np.arange(n, dtype=np.float64)
    t = np.sin(phase + 12.9898 * i + 78.233) * 43758.5453
    base = 2 * (t - np.floor(t)) - 1
    if len(shape) >= 2:
        value = base * (1.5 / math.sqrt(n / shape[0]))
    elif name.endswith(".bias"):
        value = 0.1 * base
    elif name.endswith(".weight"):
        value = 1 + 0.2 * base
    elif name.endswith(".running_mean"):
        value = 0.1 * base
    elif name.endswith(".running_var"):
        value = 1 + 0.3 * base
    else:
        raise ValueError(f"no parity rule for {name!r} with shape {shape}")
    return value.astype(np.float32).reshape(shape)


def parity_state_dict(model: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """The model's state dict with every float entry replaced by its parity values."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name, t in model.state_dict().items():
        if name.endswith(".num_batches_tracked"):
            out[name] = torch.zeros((), dtype=torch.int64)
        else:
            out[name] = torch.from_numpy(parity_value(name, tuple(t.shape)))
    return out


def load_parity_weights(model: nn.Module) -> nn.Module:
    """Load the parity weights into ``model`` in place and return it."""
    model.load_state_dict(parity_state_dict(model), strict=True)
    return model


def parity_input(h: int, w: int) -> torch.Tensor:
    """The ``[1, 3, h, w]`` parity input (see the module doc)."""
    i = np.arange(3 * h * w, dtype=np.float64)
    x = 0.5 + 0.5 * np.sin(0.1 * i) * np.cos(0.013 * i)
    return torch.from_numpy(x.astype(np.float32).reshape(1, 3, h, w))


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters (running stats excluded)."""
    return sum(p.numel() for p in model.parameters())
