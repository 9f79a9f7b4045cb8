"""The ONNX converter, on small ONNX models built here: converted graphs must compute what the ONNX
ops define (checked against torch.nn.functional written out by hand), for any batch size."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from lowkey_engine.faces.graphnet import GraphNet
from lowkey_engine.faces.nets import load_net
from lowkey_weights.converters.onnx import OnnxConversionError, convert, convert_model

OPSET = 13
INPUT_SHAPE = (1, 3, 8, 8)                 # N, C, H, W as exported: a fixed batch of 1
CONV_CHANNELS = 4
CONV_PADS = [1, 0, 2, 1]                   # ONNX order: top, left, bottom, right (asymmetric on purpose)
CONV_STRIDE = 2
BN_EPSILON = 1e-3
EMBEDDING_DIM = 5
GEMM_ALPHA, GEMM_BETA = 0.5, 2.0
TOLERANCE = 1e-5


def _model(nodes, initializers: dict[str, np.ndarray], output_shape,
           input_shape=INPUT_SHAPE) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(output_shape))],
        [numpy_helper.from_array(value, name) for name, value in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    return model


def _embedding_model(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """conv (asymmetric pads, stride 2) -> batch norm -> PReLU -> Reshape [1, -1] -> Gemm."""
    out_h = (INPUT_SHAPE[2] + CONV_PADS[0] + CONV_PADS[2] - 3) // CONV_STRIDE + 1
    out_w = (INPUT_SHAPE[3] + CONV_PADS[1] + CONV_PADS[3] - 3) // CONV_STRIDE + 1
    features = CONV_CHANNELS * out_h * out_w
    w = {
        "conv_w": rng.standard_normal((CONV_CHANNELS, INPUT_SHAPE[1], 3, 3)),
        "conv_b": rng.standard_normal(CONV_CHANNELS),
        "bn_gamma": rng.uniform(0.5, 1.5, CONV_CHANNELS),
        "bn_beta": rng.standard_normal(CONV_CHANNELS),
        "bn_mean": rng.standard_normal(CONV_CHANNELS),
        "bn_var": rng.uniform(0.5, 2.0, CONV_CHANNELS),
        "slope": rng.uniform(0.05, 0.5, (CONV_CHANNELS, 1, 1)),
        "shape": np.array([1, -1], dtype=np.int64),
        "fc_w": rng.standard_normal((EMBEDDING_DIM, features)),      # (out, in): transB = 1
        "fc_b": rng.standard_normal(EMBEDDING_DIM),
    }
    w = {k: v if v.dtype == np.int64 else v.astype(np.float32) for k, v in w.items()}
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["conv"], kernel_shape=[3, 3],
                         pads=CONV_PADS, strides=[CONV_STRIDE, CONV_STRIDE]),
        helper.make_node("BatchNormalization", ["conv", "bn_gamma", "bn_beta", "bn_mean", "bn_var"],
                         ["bn"], epsilon=BN_EPSILON),
        helper.make_node("PRelu", ["bn", "slope"], ["act"]),
        helper.make_node("Reshape", ["act", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["output"], transB=1,
                         alpha=GEMM_ALPHA, beta=GEMM_BETA),
    ]
    return _model(nodes, w, (1, EMBEDDING_DIM)), w


def _reference(x: torch.Tensor, w: dict[str, np.ndarray]) -> torch.Tensor:
    """The same network written directly with torch, following the ONNX op definitions."""
    t = {k: torch.from_numpy(v) for k, v in w.items()}
    top, left, bottom, right = CONV_PADS
    y = F.conv2d(F.pad(x, (left, right, top, bottom)), t["conv_w"], t["conv_b"], stride=CONV_STRIDE)
    y = (y - t["bn_mean"][:, None, None]) / torch.sqrt(t["bn_var"][:, None, None] + BN_EPSILON)
    y = y * t["bn_gamma"][:, None, None] + t["bn_beta"][:, None, None]
    y = torch.where(y >= 0, y, y * t["slope"])
    y = y.reshape(y.shape[0], -1)
    return GEMM_ALPHA * y @ t["fc_w"].T + GEMM_BETA * t["fc_b"]


@pytest.mark.parametrize("batch", [1, 3])
def test_converted_model_matches_torch_reference(tmp_path, batch):
    rng = np.random.default_rng(batch)
    model, weights = _embedding_model(rng)
    source, converted = tmp_path / "model.onnx", tmp_path / "model.pt"
    onnx.save(model, source)
    convert({"model": source}, converted)
    net = load_net(converted)
    x = torch.from_numpy(rng.standard_normal((batch, *INPUT_SHAPE[1:])).astype(np.float32))
    with torch.no_grad():
        got = net(x)
        expected = _reference(x, weights)
    assert got.shape == (batch, EMBEDDING_DIM)
    torch.testing.assert_close(got, expected, atol=TOLERANCE, rtol=TOLERANCE)


def test_each_face_embeds_the_same_alone_or_in_a_batch():
    rng = np.random.default_rng(7)
    model, _ = _embedding_model(rng)
    net = GraphNet(convert_model(model))
    x = torch.from_numpy(rng.standard_normal((4, *INPUT_SHAPE[1:])).astype(np.float32))
    with torch.no_grad():
        together = net(x)
        alone = torch.cat([net(x[i:i + 1]) for i in range(len(x))])
    torch.testing.assert_close(together, alone, atol=TOLERANCE, rtol=TOLERANCE)


def test_view_by_computed_batch_size_converts():
    """PyTorch exports `x.view(x.size(0), -1) @ W` as Shape -> Gather -> Unsqueeze -> Concat ->
    Reshape -> MatMul, with a symbolic batch; the shape arithmetic folds away."""
    rng = np.random.default_rng(3)
    features = int(np.prod(INPUT_SHAPE[1:]))
    projection = rng.standard_normal((features, EMBEDDING_DIM)).astype(np.float32)
    constants = {"batch_axis": np.array(0, dtype=np.int64), "axes": np.array([0], dtype=np.int64),
                 "rest": np.array([-1], dtype=np.int64), "projection": projection}
    nodes = [
        helper.make_node("Shape", ["input"], ["input_shape"]),
        helper.make_node("Gather", ["input_shape", "batch_axis"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes"], ["batch_1d"]),
        helper.make_node("Concat", ["batch_1d", "rest"], ["target"], axis=0),
        helper.make_node("Reshape", ["input", "target"], ["flat"]),
        helper.make_node("MatMul", ["flat", "projection"], ["output"]),
    ]
    model = _model(nodes, constants, ("N", EMBEDDING_DIM), input_shape=("N", *INPUT_SHAPE[1:]))
    net = GraphNet(convert_model(model))
    x = torch.from_numpy(rng.standard_normal((2, *INPUT_SHAPE[1:])).astype(np.float32))
    with torch.no_grad():
        got = net(x)
    torch.testing.assert_close(got, x.reshape(2, -1) @ torch.from_numpy(projection),
                               atol=TOLERANCE, rtol=TOLERANCE)
    assert {node["op"] for node in net.nodes} == {"reshape", "matmul"}


def test_unsupported_op_is_named():
    nodes = [helper.make_node("LRN", ["input"], ["output"], size=3)]
    with pytest.raises(OnnxConversionError, match=r"LRN \(x1\)"):
        convert_model(_model(nodes, {}, INPUT_SHAPE))


def test_reshape_that_moves_the_batch_is_refused():
    channels_first = np.array([INPUT_SHAPE[1], -1], dtype=np.int64)   # (1, 3, 8, 8) -> (3, 64)
    nodes = [helper.make_node("Reshape", ["input", "shape"], ["output"])]
    model = _model(nodes, {"shape": channels_first}, (INPUT_SHAPE[1], 64))
    with pytest.raises(OnnxConversionError, match="batch"):
        convert_model(model)
