"""E_wave: the trainable multi-resolution Haar-wavelet encoder of Wave-GMS (docs/design.md §2).

Each of the three wavelet levels gets its own small UNet that never resamples (so fine detail is
not blurred away); levels 1 and 2 are average-pooled to 1/8 of the image, concatenated with
level 3 and mapped by a fourth UNet of the same kind to the mean and log-variance of the latent.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.nn import functional as F

from napari_wavegms.network.wavelets import HaarPyramid

#: Output channels of the six encoder blocks of every feature UNet.
ENCODER_WIDTHS = (16, 16, 32, 32, 32, 32)
MIDDLE_WIDTH = 32
#: Output channels of the six decoder blocks (each also receives the matching skip).
DECODER_WIDTHS = (32, 32, 32, 32, 16, 16)


class ResBlock(nn.Module):
    """GroupNorm(8) → SiLU → conv3×3, twice, plus the input (1×1 conv when channels change)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(8, cin),
            nn.SiLU(),
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.GroupNorm(8, cout),
            nn.SiLU(),
            nn.Conv2d(cout, cout, 3, padding=1),
        )
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class FlatUNet(nn.Module):
    """A UNet without down- or up-sampling: skips connect blocks of the same depth."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(cin, ENCODER_WIDTHS[0], 3, padding=1)
        widths = (ENCODER_WIDTHS[0], *ENCODER_WIDTHS)
        self.down = nn.ModuleList(ResBlock(a, b) for a, b in itertools.pairwise(widths))
        self.middle = nn.Sequential(ResBlock(MIDDLE_WIDTH, MIDDLE_WIDTH), ResBlock(MIDDLE_WIDTH, MIDDLE_WIDTH))
        skips = ENCODER_WIDTHS[::-1]
        previous = (MIDDLE_WIDTH, *DECODER_WIDTHS[:-1])
        self.up = nn.ModuleList(
            ResBlock(p + s, d) for p, s, d in zip(previous, skips, DECODER_WIDTHS, strict=True)
        )
        self.conv_out = nn.Conv2d(DECODER_WIDTHS[-1], cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = self.middle(x)
        for block in self.up:
            x = block(torch.cat([x, skips.pop()], dim=1))
        return self.conv_out(x)


class WaveletEncoder(nn.Module):
    """Maps an RGB image in [0, 1] (B×3×S×S) to latent mean and log-variance (each B×C×S/8×S/8)."""

    def __init__(self, latent_channels: int, levels: int = 3) -> None:
        super().__init__()
        self.latent_channels = latent_channels
        self.pyramid = HaarPyramid(levels)
        self.features = nn.ModuleList(FlatUNet(12, 12) for _ in range(levels))
        self.aggregate = FlatUNet(12 * levels, 2 * latent_channels)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        levels = self.pyramid(image)
        coarsest = levels[-1].shape[-2:]
        feats = []
        for net, band in zip(self.features, levels, strict=True):
            f = net(band)
            if f.shape[-2:] != coarsest:
                f = F.avg_pool2d(f, kernel_size=f.shape[-1] // coarsest[-1])
            feats.append(f)
        moments = self.aggregate(torch.cat(feats, dim=1))
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)
