"""How much a folder's images should inform each other's kind: simulated folders, training images only.

    python training/scripts/simulate_folders.py --cache DIR [--folds 4] [--folders 300]

A user's folder is nearly always one kind of image. :func:`napari_wavegms.inference.modality.folder_prior`
estimates the kinds' shares in a folder from its images' probabilities, and
:func:`~napari_wavegms.inference.modality.with_prior` judges each image as an image of that folder. The share a
kind keeps at least (the floor) trades the folder's ambiguous images against the clear images of a rare
kind. This script measures that trade without the held-out images:
- the shipped classifier setting (``modality.json``'s rounds and depth, rate 0.2) is cross-validated on
  the training images with their augmented copies (:mod:`napari_wavegms.tuning.modality_fit`'s folds: an
  image and its copies in one fold), which gives every sample a probability from trees that never saw it;
- folders are drawn from those samples: of one kind, of two kinds with a 2 % or 10 % minority, half and
  half, and all three kinds; 20 and 150 images each;
- the mistakes per 1000 images are printed for images judged alone and for each floor.

``--cache`` is ``modality_fit``'s feature cache (it is filled on the first run: 14 min on one thread).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from napari_wavegms.inference.modality import KINDS, PARAMS_PATH, folder_prior, with_prior
from napari_wavegms.tuning import modality_fit

SCENARIOS = {
    "dermoscopy": {"dermoscopy": 1.0}, "endoscopy": {"endoscopy": 1.0}, "ultrasound": {"ultrasound": 1.0},
    "dermoscopy + 2 % endoscopy": {"dermoscopy": 0.98, "endoscopy": 0.02},
    "endoscopy + 2 % dermoscopy": {"endoscopy": 0.98, "dermoscopy": 0.02},
    "dermoscopy + 10 % endoscopy": {"dermoscopy": 0.9, "endoscopy": 0.1},
    "ultrasound + 5 % dermoscopy": {"ultrasound": 0.95, "dermoscopy": 0.05},
    "half dermoscopy, half endoscopy": {"dermoscopy": 0.5, "endoscopy": 0.5},
    "a third of each": dict.fromkeys(KINDS, 1 / 3),
}
FLOORS = (0.2, 0.1, 0.05, 0.02, 0.01)


def out_of_fold(train: dict, copies: int, folds: int, seed: int, rounds: int, depth: int, rate: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Each training sample's probabilities from the fold's classifier that never saw it, and its kind."""
    x, y, f, _ = modality_fit.in_folds(train, copies, folds, seed)  # the folds of modality_fit --cv
    probs = np.zeros((len(y), len(KINDS)))
    for k in range(folds):
        held = f == k
        params = modality_fit.fit(x[~held], y[~held], rounds, depth, rate)
        probs[held] = modality_fit.probabilities(params, x[held])
        print(f"fold {k + 1}/{folds} fitted", file=sys.stderr)
    return probs, y


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=modality_fit.DATA)
    p.add_argument("--cache", type=Path, help="modality_fit's feature cache folder")
    p.add_argument("--copies", type=int, default=2)
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--folders", type=int, default=300, help="folders drawn per scenario and size")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    cache = None if args.cache is None else args.cache / "modality-train.npz"
    train = modality_fit.extract_cached(cache, args.data, 0, args.copies, args.seed)
    shipped = json.loads(PARAMS_PATH.read_text())
    probs, kind = out_of_fold(train, args.copies, args.folds, args.seed, shipped["rounds"], shipped["depth"],
                              float(shipped["rate"]))
    print(f"out-of-fold mistakes, images judged alone: {int((probs.argmax(1) != kind).sum())} of {len(kind)}")
    rng = np.random.default_rng(args.seed)
    by_kind = [np.flatnonzero(kind == k) for k in range(len(KINDS))]
    header = " | ".join(["judged alone", *(f"floor {f}" for f in FLOORS)])
    for size in (20, 150):
        print(f"\nfolders of {size} images, {args.folders} per scenario: mistakes per 1000 images\n")
        print(f"| folder | {header} |\n|{' --- |' * (2 + len(FLOORS))}")
        for name, mix in SCENARIOS.items():
            wrong = np.zeros(1 + len(FLOORS))
            for _ in range(args.folders):
                counts = rng.multinomial(size, [mix.get(k, 0.0) for k in KINDS])
                take = np.concatenate([rng.choice(by_kind[k], c, replace=False) for k, c in enumerate(counts) if c])
                p_, y_ = probs[take], kind[take]
                wrong[0] += (p_.argmax(1) != y_).sum()
                for i, floor in enumerate(FLOORS, 1):
                    wrong[i] += (with_prior(p_, folder_prior(p_, floor)).argmax(1) != y_).sum()
            per_1000 = 1000 * wrong / (size * args.folders)
            print(f"| {name} | {' | '.join(f'{v:.1f}' for v in per_1000)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
