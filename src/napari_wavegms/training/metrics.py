"""Dice, IoU and HD95 per image, in the paper's protocol and at native resolution.

Two protocols (docs/design.md §7), both thresholding the soft mask at 0.5:
- ``paper``: prediction at 224² (:data:`PAPER_SIZE`, the paper's S, whatever size a model was trained
  at) against the ground truth resized nearest to 224²; HD95 in pixels of that grid.
- ``native``: prediction resized (bilinear, as inference does) to the image's own size, against the
  original mask; HD95 in native pixels.

Empty masks (documented because papers differ):
- Dice and IoU are 1 when prediction and ground truth are both empty, 0 when exactly one is.
- ``paper``: HD95 is 0 when either mask is empty (the GMS/Wave-GMS evaluation's rule).
- ``native``: HD95 is 0 when both are empty and undefined (NaN) when exactly one is; means and stds
  skip NaN and ``hd95_undefined`` counts them, so a missed lesion is not hidden as a perfect 0.

HD95 is MONAI's ``compute_hausdorff_distance(percentile=95)`` (the larger of the two directed 95th
percentile surface distances), a well-kept implementation; tests check it on hand-computed cases.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from napari_wavegms.core.atomic import atomic_path

METRICS = ("dice", "iou", "hd95")
PROTOCOLS = ("paper", "native")

#: The grid of the paper protocol (docs/design.md §7): every model is scored at 224², so numbers compare.
PAPER_SIZE = 224


def dice_iou(pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor) -> tuple[float, float]:
    """Dice and IoU of two boolean masks of the same shape (1, 1 when both are empty)."""
    p, g = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} differ in shape")
    inter = np.logical_and(p, g).sum()
    total = p.sum() + g.sum()
    if total == 0:
        return 1.0, 1.0
    return float(2 * inter / total), float(inter / (total - inter))


def hd95(pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor, empty: str = "zero") -> float:
    """95th-percentile symmetric Hausdorff distance in pixels between two boolean 2D masks.

    ``empty="zero"`` (paper): 0 if either mask is empty. ``empty="nan"`` (native): 0 if both are
    empty, NaN if exactly one is.
    """
    p, g = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} differ in shape")
    p_any, g_any = bool(p.any()), bool(g.any())
    if not (p_any and g_any):
        if empty == "zero" or (not p_any and not g_any):
            return 0.0
        return math.nan
    from monai.metrics import compute_hausdorff_distance

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI's deprecation notices about its own internals
        value = compute_hausdorff_distance(
            torch.from_numpy(p)[None, None],
            torch.from_numpy(g)[None, None],
            include_background=True,
            percentile=95,
        )
    return float(value.reshape(-1)[0])


def score(
    pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor, protocol: str = "paper"
) -> dict[str, float]:
    """Dice, IoU and HD95 of one boolean prediction against its ground truth under ``protocol``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}: use one of {PROTOCOLS}")
    p = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
    g = gt.detach().cpu().numpy() if isinstance(gt, torch.Tensor) else np.asarray(gt)
    p, g = np.squeeze(p).astype(bool), np.squeeze(g).astype(bool)
    d, i = dice_iou(p, g)
    return {"dice": d, "iou": i, "hd95": hd95(p, g, "zero" if protocol == "paper" else "nan")}


def summarize(rows: Sequence[dict], prefix: str = "") -> dict[str, float]:
    """Mean and (population) std of each metric over rows, skipping NaN; ``hd95_undefined`` counts NaNs."""
    out: dict[str, float] = {}
    for m in METRICS:
        values = np.array([r[prefix + m] for r in rows], dtype=float)
        finite = values[np.isfinite(values)]
        out[m] = float(finite.mean()) if finite.size else math.nan
        out[f"{m}_std"] = float(finite.std()) if finite.size else math.nan
    out["hd95_undefined"] = int(sum(1 for r in rows if not np.isfinite(r[prefix + "hd95"])))
    out["n"] = len(rows)
    return out


def write_csv(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Per-image rows as CSV (atomically)."""
    rows = list(rows)
    path = Path(path)
    fields = list(dict.fromkeys(k for r in rows for k in r)) or ["name"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return path
