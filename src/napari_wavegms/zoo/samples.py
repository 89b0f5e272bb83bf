"""Sample data: real medical images with their ground-truth masks, fetched on first use and verified.

The image is a published file, pinned by its sha256 and fetched with :func:`weights.fetch` (offline
folder ``WAVEGMS_DATA_DIR`` → cache → download). Masks need one special case: the public source stores
Kvasir-SEG masks as JPEGs (grey values smeared around the edges), while our offline data folder holds
them as PNGs thresholded at grey > 127. So a mask is accepted when either

- it is the offline PNG whose *file* sha256 is pinned (``mask_png``), or
- it is the publisher's original JPEG (offline or downloaded into the cache), checked by the sha256
  of its *pixels* after the same thresholding (:func:`mask_pixel_sha256`), since re-encoding or a
  different JPEG decoder could change bytes but must not change the mask.

BUSI is not offered: no public copy is byte-identical to ours (the PNGs were re-encoded), and a sample
that only works with our private folder would fail for every user.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_wavegms.core.io import read_image
from napari_wavegms.zoo.downloads import DATA_ENV, HashMismatchError, RemoteFile, WeightsUnavailableError, fetch

_KVASIR_RAW = (
    "https://github.com/ViniciusSimm/Colo-Retal-Induscon2023/raw/c5846892339ad5295f05c4dbec123f7b6bbbf3e6/"
    "datasets/Kvasir-SEG/{folder}/{name}"
)
# The same licence wording as the README's data credits and the built-in polyp model's card.
KVASIR_LICENCE = "free for research and education, commercial use needs the authors' permission"
KVASIR_CITATION = (
    f"Kvasir-SEG (datasets.simula.no/kvasir-seg): {KVASIR_LICENCE}; cite D. Jha et al., "
    '"Kvasir-SEG: A Segmented Polyp Dataset", MMM 2020.'
)


@dataclass(frozen=True)
class Sample:
    """One image with its ground-truth mask."""

    key: str
    title: str
    image: RemoteFile
    mask_png: RemoteFile  # our thresholded PNG, pinned by file sha256 (offline folders only)
    mask_original: RemoteFile  # the publisher's mask file, pinned by its pixels (sha256 is None)
    mask_pixel_sha256: str
    citation: str
    modality: str


def _kvasir(key: str, stem: str, image_sha: str, mask_png_sha: str, pixel_sha: str) -> Sample:
    return Sample(
        key=key,
        title=f"Kvasir-SEG polyp {stem[:8]}",
        image=RemoteFile(
            f"kvasir-seg/images/{stem}.jpg",
            _KVASIR_RAW.format(folder="images", name=f"{stem}.jpg"),
            image_sha,
            env=DATA_ENV,
        ),
        mask_png=RemoteFile(f"kvasir-seg/masks/{stem}.png", "", mask_png_sha, env=DATA_ENV),
        mask_original=RemoteFile(
            f"kvasir-seg/masks/{stem}.jpg",
            _KVASIR_RAW.format(folder="masks", name=f"{stem}.jpg"),
            None,
            env=DATA_ENV,
        ),
        mask_pixel_sha256=pixel_sha,
        citation=KVASIR_CITATION,
        modality="colonoscopy (RGB endoscopy frame)",
    )


SAMPLES: dict[str, Sample] = {
    "kvasir_polyp": _kvasir(
        "kvasir_polyp",
        "cju16jgnyzp970878melv7r25",  # medico2020 validation split, 560×529, polyp ≈ 12 % of the frame
        image_sha="cea956191d9addd2855461c40ef6aba1cd715fcc4370a8dcaf1b03ce0e9cab63",
        mask_png_sha="49c66cb8c4c58513e72c570d90b6905ba37289c7d84d64c71186d67dcad587cb",
        pixel_sha="be7f5cc9915e4fc04bf12062a4e99be00eeea5f22e750f543e2bc4de73468a1f",
    ),
}


def threshold_mask(array: np.ndarray) -> np.ndarray:
    """Grey > 127 → bool mask; colour files are made grey exactly as PIL's ``convert("L")`` does
    (ITU-R 601 luma in 16-bit fixed point), the rule our offline PNGs were made with."""
    a = np.asarray(array)
    if a.ndim == 3:
        rgb = a[..., :3].astype(np.int64)
        a = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
    return a > 127


def mask_pixel_sha256(mask: np.ndarray) -> str:
    """sha256 of a boolean mask's pixels, shape included (``b"HxW:"`` then one byte 0/1 per pixel)."""
    m = np.ascontiguousarray(np.asarray(mask, dtype=bool))
    header = "x".join(str(n) for n in m.shape).encode() + b":"
    return hashlib.sha256(header + m.astype(np.uint8).tobytes()).hexdigest()


def _verified_mask(path: Path, sample: Sample) -> np.ndarray:
    mask = threshold_mask(read_image(path))
    actual = mask_pixel_sha256(mask)
    if actual != sample.mask_pixel_sha256:
        raise HashMismatchError(
            f"{path}: its mask pixels do not match the pinned ground truth of {sample.title} "
            f"(pixel sha256 {actual}, expected {sample.mask_pixel_sha256})"
        )
    return mask


def load_sample(key: str = "kvasir_polyp") -> tuple[np.ndarray, np.ndarray, Sample]:
    """``(image, bool mask, sample)`` for a sample, fetching (and verifying) its files if needed."""
    try:
        sample = SAMPLES[key]
    except KeyError:
        raise KeyError(f"unknown sample {key!r}; known: {', '.join(SAMPLES)}") from None
    image = read_image(fetch(sample.image))
    try:
        mask = read_image(fetch(sample.mask_png, allow_download=False)) > 0
    except WeightsUnavailableError:
        path = fetch(sample.mask_original, verify=lambda p: _verified_mask(p, sample))
        mask = threshold_mask(read_image(path))
    if mask.shape != image.shape[:2]:
        raise HashMismatchError(f"{sample.title}: mask shape {mask.shape} does not fit image {image.shape}")
    return image, mask, sample
