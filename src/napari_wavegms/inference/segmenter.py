"""The segmentation engine: any 2D image or stack of 2D images → a mask of exactly its shape.

One :class:`Segmenter` holds a loaded model on one device and segments arrays as napari and image
files hold them: 2D gray (H×W), RGB/RGBA (H×W×3/4), and stacks with any leading axes (Z, T or both),
processed slice by slice in batches. Inside, each slice is normalised (:mod:`napari_wavegms.core.images`'
one intensity rule, the one training uses), made RGB, resized to the model's size with
:func:`~napari_wavegms.core.images.resize_image` (the resize of training),
segmented, and its *soft* mask is resized back (bilinear) to the slice's size *before* thresholding,
so mask edges follow the image rather than the model's coarse grid.

Intensity statistics are taken **per stack** by default (``normalize="stack"``): a uint16 or float
volume is min–max scaled with one range for all slices, so a slice that is all background is not
stretched into noise and slices stay comparable. A single 2D image is therefore normalised exactly
as training normalised it (per image). ``normalize="slice"`` scales every slice on its own instead
(for time series whose brightness drifts). Alpha is dropped *before* the statistics are taken
(it is not intensity).

Memory stays bounded for long stacks: the input is never converted as a whole. Statistics come from
one pass over the slices (numpy reductions, no copies); then each batch of slices is converted,
moved to the device and shrunk to the model's size one slice at a time, so at most one full-size
float slice exists beside the (small) model batch. The output mask is the only full-size array.
Inputs may be any array-like with ``shape``, ``dtype`` and numpy indexing (numpy, dask, zarr).

Every slice also gets a **confidence** in [0, 1] from the model's own soft mask (:func:`mask_confidence`,
measured in ``training/scripts/measure_confidence.py`` to rank bad masks first); one below
:data:`REVIEW_BELOW` is worth a look (``Segmentation.review``). ``tta=True`` averages the soft masks of
the image and its flips: four model passes in one batch, 3–4× the time of one on a CPU at the usual
image sizes (``training/benchmarks/bench_flips.py``). The built-in models were trained with flips and
quarter turns, so flips can give better masks; a card turns them on only where the validation gain
was worth that time (``napari_wavegms.tuning.tta_choice``, ``docs/results.md``). It no longer
sharpens the confidence: with the 64² previews it ranked bad masks better; with the 128² models it
ranks them no better (AUROC 0.829 with flips, 0.827 without). A slice
with no intensity variation (:data:`BLANK_STD`: an all-black or all-grey image) holds nothing to
segment: it gets an empty mask without running the model, whose output on a flat input is meaningless
(a large blob), and is marked ``blank``.

Speed: ``torch.inference_mode``; on CUDA channels-last memory and float16 autocast; on a CPU the frozen
Tiny-VAE in channels-last memory, and bfloat16 autocast where the CPU computes it natively (float32 on
others, where emulated bfloat16 is many times slower); ``precision=`` forces one (see
``training/benchmarks/bench_inference.py`` for the measurements behind these defaults).

Post-processing (:mod:`postprocess`: speck removal in pixels, physical units² or a fraction of the
image, hole filling, keeping the largest object) runs on each thresholded slice. A built-in model's
card holds the defaults chosen on its validation split (``napari_wavegms.tuning.postprocess_choice``); whatever
the caller gives wins. The confidence is always the model's own: it is measured on the soft mask the
model drew, before any clean-up, so removing a doubtful speck cannot make a mask look surer.

Before that, a model whose card holds a **presence gate** (the ultrasound model: :mod:`presence`)
answers, from its own latents, whether each image holds a lesion: ``"no"`` empties the whole mask and
the image is *not* flagged for review (the answer is the gate's, made to be trusted: "no lesion
found"); ``"unsure"`` keeps the mask and flags it (the scan may be healthy); ``"yes"`` keeps it, flagged
only if its confidence is low (``Segmentation.lesion``, ``Segmentation.lesion_answer``). The
confidence is still that of the mask the model drew. ``presence=False`` turns the gate off
(``wavegms-predict --no-presence-check``) and every answer is ``""``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Generator, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from napari_wavegms.core.images import (
    ImageLayout,
    IntensityScale,
    UnsupportedImageError,
    image_layout,
    intensity_scale,
    resize_image,
)
from napari_wavegms.core.progress import Progress, run_to_end
from napari_wavegms.inference.postprocess import PostProcess, card_postprocess, label_mask
from napari_wavegms.inference.presence import LESION, NO_LESION, UNSURE, PresenceGate
from napari_wavegms.inference.presence import features as presence_features

__all__ = [
    "BLANK_STD", "REVIEW_BELOW", "REVIEW_BELOW_TTA", "TTA_FLIPS", "BlankImageWarning", "ImageLayout",
    "IntensityScale", "PostProcess", "Segmentation", "Segmenter", "UnsupportedImageError", "card_postprocess",
    "image_layout", "intensity_scale", "label_mask", "mask_confidence",
]

#: A slice whose normalised intensities ([0, 1]) have a smaller standard deviation than one 8-bit grey
#: level holds nothing to segment (all black, all grey, a blank frame): empty mask, model not run.
BLANK_STD = 1.0 / 255.0
#: Masks whose confidence is below this are flagged for review: the best F1 for "Dice < 0.5" on half of
#: the BUSI, Kvasir-SEG and ISIC 2017 test images with the 128² built-in models, their cards' clean-up
#: and presence check (training/scripts/measure_confidence.py; docs/results.md).
REVIEW_BELOW = 0.898
#: The same, fitted the same way, for ``tta=True``: averaging the flips lowers every confidence a little.
REVIEW_BELOW_TTA = 0.809
#: The flips averaged with ``tta=True`` (dims of a B×C×H×W tensor): left–right, up–down and both.
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((-1,), (-2,), (-2, -1))


class BlankImageWarning(UserWarning):
    """A slice had no intensity variation and was given an empty mask without running the model."""


# ---------------------------------------------------------------- confidence
def mask_confidence(prob: torch.Tensor) -> torch.Tensor:
    """Confidence of B soft masks (B×1×S×S at the model's size, so the size of the image does not matter).

    The model's margin over what it drew: the mean of ``2p − 1`` over the pixels it calls foreground
    (``p > 0.5``), from 0 (every one a coin toss) to 1 (every one certain). A mask with no foreground
    scores 1. It costs nothing beyond the soft mask, and ranked masks with Dice < 0.5 below the others
    better than the other scores tried that cost nothing (``training/scripts/measure_confidence.py``).
    """
    p = prob.float().flatten(1)
    fg = p > 0.5
    n = fg.sum(1)
    margin = ((2 * p - 1) * fg).sum(1) / n.clamp(min=1)
    return torch.where(n > 0, margin, torch.ones_like(margin))


@dataclass(frozen=True)
class Segmentation:
    """A mask with the model's confidence in it: what ``segment(..., with_confidence=True)`` returns.

    ``confidence`` and ``blank`` have one value per slice (the input's leading axes; 0-d for one 2D
    image). Blank slices (no intensity variation) have an empty mask and confidence 1. ``review_below``
    is the threshold of the mode that made it (:data:`REVIEW_BELOW` or :data:`REVIEW_BELOW_TTA`).
    ``lesion`` holds each slice's presence-gate answer (``"yes"``, ``"no"``, ``"unsure"``; ``""`` for a
    blank slice), or is ``None`` when no gate ran.
    """

    mask: np.ndarray
    confidence: np.ndarray
    blank: np.ndarray
    review_below: float = REVIEW_BELOW
    lesion: np.ndarray | None = None

    @property
    def score(self) -> float:
        """The lowest confidence over the slices: a stack is as trustworthy as its weakest slice."""
        return float(np.min(self.confidence))

    @property
    def review(self) -> bool:
        """Whether a person should look at this mask: a slice whose confidence is below ``review_below``
        (unless the gate found no lesion there and emptied it: that answer is made to be trusted), or
        a slice the gate is unsure of."""
        low = np.asarray(self.confidence) < self.review_below
        if self.lesion is not None:
            answer = np.asarray(self.lesion)
            low = (low & (answer != NO_LESION)) | (answer == UNSURE)
        return bool(np.any(low))

    @property
    def lesion_answer(self) -> str:
        """The presence gate's answer for the whole image or stack: ``"unsure"`` if any slice is,
        else ``"yes"`` if any slice holds a lesion, else ``"no"``; ``""`` when no gate judged it (no gate,
        or only blank slices)."""
        if self.lesion is None:
            return ""
        judged = np.asarray(self.lesion)[np.asarray(self.lesion) != ""]
        for answer in (UNSURE, LESION, NO_LESION):
            if np.any(judged == answer):
                return answer
        return ""

    @property
    def note(self) -> str:
        """What happened that the mask alone does not say, or ``""``."""
        n, total = int(np.sum(self.blank)), int(np.size(self.blank))
        if not n:
            return ""
        what = "the image is blank" if total == 1 else f"{n} of {total} slices are blank"
        return f"{what} (no intensity variation): empty mask, the model was not run"


# ---------------------------------------------------------------- the engine
class Segmenter:
    """A Wave-GMS model loaded once on one device, segmenting arrays of any supported layout.

    ``model`` is a built-in name, a checkpoint file or training folder (``models.resolve_model``),
    ``None`` for the default built-in model, or an already built ``WaveGMS`` module.
    ``precision``: ``auto`` (float16 on CUDA, bfloat16 on a CPU with native bfloat16, float32 elsewhere),
    ``fp32``, ``bf16`` or ``fp16`` (:func:`napari_wavegms.core.device.autocast_dtype`).
    ``channels_last``: ``None`` = the whole model on CUDA and the frozen Tiny-VAE alone on a CPU (where
    E_wave's narrow convolutions are slower that way), ``True`` = the whole model, ``False`` = none;
    ``training/benchmarks/bench_inference.py`` holds the measurements behind these.
    ``tta=True`` averages the soft masks of each slice and its :data:`TTA_FLIPS` (four model passes per
    slice in one batch; its gain and cost are in ``docs/results.md``); ``None`` = the built-in model
    card's choice, made on validation (:attr:`~napari_wavegms.zoo.card.ModelCard.tta`; off for other checkpoints).
    ``postprocess``: the default clean-up of masks (:class:`~napari_wavegms.inference.postprocess.PostProcess`, or
    its dict); ``None`` = the built-in model card's choice (none for other checkpoints).
    ``presence``: the image-level check that empties the mask of an image without a lesion
    (:mod:`napari_wavegms.inference.presence`): ``None`` = the built-in model card's gate where it has one (the
    ultrasound model), ``False`` = never, or a :class:`~napari_wavegms.inference.presence.PresenceGate`.
    """

    def __init__(self, model: str | os.PathLike | torch.nn.Module | None = None, device: str = "auto",
                 batch_size: int = 8, *, channels_last: bool | None = None,
                 precision: str = "auto", tta: bool | None = None,
                 postprocess: PostProcess | dict[str, Any] | None = None,
                 presence: PresenceGate | bool | None = None) -> None:
        from napari_wavegms.core.device import describe, resolve_device

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if isinstance(model, torch.nn.Module):
            self.device = resolve_device(device)
            self.model = model.to(self.device).eval()
            self.config: dict[str, Any] = {"image_size": int(model.image_size)}
        else:
            from napari_wavegms.zoo.registry import load_model

            self.model, self.config, self.device = load_model(model, device)
        from napari_wavegms.zoo.card import NO_CARD
        from napari_wavegms.zoo.registry import model_card

        # the defaults below that are not given: a built-in model's card, none for any other model
        card = NO_CARD if isinstance(model, torch.nn.Module) else model_card(model) or NO_CARD
        if isinstance(postprocess, PostProcess):
            self.postprocess = postprocess
        elif postprocess is not None:
            self.postprocess = PostProcess.from_dict(postprocess)
        else:
            self.postprocess = card.postprocess
        if isinstance(presence, PresenceGate):
            self.presence: PresenceGate | None = presence
        elif presence is False:
            self.presence = None
        else:
            self.presence = card.presence
        if self.presence is not None and not hasattr(self.model, "predict_with_latents"):
            raise ValueError("a presence gate needs a Wave-GMS model (its latents); this model has none")
        if tta is None:
            tta = card.tta
        self.image_size = int(self.model.image_size)
        self.batch_size = int(batch_size)
        self.tta = bool(tta)
        self.flips: tuple[tuple[int, ...], ...] = TTA_FLIPS if tta else ()  # dims flipped, besides the image
        self.review_below = REVIEW_BELOW_TTA if tta else REVIEW_BELOW
        self.device_name = describe(self.device)
        self._set_speed(precision, channels_last)

    def _set_speed(self, precision: str, channels_last: bool | None) -> None:
        """The autocast dtype and memory layout on this device (the class docstring's defaults): the
        dtype decides speed and rounding, channels-last memory speed alone."""
        from napari_wavegms.core.device import autocast_dtype, precision_name

        self.dtype = autocast_dtype(self.device, precision)
        self.precision = precision_name(self.dtype)
        cuda = self.device.type == "cuda"
        self.channels_last = bool(cuda if channels_last is None else channels_last)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        vae = getattr(self.model, "vae", None)
        if vae is not None and hasattr(vae, "use_channels_last") and (channels_last or channels_last is None):
            vae.use_channels_last(True)

    def __repr__(self) -> str:
        return (f"Segmenter(image_size={self.image_size}, device={self.device_name!r}, "
                f"precision={self.precision}, batch_size={self.batch_size}, tta={self.tta})")

    # ------------------------------------------------------------ public
    def segment(self, image: Any, *, rgb: bool | None = None, threshold: float = 0.5,
                label_objects: bool = False, min_size: int | None = None, normalize: str = "stack",
                soft: bool = False, with_confidence: bool = False, fill_holes: bool | None = None,
                keep_largest: bool | None = None, min_area: float | None = None,
                scale: tuple[float, ...] | None = None,
                ) -> Generator[Progress, None, np.ndarray | Segmentation]:
        """Segment ``image`` slice by slice; yields ``Progress(done_slices, total_slices)`` between batches.

        Returns a mask of the input's spatial shape (leading axes kept, channel axis dropped):
        uint8 {0, 1}, or int32 object labels with ``label_objects`` (numbered across the whole stack,
        so no two objects share a label), or with ``soft`` the float32 soft mask in [0, 1].
        Post-processing of each slice (:mod:`napari_wavegms.inference.postprocess`): objects smaller than
        ``min_size`` pixels or ``min_area`` physical units² (the pixel size is ``scale``, napari's
        ``(…, sy, sx)``; without it a unit is a pixel) are removed, ``fill_holes`` fills holes and
        ``keep_largest`` keeps the largest object; any of them left ``None`` takes the default of
        :attr:`postprocess` (the model card's), and a size given (0 included) replaces its default size.
        The soft mask is never post-processed. The shape and dtype are checked at once
        (:class:`UnsupportedImageError`); the values (all-NaN) when the job starts. Cancel with ``close()``.
        With ``with_confidence`` it returns a :class:`Segmentation` (the mask, each slice's confidence and
        whether it was blank); without, blank slices are reported by a :class:`BlankImageWarning`.
        """
        layout = image_layout(np.shape(image), getattr(image, "dtype", np.asarray(image).dtype), rgb)
        if normalize not in ("stack", "slice"):
            raise ValueError(f"normalize must be 'stack' or 'slice', not {normalize!r}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if not hasattr(image, "dtype"):
            image = np.asarray(image)
        post = self.options(fill_holes=fill_holes, keep_largest=keep_largest, min_size=min_size,
                            min_area=min_area)
        if scale is not None:
            from napari_wavegms.inference.postprocess import pixel_area

            pixel_area(scale)  # a bad scale is refused now, not when the first slice is done
        return self._run(image, layout, threshold=threshold, label_objects=label_objects, post=post,
                         scale=scale, normalize=normalize, soft=soft, report=with_confidence)

    def options(self, *, fill_holes: bool | None = None, keep_largest: bool | None = None,
                min_size: int | None = None, min_area: float | None = None) -> PostProcess:
        """The post-processing a call with these arguments gets: :attr:`postprocess` (the card's
        default) with what was given (``None`` = not given) in its place."""
        if min_size is not None and min_size < 0:
            raise ValueError(f"min_size must be ≥ 0, got {min_size}")
        return self.postprocess.merged(fill_holes=fill_holes, keep_largest=keep_largest,
                                       min_size=None if min_size is None else int(min_size), min_area=min_area)

    def __call__(self, image: Any, **kw: Any) -> np.ndarray:
        """:meth:`segment` run to the end."""
        return run_to_end(self.segment(image, **kw))

    def segment_many(self, images: list[np.ndarray], *, threshold: float = 0.5, label_objects: bool = False,
                     min_size: int | None = None, with_confidence: bool = False, fill_holes: bool | None = None,
                     keep_largest: bool | None = None, min_area: float | None = None,
                     scale: tuple[float, ...] | None = None,
                     ) -> list[np.ndarray | Segmentation | UnsupportedImageError]:
        """Segment several 2D images (each gray/RGB/RGBA, any size) in shared batches; post-processing
        options as in :meth:`segment` (``scale`` shared by all images).

        For folders of files: one model call per batch instead of one per image. Each result is the
        image's mask (a :class:`Segmentation` with ``with_confidence``), or the
        :class:`UnsupportedImageError` that image raised (the others still run).
        """
        post = self.options(fill_holes=fill_holes, keep_largest=keep_largest, min_size=min_size,
                            min_area=min_area)
        pixel_scale = scale  # the name is taken by the intensity scale below
        if pixel_scale is not None:
            from napari_wavegms.inference.postprocess import pixel_area

            pixel_area(pixel_scale)  # a bad scale is refused before any model call
        results: list[Any] = [None] * len(images)
        items = []
        for n, img in enumerate(images):
            try:
                layout = image_layout(img.shape, img.dtype)
                if layout.lead:
                    raise UnsupportedImageError(f"shape {img.shape} is a stack, not one 2D image")
                scale = intensity_scale([self._colour(img, layout)], img.dtype)
            except UnsupportedImageError as err:
                results[n] = err
                continue
            items.append((n, img, layout, scale))
        for n, mask, confidence, blank, lesion in self._masks(items, threshold):
            mask = self._post(mask, label_objects, post, pixel_scale, 0)[0]
            answer = None if self.presence is None else np.array(lesion)
            results[n] = (Segmentation(mask, np.float32(confidence), np.bool_(blank), self.review_below, answer)
                          if with_confidence else mask)
        return results

    def model_input(self, image: np.ndarray) -> torch.Tensor | None:
        """What the model sees of one 2D image: 1×3×S×S on the device, normalised as in :meth:`segment`;
        ``None`` for a blank image (which the model never sees)."""
        layout = image_layout(image.shape, image.dtype)
        if layout.lead:
            raise UnsupportedImageError(f"shape {image.shape} is a stack, not one 2D image")
        return self._prepare(image, layout, intensity_scale([self._colour(image, layout)], image.dtype))

    # ------------------------------------------------------------ internals
    @staticmethod
    def _colour(raw: np.ndarray, layout: ImageLayout) -> np.ndarray:
        """One slice as gray H×W or RGB H×W×3 (alpha and a single-channel axis dropped); a view."""
        raw = np.asarray(raw)
        if layout.squeeze:
            raw = raw[..., 0]
        return raw[..., :3] if layout.kind == "rgba" else raw

    def _slices(self, image: Any, layout: ImageLayout) -> Iterator[np.ndarray]:
        for i in range(layout.n_slices):
            yield self._colour(image[layout.index(i)], layout)

    def _run(self, image: Any, layout: ImageLayout, *, threshold: float, label_objects: bool, post: PostProcess,
             scale: tuple[float, ...] | None, normalize: str, soft: bool,
             report: bool) -> Generator[Progress, None, np.ndarray | Segmentation]:
        total = layout.n_slices
        stack_scale = None
        if normalize == "stack":
            stack_scale = intensity_scale(self._slices(image, layout), image.dtype)
        if soft:
            out = np.zeros(layout.mask_shape, np.float32)
        else:
            out = np.zeros(layout.mask_shape, np.int32 if label_objects else np.uint8)
        confidence = np.ones(layout.lead, np.float32)
        blank = np.zeros(layout.lead, bool)
        lesion = np.full(layout.lead, "", "<U6")
        yield Progress(0, total, f"segmenting on {self.device_name}")

        def items() -> Iterator[tuple[int, np.ndarray, ImageLayout, IntensityScale]]:
            for i in range(total):
                raw = image[layout.index(i)]
                scale = stack_scale or intensity_scale([self._colour(raw, layout)], image.dtype)
                yield i, raw, layout, scale

        next_label = 0
        done = 0
        for i, mask, conf, empty, answer in self._masks(items(), None if soft else threshold):
            confidence[layout.index(i)], blank[layout.index(i)], lesion[layout.index(i)] = conf, empty, answer
            if soft:
                out[layout.index(i)] = mask
            else:
                out[layout.index(i)], next_label = self._post(mask, label_objects, post, scale, next_label)
            done += 1
            if done % self.batch_size == 0 or done == total:
                yield Progress(done, total, f"slice {done}/{total} on {self.device_name}")
        result = Segmentation(out, confidence, blank, self.review_below, None if self.presence is None else lesion)
        if report:
            return result
        if result.note:
            warnings.warn(result.note, BlankImageWarning, stacklevel=2)
        return out

    @staticmethod
    def _post(mask: np.ndarray, label_objects: bool, post: PostProcess, scale: tuple[float, ...] | None,
              offset: int) -> tuple[np.ndarray, int]:
        """Post-processing and labelling of one thresholded slice; labels continue after ``offset``."""
        if post.active:
            mask = post.apply(mask, scale)
        if not label_objects:
            return mask.astype(np.uint8, copy=False), offset
        labels = label_mask(mask)
        top = int(labels.max())
        if offset and top:
            labels[labels > 0] += offset
        return labels, offset + top

    def _prepare(self, raw: np.ndarray, layout: ImageLayout, scale: IntensityScale) -> torch.Tensor | None:
        """One slice → 1×3×S×S float32 on the device (gray is resized as one channel, then repeated);
        ``None`` for a blank slice (:data:`BLANK_STD`), judged at full size after normalisation."""
        f = scale.apply(self._colour(raw, layout))
        if float(f.std(dtype=np.float64)) < BLANK_STD:
            return None
        x = torch.from_numpy(f)
        x = x[None, None] if layout.kind == "gray" else x.permute(2, 0, 1)[None]
        x = resize_image(x.to(self.device, non_blocking=True), self.image_size)
        return x.expand(-1, 3, -1, -1) if layout.kind == "gray" else x

    def _autocast(self):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Soft masks (B×1×S×S, float32) of model inputs B×3×S×S; with ``tta`` the mean over the flips;
        all zero for an image the presence gate finds without a lesion.

        The flipped copies go through the model in the same call (one batch of 4·B), each result
        flipped back before averaging.
        """
        prob, logit = self._predict(x)
        if logit is None:
            return prob
        return prob.masked_fill((logit < self.presence.threshold).view(-1, 1, 1, 1), 0.0)

    def _predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The model's soft masks as it drew them, and the presence gate's logit for each image (the
        log-odds that it holds a lesion; ``None`` without a gate)."""
        flips = self.flips
        if flips:
            x = torch.cat([x, *(x.flip(dims) for dims in flips)])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            if self.presence is None:
                prob = self.model.predict(x)
            else:
                prob, mean, latent = self.model.predict_with_latents(x)
        prob = prob.float()
        if flips:
            parts = prob.chunk(len(flips) + 1)
            prob = torch.stack([parts[0], *(p.flip(dims) for p, dims in zip(parts[1:], flips, strict=True))]).mean(0)
        if self.presence is None:
            return prob, None
        n = prob.shape[0]
        if self.presence.flips:  # a gate fitted on the copies' mean features (with flips: all copies)
            feats = presence_features(mean, latent)
            feats = feats.view(-1, n, feats.shape[-1]).mean(0)
        else:  # judged on the image as it is (the first of the flipped copies)
            feats = presence_features(mean[:n], latent[:n])
        return prob, self.presence.logit(feats)

    def _masks(self, items: Iterable[tuple[int, np.ndarray, ImageLayout, IntensityScale]],
               threshold: float | None) -> Iterator[tuple[int, np.ndarray, float, bool, str]]:
        """Batched model calls over ``(key, raw slice, layout, scale)``: yields ``(key, mask, confidence,
        blank, lesion)`` in order (``lesion``: the presence gate's answer, ``""`` without one).

        The soft mask is resized back to each slice's size on the device (bilinear; antialiased where
        it shrinks), then thresholded (``mask > threshold``, uint8) unless ``threshold`` is ``None``.
        Blank slices get an empty mask (of the soft or thresholded dtype) and no model call.
        """
        items = iter(items)
        while True:
            with torch.inference_mode():
                batch, tensors = self._next_batch(items)
                if not batch:
                    return
                results = self._batch_masks(batch, tensors, threshold)
            yield from results

    def _next_batch(self, items: Iterator[tuple[int, np.ndarray, ImageLayout, IntensityScale]],
                    ) -> tuple[list[tuple[int, ImageLayout, int | None]], list[torch.Tensor]]:
        """The next (up to) ``batch_size`` items made model inputs (:meth:`_prepare`): ``(key, layout,
        row in the model batch)`` for each, the row ``None`` for a blank slice (the model never sees
        it), and the inputs of the others."""
        batch: list[tuple[int, ImageLayout, int | None]] = []
        tensors: list[torch.Tensor] = []
        for key, raw, layout, scale in items:
            x = self._prepare(raw, layout, scale)
            batch.append((key, layout, None if x is None else len(tensors)))
            if x is not None:
                tensors.append(x)
            if len(batch) == self.batch_size:
                break
        return batch, tensors

    def _batch_masks(self, batch: list[tuple[int, ImageLayout, int | None]], tensors: list[torch.Tensor],
                     threshold: float | None) -> list[tuple[int, np.ndarray, float, bool, str]]:
        """One model call for a batch of :meth:`_next_batch`: ``(key, mask, confidence, blank, lesion)``
        per item.

        The confidence is taken before the presence gate empties a mask: it stays the model's own. The
        gate's answer (:meth:`PresenceGate.answer`) is given whether the model drew anything at the
        model's size (``p > threshold``, 0.5 for soft masks), so a lesion it is sure of that the model did
        not draw is "unsure"."""
        prob, logit = self._predict(torch.cat(tensors)) if tensors else (None, None)
        confidence = mask_confidence(prob).tolist() if prob is not None else []
        answers = [""] * len(tensors)
        if logit is not None:
            drawn = (prob > (0.5 if threshold is None else threshold)).flatten(1).any(1).tolist()
            answers = [self.presence.answer(v, d) for v, d in zip(logit.tolist(), drawn, strict=True)]
            absent = torch.tensor([a == NO_LESION for a in answers], device=prob.device)
            prob = prob.masked_fill(absent.view(-1, 1, 1, 1), 0.0)
        results = []
        for key, layout, j in batch:
            if j is None:
                empty = np.zeros((layout.height, layout.width), np.uint8 if threshold is not None else np.float32)
                results.append((key, empty, 1.0, True, ""))
            else:
                results.append((key, self._full_size(prob[j:j + 1], layout, threshold), confidence[j], False,
                                answers[j]))
        return results

    def _full_size(self, prob: torch.Tensor, layout: ImageLayout, threshold: float | None) -> np.ndarray:
        """One soft mask (1×1×S×S) at its slice's size, resized on the device before thresholding so that
        edges follow the image, not the model's grid; uint8 ``prob > threshold``, or with ``threshold``
        ``None`` the soft mask clamped to [0, 1]."""
        size = (layout.height, layout.width)
        if prob.shape[-2:] != size:
            shrink = layout.height < self.image_size or layout.width < self.image_size
            prob = F.interpolate(prob, size=size, mode="bilinear", align_corners=False, antialias=shrink)
        p = prob[0, 0]
        m = (p > threshold).to(torch.uint8) if threshold is not None else p.clamp(0.0, 1.0)
        return m.cpu().numpy()
