"""facenet-pytorch release files (InceptionResnetV1 state dicts) -> lowkey-facenet/1 checkpoints.

The release files include the classifier the model was trained with (`logits.*`: 8631 VGGFace2 or
10575 CASIA-WebFace identities); embeddings do not use it, so it is dropped. Everything else must
match a freshly built InceptionResnetV1(classify=False) key for key and shape for shape.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lowkey_engine.faces.facenet import FACENET_FORMAT, new_inception_resnet

from .state_dicts import load_checked, read_state_dict

CLASSIFIER_PREFIX = "logits."


def convert(files: dict[str, Path], output: Path) -> None:
    """files["state_dict"]: the upstream .pt file; writes {"format", "state_dict"} to `output`."""
    source = Path(files["state_dict"])
    state = {k: v for k, v in read_state_dict(source).items() if not k.startswith(CLASSIFIER_PREFIX)}
    features = load_checked(new_inception_resnet(), state, source.name)
    torch.save({"format": FACENET_FORMAT, "state_dict": features}, output)
