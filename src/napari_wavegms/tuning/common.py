"""What the tuning steps share: where a source checkout keeps data and weights, and per-image Dice.

The steps write into the package (cards, ``modality.json``, the shipped Tiny-VAE), so they run from a
source checkout; its data and weights sit in ``shared/`` beside the checkout unless
``WAVEGMS_DATA_DIR`` / ``WAVEGMS_WEIGHTS_DIR`` say otherwise.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from napari_wavegms.inference.segmenter import Segmenter

#: ``shared/`` beside a source checkout (``src/napari_wavegms/tuning/`` is four levels below the checkout).
SHARED = Path(__file__).resolve().parents[4] / "shared"


def shared_folder(env: str, name: str) -> Path:
    """The folder the environment variable ``env`` names, else ``shared/<name>`` beside the checkout."""
    return Path(os.environ.get(env, SHARED / name))


def dice_scores(seg: Segmenter, pairs: list, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Native-resolution Dice of each pair's mask (card post-processing, no gate) and whether its truth
    holds a lesion: the score both the flips choice and the presence gate are made on, so that each
    decides on the masks a user gets."""
    # Imported here: the modality fit uses this module for its folders and needs neither torch nor the engine.
    from napari_wavegms.core.io import read_image
    from napari_wavegms.training.data import load_pair
    from napari_wavegms.training.metrics import dice_iou

    dice, lesion = [], []
    for n, pair in enumerate(pairs, 1):
        _, gt, _ = load_pair(pair)
        dice.append(dice_iou(seg(read_image(pair.image)) > 0, gt)[0])
        lesion.append(bool(gt.any()))
        if n % 50 == 0 or n == len(pairs):
            print(f"  {what}: {n}/{len(pairs)} segmented", file=sys.stderr)
    return np.array(dice), np.array(lesion)
