"""napari writer: a Labels layer → a mask file (PNG for 2D, TIFF for 2D or stacks), written atomically.

Binary masks are stored as 0/255 (what image viewers and most tools expect of a mask); Labels layers
with several labels keep their label ids (``labels`` convention of :func:`napari_wavegms.core.io.write_mask`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_wavegms.core.io import write_mask


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """Write one Labels layer's data to ``path`` (.png, .tif, .tiff; no suffix → .png or .tif)."""
    array = np.asarray(data)
    target = Path(path)
    if target.suffix.lower() not in (".png", ".tif", ".tiff"):
        target = target.with_name(target.name + (".png" if array.ndim == 2 else ".tif"))
    if array.ndim > 2 and target.suffix.lower() == ".png":
        raise ValueError(
            f"{target}: a {array.ndim}D Labels layer (shape {array.shape}) does not fit a PNG; "
            "save it as .tif"
        )
    binary = array.size == 0 or (int(array.max()) <= 1 and int(array.min()) >= 0)
    write_mask(target, array, convention="0/255" if binary else "labels")
    return [str(target)]
