"""A tiny graph interpreter: the one runtime for every converted model file.

Model files arrive in three foreign formats (ONNX, TFLite, TF.js). `lowkey weights fetch` converts
each, once, into the same plain form, a *graph checkpoint*:

    {"format": "lowkey-graph/1",
     "input": "x",                      # name of the graph input (NCHW float tensor)
     "output": "y",                     # name of the value returned
     "nodes": [{"op": "conv2d", "inputs": ["x", "w0", "b0"], "output": "t1", "attrs": {...}}, ...],
     "tensors": {"w0": Tensor, ...}}    # constants: weights, biases, slopes, shapes

`GraphNet` runs such a checkpoint with `torch.nn.functional`, so loading needs no converter library,
is fast, and is differentiable with respect to the input. Layout is always NCHW; converters from
NHWC formats transpose their weights. Every op keeps the batch dimension free, so a face embeds the
same alone or inside a batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GRAPH_FORMAT = "lowkey-graph/1"


def _pad_then(x: Tensor, padding: list[int] | None, value: float = 0.0) -> Tensor:
    """Apply explicit (top, bottom, left, right) padding, as TF 'SAME' needs asymmetric pads."""
    if not padding or not any(padding):
        return x
    top, bottom, left, right = padding
    return F.pad(x, (left, right, top, bottom), value=value)


def _conv2d(x, weight, bias=None, *, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    top, bottom, left, right = padding
    if top == bottom and left == right:        # the convolution pads by itself: no padded copy
        return F.conv2d(x, weight, bias, tuple(stride), (top, left), tuple(dilation), groups)
    return F.conv2d(_pad_then(x, list(padding)), weight, bias, tuple(stride), 0, tuple(dilation), groups)


def _max_pool2d(x, *, kernel=(2, 2), stride=(2, 2), padding=(0, 0, 0, 0), ceil_mode=False):
    return F.max_pool2d(_pad_then(x, list(padding), float("-inf")), tuple(kernel), tuple(stride), 0,
                        ceil_mode=ceil_mode)


def _avg_pool2d(x, *, kernel=(2, 2), stride=(2, 2), padding=(0, 0, 0, 0), ceil_mode=False):
    # count_include_pad=False matches TF's 'SAME' average pooling at the borders.
    if padding and any(padding):
        top, bottom, left, right = padding
        if top == bottom and left == right:
            return F.avg_pool2d(x, tuple(kernel), tuple(stride), (top, left), ceil_mode=ceil_mode,
                                count_include_pad=False)
    return F.avg_pool2d(x, tuple(kernel), tuple(stride), 0, ceil_mode=ceil_mode)


def _channel_affine(x, scale, shift):
    """Per-channel x*scale + shift on NCHW (a folded batch norm)."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return x * scale.reshape(shape) + shift.reshape(shape)


def _prelu(x, slope):
    """PReLU with a per-channel slope (any shape holding C values, or one value) on NCHW or NC."""
    if slope.numel() in (1, x.shape[1]):
        return F.prelu(x, slope.flatten())
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return torch.where(x >= 0, x, x * slope.reshape(shape))


def _pad_axes(x, *, pads):
    """Zero padding of every axis: `pads` holds (before, after) for each of x's axes, first axis
    first (e.g. NCHW channels padded for a residual that widens)."""
    flat = [amount for before_after in reversed(pads) for amount in before_after]
    return F.pad(x, flat)


def _reshape(x, *, shape):
    """Reshape keeping the batch dimension: `shape` excludes it."""
    return x.reshape((x.shape[0], *shape))


def _linear(x, weight, bias=None):
    return F.linear(x.flatten(1) if x.dim() > 2 else x, weight, bias)


#: op name -> function(*input_tensors, **attrs). Inputs are looked up by name among graph values
#: and constants; attrs are plain JSON-able values.
OPS: dict[str, Callable[..., Tensor]] = {
    "conv2d": _conv2d,
    "conv_transpose2d": lambda x, w, b=None, *, stride=(1, 1), padding=(0, 0): F.conv_transpose2d(
        x, w, b, tuple(stride), tuple(padding)),
    "linear": _linear,
    "matmul": torch.matmul,
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "div": torch.div,
    "maximum": torch.maximum,
    "minimum": torch.minimum,
    "neg": torch.neg,
    "abs": torch.abs,
    "sqrt": torch.sqrt,
    "rsqrt": torch.rsqrt,
    "exp": torch.exp,
    "relu": F.relu,
    "relu6": F.relu6,
    "clip": lambda x, *, min=None, max=None: torch.clamp(x, min, max),
    "leaky_relu": lambda x, *, slope=0.01: F.leaky_relu(x, slope),
    "prelu": _prelu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softmax": lambda x, *, dim=-1: F.softmax(x, dim),
    "channel_affine": _channel_affine,
    "max_pool2d": _max_pool2d,
    "avg_pool2d": _avg_pool2d,
    "mean": lambda x, *, dims, keepdim=False: x.mean(dim=tuple(dims), keepdim=keepdim),
    "sum": lambda x, *, dims, keepdim=False: x.sum(dim=tuple(dims), keepdim=keepdim),
    "flatten": lambda x, *, start_dim=1: x.flatten(start_dim),
    "reshape": _reshape,
    "permute": lambda x, *, dims: x.permute(*dims),
    "concat": lambda *xs, dim=1: torch.cat(xs, dim),
    "pad": lambda x, *, padding, value=0.0: _pad_then(x, list(padding), value),
    "pad_axes": _pad_axes,
    "l2_normalize": lambda x, *, dim=1, eps=1e-12: F.normalize(x, dim=dim, eps=eps),
    "identity": lambda x: x,
}


def _buffer_name(name: str) -> str:
    """Constant names from foreign graphs hold '/', ':' and '.', which nn.Module names may not."""
    return "c_" + "".join(ch if ch.isalnum() else "_" for ch in name)


def fuse_decomposed_prelu(nodes: list[dict[str, Any]], tensors: dict[str, Tensor]
                          ) -> tuple[list[dict[str, Any]], dict[str, Tensor]]:
    """One `prelu` node for each PReLU that a converter spelled out in five elementwise ops.

    TFLite files (mfn-expo) write PReLU as relu(x) + c * (x - |x|) = relu(x) + 2c * min(x, 0),
    which is prelu(x, slope=2c): five passes over the activations (and five in backward) become
    one. Matched only when the intermediate values feed nothing else; same output to rounding.
    """
    producer = {node["output"]: node for node in nodes}
    uses: dict[str, int] = {}
    for node in nodes:
        for name in node["inputs"]:
            uses[name] = uses.get(name, 0) + 1

    def made_by(name: str, op: str) -> dict[str, Any] | None:
        node = producer.get(name)
        return node if node is not None and node["op"] == op and uses.get(name) == 1 else None

    fused: dict[str, dict[str, Any]] = {}      # output of the `add` -> its prelu node
    dropped: set[str] = set()                  # outputs of the four nodes the prelu replaces
    tensors = dict(tensors)
    for node in nodes:
        if node["op"] != "add" or len(node["inputs"]) != 2:
            continue
        for relu_name, mul_name in (node["inputs"], node["inputs"][::-1]):
            relu, mul = made_by(relu_name, "relu"), made_by(mul_name, "mul")
            if relu is None or mul is None:
                continue
            x = relu["inputs"][0]
            constants = [i for i in mul["inputs"] if i in tensors]
            subs = [made_by(i, "sub") for i in mul["inputs"] if i not in tensors]
            if len(constants) != 1 or len(subs) != 1 or subs[0] is None:
                continue
            sub = subs[0]
            absolute = made_by(sub["inputs"][1], "abs")
            if sub["inputs"][0] != x or absolute is None or absolute["inputs"][0] != x:
                continue
            slope_name = f"{constants[0]}:prelu_slope"
            tensors[slope_name] = 2 * tensors[constants[0]]
            fused[node["output"]] = {"op": "prelu", "inputs": [x, slope_name], "output": node["output"]}
            dropped.update(n["output"] for n in (relu, mul, sub, absolute))
            break
    out = [fused.get(n["output"], n) for n in nodes if n["output"] not in dropped]
    used = {name for n in out for name in n["inputs"]}
    return out, {k: v for k, v in tensors.items() if k in used}


#: Rewrites applied to every graph when it is loaded (each: same output, fewer passes).
GRAPH_PASSES = (fuse_decomposed_prelu,)


class GraphNet(nn.Module):
    """Runs a graph checkpoint (see module docstring). Input and output are whatever the source
    model takes and gives, in NCHW layout; preprocessing belongs to the caller (`Recognizer`).
    `optimise` applies GRAPH_PASSES first."""

    def __init__(self, checkpoint: dict[str, Any], optimise: bool = True):
        super().__init__()
        if checkpoint.get("format") != GRAPH_FORMAT:
            raise ValueError(f"not a {GRAPH_FORMAT} checkpoint: format={checkpoint.get('format')!r}")
        self.input_name: str = checkpoint["input"]
        self.output_name: str = checkpoint["output"]
        nodes, tensors = list(checkpoint["nodes"]), dict(checkpoint["tensors"])
        for graph_pass in GRAPH_PASSES if optimise else ():
            nodes, tensors = graph_pass(nodes, tensors)
        self.nodes: list[dict[str, Any]] = nodes
        unknown = sorted({n["op"] for n in self.nodes} - OPS.keys())
        if unknown:
            raise ValueError(f"graph uses ops this runtime lacks: {unknown}")
        self._constant_buffers: dict[str, str] = {}
        for name, tensor in tensors.items():
            buffer = _buffer_name(name)
            self.register_buffer(buffer, torch.as_tensor(tensor).clone())
            self._constant_buffers[name] = buffer

    def forward(self, x: Tensor) -> Tensor:
        values: dict[str, Tensor] = {self.input_name: x}
        for node in self.nodes:
            args = [values[name] if name in values else getattr(self, self._constant_buffers[name])
                    for name in node["inputs"]]
            values[node["output"]] = OPS[node["op"]](*args, **node.get("attrs", {}))
        return values[self.output_name]


class GraphBuilder:
    """Helper for converters: collects nodes and constants into a graph checkpoint."""

    def __init__(self, input_name: str = "input"):
        self.input_name = input_name
        self.nodes: list[dict[str, Any]] = []
        self.tensors: dict[str, Tensor] = {}
        self._counter = 0

    def const(self, tensor: Tensor, hint: str = "const") -> str:
        self._counter += 1
        name = f"{hint}#{self._counter}"
        self.tensors[name] = torch.as_tensor(tensor).detach().float().contiguous().clone()
        return name

    def add(self, op: str, inputs: list[str], output: str | None = None, **attrs: Any) -> str:
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}")
        if output is None:
            self._counter += 1
            output = f"{op}#{self._counter}"
        self.nodes.append({"op": op, "inputs": list(inputs), "output": output, "attrs": attrs})
        return output

    def checkpoint(self, output: str, **meta: Any) -> dict[str, Any]:
        used = {name for node in self.nodes for name in node["inputs"]}
        return {"format": GRAPH_FORMAT, "input": self.input_name, "output": output,
                "nodes": self.nodes, "tensors": {k: v for k, v in self.tensors.items() if k in used},
                "meta": meta}
