"""dlib's ResNet face descriptor, from face-api.js's TF.js port to a graph checkpoint.

face-api.js (`faceRecognitionNet`) runs dlib's `dlib_face_recognition_resnet_model_v1` with the
batch norms folded into per-channel "scale" layers. The network, on a 150x150 face chip, NHWC there
and NCHW here:

    conv 7x7 stride 2 'valid' (32) + scale + ReLU, max pool 3x3 stride 2 'valid'
    3 x residual(32)
    residual_down(64)  + 3 x residual(64)
    residual_down(128) + 2 x residual(128)
    residual_down(256) + 2 x residual(256) + residual_down(256)
    mean over height and width -> fully connected 256 -> 128 (no bias)

residual(x):      relu(scale(conv3x3(relu(scale(conv3x3(x))))) + x), both convs 'same', stride 1.
residual_down(x): the same with a first conv of stride 2 'valid'; the shortcut is a 2x2 stride 2
                  average pool of x with zero channels appended when the block widens, and where the
                  pooled map is one pixel taller/wider than the conv branch, that branch gets a row
                  of zeros at the bottom and a column at the right (dlib's add_prev does the same).

Input normalisation (the recognizer spec's job, not the graph's): RGB, (pixel_0_255 - mean_rgb) / 255.
Weights: HWIO kernels become OIHW; each scale layer is folded into its conv's weight and bias.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lowkey_engine.faces.graphnet import GraphBuilder

from .tfjs_weights import read_weights

#: Side of the face chip the network takes, pixels (face-api resizes every input to this).
INPUT_SIZE = 150
INPUT_CHANNELS = 3
#: Stem: 7x7 conv of stride 2, then a 3x3 max pool of stride 2, both 'valid'.
STEM_STRIDE = 2
STEM_POOL_KERNEL = 3
STEM_POOL_STRIDE = 2
#: Down-sampling blocks: first conv and shortcut average pool both have stride 2.
DOWN_STRIDE = 2
#: face-api's parameter name of the stem and of the final fully connected layer.
STEM_BLOCK = "conv32_down"
FC_WEIGHT = "fc"
#: The residual blocks in the order face-api's forward pass runs them: (name, is_down_sampling).
RESIDUAL_BLOCKS: tuple[tuple[str, bool], ...] = (
    ("conv32_1", False), ("conv32_2", False), ("conv32_3", False),
    ("conv64_down", True), ("conv64_1", False), ("conv64_2", False), ("conv64_3", False),
    ("conv128_down", True), ("conv128_1", False), ("conv128_2", False),
    ("conv256_down", True), ("conv256_1", False), ("conv256_2", False),
    ("conv256_down_out", True),
)


def _output_side(side: int, kernel: int, stride: int, pad: int = 0) -> int:
    """Output side of a conv or pool with `pad` pixels on each side (0: 'valid')."""
    return (side + 2 * pad - kernel) // stride + 1


@dataclass(frozen=True)
class FeatureMap:
    """A value of the graph being built: its name, channels and (square) side in pixels."""

    name: str
    channels: int
    side: int


class FaceRecognitionNetBuilder:
    """Walks face-api's network, emitting GraphNet nodes."""

    def __init__(self, weights: dict[str, np.ndarray]):
        self.weights = weights
        self.used: set[str] = set()
        self.graph = GraphBuilder()

    def _take(self, name: str) -> Tensor:
        if name not in self.weights:
            raise KeyError(f"face-api weights lack {name!r}")
        self.used.add(name)
        return torch.from_numpy(np.ascontiguousarray(self.weights[name], dtype=np.float32))

    def conv_layer(self, x: FeatureMap, prefix: str, *, stride: int, relu: bool) -> FeatureMap:
        """face-api's convLayer: conv (+bias) then scale (x*weights+biases), optional ReLU.
        Stride 1 pads 'same' (kernel // 2 each side, odd kernels), stride > 1 is 'valid'."""
        kernel_hwio = self._take(f"{prefix}/conv/filters")
        bias = self._take(f"{prefix}/conv/bias")
        scale = self._take(f"{prefix}/scale/weights")
        shift = self._take(f"{prefix}/scale/biases")
        kernel = kernel_hwio.permute(3, 2, 0, 1)                    # HWIO -> OIHW
        out_channels, in_channels, kernel_side, _ = kernel.shape
        if in_channels != x.channels:
            raise ValueError(f"{prefix}: kernel takes {in_channels} channels, input has {x.channels}")
        folded_weight = kernel * scale.reshape(-1, 1, 1, 1)
        folded_bias = bias * scale + shift
        pad = kernel_side // 2 if stride == 1 else 0
        out = self.graph.add("conv2d", [x.name, self.graph.const(folded_weight, f"{prefix}/weight"),
                                        self.graph.const(folded_bias, f"{prefix}/bias")],
                             stride=[stride, stride], padding=[pad, pad, pad, pad])
        if relu:
            out = self.graph.add("relu", [out])
        return FeatureMap(out, out_channels, _output_side(x.side, kernel_side, stride, pad))

    def residual(self, x: FeatureMap, prefix: str) -> FeatureMap:
        out = self.conv_layer(x, f"{prefix}/conv1", stride=1, relu=True)
        out = self.conv_layer(out, f"{prefix}/conv2", stride=1, relu=False)
        summed = self.graph.add("add", [out.name, x.name])
        return FeatureMap(self.graph.add("relu", [summed]), out.channels, out.side)

    def residual_down(self, x: FeatureMap, prefix: str) -> FeatureMap:
        out = self.conv_layer(x, f"{prefix}/conv1", stride=DOWN_STRIDE, relu=True)
        out = self.conv_layer(out, f"{prefix}/conv2", stride=1, relu=False)
        shortcut = self._pooled_shortcut(x, prefix, out.channels)
        branch = out.name
        if shortcut.side != out.side:
            grow = shortcut.side - out.side                         # 1 where x's side is even
            branch = self.graph.add("pad", [branch], padding=[0, grow, 0, grow])
        summed = self.graph.add("add", [branch, shortcut.name])
        return FeatureMap(self.graph.add("relu", [summed]), out.channels, shortcut.side)

    def _pooled_shortcut(self, x: FeatureMap, prefix: str, out_channels: int) -> FeatureMap:
        """2x2 stride 2 average pool of x, then zero channels up to out_channels. When channels
        grow, both are one fixed conv: weight[o, i] = 1/4 where o == i, else 0."""
        side = _output_side(x.side, DOWN_STRIDE, DOWN_STRIDE)
        if out_channels == x.channels:
            name = self.graph.add("avg_pool2d", [x.name], kernel=[DOWN_STRIDE, DOWN_STRIDE],
                                  stride=[DOWN_STRIDE, DOWN_STRIDE])
            return FeatureMap(name, out_channels, side)
        if out_channels < x.channels:
            raise ValueError(f"{prefix}: a down-sampling block cannot narrow {x.channels} -> {out_channels}")
        window = DOWN_STRIDE * DOWN_STRIDE
        weight = torch.zeros(out_channels, x.channels, DOWN_STRIDE, DOWN_STRIDE)
        weight[torch.arange(x.channels), torch.arange(x.channels)] = 1.0 / window
        name = self.graph.add("conv2d", [x.name, self.graph.const(weight, f"{prefix}/shortcut")],
                              stride=[DOWN_STRIDE, DOWN_STRIDE])
        return FeatureMap(name, out_channels, side)

    def network(self) -> str:
        """The whole forward pass; returns the name of the (N, 128) descriptor."""
        x = FeatureMap(self.graph.input_name, INPUT_CHANNELS, INPUT_SIZE)
        x = self.conv_layer(x, STEM_BLOCK, stride=STEM_STRIDE, relu=True)
        pooled = self.graph.add("max_pool2d", [x.name], kernel=[STEM_POOL_KERNEL, STEM_POOL_KERNEL],
                                stride=[STEM_POOL_STRIDE, STEM_POOL_STRIDE])
        x = FeatureMap(pooled, x.channels, _output_side(x.side, STEM_POOL_KERNEL, STEM_POOL_STRIDE))
        for prefix, down in RESIDUAL_BLOCKS:
            x = self.residual_down(x, prefix) if down else self.residual(x, prefix)
        averaged = self.graph.add("mean", [x.name], dims=[2, 3])
        fc = self._take(FC_WEIGHT)                                  # (in, out) -> linear's (out, in)
        return self.graph.add("linear", [averaged, self.graph.const(fc.t(), FC_WEIGHT)])


def build_checkpoint(weights: dict[str, np.ndarray]) -> dict:
    """Graph checkpoint of face-api's recognition net from its decoded weights (face-api's names,
    TF layouts). Input (N, 3, 150, 150) normalised RGB; output (N, 128), not normalised."""
    converter = FaceRecognitionNetBuilder(weights)
    output = converter.network()
    unused = sorted(set(weights) - converter.used)
    if unused:
        raise ValueError(f"face-api weights not used by the network: {unused}")
    return converter.graph.checkpoint(output, source="face-api.js faceRecognitionNet (dlib ResNet)",
                                      input_size=INPUT_SIZE)


def convert(files: dict[str, Path], output: Path) -> None:
    """files: 'manifest' (face_recognition_model-weights_manifest.json), 'weights' (its .bin)."""
    manifest = json.loads(Path(files["manifest"]).read_text())
    weights = read_weights(manifest, [files["weights"]])
    torch.save(build_checkpoint(weights), output)
