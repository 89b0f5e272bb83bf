"""HD95 on a real BUSI mask agrees with MONAI's, the reference implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import compute_hausdorff_distance

from conftest import BUSI
from napari_wavegms.core.io import read_mask
from napari_wavegms.training.metrics import hd95


def test_hd95_matches_monai_on_real_mask(busi_names):
    g = read_mask(BUSI / "masks" / f"{busi_names[0]}.png")
    p = np.roll(g, (7, -4), axis=(0, 1))
    ref = compute_hausdorff_distance(torch.from_numpy(p)[None, None], torch.from_numpy(g)[None, None],
                                     include_background=True, percentile=95)
    assert hd95(p, g) == pytest.approx(float(ref))
    assert 4 <= hd95(p, g) <= math.hypot(7, 4) + 1e-6
