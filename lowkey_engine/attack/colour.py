"""Colour difference as the eye judges it: sRGB -> CIELAB (D65) and CIEDE2000 (Sharma, Wu and
Dalal 2005). About 2.3 is a just-noticeable difference. SSIM can stay high while a change shows as
tone shifts; the evaluation reports ΔE2000 beside it."""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: D65 white point (X, Y, Z) for sRGB.
_WHITE = (0.95047, 1.0, 1.08883)
_RGB_TO_XYZ = ((0.4124564, 0.3575761, 0.1804375),
               (0.2126729, 0.7151522, 0.0721750),
               (0.0193339, 0.1191920, 0.9503041))


def srgb_to_lab(rgb: Tensor) -> Tensor:
    """(..., 3, H, W) sRGB in [0, 1] -> CIELAB (L in 0..100), same shape."""
    rgb = rgb.double().clamp(0, 1)
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    matrix = torch.tensor(_RGB_TO_XYZ, dtype=torch.float64, device=rgb.device)
    xyz = torch.einsum("ij,...jhw->...ihw", matrix, linear)
    xyz = xyz / torch.tensor(_WHITE, dtype=torch.float64, device=rgb.device).view(3, 1, 1)
    delta = 6 / 29
    f = torch.where(xyz > delta ** 3, xyz.clamp_min(1e-12) ** (1 / 3), xyz / (3 * delta ** 2) + 4 / 29)
    fx, fy, fz = f.unbind(-3)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-3)


def ciede2000(lab1: Tensor, lab2: Tensor) -> Tensor:
    """CIEDE2000 between Lab colours (..., 3, ...) along dim -3 for images, or the last dim of
    size 3 for lists of colours ((N, 3)); kL = kC = kH = 1."""
    dim = -3 if lab1.dim() >= 3 else -1
    L1, a1, b1 = lab1.double().unbind(dim)
    L2, a2, b2 = lab2.double().unbind(dim)
    c1, c2 = torch.hypot(a1, b1), torch.hypot(a2, b2)
    c_mean7 = ((c1 + c2) / 2) ** 7
    g = 0.5 * (1 - torch.sqrt(c_mean7 / (c_mean7 + 25.0 ** 7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = torch.hypot(a1p, b1), torch.hypot(a2p, b2)
    h1p = torch.remainder(torch.atan2(b1, a1p), 2 * math.pi)
    h2p = torch.remainder(torch.atan2(b2, a2p), 2 * math.pi)
    chroma_zero = (c1p * c2p) == 0

    dL = L2 - L1
    dC = c2p - c1p
    dh = h2p - h1p
    dh = torch.where(dh > math.pi, dh - 2 * math.pi, torch.where(dh < -math.pi, dh + 2 * math.pi, dh))
    dh = torch.where(chroma_zero, torch.zeros_like(dh), dh)
    dH = 2 * torch.sqrt(c1p * c2p) * torch.sin(dh / 2)

    L_mean = (L1 + L2) / 2
    c_mean_p = (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_mean = torch.where((h1p - h2p).abs() <= math.pi, h_sum / 2,
                         torch.where(h_sum < 2 * math.pi, (h_sum + 2 * math.pi) / 2, (h_sum - 2 * math.pi) / 2))
    h_mean = torch.where(chroma_zero, h_sum, h_mean)
    t = (1 - 0.17 * torch.cos(h_mean - math.radians(30)) + 0.24 * torch.cos(2 * h_mean)
         + 0.32 * torch.cos(3 * h_mean + math.radians(6)) - 0.20 * torch.cos(4 * h_mean - math.radians(63)))
    d_theta = math.radians(30) * torch.exp(-(((torch.rad2deg(h_mean) - 275) / 25) ** 2))
    c_mean_p7 = c_mean_p ** 7
    r_c = 2 * torch.sqrt(c_mean_p7 / (c_mean_p7 + 25.0 ** 7))
    s_l = 1 + 0.015 * (L_mean - 50) ** 2 / torch.sqrt(20 + (L_mean - 50) ** 2)
    s_c = 1 + 0.045 * c_mean_p
    s_h = 1 + 0.015 * c_mean_p * t
    r_t = -torch.sin(2 * d_theta) * r_c
    return torch.sqrt((dL / s_l) ** 2 + (dC / s_c) ** 2 + (dH / s_h) ** 2 + r_t * (dC / s_c) * (dH / s_h))


def delta_e2000(a: Tensor, b: Tensor) -> Tensor:
    """Per-pixel ΔE2000 (N, H, W) between RGB images (N, 3, H, W) in [0, 1]."""
    return ciede2000(srgb_to_lab(a), srgb_to_lab(b))
