"""OpenVINO IR (`.xml` graph + `.bin` weights) -> graph checkpoint (see lowkey_engine/faces/graphnet.py),
for Intel's face-reidentification-retail-0095 and its kin.

The `.xml` lists layers (a type, a `<data>` element of attributes, typed input and output ports with
their dimensions) and edges (from-layer/port -> to-layer/port). `Const` layers address the `.bin` by
byte offset and size; FP16 weights sit there as `f16` constants behind `Convert` layers to f32. All
of that is folded here: any layer whose inputs are all constants is evaluated at conversion (the
Converts included) and leaves a float32 checkpoint tensor, not a node. The Add of a per-channel
constant right after a convolution (how the IR stores a bias) becomes that convolution's bias.
Layout stays NCHW, as in the IR.

The IR declares a fixed batch (1); the graph keeps it free: element-wise ops broadcast, and
reshape-like layers become "keep the batch dimension, reshape the rest to the declared shape". One
that would move the batch into another dimension is refused.

Only layers the Result depends on are converted. A layer type without a rule raises
`OpenVinoConversionError` naming every such type with its count. The files are parsed with the
standard library only; the `openvino` package is needed by the tests, never here.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lowkey_engine.faces.graphnet import OPS, GraphBuilder

from .tflite import same_padding

#: IR element types -> little-endian numpy dtypes (the `.bin` is little-endian).
ELEMENT_TYPES = {
    "f16": np.dtype("<f2"), "f32": np.dtype("<f4"), "f64": np.dtype("<f8"),
    "i8": np.dtype("i1"), "u8": np.dtype("u1"), "i32": np.dtype("<i4"), "i64": np.dtype("<i8"),
    "u32": np.dtype("<u4"), "u64": np.dtype("<u8"), "boolean": np.dtype("?"),
}
#: The one element type data flows in at run time (the engine runs float32).
RUNTIME_ELEMENT_TYPE = "f32"

#: Element-wise IR layers with numpy broadcasting -> GraphNet ops.
BINARY_OPS = {"Add": "add", "Subtract": "sub", "Multiply": "mul", "Divide": "div",
              "Maximum": "maximum", "Minimum": "minimum"}
UNARY_OPS = {"ReLU": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Exp": "exp", "Sqrt": "sqrt",
             "Abs": "abs", "Negative": "neg"}
#: Broadcast modes of binary layers that mean numpy's rules (the only ones converted).
NUMPY_BROADCAST = ("numpy", "none")

#: (layer id, output port id): one value of the IR graph.
ValueKey = tuple[str, str]


class OpenVinoConversionError(ValueError):
    """The IR uses something this converter cannot express as a GraphNet graph."""


@dataclass(frozen=True)
class IrLayer:
    """One `<layer>` of the `.xml`: its attributes (`<data>`) and its ports, in order."""

    id: str
    name: str
    type: str
    data: dict[str, str]
    inputs: tuple[str, ...]                               # input port ids
    outputs: dict[str, tuple[int, ...]]                   # output port id -> declared dims (-1: dynamic)

    def describe(self) -> str:
        return f"{self.type} layer {self.name!r} (id {self.id})"

    def ints(self, key: str, default: list[int] | None = None) -> list[int]:
        """A comma-separated integer attribute, e.g. strides="2, 2" -> [2, 2]."""
        if key not in self.data:
            if default is None:
                raise OpenVinoConversionError(f"{self.describe()}: attribute {key!r} is missing")
            return list(default)
        text = self.data[key].strip()
        return [int(v) for v in text.split(",")] if text else []


def convert(files: dict[str, Path], output: Path) -> None:
    """Convert the IR `files["graph"]` (.xml) with `files["weights"]` (.bin) into a graph
    checkpoint saved at `output`."""
    torch.save(convert_ir(Path(files["graph"]).read_bytes(), Path(files["weights"]).read_bytes()), output)


def convert_ir(graph_xml: bytes, weights: bytes) -> dict[str, Any]:
    """The graph checkpoint (a dict, see GraphNet) equivalent to an IR given as its two files' bytes."""
    return _Conversion(ET.fromstring(graph_xml), weights).run()


def _parse_dims(port: ET.Element) -> tuple[int, ...]:
    return tuple(int(dim.text) for dim in port.findall("dim"))


def _parse_layer(element: ET.Element) -> IrLayer:
    data = element.find("data")
    inputs = element.find("input")
    outputs = element.find("output")
    return IrLayer(
        id=element.get("id"), name=element.get("name", ""), type=element.get("type"),
        data=dict(data.attrib) if data is not None else {},
        inputs=tuple(port.get("id") for port in inputs) if inputs is not None else (),
        outputs={port.get("id"): _parse_dims(port) for port in outputs} if outputs is not None else {})


class _Conversion:
    """State of one conversion: the parsed IR, constants known so far, the builder."""

    def __init__(self, net: ET.Element, weights: bytes):
        if net.tag != "net" or net.find("layers") is None or net.find("edges") is None:
            raise OpenVinoConversionError("not an OpenVINO IR: expected <net> with <layers> and <edges>")
        self.ir_version = int(net.get("version", "0"))
        self.weights = weights
        self.layers = {layer.id: layer for layer in map(_parse_layer, net.find("layers"))}
        self.sources: dict[ValueKey, ValueKey] = {}          # (to layer, to port) -> (from layer, from port)
        self.consumers: Counter[ValueKey] = Counter()        # value -> how many inputs read it
        for edge in net.find("edges"):
            source = (edge.get("from-layer"), edge.get("from-port"))
            self.sources[(edge.get("to-layer"), edge.get("to-port"))] = source
            self.consumers[source] += 1
        parameters = [layer for layer in self.layers.values() if layer.type == "Parameter"]
        results = [layer for layer in self.layers.values() if layer.type == "Result"]
        if len(parameters) != 1 or len(results) != 1:
            raise OpenVinoConversionError(
                f"expected one Parameter and one Result, got {len(parameters)} and {len(results)}")
        self.parameter, self.result = parameters[0], results[0]
        self.order = self._layers_needed_for(self.result)
        self.constants: dict[ValueKey, np.ndarray] = {}
        self.values: dict[ValueKey, str] = {}                # runtime value -> graph name
        self.builder = GraphBuilder(self.graph_name(self.parameter, self.only_output(self.parameter)))
        self.output_name = ""

    def run(self) -> dict[str, Any]:
        unsupported = Counter(layer.type for layer in self.order if layer.type not in _RULES)
        if unsupported:
            listed = ", ".join(f"{op} (x{count})" for op, count in sorted(unsupported.items()))
            raise OpenVinoConversionError(f"OpenVINO layer types without a conversion rule: {listed}")
        for layer in self.order:
            _RULES[layer.type](self, layer)
        input_dims = self.dims(self.output_key(self.parameter))
        return self.builder.checkpoint(self.output_name, source="openvino-ir", ir_version=self.ir_version,
                                       input_shape=list(input_dims[1:]))

    # -- graph walking -----------------------------------------------------------------------------

    def _layers_needed_for(self, last: IrLayer) -> list[IrLayer]:
        """The layers `last` depends on, `last` included, each after every layer it reads."""
        order: list[IrLayer] = []
        state: dict[str, str] = {}                           # layer id -> "visiting" | "done"
        stack: list[tuple[IrLayer, bool]] = [(last, False)]
        while stack:
            layer, inputs_done = stack.pop()
            if inputs_done:
                state[layer.id] = "done"
                order.append(layer)
                continue
            if state.get(layer.id) == "done":
                continue
            if state.get(layer.id) == "visiting":
                raise OpenVinoConversionError(f"{layer.describe()}: the graph has a cycle")
            state[layer.id] = "visiting"
            stack.append((layer, True))
            for port in layer.inputs:
                source_id, _ = self.source(layer, port)
                if state.get(source_id) != "done":
                    stack.append((self.layers[source_id], False))
        return order

    def source(self, layer: IrLayer, port: str) -> ValueKey:
        if (layer.id, port) not in self.sources:
            raise OpenVinoConversionError(f"{layer.describe()}: input port {port} is not connected")
        return self.sources[(layer.id, port)]

    def input_key(self, layer: IrLayer, index: int) -> ValueKey:
        if index >= len(layer.inputs):
            raise OpenVinoConversionError(f"{layer.describe()}: has no input {index}")
        return self.source(layer, layer.inputs[index])

    def dims(self, key: ValueKey) -> tuple[int, ...]:
        """Declared dims of a value (the producing layer's output port)."""
        layer_id, port = key
        return self.layers[layer_id].outputs[port]

    def output_key(self, layer: IrLayer) -> ValueKey:
        """The value `layer` produces (layers here have exactly one output)."""
        return layer.id, self.only_output(layer)

    @staticmethod
    def only_output(layer: IrLayer) -> str:
        if len(layer.outputs) != 1:
            raise OpenVinoConversionError(f"{layer.describe()}: expected one output, got {len(layer.outputs)}")
        return next(iter(layer.outputs))

    @staticmethod
    def graph_name(layer: IrLayer, port: str) -> str:
        return f"{layer.type}#{layer.id}:{port}"

    # -- values and constants ----------------------------------------------------------------------

    def constant(self, layer: IrLayer, index: int, what: str) -> np.ndarray:
        """Input `index` of `layer` as an array; raises when it is computed at run time, since
        `what` must be fixed at conversion."""
        key = self.input_key(layer, index)
        if key not in self.constants:
            raise OpenVinoConversionError(f"{layer.describe()}: {what} must be a constant")
        return self.constants[key]

    def operand(self, layer: IrLayer, index: int) -> ValueKey | np.ndarray:
        """Input `index` of `layer`: its constant array, or the key of a run-time value."""
        key = self.input_key(layer, index)
        return self.constants.get(key, key)

    def emit(self, layer: IrLayer, op: str, operands: list[ValueKey | np.ndarray], **attrs: Any) -> None:
        """`layer`'s only output = GraphNet `op` of `operands` (run-time value keys or constant
        arrays). When every operand is a constant the op is evaluated now and stays a constant."""
        out = self.output_key(layer)
        if all(isinstance(o, np.ndarray) for o in operands):
            args = [torch.from_numpy(np.array(o, dtype=np.float32)) for o in operands]
            with torch.no_grad():
                self.constants[out] = OPS[op](*args, **attrs).numpy()
            return
        inputs = [self.builder.const(torch.from_numpy(np.array(o, dtype=np.float32)), f"{layer.name}/{i}")
                  if isinstance(o, np.ndarray) else self.values[o] for i, o in enumerate(operands)]
        self.values[out] = self.builder.add(op, inputs, output=self.graph_name(layer, out[1]), **attrs)

    def alias(self, layer: IrLayer, source: ValueKey) -> None:
        """`layer`'s only output is `source` unchanged (a constant or a run-time value)."""
        out = self.output_key(layer)
        if source in self.constants:
            self.constants[out] = self.constants[source]
        else:
            self.values[out] = self.values[source]

    def bias_free_conv_node(self, key: ValueKey) -> dict[str, Any] | None:
        """The emitted conv2d node computing `key` when it has no bias yet and nothing else reads
        its output, so a following per-channel Add can become its bias; else None."""
        if key in self.constants or self.consumers[key] != 1:
            return None
        name = self.values[key]
        node = next((n for n in reversed(self.builder.nodes) if n["output"] == name), None)
        return node if node is not None and node["op"] == "conv2d" and len(node["inputs"]) == 2 else None


# -- conversion rules: one function per IR layer type (or family) -------------------------------

def _parameter(c: _Conversion, layer: IrLayer) -> None:
    element_type = layer.data.get("element_type", RUNTIME_ELEMENT_TYPE)
    if element_type != RUNTIME_ELEMENT_TYPE:
        raise OpenVinoConversionError(f"{layer.describe()}: input of type {element_type}; only f32 is supported")
    c.values[c.output_key(layer)] = c.builder.input_name


def _const(c: _Conversion, layer: IrLayer) -> None:
    element_type = layer.data.get("element_type", "")
    if element_type not in ELEMENT_TYPES:
        raise OpenVinoConversionError(f"{layer.describe()}: element type {element_type!r} is not supported")
    dtype = ELEMENT_TYPES[element_type]
    shape = layer.ints("shape", [])
    offset, size = int(layer.data["offset"]), int(layer.data["size"])
    if size != math.prod(shape) * dtype.itemsize or offset + size > len(c.weights):
        raise OpenVinoConversionError(
            f"{layer.describe()}: {size} bytes at offset {offset} do not hold {element_type} {shape} "
            f"inside a .bin of {len(c.weights)} bytes")
    array = np.frombuffer(c.weights, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape)
    c.constants[c.output_key(layer)] = array


def _convert(c: _Conversion, layer: IrLayer) -> None:
    destination = layer.data.get("destination_type", "")
    source = c.input_key(layer, 0)
    if source in c.constants and destination in ELEMENT_TYPES:
        c.constants[c.output_key(layer)] = c.constants[source].astype(ELEMENT_TYPES[destination])
    elif destination == RUNTIME_ELEMENT_TYPE:
        c.alias(layer, source)                       # data is float32 already
    else:
        raise OpenVinoConversionError(f"{layer.describe()}: run-time conversion to {destination!r}")


def _convolution(c: _Conversion, layer: IrLayer) -> None:
    """Convolution: kernel (O, I, kh, kw); GroupConvolution: kernel (G, O/G, I/G, kh, kw), which is
    conv2d's (O, I/G, kh, kw) with groups=G (depthwise when I/G = 1)."""
    kernel = c.constant(layer, 1, "the kernel")
    groups = 1
    if layer.type == "GroupConvolution":
        if kernel.ndim != 5:
            raise OpenVinoConversionError(
                f"{layer.describe()}: kernel of shape {kernel.shape} is not (G, O/G, I/G, kh, kw)")
        groups = kernel.shape[0]
        kernel = kernel.reshape(kernel.shape[0] * kernel.shape[1], *kernel.shape[2:])
    if kernel.ndim != 4:
        raise OpenVinoConversionError(f"{layer.describe()}: only 2-D convolutions are supported")
    stride, dilation = layer.ints("strides"), layer.ints("dilations", [1, 1])
    padding = _padding(c, layer, kernel.shape[2:], stride, dilation)
    c.emit(layer, "conv2d", [c.operand(layer, 0), kernel], stride=stride, dilation=dilation,
           groups=groups, padding=padding)


def _binary(c: _Conversion, layer: IrLayer) -> None:
    broadcast = layer.data.get("auto_broadcast", "numpy")
    if broadcast not in NUMPY_BROADCAST:
        raise OpenVinoConversionError(f"{layer.describe()}: auto_broadcast={broadcast!r} is not supported")
    a, b = c.operand(layer, 0), c.operand(layer, 1)
    if layer.type == "Add" and _fold_into_conv_bias(c, layer, a, b):
        return
    c.emit(layer, BINARY_OPS[layer.type], [a, b])


def _fold_into_conv_bias(c: _Conversion, layer: IrLayer, a, b) -> bool:
    """conv(x) + per-channel constant -> conv(x) with that bias, when nothing else reads conv(x)."""
    value, bias = (a, b) if isinstance(b, np.ndarray) else (b, a)
    if not isinstance(bias, np.ndarray) or isinstance(value, np.ndarray):
        return False
    node = c.bias_free_conv_node(value)
    if node is None:
        return False
    channels = c.dims(value)[1]
    if bias.size != channels or bias.shape != (1, channels, 1, 1)[-bias.ndim:]:
        return False                                # broadcasts along another axis: a plain add
    node["inputs"].append(c.builder.const(torch.from_numpy(bias.reshape(-1).astype(np.float32)),
                                          f"{layer.name}/bias"))
    c.values[c.output_key(layer)] = node["output"]
    return True


def _unary(c: _Conversion, layer: IrLayer) -> None:
    c.emit(layer, UNARY_OPS[layer.type], [c.operand(layer, 0)])


def _prelu(c: _Conversion, layer: IrLayer) -> None:
    slope = c.constant(layer, 1, "the PReLU slope")
    channels = c.dims(c.input_key(layer, 0))[1]
    if slope.size not in (1, channels):
        raise OpenVinoConversionError(f"{layer.describe()}: slope of shape {slope.shape} is not per-channel")
    c.emit(layer, "prelu", [c.operand(layer, 0), slope])


def _avg_pool(c: _Conversion, layer: IrLayer) -> None:
    kernel, stride = layer.ints("kernel"), layer.ints("strides")
    if len(kernel) != 2:
        raise OpenVinoConversionError(f"{layer.describe()}: only 2-D pooling is supported")
    top, bottom, left, right = padding = _padding(c, layer, kernel, stride, [1, 1])
    excludes_pad = layer.data.get("exclude-pad", "false").lower() == "true"
    if any(padding) and (not excludes_pad or (top, left) != (bottom, right)):
        raise OpenVinoConversionError(
            f"{layer.describe()}: average pooling only with symmetric pads that are not counted")
    c.emit(layer, "avg_pool2d", [c.operand(layer, 0)], kernel=kernel, stride=stride, padding=padding,
           ceil_mode=layer.data.get("rounding_type", "floor").lower() == "ceil")


def _reduce_mean(c: _Conversion, layer: IrLayer) -> None:
    rank = len(c.dims(c.input_key(layer, 0)))
    axes = sorted(int(a) % rank for a in np.ravel(c.constant(layer, 1, "the axes")))
    if 0 in axes:
        raise OpenVinoConversionError(f"{layer.describe()}: averages over the batch dimension")
    c.emit(layer, "mean", [c.operand(layer, 0)], dims=axes,
           keepdim=layer.data.get("keep_dims", "false").lower() == "true")


def _keep_batch_reshape(c: _Conversion, layer: IrLayer) -> None:
    """Reshape, Squeeze, Unsqueeze: to the layer's declared output dims, the batch left free."""
    before = c.dims(c.input_key(layer, 0))
    after = c.dims(c.output_key(layer))
    if not after or after[0] != before[0] or any(d < 0 for d in after[1:]):
        raise OpenVinoConversionError(
            f"{layer.describe()}: {list(before)} -> {list(after)} moves the batch dimension or is not "
            "fixed after it; cannot keep batches free")
    c.emit(layer, "reshape", [c.operand(layer, 0)], shape=list(after[1:]))


def _result(c: _Conversion, layer: IrLayer) -> None:
    source = c.input_key(layer, 0)
    if source in c.constants:
        raise OpenVinoConversionError(f"{layer.describe()}: the output does not depend on the input")
    c.output_name = c.values[source]


_RULES: dict[str, Callable[[_Conversion, IrLayer], None]] = {
    "Parameter": _parameter,
    "Const": _const,
    "Convert": _convert,
    "Convolution": _convolution,
    "GroupConvolution": _convolution,
    **{op: _binary for op in BINARY_OPS},
    **{op: _unary for op in UNARY_OPS},
    "PReLU": _prelu,
    "AvgPool": _avg_pool,
    "ReduceMean": _reduce_mean,
    **{op: _keep_batch_reshape for op in ("Reshape", "Squeeze", "Unsqueeze")},
    "Result": _result,
}


def _padding(c: _Conversion, layer: IrLayer, kernel, stride, dilation) -> list[int]:
    """GraphNet's (top, bottom, left, right) from IR `pads_begin`/`pads_end` ([top, left] and
    [bottom, right]) or `auto_pad` (same_upper puts the odd pixel at the end, same_lower at the start)."""
    auto_pad = layer.data.get("auto_pad", "explicit").lower()
    if auto_pad in ("explicit", "notset", ""):
        (top, left), (bottom, right) = layer.ints("pads_begin", [0, 0]), layer.ints("pads_end", [0, 0])
        return [top, bottom, left, right]
    if auto_pad == "valid":
        return [0, 0, 0, 0]
    if auto_pad not in ("same_upper", "same_lower"):
        raise OpenVinoConversionError(f"{layer.describe()}: unknown auto_pad {auto_pad!r}")
    padding = []
    for size, k, s, d in zip(c.dims(c.input_key(layer, 0))[2:], kernel, stride, dilation):
        small, large = same_padding(size, k, s, d)
        padding += [small, large] if auto_pad == "same_upper" else [large, small]
    return padding
