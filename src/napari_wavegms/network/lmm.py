"""LMM: the latent mapping model of Wave-GMS (GMS's ResAttnUNet_DS, docs/design.md §3).

It works entirely at the latent resolution (S/8) and maps the encoder's latent to the latent of
the mask, with deep-supervision heads at two intermediate decoder depths. The reference's unused
``level3`` head is left out.
"""

from __future__ import annotations

import torch
from torch import nn

ENCODER_WIDTHS = (32, 32, 64, 128, 128)  # stem output, then x1..x4


class SelfAttention(nn.Module):
    """Single-head spatial self-attention over all positions, added back to the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(16, channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (conv(y).flatten(2).transpose(1, 2) for conv in (self.q, self.k, self.v))
        # scaled_dot_product_attention picks a fused kernel where one exists (flash / memory-efficient).
        out = nn.functional.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1))
        out = out.squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return x + self.proj(out)


class AttnResBlock(nn.Module):
    """(GroupNorm(16) → PReLU → conv3×3) twice with a residual path, then self-attention."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(16, cin),
            nn.PReLU(),
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.GroupNorm(16, cout),
            nn.PReLU(),
            nn.Conv2d(cout, cout, 3, padding=1),
        )
        self.skip = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else nn.Identity()
        self.attn = SelfAttention(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.skip(x) + self.body(x))


def _head(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.GroupNorm(16, cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1, bias=False))


class LatentMappingModel(nn.Module):
    """Image latent (B×C×h×w) → predicted mask latents ``{"level2", "level1", "out"}``, each B×C×h×w."""

    HEADS = ("level2", "level1", "out")

    def __init__(self, latent_channels: int) -> None:
        super().__init__()
        w0, w1, w2, w3, w4 = ENCODER_WIDTHS
        self.stem = nn.Conv2d(latent_channels, w0, 3, padding=1)
        self.enc = nn.ModuleList([AttnResBlock(w0, w1), AttnResBlock(w1, w2), AttnResBlock(w2, w3),
                                  AttnResBlock(w3, w4)])
        self.dec = nn.ModuleList([AttnResBlock(w3 + w4, 128), AttnResBlock(w2 + 128, 64),
                                  AttnResBlock(w1 + 64, 32), AttnResBlock(w0 + 32, 32)])
        self.heads = nn.ModuleDict(
            {"level2": _head(64, latent_channels), "level1": _head(32, latent_channels),
             "out": _head(32, latent_channels)}
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, z: torch.Tensor, heads: tuple[str, ...] = HEADS) -> dict[str, torch.Tensor]:
        x0 = self.stem(z)
        x1 = self.enc[0](x0)
        x2 = self.enc[1](x1)
        x3 = self.enc[2](x2)
        x4 = self.enc[3](x3)
        d3 = self.dec[0](torch.cat([x3, x4], 1))
        d2 = self.dec[1](torch.cat([x2, d3], 1))
        d1 = self.dec[2](torch.cat([x1, d2], 1))
        d0 = self.dec[3](torch.cat([x0, d1], 1))
        features = {"level2": d2, "level1": d1, "out": d0}
        return {name: self.heads[name](features[name]) for name in heads}
