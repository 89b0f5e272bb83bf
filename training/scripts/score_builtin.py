"""Score the built-in models the way a user meets them: ``wavegms-predict`` at native resolution.

    WAVEGMS_WEIGHTS_DIR=../shared/weights python training/scripts/score_builtin.py [--json out.json]

For each test list below, the listed images are linked into a fresh folder, ``wavegms-predict`` (the
real command-line entry point, with its automatic model choice and the card's post-processing) writes
one mask per image, and each mask is compared with the ground truth at the image's own size: Dice with
1 when both are empty (:func:`napari_wavegms.training.metrics.dice_iou`). For lesion-free lists the number is
the share of images that get an empty mask. Nothing here knows the model's training resolution.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_wavegms.cli import predict_main
from napari_wavegms.core.io import read_mask
from napari_wavegms.training.data import read_split
from napari_wavegms.training.metrics import dice_iou

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("WAVEGMS_DATA_DIR", REPO.parent / "shared" / "data"))
#: name: (data folder, split list, what is measured, the issue's target)
TESTS = {
    "busi gms_test": ("busi", "gms_test.txt", "dice", 0.78),
    "busi normal_test": ("busi", "normal_test.txt", "empty", 0.85),
    "kvasir-seg medico2020_val": ("kvasir-seg", "medico2020_val.txt", "dice", 0.82),
    "isic2017 val": ("isic2017-256", "val.txt", "dice", 0.85),
}


def score_list(folder: str, split: str, model: str | None) -> tuple[list[float], list[bool], str]:
    """Per-image Dice and emptiness of ``wavegms-predict``'s masks for one split list."""
    root = DATA / folder
    names = read_split(root / "splits" / split)
    images = {p.stem: p for p in (root / "images").iterdir()}
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in", Path(tmp) / "out"
        src.mkdir()
        for n in names:
            (src / images[n].name).symlink_to(images[n].resolve())
        argv = [str(src), str(out), "--quiet"] + (["--model", model] if model else [])
        if predict_main(argv) != 0:
            raise SystemExit(f"wavegms-predict failed on {root}/{split}")
        dice, empty = [], []
        for n in names:
            pred = read_mask(out / f"{n}.png") > 0
            gt = read_mask(root / "masks" / f"{n}.png") > 0
            dice.append(dice_iou(pred, gt)[0])
            empty.append(not pred.any())
    return dice, empty, model or "automatic choice"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=sorted(TESTS), help="score these lists only")
    ap.add_argument("--model", help="force one model (default: wavegms-predict chooses per folder)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    results = {}
    for name in args.only or TESTS:
        folder, split, what, target = TESTS[name]
        t0 = time.perf_counter()
        dice, empty, model = score_list(folder, split, args.model)
        value = float(np.mean(empty)) if what == "empty" else float(np.mean(dice))
        results[name] = {"n": len(dice), what: round(value, 4), "target": target, "met": value >= target,
                         "dice_std": round(float(np.std(dice)), 4), "empty_masks": int(sum(empty)),
                         "seconds": round(time.perf_counter() - t0, 1), "model": model}
        print(f"{name:28s} {what} {value:.4f} (target {target}) {'met' if value >= target else 'MISSED'}"
              f"  n={len(dice)} empty={sum(empty)}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
