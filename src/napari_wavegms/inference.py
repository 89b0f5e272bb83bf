"""The segmentation engine: any 2D image or stack of 2D images → a mask of exactly its shape.

One :class:`Segmenter` holds a loaded model on one device and segments arrays as napari and image
files hold them: 2D gray (H×W), RGB/RGBA (H×W×3/4), and stacks with any leading axes (Z, T or both),
processed slice by slice in batches. Inside, each slice is normalised (:mod:`preprocess`'s rule),
made RGB, resized to the model's size with :func:`preprocess.resize_image` (the resize of training),
segmented, and its *soft* mask is resized back (bilinear) to the slice's size *before* thresholding,
so mask edges follow the image rather than the model's coarse grid.

Intensity statistics are taken **per stack** by default (``normalize="stack"``): a uint16 or float
volume is min–max scaled with one range for all slices, so a slice that is all background is not
stretched into noise and slices stay comparable. A single 2D image is therefore normalised exactly
as training normalised it (per image). ``normalize="slice"`` scales every slice on its own instead
(for time series whose brightness drifts). Alpha is dropped *before* the statistics are taken
(it is not intensity).

Memory stays bounded for long stacks: the input is never converted as a whole. Statistics come from
one pass over the slices (numpy reductions, no copies); then each batch of slices is converted,
moved to the device and shrunk to the model's size one slice at a time, so at most one full-size
float slice exists beside the (small) model batch. The output mask is the only full-size array.
Inputs may be any array-like with ``shape``, ``dtype`` and numpy indexing (numpy, dask, zarr).

Speed: ``torch.inference_mode``; on CUDA channels-last memory and float16 autocast; on a CPU the frozen
Tiny-VAE in channels-last memory, and bfloat16 autocast where the CPU computes it natively (float32 on
others, where emulated bfloat16 is many times slower); ``precision=`` forces one (see
``training/bench_inference.py`` for the measurements behind these defaults).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Generator, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from .preprocess import ImageLayout, UnsupportedImageError, image_layout, resize_image
from .progress import Progress, run_to_end

__all__ = [
    "ImageLayout", "IntensityScale", "Segmenter", "UnsupportedImageError", "image_layout", "intensity_scale",
    "label_mask",
]


# ---------------------------------------------------------------- intensity
@dataclass(frozen=True)
class IntensityScale:
    """``(x − offset) / divisor`` with non-finite values replaced by ``fill`` first.

    It encodes :func:`preprocess.normalize_intensity`'s rule once for a whole stack (or one slice),
    so it can be applied batch by batch. Division (not multiplication by a reciprocal) keeps the
    result bit-identical to ``normalize_intensity`` for a 2D image.
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

    ``bool`` and ``uint8`` need no pass over the data; other types get one pass of numpy reductions.
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
    # The same float32 rounding as normalize_intensity, which takes its range from a float32 copy.
    lo, hi = float(np.float32(lo)), float(np.float32(hi))
    if dtype.kind == "f":
        if lo >= 0.0 and hi <= 1.0:
            return IntensityScale(0.0, 1.0, lo)
        if lo >= 0.0 and hi <= 255.0:
            return IntensityScale(0.0, 255.0, lo)
    if hi <= lo:
        return IntensityScale(lo, 0.0, lo)
    return IntensityScale(lo, hi - lo, lo)


# ---------------------------------------------------------------- objects
def label_mask(mask: np.ndarray, min_size: int = 0, label_objects: bool = True) -> np.ndarray:
    """Connected components (8-connected) of a 2D binary mask, without those smaller than ``min_size``.

    Returns int32 labels 1..n, or, with ``label_objects=False``, the cleaned uint8 {0, 1} mask.
    Component sizes come from one ``bincount`` over scikit-image's labels (hand-written rather than
    ``remove_small_objects``, whose ``min_size`` argument changed meaning across scikit-image versions).
    """
    from skimage.measure import label
    from skimage.segmentation import relabel_sequential

    labels = label(mask > 0, connectivity=2).astype(np.int32, copy=False)
    if min_size > 1 and labels.max() > 0:
        small = np.bincount(labels.ravel()) < min_size
        small[0] = False
        if small.any():
            labels[small[labels]] = 0
            labels = relabel_sequential(labels)[0].astype(np.int32, copy=False)
    if not label_objects:
        return (labels > 0).astype(np.uint8)
    return labels


# ---------------------------------------------------------------- the fast path
# ---------------------------------------------------------------- the engine
class Segmenter:
    """A Wave-GMS model loaded once on one device, segmenting arrays of any supported layout.

    ``model`` is a built-in name, a checkpoint file or training folder (``models.resolve_model``),
    ``None`` for the default built-in model, or an already built ``WaveGMS`` module.
    ``precision``: ``auto`` (float16 on CUDA, bfloat16 on a CPU with native bfloat16, float32 elsewhere),
    ``fp32``, ``bf16`` or ``fp16`` (:func:`napari_wavegms.device.autocast_dtype`); ``half=True/False`` is
    the older spelling of ``fp16``/``fp32``. ``channels_last``: ``None`` = the whole model on CUDA and the
    frozen Tiny-VAE alone on a CPU (where E_wave's narrow convolutions are slower that way), ``True`` =
    the whole model, ``False`` = none. ``training/bench_inference.py`` holds the measurements behind these.
    """

    def __init__(self, model: str | os.PathLike | torch.nn.Module | None = None, device: str = "auto",
                 batch_size: int = 8, half: bool | None = None, *, channels_last: bool | None = None,
                 precision: str = "auto") -> None:
        from .device import autocast_dtype, describe, precision_name, resolve_device

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if isinstance(model, torch.nn.Module):
            self.device = resolve_device(device)
            self.model = model.to(self.device).eval()
            self.config: dict[str, Any] = {"image_size": int(model.image_size)}
        else:
            from .models import load_model

            self.model, self.config, self.device = load_model(model, device)
        self.image_size = int(self.model.image_size)
        self.batch_size = int(batch_size)
        self.device_name = describe(self.device)
        if half is not None:
            precision = "fp16" if half and self.device.type in ("cuda", "mps") else "fp32"
        self.dtype = autocast_dtype(self.device, precision)
        self.precision = precision_name(self.dtype)
        self.half = self.dtype == torch.float16
        cuda = self.device.type == "cuda"
        self.channels_last = bool(cuda if channels_last is None else channels_last)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        vae = getattr(self.model, "vae", None)
        if vae is not None and hasattr(vae, "use_channels_last") and (channels_last or channels_last is None):
            vae.use_channels_last(True)

    def __repr__(self) -> str:
        return (f"Segmenter(image_size={self.image_size}, device={self.device_name!r}, "
                f"precision={self.precision}, batch_size={self.batch_size})")

    # ------------------------------------------------------------ public
    def segment(self, image: Any, *, rgb: bool | None = None, threshold: float = 0.5,
                label_objects: bool = False, min_size: int = 0, normalize: str = "stack",
                soft: bool = False) -> Generator[Progress, None, np.ndarray]:
        """Segment ``image`` slice by slice; yields ``Progress(done_slices, total_slices)`` between batches.

        Returns a mask of the input's spatial shape (leading axes kept, channel axis dropped):
        uint8 {0, 1}, or int32 object labels with ``label_objects`` (numbered across the whole stack,
        so no two objects share a label), or with ``soft`` the float32 soft mask in [0, 1].
        Objects smaller than ``min_size`` pixels are removed. The shape and dtype are checked at once
        (:class:`UnsupportedImageError`); the values (all-NaN) when the job starts. Cancel with ``close()``.
        """
        layout = image_layout(np.shape(image), getattr(image, "dtype", np.asarray(image).dtype), rgb)
        if normalize not in ("stack", "slice"):
            raise ValueError(f"normalize must be 'stack' or 'slice', not {normalize!r}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if not hasattr(image, "dtype"):
            image = np.asarray(image)
        return self._run(image, layout, threshold=threshold, label_objects=label_objects,
                         min_size=int(min_size), normalize=normalize, soft=soft)

    def __call__(self, image: Any, **kw: Any) -> np.ndarray:
        """:meth:`segment` run to the end."""
        return run_to_end(self.segment(image, **kw))

    def segment_many(self, images: list[np.ndarray], *, threshold: float = 0.5, label_objects: bool = False,
                     min_size: int = 0) -> list[np.ndarray | UnsupportedImageError]:
        """Segment several 2D images (each gray/RGB/RGBA, any size) in shared batches.

        For folders of files: one model call per batch instead of one per image. Each result is the
        image's mask, or the :class:`UnsupportedImageError` that image raised (the others still run).
        """
        results: list[Any] = [None] * len(images)
        items = []
        for n, img in enumerate(images):
            try:
                layout = image_layout(img.shape, img.dtype)
                if layout.lead:
                    raise UnsupportedImageError(f"shape {img.shape} is a stack, not one 2D image")
                scale = intensity_scale([self._colour(img, layout)], img.dtype)
            except UnsupportedImageError as err:
                results[n] = err
                continue
            items.append((n, img, layout, scale))
        for n, mask in self._masks(items, threshold):
            results[n] = self._post(mask, label_objects, min_size, 0)[0]
        return results

    # ------------------------------------------------------------ internals
    @staticmethod
    def _colour(raw: np.ndarray, layout: ImageLayout) -> np.ndarray:
        """One slice as gray H×W or RGB H×W×3 (alpha and a single-channel axis dropped); a view."""
        raw = np.asarray(raw)
        if layout.squeeze:
            raw = raw[..., 0]
        return raw[..., :3] if layout.kind == "rgba" else raw

    def _slices(self, image: Any, layout: ImageLayout) -> Iterator[np.ndarray]:
        for i in range(layout.n_slices):
            yield self._colour(image[layout.index(i)], layout)

    def _run(self, image: Any, layout: ImageLayout, *, threshold: float, label_objects: bool, min_size: int,
             normalize: str, soft: bool) -> Generator[Progress, None, np.ndarray]:
        total = layout.n_slices
        stack_scale = None
        if normalize == "stack":
            stack_scale = intensity_scale(self._slices(image, layout), image.dtype)
        if soft:
            out = np.zeros(layout.mask_shape, np.float32)
        else:
            out = np.zeros(layout.mask_shape, np.int32 if label_objects else np.uint8)
        yield Progress(0, total, f"segmenting on {self.device_name}")

        def items() -> Iterator[tuple[int, np.ndarray, ImageLayout, IntensityScale]]:
            for i in range(total):
                raw = image[layout.index(i)]
                scale = stack_scale or intensity_scale([self._colour(raw, layout)], image.dtype)
                yield i, raw, layout, scale

        next_label = 0
        done = 0
        for i, mask in self._masks(items(), None if soft else threshold):
            if soft:
                out[layout.index(i)] = mask
            else:
                out[layout.index(i)], next_label = self._post(mask, label_objects, min_size, next_label)
            done += 1
            if done % self.batch_size == 0 or done == total:
                yield Progress(done, total, f"slice {done}/{total} on {self.device_name}")
        return out

    @staticmethod
    def _post(mask: np.ndarray, label_objects: bool, min_size: int, offset: int) -> tuple[np.ndarray, int]:
        """Labelling / small-object removal of one thresholded slice; labels continue after ``offset``."""
        if not label_objects and min_size <= 1:
            return mask.astype(np.uint8, copy=False), offset
        labels = label_mask(mask, min_size, label_objects)
        if not label_objects:
            return labels, offset
        top = int(labels.max())
        if offset and top:
            labels[labels > 0] += offset
        return labels, offset + top

    def _prepare(self, raw: np.ndarray, layout: ImageLayout, scale: IntensityScale) -> torch.Tensor:
        """One slice → 1×3×S×S float32 on the device (gray is resized as one channel, then repeated)."""
        x = torch.from_numpy(scale.apply(self._colour(raw, layout)))
        x = x[None, None] if layout.kind == "gray" else x.permute(2, 0, 1)[None]
        x = resize_image(x.to(self.device, non_blocking=True), self.image_size)
        return x.expand(-1, 3, -1, -1) if layout.kind == "gray" else x

    def _autocast(self):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def _masks(self, items: Iterable[tuple[int, np.ndarray, ImageLayout, IntensityScale]],
               threshold: float | None) -> Iterator[tuple[int, np.ndarray]]:
        """Batched model calls over ``(key, raw slice, layout, scale)``: yields ``(key, mask)`` in order.

        The soft mask is resized back to each slice's size on the device (bilinear; antialiased where
        it shrinks), then thresholded (``mask > threshold``, uint8) unless ``threshold`` is ``None``.
        """
        batch: list[tuple[int, ImageLayout]] = []
        tensors: list[torch.Tensor] = []
        items = iter(items)
        while True:
            with torch.inference_mode():
                for key, raw, layout, scale in items:
                    tensors.append(self._prepare(raw, layout, scale))
                    batch.append((key, layout))
                    if len(batch) == self.batch_size:
                        break
                if not batch:
                    return
                x = torch.cat(tensors)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with self._autocast():
                    prob = self.model.predict(x)
                prob = prob.float()
                results = []
                for j, (key, layout) in enumerate(batch):
                    size = (layout.height, layout.width)
                    p = prob[j:j + 1]
                    if p.shape[-2:] != size:
                        shrink = layout.height < self.image_size or layout.width < self.image_size
                        p = F.interpolate(p, size=size, mode="bilinear", align_corners=False,
                                          antialias=shrink)
                    p = p[0, 0]
                    m = (p > threshold).to(torch.uint8) if threshold is not None else p.clamp(0.0, 1.0)
                    results.append((key, m.cpu().numpy()))
            batch, tensors = [], []
            yield from results
