"""The training augmentations of docs/design.md §6, on whole batches of [0, 1] tensors, on any device.

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

That is the ``standard`` set. The built-in models are trained with ``robust`` (:data:`AUGMENTATIONS`),
which adds what differs between hospitals and devices rather than within one data set: stronger
brightness / contrast / colour, gamma (a scanner's or camera's tone curve), a linear shading ramp in a
random direction (ultrasound depth gain, an endoscope's uneven light, a dermatoscope's vignette),
Gaussian blur (focus, a coarser transducer or a JPEG-softened export) and additive noise.
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
    gamma_p: float = 0.0
    gamma: float = 0.4  # log-uniform exponent in [1/(1+gamma), 1+gamma]
    shading_p: float = 0.0
    shading: float = 0.3  # the ramp multiplies by 1 ± this at opposite edges
    blur_p: float = 0.0
    blur_sigma: float = 1.5  # pixels, uniform in [0.3, blur_sigma]
    noise_p: float = 0.0
    noise_std: float = 0.04  # uniform in [0, noise_std], on [0, 1] intensities


#: Named augmentation sets (``TrainConfig.augmentation``, ``wavegms-train --augment``).
AUGMENTATIONS: dict[str, AugmentConfig] = {
    "standard": AugmentConfig(),
    "robust": AugmentConfig(
        jitter_p=0.5, brightness=0.25, contrast=0.3, saturation=0.25, hue=0.04,
        gamma_p=0.3, shading_p=0.3, blur_p=0.2, noise_p=0.2,
    ),
}


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


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of C×H×W (or B×C×H×W) images with reflected borders."""
    radius = max(1, math.ceil(2 * sigma))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[-3]
    y = x.reshape(-1, c, *x.shape[-2:])
    y = F.pad(y, (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return y.reshape(x.shape)


def _photometric(image: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """Gamma, shading, blur and noise (the ``robust`` extras); each image chosen independently."""
    n, dev, dt = image.shape[0], image.device, image.dtype
    if not (cfg.gamma_p or cfg.shading_p or cfg.blur_p or cfg.noise_p):
        return image
    image = image.clone()
    sel = (torch.rand(n, generator=gen) < cfg.gamma_p).nonzero()[:, 0]
    if sel.numel():
        g = torch.exp(_uniform(sel.numel(), -1, 1, gen) * math.log1p(cfg.gamma)).to(dev, dt)
        idx = sel.to(dev)
        image[idx] = image[idx].clamp_min(1e-6) ** g.view(-1, 1, 1, 1)
    sel = (torch.rand(n, generator=gen) < cfg.shading_p).nonzero()[:, 0]
    if sel.numel():
        m, (h, w) = sel.numel(), image.shape[-2:]
        angle = _uniform(m, 0, 2 * math.pi, gen)
        amp = _uniform(m, -cfg.shading, cfg.shading, gen)
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        ramp = xx * torch.cos(angle).view(-1, 1, 1) + yy * torch.sin(angle).view(-1, 1, 1)
        gain = (1 + amp.view(-1, 1, 1) * ramp / math.sqrt(2)).unsqueeze(1)
        idx = sel.to(dev)
        image[idx] = (image[idx] * gain.to(dev, dt)).clamp(0, 1)
    sel = (torch.rand(n, generator=gen) < cfg.blur_p).nonzero()[:, 0]
    for i, sigma in zip(sel.tolist(), _uniform(sel.numel(), 0.3, cfg.blur_sigma, gen).tolist(), strict=True):
        image[i] = _gaussian_blur(image[i], sigma)
    sel = (torch.rand(n, generator=gen) < cfg.noise_p).nonzero()[:, 0]
    if sel.numel():
        std = _uniform(sel.numel(), 0, cfg.noise_std, gen).view(-1, 1, 1, 1)
        # one noise field for all channels, so gray images stay gray
        noise = torch.randn((sel.numel(), 1, *image.shape[2:]), generator=gen) * std
        idx = sel.to(dev)
        image[idx] = (image[idx] + noise.to(dev, dt)).clamp(0, 1)
    return image


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
    image = _photometric(image, gen, cfg)
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
