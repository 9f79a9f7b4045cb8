"""LPIPS (Zhang et al. 2018, AlexNet variant) as a perceptual distance, from fetched weights only.

    metric = load_lpips()            # MissingWeightsError until both files below are fetched
    d = metric(original, changed)    # (N,) LPIPS distances; 0 = identical

Inputs are two RGB batches with pixels in [0, 1], NCHW, of the same shape. The network is the
`lpips` package's code; its ImageNet AlexNet trunk ('lpips-alexnet-backbone', upstream only) and
its calibrated linear layers ('lpips-alex-linear', from the lpips wheel) are both loaded from
converted files under weights/, so torchvision downloads nothing. Without the backbone this
raises MissingWeightsError and callers fall back to an SSIM penalty: LPIPS computed on a random
backbone is not LPIPS and must never be reported as such.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..faces.paths import require_converted

LPIPS_BACKBONE_ID = "lpips-alexnet-backbone"
LPIPS_LINEAR_ID = "lpips-alex-linear"
#: Converted checkpoints: {"format": ..., "state_dict": ...} for `LPIPS.net` (the AlexNet trunk,
#: keys "slice<k>.<i>.<param>") and for `LPIPS.lins` (keys "<k>.model.1.weight").
LPIPS_BACKBONE_FORMAT = "lowkey-lpips-alexnet/1"
LPIPS_LINEAR_FORMAT = "lowkey-lpips-alex-linear/1"
LPIPS_NET = "alex"


def new_lpips_alex() -> nn.Module:
    """An `lpips.LPIPS` AlexNet model with a random trunk and random linear layers, reading no
    weights file and downloading nothing: the shapes converters check against, and the shell
    `load_lpips` fills."""
    import lpips   # imports torchvision (seconds): only when LPIPS is used

    with warnings.catch_warnings():   # lpips passes torchvision's deprecated `pretrained=False`
        warnings.simplefilter("ignore", UserWarning)
        return lpips.LPIPS(pretrained=False, net=LPIPS_NET, pnet_rand=True, verbose=False)


class LpipsDistance(nn.Module):
    """LPIPS per image: RGB batches (N, 3, H, W) in [0, 1] -> distances (N,), differentiable in
    the images."""

    def __init__(self, lpips_model: nn.Module):
        super().__init__()
        self.lpips = lpips_model

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        if a.shape != b.shape:
            raise ValueError(f"LPIPS compares images of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        # normalize=True maps [0, 1] to the [-1, 1] that lpips expects.
        return self.lpips(a, b, normalize=True).reshape(a.shape[0])


def _converted_state_dict(path: Path, expected_format: str) -> dict[str, Any]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    found = checkpoint.get("format") if isinstance(checkpoint, dict) else None
    if found != expected_format:
        raise ValueError(f"{path}: expected a {expected_format} checkpoint, found format {found!r}")
    return checkpoint["state_dict"]


_CACHE: dict[str, LpipsDistance] = {}
_CACHE_LOCK = threading.Lock()


def load_lpips(device: str | torch.device = "cpu") -> LpipsDistance:
    """The LPIPS metric on `device`, loaded once and cached; eval(), no grad on its weights.
    Raises MissingWeightsError (naming the fetch command) when the backbone or the linear layers
    have not been fetched."""
    key = str(torch.device(device))
    with _CACHE_LOCK:
        if key not in _CACHE:
            backbone = _converted_state_dict(require_converted(LPIPS_BACKBONE_ID), LPIPS_BACKBONE_FORMAT)
            linear = _converted_state_dict(require_converted(LPIPS_LINEAR_ID), LPIPS_LINEAR_FORMAT)
            model = new_lpips_alex()
            model.net.load_state_dict(backbone)
            model.lins.load_state_dict(linear)
            metric = LpipsDistance(model).to(device).eval()
            metric.requires_grad_(False)
            _CACHE[key] = metric
        return _CACHE[key]
