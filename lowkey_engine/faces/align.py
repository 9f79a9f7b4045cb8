"""Five-landmark similarity alignment, differentiable with respect to the pixels.

Landmarks are the 5 points MTCNN gives, in this order: left eye, right eye (as seen in the image,
i.e. the eye with the smaller x first), nose tip, left mouth corner, right mouth corner; (x, y) in
pixels of the image they were found on, in continuous coordinates as the detector reports them:
(0, 0) is the top-left corner of the top-left pixel, whose centre is (0.5, 0.5).

`similarity_transform` fits scale+rotation+translation from landmarks to a recognizer's template
(Umeyama, least squares). `warp_faces` samples the aligned faces with `affine_grid`/`grid_sample`,
so gradients flow from a recognizer's loss back to every pixel of the source image or crop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: Offset from pixel-index coordinates (OpenCV's: pixel centres at integers) to continuous ones.
PIXEL_CENTRE = 0.5

#: ArcFace's 5-point template for a 112x112 crop, published in pixel-index coordinates; here in
#: continuous ones. Used by most modern recognizers.
ARCFACE_TEMPLATE_112 = tuple((x + PIXEL_CENTRE, y + PIXEL_CENTRE) for x, y in (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
))


def scaled_template(template: tuple[tuple[float, float], ...], factor: float,
                    offset: tuple[float, float] = (0.0, 0.0)) -> tuple[tuple[float, float], ...]:
    """A template scaled about the origin, then shifted: e.g. ArcFace 112 -> 224 with factor 2."""
    return tuple((x * factor + offset[0], y * factor + offset[1]) for x, y in template)


def similarity_transform(src: Tensor, dst: Tensor) -> Tensor:
    """Least-squares similarity transform mapping points `src` onto `dst`.

    src, dst: (..., K, 2) float tensors, K >= 2. Returns (..., 2, 3) matrices M with
    dst ~= M[:, :2] @ src + M[:, 2]. Reflections are excluded (Umeyama 1991).
    """
    src = src.to(torch.float64)
    dst = dst.to(torch.float64).expand_as(src)
    src_mean, dst_mean = src.mean(-2, keepdim=True), dst.mean(-2, keepdim=True)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.transpose(-1, -2) @ src_c / src.shape[-2]
    u, s, vh = torch.linalg.svd(cov)
    sign = torch.ones_like(s)
    sign[..., -1] = torch.sign(torch.linalg.det(u) * torch.linalg.det(vh))
    rotation = u @ torch.diag_embed(sign) @ vh
    variance = src_c.pow(2).sum((-1, -2)) / src.shape[-2]
    scale = (s * sign).sum(-1) / variance
    linear = scale[..., None, None] * rotation
    translation = dst_mean.transpose(-1, -2) - linear @ src_mean.transpose(-1, -2)
    return torch.cat([linear, translation], dim=-1).to(torch.float32)


def source_pixels_per_output_pixel(matrices: Tensor) -> Tensor:
    """(N,) how many source pixels one output pixel spans, for similarity transforms (N, 2, 3)."""
    return 1.0 / torch.linalg.det(matrices[:, :, :2].double()).abs().sqrt().float()


def warp_faces(images: Tensor, matrices: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Sample aligned faces from images.

    images:   (N, C, H, W) float, any range (pixels in [0, 1] by convention), one source per face.
    matrices: (N, 2, 3) maps source coordinates (x, y) to output coordinates (both continuous),
              as returned by `similarity_transform(landmarks, template)`.
    size:     output side (square) or (height, width).
    Returns (N, C, h, w), bilinear, zeros outside the source. Differentiable in `images`.

    Where the face is at least twice as large in the source as in the output, the source is first
    averaged over k x k blocks (k = that ratio, rounded down, the smallest of the batch): bilinear
    sampling alone would read 4 of every k^2 pixels, aliasing the face and passing gradients to
    only those pixels.
    """
    factor = int(source_pixels_per_output_pixel(matrices).min()) if len(matrices) else 1
    if factor >= 2:
        images = F.avg_pool2d(images, factor, ceil_mode=True)
        matrices = torch.cat([matrices[:, :, :2] * factor, matrices[:, :, 2:]], dim=-1)
    out_h, out_w = (size, size) if isinstance(size, int) else size
    n, _, in_h, in_w = images.shape
    matrices = matrices.to(images.dtype)
    # Invert: output pixel -> source pixel.
    linear, shift = matrices[:, :, :2], matrices[:, :, 2:]
    inv_linear = torch.linalg.inv(linear)
    inv = torch.cat([inv_linear, -inv_linear @ shift], dim=-1)
    # grid_sample's normalised coordinates (align_corners=False) are continuous ones rescaled:
    # u = 2x / W - 1  <=>  x = (u + 1) W / 2
    def to_norm(w: int, h: int) -> Tensor:
        return images.new_tensor([[2.0 / w, 0, -1], [0, 2.0 / h, -1], [0, 0, 1]])

    def from_norm(w: int, h: int) -> Tensor:
        return images.new_tensor([[w / 2.0, 0, w / 2.0], [0, h / 2.0, h / 2.0], [0, 0, 1]])

    inv3 = torch.cat([inv, images.new_tensor([0, 0, 1]).expand(n, 1, 3)], dim=1)
    theta = (to_norm(in_w, in_h) @ inv3 @ from_norm(out_w, out_h))[:, :2]
    grid = F.affine_grid(theta, [n, images.shape[1], out_h, out_w], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
