"""arcface-pytorch MobileFaceNet state dicts (bubbliiiing) -> lowkey-mobilefacenet/1 checkpoints.

Upstream saves its whole `Arcface` module: the backbone's keys carry an `arcface.` prefix (stripped
here; a bare backbone state dict works too), and a file saved in training mode also holds the ArcFace
classifier `head.weight` (one row per CASIA-WebFace identity), which embeddings never use (dropped).

Every batch norm is folded into the convolution before it (see `state_dicts.fold_batch_norm`), so the
engine's MobileFaceNet (lowkey_engine/faces/mobilefacenet.py) has biased convolutions and no
BatchNorm layers. A batch norm `<block>.bn` belongs to `<block>.conv`; upstream's three top-level ones
are listed in `TOP_LEVEL_BATCH_NORMS`. Every other key (the PReLU slopes) must then fit the engine's
module key for key and shape for shape; a key left over, missing or misshapen is a ValueError.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from lowkey_engine.faces.mobilefacenet import MOBILEFACENET_FORMAT, MobileFaceNet

from .state_dicts import fold_batch_norm, load_checked, read_state_dict

BACKBONE_PREFIX = "arcface."
CLASSIFIER_PREFIX = "head."
#: torch's BatchNorm2d default, which upstream's batch norms use.
BATCH_NORM_EPSILON = 1e-5
#: Upstream's top-level batch norms and the convolution each follows.
TOP_LEVEL_BATCH_NORMS = {"sep_bn": "sep", "GDC_bn": "GDC_dw", "last_bn": "features"}
#: The last convolution, whose output channels are the embedding size.
EMBEDDING_CONV = "features"


def convert(files: dict[str, Path], output: Path) -> None:
    """files["state_dict"]: upstream's .pth; writes {"format", "embedding_dim", "state_dict"} to `output`."""
    source = Path(files["state_dict"])
    folded = fold_batch_norms(backbone_state(read_state_dict(source)), source.name)
    embedding_dim = folded[f"{EMBEDDING_CONV}.weight"].shape[0]
    state = load_checked(MobileFaceNet(embedding_dim), folded, source.name)
    torch.save({"format": MOBILEFACENET_FORMAT, "embedding_dim": embedding_dim, "state_dict": state}, output)


def backbone_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The backbone's keys without the `arcface.` prefix; the classifier's dropped."""
    return {key.removeprefix(BACKBONE_PREFIX): tensor for key, tensor in state.items()
            if not key.removeprefix(BACKBONE_PREFIX).startswith(CLASSIFIER_PREFIX)}


def convolution_of(batch_norm: str) -> str:
    """The convolution a batch norm follows: `<block>.bn` -> `<block>.conv`, or a top-level one."""
    if batch_norm in TOP_LEVEL_BATCH_NORMS:
        return TOP_LEVEL_BATCH_NORMS[batch_norm]
    block, _, leaf = batch_norm.rpartition(".")
    if leaf != "bn" or not block:
        raise ValueError(f"batch norm {batch_norm!r} follows no known convolution")
    return f"{block}.conv"


def fold_batch_norms(state: dict[str, Tensor], what: str) -> dict[str, Tensor]:
    """`state` with every batch norm (found by its `running_mean`) folded into its convolution's
    weight and a bias; the batch norm's keys are consumed, all other keys pass through unchanged."""
    remaining = dict(state)
    folded: dict[str, Tensor] = {}
    norms = [key.removesuffix(".running_mean") for key in state if key.endswith(".running_mean")]
    for norm in norms:
        conv = convolution_of(norm)
        try:
            weight = remaining.pop(f"{conv}.weight")
            gamma, beta, mean, var = (remaining.pop(f"{norm}.{name}")
                                      for name in ("weight", "bias", "running_mean", "running_var"))
        except KeyError as exc:
            raise ValueError(f"{what}: batch norm {norm!r} or its convolution {conv!r} lacks {exc}") from None
        remaining.pop(f"{norm}.num_batches_tracked", None)     # a training counter
        try:
            folded[f"{conv}.weight"], folded[f"{conv}.bias"] = fold_batch_norm(
                weight, remaining.pop(f"{conv}.bias", None), gamma, beta, mean, var, BATCH_NORM_EPSILON)
        except ValueError as exc:
            raise ValueError(f"{what}: {norm!r} after {conv!r}: {exc}") from None
    return {**folded, **remaining}
