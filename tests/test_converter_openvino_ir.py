"""The OpenVINO IR converter, checked against OpenVINO's own runtime (the `openvino` package).

On Intel's face-reidentification-retail-0095 (from the local mirror): real aligned LFW faces and
random input, batches of several faces. On small IRs built here with OpenVINO's opset API and saved
with FP16 weights: the ops and padding modes the Intel file does not use, and the refusals.
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import pytest
import torch
import torch.nn.functional as F
from openvino import opset13 as ops

from lowkey_engine.faces.graphnet import GraphNet
from lowkey_engine.faces.recognizers import SPECS, Recognizer
from lowkey_weights.converters.openvino_ir import OpenVinoConversionError, convert_ir
from lowkey_weights.manifest import load_manifest

MODEL_ID = "face-reid-0095"
#: Converted graph vs OpenVINO: max |difference| over max |OpenVINO output|. Both compute in float32
#: from the same FP16 weights; measured about 1.2e-6 on the Intel model.
RELATIVE_TOLERANCE = 1e-5
#: OpenVINO's CPU plugin may compute in bf16/f16 where the CPU has it; the reference must not.
OPENVINO_F32 = {"INFERENCE_PRECISION_HINT": "f32"}
REAL_FACES = 6
RANDOM_BATCH = 3
PIXEL_MAX = 255.0

# Small IR built here: 8x8 input so that 'same_upper' with stride 2 pads asymmetrically (0, 1).
SMALL_INPUT = (1, 3, 8, 8)
SMALL_CHANNELS = 4


def run_openvino(model: ov.Model, x: np.ndarray) -> np.ndarray:
    """OpenVINO's float32 CPU output for a batch `x`, reshaping the model to its batch size."""
    model.reshape([x.shape[0], *model.input().get_partial_shape().to_shape()[1:]])
    compiled = ov.Core().compile_model(model, "CPU", OPENVINO_F32)
    return compiled(x)[0]


def relative_difference(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(got - expected).max() / np.abs(expected).max())


@pytest.fixture(scope="module")
def intel_files(weights_mirror) -> dict[str, bytes]:
    """The IR's two files as the manifest names them in the mirror ("graph", "weights")."""
    return {f.name: (weights_mirror / f.mirror).read_bytes() for f in load_manifest()[MODEL_ID].files}


@pytest.fixture(scope="module")
def converted(intel_files) -> dict:
    return convert_ir(intel_files["graph"], intel_files["weights"])


@pytest.fixture(scope="module")
def intel_openvino(intel_files) -> ov.Model:
    return ov.Core().read_model(model=intel_files["graph"], weights=ov.Tensor(
        np.frombuffer(intel_files["weights"], dtype=np.uint8)))


def test_intel_model_matches_openvino_on_random_batches(converted, intel_openvino):
    x = np.random.default_rng(0).uniform(0, PIXEL_MAX, (RANDOM_BATCH, 3, 128, 128)).astype(np.float32)
    expected = run_openvino(intel_openvino, x)
    with torch.no_grad():
        got = GraphNet(converted)(torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape == (RANDOM_BATCH, 256, 1, 1)
    print(f"{MODEL_ID} vs OpenVINO, random input: max |difference| {np.abs(got - expected).max():.2e}, "
          f"relative {relative_difference(got, expected):.2e}")
    assert relative_difference(got, expected) <= RELATIVE_TOLERANCE


def test_intel_model_matches_openvino_on_aligned_faces(converted, intel_openvino, lfw_faces):
    """The whole recognizer (alignment, BGR 0..255, network, normalisation) against OpenVINO fed
    the same aligned faces the way Intel's demos feed it: BGR pixels 0..255, no scaling."""
    recognizer = Recognizer(SPECS[MODEL_ID], GraphNet(converted)).eval()
    with torch.no_grad():
        faces = recognizer.align(lfw_faces.images[:REAL_FACES].float() / PIXEL_MAX,
                                 lfw_faces.landmarks[:REAL_FACES])
        got = recognizer(faces).numpy()
        raw = GraphNet(converted)(faces.flip(1) * PIXEL_MAX).numpy()
    expected = run_openvino(intel_openvino, (faces.flip(1) * PIXEL_MAX).numpy())
    print(f"{MODEL_ID} vs OpenVINO, aligned faces: max |difference| {np.abs(raw - expected).max():.2e}, "
          f"relative {relative_difference(raw, expected):.2e}")
    assert relative_difference(raw, expected) <= RELATIVE_TOLERANCE
    flat = expected.reshape(REAL_FACES, -1)
    unit = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    np.testing.assert_allclose(got, unit, atol=RELATIVE_TOLERANCE, rtol=0)


def test_intel_model_is_folded(converted):
    """FP16 constants and their Converts leave float32 tensors, no nodes; each conv's bias Add is
    inside the conv."""
    nodes = converted["nodes"]
    assert all(t.dtype == torch.float32 for t in converted["tensors"].values())
    conv_outputs = {n["output"] for n in nodes if n["op"] == "conv2d"}
    assert not [n for n in nodes if n["op"] == "add" and n["inputs"][0] in conv_outputs
                and n["inputs"][1] in converted["tensors"]]
    assert {n["op"] for n in nodes} <= {"conv2d", "prelu", "add", "mul", "sigmoid", "avg_pool2d"}


# --- small IRs built here -------------------------------------------------------------------------

def constant(rng: np.random.Generator, *shape: int, low: float = -1.0, high: float = 1.0) -> ov.Node:
    return ops.constant(rng.uniform(low, high, shape).astype(np.float32))


def small_model(rng: np.random.Generator) -> ov.Model:
    """conv (same_upper, stride 2) + bias -> depthwise conv -> per-channel PReLU -> ReLU ->
    squeeze-excitation by ReduceMean -> average pool (pads not counted) -> Reshape [1, -1] (a fixed
    batch of 1) -> Subtract a constant -> Multiply by a constant computed from constants."""
    x = ops.parameter(SMALL_INPUT, np.float32, name="x")
    conv = ops.convolution(x, constant(rng, SMALL_CHANNELS, 3, 3, 3), [2, 2], [0, 0], [0, 0], [1, 1],
                           auto_pad="same_upper")
    biased = ops.add(conv, constant(rng, 1, SMALL_CHANNELS, 1, 1))
    depthwise = ops.group_convolution(biased, constant(rng, SMALL_CHANNELS, 1, 1, 3, 3), [1, 1], [1, 1],
                                      [1, 1], [1, 1])
    activated = ops.relu(ops.prelu(depthwise, constant(rng, SMALL_CHANNELS, low=0.05, high=0.5)))
    gate = ops.sigmoid(ops.reduce_mean(activated, ops.constant(np.array([2, 3], dtype=np.int64)), True))
    pooled = ops.avg_pool(ops.multiply(activated, gate), [1, 1], [1, 1], [1, 1], [3, 3], exclude_pad=True)
    flat = ops.reshape(pooled, ops.constant(np.array([1, -1], dtype=np.int64)), False)
    features = SMALL_CHANNELS * (SMALL_INPUT[2] // 2) * (SMALL_INPUT[3] // 2)
    shifted = ops.subtract(flat, constant(rng, 1, features))
    scale = ops.add(constant(rng, 1, features, low=0.5, high=1.5), constant(rng, 1, features))
    return ov.Model([ops.multiply(shifted, scale)], [x], "small")


def saved_fp16(model: ov.Model, tmp_path) -> tuple[bytes, bytes, ov.Model]:
    """The IR files of `model` with FP16 weights (as Intel ships its file), and the model read back."""
    ov.save_model(model, tmp_path / "small.xml", compress_to_fp16=True)
    graph, weights = (tmp_path / "small.xml").read_bytes(), (tmp_path / "small.bin").read_bytes()
    assert b'element_type="f16"' in graph
    return graph, weights, ov.Core().read_model(tmp_path / "small.xml")


def test_small_ir_matches_openvino_one_face_at_a_time_and_batched(tmp_path):
    rng = np.random.default_rng(1)
    graph, weights, model = saved_fp16(small_model(rng), tmp_path)
    net = GraphNet(convert_ir(graph, weights))
    x = rng.uniform(-1, 1, (RANDOM_BATCH, *SMALL_INPUT[1:])).astype(np.float32)
    # The IR's Reshape [1, -1] admits one face per run; the converted graph takes any batch.
    expected = np.concatenate([run_openvino(model, x[i:i + 1]) for i in range(RANDOM_BATCH)])
    with torch.no_grad():
        got = net(torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape
    assert relative_difference(got, expected) <= RELATIVE_TOLERANCE
    assert not any(node["op"] == "identity" for node in net.nodes)


def test_same_upper_padding_puts_the_odd_pixel_last(tmp_path):
    rng = np.random.default_rng(2)
    kernel = rng.uniform(-1, 1, (SMALL_CHANNELS, 3, 3, 3)).astype(np.float32)
    x = ops.parameter(SMALL_INPUT, np.float32, name="x")
    conv = ops.convolution(x, ops.constant(kernel), [2, 2], [0, 0], [0, 0], [1, 1], auto_pad="same_upper")
    ov.save_model(ov.Model([conv], [x]), tmp_path / "conv.xml", compress_to_fp16=False)
    net = GraphNet(convert_ir((tmp_path / "conv.xml").read_bytes(), (tmp_path / "conv.bin").read_bytes()))
    pixels = torch.rand(2, *SMALL_INPUT[1:])
    with torch.no_grad():
        expected = F.conv2d(F.pad(pixels, (0, 1, 0, 1)), torch.from_numpy(kernel), stride=2)
        torch.testing.assert_close(net(pixels), expected, atol=1e-5, rtol=1e-5)


def test_unsupported_layer_types_are_named(tmp_path):
    x = ops.parameter(SMALL_INPUT, np.float32, name="x")
    ov.save_model(ov.Model([ops.elu(ops.elu(x, 1.0), 1.0)], [x]), tmp_path / "elu.xml")
    with pytest.raises(OpenVinoConversionError, match=r"Elu \(x2\)"):
        convert_ir((tmp_path / "elu.xml").read_bytes(), (tmp_path / "elu.bin").read_bytes())


def test_reshape_that_moves_the_batch_is_refused(tmp_path):
    x = ops.parameter(SMALL_INPUT, np.float32, name="x")
    channels_first = ops.reshape(x, ops.constant(np.array([SMALL_INPUT[1], -1], dtype=np.int64)), False)
    ov.save_model(ov.Model([channels_first], [x]), tmp_path / "reshape.xml")
    with pytest.raises(OpenVinoConversionError, match="batch"):
        convert_ir((tmp_path / "reshape.xml").read_bytes(), (tmp_path / "reshape.bin").read_bytes())


def test_weights_that_do_not_fit_the_bin_are_refused(intel_files):
    with pytest.raises(OpenVinoConversionError, match=r"do not hold f16 .* inside a \.bin"):
        convert_ir(intel_files["graph"], intel_files["weights"][:-2])
