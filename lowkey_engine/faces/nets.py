"""Builds the network inside a converted checkpoint, by the checkpoint's `format`.

Converted recognizers are graph checkpoints run by GraphNet; models whose architecture ships as
Python code (facenet-pytorch's InceptionResnetV1, arcface-pytorch's MobileFaceNet) are rebuilt from
that code (the package's, or the engine's own rewrite of it) plus a state dict.
Each builder takes the loaded checkpoint dict and returns an `nn.Module` on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .facenet import FACENET_FORMAT, build_facenet
from .graphnet import GRAPH_FORMAT, GraphNet
from .mobilefacenet import MOBILEFACENET_FORMAT, build_mobilefacenet
from .timm_net import TIMM_FORMAT, build_timm_net

NET_BUILDERS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    GRAPH_FORMAT: GraphNet,
    FACENET_FORMAT: build_facenet,
    MOBILEFACENET_FORMAT: build_mobilefacenet,
    TIMM_FORMAT: build_timm_net,
}


def load_net(path: Path) -> nn.Module:
    """The network stored at `path` (a converted checkpoint)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    fmt = checkpoint.get("format") if isinstance(checkpoint, dict) else None
    if fmt not in NET_BUILDERS:
        raise ValueError(f"{path}: unknown checkpoint format {fmt!r}; known: {', '.join(NET_BUILDERS)}")
    return NET_BUILDERS[fmt](checkpoint)
