"""Fit a built-in model's presence gate (:mod:`napari_wavegms.inference.presence`) and choose its threshold
on validation.

    WAVEGMS_WEIGHTS_DIR=../shared/weights python -m napari_wavegms.tuning.presence_fit \
        --model breast-ultrasound-busi-busbra --config training/configs/ultrasound.yaml \
        --also ../shared/data/busi splits/normal_test.txt --write-card

1. Features (:func:`napari_wavegms.inference.presence.features`) of every distinct training image, as a user's
   image reaches the model (:meth:`Segmenter.model_input`; averaged over the image and its flipped
   copies when the card's test-time flips are on, which made a better gate on validation: Dice 0.826 →
   0.836, ``docs/results.md``); a logistic regression (L2 1e-2 on
   standardised features, the two classes weighted equally) learns "holds a lesion" (a non-empty
   mask). The segmentation model saw these images, but it does not fit the lesion-free ones: it draws
   a mask on 89 of BUSI's 100 lesion-free training scans, so their latents are not memorised.
2. Validation images are segmented as a user gets them (native resolution, the card's test-time flips
   and post-processing, no gate) and scored with Dice (1 when mask and truth are both empty). A gated
   image scores 1 if it is lesion-free, else 0. The threshold is the logit in -4, -3.5, …, 4 with the highest mean Dice
   (3 decimals; ties go to the lower threshold, which empties fewer masks); no gate wins unless one
   beats it.
3. The test split of the config and every ``--also DIR LIST`` (lesion-free scans, say) are scored once,
   with and without the chosen gate. ``--write-card`` stores the gate as the card's ``"presence"``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import minimize

from napari_wavegms.core.io import read_image
from napari_wavegms.inference.presence import PresenceGate, features
from napari_wavegms.inference.segmenter import Segmenter
from napari_wavegms.training.config import TrainConfig
from napari_wavegms.training.data import load_pair, make_splits, read_split, resolve_split, scan_pairs
from napari_wavegms.tuning.common import dice_scores
from napari_wavegms.zoo.registry import canonical_name, set_card_entry

L2 = 1e-2
THRESHOLDS = tuple(np.arange(-4.0, 4.01, 0.5).round(2).tolist())


def image_features(seg: Segmenter, pairs: list, what: str) -> np.ndarray:
    """N×D features of the pairs' images (a blank image, which the model never sees, gets NaNs); with the
    card's test-time flips, the mean over the image and its flipped copies, as the segmenter gates."""
    rows = []
    start = time.perf_counter()
    for n, pair in enumerate(pairs, 1):
        x = seg.model_input(read_image(pair.image))
        if x is None:
            rows.append(np.full(5 * seg.model.latent_channels, np.nan, np.float32))
            continue
        x = torch.cat([x, *(x.flip(dims) for dims in seg.flips)])  # the copies the segmenter sees
        with torch.inference_mode(), seg._autocast():
            _, mean, latent = seg.model.predict_with_latents(x)
        rows.append(features(mean, latent).mean(0).cpu().numpy())
        if n % 200 == 0 or n == len(pairs):
            print(f"  {what}: {n}/{len(pairs)} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    return np.stack(rows)


def fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Class-balanced L2 logistic regression on standardised features: (centre, scale, weights, bias)."""
    centre, scale = x.mean(0), x.std(0) + 1e-6
    z = np.c_[(x - centre) / scale, np.ones(len(x))]
    w_sample = np.where(y, 0.5 / y.mean(), 0.5 / (1 - y.mean()))

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        s = z @ w
        nll = np.logaddexp(0, -s) * y + np.logaddexp(0, s) * (1 - y)
        grad = z.T @ (w_sample * (1 / (1 + np.exp(-s)) - y)) / len(y) + L2 * np.r_[w[:-1], 0]
        return float((w_sample * nll).mean() + L2 / 2 * (w[:-1] ** 2).sum()), grad

    w = minimize(loss, np.zeros(z.shape[1]), jac=True, method="L-BFGS-B").x
    return centre, scale, w[:-1], float(w[-1])


def gated(dice: np.ndarray, lesion: np.ndarray, logit: np.ndarray, threshold: float) -> dict:
    """The scores with the gate at ``threshold``: a gated image scores 1 if lesion-free, else 0 (a missed lesion)."""
    absent = logit < threshold
    d = np.where(absent, (~lesion).astype(float), dice)
    free = ~lesion
    return {"dice": float(d.mean()), "lesion_dice": float(d[lesion].mean()) if lesion.any() else None,
            "lesions_emptied": int((absent & lesion).sum()), "lesions": int(lesion.sum()),
            "lesion_free_empty": float((d[free] == 1).mean()) if free.any() else None,
            "lesion_free": int(free.sum())}


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """How well the logit ranks lesions above lesion-free scans, whatever the threshold (ties count half)."""
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="built-in model name")
    p.add_argument("--config", required=True, help="the model's training config (its splits)")
    p.add_argument("--also", nargs=2, action="append", default=[], metavar=("DIR", "LIST"),
                   help="another held-out list (data folder, split list), scored once")
    p.add_argument("--write-card", action="store_true", help="store the gate in the model card")
    p.add_argument("--json", help="write every number to this JSON file")
    args = p.parse_args(argv)
    name = canonical_name(args.model) or args.model
    config = TrainConfig.from_yaml(args.config)
    splits = make_splits(config)
    seg = Segmenter(name, device="cpu", presence=False)
    train = list({pair.name: pair for pair in splits.train}.values())

    x_train = image_features(seg, train, "training features")
    y_train = np.array([load_pair(pair)[1].any() for pair in train])
    keep = ~np.isnan(x_train).any(1)
    centre, scale, weights, bias = fit(x_train[keep], y_train[keep])
    gate = PresenceGate(tuple(centre.tolist()), tuple(scale.tolist()), tuple(weights.tolist()), bias, 0.0,
                        flips=bool(seg.flips))

    def logits(pairs: list, what: str) -> np.ndarray:
        x = torch.from_numpy(np.nan_to_num(image_features(seg, pairs, what), nan=0.0))
        return gate.logit(x).numpy()

    val_logit = logits(splits.val, "validation features")
    val_dice, val_lesion = dice_scores(seg, splits.val, "validation")
    table = {t: gated(val_dice, val_lesion, val_logit, t) for t in THRESHOLDS}
    none = gated(val_dice, val_lesion, val_logit, -np.inf)
    best = min(THRESHOLDS, key=lambda t: (-round(table[t]["dice"], 3), t))
    use = round(table[best]["dice"], 3) > round(none["dice"], 3)
    print(f"validation ({len(splits.val)}: {int(val_lesion.sum())} with a lesion): AUROC "
          f"{auroc(val_logit[val_lesion], val_logit[~val_lesion]):.3f}; Dice without a gate {none['dice']:.4f}")
    for t in THRESHOLDS:
        r = table[t]
        print(f"  threshold {t:+.1f}: Dice {r['dice']:.4f}, lesions emptied {r['lesions_emptied']}/{r['lesions']}, "
              f"lesion-free empty {r['lesion_free_empty']:.2f}{'  <- chosen' if use and t == best else ''}")
    if not use:
        print("no threshold beats no gate on validation: no gate")

    tests = [("test", splits.test)] + [
        (f"{Path(d).name} {lst}", scan_pairs(Path(d) / "images", Path(d) / "masks",
                                            names=read_split(resolve_split(lst, Path(d)))).pairs)
        for d, lst in args.also]
    results = {}
    for what, pairs in tests:
        if not pairs:
            continue
        logit = logits(pairs, f"{what} features")
        dice, lesion = dice_scores(seg, pairs, what)
        results[what] = {"without": gated(dice, lesion, logit, -np.inf),
                         "with": gated(dice, lesion, logit, best if use else -np.inf)}
        print(f"{what} ({len(pairs)} pairs, once): without gate {results[what]['without']}\n"
              f"    with the chosen gate {results[what]['with']}")

    record = None
    if use:
        record = {**gate.to_dict(), "threshold": best, "chosen_on": {
            "split": f"validation: {len(splits.val)} pairs ({splits.how.get('val', '')})",
            "rule": "highest mean Dice (3 decimals) over logit thresholds -4…4 by 0.5, a gated image scoring 1 "
                    "if lesion-free else 0; ties to the lower threshold",
            "fitted_on": f"{len(train)} distinct training images ({int(y_train.sum())} with a lesion)",
            "command": f"python -m napari_wavegms.tuning.presence_fit --model {name} --config {args.config} "
                       "--write-card",
            "val_auroc": round(auroc(val_logit[val_lesion], val_logit[~val_lesion]), 4),
            "val_without": none, "val_with": table[best], "test": results,
            "note": "native resolution, threshold 0.5, the card's flips and post-processing; test lists scored "
                    "once, after the choice"}}
    if args.json:
        Path(args.json).write_text(json.dumps({"validation": {str(t): r for t, r in table.items()},
                                               "without": none, "gate": record, "test": results}, indent=1))
    if args.write_card:
        card_path = set_card_entry(name, "presence", record)
        print(f"{'wrote' if record else 'removed'} the presence gate in {card_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
