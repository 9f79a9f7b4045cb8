"""Helpers for converters whose input is a PyTorch state dict: read it, fold batch norms, check it
against a model."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The state dict saved at `path` (tensors by name), loaded on the CPU without running pickled
    code; ValueError if the file holds something else."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{Path(path).name} is not a state dict of tensors")
    return dict(state)


def load_checked(module: nn.Module, state: Mapping[str, Tensor], what: str) -> dict[str, Tensor]:
    """Load `state` into `module`, requiring exactly its keys and shapes, and return the module's
    own state dict (complete, in its key order). ValueError naming `what` and every mismatch."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{what} does not fit {type(module).__name__}: {exc}") from exc
    return module.state_dict()


def fold_batch_norm(weight: Tensor, bias: Tensor | None, gamma: Tensor, beta: Tensor, mean: Tensor,
                    var: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(weight, bias) of the one convolution computing bn(conv(x)) in eval mode, for a conv weight
    (out, in/groups, kh, kw) and its batch norm's per-output-channel statistics: with
    s = gamma / sqrt(var + eps), weight * s and beta + (bias - mean) * s. Computed in float64,
    returned in the weight's dtype."""
    if not gamma.numel() == beta.numel() == mean.numel() == var.numel() == weight.shape[0]:
        raise ValueError(f"batch norm statistics of {gamma.numel()} channels after a convolution "
                         f"with {weight.shape[0]} output channels")
    scale = gamma.double() / torch.sqrt(var.double() + eps)
    base = bias.double() if bias is not None else torch.zeros_like(scale)
    folded_weight = weight.double() * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    folded_bias = beta.double() + (base - mean.double()) * scale
    return folded_weight.to(weight.dtype), folded_bias.to(weight.dtype)
