"""napari sample data (File ▸ Open Sample ▸ Wave-GMS): an image layer and its ground-truth Labels layer."""

from __future__ import annotations

from typing import Any


def kvasir_polyp() -> list[tuple[Any, dict, str]]:
    """A Kvasir-SEG colonoscopy frame with its polyp mask (downloaded once, then from the cache)."""
    import numpy as np

    from .samples import load_sample

    image, mask, sample = load_sample("kvasir_polyp")
    meta = {"source": sample.image.url, "citation": sample.citation, "modality": sample.modality}
    return [
        (image, {"name": sample.title, "metadata": meta}, "image"),
        (
            mask.astype(np.uint8),
            {"name": f"{sample.title} ground truth", "metadata": meta, "opacity": 0.4},
            "labels",
        ),
    ]
