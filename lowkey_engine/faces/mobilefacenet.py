"""MobileFaceNet (Chen et al. 2018) as trained by bubbliiiing/arcface-pytorch, rebuilt from a converted
checkpoint (format lowkey-mobilefacenet/1).

The layout follows that repository's `nets/mobilefacenet.py` (`get_mbf(128)`), module names
included, with one difference: every batch norm is folded into the convolution before it at
conversion time (weights/converters/mobilefacenet.py), so each convolution carries a bias and there
is no BatchNorm layer; the engine runs in eval mode only, where both compute the same.

Input: 112x112 RGB faces, NCHW, standardised as (x * 255 - 127.5) / 127.5 for pixels x in [0, 1]
(upstream: (x / 255 - 0.5) / 0.5), aligned to the ArcFace template. Output: (N, embedding_dim),
not normalised; `RecognizerSpec` 'mfn-casia' describes that.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

MOBILEFACENET_FORMAT = "lowkey-mobilefacenet/1"

#: Side of the square input the network is built for, pixels: the final 7x7 depthwise "GDC"
#: convolution needs a 7x7 map after the four stride-2 stages (112 / 16 = 7).
INPUT_SIZE = 112
FEATURE_CHANNELS = 512
GDC_KERNEL = INPUT_SIZE // 16

#: The bottleneck stages after the stem: (module name, input channels, output channels, expanded
#: channels, number of blocks, stride). A stride-2 stage is one block without a shortcut; a stride-1
#: stage is `blocks` residual blocks inside a `model` Sequential (upstream's `Residual`).
STAGES = (
    ("conv_23", 64, 64, 128, 1, 2),
    ("conv_3", 64, 64, 128, 4, 1),
    ("conv_34", 64, 128, 256, 1, 2),
    ("conv_4", 128, 128, 256, 6, 1),
    ("conv_45", 128, 128, 512, 1, 2),
    ("conv_5", 128, 128, 256, 2, 1),
)


class ConvUnit(nn.Module):
    """Convolution (batch norm folded in: it has a bias), then a per-channel PReLU unless linear."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1,
                 padding: int = 0, groups: int = 1, linear: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding, groups=groups, bias=True)
        self.prelu = None if linear else nn.PReLU(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return x if self.prelu is None else self.prelu(x)


class Bottleneck(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise (the stride), 1x1 linear projection; plus the
    input when `residual` (stride 1, same channels)."""

    def __init__(self, in_channels: int, out_channels: int, expanded: int, stride: int, residual: bool):
        super().__init__()
        self.conv = ConvUnit(in_channels, expanded)
        self.conv_dw = ConvUnit(expanded, expanded, kernel=3, stride=stride, padding=1, groups=expanded)
        self.project = ConvUnit(expanded, out_channels, linear=True)
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        y = self.project(self.conv_dw(self.conv(x)))
        return x + y if self.residual else y


class ResidualStage(nn.Module):
    """`blocks` stride-1 residual bottlenecks in a Sequential named `model` (upstream's layout)."""

    def __init__(self, channels: int, expanded: int, blocks: int):
        super().__init__()
        self.model = nn.Sequential(*(Bottleneck(channels, channels, expanded, 1, residual=True)
                                     for _ in range(blocks)))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class MobileFaceNet(nn.Module):
    """112x112 standardised RGB (N, 3, 112, 112) -> embeddings (N, embedding_dim), not normalised."""

    def __init__(self, embedding_dim: int = 128):
        super().__init__()
        self.conv1 = ConvUnit(3, 64, kernel=3, stride=2, padding=1)
        self.conv2_dw = ConvUnit(64, 64, kernel=3, padding=1, groups=64)
        for name, in_channels, out_channels, expanded, blocks, stride in STAGES:
            stage = (Bottleneck(in_channels, out_channels, expanded, stride, residual=False) if stride != 1
                     else ResidualStage(out_channels, expanded, blocks))
            self.add_module(name, stage)
        last_channels = STAGES[-1][2]
        self.sep = nn.Conv2d(last_channels, FEATURE_CHANNELS, 1, bias=True)
        self.prelu = nn.PReLU(FEATURE_CHANNELS)
        self.GDC_dw = nn.Conv2d(FEATURE_CHANNELS, FEATURE_CHANNELS, GDC_KERNEL, groups=FEATURE_CHANNELS,
                                bias=True)
        self.features = nn.Conv2d(FEATURE_CHANNELS, embedding_dim, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv2_dw(self.conv1(x))
        for name, *_ in STAGES:
            x = getattr(self, name)(x)
        x = self.GDC_dw(self.prelu(self.sep(x)))
        return self.features(x).flatten(1)


def build_mobilefacenet(checkpoint: dict[str, Any]) -> nn.Module:
    """The MobileFaceNet of a lowkey-mobilefacenet/1 checkpoint; every key and shape must match."""
    if checkpoint.get("format") != MOBILEFACENET_FORMAT:
        raise ValueError(f"not a {MOBILEFACENET_FORMAT} checkpoint: format={checkpoint.get('format')!r}")
    net = MobileFaceNet(int(checkpoint["embedding_dim"]))
    net.load_state_dict(checkpoint["state_dict"])
    return net
