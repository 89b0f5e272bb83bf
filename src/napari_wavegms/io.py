"""Reading images and masks from files, writing masks: with clear errors that name the file.

PNG, JPEG and BMP go through imageio (via scikit-image's reader), TIFF through tifffile (which keeps
16-bit and float data as they are). Arrays come back as stored: H×W, H×W×3 or H×W×4 in their own
dtype (grey + alpha files come back as their grey H×W channel); :mod:`napari_wavegms.preprocess`
decides how to normalise them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .atomic import atomic_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MASK_FORMATS = ("png", "tif")


class ImageReadError(OSError):
    """A file that could not be read as an image, with the file and the reason."""


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_image(path: str | os.PathLike) -> np.ndarray:
    """The pixels of an image file as stored (no normalisation); raises :class:`ImageReadError`."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    if not is_image_file(path):
        expected = ", ".join(IMAGE_SUFFIXES)
        raise ImageReadError(f"{path}: unsupported file type {path.suffix!r} (expected one of {expected})")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            array = tifffile.imread(path)
        else:
            import imageio.v3 as iio

            array = iio.imread(path)
    except Exception as err:  # readers raise many types for truncated or mislabelled files
        raise ImageReadError(f"{path}: cannot be read as an image ({type(err).__name__}: {err})") from err
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[-1] not in (3, 4):
        array = np.moveaxis(array, 0, -1)  # channel-first TIFF
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (1, 2, 3, 4)):
        raise ImageReadError(f"{path}: shape {array.shape} is not a 2D gray, grey+alpha, RGB or RGBA image")
    if array.ndim == 3 and array.shape[-1] in (1, 2):  # one grey channel, or grey + alpha (alpha is no intensity)
        array = array[..., 0]
    if array.size == 0:
        raise ImageReadError(f"{path}: the image is empty")
    return array


def mask_from_array(array: np.ndarray) -> tuple[np.ndarray, bool]:
    """Foreground (any nonzero colour; alpha ignored) of a mask array, and whether it was binary.

    Masks may be 0/255, 0/1 or use any nonzero value for foreground; more than two distinct values
    is reported (``binary=False``) because it usually means a JPEG-compressed or label mask.
    """
    if array.ndim == 3:
        array = array[..., :3] if array.shape[-1] == 4 else array
        gray = array.max(axis=-1)
    else:
        gray = array
    values = np.unique(gray)
    return gray > 0, len(values) <= 2


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A mask file as a boolean H×W array (see :func:`mask_from_array`)."""
    return mask_from_array(read_image(path))[0]


def mask_to_array(mask: np.ndarray, convention: str = "0/255") -> np.ndarray:
    """Bool or label mask → the array to store: ``0/255`` or ``0/1`` (uint8), or ``labels``."""
    if convention == "0/255":
        return (np.asarray(mask) > 0).astype(np.uint8) * 255
    if convention == "0/1":
        return (np.asarray(mask) > 0).astype(np.uint8)
    if convention == "labels":
        m = np.asarray(mask)
        top = int(m.max()) if m.size else 0
        return m.astype(np.uint8 if top < 256 else np.uint16 if top < 65536 else np.uint32)
    raise ValueError(f"unknown mask convention {convention!r}: use 0/255, 0/1 or labels")


def write_mask(path: str | os.PathLike, mask: np.ndarray, convention: str = "0/255") -> Path:
    """Write a 2D mask (or a stack, TIFF only) atomically as PNG or TIFF, chosen by the suffix."""
    path = Path(path)
    data = mask_to_array(mask, convention)
    suffix = path.suffix.lower()
    with atomic_path(path) as tmp:
        if suffix in (".tif", ".tiff"):
            import tifffile

            # minisblack: a stack of 3 or 4 masks is slices, never an RGB image.
            tifffile.imwrite(tmp, data, compression="zlib", photometric="minisblack")
        elif suffix == ".png":
            if data.ndim != 2:
                raise ValueError(f"{path}: PNG holds one 2D mask; use .tif for a stack of shape {data.shape}")
            if data.dtype == np.uint32:
                raise ValueError(f"{path}: {int(data.max())} labels do not fit a PNG; use .tif")
            import imageio.v3 as iio

            iio.imwrite(tmp, data, extension=".png")
        else:
            raise ValueError(f"{path}: masks are written as .png or .tif, not {suffix!r}")
    return path
