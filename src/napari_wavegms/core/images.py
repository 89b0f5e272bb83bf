"""Turning any image array into the model's input, the same way for training and inference.

Intensity rule (documented for users, applied per image or per stack):
- ``bool`` → {0, 1}; ``uint8`` → ÷255;
- floats already in [0, 1] are used as they are, floats in [0, 255] are ÷255 (so a uint8 image and
  the same image as float give the same mask);
- anything else (uint16, int32, floats of other ranges) is min–max scaled to [0, 1];
- NaN and ±inf take the smallest finite value.
The rule has one home, :class:`IntensityScale`, shared by training (:func:`normalize_intensity`, per
image) and inference (:func:`intensity_scale` over a stack, applied slice by slice), so the two cannot
drift apart. Channels: gray → repeated to RGB, grey+alpha and RGBA → alpha dropped, RGB kept; anything else is refused.

How an array splits into 2D slices and channels (:func:`image_layout`) is decided here without torch,
so the widgets can check a layer on the GUI thread before a job loads the model; torch is imported
only by the functions that make tensors.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


class UnsupportedImageError(ValueError):
    """An array that cannot be segmented, with the reason."""


@dataclass(frozen=True)
class IntensityScale:
    """``(x − offset) / divisor``, non-finite values replaced by ``fill`` first: the intensity rule of
    this module's docstring, worked out once (:func:`intensity_scale`) and applied as often as needed.

    The rule lives here alone because training and inference must scale an image the same way or the
    model sees at inference images it never saw in training. Training scales one image at a time
    (:func:`normalize_intensity`); inference takes one range for a whole stack and scales it slice by
    slice, so a long stack is never converted as a whole. Division (not multiplication by a reciprocal)
    and float32 arithmetic make both give bit-identical numbers for the same image.
    """

    offset: float = 0.0
    divisor: float = 1.0
    fill: float = 0.0

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Float32 copy of ``raw`` scaled to [0, 1]."""
        raw = np.asarray(raw)
        f = raw.astype(np.float32)  # always a copy
        if raw.dtype.kind == "f":
            bad = ~np.isfinite(f)
            if bad.any():
                f[bad] = self.fill
        if self.divisor == 0.0:  # constant image
            return np.zeros_like(f)
        if self.offset:
            f -= np.float32(self.offset)
        if self.divisor != 1.0:
            f /= np.float32(self.divisor)
        return f


def _finite_range(raw: np.ndarray) -> tuple[float, float]:
    """Smallest and largest finite value (``nan`` when there is none), without copying the slice."""
    if raw.dtype.kind != "f":
        return float(raw.min()), float(raw.max())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        lo, hi = float(np.nanmin(raw)), float(np.nanmax(raw))
    if math.isinf(lo) or math.isinf(hi):  # rare: ±inf present, take the finite values of this slice
        finite = raw[np.isfinite(raw)]
        return (float(finite.min()), float(finite.max())) if finite.size else (math.nan, math.nan)
    return lo, hi


def intensity_scale(slices: Iterable[np.ndarray], dtype: Any) -> IntensityScale:
    """The :class:`IntensityScale` of the given slices (colour already without alpha) taken together.

    ``bool`` and ``uint8`` need no pass over the data; other types get one pass of numpy reductions
    (no float copy of a slice), so a stack's range costs no more memory than one slice.
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return IntensityScale()
    if dtype == np.uint8:
        return IntensityScale(0.0, 255.0)
    lo, hi = math.inf, -math.inf
    for raw in slices:
        a, b = _finite_range(np.asarray(raw))
        if not math.isnan(a):
            lo, hi = min(lo, a), max(hi, b)
    if lo > hi:
        raise UnsupportedImageError("the image has no finite values (all NaN or infinite)")
    # Rounded to float32, the precision the scaled image has: the range of the float32 copy.
    lo, hi = float(np.float32(lo)), float(np.float32(hi))
    if dtype.kind == "f":
        if lo >= 0.0 and hi <= 1.0:
            return IntensityScale(0.0, 1.0, lo)
        if lo >= 0.0 and hi <= 255.0:
            return IntensityScale(0.0, 255.0, lo)
    if hi <= lo:
        return IntensityScale(lo, 0.0, lo)
    return IntensityScale(lo, hi - lo, lo)


def normalize_intensity(array: np.ndarray) -> np.ndarray:
    """Float32 copy of one image scaled to [0, 1] by the rule in this module's docstring (its own
    :func:`intensity_scale`): what training does to each image; the values are refused with a reason."""
    a = np.asarray(array)
    if a.size == 0:
        raise UnsupportedImageError("the image is empty (zero size)")
    if np.iscomplexobj(a):
        raise UnsupportedImageError(f"complex images are not supported (dtype {a.dtype})")
    if a.dtype != bool and not np.issubdtype(a.dtype, np.number):
        raise UnsupportedImageError(f"dtype {a.dtype} is not a numeric image type")
    return intensity_scale([a], a.dtype).apply(a)


def channel_axis_kind(shape: tuple[int, ...], rgb: bool | None = None) -> str:
    """What the last axis holds: ``'gray'`` (it is spatial), ``'gray_alpha'``, ``'rgb'`` or ``'rgba'``.

    ``rgb`` is napari's flag, which is a guess too (napari marks a last axis of 3 or 4 as colour only
    when the other sides exceed 30 px, and never a last axis of 2). So, on arrays of at least 3
    dimensions: a last axis of 2 is always grey + alpha (napari opens grey+alpha PNGs as H×W×2; no
    image is two pixels wide); of 4 is RGBA even when napari did not mark it RGB; of 3 is RGB unless
    ``rgb`` is ``False``. ``rgb=True`` with any other channel count is refused.
    """
    last = shape[-1] if len(shape) >= 3 else 0
    if last == 2:
        return "gray_alpha"
    if last == 4 or (last == 3 and rgb is not False):
        return "rgba" if last == 4 else "rgb"
    if rgb:
        count = shape[-1] if shape else 0
        raise UnsupportedImageError(f"a colour image needs 3 or 4 channels, this one has {count}")
    return "gray"


MIN_SIDE = 16  # slices narrower than this (in pixels) are reported as a probable misread of the axes


@dataclass(frozen=True)
class ImageLayout:
    """How an array splits into 2D slices: leading axes, the spatial plane, and the colour axis."""

    shape: tuple[int, ...]
    kind: str  # 'gray' | 'rgb' | 'rgba'
    lead: tuple[int, ...]  # leading (Z, T, …) axes, kept in the output
    height: int
    width: int
    squeeze: bool = False  # a trailing channel axis (1 grey channel, or grey + alpha) → its first channel

    @property
    def n_slices(self) -> int:
        return math.prod(self.lead)

    @property
    def warning(self) -> str | None:
        """Why this array may have been misread, or ``None``: slices a few pixels wide are almost always
        a channel axis taken as spatial (segmenting them takes long and means nothing)."""
        if min(self.height, self.width) >= MIN_SIDE:
            return None
        return (
            f"shape {self.shape} is read as {self.n_slices} slice(s) of {self.height}×{self.width} pixels; "
            "if its last axis holds colour channels, open it as an RGB image"
        )

    @property
    def mask_shape(self) -> tuple[int, ...]:
        return (*self.lead, self.height, self.width)

    def index(self, i: int) -> tuple[int, ...]:
        """Index of the ``i``-th slice (C order over the leading axes) in the input and the mask."""
        return tuple(int(k) for k in np.unravel_index(i, self.lead)) if self.lead else ()


def image_layout(shape: tuple[int, ...], dtype: Any, rgb: bool | None = None) -> ImageLayout:
    """Check that an array of this shape and dtype can be segmented and describe its slices.

    A trailing axis of 1 (one channel) or 2 (grey + alpha) gives a grey layout that keeps only the
    first channel; of 3 or 4 a colour one as :func:`channel_axis_kind` decides (napari's
    ``rgb`` flag is a guess, so 2 and 4 are channels even without it). Raises
    :class:`UnsupportedImageError` with the reason for 0-/1-D, zero-size, complex and non-numeric arrays.
    """
    shape = tuple(int(s) for s in shape)
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        raise UnsupportedImageError(f"complex images are not supported (dtype {dtype})")
    if dtype.kind not in "biuf":
        raise UnsupportedImageError(f"dtype {dtype} is not a numeric image type")
    if len(shape) < 2:
        raise UnsupportedImageError(f"a {len(shape)}-D array (shape {shape}) is not an image: need 2-D")
    if 0 in shape:
        raise UnsupportedImageError(f"the image is empty (zero size, shape {shape})")
    if len(shape) >= 3 and shape[-1] == 1:  # one channel: grey, whatever napari's flag says
        kind, squeeze = "gray", True
    else:
        kind = channel_axis_kind(shape, rgb)
        squeeze = kind == "gray_alpha"  # grey + alpha: the grey channel is the image
        kind = "gray" if squeeze else kind
    spatial = shape[:-1] if squeeze or kind != "gray" else shape
    if len(spatial) < 2:
        raise UnsupportedImageError(f"shape {shape}: a colour image needs 2 spatial axes before the channels")
    return ImageLayout(shape, kind, tuple(spatial[:-2]), spatial[-2], spatial[-1], squeeze)


def to_rgb(array: np.ndarray, kind: str) -> np.ndarray:
    """Float array (…×H×W, …×H×W×2 grey+alpha, or …×H×W×3/4) → …×H×W×3 (alpha dropped)."""
    if kind == "gray":
        return np.repeat(array[..., None], 3, axis=-1)
    if kind == "gray_alpha":
        return np.repeat(array[..., :1], 3, axis=-1)
    return array[..., :3]


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """N×H×W×3 float array → N×3×H×W tensor."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).contiguous()


def resize_image(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of B×C×H×W images: the one image resize of training and inference."""
    from torch.nn import functional as F

    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def resize_mask(m: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of B×1×H×W masks (labels stay labels)."""
    from torch.nn import functional as F

    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(m.shape[-2:]) == size:
        return m
    return F.interpolate(m, size=size, mode="nearest-exact")
