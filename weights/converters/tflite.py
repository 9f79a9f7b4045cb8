"""Converts a float32 TFLite model (a `.tflite` flatbuffer) into a GraphNet graph checkpoint.

TFLite lays activations out NHWC, conv kernels OHWI and depthwise kernels 1HW(C*M); GraphNet runs
NCHW. So every rank-4 activation is held NCHW in the graph, kernels are transposed once here,
constants that broadcast against a rank-4 activation are permuted the same way, and TF's 'SAME'
padding becomes explicit (top, bottom, left, right) pads computed from the model's tensor shapes.
The batch size written into the model's shapes (the expo MobileFaceNet says 2) never reaches the
graph: the input takes any batch and every reshape keeps dimension 0 free.

Only the first subgraph is converted, only float32 weights or float16 weights behind a DEQUANTIZE
(MediaPipe's face mesh stores them so: they are folded into float32 constants here); an op without
a rule below raises `UnsupportedTfliteError` naming it. A model with several outputs (the face mesh
gives landmarks and a face score) becomes one graph output: each output flattened in TFLite's element
order, concatenated along dimension 1, with `meta["outputs"]` naming each part and its size. The
file is read with the `tflite` package (the flatbuffer schema in pure Python), at fetch time only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import tflite
import torch

from lowkey_engine.faces.graphnet import GraphBuilder, GraphNet

#: Axis orders between TFLite's NHWC and GraphNet's NCHW.
NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)
#: Rank of the image-like activations that change layout; other ranks keep TFLite's order.
IMAGE_RANK = 4

GRAPH_INPUT = "input"

#: TFLite tensor types this converter reads into numpy (weights must be float32).
_NUMPY_TYPES = {
    tflite.TensorType.FLOAT32: np.dtype("<f4"),
    tflite.TensorType.FLOAT16: np.dtype("<f2"),
    tflite.TensorType.INT32: np.dtype("<i4"),
    tflite.TensorType.INT64: np.dtype("<i8"),
}

#: Fused activation codes -> (GraphNet op, attrs); NONE adds nothing.
_FUSED_ACTIVATIONS: dict[int, tuple[str, dict[str, Any]]] = {
    tflite.ActivationFunctionType.RELU: ("relu", {}),
    tflite.ActivationFunctionType.RELU6: ("relu6", {}),
    tflite.ActivationFunctionType.RELU_N1_TO_1: ("clip", {"min": -1.0, "max": 1.0}),
    tflite.ActivationFunctionType.TANH: ("tanh", {}),
}

#: Element-wise ops that work the same in any layout: TFLite name -> GraphNet op.
_UNARY_OPS = {
    "RELU": "relu", "RELU6": "relu6", "ABS": "abs", "NEG": "neg", "LOGISTIC": "sigmoid",
    "TANH": "tanh", "EXP": "exp", "SQRT": "sqrt", "RSQRT": "rsqrt",
}
#: Broadcasting binary ops: TFLite name -> (GraphNet op, options class holding a fused activation).
_BINARY_OPS = {
    "ADD": ("add", tflite.AddOptions), "SUB": ("sub", tflite.SubOptions),
    "MUL": ("mul", tflite.MulOptions), "DIV": ("div", tflite.DivOptions),
    "MAXIMUM": ("maximum", None), "MINIMUM": ("minimum", None),
}
_RESHAPE_OPS = ("RESHAPE", "SQUEEZE")
_CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")
#: Ops with a rule of their own in `_SubgraphConverter.emit`.
_OTHER_OPS = ("PRELU", "MAX_POOL_2D", "PAD")
#: Folded into constants before the walk (float16 weights -> float32); emits no node.
_DEQUANTIZE = "DEQUANTIZE"
_SUPPORTED_OPS = (frozenset(_CONV_OPS) | _UNARY_OPS.keys() | _BINARY_OPS.keys() | frozenset(_RESHAPE_OPS)
                  | frozenset(_OTHER_OPS) | {_DEQUANTIZE})

_BUILTIN_NAMES = {code: name for name, code in vars(tflite.BuiltinOperator).items()
                  if not name.startswith("_")}


class UnsupportedTfliteError(ValueError):
    """The TFLite file uses something this converter cannot express as a GraphNet graph."""


# --- layout helpers (pure functions; tests check them against a plain NHWC reference) ----------

def conv_kernel_to_oihw(kernel: np.ndarray) -> np.ndarray:
    """TFLite CONV_2D kernel (out, kh, kw, in) -> torch conv2d weight (out, in, kh, kw)."""
    return np.ascontiguousarray(kernel.transpose(0, 3, 1, 2))


def depthwise_kernel_to_oihw(kernel: np.ndarray) -> np.ndarray:
    """TFLite DEPTHWISE_CONV_2D kernel (1, kh, kw, C*M) -> torch weight (C*M, 1, kh, kw) for
    conv2d with groups=C. Both order output channels as c*M + m (input channel c, multiplier m)."""
    if kernel.shape[0] != 1:
        raise UnsupportedTfliteError(f"depthwise kernel of shape {kernel.shape}: expected (1, kh, kw, C*M)")
    return np.ascontiguousarray(kernel[0].transpose(2, 0, 1)[:, None])


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) along one axis: the output has ceil(size / stride)
    positions and any odd leftover goes after (bottom/right), unlike torch's symmetric padding."""
    out = math.ceil(size / stride)
    span = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + span - size, 0)
    return total // 2, total - total // 2


def explicit_padding(padding: int, in_hw: tuple[int, int], kernel_hw: tuple[int, int],
                     stride_hw: tuple[int, int], dilation_hw: tuple[int, int] = (1, 1)) -> list[int]:
    """A TFLite `Padding` enum value as GraphNet's explicit [top, bottom, left, right] pixels."""
    if padding == tflite.Padding.VALID:
        return [0, 0, 0, 0]
    if padding != tflite.Padding.SAME:
        raise UnsupportedTfliteError(f"unknown TFLite padding code {padding}")
    top, bottom = same_padding(in_hw[0], kernel_hw[0], stride_hw[0], dilation_hw[0])
    left, right = same_padding(in_hw[1], kernel_hw[1], stride_hw[1], dilation_hw[1])
    return [top, bottom, left, right]


def nhwc_operand_to_nchw(array: np.ndarray) -> np.ndarray:
    """A constant that broadcasts against an NHWC activation (e.g. per-channel (C,)) reshaped so it
    broadcasts the same way against the NCHW activation (e.g. (1, C, 1, 1))."""
    if array.ndim > IMAGE_RANK:
        raise UnsupportedTfliteError(f"constant of rank {array.ndim} against a rank-4 activation")
    padded = array.reshape((1,) * (IMAGE_RANK - array.ndim) + array.shape)
    return np.ascontiguousarray(padded.transpose(NHWC_TO_NCHW))


# --- the converter --------------------------------------------------------------------------------

class _SubgraphConverter:
    """Walks a TFLite model's first subgraph in order, emitting one or more GraphNet nodes per op."""

    def __init__(self, data: bytes):
        self.model = tflite.Model.GetRootAs(data, 0)
        if self.model.SubgraphsLength() < 1:
            raise UnsupportedTfliteError("TFLite model has no subgraph")
        self.graph = self.model.Subgraphs(0)
        self.builder = GraphBuilder(GRAPH_INPUT)
        self.values: dict[int, str] = {}   # TFLite tensor index -> GraphNet value name
        self.folded: dict[int, np.ndarray] = {}   # DEQUANTIZE outputs -> their float32 constant

    # tensors
    def op_name(self, op: tflite.Operator) -> str:
        code = self.model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == tflite.BuiltinOperator.CUSTOM:
            return f"CUSTOM:{code.CustomCode().decode()}"
        return _BUILTIN_NAMES.get(builtin, f"builtin #{builtin}")

    def tensor_name(self, index: int) -> str:
        return self.graph.Tensors(index).Name().decode()

    def shape(self, index: int) -> list[int]:
        tensor = self.graph.Tensors(index)
        return [int(tensor.Shape(i)) for i in range(tensor.ShapeLength())]

    def constant(self, index: int) -> np.ndarray | None:
        """The tensor's stored data (or its folded DEQUANTIZE value), or None when it is computed
        at run time."""
        if index in self.folded:
            return self.folded[index]
        tensor = self.graph.Tensors(index)
        buffer = self.model.Buffers(tensor.Buffer())
        if buffer is None or buffer.DataLength() == 0:
            return None
        dtype = _NUMPY_TYPES.get(tensor.Type())
        if dtype is None:
            raise UnsupportedTfliteError(
                f"tensor {self.tensor_name(index)!r} has TFLite type {tensor.Type()}: only float32 "
                "models (int32/int64 shapes) convert; quantised models do not")
        return buffer.DataAsNumpy().copy().view(dtype).reshape(self.shape(index))

    def weight(self, index: int, role: str) -> np.ndarray:
        array = self.constant(index)
        if array is None or array.dtype != np.float32:
            raise UnsupportedTfliteError(f"{role} {self.tensor_name(index)!r} must be a float32 constant")
        return array

    def activation(self, index: int) -> str:
        if index not in self.values:
            raise UnsupportedTfliteError(
                f"tensor {self.tensor_name(index)!r} is used before any op produces it (a constant "
                "where an activation is expected?)")
        return self.values[index]

    # ops
    def convert(self) -> dict[str, Any]:
        graph = self.graph
        if graph.InputsLength() != 1 or graph.OutputsLength() < 1:
            raise UnsupportedTfliteError(
                f"expected one input and an output, got {graph.InputsLength()} and {graph.OutputsLength()}")
        operators = [graph.Operators(i) for i in range(graph.OperatorsLength())]
        unsupported = sorted({self.op_name(op) for op in operators} - _SUPPORTED_OPS)
        if unsupported:
            raise UnsupportedTfliteError(f"TFLite ops without a conversion rule: {', '.join(unsupported)}")
        input_index = graph.Inputs(0)
        self.values[input_index] = GRAPH_INPUT
        for op in operators:
            if self.op_name(op) == _DEQUANTIZE:
                self.fold_dequantize(op)
            else:
                self.emit(op)
        output_indices = [graph.Outputs(i) for i in range(graph.OutputsLength())]
        meta: dict[str, Any] = {"source_format": "tflite",
                                "input_shape": _torch_shape(self.shape(input_index))[1:]}
        if len(output_indices) == 1:
            output = self.activation(output_indices[0])
            meta["output_shape"] = _torch_shape(self.shape(output_indices[0]))[1:]
        else:
            output, meta["outputs"] = self.concatenated_outputs(output_indices)
            meta["output_shape"] = [sum(part["size"] for part in meta["outputs"])]
        checkpoint = self.builder.checkpoint(output, **meta)
        _check_output_shape(checkpoint)
        return checkpoint

    def concatenated_outputs(self, indices: list[int]) -> tuple[str, list[dict[str, Any]]]:
        """Several TFLite outputs as one (N, total) value: each flattened in TFLite's (NHWC)
        element order, in the file's output order. Returns the value and [{name, size}, ...]."""
        flat, parts = [], []
        for index in indices:
            shape = self.shape(index)
            value = self.activation(index)
            if len(shape) == IMAGE_RANK:
                value = self.builder.add("permute", [value], dims=list(NCHW_TO_NHWC))
            size = int(np.prod(shape[1:]))
            flat.append(self.builder.add("reshape", [value], shape=[size]))
            parts.append({"name": self.tensor_name(index), "size": size})
        return self.builder.add("concat", flat, dim=1), parts

    def fold_dequantize(self, op: tflite.Operator) -> None:
        """DEQUANTIZE of a stored float16 weight: its float32 value, kept as a constant."""
        array = self.constant(op.Inputs(0))
        if array is None or array.dtype != np.float16:
            raise UnsupportedTfliteError(
                f"DEQUANTIZE of {self.tensor_name(op.Inputs(0))!r}: only stored float16 weights fold")
        self.folded[op.Outputs(0)] = array.astype(np.float32)

    def emit(self, op: tflite.Operator) -> None:
        name = self.op_name(op)
        if name in _CONV_OPS:
            out = self.conv(op, depthwise=name == "DEPTHWISE_CONV_2D")
        elif name in _UNARY_OPS:
            out = self.builder.add(_UNARY_OPS[name], [self.activation(op.Inputs(0))])
        elif name in _BINARY_OPS:
            out = self.binary(op, *_BINARY_OPS[name])
        elif name == "PRELU":
            out = self.prelu(op)
        elif name == "MAX_POOL_2D":
            out = self.max_pool(op)
        elif name == "PAD":
            out = self.pad(op)
        else:   # one of _RESHAPE_OPS (convert() refused anything else)
            out = self.reshape(op)
        self.values[op.Outputs(0)] = out

    def fused_activation(self, value: str, options: Any | None) -> str:
        code = options.FusedActivationFunction() if options is not None else 0
        if code == tflite.ActivationFunctionType.NONE:
            return value
        if code not in _FUSED_ACTIVATIONS:
            raise UnsupportedTfliteError(f"fused activation code {code} has no conversion rule")
        op, attrs = _FUSED_ACTIVATIONS[code]
        return self.builder.add(op, [value], **attrs)

    def conv(self, op: tflite.Operator, depthwise: bool) -> str:
        x_index, kernel_index = op.Inputs(0), op.Inputs(1)
        bias_index = op.Inputs(2) if op.InputsLength() > 2 else -1
        options = _options(op, tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions)
        kernel = self.weight(kernel_index, "kernel")
        in_channels = self.shape(x_index)[3]
        if depthwise:
            weight, groups = depthwise_kernel_to_oihw(kernel), in_channels
        else:
            weight, groups = conv_kernel_to_oihw(kernel), in_channels // kernel.shape[3]
        stride = (options.StrideH(), options.StrideW())
        dilation = (options.DilationHFactor(), options.DilationWFactor())
        padding = explicit_padding(options.Padding(), tuple(self.shape(x_index)[1:3]),
                                   weight.shape[2:], stride, dilation)
        inputs = [self.activation(x_index), self.builder.const(torch.from_numpy(weight), "kernel")]
        if bias_index >= 0:
            inputs.append(self.builder.const(torch.from_numpy(self.weight(bias_index, "bias")), "bias"))
        out = self.builder.add("conv2d", inputs, stride=list(stride), padding=padding,
                               dilation=list(dilation), groups=groups)
        return self.fused_activation(out, options)

    def binary(self, op: tflite.Operator, graph_op: str, options_class: type | None) -> str:
        out_rank = len(self.shape(op.Outputs(0)))
        operands = []
        for index in (op.Inputs(0), op.Inputs(1)):
            array = self.constant(index)
            if array is None:
                if len(self.shape(index)) != out_rank:
                    raise UnsupportedTfliteError(
                        f"{self.op_name(op)} broadcasts activation {self.tensor_name(index)!r} across ranks")
                operands.append(self.activation(index))
            else:
                layout = nhwc_operand_to_nchw if out_rank == IMAGE_RANK else np.ascontiguousarray
                operands.append(self.builder.const(torch.from_numpy(layout(array.astype(np.float32)))))
        if all(name in self.builder.tensors for name in operands):
            raise UnsupportedTfliteError(f"{self.op_name(op)} on two constants (unfolded constant math)")
        out = self.builder.add(graph_op, operands)
        return self.fused_activation(out, _options(op, options_class) if options_class else None)

    def prelu(self, op: tflite.Operator) -> str:
        """PRELU with a per-channel (or single) slope; TFLite stores it shaped (1, 1, C) or (C,)."""
        slope = self.weight(op.Inputs(1), "PReLU slope")
        if any(size != 1 for size in slope.shape[:-1]):
            raise UnsupportedTfliteError(f"PReLU slope of shape {list(slope.shape)}: only per-channel slopes")
        return self.builder.add("prelu", [self.activation(op.Inputs(0)),
                                          self.builder.const(torch.from_numpy(slope.reshape(-1)), "slope")])

    def max_pool(self, op: tflite.Operator) -> str:
        options = _options(op, tflite.Pool2DOptions)
        kernel = (options.FilterHeight(), options.FilterWidth())
        stride = (options.StrideH(), options.StrideW())
        padding = explicit_padding(options.Padding(), tuple(self.shape(op.Inputs(0))[1:3]), kernel, stride)
        out = self.builder.add("max_pool2d", [self.activation(op.Inputs(0))], kernel=list(kernel),
                               stride=list(stride), padding=padding)
        return self.fused_activation(out, options)

    def pad(self, op: tflite.Operator) -> str:
        """Zero PAD by a constant (rank, 2) table in TFLite's axis order; the batch is never padded."""
        table = self.constant(op.Inputs(1))
        if table is None:
            raise UnsupportedTfliteError("PAD with paddings computed at run time")
        pads = table.astype(int).tolist()
        if pads[0] != [0, 0]:
            raise UnsupportedTfliteError(f"PAD {pads} pads the batch dimension")
        if len(pads) == IMAGE_RANK:
            pads = [pads[axis] for axis in NHWC_TO_NCHW]
        return self.builder.add("pad_axes", [self.activation(op.Inputs(0))], pads=pads)

    def reshape(self, op: tflite.Operator) -> str:
        """RESHAPE/SQUEEZE to the output tensor's shape, in TFLite's element order, batch kept free."""
        in_shape, out_shape = self.shape(op.Inputs(0)), self.shape(op.Outputs(0))
        if not in_shape or not out_shape or in_shape[0] != out_shape[0]:
            raise UnsupportedTfliteError(
                f"{self.op_name(op)} {in_shape} -> {out_shape} does not keep the batch dimension")
        value = self.activation(op.Inputs(0))
        if len(in_shape) == IMAGE_RANK:
            value = self.builder.add("permute", [value], dims=list(NCHW_TO_NHWC))
        value = self.builder.add("reshape", [value], shape=out_shape[1:])
        if len(out_shape) == IMAGE_RANK:
            value = self.builder.add("permute", [value], dims=list(NHWC_TO_NCHW))
        return value



def _options(op: tflite.Operator, options_class: type) -> Any | None:
    """The op's builtin options table read as `options_class`, or None when the op has none."""
    table = op.BuiltinOptions()
    if table is None:
        return None
    options = options_class()
    options.Init(table.Bytes, table.Pos)
    return options


def _torch_shape(tflite_shape: list[int]) -> list[int]:
    """A TFLite tensor shape in GraphNet's layout (rank-4 NHWC -> NCHW)."""
    if len(tflite_shape) == IMAGE_RANK:
        return [tflite_shape[axis] for axis in NHWC_TO_NCHW]
    return list(tflite_shape)


def _check_output_shape(checkpoint: dict[str, Any]) -> None:
    """Run the converted graph once on a single zero input: its output must have the shape the
    TFLite file declares (batch aside). Catches layout mistakes at fetch time, not at first use."""
    meta = checkpoint["meta"]
    with torch.no_grad():
        out = GraphNet(checkpoint)(torch.zeros(1, *meta["input_shape"]))
    if list(out.shape[1:]) != list(meta["output_shape"]):
        raise UnsupportedTfliteError(
            f"converted graph gives shape {list(out.shape[1:])}, the TFLite file says {meta['output_shape']}")


def tflite_to_graph(data: bytes) -> dict[str, Any]:
    """A GraphNet checkpoint (see lowkey_engine.faces.graphnet) from the bytes of a float32 .tflite file.
    The graph takes NCHW input in whatever value range the TFLite model takes."""
    return _SubgraphConverter(data).convert()


def convert(files: dict[str, Path], output: Path) -> None:
    """Fetch-step entry point: files["model"] is the .tflite file; writes the checkpoint to `output`."""
    torch.save(tflite_to_graph(Path(files["model"]).read_bytes()), output)
