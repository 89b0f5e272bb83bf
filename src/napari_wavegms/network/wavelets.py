"""Fixed multi-level Haar wavelet transform as a strided convolution.

PyWavelets supplies the Haar filters; applying them with ``conv2d`` (stride 2, one group per
channel) keeps the transform on the model's device and inside autograd, so the whole encoder runs
on the GPU without a round trip through NumPy.
"""

from __future__ import annotations

import pywt
import torch
from torch import nn
from torch.nn import functional as F


def haar_filters() -> torch.Tensor:
    """The four 2×2 analysis filters (LL, LH, HL, HH) of the orthonormal Haar wavelet, 4×1×2×2."""
    wavelet = pywt.Wavelet("haar")
    # pywt's dec_* are stored reversed for convolution; conv2d correlates, so flip them back.
    lo = torch.tensor(wavelet.dec_lo[::-1], dtype=torch.float32)
    hi = torch.tensor(wavelet.dec_hi[::-1], dtype=torch.float32)
    bank = [torch.outer(a, b) for a, b in ((lo, lo), (hi, lo), (lo, hi), (hi, hi))]
    return torch.stack(bank).unsqueeze(1)


class HaarPyramid(nn.Module):
    """Returns, for each level ``l = 1..levels``, the level-``l`` approximation band and the three
    level-``l`` detail bands of every input channel, stacked on channels and divided by ``2**l``.

    For 3-channel input each level has 12 channels at ``1/2**l`` of the input size (which must be
    divisible by ``2**levels``). Channel order: band-major (LL×3, LH×3, HL×3, HH×3).
    """

    def __init__(self, levels: int = 3) -> None:
        super().__init__()
        self.levels = levels
        self.register_buffer("filters", haar_filters(), persistent=False)

    def _step(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        bands = F.conv2d(x.reshape(b * c, 1, h, w), self.filters.to(x.dtype), stride=2)
        bands = bands.reshape(b, c, 4, h // 2, w // 2)
        approx = bands[:, :, 0]
        stacked = bands.transpose(1, 2).reshape(b, 4 * c, h // 2, w // 2)
        return approx, stacked

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[-1] % 2**self.levels or x.shape[-2] % 2**self.levels:
            raise ValueError(f"image size {tuple(x.shape[-2:])} must be divisible by {2**self.levels}")
        out = []
        approx = x
        for level in range(1, self.levels + 1):
            approx, stacked = self._step(approx)
            out.append(stacked / 2**level)
        return out
