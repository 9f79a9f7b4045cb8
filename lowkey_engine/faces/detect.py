"""Face detection: the MTCNN cascade, every face in a photo with its five landmarks.

    detector = load_detector("cpu")          # loaded once, cached, eval(), no grad on weights
    faces = detector.detect(image)           # list[Face], largest first
    per_photo = detector.detect([a, b, c])   # list[list[Face]], one list per photo

Photos are RGB float tensors (3, H, W) with pixels in [0, 1], or PIL images (converted to RGB;
EXIF orientation is the decoder's job), of any size. Each is searched on a working copy whose
longest side is at most `max_side` pixels; boxes and landmarks come back in pixels of the photo as
given, in continuous coordinates: x grows to the right, y downwards, (0, 0) is the top-left corner
of the top-left pixel, so pixel (row i, column j) spans [j, j + 1) x [i, i + 1).

The cascade (Zhang et al. 2016, "Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks"): P-Net slides a 12x12 window over an image pyramid and proposes boxes,
R-Net rescores and refines 24x24 crops of them, O-Net rescores 48x48 crops, refines the boxes and
places the landmarks. P-Net runs batched over photos whose working copies share a size; the R-Net
and O-Net crops of all photos of one call run as one batch.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torchvision.ops import box_area, nms, roi_align
from torchvision.transforms.functional import pil_to_tensor

from .paths import require_converted

#: Model id of the converted checkpoint, and the format tag written by the fetch step.
MODEL_ID = "mtcnn"
CHECKPOINT_FORMAT = "lowkey-mtcnn/1"

#: P-Net looks at 12x12 windows, one output cell every 2 pixels; R-Net and O-Net take square crops.
PNET_WINDOW = 12
PNET_STRIDE = 2
RNET_INPUT = 24
ONET_INPUT = 48

#: MTCNN's input normalisation: (pixel_0_255 - 127.5) / 128.
PIXEL_MEAN = 127.5
PIXEL_STD = 128.0

#: Overlap above which a lower-scored box is dropped: IoU within one pyramid level, IoU across
#: levels and after R-Net, and intersection over the smaller box after O-Net (which also removes a
#: box lying inside a bigger face).
PNET_LEVEL_NMS_IOU = 0.5
PNET_NMS_IOU = 0.7
RNET_NMS_IOU = 0.7
ONET_NMS_MIN_OVERLAP = 0.7

#: Landmark order: left/right as seen in the image (smaller x first).
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

ImageLike = Tensor | Image.Image


@dataclass(frozen=True)
class Face:
    """One face, in pixels of the photo it was found on (continuous coordinates, see module doc).

    box:       (x1, y1, x2, y2), x1 < x2, y1 < y2; may reach slightly outside the photo.
    score:     O-Net's face probability in [0, 1].
    landmarks: five (x, y) points in LANDMARK_NAMES order.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: tuple[tuple[float, float], ...]

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def size(self) -> float:
        """The longer side of the box, pixels: what `min_face_size` is compared with."""
        return max(self.width, self.height)


def _flatten_transposed(features: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, W*H*C). The dense layers come from a model that ran on transposed
    images, so they expect the feature map flattened in (width, height, channel) order."""
    return features.permute(0, 3, 2, 1).flatten(1)


def _face_log_odds(logits: Tensor) -> Tensor:
    """Background/face logits (channel or column 0, 1) -> log-odds of a face; sigmoid gives
    P(face). Boxes are ranked by log-odds: probabilities of clear faces all round to 1.0."""
    return logits[:, 1] - logits[:, 0]


class _PNet(nn.Module):
    """Proposal net. (N, 3, H, W) normalised pixels -> box offsets (N, 4, h, w) and face
    log-odds (N, h, w): output cell (i, j) scores the 12x12 window at (2j, 2i)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)   # face logits
        self.conv4_2 = nn.Conv2d(32, 4, 1)   # box offsets

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), _face_log_odds(self.conv4_1(x))


class _RNet(nn.Module):
    """Refine net. (N, 3, 24, 24) normalised crops -> box offsets (N, 4), face log-odds (N,)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)    # face logits
        self.dense5_2 = nn.Linear(128, 4)    # box offsets

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(_flatten_transposed(x)))
        return self.dense5_2(x), _face_log_odds(self.dense5_1(x))


class _ONet(nn.Module):
    """Output net. (N, 3, 48, 48) normalised crops -> box offsets (N, 4), landmarks (N, 10) as
    fractions of the crop (5 x then 5 y), face log-odds (N,)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)    # face logits
        self.dense6_2 = nn.Linear(256, 4)    # box offsets
        self.dense6_3 = nn.Linear(256, 10)   # landmarks

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(_flatten_transposed(x)))
        return self.dense6_2(x), self.dense6_3(x), _face_log_odds(self.dense6_1(x))


@dataclass
class _Candidates:
    """Boxes (K, 4) in working-copy pixels of photo `photo` (K,), with face log-odds (K,)."""

    boxes: Tensor
    scores: Tensor
    photo: Tensor

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def take(self, index: Tensor) -> _Candidates:
        return _Candidates(self.boxes[index], self.scores[index], self.photo[index])


class FaceDetector(nn.Module):
    """MTCNN with five landmarks. Follows `.to(device)`; input photos are moved to its device.

    Keyword knobs:
        min_face_size:    faces whose box's longer side is smaller than this many pixels of the
                          photo are not searched for and not returned. Faces smaller than
                          12 px of the working copy (12 * longest side / max_side photo pixels)
                          cannot be found either way.
        max_side:         longest side of the working copy, pixels; larger photos are downscaled
                          for detection, smaller ones are used as they are. It bounds the cost
                          (about 0.6 CPU-seconds for a 13-megapixel photo on one core); with
                          1600, faces under ~33 px of a 4352 px wide photo are missed.
        thresholds:       face probability each stage needs to pass a box on (P-, R-, O-Net);
                          MTCNN's published values, which favour finding every face over
                          rejecting every look-alike (a missed face goes unprotected).
        pyramid_factor:   ratio between successive image-pyramid scales, in (0, 1).
    """

    def __init__(self, *, min_face_size: float = 20.0, max_side: int = 1600,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
                 pyramid_factor: float = 0.709):
        super().__init__()
        if min_face_size <= 0:
            raise ValueError(f"min_face_size must be positive, got {min_face_size}")
        if max_side < PNET_WINDOW:
            raise ValueError(f"max_side must be at least {PNET_WINDOW}, got {max_side}")
        if len(thresholds) != 3 or not all(0.0 <= t <= 1.0 for t in thresholds):
            raise ValueError(f"thresholds must be three probabilities, got {thresholds}")
        if not 0.0 < pyramid_factor < 1.0:
            raise ValueError(f"pyramid_factor must be in (0, 1), got {pyramid_factor}")
        self.min_face_size = float(min_face_size)
        self.max_side = int(max_side)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.pyramid_factor = float(pyramid_factor)
        self.pnet, self.rnet, self.onet = _PNet(), _RNet(), _ONet()
        self.to(memory_format=torch.channels_last)   # about 2x faster convolutions on CPU

    @classmethod
    def load(cls, path: str | Path | None = None, **knobs) -> FaceDetector:
        """A detector with the converted weights at `path` (default: the fetched `mtcnn` file;
        raises MissingWeightsError naming the fetch command when it is absent), in eval mode."""
        path = require_converted(MODEL_ID) if path is None else Path(path)
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint "
                             f"(format {checkpoint.get('format')!r})")
        detector = cls(**knobs)
        for name in ("pnet", "rnet", "onet"):
            getattr(detector, name).load_state_dict(checkpoint[name])
        return detector.eval()

    @property
    def device(self) -> torch.device:
        return self.onet.dense5.weight.device

    @overload
    def detect(self, images: ImageLike) -> list[Face]: ...
    @overload
    def detect(self, images: Sequence[ImageLike]) -> list[list[Face]]: ...

    def detect(self, images):
        """Faces in one photo (-> list[Face]) or in each of several (a list, or an (N, 3, H, W)
        tensor -> list[list[Face]]). Each list is sorted largest face first; empty when none."""
        single = isinstance(images, Image.Image) or (isinstance(images, Tensor) and images.dim() == 3)
        photos = [self._as_tensor(photo) for photo in ([images] if single else images)]
        if not photos:
            return []
        found = self._detect_all(photos)
        return found[0] if single else found

    forward = detect

    def _as_tensor(self, photo: ImageLike) -> Tensor:
        if isinstance(photo, Image.Image):
            photo = pil_to_tensor(photo.convert("RGB")).float().div_(255.0)
        if not isinstance(photo, Tensor) or photo.dim() != 3 or photo.shape[0] != 3:
            raise ValueError("a photo must be a PIL image or an RGB tensor (3, H, W); got "
                             f"{type(photo).__name__} {tuple(getattr(photo, 'shape', ()))}")
        if not photo.is_floating_point():
            raise ValueError(f"photo tensors hold floats in [0, 1], got {photo.dtype}")
        return photo.to(self.device, torch.float32)

    @torch.inference_mode()
    def _detect_all(self, photos: list[Tensor]) -> list[list[Face]]:
        working = [self._working_copy(photo) for photo in photos]
        # Working-copy pixels per photo pixel, along x and y.
        scales = [(copy.shape[-1] / photo.shape[-1], copy.shape[-2] / photo.shape[-2])
                  for copy, photo in zip(working, photos)]
        proposals = self._propose(working, scales)
        source = _Halvings(_pad_to_common_size(working))
        refined = self._refine(source, proposals)
        final, landmarks = self._finish(source, refined)
        return self._to_faces(final, landmarks, scales, len(photos))

    def _working_copy(self, photo: Tensor) -> Tensor:
        height, width = photo.shape[-2:]
        scale = self.max_side / max(height, width)
        if scale >= 1.0:
            return photo
        return _resize(photo[None], (round(height * scale), round(width * scale)))[0]

    def _pyramid(self, height: int, width: int, min_face: float) -> list[float]:
        """Scales at which P-Net's 12 px window covers faces from `min_face` working pixels up
        to the whole image; never above 1 (upsampling adds no detail)."""
        scale = min(1.0, PNET_WINDOW / min_face)
        scales = []
        while min(height, width) * scale >= PNET_WINDOW:
            scales.append(scale)
            scale *= self.pyramid_factor
        return scales

    def _propose(self, working: list[Tensor], scales: list[tuple[float, float]]) -> _Candidates:
        """P-Net over each photo's pyramid: square candidate boxes in working pixels."""
        groups: dict[tuple[int, int, float], list[int]] = {}
        for index, (image, (scale_x, scale_y)) in enumerate(zip(working, scales)):
            min_face = self.min_face_size * min(scale_x, scale_y)
            groups.setdefault((*image.shape[-2:], min_face), []).append(index)

        found = []
        for (height, width, min_face), members in groups.items():
            level_image = torch.stack([working[i] for i in members])
            photo_of = torch.tensor(members, device=self.device)
            for scale in self._pyramid(height, width, min_face):
                size = (round(height * scale), round(width * scale))
                level_image = _resize(level_image, size)   # each level from the one before
                offsets, log_odds = self.pnet(_normalise(level_image))
                member, row, col = torch.nonzero(log_odds.sigmoid() >= self.thresholds[0], as_tuple=True)
                # The 12x12 window of output cell (row, col), mapped back to working pixels.
                left, top = col * PNET_STRIDE, row * PNET_STRIDE
                windows = torch.stack([left, top, left + PNET_WINDOW, top + PNET_WINDOW], 1).float()
                windows = windows / windows.new_tensor([size[1] / width, size[0] / height] * 2)
                level = _Candidates(_apply_offsets(windows, offsets[member, :, row, col]),
                                    log_odds[member, row, col], photo_of[member])
                # Suppress on the windows, refine after (the regressed boxes are noisier).
                keep = _nms_per_photo(windows, level.scores, level.photo, PNET_LEVEL_NMS_IOU)
                found.append((windows[keep], level.take(keep)))
        if not found:
            return _empty_candidates(self.device)
        windows = torch.cat([w for w, _ in found])
        candidates = _concat([c for _, c in found])
        keep = _nms_per_photo(windows, candidates.scores, candidates.photo, PNET_NMS_IOU)
        candidates = candidates.take(keep)
        candidates.boxes = _square(candidates.boxes)
        return candidates

    def _refine(self, source: _Halvings, candidates: _Candidates) -> _Candidates:
        """R-Net: rescored, suppressed, refined square boxes."""
        if not len(candidates):
            return candidates
        offsets, log_odds = self.rnet(source.crops(candidates, RNET_INPUT))
        passed = log_odds.sigmoid() >= self.thresholds[1]
        candidates = _Candidates(candidates.boxes[passed], log_odds[passed], candidates.photo[passed])
        offsets = offsets[passed]
        keep = _nms_per_photo(candidates.boxes, candidates.scores, candidates.photo, RNET_NMS_IOU)
        candidates, offsets = candidates.take(keep), offsets[keep]
        candidates.boxes = _square(_apply_offsets(candidates.boxes, offsets))
        return candidates

    def _finish(self, source: _Halvings, candidates: _Candidates) -> tuple[_Candidates, Tensor]:
        """O-Net: final boxes and scores, and landmarks (K, 5, 2), in working pixels."""
        if not len(candidates):
            return candidates, candidates.boxes.new_zeros(0, 5, 2)
        offsets, marks, log_odds = self.onet(source.crops(candidates, ONET_INPUT))
        passed = log_odds.sigmoid() >= self.thresholds[2]
        boxes = candidates.boxes[passed]
        origin, extent = boxes[:, None, :2], (boxes[:, 2:] - boxes[:, :2])[:, None, :]
        landmarks = origin + marks[passed].view(-1, 2, 5).transpose(1, 2) * extent
        final = _Candidates(_apply_offsets(boxes, offsets[passed]), log_odds[passed],
                            candidates.photo[passed])
        keep = _nms_min_overlap(final.boxes, final.scores, final.photo, ONET_NMS_MIN_OVERLAP)
        return final.take(keep), landmarks[keep]

    def _to_faces(self, final: _Candidates, landmarks: Tensor, scales: list[tuple[float, float]],
                  count: int) -> list[list[Face]]:
        """Results in working pixels -> `Face`s in each photo's own pixels, faces under
        `min_face_size` dropped, largest first."""
        per_photo: list[list[Face]] = [[] for _ in range(count)]
        boxes, scores, photos = final.boxes.cpu(), final.scores.cpu(), final.photo.tolist()
        for box, score, photo, points in zip(boxes, scores, photos, landmarks.cpu()):
            scale_x, scale_y = scales[photo]
            box = box / torch.tensor([scale_x, scale_y] * 2)
            points = points / torch.tensor([scale_x, scale_y])
            face = Face(tuple(box.tolist()), float(score.sigmoid()),
                        tuple(tuple(point) for point in points.tolist()))
            if face.size >= self.min_face_size:
                per_photo[photo].append(face)
        for faces in per_photo:
            faces.sort(key=lambda face: (face.size, face.score), reverse=True)
        return per_photo


def _resize(images: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, C, H, W) -> (N, C, *size), antialiased bilinear (area-like when shrinking)."""
    size = (max(1, size[0]), max(1, size[1]))
    if tuple(images.shape[-2:]) == size:
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)


def _normalise(pixels: Tensor) -> Tensor:
    """Pixels (N, 3, H, W) in [0, 1] -> MTCNN's input range, about [-1, 1], channels-last in
    memory like the nets' weights."""
    return ((pixels * 255.0 - PIXEL_MEAN) / PIXEL_STD).contiguous(memory_format=torch.channels_last)


def _pad_to_common_size(images: list[Tensor]) -> Tensor:
    """(3, h_i, w_i) images -> (N, 3, max h, max w), zero (black) below and right of each."""
    height = max(image.shape[-2] for image in images)
    width = max(image.shape[-1] for image in images)
    return torch.stack([F.pad(image, (0, width - image.shape[-1], 0, height - image.shape[-2]))
                        for image in images])


class _Halvings:
    """A canvas (N, 3, H, W) and its successive 2x box-filtered downscales, so that a box of any
    size is cropped from a copy where it spans 1-2 output pixels per input pixel."""

    def __init__(self, canvas: Tensor):
        self.levels = [canvas]

    def level(self, index: int) -> Tensor:
        while len(self.levels) <= index:
            self.levels.append(F.avg_pool2d(self.levels[-1], 2))
        return self.levels[index]

    def crops(self, candidates: _Candidates, side: int) -> Tensor:
        """Normalised (K, 3, side, side) crops of the candidates' square boxes, each output
        pixel the mean of 2x2 bilinear samples; black outside the photo, as MTCNN pads."""
        canvas = self.levels[0]
        rois = torch.cat([candidates.photo[:, None].to(canvas.dtype), candidates.boxes], 1)
        box_side = (candidates.boxes[:, 2:] - candidates.boxes[:, :2]).amax(1)
        halvings = torch.log2(box_side / side).floor().clamp(min=0).long()
        crops = canvas.new_zeros(len(candidates), canvas.shape[1], side, side)
        for index in halvings.unique().tolist():
            chosen = halvings == index
            crops[chosen] = roi_align(self.level(index), rois[chosen], (side, side),
                                      spatial_scale=0.5 ** index, sampling_ratio=2, aligned=True)
        return _normalise(crops)


def _apply_offsets(boxes: Tensor, offsets: Tensor) -> Tensor:
    """Move each edge of (K, 4) boxes by its offset (K, 4) times the box's width or height."""
    extent = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + offsets * extent


def _square(boxes: Tensor) -> Tensor:
    """The square with each box's centre and longer side."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).amax(1, keepdim=True) / 2
    return torch.cat([centre - half, centre + half], 1)


def _nms_per_photo(boxes: Tensor, scores: Tensor, photo: Tensor, iou: float) -> Tensor:
    """Indices of the boxes kept by greedy IoU suppression within each photo. Each photo's boxes
    are compared as they are (torchvision's batched_nms shifts boxes apart per photo, which
    rounds coordinates differently by position in the batch and can flip near-threshold ties)."""
    kept = [members[nms(boxes[members], scores[members], iou)]
            for members in (torch.nonzero(photo == p).flatten() for p in photo.unique())]
    return torch.cat(kept) if kept else photo.new_zeros(0)


def _nms_min_overlap(boxes: Tensor, scores: Tensor, groups: Tensor, threshold: float) -> Tensor:
    """Indices of the boxes kept by greedy suppression within each group, highest score first,
    where overlap is intersection over the smaller box's area."""
    order = scores.argsort(descending=True)
    boxes, groups = boxes[order], groups[order]
    top_left = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    bottom_right = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    intersection = (bottom_right - top_left).clamp(min=0).prod(-1)
    area = box_area(boxes)
    overlap = intersection / torch.minimum(area[:, None], area[None, :]).clamp(min=1e-9)
    suppresses = ((overlap > threshold) & (groups[:, None] == groups[None, :])).cpu()
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    kept = []
    for i in range(len(order)):
        if not suppressed[i]:
            kept.append(i)
            suppressed |= suppresses[i]
    return order[torch.tensor(kept, dtype=torch.long, device=order.device)]


def _empty_candidates(device: torch.device) -> _Candidates:
    return _Candidates(torch.zeros(0, 4, device=device), torch.zeros(0, device=device),
                       torch.zeros(0, dtype=torch.long, device=device))


def _concat(parts: list[_Candidates]) -> _Candidates:
    return _Candidates(torch.cat([p.boxes for p in parts]), torch.cat([p.scores for p in parts]),
                       torch.cat([p.photo for p in parts]))


_CACHE: dict[tuple[str, str], FaceDetector] = {}
_CACHE_LOCK = threading.Lock()


def load_detector(device: str | torch.device = "cpu", **knobs) -> FaceDetector:
    """The face detector with `knobs` (see FaceDetector), loaded once per device and knobs and
    cached: treat it as read-only. Raises MissingWeightsError (naming the fetch command) when the
    converted MTCNN file is absent."""
    key = (str(torch.device(device)), repr(sorted(knobs.items())))
    with _CACHE_LOCK:
        if key not in _CACHE:
            detector = FaceDetector.load(**knobs).to(device)
            detector.requires_grad_(False)
            _CACHE[key] = detector
        return _CACHE[key]
