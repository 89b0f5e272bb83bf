"""Is there a lesion at all? An image-level check that empties the mask of a lesion-free image.

Why: a segmentation model trained mostly on images that all hold a lesion learns to draw one on every
image. The built-in ultrasound model draws a mask on 30 of BUSI's 33 lesion-free test scans, even after
training on lesion-free scans five times over; the soft mask's own statistics (foreground share,
maximum, confidence) separate them poorly (validation AUROC 0.90 in a design probe). The model's
latents know more: a logistic regression on pooled statistics of E_wave's latent μ and of the LMM's
``out`` latent (:func:`features`) tells lesion-free validation scans from lesion scans with AUROC 0.98
(``napari_wavegms.tuning.presence_fit``). The regression costs nothing at inference: the latents are computed
anyway.

A :class:`PresenceGate` holds the regression (the features' centre and scale, weights, bias) and two
logits that split its answer in three (:meth:`PresenceGate.answer`):

- below ``threshold``: **no lesion** (``"no"``): the mask is emptied and nobody needs to look at it;
- from ``threshold`` to ``unsure_below``: **unsure** (``"unsure"``): the mask is kept (a missed lesion is
  the worst mistake the product can make) and flagged for review, because the scan may be healthy;
- above: **lesion** (``"yes"``): the mask is kept, flagged only if the model's own confidence is low.

Both logits are chosen on images the regression was not fitted on (``napari_wavegms.tuning.presence_fit``:
training folds held out in turn, whole BUS-BRA folds among them, and the validation split), so the
gate leans towards keeping lesions on scans from scanners other than the ones it was fitted on. It
lives in the model card as ``"presence"`` (:func:`card_presence`), beside the post-processing; models
trained without lesion-free images (Kvasir-SEG, ISIC 2017) have none, every image keeps its mask and
the answer is ``""`` (not judged).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: the widgets read cards without loading it
    import torch

__all__ = ["ANSWERS", "LESION", "NO_LESION", "UNSURE", "PresenceGate", "card_presence", "features"]

#: The three answers of a gate about one image (``""``: not judged: no gate, or a blank image).
LESION, NO_LESION, UNSURE = "yes", "no", "unsure"
ANSWERS = (LESION, NO_LESION, UNSURE)


def features(mean: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """B×D image-level features from E_wave's latent μ and the LMM's ``out`` latent (both B×C×h×w).

    Per channel: the spatial mean, standard deviation and maximum of μ, and the mean and maximum of
    the ``out`` latent (the one the decoder turns into the mask): 5·C numbers, in float32. Both
    latents are at the model's own size, so the features do not depend on the image's size.
    """
    import torch

    mean, latent = mean.float(), latent.float()
    return torch.cat([mean.mean((2, 3)), mean.std((2, 3)), mean.amax((2, 3)),
                      latent.mean((2, 3)), latent.amax((2, 3))], dim=1)


@dataclass(frozen=True)
class PresenceGate:
    """Logistic regression ``logit = w · (f − centre) / scale + bias`` over :func:`features`; a mask
    whose image scores below ``threshold`` is emptied (``threshold`` is a logit: 0 is even odds), one
    scoring below ``unsure_below`` is kept and flagged (``None``: the same as ``threshold``, no unsure
    band; a card written before the band existed)."""

    centre: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    threshold: float
    chosen_on: dict[str, Any] = field(default_factory=dict, compare=False)
    #: fitted on features averaged over the image and its test-time flips (free where the segmenter flips
    #: anyway; without flips the image's own features stand in for the average)
    flips: bool = False
    unsure_below: float | None = None

    def __post_init__(self) -> None:
        n = len(self.weights)
        if not n or len(self.centre) != n or len(self.scale) != n:
            raise ValueError(f"presence gate: centre, scale and weights must have one value per feature "
                             f"({len(self.centre)}, {len(self.scale)}, {n})")
        if not all(math.isfinite(v) for v in (*self.centre, *self.scale, *self.weights, self.bias, self.threshold)):
            raise ValueError("presence gate: every number must be finite")
        if min(self.scale) <= 0:
            raise ValueError("presence gate: every scale must be positive")
        if self.unsure_below is not None and not (math.isfinite(self.unsure_below)
                                                  and self.unsure_below >= self.threshold):
            raise ValueError(f"presence gate: unsure_below ({self.unsure_below}) must be a finite logit at or "
                             f"above the threshold ({self.threshold})")

    @property
    def sure_above(self) -> float:
        """The logit from which the gate is sure there is a lesion (the top of the unsure band)."""
        return self.threshold if self.unsure_below is None else self.unsure_below

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PresenceGate:
        """The gate stored in a model card (``"presence"``); raises ``ValueError`` for a malformed one."""
        try:
            return cls(tuple(map(float, values["centre"])), tuple(map(float, values["scale"])),
                       tuple(map(float, values["weights"])), float(values["bias"]), float(values["threshold"]),
                       dict(values.get("chosen_on") or {}), bool(values.get("flips", False)),
                       None if values.get("unsure_below") is None else float(values["unsure_below"]))
        except (KeyError, TypeError) as err:
            raise ValueError(f"presence gate: malformed record ({err!r})") from err

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def logit(self, feats: torch.Tensor) -> torch.Tensor:
        """The log-odds that each image of ``feats`` (B×D) holds a lesion."""
        if feats.shape[-1] != len(self.weights):
            raise ValueError(f"presence gate expects {len(self.weights)} features, got {feats.shape[-1]} "
                             "(a gate fitted for another model)")
        import torch

        f = feats.float()
        centre, scale, weights = (torch.tensor(v, dtype=f.dtype, device=f.device)
                                  for v in (self.centre, self.scale, self.weights))
        return ((f - centre) / scale) @ weights + self.bias

    def absent(self, feats: torch.Tensor) -> torch.Tensor:
        """Boolean per image: no lesion (its mask is to be emptied)."""
        return self.logit(feats) < self.threshold

    def answer(self, logit: float, drawn: bool) -> str:
        """The gate's answer for one image from its logit and whether the model drew a mask on it:
        :data:`NO_LESION` below ``threshold`` (the mask is emptied); :data:`UNSURE` below
        ``unsure_below``, and also where the gate is sure of a lesion the model did not draw (a person
        should look: one of the two is wrong); :data:`LESION` otherwise."""
        if logit < self.threshold:
            return NO_LESION
        if logit < self.sure_above or not drawn:
            return UNSURE
        return LESION


def card_presence(model: Any) -> PresenceGate | None:
    """The presence gate in a built-in model's card (``None`` for a model without one, a checkpoint
    file, a training folder or a module)."""
    from napari_wavegms.zoo.registry import model_card

    card = model_card(model)
    return card.presence if card is not None else None
