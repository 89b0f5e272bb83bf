"""A folder of corrected masks: the training examples a user keeps while correcting the model's masks.

The folder is a training data folder as every part of the engine reads one (``images/`` and ``masks/``,
paired by name), so ``wavegms-train --data FOLDER`` and the Train widget use it as it is. Beside
them, ``records/<name>.json`` says where each example came from: the image file or layer, the model
that drew the mask, and how much the user changed it (Dice between the model's mask and the corrected
one: 1.0 is a mask kept as drawn, a confirmation that is worth keeping too).

Every file is written atomically, image first, mask second, record last; an example counts once its
mask is there. Keeping the same image again (same name, same source) replaces its earlier pair, so a
re-corrected mask is never in the data twice (it would sit on both sides of a held-out split); another
image with the same name gets a new name.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_wavegms.core.atomic import atomic_path
from napari_wavegms.core.io import write_mask

IMAGES, MASKS, RECORDS = "images", "masks", "records"


@dataclass(frozen=True)
class Example:
    """One kept pair and its record."""

    name: str
    image: Path
    mask: Path
    record: dict[str, Any]


def count(folder: str | os.PathLike) -> int:
    """How many examples ``folder`` holds (pairs whose mask is there); 0 for a folder that is not there."""
    masks = Path(folder) / MASKS
    return sum(1 for p in masks.glob("*.png")) if masks.is_dir() else 0


def records(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``folder``'s examples, oldest first (an unreadable record is left out)."""
    found = []
    for path in sorted((Path(folder) / RECORDS).glob("*.json")):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(found, key=lambda r: r.get("kept", ""))


def safe_name(name: str) -> str:
    """A file stem from an image's name: letters, digits, ``-``, ``_`` and ``.`` (never a path)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).name).strip("._")
    return stem[:100] or "image"


def changed_dice(drawn: np.ndarray | None, corrected: np.ndarray) -> float | None:
    """Dice between the model's mask and the corrected one (1.0 when both are empty); ``None`` when the
    model's mask is unknown or of another shape."""
    from napari_wavegms.training.metrics import dice_iou

    if drawn is None or np.shape(drawn) != np.shape(corrected):
        return None
    return dice_iou(np.asarray(drawn) > 0, np.asarray(corrected) > 0)[0]


def keep(folder: str | os.PathLike, image: np.ndarray, mask: np.ndarray, *, name: str,
         model: str | None = None, drawn: np.ndarray | None = None, source: str | None = None) -> Example:
    """Write ``image`` and its corrected ``mask`` (any labels; foreground = non-zero) into ``folder``.

    ``image`` is one 2D image, grey (H×W) or colour (H×W×3/4), as shown; ``drawn`` is the model's mask
    before the correction, ``model`` the model that drew it and ``source`` where the image came from
    (a file or a layer name). Raises ``ValueError`` for an image that cannot be a training example.
    """
    image, mask = np.asarray(image), np.asarray(mask)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (3, 4)):
        raise ValueError(f"{name}: a training example is one 2D image (grey or colour), not shape {image.shape}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"{name}: the mask {mask.shape} does not cover the image {image.shape[:2]}")
    folder = Path(folder)
    for part in (IMAGES, MASKS, RECORDS):
        (folder / part).mkdir(parents=True, exist_ok=True)
    stem = _free_stem(folder, safe_name(name), source)
    image_path = _write_image(folder / IMAGES, stem, image)
    mask_path = write_mask(folder / MASKS / f"{stem}.png", mask > 0)
    foreground = float((mask > 0).mean())
    record = {"name": stem, "image": image_path.name, "mask": mask_path.name, "source": source, "model": model,
              "changed_dice": changed_dice(drawn, mask), "foreground": round(foreground, 5),
              "kept": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with atomic_path(folder / RECORDS / f"{stem}.json") as tmp:
        Path(tmp).write_text(json.dumps(record, indent=1) + "\n")
    return Example(stem, image_path, mask_path, record)


def _free_stem(folder: Path, stem: str, source: str | None) -> str:
    """``stem``, unless another image holds it already: then ``stem-2``, ``stem-3``, … The same source
    keeps its name (its pair is replaced)."""
    candidate, n = stem, 1
    while (folder / MASKS / f"{candidate}.png").exists():
        try:
            earlier = json.loads((folder / RECORDS / f"{candidate}.json").read_text()).get("source")
        except (OSError, ValueError):
            earlier = None
        if source is not None and earlier == source:
            return candidate
        n += 1
        candidate = f"{stem}-{n}"
    return candidate


def _write_image(images: Path, stem: str, image: np.ndarray) -> Path:
    """PNG for 8-bit images (as most scanners export them), TIFF for anything else, values untouched;
    an earlier file of the same example in the other format is removed, so the pair stays one pair."""
    png = image.dtype in (np.uint8, np.bool_)
    path = images / f"{stem}.{'png' if png else 'tif'}"
    with atomic_path(path) as tmp:
        if png:
            import imageio.v3 as iio

            iio.imwrite(tmp, image.astype(np.uint8, copy=False), extension=".png")
        else:
            import tifffile

            tifffile.imwrite(tmp, image, compression="zlib", photometric="rgb" if image.ndim == 3 else "minisblack")
    for other in images.glob(f"{stem}.*"):
        if other != path and other.suffix.lower() in (".png", ".tif", ".tiff"):
            other.unlink()
    return path
