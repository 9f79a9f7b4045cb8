"""The graph runtime: ops wired as a hand-written torch computation, batch kept free."""

import pytest
import torch
import torch.nn.functional as F

from lowkey_engine.faces.graphnet import GraphBuilder, GraphNet
from lowkey_engine.faces.nets import load_net


def test_small_graph_matches_hand_written_torch(tmp_path):
    torch.manual_seed(0)
    w, b = torch.randn(4, 3, 3, 3), torch.randn(4)
    slope, scale, shift = torch.rand(4), torch.rand(4) + 0.5, torch.randn(4)
    fc = torch.randn(5, 4 * 4 * 4)
    g = GraphBuilder("x")
    t = g.add("conv2d", ["x", g.const(w), g.const(b)], stride=[2, 2], padding=[0, 1, 0, 1])
    t = g.add("channel_affine", [t, g.const(scale), g.const(shift)])
    t = g.add("prelu", [t, g.const(slope)])
    t = g.add("reshape", [t], shape=[-1])
    out = g.add("linear", [t, g.const(fc)])
    path = tmp_path / "net.pt"
    torch.save(g.checkpoint(out), path)
    net = load_net(path)

    x = torch.randn(3, 3, 8, 8)
    y = F.conv2d(F.pad(x, (0, 1, 0, 1)), w, b, stride=2)
    y = y * scale[None, :, None, None] + shift[None, :, None, None]
    y = torch.where(y >= 0, y, y * slope[None, :, None, None])
    expected = y.flatten(1) @ fc.T
    torch.testing.assert_close(net(x), expected)
    torch.testing.assert_close(net(x[1:2]), expected[1:2])


def test_unknown_ops_and_formats_are_refused():
    with pytest.raises(ValueError, match="format"):
        GraphNet({"format": "other"})
    with pytest.raises(ValueError, match="lacks"):
        GraphNet({"format": "lowkey-graph/1", "input": "x", "output": "y",
                  "nodes": [{"op": "fft", "inputs": ["x"], "output": "y"}], "tensors": {}})


def _decomposed_prelu_graph(extra_use_of_abs: bool = False):
    """relu(x) + c * (x - |x|) after a padded convolution, as TFLite files spell PReLU."""
    torch.manual_seed(1)
    w, c = torch.randn(4, 3, 3, 3), torch.randn(1, 4, 1, 1)
    g = GraphBuilder("x")
    x = g.add("conv2d", ["x", g.const(w)], padding=[1, 1, 1, 1])
    relu, absolute = g.add("relu", [x]), g.add("abs", [x])
    diff = g.add("sub", [x, absolute])
    out = g.add("add", [relu, g.add("mul", [g.const(c), diff])])
    if extra_use_of_abs:                      # |x| feeds something else: the pattern must stay
        out = g.add("add", [out, absolute])
    return g.checkpoint(out), w, c


def test_decomposed_prelu_is_fused_into_one_op_with_the_same_output():
    checkpoint, w, c = _decomposed_prelu_graph()
    plain, fused = GraphNet(checkpoint, optimise=False), GraphNet(checkpoint)
    assert [n["op"] for n in fused.nodes] == ["conv2d", "prelu"]
    x = torch.randn(2, 3, 9, 9)
    y = F.conv2d(x, w, padding=1)
    torch.testing.assert_close(fused(x), torch.where(y >= 0, y, 2 * c * y))
    torch.testing.assert_close(fused(x), plain(x))


def test_prelu_pattern_with_a_shared_intermediate_is_left_alone():
    checkpoint, _, _ = _decomposed_prelu_graph(extra_use_of_abs=True)
    fused = GraphNet(checkpoint)
    assert "prelu" not in [n["op"] for n in fused.nodes]
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(fused(x), GraphNet(checkpoint, optimise=False)(x))
