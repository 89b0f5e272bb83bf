"""Dice, IoU and HD95 on hand-computed cases, the empty-mask rules of both protocols, and the CSV."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from monai.metrics import compute_hausdorff_distance

from napari_wavegms.training.metrics import dice_iou, hd95, score, summarize, write_csv


def square(top: int, left: int, side: int, shape=(64, 64)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[top:top + side, left:left + side] = True
    return m


def test_dice_iou_hand_computed():
    a = np.zeros((4, 5), bool)
    b = np.zeros((4, 5), bool)
    a[0, :4] = True          # 4 pixels
    b[0, 2:5] = True         # 3 pixels, 2 shared
    d, i = dice_iou(a, b)
    assert d == pytest.approx(2 * 2 / 7)
    assert i == pytest.approx(2 / 5)
    assert dice_iou(a, a) == (1.0, 1.0)
    assert dice_iou(a, ~a) == (0.0, 0.0)
    with pytest.raises(ValueError, match="differ in shape"):
        dice_iou(a, np.zeros((5, 4), bool))


def test_hd95_single_points_is_their_distance():
    p = np.zeros((32, 32), bool)
    g = np.zeros((32, 32), bool)
    p[10, 10] = True
    g[13, 14] = True
    assert hd95(p, g) == pytest.approx(5.0)


def test_hd95_shifted_square_and_outlier():
    g = square(10, 10, 20)
    assert hd95(square(15, 10, 20), g) == pytest.approx(5.0)
    # one stray pixel 30 px away: the Hausdorff distance sees it, the 95th percentile does not
    p = g.copy()
    p[60, 60] = True
    assert hd95(p, g) < 2.0
    full = compute_hausdorff_distance(torch.from_numpy(p)[None, None], torch.from_numpy(g)[None, None],
                                      include_background=True)
    assert float(full) > 40


def test_empty_mask_rules_per_protocol():
    empty, g = np.zeros((32, 32), bool), square(5, 5, 10, (32, 32))
    paper = score(empty, g, "paper")
    assert paper == {"dice": 0.0, "iou": 0.0, "hd95": 0.0}           # paper: HD95 0 when a mask is empty
    native = score(empty, g, "native")
    assert native["dice"] == 0.0 and math.isnan(native["hd95"])    # native: undefined, not a perfect 0
    both = score(empty, empty, "native")
    assert both == {"dice": 1.0, "iou": 1.0, "hd95": 0.0}
    with pytest.raises(ValueError, match="protocol"):
        score(empty, g, "other")


def test_summarize_skips_undefined_and_writes_csv(tmp_path):
    rows = [{"name": "a", "dice": 1.0, "iou": 1.0, "hd95": 2.0},
            {"name": "b", "dice": 0.5, "iou": 0.25, "hd95": math.nan}]
    s = summarize(rows)
    assert s["dice"] == pytest.approx(0.75) and s["dice_std"] == pytest.approx(0.25)
    assert s["hd95"] == 2.0 and s["hd95_undefined"] == 1 and s["n"] == 2
    path = write_csv(tmp_path / "scores.csv", rows)
    back = list(csv.DictReader(path.open()))
    assert [r["name"] for r in back] == ["a", "b"] and float(back[1]["iou"]) == 0.25
