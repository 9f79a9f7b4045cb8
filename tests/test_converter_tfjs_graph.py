"""The TF.js graph-model converter against a hand-computed reference.

A tiny graph is written the way TF.js stores one (model.json + .bin, NHWC, HWIO kernels, JSON-
encoded attrs), converted, run by GraphNet in NCHW, and compared with torch ops applied by hand.
Sizes are chosen so that every mistake shows: a non-square input and non-square depthwise kernel
(H/W swaps), 'SAME' padding that TF splits unevenly (0 before, 1 after), a channel multiplier of 2
(depthwise output channel order), and a reduction that changes the shape if its axes are wrong.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lowkey_engine.faces.nets import load_net
from lowkey_engine.faces.paths import converted_path
from lowkey_weights.converters import tfjs_graph

HEIGHT, WIDTH, IN_CHANNELS = 8, 6, 3
CONV_CHANNELS, MULTIPLIER = 4, 2
OUT_CHANNELS = CONV_CHANNELS * MULTIPLIER


def _ints(values):
    return {"list": {"i": [str(v) for v in values]}}


def _string(text):
    return {"s": base64.b64encode(text.encode()).decode()}


def _node(name, op, inputs=(), **attr):
    return {"name": name, "op": op, "input": list(inputs), "attr": attr}


def _const(name):
    return _node(name, "Const", dtype={"type": "DT_FLOAT"})


def _tiny_model(tmp_path, rng):
    """Writes model.json + weights.bin; returns the files dict and the (dequantised) weights."""
    weights = {
        "conv/kernel": rng.standard_normal((3, 3, IN_CHANNELS, CONV_CHANNELS)).astype(np.float32),
        "dw/kernel": rng.standard_normal((3, 2, CONV_CHANNELS, MULTIPLIER)).astype(np.float32),
        "bias": rng.standard_normal(OUT_CHANNELS).astype(np.float16).astype(np.float32),
        "pool/axes": np.array([1, 2], dtype=np.int32),
    }
    nodes = [
        _node("input", "Placeholder", shape={"shape": {"dim": [{"size": str(s)} for s in
                                                               (-1, HEIGHT, WIDTH, IN_CHANNELS)]}}),
        *(_const(name) for name in weights),
        _node("conv", "Conv2D", ["input", "conv/kernel"], strides=_ints([1, 2, 2, 1]), padding=_string("SAME"),
              dilations=_ints([1, 1, 1, 1]), data_format=_string("NHWC"), explicit_paddings={"list": {}}),
        _node("dw", "DepthwiseConv2dNative", ["conv", "dw/kernel"], strides=_ints([1, 1, 1, 1]),
              padding=_string("SAME"), dilations=_ints([1, 1, 1, 1]), data_format=_string("NHWC")),
        _node("add", "Add", ["dw", "bias:0"]),
        _node("relu", "Relu", ["add"]),
        _node("pool", "Mean", ["relu", "pool/axes"], keep_dims={"b": False}, Tidx={"type": "DT_INT32"}),
        # A head the wanted output does not need, with an op the converter does not know: it must
        # be left out, not fail the conversion.
        _node("head", "Softplus", ["pool"]),
    ]
    manifest_weights, blob = [], b""
    for name, array in weights.items():
        spec = {"name": name, "shape": list(array.shape), "dtype": "int32" if array.dtype == np.int32 else "float32"}
        if name == "bias":
            spec["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
            blob += array.astype("<f2").tobytes()
        else:
            blob += array.astype(array.dtype.newbyteorder("<")).tobytes()
        manifest_weights.append(spec)
    model = {"format": "graph-model", "modelTopology": {"node": nodes},
             "weightsManifest": [{"paths": ["weights.bin"], "weights": manifest_weights}]}
    (tmp_path / "model.json").write_text(json.dumps(model))
    (tmp_path / "weights.bin").write_bytes(blob)
    return {"graph": tmp_path / "model.json", "weights": tmp_path / "weights.bin"}, weights


def _reference(x_nchw, weights):
    """The tiny graph by hand: TF semantics, written directly in NCHW."""
    conv_kernel = torch.from_numpy(weights["conv/kernel"]).permute(3, 2, 0, 1)      # HWIO -> OIHW
    # TF 'SAME', stride 2, kernel 3 on 8x6: outputs 4x3, one pixel of padding, after (bottom/right).
    y = F.conv2d(F.pad(x_nchw, (0, 1, 0, 1)), conv_kernel, stride=2)
    # Depthwise, kernel 3x2 stride 1: rows padded 1/1, columns 0 before and 1 after. Output channel
    # c * MULTIPLIER + m filters input channel c with kernel[:, :, c, m].
    y = F.pad(y, (0, 1, 1, 1))
    dw_kernel = torch.from_numpy(weights["dw/kernel"])
    y = torch.cat([F.conv2d(y[:, c:c + 1], dw_kernel[:, :, c, m][None, None])
                   for c in range(CONV_CHANNELS) for m in range(MULTIPLIER)], dim=1)
    y = F.relu(y + torch.from_numpy(weights["bias"]).reshape(1, -1, 1, 1))
    return y.mean(dim=(2, 3))                                                     # NHWC axes 1, 2


def test_tiny_graph_matches_hand_reference(tmp_path):
    files, weights = _tiny_model(tmp_path, np.random.default_rng(0))
    output = tmp_path / "tiny.pt"
    tfjs_graph.convert(files, output, output_node="pool")
    net = load_net(output)
    x = torch.randn(3, IN_CHANNELS, HEIGHT, WIDTH)
    got = net(x)
    assert got.shape == (3, OUT_CHANNELS)
    torch.testing.assert_close(got, _reference(x, weights), rtol=1e-5, atol=1e-5)
    # Batch-independent: a single sample gives what it gave inside the batch.
    torch.testing.assert_close(net(x[1:2]), got[1:2], rtol=1e-5, atol=1e-5)


def test_float16_weights_are_dequantised(tmp_path):
    files, weights = _tiny_model(tmp_path, np.random.default_rng(1))
    checkpoint_path = tmp_path / "tiny.pt"
    tfjs_graph.convert(files, checkpoint_path, output_node="pool")
    stored = torch.load(checkpoint_path, weights_only=True)["tensors"]
    biases = [t for t in stored.values() if t.shape == (1, OUT_CHANNELS, 1, 1)]
    assert len(biases) == 1
    np.testing.assert_array_equal(biases[0].flatten().numpy(), weights["bias"])


def test_unwanted_unsupported_op_is_reported_when_needed(tmp_path):
    files, _ = _tiny_model(tmp_path, np.random.default_rng(2))
    with pytest.raises(NotImplementedError, match="Softplus"):
        tfjs_graph.convert(files, tmp_path / "head.pt", output_node="head")


@pytest.mark.parametrize("size, kernel, stride, expected", [
    (224, 3, 2, (0, 1)),     # MobileNet's strided convs: the extra pixel goes after
    (112, 3, 1, (1, 1)),
    (7, 3, 2, (1, 1)),
    (6, 2, 1, (0, 1)),
    (5, 1, 1, (0, 0)),
])
def test_same_padding_splits_like_tensorflow(size, kernel, stride, expected):
    assert tfjs_graph.same_padding(size, kernel, stride, 1) == expected


def test_attr_decoding():
    assert tfjs_graph.decode_attr(_ints([1, 2, 2, 1])) == [1, 2, 2, 1]
    assert tfjs_graph.decode_attr(_string("SAME")) == "SAME"
    assert tfjs_graph.decode_attr({"list": {"s": [_string("BiasAdd")["s"], _string("Relu")["s"]]}}) == [
        "BiasAdd", "Relu"]
    assert tfjs_graph.decode_attr({"list": {}}) == []
    assert tfjs_graph.decode_attr({"b": False}) is False
    assert tfjs_graph.decode_attr({"f": 0}) == 0.0


@pytest.mark.parametrize("model_id", ["hse-faceres", "hse-faceres-deep"])
def test_converted_faceres_embeds_batch_independently(model_id):
    path = converted_path(model_id)
    if not path.is_file():
        pytest.skip(f"{model_id} not fetched (lowkey weights fetch {model_id})")
    net = load_net(path)
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        both, first = net(x), net(x[:1])
    assert both.shape == (2, 1024)
    torch.testing.assert_close(first, both[:1], rtol=1e-4, atol=1e-4)
