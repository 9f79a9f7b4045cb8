"""EdgeFace-xs's dynamically quantised state dict -> a float timm EdgeNeXt (lowkey-timm/1).

On the real file from the mirror: every quantised Linear's weight arrives as its int8 values times
their scale, every other tensor unchanged, nothing quantised is left, and the engine builds a
float network from the result. A file that does not fit the architecture is refused.
"""

from __future__ import annotations

import pytest
import torch

from lowkey_engine.faces.nets import load_net
from lowkey_engine.faces.timm_net import TIMM_FORMAT
from lowkey_weights.converters.edgeface import (ARCHITECTURE, PACKED_PARAMS, WRAPPER_PREFIX, convert,
                                                dequantised_state)
from lowkey_weights.manifest import load_manifest

MODEL_ID = "edgeface-xs"
EMBEDDING_DIM = 512


@pytest.fixture(scope="module")
def upstream_path(weights_mirror):
    (spec,) = load_manifest()[MODEL_ID].files
    return weights_mirror / spec.mirror


@pytest.fixture(scope="module")
def upstream(upstream_path) -> dict:
    state = torch.load(upstream_path, map_location="cpu", weights_only=True)
    assert all(key.startswith(WRAPPER_PREFIX) for key in state)          # as the mirror holds it
    assert any(key.endswith(PACKED_PARAMS) for key in state)
    return dict(state)


@pytest.fixture(scope="module")
def converted(upstream_path, tmp_path_factory) -> dict:
    output = tmp_path_factory.mktemp("edgeface") / "edgeface-xs.pt"
    convert({"state_dict": upstream_path}, output)
    return torch.load(output, map_location="cpu", weights_only=True)


def test_checkpoint_names_the_architecture_and_is_all_float32(converted):
    assert (converted["format"], converted["architecture"], converted["embedding_dim"]) == (
        TIMM_FORMAT, ARCHITECTURE, EMBEDDING_DIM)
    state = converted["state_dict"]
    assert not any(t.is_quantized for t in state.values())
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.float32}
    assert not any("packed" in key or key.endswith((".scale", ".zero_point")) for key in state)


def test_linear_weights_are_the_dequantised_int8_values_and_the_rest_unchanged(upstream, converted):
    state = converted["state_dict"]
    layers = 0
    for key, value in upstream.items():
        name = key.removeprefix(WRAPPER_PREFIX)
        if name.endswith(PACKED_PARAMS):
            layer = name.removesuffix(PACKED_PARAMS)
            weight, bias = value
            expected = weight.int_repr().float() * weight.q_scale() - weight.q_zero_point() * weight.q_scale()
            torch.testing.assert_close(state[f"{layer}.weight"], expected, atol=1e-7, rtol=0)
            assert torch.equal(state[f"{layer}.bias"], bias.detach())
            layers += 1
        elif isinstance(value, torch.Tensor) and name in state:
            assert torch.equal(state[name], value), name
    assert layers > 0


def test_the_engine_builds_a_float_network_of_512_outputs(upstream_path, tmp_path):
    output = tmp_path / "edgeface-xs.pt"
    convert({"state_dict": upstream_path}, output)
    net = load_net(output).eval()
    with torch.no_grad():
        embedding = net(torch.zeros(2, 3, 112, 112))
    assert embedding.shape == (2, EMBEDDING_DIM) and torch.isfinite(embedding).all()
    assert not any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in net.modules())


def test_a_file_that_does_not_fit_the_architecture_is_refused(upstream, tmp_path):
    truncated = {key: value for key, value in upstream.items() if "stages.3." not in key}
    source = tmp_path / "edgeface_xs_q.pt"
    torch.save(truncated, source)
    with pytest.raises(ValueError, match=r"(?s)does not fit EdgeNeXt.*Missing.*stages\.3\."):
        convert({"state_dict": source}, tmp_path / "out.pt")


def test_a_stray_quantised_tensor_is_refused(upstream):
    stray = dict(upstream)
    stray["model.extra"] = torch.quantize_per_tensor(torch.ones(2), 0.1, 0, torch.qint8)
    with pytest.raises(ValueError, match="'extra' is neither a float tensor"):
        dequantised_state(stray, "edgeface_xs_q.pt")
