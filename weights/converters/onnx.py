"""ONNX -> graph checkpoint (see lowkey_engine/faces/graphnet.py), for `fr_feature.onnx` and its kin.

Reads `files["model"]` with the `onnx` package and rewrites each node as GraphNet ops, NCHW as
ONNX already is. Initializers and `Constant` nodes become checkpoint tensors; BatchNormalization
folds into a per-channel affine; shape arithmetic on constants (`Shape -> Gather -> Unsqueeze ->
Concat`, as PyTorch exports `x.view(x.size(0), -1)`) is evaluated here and leaves no trace.

Shapes: every emitted node is also run once on a zero "probe" input of batch 1 and the graph's
declared C, H, W, so each value's exact shape is known while converting. Reshape-like nodes
(Reshape, Flatten, Squeeze, Unsqueeze) become "keep the leading (batch) dimension, reshape the rest
to the shape seen on the probe": exported graphs often hard-code a batch of 1 (`Reshape [1, -1]`),
which must not stop a face embedding the same alone or inside a batch. A node that would move the
batch into another dimension is refused.

Only nodes the output depends on are converted. An op without a rule raises `OnnxConversionError`
naming every such op with its count.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from lowkey_engine.faces.graphnet import OPS, GraphBuilder

#: Batch size of the probe input used to learn every value's shape; the graph keeps batches free.
PROBE_BATCH = 1
#: ONNX defaults used when a node leaves the attribute out.
BATCH_NORM_EPSILON = 1e-5
LEAKY_RELU_ALPHA = 0.01

#: ONNX ops that map one-to-one onto a GraphNet op taking the same inputs and no attributes.
ELEMENTWISE_OPS = {
    "Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Max": "maximum", "Min": "minimum",
    "MatMul": "matmul", "Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Exp": "exp",
    "Sqrt": "sqrt", "Neg": "neg", "Identity": "identity",
}


class OnnxConversionError(ValueError):
    """The ONNX model uses something this converter cannot express as a GraphNet graph."""


def convert(files: dict[str, Path], output: Path) -> None:
    """Convert the ONNX model `files["model"]` into a graph checkpoint saved at `output`."""
    torch.save(convert_model(onnx.load(str(files["model"]))), output)


def convert_model(model: onnx.ModelProto) -> dict[str, Any]:
    """The graph checkpoint (a dict, see GraphNet) equivalent to an in-memory ONNX model."""
    return _Conversion(model).run()


class _Conversion:
    """State of one conversion: the builder, constants known so far, and the probe's values."""

    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        self.constants: dict[str, np.ndarray] = {
            init.name: numpy_helper.to_array(init) for init in graph.initializer}
        data_inputs = [i for i in graph.input if i.name not in self.constants]
        if len(data_inputs) != 1 or len(graph.output) != 1:
            raise OnnxConversionError(
                f"expected one data input and one output, got inputs {[i.name for i in data_inputs]} "
                f"and outputs {[o.name for o in graph.output]}")
        self.input_name = data_inputs[0].name
        self.output_name = graph.output[0].name
        self.input_shape = _declared_sample_shape(data_inputs[0])
        self.probe: dict[str, torch.Tensor] = {self.input_name: torch.zeros(PROBE_BATCH, *self.input_shape)}
        self.nodes = _nodes_needed_for(graph.node, self.output_name)
        self.builder = GraphBuilder(self.input_name)
        self._constant_refs: dict[str, str] = {}

    def run(self) -> dict[str, Any]:
        unsupported = Counter(n.op_type for n in self.nodes
                              if n.op_type not in ELEMENTWISE_OPS and n.op_type not in _RULES
                              and n.op_type not in _FOLDS)
        if unsupported:
            listed = ", ".join(f"{op} (x{count})" for op, count in sorted(unsupported.items()))
            raise OnnxConversionError(f"ONNX ops without a conversion rule: {listed}")
        for node in self.nodes:
            if node.op_type in _FOLDS and self._foldable(node):
                self.constants[node.output[0]] = np.asarray(_FOLDS[node.op_type](self, node))
            elif node.op_type in ELEMENTWISE_OPS:
                self.emit(node, ELEMENTWISE_OPS[node.op_type], [self.ref(n) for n in node.input])
            elif node.op_type in _RULES:
                _RULES[node.op_type](self, node)
            else:
                raise OnnxConversionError(f"{_describe(node)}: supported only on constants (shape arithmetic)")
        return self.builder.checkpoint(self.output_name, source="onnx", opset=self.opset,
                                       input_shape=list(self.input_shape))

    def _foldable(self, node: onnx.NodeProto) -> bool:
        return node.op_type == "Shape" or all(name in self.constants for name in node.input if name)

    # -- helpers used by the rules --------------------------------------------------------------

    def ref(self, name: str) -> str:
        """Graph name for ONNX value `name`: the value itself, or a checkpoint constant."""
        if name not in self.constants:
            return name
        if name not in self._constant_refs:
            self._constant_refs[name] = self.const(self.constants[name], name)
        return self._constant_refs[name]

    def const(self, array: np.ndarray, hint: str) -> str:
        """A new float32 checkpoint constant holding `array`; returns its graph name."""
        return self.builder.const(torch.from_numpy(np.array(array, dtype=np.float32)), hint)

    def constant(self, node: onnx.NodeProto, index: int, what: str) -> np.ndarray | None:
        """Input `index` of `node` as an array (None when the optional input is absent); raises
        when it is computed at run time, since `what` must be fixed at conversion."""
        if index >= len(node.input) or not node.input[index]:
            return None
        if node.input[index] not in self.constants:
            raise OnnxConversionError(f"{_describe(node)}: {what} must be a constant")
        return self.constants[node.input[index]]

    def shape(self, name: str) -> list[int]:
        """Shape of value `name` on the probe (batch PROBE_BATCH), or of a constant."""
        if name in self.constants:
            return list(self.constants[name].shape)
        return list(self.probe[name].shape)

    def emit(self, node: onnx.NodeProto, op: str, inputs: list[str], **attrs: Any) -> None:
        """Add a GraphNet node computing `node`'s first output, and run it on the probe."""
        output = self.builder.add(op, inputs, output=node.output[0], **attrs)
        args = [self.probe[n] if n in self.probe else self.builder.tensors[n] for n in inputs]
        with torch.no_grad():
            self.probe[output] = OPS[op](*args, **attrs)


# -- conversion rules: one function per ONNX op (or family) --------------------------------------

def _conv(c: _Conversion, node: onnx.NodeProto) -> None:
    weight = c.constant(node, 1, "the kernel")
    if weight.ndim != 4:
        raise OnnxConversionError(f"{_describe(node)}: only 2-D convolutions are supported")
    a = _attributes(node)
    stride = a.get("strides", [1, 1])
    dilation = a.get("dilations", [1, 1])
    inputs = [c.ref(node.input[0]), c.ref(node.input[1])]
    if c.constant(node, 2, "the bias") is not None:
        inputs.append(c.ref(node.input[2]))
    c.emit(node, "conv2d", inputs, stride=list(stride), dilation=list(dilation),
           groups=int(a.get("group", 1)),
           padding=_padding(c, node, a, list(weight.shape[2:]), stride, dilation))


def _batch_norm(c: _Conversion, node: onnx.NodeProto) -> None:
    gamma, beta, mean, var = (c.constant(node, i, "batch-norm statistics") for i in range(1, 5))
    scale = gamma / np.sqrt(var + _attributes(node).get("epsilon", BATCH_NORM_EPSILON))
    shift = beta - mean * scale
    c.emit(node, "channel_affine", [c.ref(node.input[0]), c.const(scale, "bn_scale"), c.const(shift, "bn_shift")])


def _prelu(c: _Conversion, node: onnx.NodeProto) -> None:
    slope = c.constant(node, 1, "the PReLU slope")
    channels = c.shape(node.input[0])[1]
    if slope.size not in (1, channels):
        raise OnnxConversionError(f"{_describe(node)}: slope of shape {slope.shape} is not per-channel")
    c.emit(node, "prelu", [c.ref(node.input[0]), c.ref(node.input[1])])


def _leaky_relu(c: _Conversion, node: onnx.NodeProto) -> None:
    c.emit(node, "leaky_relu", [c.ref(node.input[0])],
           slope=float(_attributes(node).get("alpha", LEAKY_RELU_ALPHA)))


def _clip(c: _Conversion, node: onnx.NodeProto) -> None:
    a = _attributes(node)
    low, high = a.get("min"), a.get("max")          # opset < 11: attributes; later: inputs
    if (bound := c.constant(node, 1, "Clip's min")) is not None:
        low = bound
    if (bound := c.constant(node, 2, "Clip's max")) is not None:
        high = bound
    c.emit(node, "clip", [c.ref(node.input[0])], min=None if low is None else float(low),
           max=None if high is None else float(high))


def _gemm(c: _Conversion, node: onnx.NodeProto) -> None:
    a = _attributes(node)
    if a.get("transA", 0):
        raise OnnxConversionError(f"{_describe(node)}: transposed activations (transA=1) are not supported")
    b = c.constant(node, 1, "Gemm's B")
    weight = (b if a.get("transB", 0) else b.T) * a.get("alpha", 1.0)   # (out, in) as F.linear wants
    inputs = [c.ref(node.input[0]), c.const(weight, "gemm_weight")]
    bias = c.constant(node, 2, "Gemm's C")
    if bias is not None:
        if bias.size not in (1, weight.shape[0]):
            raise OnnxConversionError(f"{_describe(node)}: C of shape {bias.shape} is not one bias per output")
        inputs.append(c.const(np.broadcast_to(bias.reshape(-1), weight.shape[:1]) * a.get("beta", 1.0), "gemm_bias"))
    c.emit(node, "linear", inputs)


def _keep_batch_reshape(c: _Conversion, node: onnx.NodeProto) -> None:
    """Reshape, Flatten, Squeeze, Unsqueeze on data: reshape to the probe's result, batch left free."""
    before = c.shape(node.input[0])
    after = list(_RESHAPES[node.op_type](c, node, np.broadcast_to(np.float32(0), before)).shape)
    if not after or after[0] != before[0]:
        raise OnnxConversionError(
            f"{_describe(node)}: {before} -> {after} moves the batch dimension; cannot keep batches free")
    c.emit(node, "reshape", [c.ref(node.input[0])], shape=after[1:])


def _reshape_to_target(c: _Conversion, node: onnx.NodeProto, x: np.ndarray) -> np.ndarray:
    target = c.constant(node, 1, "the target shape").astype(np.int64).tolist()
    if not _attributes(node).get("allowzero", 0):     # 0 means "this input dimension"
        target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
    return x.reshape(target)


def _flatten(c: _Conversion, node: onnx.NodeProto, x: np.ndarray) -> np.ndarray:
    axis = _attributes(node).get("axis", 1)
    return x.reshape(math.prod(x.shape[:axis]), -1)


_RESHAPES: dict[str, Callable[[_Conversion, onnx.NodeProto, np.ndarray], np.ndarray]] = {
    "Reshape": _reshape_to_target,
    "Flatten": _flatten,
    "Squeeze": lambda c, node, x: np.squeeze(x, _axes(c, node)),
    "Unsqueeze": lambda c, node, x: np.expand_dims(x, _axes(c, node)),
}


def _global_average_pool(c: _Conversion, node: onnx.NodeProto) -> None:
    c.emit(node, "mean", [c.ref(node.input[0])], dims=[2, 3], keepdim=True)


def _pool(c: _Conversion, node: onnx.NodeProto) -> None:
    a = _attributes(node)
    kernel = a["kernel_shape"]
    stride = a.get("strides", [1] * len(kernel))
    if len(kernel) != 2 or any(d != 1 for d in a.get("dilations", [1, 1])):
        raise OnnxConversionError(f"{_describe(node)}: only undilated 2-D pooling is supported")
    padding = _padding(c, node, a, kernel, stride, [1, 1])
    is_average = node.op_type == "AveragePool"
    top, bottom, left, right = padding
    if is_average and (a.get("count_include_pad", 0) or (top, left) != (bottom, right)):
        raise OnnxConversionError(
            f"{_describe(node)}: average pooling only with symmetric pads that are not counted")
    c.emit(node, "avg_pool2d" if is_average else "max_pool2d", [c.ref(node.input[0])],
           kernel=list(kernel), stride=list(stride), padding=padding, ceil_mode=bool(a.get("ceil_mode", 0)))


def _concat(c: _Conversion, node: onnx.NodeProto) -> None:
    rank = len(c.shape(node.input[0]))
    axis = _attributes(node)["axis"] % rank
    if axis == 0:
        raise OnnxConversionError(f"{_describe(node)}: concatenates along the batch dimension")
    c.emit(node, "concat", [c.ref(n) for n in node.input], dim=axis)


def _transpose(c: _Conversion, node: onnx.NodeProto) -> None:
    rank = len(c.shape(node.input[0]))
    perm = list(_attributes(node).get("perm", reversed(range(rank))))
    if perm[0] != 0:
        raise OnnxConversionError(f"{_describe(node)}: permutation {perm} moves the batch dimension")
    c.emit(node, "permute", [c.ref(node.input[0])], dims=perm)


def _dropout(c: _Conversion, node: onnx.NodeProto) -> None:
    c.emit(node, "identity", [c.ref(node.input[0])])   # inference: dropout passes values through


_RULES: dict[str, Callable[[_Conversion, onnx.NodeProto], None]] = {
    "Conv": _conv,
    "BatchNormalization": _batch_norm,
    "PRelu": _prelu,
    "LeakyRelu": _leaky_relu,
    "Clip": _clip,
    "Gemm": _gemm,
    **{op: _keep_batch_reshape for op in _RESHAPES},
    "GlobalAveragePool": _global_average_pool,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "Concat": _concat,
    "Transpose": _transpose,
    "Dropout": _dropout,
}


# -- constant folding: ops evaluated at conversion when their inputs are known ------------------

def _fold_constant(c: _Conversion, node: onnx.NodeProto) -> np.ndarray:
    a = _attributes(node)
    if "value" in a:
        return numpy_helper.to_array(a["value"])
    for key in ("value_float", "value_floats", "value_int", "value_ints"):
        if key in a:
            return np.array(a[key])
    raise OnnxConversionError(f"{_describe(node)}: only numeric Constant nodes are supported")


def _fold_shape(c: _Conversion, node: onnx.NodeProto) -> np.ndarray:
    a = _attributes(node)
    return np.array(c.shape(node.input[0]), dtype=np.int64)[a.get("start", 0):a.get("end")]


def _input(c: _Conversion, node: onnx.NodeProto, index: int = 0) -> np.ndarray:
    return c.constants[node.input[index]]


_FOLDS: dict[str, Callable[[_Conversion, onnx.NodeProto], np.ndarray]] = {
    "Constant": _fold_constant,
    "Shape": _fold_shape,
    "Gather": lambda c, node: np.take(_input(c, node), _input(c, node, 1), axis=_attributes(node).get("axis", 0)),
    "Concat": lambda c, node: np.concatenate([c.constants[n] for n in node.input], _attributes(node)["axis"]),
    "Squeeze": lambda c, node: np.squeeze(_input(c, node), _axes(c, node)),
    "Unsqueeze": lambda c, node: np.expand_dims(_input(c, node), _axes(c, node)),
    "Cast": lambda c, node: _input(c, node).astype(onnx.helper.tensor_dtype_to_np_dtype(_attributes(node)["to"])),
}


# -- graph-level helpers -------------------------------------------------------------------------

def _declared_sample_shape(value: onnx.ValueInfoProto) -> tuple[int, ...]:
    """The graph input's fixed (C, H, W); its batch dimension may be anything, even symbolic."""
    dims = value.type.tensor_type.shape.dim[1:]
    if not dims or not all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
        raise OnnxConversionError(f"input {value.name!r} must declare fixed sizes after the batch dimension")
    return tuple(d.dim_value for d in dims)


def _nodes_needed_for(nodes, output: str) -> list[onnx.NodeProto]:
    """The nodes `output` depends on, in graph order (ONNX graphs are topologically sorted)."""
    producer = {name: node for node in nodes for name in node.output}
    needed: set[int] = set()
    pending = [output]
    while pending:
        node = producer.get(pending.pop())
        if node is None or id(node) in needed:
            continue
        needed.add(id(node))
        pending.extend(name for name in node.input if name)
    return [node for node in nodes if id(node) in needed]


def _padding(c: _Conversion, node: onnx.NodeProto, a: dict[str, Any], kernel, stride, dilation) -> list[int]:
    """GraphNet's (top, bottom, left, right) from ONNX `pads` ([top, left, bottom, right]) or
    `auto_pad` (SAME_UPPER puts the odd pixel at the end, SAME_LOWER at the start)."""
    auto_pad = a.get("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", "VALID"):
        top, left, bottom, right = a.get("pads", [0, 0, 0, 0]) if auto_pad == "NOTSET" else [0, 0, 0, 0]
        return [top, bottom, left, right]
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise OnnxConversionError(f"{_describe(node)}: unknown auto_pad {auto_pad!r}")
    padding = []
    for size, k, s, d in zip(c.shape(node.input[0])[2:], kernel, stride, dilation):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        padding += [small, large] if auto_pad == "SAME_UPPER" else [large, small]
    return padding


def _axes(c: _Conversion, node: onnx.NodeProto) -> tuple[int, ...] | None:
    """Squeeze/Unsqueeze axes: an attribute before opset 13, an optional constant input since."""
    axes = _attributes(node).get("axes")
    if axes is None:
        axes = c.constant(node, 1, "the axes")
    return None if axes is None else tuple(int(i) for i in np.ravel(axes))


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    values = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


def _describe(node: onnx.NodeProto) -> str:
    return f"{node.op_type} node {node.name or node.output[0]!r}"
