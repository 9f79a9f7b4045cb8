"""arcface-pytorch's MobileFaceNet state dict -> the engine's MobileFaceNet with batch norms folded.

The reference is the upstream network written out here with torch.nn.functional straight from the
upstream state dict, batch norms unfolded (eval mode), its blocks counted from the file's own keys:
the converted network must compute the same on the real file from the mirror.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from lowkey_engine.faces.mobilefacenet import MOBILEFACENET_FORMAT, build_mobilefacenet
from lowkey_engine.faces.nets import load_net
from lowkey_weights.converters.mobilefacenet import (BACKBONE_PREFIX, BATCH_NORM_EPSILON, CLASSIFIER_PREFIX,
                                                     convert)
from lowkey_weights.converters.state_dicts import fold_batch_norm, read_state_dict
from lowkey_weights.manifest import load_manifest

MODEL_ID = "mfn-casia"
INPUT_SIZE, EMBEDDING_DIM = 112, 128
CASIA_IDENTITIES = 10575              # rows of the ArcFace classifier a training-mode file carries
BATCH = 3
#: Folded vs unfolded float32 arithmetic, relative to the largest output.
RELATIVE_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def upstream_path(weights_mirror):
    (spec,) = load_manifest()[MODEL_ID].files
    return weights_mirror / spec.mirror


@pytest.fixture(scope="module")
def upstream(upstream_path) -> dict[str, torch.Tensor]:
    state = read_state_dict(upstream_path)
    assert all(key.startswith(BACKBONE_PREFIX) for key in state)      # as the mirror holds it
    return {key.removeprefix(BACKBONE_PREFIX): tensor for key, tensor in state.items()}


def converted_net(state: dict[str, torch.Tensor], tmp_path) -> torch.nn.Module:
    source, output = tmp_path / "arcface_mobilefacenet.pth", tmp_path / "mfn.pt"
    torch.save(state, source)
    convert({"state_dict": source}, output)
    return load_net(output).eval()


def reference_embeddings(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Upstream's MobileFaceNet forward (nets/mobilefacenet.py) in eval mode, batch norms as they are."""
    def batch_norm(y, name):
        return F.batch_norm(y, state[f"{name}.running_mean"], state[f"{name}.running_var"],
                            state[f"{name}.weight"], state[f"{name}.bias"], False, 0.0, BATCH_NORM_EPSILON)

    def conv_block(y, name, stride=1, padding=0, depthwise=False, prelu=True):
        weight = state[f"{name}.conv.weight"]
        y = batch_norm(F.conv2d(y, weight, None, stride, padding, groups=weight.shape[0] if depthwise else 1),
                       f"{name}.bn")
        return F.prelu(y, state[f"{name}.prelu.weight"]) if prelu else y

    def bottleneck(y, name, stride, residual):
        z = conv_block(y, f"{name}.conv")
        z = conv_block(z, f"{name}.conv_dw", stride, 1, depthwise=True)
        z = conv_block(z, f"{name}.project", prelu=False)
        return y + z if residual else z

    def residual_stage(y, name):
        blocks = {int(m.group(1)) for key in state if (m := re.match(rf"{name}\.model\.(\d+)\.", key))}
        assert blocks == set(range(len(blocks))) and blocks
        for index in sorted(blocks):
            y = bottleneck(y, f"{name}.model.{index}", 1, residual=True)
        return y

    y = conv_block(x, "conv1", 2, 1)
    y = conv_block(y, "conv2_dw", 1, 1, depthwise=True)
    for down, stage in (("conv_23", "conv_3"), ("conv_34", "conv_4"), ("conv_45", "conv_5")):
        y = residual_stage(bottleneck(y, down, 2, residual=False), stage)
    y = F.prelu(batch_norm(F.conv2d(y, state["sep.weight"]), "sep_bn"), state["prelu.weight"])
    gdc = state["GDC_dw.weight"]
    y = batch_norm(F.conv2d(y, gdc, groups=gdc.shape[0]), "GDC_bn")
    return batch_norm(F.conv2d(y, state["features.weight"]), "last_bn").flatten(1)


def standardised_faces(count: int, seed: int) -> torch.Tensor:
    """Inputs as upstream feeds them: (x / 255 - 0.5) / 0.5 of random RGB pixels."""
    pixels = torch.rand(count, 3, INPUT_SIZE, INPUT_SIZE, generator=torch.Generator().manual_seed(seed))
    return (pixels - 0.5) / 0.5


def assert_same_network(net, state, seed=0):
    x = standardised_faces(BATCH, seed)
    with torch.no_grad():
        got, expected = net(x), reference_embeddings(state, x)
    assert got.shape == (BATCH, EMBEDDING_DIM)
    assert (got - expected).abs().max() <= RELATIVE_TOLERANCE * expected.abs().max()


def test_real_file_converts_to_the_upstream_network_with_batch_norms_folded(upstream_path, upstream, tmp_path):
    output = tmp_path / "mfn-casia.pt"
    convert({"state_dict": upstream_path}, output)
    checkpoint = torch.load(output, weights_only=True)
    assert checkpoint["format"] == MOBILEFACENET_FORMAT and checkpoint["embedding_dim"] == EMBEDDING_DIM
    assert not [key for key in checkpoint["state_dict"] if "bn" in key.split(".")[-2] or "running" in key]
    assert_same_network(load_net(output).eval(), upstream)


def test_classifier_is_dropped_and_the_prefix_optional(upstream, tmp_path):
    with_head = {BACKBONE_PREFIX + key: tensor for key, tensor in upstream.items()}
    with_head[CLASSIFIER_PREFIX + "weight"] = torch.randn(CASIA_IDENTITIES, EMBEDDING_DIM)
    assert_same_network(converted_net(with_head, tmp_path), upstream, seed=1)
    assert_same_network(converted_net(upstream, tmp_path), upstream, seed=2)     # a bare backbone


@pytest.mark.parametrize("change, problem", [
    (lambda s: s.update({"conv_5.model.2.conv.prelu.weight": torch.ones(256)}), "Unexpected key"),
    (lambda s: s.pop("conv_4.model.5.conv_dw.prelu.weight"), "Missing key"),
    (lambda s: s.update({"prelu.weight": torch.ones(256)}), "size mismatch for prelu.weight"),
    (lambda s: s.update({"features.weight": torch.zeros(64, 512, 1, 1)}), "'last_bn' after 'features'"),
    (lambda s: s.pop("GDC_bn.running_var"), "GDC_bn"),
])
def test_every_key_must_be_consumed_and_fit(upstream, tmp_path, change, problem):
    state = dict(upstream)
    change(state)
    source = tmp_path / "broken.pth"
    torch.save(state, source)
    with pytest.raises(ValueError, match=problem):
        convert({"state_dict": source}, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


@pytest.mark.parametrize("groups, bias", [(1, False), (4, True)])
def test_fold_batch_norm_equals_conv_then_batch_norm(groups, bias):
    generator = torch.Generator().manual_seed(groups)
    conv = torch.nn.Conv2d(8, 8, 3, padding=1, groups=groups, bias=bias)
    norm = torch.nn.BatchNorm2d(8, eps=BATCH_NORM_EPSILON)
    for tensor in (norm.weight, norm.bias, norm.running_mean):
        tensor.data = torch.randn(8, generator=generator)
    norm.running_var = torch.rand(8, generator=generator) + 0.1
    folded = torch.nn.Conv2d(8, 8, 3, padding=1, groups=groups, bias=True)
    folded.weight.data, folded.bias.data = fold_batch_norm(
        conv.weight, conv.bias, norm.weight, norm.bias, norm.running_mean, norm.running_var, BATCH_NORM_EPSILON)
    x = torch.randn(2, 8, 5, 5, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), norm.eval()(conv(x)), atol=1e-5, rtol=1e-5)


def test_checkpoint_of_another_format_is_refused():
    with pytest.raises(ValueError, match=MOBILEFACENET_FORMAT):
        build_mobilefacenet({"format": "lowkey-graph/1", "embedding_dim": EMBEDDING_DIM, "state_dict": {}})
