"""What kind of medical image this is: ultrasound, endoscopy or dermoscopy, with the reason.

The built-in models are each made for one kind of image, and grey-or-colour no longer tells them
apart once there is a skin model. This module looks at a few cheap, explainable image statistics
(how grey the image is, how much strong colour it has, its hues, dark corners and borders, speckle,
lighting, specular highlights) and weighs them with small gradient-boosted trees (90 trees of depth 2,
a few kB of JSON in ``modality.json``), fitted by ``napari_wavegms.tuning.modality_fit`` on training splits only,
with augmentations that mimic other devices: grey saved as RGB JPEG, colour annotations and Doppler
overlays on ultrasound, other white balance, framing and crops for the colour kinds. Trees rather than
one linear score because the colour kinds are told apart by combinations (dark corners *and* speckle).
The reason comes from the trees' own paths: the features that moved the score most. A folder's
images can inform each other (:func:`folder_prior`, :func:`with_prior`): an ambiguous image is then
judged as an image of its folder, which is nearly always of one kind.

It imports numpy only and reads at most ~64k pixels of the first plane (a strided view), so it is
fast on large and lazy (dask) images and never loads torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("ultrasound", "endoscopy", "dermoscopy")
PARAMS_PATH = Path(__file__).with_name("modality.json")
SAMPLE_SIDE = 256  # the strided sample's longer side: at most 256 × 256 = 64k pixels are read

DARK = 0.10  # pixels darker than this (of the image's range) are background: borders, corners, sector
GREY_CHROMA = 0.04  # max − min channel below this is grey (JPEG-saved grey stays well below it)

# Each feature with the phrase that explains it when it is high and when it is low.
FEATURES: dict[str, tuple[str, str]] = {
    "grey": ("grey", "colour"),
    "strong_colour": ("strongly coloured", "little strong colour"),
    "saturation": ("saturated colour", "pale colours"),
    "red": ("red-pink tissue", "little red"),
    "blue_minus_green": ("pink-violet hue", "skin-brown hue"),
    "dark": ("much black background", "little black background"),
    "dark_corners": ("dark corners", "bright corners"),
    "dark_rows": ("black top/bottom borders", "no black borders"),
    "speckle": ("speckle texture", "smooth texture"),
    "highlights": ("specular highlights", "no specular highlights"),
    "centre_contrast": ("bright centre (vignette)", "even lighting"),
    "green_ratio": ("skin tones", "deep red tissue"),
    "blue_ratio": ("cool tint", "warm tint"),
    "hue_brown": ("brown-orange hues", "few brown hues"),
    "hue_pink": ("pink-red hues", "few pink hues"),
    "contrast": ("high contrast", "low contrast"),
    "dark_saturation": ("coloured dark regions", "dull dark regions"),
    "shading": ("uneven brightness", "flat lighting"),
    "fine_detail": ("fine detail", "broad shapes"),
}


#: Below this probability a kind is called "uncertain" (in the reason, and as a doubt by the router).
UNSURE_BELOW = 0.6

COLOUR_FEATURES = {"strong_colour", "saturation", "red", "blue_minus_green", "green_ratio", "blue_ratio",
                   "hue_brown", "hue_pink", "dark_saturation"}


@dataclass(frozen=True)
class Modality:
    """The kind of image, how sure the classifier is, and the evidence in words."""

    kind: str
    reason: str
    confidence: float
    scores: dict[str, float] = field(default_factory=dict)
    alone: dict[str, float] = field(default_factory=dict)  # the probabilities of the image judged alone

    def __str__(self) -> str:
        return f"{self.kind} ({self.reason})"


# ---------------------------------------------------------------- sampling
def first_plane(image: Any, rgb: bool | None = None) -> tuple[Any, bool]:
    """The first 2D plane of a napari-style image (stacks: first slice) and whether it has channels.

    ``rgb=None`` guesses: a trailing axis of 3 or 4 is colour; a trailing axis of 2 on a 3D array is
    grey + alpha (napari's reading of such PNGs), taken as grey.
    """
    shape = tuple(getattr(image, "shape", np.shape(image)))
    if rgb is None:
        rgb = len(shape) >= 3 and shape[-1] in (3, 4)
    plane = image
    if not rgb and len(shape) == 3 and shape[-1] == 2:  # grey + alpha
        plane = plane[..., 0]
    keep = 3 if rgb else 2
    while len(getattr(plane, "shape", ())) > keep:
        plane = plane[0]
    return plane, bool(rgb)


def sample_rgb(image: Any, rgb: bool | None = None, side: int = SAMPLE_SIDE) -> np.ndarray:
    """A strided sample (longer side ≤ ``side``) of the first plane as float32 RGB in [0, 1].

    Grey becomes three equal channels and alpha is dropped. Intensities are scaled by the sample's own
    range (0 to its maximum for unsigned data), so uint8, uint16 and float images give the same numbers.
    """
    plane, rgb = first_plane(image, rgb)
    h, w = plane.shape[:2]
    step = max(1, -(-max(h, w) // side))
    sample = plane[::step, ::step, :3] if rgb else plane[::step, ::step]
    sample = np.asarray(sample).astype(np.float32, copy=False)
    if sample.ndim == 2:
        sample = np.repeat(sample[..., None], 3, axis=-1)
    elif sample.shape[-1] < 3:
        sample = np.repeat(sample[..., :1], 3, axis=-1)
    finite = np.isfinite(sample)
    if not finite.all():
        sample = np.where(finite, sample, 0.0)
    lo = min(0.0, float(sample.min())) if sample.size else 0.0
    hi = float(sample.max()) if sample.size else 1.0
    if hi <= lo:
        return np.zeros_like(sample)
    return (sample - lo) / (hi - lo)


# ---------------------------------------------------------------- features
def _speckle(grey_level: np.ndarray, lit: np.ndarray) -> float:
    """Mean absolute difference of neighbouring lit pixels relative to their brightness."""
    pair = lit[:, 1:] & lit[:, :-1]
    diffs = np.abs(np.diff(grey_level, axis=1))[pair]
    level = grey_level[:, 1:][pair]
    return float(diffs.mean() / max(level.mean(), 1e-3)) if diffs.size else 0.0


def _hues(rgb: np.ndarray, lit: np.ndarray, sat: np.ndarray) -> dict[str, float]:
    """The hue of the coloured lit pixels, brown-orange (skin, pigment) against pink-red (mucosa), and
    the green and blue of lit pixels relative to their red."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    coloured = lit & (sat > 0.15)
    n_col = max(1, int(coloured.sum()))
    hue = np.degrees(np.arctan2(np.sqrt(3.0) * (g - b), 2.0 * r - g - b)) % 360.0
    red_lit = lit & (r > 0.05)
    return {
        "hue_brown": float((coloured & (hue >= 15) & (hue < 60)).sum() / n_col),
        "hue_pink": float((coloured & ((hue >= 300) | (hue < 15))).sum() / n_col),
        "green_ratio": float(np.median(g[red_lit] / r[red_lit])) if red_lit.any() else 1.0,
        "blue_ratio": float(np.median(b[red_lit] / r[red_lit])) if red_lit.any() else 1.0,
    }


def _dark_saturation(grey_level: np.ndarray, lit: np.ndarray, sat: np.ndarray) -> float:
    """How much more saturated the darkest third of the lit pixels is than the brightest third."""
    levels = grey_level[lit]
    if levels.size < 6:
        return 0.0
    order = np.argsort(levels)
    third = levels.size // 3
    sat_lit = sat[lit]
    return float(sat_lit[order[:third]].mean() - sat_lit[order[-third:]].mean())


def _lighting(grey_level: np.ndarray, lit: np.ndarray) -> tuple[float, float]:
    """How much 8×8-block means vary (a lit cavity has depth, skin under a dermatoscope is evenly lit)
    and how much detail lies below the block scale."""
    h, w = grey_level.shape
    bh, bw = h // 8, w // 8
    if bh < 2 or bw < 2:
        return 0.0, 0.0
    blocks = grey_level[: bh * 8, : bw * 8].reshape(bh, 8, bw, 8)
    block_lit = lit[: bh * 8, : bw * 8].reshape(bh, 8, bw, 8).mean(axis=(1, 3)) > 0.9
    means = blocks.mean(axis=(1, 3))
    inside = np.abs(blocks - means[:, None, :, None]).mean(axis=(1, 3))
    lit_means = means[block_lit]
    if lit_means.size <= 1:
        return 0.0, 0.0
    shading = float(lit_means.std() / max(lit_means.mean(), 1e-3))
    fine_detail = float(inside[block_lit].mean() / max(lit_means.std(), 1e-3))
    return shading, fine_detail


def _framing(value: np.ndarray, grey_level: np.ndarray, lit: np.ndarray) -> dict[str, float]:
    """Dark corners and top/bottom rows (an ultrasound sector, an endoscope's frame) and a bright centre
    against its ring (a vignette)."""
    h, w = value.shape
    ch, cw = max(1, h // 7), max(1, w // 7)
    corners = np.concatenate([value[:ch, :cw].ravel(), value[:ch, -cw:].ravel(),
                              value[-ch:, :cw].ravel(), value[-ch:, -cw:].ravel()])
    rows = np.concatenate([value[: max(1, h // 20)].ravel(), value[-max(1, h // 20):].ravel()])
    centre = grey_level[h // 4: h - h // 4, w // 4: w - w // 4]
    ring = np.ones((h, w), bool)
    ring[h // 8: h - h // 8, w // 8: w - w // 8] = False
    ring &= lit
    centre_mean = float(centre.mean()) if centre.size else 0.0
    ring_mean = float(grey_level[ring].mean()) if ring.any() else 0.0
    return {
        "dark_corners": float((corners < DARK).mean()),
        "dark_rows": float((rows < DARK).mean()),
        "centre_contrast": centre_mean - ring_mean,
    }


def features_of_sample(rgb: np.ndarray) -> dict[str, float]:
    """The statistics the classifier weighs (see :data:`FEATURES`), from an RGB sample in [0, 1]."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = rgb.max(axis=-1)
    chroma = value - rgb.min(axis=-1)
    grey_level = rgb.mean(axis=-1)
    lit = value >= DARK
    n_lit = max(1, int(lit.sum()))
    sat = chroma / np.maximum(value, 1e-3)
    hues = _hues(rgb, lit, sat)
    framing = _framing(value, grey_level, lit)
    shading, fine_detail = _lighting(grey_level, lit)
    levels = grey_level[lit]
    return {
        "grey": float((chroma[lit] < GREY_CHROMA).sum() / n_lit),
        "strong_colour": float(((sat > 0.35) & (chroma > 0.15) & lit).sum() / n_lit),
        "saturation": float(sat[lit].mean()) if lit.any() else 0.0,
        "red": float(((r - np.maximum(g, b)) / np.maximum(value, 1e-3))[lit].mean()) if lit.any() else 0.0,
        "blue_minus_green": float(((b - g) / np.maximum(value, 1e-3))[lit].mean()) if lit.any() else 0.0,
        "dark": float(1.0 - lit.mean()),
        "dark_corners": framing["dark_corners"],
        "dark_rows": framing["dark_rows"],
        "speckle": _speckle(grey_level, lit),
        "highlights": float(((rgb.min(axis=-1) > 0.9) & (chroma < 0.1)).sum() / n_lit),
        "centre_contrast": framing["centre_contrast"],
        "green_ratio": min(hues["green_ratio"], 2.0),
        "blue_ratio": min(hues["blue_ratio"], 2.0),
        "hue_brown": hues["hue_brown"],
        "hue_pink": hues["hue_pink"],
        "contrast": float(levels.std()) if levels.size else 0.0,
        "dark_saturation": _dark_saturation(grey_level, lit, sat),
        "shading": shading,
        "fine_detail": min(fine_detail, 10.0),
    }


def image_features(image: Any, rgb: bool | None = None) -> dict[str, float]:
    """:func:`features_of_sample` of ``image``'s first plane (napari-style array, numpy or dask)."""
    return features_of_sample(sample_rgb(image, rgb))


# ---------------------------------------------------------------- the classifier
@lru_cache(maxsize=1)
def _params() -> dict[str, Any]:
    params = json.loads(PARAMS_PATH.read_text())
    if params.get("features") != list(FEATURES) or params.get("kinds") != list(KINDS):
        raise RuntimeError(f"{PARAMS_PATH} was fitted for other features or kinds: refit with "
                           "python -m napari_wavegms.tuning.modality_fit")
    return params


def _scores(x: np.ndarray, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Each kind's score and each feature's share of it: the trees' leaf values, and along each path
    the change of the node value at every split, credited to the split's feature (``credit[0]`` where
    the value was above the threshold, ``credit[1]`` where below: which phrase explains it)."""
    rate = float(params["rate"])
    scores = np.zeros(len(KINDS))
    credit = np.zeros((2, len(KINDS), len(FEATURES)))
    for round_trees in params["trees"]:
        for c, node in enumerate(round_trees):
            while len(node) > 1:
                j, threshold, left, right, value = node
                below = x[j] <= threshold
                child = left if below else right
                credit[int(below), c, j] += rate * (child[-1] - value)
                node = child
            scores[c] += rate * node[0]
    return scores, credit


def _explain(kind: int, credit: np.ndarray, feats: dict[str, float], top: int = 2) -> str:
    """Colour or grey first, then the features that pushed most towards ``kind`` against the others
    (for a grey image, not its meaningless hue ratios)."""
    others = [k for k in range(len(KINDS)) if k != kind]
    push = credit[:, kind] - credit[:, others].mean(axis=1)  # (above, below) × feature
    total = push.sum(axis=0)
    grey = feats["grey"] > 0.9
    phrases = ["grey" if grey else "grey with colour overlays" if feats["grey"] > 0.5 else "colour"]
    names = list(FEATURES)
    for i in np.argsort(-total):
        if total[i] <= 0 or len(phrases) > top:
            break
        if names[i] == "grey" or (grey and names[i] in COLOUR_FEATURES):
            continue
        phrase = FEATURES[names[i]][0 if push[0, i] >= push[1, i] else 1]
        if phrase not in phrases:
            phrases.append(phrase)
    return ", ".join(phrases)


def classify_features(feats: dict[str, float], prior: np.ndarray | None = None) -> Modality:
    """Kind of image from :func:`image_features` values, with its probability and reason; with a
    ``prior`` (each kind's share of the image's folder, :func:`folder_prior`) the probabilities are
    those of an image from that folder (:func:`with_prior`)."""
    params = _params()
    x = np.array([feats[name] for name in FEATURES], np.float64)
    scores, credit = _scores(x, params)
    alone = np.exp(scores - scores.max())
    alone /= alone.sum()
    probs = alone if prior is None else with_prior(alone, prior)[0]
    best = int(np.argmax(probs))
    reason = _explain(best, credit, feats)
    if probs[best] < UNSURE_BELOW:
        reason += ", uncertain"
    first = int(np.argmax(alone))
    if first != best:
        reason += f"; taken with its folder, mostly {KINDS[best]} (alone: {KINDS[first]}, {alone[first]:.2f})"
    return Modality(KINDS[best], reason, float(probs[best]), {k: float(v) for k, v in zip(KINDS, probs, strict=True)},
                    {k: float(v) for k, v in zip(KINDS, alone, strict=True)})


def classify(image: Any, rgb: bool | None = None, prior: np.ndarray | None = None) -> Modality:
    """The kind of a napari-style image (grey/RGB/RGBA, any dtype and size, numpy or dask; stacks by their
    first plane): ``ultrasound``, ``endoscopy`` or ``dermoscopy``, with a short reason. ``prior``: the
    kinds' shares in the image's folder (:func:`folder_prior`), or ``None`` to judge the image alone."""
    return classify_features(image_features(image, rgb), prior)


# ---------------------------------------------------------------- a folder's images inform each other
#: The least share :func:`folder_prior` gives any kind, so that a folder's rare kind keeps its clear
#: images: chosen by simulated folders of out-of-fold training images (docs/results.md).
FOLDER_FLOOR = 0.02


def with_prior(probs: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """N×kinds probabilities (or one row) of the classifier, which was fitted with every kind equally
    weighted, made those of images drawn from a folder whose kinds have the shares ``prior``: Bayes'
    rule, p(kind | image, folder) ∝ p(kind | image) · prior(kind) / ⅓."""
    q = np.atleast_2d(np.asarray(probs, np.float64)) * np.asarray(prior, np.float64)
    return q / q.sum(axis=1, keepdims=True)


def folder_prior(probs: np.ndarray, floor: float = FOLDER_FLOOR, iterations: int = 100) -> np.ndarray:
    """Each kind's share of a folder, from its images' probabilities alone (N×kinds), by expectation–
    maximisation (Saerens, Latinne & Decaestecker, Neural Computation 2002): the shares that the
    images, re-weighted by those shares, agree with. Every share is at least ``floor``.

    Why: a folder is nearly always one kind of image. An image the classifier finds ambiguous (pink,
    evenly lit skin taken for endoscopy) is then judged as an image of that folder, which cut mistakes
    in simulated one-kind folders 4–11×; images of a rare kind in a mixed folder lose a little.
    """
    probs = np.atleast_2d(np.asarray(probs, np.float64))
    if probs.size == 0:
        return np.full(len(KINDS), 1.0 / len(KINDS))

    def floored(share: np.ndarray) -> np.ndarray:
        share = np.maximum(share, floor)
        return share / share.sum()

    share = floored(probs.mean(axis=0))
    for _ in range(iterations):
        new = floored(with_prior(probs, share).mean(axis=0))
        if np.abs(new - share).max() < 1e-6:
            return new
        share = new
    return share
