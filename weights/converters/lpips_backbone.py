"""torchvision's ImageNet AlexNet (alexnet-owt-7be5be79.pth) -> a lowkey-lpips-alexnet/1
checkpoint for `LPIPS.net`, the LPIPS trunk.

LPIPS uses AlexNet's `features` only, cut into slices after its ReLUs; every layer keeps its index
within `features`, so torchvision's `features.<i>.<param>` is the trunk's `slice<k>.<i>.<param>`.
The classifier is dropped; any other key means the file is not torchvision's AlexNet.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lowkey_engine.evaluation.lpips_metric import LPIPS_BACKBONE_FORMAT, new_lpips_alex

from .state_dicts import load_checked, read_state_dict

FEATURES_PREFIX = "features."
CLASSIFIER_PREFIX = "classifier."


def convert(files: dict[str, Path], output: Path) -> None:
    """files["alexnet"]: torchvision's AlexNet state dict; writes {"format", "state_dict"}."""
    source = Path(files["alexnet"])
    upstream = read_state_dict(source)
    foreign = [k for k in upstream if not k.startswith((FEATURES_PREFIX, CLASSIFIER_PREFIX))]
    if foreign:
        raise ValueError(f"{source.name} is not torchvision's AlexNet: unexpected keys {foreign[:5]}")
    trunk = new_lpips_alex().net
    # "slice2.3.weight" (slice 2, features index 3) <- "features.3.weight"
    wanted = {key: FEATURES_PREFIX + key.split(".", 1)[1] for key in trunk.state_dict()}
    missing = sorted(set(wanted.values()) - upstream.keys())
    if missing:
        raise ValueError(f"{source.name} lacks AlexNet feature weights {missing}")
    state = load_checked(trunk, {key: upstream[src] for key, src in wanted.items()}, source.name)
    torch.save({"format": LPIPS_BACKBONE_FORMAT, "state_dict": state}, output)
