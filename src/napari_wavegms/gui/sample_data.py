"""napari sample data (File ▸ Open Sample ▸ Wave-GMS): an image layer and its ground-truth Labels layer."""

from __future__ import annotations

from typing import Any

# The ground truth is always green: napari's default colour for label 1 (a dark orange) is what a
# Segment result gets, so the two masks would otherwise look the same when compared on the sample.
GROUND_TRUTH_COLOUR = "limegreen"


def kvasir_polyp() -> list[tuple[Any, dict, str]]:
    """A Kvasir-SEG colonoscopy frame with its polyp mask (downloaded once, then from the cache)."""
    import numpy as np

    from napari_wavegms.zoo.samples import load_sample

    image, mask, sample = load_sample("kvasir_polyp")
    meta = {"source": sample.image.url, "citation": sample.citation, "modality": sample.modality}
    truth_colours = {0: "transparent", None: GROUND_TRUTH_COLOUR}  # every label id: green
    return [
        (image, {"name": sample.title, "metadata": meta}, "image"),
        (
            mask.astype(np.uint8),
            {"name": f"{sample.title} ground truth", "metadata": meta, "opacity": 0.4,
             "colormap": truth_colours},
            "labels",
        ),
    ]
