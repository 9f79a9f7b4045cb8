"""Recognizers as a face search sees them: find the subject's face in an encoded photo as it
reaches the searcher, and embed it. `MtcnnObserver` runs our detector and our recognizers;
`real_dlib.RealDlibObserver` the real dlib pipeline as a black box."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from .datasets import most_central

#: The real dlib pipeline's id in results (it is not one of our recognizers).
REAL_DLIB_ID = "dlib-real"


@dataclass(frozen=True)
class RecognizerInfo:
    id: str
    metric: str           # "cosine" (unit embeddings) or "euclidean"
    detector: str         # what finds the faces it embeds


class Observer(Protocol):
    """Finds the subject's face in an encoded photo and embeds it with one or more recognizers."""

    recognizers: tuple[RecognizerInfo, ...]

    def observe(self, data: bytes) -> dict[str, torch.Tensor]:
        """recognizer id -> embedding (D,); a recognizer is absent when no face was found."""


def observe_many(observer, photos: Sequence[bytes]) -> list[dict[str, torch.Tensor]]:
    """`observer.observe` on each photo; batched when the observer has `observe_many`."""
    if hasattr(observer, "observe_many"):
        return observer.observe_many(photos)
    return [observer.observe(data) for data in photos]


class MtcnnObserver:
    """Our MTCNN detector on the photo as it arrives, the central face's landmarks, then each of
    our recognizers (its own alignment template and preprocessing), compared as its own users
    compare faces (`RecognizerSpec.comparison`: dlib's raw descriptors by Euclidean distance)."""

    def __init__(self, recognizer_ids: Sequence[str], device: str | torch.device = "cpu"):
        from ..faces.detect import load_detector
        from ..faces.recognizers import load_recognizer

        self.device = torch.device(device)
        self.detector = load_detector(self.device)
        self.models = {r: load_recognizer(r, self.device) for r in recognizer_ids}
        self.recognizers = tuple(RecognizerInfo(r, model.spec.comparison, "mtcnn") for r, model in self.models.items())

    @property
    def signature(self) -> str:
        """What decides this observer's embeddings: the model files (by digest) and metrics."""
        from ..faces.paths import converted_path, file_digest

        files = {name: file_digest(converted_path(name)) for name in ("mtcnn", *self.models)}
        return f"mtcnn-central-face {files} {[(i.id, i.metric) for i in self.recognizers]}"

    def observe(self, data: bytes) -> dict[str, torch.Tensor]:
        return self.observe_many([data])[0]

    @torch.no_grad()
    def observe_many(self, photos: Sequence[bytes]) -> list[dict[str, torch.Tensor]]:
        """One detector call for all photos; one embedding batch per photo size and recognizer."""
        from ..images.decode import decode_image

        pixels = [decode_image(data).pixels.to(self.device) for data in photos]
        found = self.detector.detect(pixels) if pixels else []
        out: list[dict[str, torch.Tensor]] = [{} for _ in photos]
        by_size: dict[tuple[int, int], list[tuple[int, torch.Tensor]]] = {}
        for index, (image, faces) in enumerate(zip(pixels, found)):
            face = most_central(faces, image.shape[2], image.shape[1])
            if face is not None:
                landmarks = torch.as_tensor(face.landmarks, dtype=torch.float32, device=self.device)
                by_size.setdefault(tuple(image.shape[1:]), []).append((index, landmarks))
        for members in by_size.values():
            indices = [i for i, _ in members]
            images = torch.stack([pixels[i] for i in indices])
            landmarks = torch.stack([points for _, points in members])
            for recognizer_id, model in self.models.items():
                aligned = model.align(images, landmarks)
                # as its own users compare them: unit vectors by cosine, dlib's raw descriptors by distance
                embeddings = (model.descriptors(aligned) if model.spec.comparison == "euclidean"
                              else model(aligned)).cpu()
                for i, embedding in zip(indices, embeddings):
                    out[i][recognizer_id] = embedding
        return out
