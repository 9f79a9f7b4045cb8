"""EdgeFace-xs (Idiap), a dynamically quantised state dict -> a lowkey-timm/1 float checkpoint.

The upstream file (its origin, licence and facts: the model mirror's README.md) was saved from
`torch.ao.quantization.quantize_dynamic`: every `Linear` became a dynamically quantised one whose
state is `<layer>._packed_params._packed_params` = (int8 weight, float bias), plus
`<layer>._packed_params.dtype`, `<layer>.scale` and `<layer>.zero_point`; every key carries the
wrapper's `model.` prefix. Such a module quantises its *activations* with a scale taken from each
batch, so one face's embedding changes with the other faces in its batch (tests/test_recognizers.py
measures it) — the engine must never run it that way.

So the weights are dequantised here, once, at fetch time: each packed weight becomes
`weight.dequantize()` (float32; the int8 values times their scale), the bias is kept, the dtype,
scale and zero-point keys (activation quantisation settings, unused by a float Linear) are dropped,
and the result must fit timm's `edgenext_x_small` with a 512-wide head key for key and shape for shape.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from lowkey_engine.faces.timm_net import TIMM_FORMAT, new_timm_net

from .state_dicts import load_checked

ARCHITECTURE = "edgenext_x_small"
WRAPPER_PREFIX = "model."
PACKED_PARAMS = "._packed_params._packed_params"
#: Per quantised layer: settings of the activation quantisation, not weights.
QUANTISATION_SETTINGS = ("._packed_params.dtype", ".scale", ".zero_point")
#: The head's embedding layer, whose output size is the embedding size.
EMBEDDING_LAYER = "head.fc"


def convert(files: dict[str, Path], output: Path) -> None:
    """files["state_dict"]: upstream's edgeface_xs_q.pt; writes {"format", "architecture",
    "embedding_dim", "state_dict"} (float32) to `output`."""
    source = Path(files["state_dict"])
    raw = torch.load(source, map_location="cpu", weights_only=True)
    state = dequantised_state(raw, source.name)
    embedding_dim = state[f"{EMBEDDING_LAYER}.weight"].shape[0]
    checked = load_checked(new_timm_net(ARCHITECTURE, embedding_dim), state, source.name)
    torch.save({"format": TIMM_FORMAT, "architecture": ARCHITECTURE, "embedding_dim": embedding_dim,
                "state_dict": checked}, output)


def dequantised_state(raw: dict, what: str) -> dict[str, Tensor]:
    """The float state dict of a dynamically quantised one: prefix stripped, each quantised
    Linear's packed (weight, bias) as `<layer>.weight` (dequantised) and `<layer>.bias`, its
    quantisation settings dropped. ValueError on a key that is neither a tensor nor one of those."""
    state = {key.removeprefix(WRAPPER_PREFIX): value for key, value in raw.items()}
    layers = [key.removesuffix(PACKED_PARAMS) for key in state if key.endswith(PACKED_PARAMS)]
    floats: dict[str, Tensor] = {}
    for layer in layers:
        weight, bias = state.pop(layer + PACKED_PARAMS)
        if not weight.is_quantized:
            raise ValueError(f"{what}: {layer}'s packed weight is not quantised ({weight.dtype})")
        floats[f"{layer}.weight"] = weight.dequantize().float()
        if bias is not None:
            floats[f"{layer}.bias"] = bias.detach().float().clone()
        for suffix in QUANTISATION_SETTINGS:
            state.pop(layer + suffix, None)
    for key, value in state.items():
        if not isinstance(value, Tensor) or value.is_quantized:
            raise ValueError(f"{what}: {key!r} is neither a float tensor nor part of a quantised Linear")
        floats[key] = value
    return floats
