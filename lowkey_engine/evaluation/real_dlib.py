"""The real dlib face pipeline as a black-box recognizer for `lowkey eval --real-dlib`.

What the `face_recognition` package does by default, called on dlib directly: the HOG frontal
face detector (upsampled once), the 5-point shape predictor, and dlib's ResNet descriptor
(`dlib_face_recognition_resnet_model_v1`), compared by Euclidean distance. Nothing here is
differentiable and the attack never sees it. Needs the `eval` extra: `dlib-bin` (prebuilt dlib) and
`face_recognition_models` (the model files; found on disk without importing the package, whose
__init__ needs pkg_resources). Imported only when asked for.
"""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .datasets import most_central
from .observers import REAL_DLIB_ID, RecognizerInfo

#: face_recognition's defaults: upsample once for HOG, one jitter for the descriptor.
HOG_UPSAMPLE = 1
NUM_JITTERS = 1
SHAPE_PREDICTOR = "shape_predictor_5_face_landmarks.dat"
DESCRIPTOR_MODEL = "dlib_face_recognition_resnet_model_v1.dat"


class RealDlibUnavailable(RuntimeError):
    """dlib or its model files are not installed."""


def model_folder() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise RealDlibUnavailable("the real dlib pipeline needs face_recognition_models: "
                                  "pip install 'lowkey[eval]' (dlib-bin, face_recognition_models)")
    folder = Path(spec.origin).parent / "models"
    for name in (SHAPE_PREDICTOR, DESCRIPTOR_MODEL):
        if not (folder / name).is_file():
            raise RealDlibUnavailable(f"{folder / name} is missing: reinstall face_recognition_models")
    return folder


class _Box:
    def __init__(self, rect):
        self.rect = rect
        self.box = (rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1)


class RealDlibObserver:
    """HOG detector -> central face -> 5 landmarks -> 128-D descriptor (not normalised)."""

    recognizers = (RecognizerInfo(REAL_DLIB_ID, "euclidean", "dlib-hog"),)

    def __init__(self):
        try:
            import dlib
        except ImportError as missing:
            raise RealDlibUnavailable("the real dlib pipeline needs dlib: "
                                      "pip install dlib-bin==20.0.1.post1") from missing
        folder = model_folder()
        self._files = {name: folder / name for name in (SHAPE_PREDICTOR, DESCRIPTOR_MODEL)}
        self._version = getattr(dlib, "__version__", "?")
        self._detector = dlib.get_frontal_face_detector()
        self._shapes = dlib.shape_predictor(str(folder / SHAPE_PREDICTOR))
        self._descriptor = dlib.face_recognition_model_v1(str(folder / DESCRIPTOR_MODEL))

    @property
    def signature(self) -> str:
        """What decides its descriptors: dlib's version, its model files, the pipeline's knobs."""
        from ..faces.paths import file_digest

        files = {name: file_digest(path) for name, path in self._files.items()}
        return f"dlib {self._version} hog-upsample {HOG_UPSAMPLE} jitters {NUM_JITTERS} {files}"

    def observe(self, data: bytes) -> dict[str, torch.Tensor]:
        with Image.open(io.BytesIO(data)) as opened:
            pixels = np.ascontiguousarray(np.asarray(ImageOps.exif_transpose(opened).convert("RGB")))
        height, width = pixels.shape[:2]
        face = most_central([_Box(r) for r in self._detector(pixels, HOG_UPSAMPLE)], width, height)
        if face is None:
            return {}
        shape = self._shapes(pixels, face.rect)
        descriptor = self._descriptor.compute_face_descriptor(pixels, shape, NUM_JITTERS)
        return {REAL_DLIB_ID: torch.tensor(np.asarray(descriptor), dtype=torch.float32)}
