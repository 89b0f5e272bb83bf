"""Scoring a model on a folder of image/mask pairs, in the paper's protocol and at native resolution.

What ``wavegms-eval`` runs, what a training run's validation (:func:`validate`) and final test use, and
what the built-in models' cards were made with: all through one :class:`Scorer`. See
:mod:`napari_wavegms.training.metrics` for the definitions.

Two things can be scored: the bare model (the default; training's validation and the papers' numbers)
or, with ``as_predicted``, the masks a user gets from ``wavegms-predict`` and the widgets: the model
card's test-time flips, clean-up and presence check, on the image as read from its file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from napari_wavegms.core.device import autocast_dtype
from napari_wavegms.core.images import resize_image, resize_mask
from napari_wavegms.core.progress import Progress
from napari_wavegms.training.data import DataError, Pair, PairDataset, load_pair, read_split, resolve_split, scan_pairs
from napari_wavegms.training.metrics import PAPER_SIZE, score, summarize, write_csv


@dataclass
class EvalResult:
    """Per-image rows (paper and ``native_`` metrics) and their summaries for both protocols."""

    rows: list[dict]
    paper: dict[str, float]
    native: dict[str, float]
    problems: list[str] = field(default_factory=list)
    csv: Path | None = None
    model: str = ""

    @property
    def n(self) -> int:
        return len(self.rows)

    def to_json(self) -> dict[str, Any]:
        """One JSON-able object: ``n``, both protocols, and top-level dice/iou/hd95 = paper protocol."""

        def clean(d: dict) -> dict:
            bad = lambda v: isinstance(v, float) and not math.isfinite(v)  # noqa: E731
            return {k: (None if bad(v) else v) for k, v in d.items() if k != "n"}

        paper, native = clean(self.paper), clean(self.native)
        return {
            "n": self.n,
            "model": self.model,
            "dice": paper["dice"],
            "iou": paper["iou"],
            "hd95": paper["hd95"],
            "paper": paper,
            "native": native,
            "problems": len(self.problems),
        }



class Scorer:
    """Per-image Dice/IoU/HD95 rows and their summaries: the one scorer of training's :func:`validate` and
    :func:`evaluate`, so validation Dice and ``wavegms-eval``'s numbers cannot drift apart.

    A row holds the paper protocol (the prediction on its grid against the truth on the same grid) and,
    when the original mask is given, the ``native_`` protocol (the prediction at the mask's own size).
    """

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        self.rows: list[dict] = []

    def add_prob(self, name: str, prob: torch.Tensor, *, truth: np.ndarray | None = None,
                 mask: np.ndarray | None = None) -> None:
        """One image from the model's soft mask ``prob`` (2D): against ``truth`` on its grid (by default
        ``mask`` resized to :data:`PAPER_SIZE`) and, given ``mask``, resized bilinearly (as inference does)
        to the mask's size."""
        native = None
        if mask is not None:
            up = F.interpolate(prob[None, None], size=mask.shape, mode="bilinear", align_corners=False)
            native = up[0, 0].cpu().numpy() > self.threshold
        self.add(name, prob.cpu().numpy() > self.threshold, truth=truth, mask=mask, native=native)

    def add(self, name: str, pred: np.ndarray, *, truth: np.ndarray | None = None, mask: np.ndarray | None = None,
            native: np.ndarray | None = None) -> None:
        """One image from a boolean prediction ``pred`` on the paper grid (and ``native`` at ``mask``'s size)."""
        if truth is None:
            truth = resize_mask(torch.from_numpy(mask)[None, None].float(), PAPER_SIZE)[0, 0].numpy() > 0.5
        row = {"name": name, **score(pred, truth, "paper")}
        if mask is not None:
            row.update({f"native_{k}": v for k, v in score(native, mask, "native").items()})
            row.update({"height": mask.shape[0], "width": mask.shape[1], "foreground_gt": float(mask.mean())})
        self.rows.append(row)

    def summary(self, prefix: str = "") -> dict[str, float]:
        return summarize(self.rows, prefix)


@torch.no_grad()
def predict_probs(net: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype | None = None,
                  channels_last: bool = False) -> torch.Tensor:
    """The model's soft masks (float32) for a batch on its device, under autocast when ``dtype`` is given."""
    device = next(net.parameters()).device
    x = x.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        return net.predict(x).float()


def validate(model: torch.nn.Module, data: PairDataset, *, batch_size: int = 32, threshold: float = 0.5,
             amp_dtype: torch.dtype | None = None, channels_last: bool = False,
             ) -> tuple[list[dict], dict[str, float]]:
    """Paper-protocol Dice/IoU/HD95 of ``model`` on a resized data set (per-image rows, summary): what a
    training run selects its best model by, at the data set's size."""
    was_training = model.training
    model.eval()
    scorer = Scorer(threshold)
    try:
        for start in range(0, len(data), batch_size):
            idx = list(range(start, min(len(data), start + batch_size)))
            x, m = data.batch(idx)
            prob = predict_probs(model, x, amp_dtype, channels_last)
            truth = m.cpu().numpy() > 0.5
            for j, i in enumerate(idx):
                scorer.add_prob(data.pairs[i].name, prob[j, 0], truth=truth[j, 0])
    finally:
        model.train(was_training)
    return scorer.rows, scorer.summary()


def evaluate(
    model: Any,
    data_dir: str | os.PathLike,
    *,
    split: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    batch_size: int = 8,
    threshold: float = 0.5,
    images: str = "images",
    masks: str = "masks",
    pairs: Sequence[Pair] | None = None,
    csv: str | os.PathLike | None = None,
    precision: str = "fp32",
    as_predicted: bool = False,
) -> Generator[Progress, None, EvalResult]:
    """Score a model on a folder of pairs (or the ``split`` list within it) under both protocols.

    ``model`` is a :class:`WaveGMS` (or a module with its ``predict`` and ``image_size``), a built-in
    name or a checkpoint path / run folder. ``precision`` as in :class:`inference.Segmenter` (float32
    unless asked, so that training's validation and test scores do not depend on the CPU). Unreadable
    pairs are reported in ``problems`` and skipped. Yields ``Progress(images done, images)``.

    ``as_predicted`` scores the masks :class:`~napari_wavegms.inference.segmenter.Segmenter` makes with the
    model card's defaults (flips, clean-up, presence check; none for a plain checkpoint) from each image
    file, as ``wavegms-predict`` writes them: ``native`` compares them with the ground truth as they are,
    ``paper`` after resizing both (nearest) to 224².
    """
    if as_predicted:
        return (yield from _evaluate_as_predicted(model, data_dir, split=split, device=device,
                                                  batch_size=batch_size, threshold=threshold, images=images,
                                                  masks=masks, pairs=pairs, csv=csv, precision=precision))
    net, label = _network(model, device)
    net.eval()
    dev = next(net.parameters()).device
    dtype = autocast_dtype(dev, precision)
    data_dir = Path(data_dir)
    pairs, problems = _pairs(data_dir, split, images, masks, pairs)
    size = PAPER_SIZE  # net.predict resizes to its own training size and back
    scorer = Scorer(threshold)
    total = len(pairs)
    yield Progress(0, total, "")
    for done, chunk in _batches(pairs, batch_size, problems):
        if chunk:
            x = torch.cat([resize_image(torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)[None], size)
                           for _, im, _ in chunk]).clamp(0, 1)
            prob = predict_probs(net, x, dtype)
            for j, (pair, _, mask) in enumerate(chunk):
                scorer.add_prob(pair.name, prob[j, 0], mask=mask)
        yield Progress(done, total, chunk[-1][0].name if chunk else "")
    return _result(scorer, problems, label, csv, total, data_dir)



def _network(model: Any, device: str | torch.device) -> tuple[torch.nn.Module, str]:
    """The network to score and how results name it: an in-memory model as it is, else loaded."""
    if isinstance(model, torch.nn.Module) and hasattr(model, "predict") and hasattr(model, "image_size"):
        return model, "in-memory model"  # a WaveGMS, or any net with the same predict() (baselines)
    from napari_wavegms.zoo.registry import load_model, resolve_model

    label = str(resolve_model(model))
    net, _, _ = load_model(model, device)
    if hasattr(net, "vae"):
        net.vae.use_channels_last(True)  # faster on CPUs and GPUs alike (bench_inference.py)
    return net, label

def _batches(pairs: Sequence[Pair], batch_size: int, problems: list[str], as_stored: bool = False,
             ) -> Iterator[tuple[int, list[tuple[Pair, np.ndarray, np.ndarray]]]]:
    """``(pairs done, [(pair, image, mask), ...])`` batch by batch; an unreadable pair goes to
    ``problems``. The image is the model's float RGB, or with ``as_stored`` the array in the file (what a
    user's image is)."""
    for start in range(0, len(pairs), batch_size):
        chunk = []
        for pair in pairs[start : start + batch_size]:
            try:
                image, mask, _ = load_pair(pair, as_stored=as_stored)
            except DataError as err:
                problems.append(str(err))
                continue
            chunk.append((pair, image, mask))
        yield min(len(pairs), start + batch_size), chunk


def _pairs(data_dir: Path, split: str | os.PathLike | None, images: str, masks: str,
           pairs: Sequence[Pair] | None) -> tuple[Sequence[Pair], list[str]]:
    """The pairs to score (given, or scanned from the folder and the split list) and the scan's problems;
    raises :class:`DataError` when there are none."""
    problems: list[str] = []
    if pairs is None:
        names = read_split(resolve_split(split, data_dir)) if split else None
        scan = scan_pairs(data_dir / images, data_dir / masks, names=names)
        problems += scan.problems
        pairs = scan.pairs
    if not pairs:
        raise DataError(
            f"no image/mask pairs to evaluate in {data_dir}" + (f" ({problems[0]})" if problems else "")
        )
    return pairs, problems


def _result(scorer: Scorer, problems: list[str], label: str, csv: str | os.PathLike | None, total: int,
            data_dir: Path) -> EvalResult:
    if not scorer.rows:
        raise DataError(f"none of the {total} pairs in {data_dir} could be read: {'; '.join(problems[:3])}")
    result = EvalResult(scorer.rows, scorer.summary(), scorer.summary("native_"), problems, model=label)
    if csv is not None:
        result.csv = write_csv(csv, scorer.rows)
    return result


def _evaluate_as_predicted(model: Any, data_dir: str | os.PathLike, *, split: str | os.PathLike | None,
                           device: str | torch.device, batch_size: int, threshold: float, images: str,
                           masks: str, pairs: Sequence[Pair] | None, csv: str | os.PathLike | None,
                           precision: str) -> Generator[Progress, None, EvalResult]:
    """:func:`evaluate` of the masks a user gets (``as_predicted``): one :class:`Segmenter` call per
    batch of image files, the card's defaults throughout."""
    from napari_wavegms.inference.segmenter import Segmenter
    from napari_wavegms.zoo.registry import resolve_model

    data_dir = Path(data_dir)
    pairs, problems = _pairs(data_dir, split, images, masks, pairs)
    segmenter = Segmenter(model, device=str(device), precision=precision, batch_size=batch_size)
    label = "in-memory model" if isinstance(model, torch.nn.Module) else str(resolve_model(model))
    gate = "on" if segmenter.presence is not None else "none"
    label = (f"{label} (as predicted: flips {'on' if segmenter.tta else 'off'}, clean-up "
             f"{segmenter.postprocess.describe()}, presence check {gate})")
    scorer = Scorer(threshold)
    total = len(pairs)
    yield Progress(0, total, "")
    for done, chunk in _batches(pairs, batch_size, problems, as_stored=True):
        made = segmenter.segment_many([image for _, image, _ in chunk], threshold=threshold) if chunk else []
        for (pair, _, mask), pred in zip(chunk, made, strict=True):
            if isinstance(pred, Exception):
                problems.append(f"{pair.image}: {pred}")
                continue
            pred = np.asarray(pred) > 0
            small = resize_mask(torch.from_numpy(pred)[None, None].float(), PAPER_SIZE)[0, 0].numpy() > 0.5
            scorer.add(pair.name, small, mask=mask, native=pred)
        yield Progress(done, total, chunk[-1][0].name if chunk else "")
    return _result(scorer, problems, label, csv, total, data_dir)
