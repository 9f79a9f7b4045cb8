"""A timm architecture rebuilt from a converted checkpoint (format lowkey-timm/1): EdgeFace-xs.

The checkpoint holds the timm architecture's name, the embedding size (the classifier timm builds
as `head.fc` is the embedding layer) and a plain float32 state dict; the weights come only from
that file (weights/converters/edgeface.py), never from a download. timm (PyPI `timm`, 1.0.x) is
needed at run time to build the module: the checkpoint stays a state dict, which `load_net` reads
with `weights_only=True` (no pickled code), rather than a saved module.

EdgeFace-xs: 112x112 RGB faces on the ArcFace template, NCHW, standardised as (x - 0.5) / 0.5 for
pixels x in [0, 1]; output (N, 512), not normalised, compared by cosine. `RecognizerSpec`
'edgeface-xs' describes that.
"""

from __future__ import annotations

from typing import Any

from torch import nn

TIMM_FORMAT = "lowkey-timm/1"


def new_timm_net(architecture: str, embedding_dim: int) -> nn.Module:
    """A randomly initialised timm `architecture` whose head outputs `embedding_dim` values;
    downloads nothing (pretrained=False)."""
    # timm takes a second or two to import: only pay for it when a timm model is used.
    import timm

    net = timm.create_model(architecture, pretrained=False)
    net.reset_classifier(embedding_dim)
    return net


def build_timm_net(checkpoint: dict[str, Any]) -> nn.Module:
    """The network of a lowkey-timm/1 checkpoint; every key and shape must match."""
    if checkpoint.get("format") != TIMM_FORMAT:
        raise ValueError(f"not a {TIMM_FORMAT} checkpoint: format={checkpoint.get('format')!r}")
    net = new_timm_net(str(checkpoint["architecture"]), int(checkpoint["embedding_dim"]))
    net.load_state_dict(checkpoint["state_dict"])
    return net
