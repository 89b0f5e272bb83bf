"""Post-processing of thresholded masks, the clean-up a clinician expects: specks and holes.

The model draws on a coarse grid and its soft mask is resized back to the image, so a mask can hold
specks (a few pixels above the threshold away from the lesion) and holes (a dark centre of a lesion
read as background). Three steps, each optional, in this order:

1. ``min_size``: remove 8-connected objects smaller than a size; the size is given in pixels
   (``min_size``), in the image's physical units² (``min_area`` with ``scale``: a specimen's size does
   not depend on the scanner's pixel pitch), or as a fraction of the slice's area (``min_fraction``,
   what model cards store: images of one data set come at many sizes);
2. ``fill_holes``: background enclosed by foreground (4-connected background, the complement of the
   8-connected objects) becomes foreground (``scipy.ndimage.binary_fill_holes``); filling the whole
   mask equals filling each object and taking the union;
3. ``keep_largest``: only the largest object stays (the one lesion a scan is taken for).

Removing specks comes first so that a speck cannot be the "largest" object of a mask whose lesion is
gone, and filling comes before keeping the largest so that objects are measured with their holes filled.

The defaults of each built-in model are chosen on its validation split (``napari_wavegms.tuning.postprocess_choice``)
and stored in its model card as ``"postprocess"``; :class:`PostProcess` merges them with what a user
gave (anything given wins). Pure numpy / scipy / scikit-image: no torch, Qt or napari.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

__all__ = [
    "NONE", "PostProcess", "card_postprocess", "fill_holes", "keep_largest", "label_mask", "pixel_area",
    "postprocess", "remove_small",
]


def _labels(mask: np.ndarray) -> np.ndarray:
    from skimage.measure import label

    return label(np.asarray(mask) > 0, connectivity=2)


def remove_small(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    """``mask`` (2D, any dtype; > 0 is foreground) without its 8-connected objects of fewer than
    ``min_pixels`` pixels (a float, so a physical area converts without rounding); boolean."""
    fg = np.asarray(mask) > 0
    if min_pixels <= 1 or not fg.any():
        return fg
    labels = _labels(fg)
    small = np.bincount(labels.ravel()) < min_pixels
    small[0] = True  # background stays background
    return ~small[labels]


def label_mask(mask: np.ndarray, min_size: float = 0, label_objects: bool = True) -> np.ndarray:
    """8-connected objects of a 2D mask (> 0 is foreground), without those smaller than ``min_size``
    pixels (:func:`remove_small`, the one speck removal of clean-up and labelling).

    Returns int32 labels 1..n in scan order, or, with ``label_objects=False``, the cleaned uint8
    {0, 1} mask. Labelling after the removal numbers the kept objects 1..n with no gaps.
    """
    kept = remove_small(mask, min_size)
    if not label_objects:
        return kept.astype(np.uint8)
    return _labels(kept).astype(np.int32, copy=False)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with every hole filled: background not connected (4-connected) to the image border."""
    from scipy.ndimage import binary_fill_holes

    return binary_fill_holes(np.asarray(mask) > 0)


def keep_largest(mask: np.ndarray) -> np.ndarray:
    """Only the largest 8-connected object of ``mask`` (the first in scan order on a tie); boolean."""
    fg = np.asarray(mask) > 0
    if not fg.any():
        return fg
    labels = _labels(fg)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return labels == int(np.argmax(counts))


def pixel_area(scale: Sequence[float] | None) -> float:
    """Area of one pixel in physical units² from a layer's ``scale`` (its last two entries: a stack's
    slices are the last two axes); 1 without a scale."""
    if scale is None:
        return 1.0
    scale = tuple(float(s) for s in scale)
    if len(scale) < 2:
        raise ValueError(f"scale needs (sy, sx), got {scale}")
    area = abs(scale[-2] * scale[-1])
    if not math.isfinite(area) or area <= 0:
        raise ValueError(f"scale {scale} gives a pixel area of {area}: it must be positive")
    return area


@dataclass(frozen=True)
class PostProcess:
    """The post-processing of one run. At most one of the three sizes is meant to be set; if several
    are, the largest pixel count of them applies.

    ``min_size``: pixels; ``min_area``: physical units² (with the ``scale`` given to :meth:`min_pixels`);
    ``min_fraction``: a fraction of the slice's area (model cards use it).
    """

    fill_holes: bool = False
    keep_largest: bool = False
    min_size: int = 0
    min_area: float = 0.0
    min_fraction: float = 0.0

    def __post_init__(self) -> None:
        for name in ("min_size", "min_area", "min_fraction"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number ≥ 0, got {value!r}")
        if self.min_fraction >= 1:
            raise ValueError(f"min_fraction is a fraction of the image's area (< 1), got {self.min_fraction}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> PostProcess:
        """From a model card's ``"postprocess"`` (unknown keys, such as the validation numbers, ignored)."""
        if not values:
            return NONE
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in values.items() if k in fields})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def merged(self, *, fill_holes: bool | None = None, keep_largest: bool | None = None,
               min_size: int | None = None, min_area: float | None = None) -> PostProcess:
        """These defaults with what a user gave (``None`` = not given). A size the user gave, in pixels
        or in units², replaces all default sizes (including ``min_fraction``): ``min_size=0`` turns
        speck removal off."""
        out = self
        if fill_holes is not None:
            out = replace(out, fill_holes=bool(fill_holes))
        if keep_largest is not None:
            out = replace(out, keep_largest=bool(keep_largest))
        if min_size is not None or min_area is not None:
            out = replace(out, min_size=int(min_size or 0), min_area=float(min_area or 0.0), min_fraction=0.0)
        return out

    @property
    def active(self) -> bool:
        """Whether this changes any mask at all."""
        return self.fill_holes or self.keep_largest or self.min_size > 1 or self.min_area > 0 or self.min_fraction > 0

    def min_pixels(self, shape: Sequence[int], scale: Sequence[float] | None = None) -> float:
        """The smallest object kept, in pixels, for a slice of ``shape`` whose pixels have ``scale``."""
        sizes = [float(self.min_size)]
        if self.min_area:
            sizes.append(self.min_area / pixel_area(scale))
        if self.min_fraction:
            sizes.append(self.min_fraction * shape[-2] * shape[-1])
        return max(sizes)

    def describe(self) -> str:
        """Short words for metadata and status lines: ``"fill holes, min 0.5 % of the image"``."""
        parts = []
        if self.min_size > 1:
            parts.append(f"specks < {self.min_size} px removed")
        if self.min_area:
            parts.append(f"specks < {self.min_area:g} units² removed")
        if self.min_fraction:
            parts.append(f"specks < {100 * self.min_fraction:g} % of the image removed")
        if self.fill_holes:
            parts.append("holes filled")
        if self.keep_largest:
            parts.append("largest object only")
        return ", ".join(parts) or "none"

    def apply(self, mask: np.ndarray, scale: Sequence[float] | None = None) -> np.ndarray:
        """:func:`postprocess` of one 2D mask with these options; uint8 {0, 1}."""
        return postprocess(mask, fill=self.fill_holes, largest=self.keep_largest,
                           min_pixels=self.min_pixels(np.shape(mask), scale))


#: No post-processing (what a checkpoint without a card gets).
NONE = PostProcess()


def postprocess(mask: np.ndarray, *, fill: bool = False, largest: bool = False, min_pixels: float = 0) -> np.ndarray:
    """Remove objects below ``min_pixels``, fill holes, keep the largest object (the module's order);
    2D mask in (> 0 is foreground), uint8 {0, 1} out."""
    out = np.asarray(mask) > 0
    if min_pixels > 1:
        out = remove_small(out, min_pixels)
    if fill:
        out = fill_holes(out)
    if largest:
        out = keep_largest(out)
    return out.astype(np.uint8)


def card_postprocess(model: str | os.PathLike | None) -> PostProcess:
    """The post-processing a built-in model's card chose on validation (``"postprocess"``), found by
    name or by the path of its weights (the widgets pass the resolved path); :data:`NONE` for any other
    checkpoint. Reads only the JSON cards (no torch), so a widget can show the default before a run."""
    from napari_wavegms.zoo.registry import model_card

    card = model_card(model)
    return card.postprocess if card is not None else NONE
