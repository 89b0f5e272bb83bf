"""Whether an image is of a kind the built-in models know (ultrasound, endoscopy, dermoscopy) at all.

The image-kind classifier (:mod:`napari_wavegms.inference.modality`) always answers one of its three
kinds, for a photo of an astronaut too, and a model made for skin then draws a confident mask on it.
This check reads the image a second way, through the built-in models' own frozen image encoder (the
TAEF2 Tiny-VAE encoder every built-in model reads its images through): a strided sample of the image,
resized to :data:`LATENT_SIDE`², is encoded and its latent summarised (:func:`descriptor`: per channel
the mean, spread and 10/50/90 % quantiles). The mean distance to the nearest reference images of each
kind (:data:`PARAMS_PATH`), in robustly standardised units and divided by the distance that 99 % of that
kind's out-of-fold training images stay within, is the image's distance to that kind. The image is of a
known kind when both readings agree: the encoder finds it nearest to the kind the classifier names,
and within that kind's reach (distance ≤ 1), and it lies no nearer to pictures of other kinds than
the known images do (:func:`other_likeness` ≤ 1). Otherwise it is "not a kind of image the built-in
models know".

Why a distance and not a fourth class: a classifier fitted on a list of other images learns that list,
while a distance to what the models know needs no examples of the unknown. Examples of other kinds
only sharpen it: the last reading is a ratio of two nearest-neighbour distances, to the kind's own
images and to a pool of pictures of other kinds (``training/scripts/negatives.py``: the *dev* sources
and made-up charts, screenshots, documents, CT/MRI/X-ray-like scans, microscopy, stained tissue,
fundus-like pictures, noise, faces …), which catches pictures that sit at the edge of a known kind's
reach but among other kinds' (a cat among the dermoscopy images). Its threshold is set on out-of-fold
training images only (99.5 % of them pass), and what it adds was judged leaving each source of the pool
out in turn; the *test* sources are never fitted on. Why the encoder's latents: the classifier's 19 colour
and texture statistics alone took a fifth of the other kinds for known ones. Why the agreement: on the
held-out images of the four data sets the two readings name the same kind for 99.5 % of images, on
images of other kinds for a third, so a disagreement is strong evidence of an unknown kind and catches
pictures (a fundus, a cat) that lie close to one known kind while looking like another. Why this size:
the encoder pass is the check's whole cost, and at :data:`LATENT_SIDE`² it stays well within 50 ms per
image on 2 CPU threads (``training/benchmarks/bench_routing.py``). The reference and thresholds are
fitted by ``python -m napari_wavegms.tuning.unknown_kind_fit`` on training splits only (an .npz read
without pickle); the numbers are in ``docs/notes/image-kind.md``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from napari_wavegms.inference.modality import FEATURES, KINDS, classify_features, features_of_sample, sample_rgb

PARAMS_PATH = Path(__file__).with_name("unknown_kind.npz")

#: The side of the square the image's sample is resized to before the encoder reads it (latent side/8).
LATENT_SIDE = 64

_LOCK = threading.Lock()  # one encoder, shared by the widgets' threads


@dataclass(frozen=True)
class KindCheck:
    """How far an image lies from each kind the models know, and the kind the classifier names;
    ``known`` when the encoder finds it nearest to that kind and within its reach."""

    distance: dict[str, float]  # per kind: relative distance, ≤ 1 for 99 % of out-of-fold images of it
    kind: str  # the kind the image-kind classifier names for the image alone
    other: float = 0.0  # :func:`other_likeness`: ≤ 1 for 99.5 % of out-of-fold images of known kinds

    @property
    def nearest(self) -> str:
        """The kind whose reference images the encoder finds nearest."""
        return min(self.distance, key=self.distance.__getitem__)

    @property
    def known(self) -> bool:
        return self.nearest == self.kind and self.distance[self.kind] <= 1.0 and self.other <= 1.0

    def __str__(self) -> str:
        d = self.distance[self.kind]
        if self.known:
            return f"like the {self.kind} images the models know ({d:.2f})"
        if self.nearest != self.kind:
            return (f"its statistics say {self.kind}, the models' own encoder finds it nearer to {self.nearest} "
                    f"images")
        if d > 1.0:
            return f"{d:.1f}× further from the {self.kind} images the models know than 99 % of them"
        return (f"nearer to pictures of other kinds than to the {self.kind} images the models know "
                f"({self.other:.2f}× the most that 99.5 % of those are)")


# ---------------------------------------------------------------- what the check reads
@lru_cache(maxsize=1)
def _encoder() -> Any:
    """The frozen TAEF2 encoder shipped in the package (the built-in models' own image encoder)."""
    from napari_wavegms.network.tiny_vae import load_tiny_vae

    return load_tiny_vae("taef2").autoencoder.encoder.layers


def latent_of_sample(sample: np.ndarray, side: int = LATENT_SIDE) -> np.ndarray:
    """The TAEF2 latent (C × side/8 × side/8, float32) of an RGB sample in [0, 1]
    (:func:`napari_wavegms.inference.modality.sample_rgb`), squeezed to a ``side``² square."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(sample, np.float32)).permute(2, 0, 1)[None]
    x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    with _LOCK, torch.inference_mode():
        return _encoder()(x)[0].float().numpy()


def latent_grid(image: Any, rgb: bool | None = None, side: int = LATENT_SIDE) -> np.ndarray:
    """:func:`latent_of_sample` of a napari-style image's first plane."""
    return latent_of_sample(sample_rgb(image, rgb), side)


def kind_features(image: Any, rgb: bool | None = None) -> np.ndarray:
    """The classifier's statistics (:data:`napari_wavegms.inference.modality.FEATURES` order) as an array."""
    feats = features_of_sample(sample_rgb(image, rgb))
    return np.array([feats[name] for name in FEATURES], np.float32)


def descriptor(grids: np.ndarray) -> np.ndarray:
    """N×D summaries of N latents (N×C×h×w): per channel the mean, standard deviation and 10/50/90 %
    quantiles (5 × 32 numbers). Why these: quantiles see the shape of each channel's distribution (a
    sector's black corners, a lit cavity) that mean and spread miss; on the dev part of the other kinds
    they raised the share called unknown (86 → 87 %, at 99 % thresholds 87 → 92 %) at no cost on real
    images, while the quadrants' means, channel correlations, per-position (patch) distances and
    whitening all did worse."""
    flat = np.asarray(grids, np.float32).reshape(len(grids), grids.shape[1], -1)
    return np.concatenate([flat.mean(2), flat.std(2), *np.quantile(flat, [0.1, 0.5, 0.9], axis=2)], axis=1)


# ---------------------------------------------------------------- the distance
def knn_distance(z: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """Mean Euclidean distance of each row of ``z`` (N×F) to its ``k`` nearest rows of ``reference``."""
    z = np.atleast_2d(np.asarray(z, np.float32))
    d2 = (z * z).sum(1)[:, None] - 2.0 * z @ reference.T + (reference * reference).sum(1)[None, :]
    k = min(k, reference.shape[0])
    nearest = np.partition(np.maximum(d2, 0.0), k - 1, axis=1)[:, :k]
    return np.sqrt(nearest).mean(axis=1)


@lru_cache(maxsize=1)
def _params() -> dict[str, np.ndarray]:
    with np.load(PARAMS_PATH, allow_pickle=False) as stored:
        params = {name: stored[name] for name in stored.files}
    if [str(k) for k in params["kinds"]] != list(KINDS) or int(params["side"]) != LATENT_SIDE:
        raise RuntimeError(f"{PARAMS_PATH} was fitted for other kinds or another latent size: refit with "
                           "python -m napari_wavegms.tuning.unknown_kind_fit --write")
    params["reference"] = params["reference"].astype(np.float32)
    if "others" in params:
        params["others"] = params["others"].astype(np.float32)
    return params


def relative_distances(described: np.ndarray, params: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """N×kinds distances of :func:`descriptor` rows to each kind's reference, relative to its threshold."""
    params = _params() if params is None else params
    z = (np.atleast_2d(described).astype(np.float32) - params["centre"]) / params["scale"]
    k = int(params["k"])
    labels = params["labels"]
    return np.stack([knn_distance(z, params["reference"][labels == c], k) / params["threshold"][c]
                     for c in range(len(KINDS))], axis=1)


def other_likeness(described: np.ndarray, kinds: np.ndarray, params: dict[str, np.ndarray] | None = None
                   ) -> np.ndarray:
    """How much nearer each :func:`descriptor` row lies to pictures of other kinds than to its kind's
    images (``kinds``: index into :data:`KINDS` the classifier names): the ratio of its mean distance to
    the ``k`` nearest reference rows of that kind to its mean distance to the ``k`` nearest rows of the
    pool of other kinds, divided by the ratio that 99.5 % of out-of-fold training images stay within
    (≤ 1 for them). 0 where the parameters hold no pool (an older fit)."""
    params = _params() if params is None else params
    kinds = np.atleast_1d(np.asarray(kinds))
    if "others" not in params:
        return np.zeros(len(kinds), np.float32)
    z = (np.atleast_2d(described).astype(np.float32) - params["centre"]) / params["scale"]
    k = int(params["k"])
    own = np.zeros(len(z), np.float32)
    for c in np.unique(kinds):
        own[kinds == c] = knn_distance(z[kinds == c], params["reference"][params["labels"] == c], k)
    others = knn_distance(z, params["others"], k)
    return (own / np.maximum(others, 1e-6) / params["other_threshold"]).astype(np.float32)


def check_sample(sample: np.ndarray, feats: dict[str, float] | None = None, kind: str | None = None) -> KindCheck:
    """:class:`KindCheck` of an RGB sample (:func:`napari_wavegms.inference.modality.sample_rgb`).
    ``feats`` (its :func:`~napari_wavegms.inference.modality.features_of_sample`) and ``kind`` (what the
    classifier names for it alone) are computed when the caller does not have them."""
    if kind is None:
        kind = classify_features(features_of_sample(sample) if feats is None else feats).kind
    described = descriptor(latent_of_sample(sample)[None])
    row = relative_distances(described)[0]
    other = float(other_likeness(described, np.array([KINDS.index(kind)]))[0])
    return KindCheck({k: float(d) for k, d in zip(KINDS, row, strict=True)}, kind, other)


def check(image: Any, rgb: bool | None = None) -> KindCheck:
    """:class:`KindCheck` of a napari-style image (any dtype, numpy or dask; stacks by their first plane)."""
    return check_sample(sample_rgb(image, rgb))
