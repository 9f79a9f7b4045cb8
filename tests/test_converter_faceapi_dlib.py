"""The face-api.js dlib ResNet converter, checked against a hand-written NHWC reference of
face-api's TypeScript forward pass on small random weights in face-api's naming. No network, no
real model file: the reference uses TF's layouts (NHWC activations, HWIO kernels) directly, so a
wrong kernel transpose, a mis-wired shortcut or padding on the wrong side makes these fail."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lowkey_engine.faces.graphnet import GraphNet
from lowkey_engine.faces.nets import load_net
from lowkey_weights.converters import faceapi_dlib
from lowkey_weights.converters.faceapi_dlib import (
    INPUT_SIZE, RESIDUAL_BLOCKS, STEM_BLOCK, FaceRecognitionNetBuilder, FeatureMap, build_checkpoint,
)

#: Tiny widths for the four stages (real: 32, 64, 128, 256); each down-sampling block doubles them.
STAGE_WIDTHS = {"conv32": 2, "conv64": 4, "conv128": 8, "conv256": 16}
DESCRIPTOR_DIM = 5                      # real: 128
STEM_KERNEL, BLOCK_KERNEL = 7, 3
TOLERANCE = 1e-4                        # float32 graph vs float64 reference, relative to output scale


# ---- reference: face-api's forward pass, NHWC, float64 ------------------------------------------

def tf_conv(x: torch.Tensor, kernel_hwio: torch.Tensor, stride: int, padding: str) -> torch.Tensor:
    """tf.conv2d on NHWC with an HWIO kernel, written as a sum of shifted matrix products."""
    size_h, size_w = kernel_hwio.shape[:2]
    if padding == "same":
        pad_h, pad_w = size_h - 1, size_w - 1             # stride 1: total padding, split low-first
        x = torch.nn.functional.pad(x, (0, 0, pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    out_h = (x.shape[1] - size_h) // stride + 1
    out_w = (x.shape[2] - size_w) // stride + 1
    out = x.new_zeros(x.shape[0], out_h, out_w, kernel_hwio.shape[3])
    for dy in range(size_h):
        for dx in range(size_w):
            patch = x[:, dy:dy + stride * (out_h - 1) + 1:stride, dx:dx + stride * (out_w - 1) + 1:stride, :]
            out += patch @ kernel_hwio[dy, dx]
    return out


def tf_pool(x: torch.Tensor, size: int, stride: int, reduce) -> torch.Tensor:
    """'valid' pooling on NHWC; `reduce` combines the stacked window values along dim 0."""
    out_h = (x.shape[1] - size) // stride + 1
    out_w = (x.shape[2] - size) // stride + 1
    windows = [x[:, dy:dy + stride * (out_h - 1) + 1:stride, dx:dx + stride * (out_w - 1) + 1:stride, :]
               for dy in range(size) for dx in range(size)]
    return reduce(torch.stack(windows))


def ref_conv_layer(x, w, prefix, stride, relu, padding="same"):
    out = tf_conv(x, w[f"{prefix}/conv/filters"], stride, padding) + w[f"{prefix}/conv/bias"]
    out = out * w[f"{prefix}/scale/weights"] + w[f"{prefix}/scale/biases"]
    return out.relu() if relu else out


def ref_residual(x, w, prefix):
    out = ref_conv_layer(x, w, f"{prefix}/conv1", 1, True)
    out = ref_conv_layer(out, w, f"{prefix}/conv2", 1, False)
    return (out + x).relu()


def ref_residual_down(x, w, prefix):
    out = ref_conv_layer(x, w, f"{prefix}/conv1", 2, True, padding="valid")
    out = ref_conv_layer(out, w, f"{prefix}/conv2", 1, False)
    pooled = tf_pool(x, 2, 2, lambda s: s.mean(0))
    if pooled.shape[1:3] != out.shape[1:3]:             # one zero row at the bottom, column at the right
        out = torch.cat([out, out.new_zeros(out.shape[0], 1, out.shape[2], out.shape[3])], 1)
        out = torch.cat([out, out.new_zeros(out.shape[0], out.shape[1], 1, out.shape[3])], 2)
    if pooled.shape[3] != out.shape[3]:
        pooled = torch.cat([pooled, torch.zeros_like(pooled)], 3)
    return (pooled + out).relu()


def ref_network(x_nhwc, w):
    out = ref_conv_layer(x_nhwc, w, STEM_BLOCK, 2, True, padding="valid")
    out = tf_pool(out, 3, 2, lambda s: s.amax(0))
    for prefix, down in RESIDUAL_BLOCKS:
        out = ref_residual_down(out, w, prefix) if down else ref_residual(out, w, prefix)
    return out.mean((1, 2)) @ w["fc"]


# ---- random weights in face-api's naming --------------------------------------------------------

def conv_layer_weights(rng, prefix, kernel, in_channels, out_channels) -> dict[str, np.ndarray]:
    fan_in = kernel * kernel * in_channels
    return {
        f"{prefix}/conv/filters": rng.normal(0, 1 / np.sqrt(fan_in), (kernel, kernel, in_channels, out_channels)),
        f"{prefix}/conv/bias": rng.normal(0, 0.1, out_channels),
        f"{prefix}/scale/weights": rng.uniform(0.5, 1.5, out_channels),
        f"{prefix}/scale/biases": rng.normal(0, 0.1, out_channels),
    }


def residual_weights(rng, prefix, in_channels, out_channels):
    return {**conv_layer_weights(rng, f"{prefix}/conv1", BLOCK_KERNEL, in_channels, out_channels),
            **conv_layer_weights(rng, f"{prefix}/conv2", BLOCK_KERNEL, out_channels, out_channels)}


def network_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    width = STAGE_WIDTHS["conv32"]
    weights = conv_layer_weights(rng, STEM_BLOCK, STEM_KERNEL, 3, width)
    for prefix, _ in RESIDUAL_BLOCKS:
        out_width = STAGE_WIDTHS[prefix.split("_")[0]]
        weights.update(residual_weights(rng, prefix, width, out_width))
        width = out_width
    weights["fc"] = rng.normal(0, 1 / np.sqrt(width), (width, DESCRIPTOR_DIM))
    return {name: value.astype(np.float32) for name, value in weights.items()}


def as_float64(weights):
    return {name: torch.from_numpy(value).double() for name, value in weights.items()}


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = expected.abs().max().item()
    assert scale > 0
    assert (actual.double() - expected).abs().max().item() <= TOLERANCE * scale


# ---- tests ---------------------------------------------------------------------------------------

def run_block(weights, build, channels: int, side: int, x_nchw: torch.Tensor) -> torch.Tensor:
    """Build one block with FaceRecognitionNetBuilder and run it as a GraphNet."""
    builder = FaceRecognitionNetBuilder(weights)
    out = build(builder, FeatureMap(builder.graph.input_name, channels, side))
    with torch.no_grad():
        return GraphNet(builder.graph.checkpoint(out.name)).eval()(x_nchw), out


def test_residual_block_matches_reference():
    rng = np.random.default_rng(1)
    weights = residual_weights(rng, "block", 3, 3)
    x = torch.from_numpy(rng.normal(size=(2, 9, 9, 3)))                       # NHWC
    ours, feature = run_block(weights, lambda b, f: b.residual(f, "block"), 3, 9,
                              x.permute(0, 3, 1, 2).float())
    expected = ref_residual(x, as_float64(weights), "block")
    assert (feature.channels, feature.side) == (3, 9)
    assert_close(ours, expected.permute(0, 3, 1, 2))


@pytest.mark.parametrize("side", [8, 9])               # even side: the conv branch gets zero-padded
def test_down_sampling_block_matches_reference(side):
    rng = np.random.default_rng(side)
    weights = residual_weights(rng, "down", 2, 4)
    x = torch.from_numpy(rng.normal(size=(2, side, side, 2)))
    ours, feature = run_block(weights, lambda b, f: b.residual_down(f, "down"), 2, side,
                              x.permute(0, 3, 1, 2).float())
    expected = ref_residual_down(x, as_float64(weights), "down")
    assert ours.shape == expected.permute(0, 3, 1, 2).shape
    assert (feature.channels, feature.side) == (4, side // 2)
    assert_close(ours, expected.permute(0, 3, 1, 2))


def write_tfjs(weights: dict[str, np.ndarray], folder: Path) -> dict[str, Path]:
    """A float32 TF.js weights manifest plus its .bin, as face-api ships them (uint8 there)."""
    entries = [{"name": name, "shape": list(value.shape), "dtype": "float32"} for name, value in weights.items()]
    manifest, shard = folder / "model-weights_manifest.json", folder / "model.bin"
    manifest.write_text(json.dumps([{"paths": [shard.name], "weights": entries}]))
    shard.write_bytes(b"".join(value.astype("<f4").tobytes() for value in weights.values()))
    return {"manifest": manifest, "weights": shard}


def test_convert_runs_face_api_network(tmp_path):
    weights = network_weights()
    output = tmp_path / "dlib-resnet.pt"
    faceapi_dlib.convert(write_tfjs(weights, tmp_path), output)
    net = load_net(output).eval()
    x = torch.from_numpy(np.random.default_rng(2).normal(size=(2, INPUT_SIZE, INPUT_SIZE, 3)))
    with torch.no_grad():
        ours = net(x.permute(0, 3, 1, 2).float())
    expected = ref_network(x, as_float64(weights))
    assert ours.shape == (2, DESCRIPTOR_DIM)
    assert_close(ours, expected)
    # The two faces differ, and the graph keeps them apart (no batch mixing).
    with torch.no_grad():
        alone = net(x[1:].permute(0, 3, 1, 2).float())
    assert_close(alone, expected[1:])


def test_unused_or_missing_weights_are_refused():
    weights = network_weights()
    with pytest.raises(ValueError, match="not used"):
        build_checkpoint({**weights, "extra/tensor": np.zeros(3, np.float32)})
    del weights["conv64_2/conv2/scale/biases"]
    with pytest.raises(KeyError, match="conv64_2/conv2/scale/biases"):
        build_checkpoint(weights)
