"""facenet-pytorch's InceptionResnetV1, rebuilt from a converted checkpoint (format lowkey-facenet/1).

The architecture is facenet-pytorch's own code; the weights come only from the converted file
(see weights/converters/facenet.py), never from a download. The network takes 160x160 RGB faces,
NCHW, standardised as (x * 255 - 127.5) / 128 for pixels x in [0, 1], and returns unit 512-D
embeddings; `RecognizerSpec`s 'facenet-vggface2' and 'facenet-casia' describe that.
"""

from __future__ import annotations

from typing import Any

from torch import nn

FACENET_FORMAT = "lowkey-facenet/1"


def new_inception_resnet() -> nn.Module:
    """A randomly initialised InceptionResnetV1 without its classifier; downloads nothing."""
    # facenet_pytorch takes seconds to import: only pay for it when a facenet model is used.
    from facenet_pytorch import InceptionResnetV1

    return InceptionResnetV1(pretrained=None, classify=False)


def build_facenet(checkpoint: dict[str, Any]) -> nn.Module:
    """The InceptionResnetV1 of a lowkey-facenet/1 checkpoint; every key and shape must match."""
    if checkpoint.get("format") != FACENET_FORMAT:
        raise ValueError(f"not a {FACENET_FORMAT} checkpoint: format={checkpoint.get('format')!r}")
    net = new_inception_resnet()
    net.load_state_dict(checkpoint["state_dict"])
    return net
