"""Losses that reward detail as well as fidelity: pixel L1 or PSNR, SSIM and a frequency (FFT) term."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: torch.Tensor, b: torch.Tensor, window: torch.Tensor | None = None) -> torch.Tensor:
    """Mean SSIM of two N x C x H x W batches in [0, 1] (Gaussian window, valid region only)."""
    c = a.shape[1]
    w = (window if window is not None else gaussian_window()).to(a).expand(c, 1, -1, -1)
    c1, c2 = 0.01**2, 0.03**2
    mu_a = F.conv2d(a, w, groups=c)
    mu_b = F.conv2d(b, w, groups=c)
    var_a = F.conv2d(a * a, w, groups=c) - mu_a**2
    var_b = F.conv2d(b * b, w, groups=c) - mu_b**2
    cov = F.conv2d(a * b, w, groups=c) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.mean()


def fft_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 between the 2-D spectra (real and imaginary parts): penalises missing high frequencies,
    which a pixel loss alone lets the net trade for blur."""
    fa = torch.fft.rfft2(a, norm="ortho")
    fb = torch.fft.rfft2(b, norm="ortho")
    return (torch.view_as_real(fa) - torch.view_as_real(fb)).abs().mean()


def gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of the luminance, N x 1 x H-2 x W-2."""
    y = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]).to(x)[None, None]
    gx = F.conv2d(y, kx)
    gy = F.conv2d(y, kx.transpose(2, 3))
    return torch.sqrt(gx * gx + gy * gy + 1e-6)


def detail_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 between local edge strengths (unsigned): a blurred output pays for every edge it lost,
    where the pixel losses let it hedge between possible edge positions with blur."""
    ga = F.avg_pool2d(gradient_magnitude(a), 3, stride=1)
    gb = F.avg_pool2d(gradient_magnitude(b), 3, stride=1)
    return (ga - gb).abs().mean()


def psnr_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of each image's -PSNR in dB (HINet's PSNR loss): the evaluation's own
    figure. Its gradient is the MSE's divided by each image's MSE: halving any face's error earns the
    same, as in a mean PSNR, where MSE lets the heavily degraded faces dominate and L1 pulls every
    pixel alike whatever its image's error."""
    mse = ((a - b) ** 2).flatten(1).mean(1)
    return (10.0 * torch.log10(mse + 1e-8)).mean()


def restoration_loss(
    out: torch.Tensor,
    target: torch.Tensor,
    ssim_weight: float,
    fft_weight: float,
    detail_weight: float = 0.0,
    psnr_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``psnr_weight`` > 0: the pixel term is ``psnr_weight`` x the PSNR loss instead of L1."""
    l1 = (out - target).abs().mean()
    s = ssim(out, target)
    f = fft_loss(out, target)
    parts = {"l1": l1.item(), "ssim": s.item(), "fft": f.item()}
    if psnr_weight > 0:
        p = psnr_loss(out, target)
        pixel = psnr_weight * p
        parts["neg_psnr"] = p.item()
    else:
        pixel = l1
    total = pixel + ssim_weight * (1 - s) + fft_weight * f
    if detail_weight > 0:
        d = detail_loss(out, target)
        total = total + detail_weight * d
        parts["detail"] = d.item()
    parts["loss"] = total.item()
    return total, parts
