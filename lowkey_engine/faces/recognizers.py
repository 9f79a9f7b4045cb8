"""The recognizer zoo: face-embedding models behind one interface.

Every recognizer takes aligned faces as RGB pixels in [0, 1], NCHW, at its own input size, and
returns unit-length embeddings (N, D). What differs between models (template, input size, colour
order, normalisation, embedding size) lives in its `RecognizerSpec`; the weights are converted
checkpoints under weights/ (see weights/manifest.toml), built by `nets.load_net`.

    rec = load_recognizer("mfn-expo")                    # loaded once, cached, eval(), no grad on weights
    faces = rec.align(images, landmarks)                 # (N, 3, 112, 112), differentiable in images
    emb = rec(faces)                                     # (N, 192), unit vectors
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .align import ARCFACE_TEMPLATE_112, PIXEL_CENTRE, scaled_template, similarity_transform, warp_faces
from .nets import load_net
from .paths import require_converted

#: dlib's 150x150 face chip (get_face_chip_details, padding 0.25, from its 5-point shape predictor)
#: expressed as MTCNN's 5 points (eye centres, nose tip, mouth corners), pixels on the chip.
#: Measured, not guessed: on 316 lfw-dev photos (80 people) the real dlib pipeline (dlib-bin 20.0.1,
#: face_recognition_models 0.3.0: HOG detector, 5-point predictor, get_face_chip) gave each photo's
#: image->chip transform (read off a coordinate-ramp image sent through get_face_chip; re-warping the
#: photo with it reproduces dlib's chip to 1.2/255); MTCNN's landmarks on the photo, mapped through
#: it and averaged, are these points (spread: eyes ~2 px, nose ~5 px, mouth ~5 px). dlib's 68-point
#: mean face (interpolation.h) puts the same features within 1-3.5 px of them. On lfw-dev people left
#: out of the fit, our descriptors then match real dlib's whole pipeline at cosine 0.993 on average
#: (the rough guess this replaced: 0.961).
DLIB_CHIP_TEMPLATE_150 = (
    (48.05, 46.01),
    (102.19, 45.91),
    (74.99, 78.17),
    (51.41, 106.29),
    (98.67, 106.32),
)

#: face-api.js's per-channel RGB mean for its dlib port, in 0..255 (dlib's own input layer uses it too).
DLIB_MEAN_RGB = (122.782, 117.001, 104.298)

#: ImageNet mean pixel (B, G, R) on 0..255 that Keras's 'caffe' preprocessing subtracts, without
#: scaling. The HSE FaceRes models separate identities best with it, in BGR order (measured on
#: lfw-dev: ROC AUC 0.998 vs 0.992 with plain RGB 0..255).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


#: Intel face-reidentification-retail-0095's 128x128 input as Intel's demos align to it (Open Model
#: Zoo's face_recognition_demo, as the model mirror's README states them): the five ArcFace points
#: of its 96x112 crop (the 112x112 template less its 8-pixel side margins), divided by (96, 112)
#: and multiplied by 128, i.e. (40.39, 59.08), (87.38, 58.86), (64.03, 81.98), (44.73, 105.56),
#: (83.64, 105.38) in OpenCV's pixel-index coordinates; here in continuous ones, like every template.
ARCFACE_CROP_96X112 = (96.0, 112.0)
ARCFACE_96X112_MARGIN = (112.0 - ARCFACE_CROP_96X112[0]) / 2
INTEL_REID_INPUT = 128
INTEL_REID_TEMPLATE_128 = tuple(
    ((x - PIXEL_CENTRE - ARCFACE_96X112_MARGIN) / ARCFACE_CROP_96X112[0] * INTEL_REID_INPUT + PIXEL_CENTRE,
     (y - PIXEL_CENTRE) / ARCFACE_CROP_96X112[1] * INTEL_REID_INPUT + PIXEL_CENTRE)
    for x, y in ARCFACE_TEMPLATE_112)


@dataclass(frozen=True)
class RecognizerSpec:
    """What a recognizer expects. Pixels reach the network as (x * 255 - mean) / std, x in [0, 1],
    channels in `channel_order`; `mean` is one value or one per channel (in `channel_order`)."""

    id: str
    input_size: int                                   # square side, pixels
    template: tuple[tuple[float, float], ...]        # 5 landmarks in input pixels
    embedding_dim: int
    channel_order: str = "RGB"                        # "RGB" or "BGR"
    mean: float | tuple[float, float, float] = 127.5
    std: float = 128.0
    layout: str = "NCHW"                              # layout the converted graph takes
    held_out: bool = False                            # never attacked; used to measure transfer
    in_default_ensemble: bool = False
    #: How the model's own users compare faces: "cosine" of unit embeddings, or "euclidean" distance
    #: between its raw descriptors (dlib), which `Recognizer.descriptors` returns.
    comparison: str = "cosine"


SPECS: dict[str, RecognizerSpec] = {
    spec.id: spec for spec in (
        RecognizerSpec("mfn-faceplugin", 112, ARCFACE_TEMPLATE_112, 512, channel_order="BGR",
                       mean=127.0, std=128.0, in_default_ensemble=True),
        RecognizerSpec("mfn-expo", 112, ARCFACE_TEMPLATE_112, 192, in_default_ensemble=True),
        RecognizerSpec("hse-faceres", 224, scaled_template(ARCFACE_TEMPLATE_112, 2.0), 1024,
                       channel_order="BGR", mean=CAFFE_MEAN_BGR, std=1.0),
        RecognizerSpec("hse-faceres-deep", 224, scaled_template(ARCFACE_TEMPLATE_112, 2.0), 1024,
                       channel_order="BGR", mean=CAFFE_MEAN_BGR, std=1.0),
        RecognizerSpec("dlib-resnet", 150, DLIB_CHIP_TEMPLATE_150, 128, mean=DLIB_MEAN_RGB, std=255.0,
                       held_out=True, comparison="euclidean"),
        # BGR 0..255 as it is: the IR's first layers scale and shift each channel. Its rt_info records
        # a conversion from ONNX with reverse_input_channels and scale 255 (the ONNX took RGB 0..1).
        # On lfw-dev RGB scores as well (AUC 0.9999 both): the order follows Intel, not a measurement.
        RecognizerSpec("face-reid-0095", INTEL_REID_INPUT, INTEL_REID_TEMPLATE_128, 256, channel_order="BGR",
                       mean=0.0, std=1.0, in_default_ensemble=True),
        # arcface-pytorch standardises (x / 255 - 0.5) / 0.5.
        RecognizerSpec("mfn-casia", 112, ARCFACE_TEMPLATE_112, 128, mean=127.5, std=127.5,
                       in_default_ensemble=True),
        # EdgeFace-xs (Idiap; EdgeNeXt, WebFace12M): upstream standardises (x / 255 - 0.5) / 0.5.
        # The one modern surrogate: attacked, it carries the change to recognizers of other
        # families (docs/research.md, 2026-12-07, t29); held out (`lowkey eval --ensemble` of the
        # other four, or `--leave-one-out` over all five) it measures how they transfer to it.
        RecognizerSpec("edgeface-xs", 112, ARCFACE_TEMPLATE_112, 512, mean=127.5, std=127.5,
                       in_default_ensemble=True),
        # facenet-pytorch (upstream weights only): fixed standardisation = the default mean/std.
        RecognizerSpec("facenet-vggface2", 160, scaled_template(ARCFACE_TEMPLATE_112, 160 / 112), 512),
        RecognizerSpec("facenet-casia", 160, scaled_template(ARCFACE_TEMPLATE_112, 160 / 112), 512),
    )
}

DEFAULT_ENSEMBLE: tuple[str, ...] = tuple(s.id for s in SPECS.values() if s.in_default_ensemble)


class Recognizer(nn.Module):
    """A face-embedding model: aligned RGB in [0, 1] (N, 3, S, S) -> unit embeddings (N, D)."""

    def __init__(self, spec: RecognizerSpec, net: nn.Module):
        super().__init__()
        self.spec = spec
        self.net = net
        #: Layout the network runs in; `load_recognizer` picks channels-last on the CPU.
        self.memory_format = torch.contiguous_format
        self.register_buffer("_template", torch.tensor(spec.template, dtype=torch.float32), persistent=False)
        self.register_buffer("_mean", torch.tensor(spec.mean, dtype=torch.float32).reshape(1, -1, 1, 1),
                             persistent=False)

    def preprocess(self, faces: Tensor) -> Tensor:
        x = faces * 255.0
        if self.spec.channel_order == "BGR":
            x = x.flip(1)
        return (x - self._mean) / self.spec.std

    def descriptors(self, faces: Tensor) -> Tensor:
        """The network's own output (N, D) for aligned faces, not normalised (dlib compares these
        by Euclidean distance)."""
        size = self.spec.input_size
        if faces.shape[-2:] != (size, size):
            raise ValueError(f"{self.spec.id} takes {size}x{size} faces, got {tuple(faces.shape[-2:])}")
        pixels = self.preprocess(faces).contiguous(memory_format=self.memory_format)
        return self.net(pixels).flatten(1).float()

    def forward(self, faces: Tensor) -> Tensor:
        return F.normalize(self.descriptors(faces), dim=1)

    def alignment_matrices(self, landmarks: Tensor) -> Tensor:
        """(N, 5, 2) landmarks in source pixels -> (N, 2, 3) source-to-input-pixel transforms."""
        return similarity_transform(landmarks, self._template.to(landmarks.device))

    def align(self, images: Tensor, landmarks: Tensor) -> Tensor:
        """Aligned faces (N, 3, S, S) from images (N, 3, H, W) in [0, 1] and their (N, 5, 2)
        landmarks; differentiable with respect to `images`."""
        return warp_faces(images, self.alignment_matrices(landmarks), self.spec.input_size)

    def embed(self, images: Tensor, landmarks: Tensor, augment: Callable[[Tensor], Tensor] | None = None
              ) -> Tensor:
        """Unit embeddings (N, D) of the faces at `landmarks` (N, 5, 2) in `images` (N, 3, H, W),
        pixels in [0, 1]: align, then embed. `augment`, when given, transforms the aligned faces
        (N, 3, S, S) before the network sees them (the attack's input diversity)."""
        aligned = self.align(images, landmarks)
        return self(aligned if augment is None else augment(aligned))


_CACHE: dict[tuple[str, str], Recognizer] = {}
_CACHE_LOCK = threading.Lock()


def load_recognizer(model_id: str, device: str | torch.device = "cpu") -> Recognizer:
    """The recognizer `model_id`, loaded once per device and cached. Raises MissingWeightsError
    (naming the fetch command) when its converted file is absent, KeyError for an unknown id."""
    if model_id not in SPECS:
        raise KeyError(f"unknown recognizer {model_id!r}; known: {', '.join(SPECS)}")
    key = (model_id, str(torch.device(device)))
    with _CACHE_LOCK:
        if key not in _CACHE:
            net = load_net(require_converted(model_id))
            model = Recognizer(SPECS[model_id], net).to(device).eval()
            model.requires_grad_(False)
            if torch.device(device).type == "cpu":
                # oneDNN's depthwise convolutions run about 5 % faster on channels-last activations
                # (benchmarks/README.md, "Attack speed"); the same numbers to rounding
                model.net.to(memory_format=torch.channels_last)
                model.memory_format = torch.channels_last
            _CACHE[key] = model
        return _CACHE[key]
