"""Perceptual distance between an original and a changed image, differentiable.

SSIM needs no model weights and is the default penalty; LPIPS runs when its real backbone has
been fetched (see lpips_metric). Images are NCHW RGB in [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .colour import delta_e2000
from .transforms import gaussian_blur, gaussian_kernel

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01 ** 2          # (K1 * L)^2 with K1 = 0.01, L = 1 (Wang et al. 2004)
SSIM_C2 = 0.03 ** 2
#: Blur that isolates shading, as a share of the face's side (4 px on a 128-px face): patches of
#: skin under the eyes or on the cheeks, furrow-wide tone shifts; not pixel grain.
SHADING_SIGMA_PER_FACE = 1 / 32
#: What `region_quality` measures, in the order it returns them.
REGION_METRICS = ("psnr", "ssim", "delta_e", "delta_e_p95", "shading")


def ssim_map(a: Tensor, b: Tensor, window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> Tensor:
    """Per-pixel SSIM (N, C, H', W') with a Gaussian window, valid region only."""
    channels = a.shape[1]
    kernel_1d = gaussian_kernel(window, sigma, a.device, a.dtype)
    kernel = (kernel_1d[:, None] * kernel_1d[None, :]).expand(channels, 1, window, window)

    def blur(x: Tensor) -> Tensor:
        return F.conv2d(x, kernel, groups=channels)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + SSIM_C1) * (2 * cov + SSIM_C2)) / (
        (mu_a ** 2 + mu_b ** 2 + SSIM_C1) * (var_a + var_b + SSIM_C2))


def weighted_mean(values: Tensor, weight: Tensor) -> Tensor:
    """Mean per image (N,) of `values` (N, 1, H, W) weighted by `weight` (same shape, >= 0); 0
    where the weight is zero everywhere."""
    return (values * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(1e-8)


def ssim(a: Tensor, b: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean SSIM per image (N,), in [-1, 1], 1 = identical. `weight` (N, 1, H, W) in [0, 1]
    restricts the mean to a region (e.g. the face); it is cropped like the valid SSIM map."""
    values = ssim_map(a, b).mean(1, keepdim=True)
    if weight is None:
        return values.flatten(1).mean(1)
    margin = (weight.shape[-1] - values.shape[-1]) // 2
    w = weight[..., margin:margin + values.shape[-2], margin:margin + values.shape[-1]]
    return weighted_mean(values, w)


def shading_energy(change: Tensor, weight: Tensor, sigma: float) -> Tensor:
    """How much tone shift a change carries, per image (N,), in 8-bit levels squared: the
    weighted mean square of the change after a Gaussian blur of `sigma` pixels (kernel 6 sigma).

    The eye masks fine-grained change in texture but sees smooth patches of lighter or darker
    skin as shading (a tired, older or bruised look); the blur keeps only those. change
    (N, C, H, W) in [0, 1] pixel units, averaged over channels; weight (N, 1, H, W) in [0, 1]."""
    size = 2 * math.ceil(3 * sigma) + 1
    smooth = gaussian_blur(change.mean(1, keepdim=True) * 255.0, size, sigma)
    return weighted_mean(smooth.pow(2), weight)


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB per image (N,), for pixels in [0, 1]."""
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return -10.0 * mse.log10()


def region_quality(original: Tensor, changed: Tensor) -> dict[str, float]:
    """How much one region (1, 3, h, w) changed, h and w >= 1: PSNR (dB), SSIM, CIEDE2000 per
    pixel mean and 95th percentile, and shading: the RMS in 8-bit levels of the change blurred
    by SHADING_SIGMA_PER_FACE of the region's side (SSIM and shading are NaN when the region is
    smaller than SSIM's window)."""
    difference = delta_e2000(original, changed).flatten()
    side = min(original.shape[-2:])
    small = side < SSIM_WINDOW
    if small:
        similarity = shading = float("nan")
    else:
        similarity = float(ssim(changed, original)[0])
        everywhere = torch.ones_like(original[:, :1])
        shading = float(shading_energy(changed - original, everywhere, side * SHADING_SIGMA_PER_FACE)[0].sqrt())
    return {"psnr": float(psnr(changed, original)[0]), "ssim": similarity,
            "delta_e": float(difference.mean()), "delta_e_p95": float(torch.quantile(difference, 0.95)),
            "shading": shading}
