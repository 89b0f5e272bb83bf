"""Turning any image array into the model's input, the same way for training and inference.

Intensity rule (documented for users, applied per image or per stack):
- ``bool`` → {0, 1}; ``uint8`` → ÷255;
- floats already in [0, 1] are used as they are, floats in [0, 255] are ÷255 (so a uint8 image and
  the same image as float give the same mask);
- anything else (uint16, int32, floats of other ranges) is min–max scaled to [0, 1].
Channels: gray → repeated to RGB, RGBA → alpha dropped, RGB kept; anything else is refused.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F


class UnsupportedImageError(ValueError):
    """An array that cannot be segmented, with the reason."""


def normalize_intensity(array: np.ndarray) -> np.ndarray:
    """Float32 copy of ``array`` scaled to [0, 1] by the rule in this module's docstring."""
    a = np.asarray(array)
    if a.size == 0:
        raise UnsupportedImageError("the image is empty (zero size)")
    if np.iscomplexobj(a):
        raise UnsupportedImageError(f"complex images are not supported (dtype {a.dtype})")
    if a.dtype == bool:
        return a.astype(np.float32)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if not np.issubdtype(a.dtype, np.number):
        raise UnsupportedImageError(f"dtype {a.dtype} is not a numeric image type")
    f = a.astype(np.float32)
    finite = np.isfinite(f)
    if not finite.any():
        raise UnsupportedImageError("the image has no finite values (all NaN or infinite)")
    if not finite.all():
        f = np.where(finite, f, np.nanmin(np.where(finite, f, np.nan)))
    lo, hi = float(f.min()), float(f.max())
    if np.issubdtype(a.dtype, np.floating):
        if lo >= 0.0 and hi <= 1.0:
            return f
        if lo >= 0.0 and hi <= 255.0:
            return f / 255.0
    if hi <= lo:
        return np.zeros_like(f)
    return (f - lo) / (hi - lo)


def channel_axis_kind(shape: tuple[int, ...], rgb: bool | None = None) -> str:
    """``'gray'`` when the last axis is spatial, ``'rgb'``/``'rgba'`` when it holds 3/4 channels.

    ``rgb`` (napari's flag) overrides the guess; otherwise a last axis of 3 or 4 on an array of at
    least 3 dimensions is taken as colour.
    """
    if rgb is False:
        return "gray"
    last = shape[-1] if shape else 0
    if rgb or (len(shape) >= 3 and last in (3, 4)):
        if last == 3:
            return "rgb"
        if last == 4:
            return "rgba"
        raise UnsupportedImageError(f"a colour image needs 3 or 4 channels, this one has {last}")
    return "gray"


def to_rgb(array: np.ndarray, kind: str) -> np.ndarray:
    """Float array (…×H×W or …×H×W×3/4) → …×H×W×3."""
    if kind == "gray":
        return np.repeat(array[..., None], 3, axis=-1)
    return array[..., :3]


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """N×H×W×3 float array → N×3×H×W tensor."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).contiguous()


def resize_image(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of B×C×H×W images: the one image resize of training and inference."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def resize_mask(m: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of B×1×H×W masks (labels stay labels)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(m.shape[-2:]) == size:
        return m
    return F.interpolate(m, size=size, mode="nearest-exact")
