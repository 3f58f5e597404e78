"""A small patch discriminator and its losses (LSGAN + feature matching) for detail-rewarding training.

Pixel losses let the net hedge between possible edge positions with blur; a discriminator that
scores local patches as real or restored penalises that blur directly. It is kept small (three
strided 3x3 convs, about 0.1 M params) so a training step on the CPU costs little more, and its
weight is low so fidelity (PSNR, SSIM) stays the main objective.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm


class PatchDiscriminator(nn.Module):
    """N x 3 x H x W in [0, 1] -> N x 1 x H/8 x W/8 realness scores, plus the intermediate features."""

    def __init__(self, widths: tuple[int, int, int] = (32, 64, 128)) -> None:
        super().__init__()
        c1, c2, c3 = widths
        # Spectral norm keeps the discriminator Lipschitz: stable with few steps and no tuning.
        self.convs = nn.ModuleList(
            [
                spectral_norm(nn.Conv2d(3, c1, 3, stride=2, padding=1)),
                spectral_norm(nn.Conv2d(c1, c2, 3, stride=2, padding=1)),
                spectral_norm(nn.Conv2d(c2, c3, 3, stride=2, padding=1)),
            ]
        )
        self.score = spectral_norm(nn.Conv2d(c3, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        h = x * 2 - 1
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)
            feats.append(h)
        return self.score(h), feats


def discriminator_loss(disc: PatchDiscriminator, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """LSGAN: real patches -> 1, restored ones -> 0 (``fake`` is detached here)."""
    real_score, _ = disc(real)
    fake_score, _ = disc(fake.detach())
    return 0.5 * ((real_score - 1) ** 2).mean() + 0.5 * (fake_score**2).mean()


def generator_losses(
    disc: PatchDiscriminator, real: torch.Tensor, fake: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(LSGAN generator loss, feature-matching L1 between the discriminator's features of the
    restored and the sharp patch). The discriminator's weights get no gradient from these."""
    fake_score, fake_feats = disc(fake)
    with torch.no_grad():
        _, real_feats = disc(real)
    adv = 0.5 * ((fake_score - 1) ** 2).mean()
    fm = torch.stack([(f - r).abs().mean() for f, r in zip(fake_feats, real_feats, strict=True)]).mean()
    return adv, fm
