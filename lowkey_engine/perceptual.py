"""Perceptual distance between an original and a changed image, differentiable.

SSIM needs no model weights and is the default penalty; LPIPS runs when its real backbone has
been fetched (see lpips_metric). Images are NCHW RGB in [0, 1].
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .colour import delta_e2000
from .transforms import gaussian_kernel

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01 ** 2          # (K1 * L)^2 with K1 = 0.01, L = 1 (Wang et al. 2004)
SSIM_C2 = 0.03 ** 2


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


def ssim(a: Tensor, b: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean SSIM per image (N,), in [-1, 1], 1 = identical. `weight` (N, 1, H, W) in [0, 1]
    restricts the mean to a region (e.g. the face); it is cropped like the valid SSIM map."""
    values = ssim_map(a, b).mean(1, keepdim=True)
    if weight is None:
        return values.flatten(1).mean(1)
    margin = (weight.shape[-1] - values.shape[-1]) // 2
    w = weight[..., margin:margin + values.shape[-2], margin:margin + values.shape[-1]]
    return (values * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1e-8)


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB per image (N,), for pixels in [0, 1]."""
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return -10.0 * mse.log10()


def region_quality(original: Tensor, changed: Tensor) -> dict[str, float]:
    """How much one region (1, 3, h, w) changed, h and w >= 1: PSNR (dB), SSIM (NaN when the
    region is smaller than SSIM's window), CIEDE2000 per pixel mean and 95th percentile."""
    import torch

    difference = delta_e2000(original, changed).flatten()
    small = min(original.shape[-2:]) < SSIM_WINDOW
    return {"psnr": float(psnr(changed, original)[0]),
            "ssim": float("nan") if small else float(ssim(changed, original)[0]),
            "delta_e": float(difference.mean()), "delta_e_p95": float(torch.quantile(difference, 0.95))}
