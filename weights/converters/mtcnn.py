"""MTCNN: facenet-pytorch's three state dicts gathered into one checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

MTCNN_FORMAT = "lowkey-mtcnn/1"


def convert(files: dict[str, Path], output: Path) -> None:
    checkpoint = {"format": MTCNN_FORMAT}
    for net in ("pnet", "rnet", "onet"):
        checkpoint[net] = torch.load(files[net], map_location="cpu", weights_only=True)
    torch.save(checkpoint, output)
