"""lpips' calibrated linear layers for AlexNet (lpips/weights/v0.1/alex.pth in the lpips wheel)
-> a lowkey-lpips-alex-linear/1 checkpoint for `LPIPS.lins`.

The wheel's file names the layers `lin<k>.model.1.weight` (LPIPS's attributes lin0..lin4); the
same layers are `LPIPS.lins[k]`, whose state dict says `<k>.model.1.weight`.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from lowkey_engine.evaluation.lpips_metric import LPIPS_LINEAR_FORMAT, new_lpips_alex

from .state_dicts import load_checked, read_state_dict

_LAYER_KEY = re.compile(r"lin(\d+)\.(.+)")


def convert(files: dict[str, Path], output: Path) -> None:
    """files["linear"]: the wheel's alex.pth; writes {"format", "state_dict"} to `output`."""
    source = Path(files["linear"])
    by_index = {}
    for key, tensor in read_state_dict(source).items():
        match = _LAYER_KEY.fullmatch(key)
        if match is None:
            raise ValueError(f"{source.name}: key {key!r} is not an LPIPS linear layer (lin<k>.*)")
        by_index[f"{match[1]}.{match[2]}"] = tensor
    lins = load_checked(new_lpips_alex().lins, by_index, source.name)
    torch.save({"format": LPIPS_LINEAR_FORMAT, "state_dict": lins}, output)
