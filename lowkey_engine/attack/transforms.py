"""Differentiable image transforms used inside the attack. Images are NCHW RGB in [0, 1].

- `gaussian_blur`: LowKey's smoothed branch (kernel 7, sigma 3 in the paper).
- `resize`: antialiased bilinear resize, for downscaling as social sites do.
- `jpeg_approx`: JPEG re-encoding with straight-through rounding of the DCT coefficients, so the
  attack can optimise through the quantisation that an upload pipeline applies.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..images.jpeg_tables import scaled_tables

JPEG_BLOCK = 8
JPEG_LEVEL_SHIFT = 128.0

# RGB -> YCbCr (JFIF) on 0..255 values, without JFIF's +128 offset on Cb and Cr.
_RGB_TO_YCBCR = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))


def gaussian_kernel(size: int, sigma: float, device=None, dtype=torch.float32) -> Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    kernel = torch.exp(-coords.pow(2) / (2 * sigma * sigma))
    return kernel / kernel.sum()


def gaussian_blur(images: Tensor, size: int = 7, sigma: float = 3.0) -> Tensor:
    """Separable Gaussian blur with reflected borders; output the same size."""
    channels = images.shape[1]
    kernel = gaussian_kernel(size, sigma, images.device, images.dtype)
    pad = size // 2
    x = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, size).expand(channels, 1, 1, size), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, size, 1).expand(channels, 1, size, 1), groups=channels)


def resize(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize to (height, width), antialiased when shrinking."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    shrinking = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrinking)


def downscale_and_back(images: Tensor, factor: float) -> Tensor:
    """What a downscale by `factor` (0 < factor <= 1) leaves, seen at the original size."""
    if factor >= 1.0:
        return images
    height, width = images.shape[-2:]
    small = (max(1, round(height * factor)), max(1, round(width * factor)))
    return resize(resize(images, small), (height, width))


@functools.lru_cache(maxsize=8)
def _dct_matrix(device: str, dtype: torch.dtype) -> Tensor:
    n = JPEG_BLOCK
    k = torch.arange(n, dtype=torch.float64)
    basis = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))
    basis[0] /= math.sqrt(2)
    return (basis * math.sqrt(2 / n)).to(device=device, dtype=dtype)


def quantisation_tables(quality: int, device=None, dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """libjpeg's quality scaling of the standard tables: (luma, chroma), each (8, 8)."""
    return tuple(torch.tensor(table, dtype=dtype, device=device).view(JPEG_BLOCK, JPEG_BLOCK)
                 for table in scaled_tables(quality))


def _straight_through_round(x: Tensor) -> Tensor:
    return x + (torch.round(x) - x).detach()


def jpeg_approx(images: Tensor, quality: int) -> Tensor:
    """Differentiable JPEG at `quality` (1-100): YCbCr, 4:2:0 chroma, 8x8 DCT, quantise, back.

    Rounding is straight-through (its gradient is the identity), the usual way to attack through
    JPEG. Sizes that are not multiples of 16 are padded by edge replication and cropped after.
    """
    n, _, height, width = images.shape
    pad_h, pad_w = (-height) % (2 * JPEG_BLOCK), (-width) % (2 * JPEG_BLOCK)
    x = F.pad(images, (0, pad_w, 0, pad_h), mode="replicate") * 255.0
    matrix = x.new_tensor(_RGB_TO_YCBCR)
    ycc = torch.einsum("oc,nchw->nohw", matrix, x)          # Y in 0..255, Cb and Cr centred on 0
    luma, chroma = ycc[:, :1], F.avg_pool2d(ycc[:, 1:], 2)
    luma_table, chroma_table = quantisation_tables(quality, x.device, x.dtype)
    luma = _blockwise_quantise(luma - JPEG_LEVEL_SHIFT, luma_table) + JPEG_LEVEL_SHIFT
    chroma = _blockwise_quantise(chroma, chroma_table)
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    rgb = torch.einsum("oc,nchw->nohw", torch.linalg.inv(matrix), torch.cat([luma, chroma], dim=1))
    return (rgb / 255.0)[:, :, :height, :width]


def _blockwise_quantise(plane: Tensor, table: Tensor) -> Tensor:
    """DCT each 8x8 block of (N, C, H, W) (H, W multiples of 8), quantise by `table`, inverse."""
    n, c, height, width = plane.shape
    b = JPEG_BLOCK
    blocks = plane.reshape(n, c, height // b, b, width // b, b).permute(0, 1, 2, 4, 3, 5)
    dct = _dct_matrix(str(plane.device), plane.dtype)
    coeffs = dct @ blocks @ dct.T
    coeffs = _straight_through_round(coeffs / table) * table
    blocks = dct.T @ coeffs @ dct
    return blocks.permute(0, 1, 2, 4, 3, 5).reshape(n, c, height, width)
