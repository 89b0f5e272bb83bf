"""Reading images and masks from files, writing masks: with clear errors that name the file.

PNG, JPEG and BMP go through imageio, TIFF through tifffile (which keeps 16-bit and float data as they
are). Arrays come back as stored: H×W, H×W×3 or H×W×4 in their own dtype (grey + alpha files come
back as their grey H×W channel); :mod:`napari_wavegms.core.images` decides how to normalise them.
A multi-page TIFF is a stack, told from colour by the file's own metadata (:func:`read_image_or_stack`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from napari_wavegms.core.atomic import atomic_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MASK_FORMATS = ("png", "tif")


class ImageReadError(OSError):
    """A file that could not be read as an image, with the file and the reason."""


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


#: The first bytes of each image type read here (TIFF: little/big-endian, classic/BigTIFF).
_MAGIC = {
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "JPEG": (b"\xff\xd8\xff",),
    "BMP": (b"BM",),
    "TIFF": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
}
_KIND = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}


def _check_file(path: Path) -> None:
    """Refuse, with the reason a person can act on, what no reader can open: a missing file, a link
    loop, a folder, an empty file, or content that is no image at all (a text file named ``.png``);
    readers' own messages for these point at the wrong fix (installing a plugin)."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except OSError as err:
        raise ImageReadError(f"{path}: cannot be opened ({err.strerror})") from None
    if not path.is_file():
        raise ImageReadError(f"{path}: not a file")
    if not is_image_file(path):
        expected = ", ".join(IMAGE_SUFFIXES)
        raise ImageReadError(f"{path}: unsupported file type {path.suffix!r} (expected one of {expected})")
    if size == 0:
        raise ImageReadError(f"{path}: the file is empty (0 bytes)")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as err:
        raise ImageReadError(f"{path}: cannot be opened ({err.strerror})") from None
    if not any(head.startswith(magic) for magics in _MAGIC.values() for magic in magics):
        kind = _KIND[path.suffix.lower()]
        raise ImageReadError(f"{path}: not a {kind} image (its content is not any image type read here)")


def _read_tiff(path: Path) -> tuple[np.ndarray, bool]:
    """A TIFF's first series as pages × H × W (× samples) and whether it holds several pages.

    Colour comes from the file's own metadata, never from a count: only a samples axis (``S``, which
    tifffile reports for RGB(A) and grey + alpha data, planar or not) is channels; every other axis
    (``Q``, ``Z``, ``T``, ``C``, ``I``…) is pages, so a 3- or 4-page greyscale stack stays a stack.
    """
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        array, axes = np.asarray(series.asarray()), series.axes
    keep = [i for i, (axis, n) in enumerate(zip(axes, array.shape, strict=True)) if n > 1 or axis in "YX"]
    array = array.reshape([array.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    if "S" in axes:
        array = np.moveaxis(array, axes.index("S"), -1)
        axes = axes.replace("S", "") + "S"
    lead = len(axes.rstrip("S")) - 2
    if lead > 0:
        return array.reshape(-1, *array.shape[lead:]), True
    return array, False


def read_image_or_stack(path: str | os.PathLike) -> tuple[np.ndarray, bool]:
    """The pixels of an image file as stored, and whether it is a stack of 2D pages (a multi-page TIFF:
    N×H×W, or N×H×W×C for colour pages) rather than one image (:func:`read_image`'s layouts).
    Raises :class:`ImageReadError`."""
    path = Path(path)
    _check_file(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            array, stack = _read_tiff(path)
        else:
            import imageio.v3 as iio

            array, stack = np.asarray(iio.imread(path)), False
    except Exception as err:  # readers raise many types for truncated or mislabelled files
        raise ImageReadError(f"{path}: cannot be read as an image ({type(err).__name__}: {err})") from err
    if stack:
        return _checked(path, array, 1), True
    return _checked(path, array, 0), False


def _checked(path: Path, array: np.ndarray, lead: int) -> np.ndarray:
    """``array`` (with ``lead`` page axes) as H×W, H×W×3 or H×W×4; grey + alpha → its grey channel."""
    plane = array.shape[lead:]
    if len(plane) not in (2, 3) or (len(plane) == 3 and plane[-1] not in (1, 2, 3, 4)):
        raise ImageReadError(f"{path}: shape {array.shape} is not a 2D gray, grey+alpha, RGB or RGBA image")
    if len(plane) == 3 and plane[-1] in (1, 2):  # one grey channel, or grey + alpha (alpha is no intensity)
        array = array[..., 0]
    if array.size == 0:
        raise ImageReadError(f"{path}: the image is empty")
    return array


def read_image(path: str | os.PathLike) -> np.ndarray:
    """The pixels of a 2D image file as stored (no normalisation); raises :class:`ImageReadError`, also
    for a multi-page TIFF stack (:func:`read_image_or_stack` reads those)."""
    array, stack = read_image_or_stack(path)
    if stack:
        raise ImageReadError(f"{path}: a stack of {len(array)} pages, not one 2D image")
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
