"""The training augmentations of DESIGN.md §1.4, on whole batches of [0, 1] tensors, on any device.

Why our own ~100 lines rather than a library: torchvision is not usable with every torch build we
support, and albumentations works per image in NumPy on the CPU, which would make data loading the
bottleneck on a GPU. These transforms are a handful of tensor operations (``affine_grid`` /
``grid_sample`` for the geometry), run on the batch where the model runs, and keep every value in
[0, 1]: the reference's colour jitter clipped float images as if they were 0–255 and blanked about
20 % of them; here brightness, contrast, saturation and hue act on [0, 1] floats and clamp to [0, 1].

Per image, independently:
- horizontal flip (p 0.5), vertical flip (p 0.5), rotation by k·90°, k ∈ {1, 2, 3} (p 0.5);
- colour jitter (p 0.2): brightness, contrast, saturation factors in [0.9, 1.1], hue shift in
  [-0.1, 0.1] of a turn (no-ops on gray images except brightness and contrast);
- shift ±15 % / scale ±10 % / rotation ±20° (p 0.4): image bilinear, mask nearest, borders reflected.
The mask follows every geometric transform of its image and none of the colour ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class AugmentConfig:
    flip_p: float = 0.5
    rot90_p: float = 0.5
    jitter_p: float = 0.2
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.1
    affine_p: float = 0.4
    shift: float = 0.15
    scale: float = 0.1
    rotate_deg: float = 20.0


def _gray(x: torch.Tensor) -> torch.Tensor:
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """B×3×H×W RGB in [0, 1] → HSV with hue in [0, 1)."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(maxc == r, (g - b) / safe, torch.where(maxc == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    h = torch.where(delta > 0, (h / 6) % 1.0, torch.zeros_like(h))
    s = torch.where(
        maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc)
    )
    return torch.stack([h, s, maxc], 1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    k = torch.stack([(n + h * 6) % 6 for n in (5.0, 3.0, 1.0)], 1)
    f = (torch.minimum(k, 4 - k)).clamp(0, 1)
    return v[:, None] - v[:, None] * s[:, None] * f


def colour_jitter(
    x: torch.Tensor, b: torch.Tensor, c: torch.Tensor, s: torch.Tensor, h: torch.Tensor
) -> torch.Tensor:
    """Brightness × b, contrast × c about the mean gray, saturation × s, hue + h (per image B-vectors)."""
    v = lambda t: t.view(-1, 1, 1, 1)  # noqa: E731
    x = (x * v(b)).clamp(0, 1)
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * v(c) + mean).clamp(0, 1)
    gray = _gray(x)
    x = ((x - gray) * v(s) + gray).clamp(0, 1)
    hsv = rgb_to_hsv(x)
    hsv = torch.stack([(hsv[:, 0] + v(h)[:, 0]) % 1.0, hsv[:, 1], hsv[:, 2]], 1)
    return hsv_to_rgb(hsv).clamp(0, 1)


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (high - low) + low


def augment_batch(
    image: torch.Tensor, mask: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig = AugmentConfig()
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment B×3×S×S images in [0, 1] and their B×1×S×S masks (any device; random numbers are drawn
    from the CPU generator ``gen`` so runs are reproducible on every device)."""
    n, dev = image.shape[0], image.device
    if n == 0:
        return image, mask

    def chosen(p: float) -> torch.Tensor:
        return (torch.rand(n, generator=gen) < p).nonzero()[:, 0].to(dev)

    both = torch.cat([image, mask.to(image.dtype)], 1)
    # flips and quarter turns: exact, applied to image and mask together, only where chosen
    for dim in (-1, -2):
        idx = chosen(cfg.flip_p)
        if idx.numel():
            both[idx] = both[idx].flip(dim)
    if both.shape[-1] == both.shape[-2]:
        k = torch.randint(1, 4, (n,), generator=gen)
        turn = torch.rand(n, generator=gen) < cfg.rot90_p
        for q in (1, 2, 3):
            idx = (turn & (k == q)).nonzero()[:, 0].to(dev)
            if idx.numel():
                both[idx] = torch.rot90(both[idx], q, dims=(-2, -1))
    image, mask = both[:, :3], both[:, 3:]
    # colour jitter on the selected images
    sel = torch.rand(n, generator=gen) < cfg.jitter_p
    if sel.any():
        m = int(sel.sum())
        params = [
            _uniform(m, 1 - cfg.brightness, 1 + cfg.brightness, gen),
            _uniform(m, 1 - cfg.contrast, 1 + cfg.contrast, gen),
            _uniform(m, 1 - cfg.saturation, 1 + cfg.saturation, gen),
            _uniform(m, -cfg.hue, cfg.hue, gen),
        ]
        idx = sel.nonzero()[:, 0].to(dev)
        image = image.clone()
        image[idx] = colour_jitter(image[idx], *(p.to(dev, image.dtype) for p in params))
    # shift / scale / rotate on the selected images
    sel = torch.rand(n, generator=gen) < cfg.affine_p
    if sel.any():
        m = int(sel.sum())
        angle = _uniform(m, -cfg.rotate_deg, cfg.rotate_deg, gen) * math.pi / 180
        scale = _uniform(m, 1 - cfg.scale, 1 + cfg.scale, gen)
        tx, ty = (_uniform(m, -cfg.shift, cfg.shift, gen) * 2 for _ in range(2))  # grid units span 2
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale  # output→input map: inverse scale
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
        idx = sel.nonzero()[:, 0].to(dev)
        grid = F.affine_grid(theta.to(dev, image.dtype), [m, 1, *image.shape[-2:]], align_corners=False)
        image, mask = image.clone(), mask.clone()
        image[idx] = F.grid_sample(
            image[idx], grid, mode="bilinear", padding_mode="reflection", align_corners=False
        ).clamp(0, 1)
        mask[idx] = F.grid_sample(
            mask[idx], grid, mode="nearest", padding_mode="reflection", align_corners=False
        )
    return image, mask
