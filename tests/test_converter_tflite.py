"""The TFLite converter: NHWC -> NCHW layout, TF 'SAME' padding, batch freedom, clear errors.

The reference everywhere is a plain numpy convolution written from TF's definition (NHWC input,
output channel c*M + m of a depthwise conv reads input channel c, 'SAME' pads with the odd pixel
after), so a wrong transpose or symmetric padding shows up as a numeric mismatch.
"""

from __future__ import annotations

import flatbuffers
import numpy as np
import pytest
import tflite
import torch

from lowkey_engine.faces.graphnet import OPS, GraphNet
from lowkey_weights.converters.tflite import (
    NHWC_TO_NCHW,
    UnsupportedTfliteError,
    conv_kernel_to_oihw,
    depthwise_kernel_to_oihw,
    explicit_padding,
    nhwc_operand_to_nchw,
    tflite_to_graph,
)
from lowkey_weights.fetch import cache_dir

ATOL = 1e-4
SAME, VALID = tflite.Padding.SAME, tflite.Padding.VALID

# (input HxW, kernel HxW, stride, dilation, padding mode, expected [top, bottom, left, right]).
# Worked out by hand from TF's rule: out = ceil(in / stride), the odd pad pixel goes bottom/right.
PADDING_CASES = [
    ((9, 10), (3, 3), (2, 2), (1, 1), SAME, [1, 1, 0, 1]),
    ((9, 10), (2, 3), (2, 2), (1, 1), SAME, [0, 1, 0, 1]),
    ((8, 7), (3, 3), (1, 1), (2, 2), SAME, [2, 2, 2, 2]),
    ((7, 6), (4, 4), (1, 1), (1, 1), SAME, [1, 2, 1, 2]),
    ((6, 8), (3, 3), (1, 2), (1, 1), SAME, [1, 1, 0, 1]),
    ((6, 7), (3, 2), (2, 1), (1, 1), VALID, [0, 0, 0, 0]),
]


def reference_conv_nhwc(x, kernel_hwio, bias, stride, dilation, pads):
    """Direct NHWC convolution: x (N, H, W, Cin), dense kernel (kh, kw, Cin, Cout)."""
    top, bottom, left, right = pads
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    kh, kw = kernel_hwio.shape[:2]
    out_h = (padded.shape[1] - (kh - 1) * dilation[0] - 1) // stride[0] + 1
    out_w = (padded.shape[2] - (kw - 1) * dilation[1] - 1) // stride[1] + 1
    out = np.zeros((x.shape[0], out_h, out_w, kernel_hwio.shape[3]), dtype=np.float64)
    for a in range(kh):
        for b in range(kw):
            rows = padded[:, a * dilation[0]::stride[0], b * dilation[1]::stride[1], :][:, :out_h, :out_w]
            out += rows @ kernel_hwio[a, b]
    return out + bias


def depthwise_as_dense(kernel_1hwc, in_channels):
    """TF's depthwise kernel (1, kh, kw, C*M) as a dense (kh, kw, C, C*M) kernel."""
    _, kh, kw, out_channels = kernel_1hwc.shape
    multiplier = out_channels // in_channels
    dense = np.zeros((kh, kw, in_channels, out_channels), dtype=kernel_1hwc.dtype)
    for o in range(out_channels):
        dense[:, :, o // multiplier, o] = kernel_1hwc[0, :, :, o]
    return dense


def to_nchw(x_nhwc):
    return torch.from_numpy(np.ascontiguousarray(x_nhwc)).permute(*NHWC_TO_NCHW)


def to_nhwc(x_nchw):
    return x_nchw.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("in_hw, kernel_hw, stride, dilation, mode, expected", PADDING_CASES)
def test_explicit_padding_follows_tf_same_rule(in_hw, kernel_hw, stride, dilation, mode, expected):
    assert explicit_padding(mode, in_hw, kernel_hw, stride, dilation) == expected


@pytest.mark.parametrize("in_hw, kernel_hw, stride, dilation, mode, pads", PADDING_CASES)
@pytest.mark.parametrize("depthwise", [False, True], ids=["conv", "depthwise"])
def test_converted_kernels_and_pads_match_nhwc_reference(in_hw, kernel_hw, stride, dilation, mode,
                                                          pads, depthwise):
    rng = np.random.default_rng(0)
    in_channels, out_channels = 4, 8        # depthwise: multiplier 2
    x = rng.standard_normal((2, *in_hw, in_channels)).astype(np.float32)
    bias = rng.standard_normal(out_channels).astype(np.float32)
    if depthwise:
        kernel = rng.standard_normal((1, *kernel_hw, out_channels)).astype(np.float32)
        dense, weight = depthwise_as_dense(kernel, in_channels), depthwise_kernel_to_oihw(kernel)
        groups = in_channels
    else:
        kernel = rng.standard_normal((out_channels, *kernel_hw, in_channels)).astype(np.float32)   # OHWI
        dense, weight, groups = kernel.transpose(1, 2, 3, 0), conv_kernel_to_oihw(kernel), 1
    expected = reference_conv_nhwc(x, dense, bias, stride, dilation, pads)
    if mode == SAME:
        assert expected.shape[1:3] == tuple(-(-s // st) for s, st in zip(in_hw, stride))
    got = OPS["conv2d"](to_nchw(x), torch.from_numpy(weight), torch.from_numpy(bias), stride=stride,
                        padding=explicit_padding(mode, in_hw, kernel_hw, stride, dilation),
                        dilation=dilation, groups=groups)
    np.testing.assert_allclose(to_nhwc(got), expected, atol=ATOL)


@pytest.mark.parametrize("constant_shape", [(), (5,), (1, 1, 5), (4, 1), (3, 4, 5), (1, 3, 1, 5)])
def test_broadcast_constants_follow_the_layout_change(constant_shape):
    rng = np.random.default_rng(1)
    activation = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)    # NHWC
    constant = rng.standard_normal(constant_shape).astype(np.float32)
    got = to_nchw(activation) * torch.from_numpy(nhwc_operand_to_nchw(constant))
    np.testing.assert_allclose(to_nhwc(got), activation * constant, rtol=1e-6)


# --- whole-model conversion of a tiny hand-written .tflite file ----------------------------------

#: numpy dtype name -> TFLite tensor type, for the tensors TinyTfliteWriter stores.
_TENSOR_TYPES = {"int32": tflite.TensorType.INT32, "float16": tflite.TensorType.FLOAT16}


class TinyTfliteWriter:
    """Writes a one-subgraph .tflite flatbuffer: float32 tensors, builtin ops, fixed batch."""

    def __init__(self):
        self.tensors: list[tuple[str, list[int], np.ndarray | None]] = []
        self.ops: list[tuple[int, list[int], list[int], int, object]] = []

    def tensor(self, name: str, shape: list[int], data: np.ndarray | None = None) -> int:
        self.tensors.append((name, list(shape), data))
        return len(self.tensors) - 1

    def op(self, code: int, inputs: list[int], outputs: list[int], options_type: int = 0,
           options=None) -> None:
        """`options(builder) -> offset` writes the op's options table (or None)."""
        self.ops.append((code, inputs, outputs, options_type, options))

    def build(self, inputs: list[int], outputs: list[int]) -> bytes:
        b = flatbuffers.Builder(1024)

        def int_vector(values):
            return b.CreateNumpyVector(np.asarray(values, dtype=np.int32))

        def table_vector(start, offsets):
            start(b, len(offsets))
            for offset in reversed(offsets):
                b.PrependUOffsetTRelative(offset)
            return b.EndVector()

        buffers = []
        for data in [None] + [t[2] for t in self.tensors]:      # buffer 0: the empty sentinel
            raw = None if data is None else b.CreateNumpyVector(np.frombuffer(data.tobytes(), np.uint8))
            tflite.BufferStart(b)
            if raw is not None:
                tflite.BufferAddData(b, raw)
            buffers.append(tflite.BufferEnd(b))
        tensors = []
        for i, (name, shape, data) in enumerate(self.tensors):
            name_offset, shape_offset = b.CreateString(name), int_vector(shape)
            tflite.TensorStart(b)
            tflite.TensorAddShape(b, shape_offset)
            tflite.TensorAddType(b, _TENSOR_TYPES.get(None if data is None else data.dtype.name,
                                                      tflite.TensorType.FLOAT32))
            tflite.TensorAddBuffer(b, i + 1 if data is not None else 0)
            tflite.TensorAddName(b, name_offset)
            tensors.append(tflite.TensorEnd(b))
        codes = sorted({op[0] for op in self.ops})
        operators = []
        for code, op_inputs, op_outputs, options_type, options in self.ops:
            in_offset, out_offset = int_vector(op_inputs), int_vector(op_outputs)
            options_offset = options(b) if options else None
            tflite.OperatorStart(b)
            tflite.OperatorAddOpcodeIndex(b, codes.index(code))
            tflite.OperatorAddInputs(b, in_offset)
            tflite.OperatorAddOutputs(b, out_offset)
            if options_offset is not None:
                tflite.OperatorAddBuiltinOptionsType(b, options_type)
                tflite.OperatorAddBuiltinOptions(b, options_offset)
            operators.append(tflite.OperatorEnd(b))
        opcodes = []
        for code in codes:
            tflite.OperatorCodeStart(b)
            tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
            tflite.OperatorCodeAddBuiltinCode(b, code)
            tflite.OperatorCodeAddVersion(b, 1)
            opcodes.append(tflite.OperatorCodeEnd(b))
        tensors_vec = table_vector(tflite.SubGraphStartTensorsVector, tensors)
        ops_vec = table_vector(tflite.SubGraphStartOperatorsVector, operators)
        inputs_vec, outputs_vec = int_vector(inputs), int_vector(outputs)
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, tensors_vec)
        tflite.SubGraphAddOperators(b, ops_vec)
        tflite.SubGraphAddInputs(b, inputs_vec)
        tflite.SubGraphAddOutputs(b, outputs_vec)
        subgraph = tflite.SubGraphEnd(b)
        subgraphs_vec = table_vector(tflite.ModelStartSubgraphsVector, [subgraph])
        codes_vec = table_vector(tflite.ModelStartOperatorCodesVector, opcodes)
        buffers_vec = table_vector(tflite.ModelStartBuffersVector, buffers)
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, 3)
        tflite.ModelAddOperatorCodes(b, codes_vec)
        tflite.ModelAddSubgraphs(b, subgraphs_vec)
        tflite.ModelAddBuffers(b, buffers_vec)
        b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def conv_options(depthwise: bool, padding: int, stride: int, activation: int, multiplier: int = 1):
    prefix = "DepthwiseConv2DOptions" if depthwise else "Conv2DOptions"

    def write(b):
        getattr(tflite, prefix + "Start")(b)
        getattr(tflite, prefix + "AddPadding")(b, padding)
        getattr(tflite, prefix + "AddStrideH")(b, stride)
        getattr(tflite, prefix + "AddStrideW")(b, stride)
        getattr(tflite, prefix + "AddFusedActivationFunction")(b, activation)
        if depthwise:
            tflite.DepthwiseConv2DOptionsAddDepthMultiplier(b, multiplier)
        return getattr(tflite, prefix + "End")(b)
    return write


FIXED_BATCH = 2   # like the expo MobileFaceNet: a batch written into every tensor shape
IN_HW, CHANNELS, CONV_OUT, MULTIPLIER, OUT_HW = (9, 10), 3, 4, 2, (5, 5)


@pytest.fixture(scope="module")
def tiny_model():
    """conv 3x3 stride 2 SAME + fused RELU6 -> depthwise 3x3 x2 SAME -> TF-style PReLU
    (relu(x) + a * (x - |x|)) -> reshape to a flat vector. Returns (file bytes, weights)."""
    rng = np.random.default_rng(2)
    w = {"conv": rng.standard_normal((CONV_OUT, 3, 3, CHANNELS)).astype(np.float32),
         "conv_bias": rng.standard_normal(CONV_OUT).astype(np.float32),
         "dw": rng.standard_normal((1, 3, 3, CONV_OUT * MULTIPLIER)).astype(np.float32),
         "dw_bias": rng.standard_normal(CONV_OUT * MULTIPLIER).astype(np.float32),
         "alpha": rng.uniform(0.05, 0.3, CONV_OUT * MULTIPLIER).astype(np.float32)}
    depth = CONV_OUT * MULTIPLIER
    flat = OUT_HW[0] * OUT_HW[1] * depth
    t = TinyTfliteWriter()

    def act(name, c):
        return t.tensor(name, [FIXED_BATCH, *OUT_HW, c])

    x = t.tensor("input", [FIXED_BATCH, *IN_HW, CHANNELS])
    conv_out, dw_out = act("conv", CONV_OUT), act("dw", depth)
    relu, absolute, diff, scaled, prelu = (act(n, depth) for n in ("relu", "abs", "sub", "mul", "add"))
    out = t.tensor("output", [FIXED_BATCH, flat])
    t.op(tflite.BuiltinOperator.CONV_2D,
         [x, t.tensor("k", w["conv"].shape, w["conv"]), t.tensor("b", [CONV_OUT], w["conv_bias"])],
         [conv_out], tflite.BuiltinOptions.Conv2DOptions,
         conv_options(False, SAME, 2, tflite.ActivationFunctionType.RELU6))
    t.op(tflite.BuiltinOperator.DEPTHWISE_CONV_2D,
         [conv_out, t.tensor("dk", w["dw"].shape, w["dw"]), t.tensor("db", [depth], w["dw_bias"])],
         [dw_out], tflite.BuiltinOptions.DepthwiseConv2DOptions,
         conv_options(True, SAME, 1, tflite.ActivationFunctionType.NONE, MULTIPLIER))
    t.op(tflite.BuiltinOperator.RELU, [dw_out], [relu])
    t.op(tflite.BuiltinOperator.ABS, [dw_out], [absolute])
    t.op(tflite.BuiltinOperator.SUB, [dw_out, absolute], [diff])
    t.op(tflite.BuiltinOperator.MUL, [t.tensor("alpha", [depth], w["alpha"]), diff], [scaled])
    t.op(tflite.BuiltinOperator.ADD, [relu, scaled], [prelu])
    shape = np.array([FIXED_BATCH, flat], dtype=np.int32)
    t.op(tflite.BuiltinOperator.RESHAPE, [prelu, t.tensor("shape", [2], shape)], [out])
    return t.build([x], [out]), w


def tiny_model_reference(x, w):
    """The tiny model computed in NHWC with numpy, from TF's definitions."""
    conv = reference_conv_nhwc(x, w["conv"].transpose(1, 2, 3, 0), w["conv_bias"], (2, 2), (1, 1),
                               [1, 1, 0, 1])
    conv = np.clip(conv, 0, 6)
    dw = reference_conv_nhwc(conv, depthwise_as_dense(w["dw"], CONV_OUT), w["dw_bias"], (1, 1), (1, 1),
                             [1, 1, 1, 1])
    prelu = np.maximum(dw, 0) + w["alpha"] * (dw - np.abs(dw))
    return prelu.reshape(len(x), -1)


@pytest.mark.parametrize("batch", [1, 3])
def test_tiny_model_converts_to_the_same_function_at_any_batch(tiny_model, batch):
    data, w = tiny_model
    net = GraphNet(tflite_to_graph(data)).eval()
    x = np.random.default_rng(3).standard_normal((batch, *IN_HW, CHANNELS)).astype(np.float32)
    with torch.no_grad():
        got = net(to_nchw(x)).numpy()
    np.testing.assert_allclose(got, tiny_model_reference(x, w), atol=ATOL)


def test_tiny_model_checkpoint_records_shapes_without_the_fixed_batch(tiny_model):
    checkpoint = tflite_to_graph(tiny_model[0])
    assert checkpoint["meta"]["input_shape"] == [CHANNELS, *IN_HW]
    assert checkpoint["meta"]["output_shape"] == [OUT_HW[0] * OUT_HW[1] * CONV_OUT * MULTIPLIER]
    reshapes = [n for n in checkpoint["nodes"] if n["op"] == "reshape"]
    assert reshapes and all(FIXED_BATCH not in n["attrs"]["shape"][:1] for n in reshapes)


def test_unsupported_op_is_named_in_the_error():
    t = TinyTfliteWriter()
    x, y = t.tensor("input", [1, 4]), t.tensor("output", [1, 4])
    t.op(tflite.BuiltinOperator.SOFTMAX, [x], [y])
    with pytest.raises(UnsupportedTfliteError, match="SOFTMAX"):
        tflite_to_graph(t.build([x], [y]))


def pool_options(padding: int, size: int, stride: int):
    def write(b):
        tflite.Pool2DOptionsStart(b)
        tflite.Pool2DOptionsAddPadding(b, padding)
        tflite.Pool2DOptionsAddStrideH(b, stride)
        tflite.Pool2DOptionsAddStrideW(b, stride)
        tflite.Pool2DOptionsAddFilterHeight(b, size)
        tflite.Pool2DOptionsAddFilterWidth(b, size)
        return tflite.Pool2DOptionsEnd(b)
    return write


MESH_LIKE_HW, MESH_LIKE_CHANNELS, MESH_LIKE_PAD = (7, 8), 3, 2


@pytest.fixture(scope="module")
def mesh_like_model():
    """The ops MediaPipe's face mesh adds, in its pattern: a float16 kernel behind DEQUANTIZE ->
    conv 1x1 -> PRELU (slope shaped (1, 1, C)) -> 2x2 max pool stride 2 SAME (odd width) -> zero
    PAD of the channels -> two outputs (the pooled-and-padded map, and the conv's first pixel is
    not needed: a second output straight from the PRELU). Returns (file bytes, weights)."""
    rng = np.random.default_rng(5)
    c = MESH_LIKE_CHANNELS
    w = {"kernel": rng.standard_normal((c, 1, 1, c)).astype(np.float16),
         "alpha": rng.uniform(0.05, 0.5, (1, 1, c)).astype(np.float32)}
    h, wd = MESH_LIKE_HW
    t = TinyTfliteWriter()
    x = t.tensor("input", [1, h, wd, c])
    half = t.tensor("kernel_f16", [c, 1, 1, c], w["kernel"])
    kernel = t.tensor("kernel", [c, 1, 1, c])
    conv, prelu = t.tensor("conv", [1, h, wd, c]), t.tensor("prelu", [1, h, wd, c])
    pooled = t.tensor("pooled", [1, (h + 1) // 2, (wd + 1) // 2, c])
    padded = t.tensor("padded", [1, (h + 1) // 2, (wd + 1) // 2, c + MESH_LIKE_PAD])
    pads = np.array([[0, 0], [0, 0], [0, 0], [0, MESH_LIKE_PAD]], dtype=np.int32)
    t.op(tflite.BuiltinOperator.DEQUANTIZE, [half], [kernel])
    t.op(tflite.BuiltinOperator.CONV_2D, [x, kernel], [conv], tflite.BuiltinOptions.Conv2DOptions,
         conv_options(False, SAME, 1, tflite.ActivationFunctionType.NONE))
    t.op(tflite.BuiltinOperator.PRELU, [conv, t.tensor("alpha", [1, 1, c], w["alpha"])], [prelu])
    t.op(tflite.BuiltinOperator.MAX_POOL_2D, [prelu], [pooled], tflite.BuiltinOptions.Pool2DOptions,
         pool_options(SAME, 2, 2))
    t.op(tflite.BuiltinOperator.PAD, [pooled, t.tensor("pads", [4, 2], pads)], [padded])
    return t.build([x], [padded, prelu]), w


def mesh_like_reference(x, w):
    """The mesh-like model in NHWC numpy: both outputs flattened in NHWC order, concatenated."""
    conv = x @ w["kernel"].astype(np.float32)[:, 0, 0, :].T
    prelu = np.where(conv >= 0, conv, conv * w["alpha"])
    h, wd = prelu.shape[1:3]
    padded = np.pad(prelu, ((0, 0), (0, h % 2), (0, wd % 2), (0, 0)), constant_values=-np.inf)
    pooled = padded.reshape(len(x), (h + 1) // 2, 2, (wd + 1) // 2, 2, -1).max(axis=(2, 4))
    widened = np.pad(pooled, ((0, 0), (0, 0), (0, 0), (0, MESH_LIKE_PAD)))
    return np.concatenate([widened.reshape(len(x), -1), prelu.reshape(len(x), -1)], axis=1)


@pytest.mark.parametrize("batch", [1, 2])
def test_dequantize_prelu_pool_pad_and_two_outputs_convert_exactly(mesh_like_model, batch):
    data, w = mesh_like_model
    checkpoint = tflite_to_graph(data)
    h, wd = MESH_LIKE_HW
    pooled_size = ((h + 1) // 2) * ((wd + 1) // 2) * (MESH_LIKE_CHANNELS + MESH_LIKE_PAD)
    assert checkpoint["meta"]["outputs"] == [{"name": "padded", "size": pooled_size},
                                             {"name": "prelu", "size": h * wd * MESH_LIKE_CHANNELS}]
    x = np.random.default_rng(6).standard_normal((batch, h, wd, MESH_LIKE_CHANNELS)).astype(np.float32)
    with torch.no_grad():
        got = GraphNet(checkpoint).eval()(to_nchw(x)).numpy()
    np.testing.assert_allclose(got, mesh_like_reference(x, w), atol=ATOL)


def test_dequantize_of_an_activation_is_refused():
    t = TinyTfliteWriter()
    x, y = t.tensor("input", [1, 4]), t.tensor("output", [1, 4])
    t.op(tflite.BuiltinOperator.DEQUANTIZE, [x], [y])
    with pytest.raises(UnsupportedTfliteError, match="DEQUANTIZE"):
        tflite_to_graph(t.build([x], [y]))


# --- the real file, when a fetch has put it in the cache -------------------------------------------

REAL_MODEL = cache_dir() / "files" / "mfn-expo" / "model.tflite"


@pytest.mark.skipif(not REAL_MODEL.is_file(), reason="mfn-expo not fetched (lowkey weights fetch mfn-expo)")
def test_real_mobilefacenet_is_batch_free_and_input_sensitive():
    net = GraphNet(tflite_to_graph(REAL_MODEL.read_bytes())).eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 112, 112, generator=generator) * 2 - 1   # range after (x*255-127.5)/128
    with torch.no_grad():
        batch = net(x)
        alone = torch.cat([net(x[i:i + 1]) for i in range(len(x))])
    assert batch.shape == (3, 192)
    torch.testing.assert_close(batch, alone, atol=1e-4, rtol=1e-4)
    cosine = torch.nn.functional.normalize(batch, dim=1) @ torch.nn.functional.normalize(batch, dim=1).T
    assert cosine[0, 1] < 0.99 and cosine[1, 2] < 0.99
