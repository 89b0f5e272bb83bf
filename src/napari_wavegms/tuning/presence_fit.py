"""Fit a built-in model's presence gate (:mod:`napari_wavegms.inference.presence`) and choose its two
thresholds on images it was not fitted on.

    WAVEGMS_WEIGHTS_DIR=../shared/weights python -m napari_wavegms.tuning.presence_fit \
        --model breast-ultrasound-busi-busbra --config training/configs/ultrasound.yaml \
        --folds-of ../shared/data/bus-bra-256 --also ../shared/data/busi splits/normal_test.txt --write-card

1. One pass per image (:func:`measure`), as a user's image reaches the model
   (:meth:`Segmenter.model_input`): the gate's features (:func:`napari_wavegms.inference.presence.features`;
   averaged over the image and its flipped copies when the card's test-time flips are on, as the
   segmenter gates), the native-resolution Dice of the mask a user gets without a gate (the card's flips
   and clean-up; 1 when mask and truth are both empty), the model's confidence in it and whether it drew
   anything. ``--cache FILE`` keeps these numbers, so a rerun with other rules takes seconds.
2. A logistic regression (L2 :data:`L2` on standardised features, the two classes weighted equally)
   learns "holds a lesion" on every distinct training image. The segmentation model saw these images, but
   it does not fit the lesion-free ones: it draws a mask on 89 of BUSI's 100 lesion-free training scans.
3. **Held-out logits.** The training images are cut into :data:`FOLDS` folds and each fold is scored by a
   regression fitted on the other four: the images of a data set with published patient-wise folds
   (``--folds-of DIR``, its ``splits/fold1.txt`` …: BUS-BRA, scanners and a country BUSI does not have)
   go by those folds, the others at random (seeded, each class spread evenly) but by examination: images
   whose thumbnails correlate above :data:`SAME_EXAMINATION` (frames of one examination, a copy saved twice) stay
   in one fold (:func:`same_examination_groups`), since a scan whose twin was fitted on scores like a training
   image. The validation images are dealt the same way and scored, never fitted on. These held-out
   logits are what the thresholds are chosen on: a gate judged on the images it was fitted on looks
   surer than it is, most of all on other scanners.
4. **Two thresholds** (logits, steps of 0.25; :meth:`PresenceGate.answer`):
   ``threshold``, below which the mask is emptied ("no lesion found", not flagged for review), is the
   highest that empties at most :data:`MAX_MISSED` of the held-out lesion scans of *each* source (the
   ``--folds-of`` data set, and the rest), so that another scanner's lesions weigh as much as BUSI's: a
   missed lesion is the worst mistake the product can make. ``unsure_below``, below which a kept mask is
   flagged ("unsure": the scan may be healthy), is the lowest above which at most :data:`MAX_UNFLAGGED`
   of the held-out lesion-free scans score: none, so that every held-out healthy scan is either emptied
   or flagged.
5. The test split of the config and every ``--also DIR LIST`` (lesion-free scans, say) are scored once,
   after the choice: lesions emptied, lesion-free scans left empty or flagged, and the Dice of the masks
   nobody is asked to review. ``--write-card`` stores the gate as the card's ``"presence"``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize

from napari_wavegms.core.images import image_layout
from napari_wavegms.core.io import read_image
from napari_wavegms.inference.presence import NO_LESION, UNSURE, PresenceGate, features
from napari_wavegms.inference.segmenter import Segmenter, mask_confidence
from napari_wavegms.training.config import TrainConfig
from napari_wavegms.training.data import (
    SAME_EXAMINATION,
    load_pair,
    make_splits,
    read_split,
    resolve_split,
    same_examination_groups,
    scan_pairs,
    thumbnail,
)
from napari_wavegms.training.metrics import dice_iou
from napari_wavegms.zoo.registry import canonical_name, set_card_entry

#: The regression's L2 strength: of 1e-3 … 10, the one that empties the most held-out lesion-free scans
#: at the lesion losses allowed below (docs/notes/presence-gate.md); 1e-2 separates the classes as well
#: overall but spreads the lesions' tail further down.
L2 = 1.0
FOLDS = 5
SEED = 2333
#: At most this share of held-out lesion scans of any one source may be emptied (1 in 200).
MAX_MISSED = 0.005
#: At most this share of held-out lesion-free scans may get a mask nobody is asked to review: none. A mask
#: on a healthy scan that nobody is asked to check is a false finding the user is not warned of; the price
#: is more lesion scans answered "unsure" (held out: 9 % instead of 6 % at the earlier 2 %).
MAX_UNFLAGGED = 0.0
GRID = tuple(np.arange(-12.0, 8.01, 0.25).round(2).tolist())


def image_features(seg: Segmenter, pairs: list, what: str) -> np.ndarray:
    """N×D features of the pairs' images (a blank image, which the model never sees, gets NaNs); with the
    card's test-time flips, the mean over the image and its flipped copies, as the segmenter gates."""
    return measure(seg, pairs, what, score=False)["features"]


def measure(seg: Segmenter, pairs: list, what: str, score: bool = True) -> dict[str, np.ndarray]:
    """One model pass per pair (with the segmenter's flipped copies in the same batch): ``features``
    (N×D, NaN for a blank image), and with ``score`` the native-resolution ``dice`` of the mask a user
    gets without a gate (the segmenter's flips and clean-up), the model's ``confidence`` in it, whether
    it ``drawn`` anything at the model's size, and whether the truth holds a ``lesion``."""
    rows: dict[str, list] = {"features": [], "dice": [], "confidence": [], "drawn": [], "lesion": []}
    start = time.perf_counter()
    for n, pair in enumerate(pairs, 1):
        image = read_image(pair.image)
        x = seg.model_input(image)
        if x is None:
            rows["features"].append(np.full(5 * seg.model.latent_channels, np.nan, np.float32))
            prob = None
        else:
            copies = torch.cat([x, *(x.flip(dims) for dims in seg.flips)])  # the copies the segmenter sees
            with torch.inference_mode(), seg._autocast():
                prob, mean, latent = seg.model.predict_with_latents(copies)
            rows["features"].append(features(mean, latent).mean(0).cpu().numpy())
            prob = prob.float()
            parts = prob.chunk(len(seg.flips) + 1)
            prob = torch.stack([parts[0], *(p.flip(d) for p, d in zip(parts[1:], seg.flips, strict=True))]).mean(0)
        if score:
            gt = load_pair(pair)[1]
            layout = image_layout(image.shape, image.dtype)
            mask = (np.zeros(gt.shape, np.uint8) if prob is None else
                    seg._post(seg._full_size(prob, layout, 0.5), False, seg.postprocess, None, 0)[0])
            rows["dice"].append(dice_iou(mask > 0, gt)[0])
            rows["confidence"].append(1.0 if prob is None else float(mask_confidence(prob)[0]))
            rows["drawn"].append(prob is not None and bool((prob > 0.5).any()))
            rows["lesion"].append(bool(gt.any()))
        if n % 200 == 0 or n == len(pairs):
            print(f"  {what}: {n}/{len(pairs)} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    out = {k: np.array(v) for k, v in rows.items() if v}
    out["features"] = np.stack(rows["features"]) if rows["features"] else np.zeros((0, 0), np.float32)
    return out


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


def _logit(fitted: tuple[np.ndarray, np.ndarray, np.ndarray, float], x: np.ndarray) -> np.ndarray:
    centre, scale, weights, bias = fitted
    return np.nan_to_num((x - centre) / scale, nan=0.0) @ weights + bias


def fold_of(names: list[str], lesion: np.ndarray, published: dict[str, int],
            groups: np.ndarray | None = None, seed: int = SEED) -> np.ndarray:
    """Each image's fold: its data set's published fold where it has one (``published``: name →
    0 … FOLDS-1); else its group's (``groups``, e.g. :func:`same_examination_groups`; each image alone when
    ``None``), the groups dealt round the folds in a seeded random order, those holding a lesion-free
    scan first, so that both classes spread evenly and no group is split between folds."""
    groups = np.arange(len(names)) if groups is None else np.asarray(groups)
    rest = [i for i, name in enumerate(names) if name not in published]
    free_groups = sorted({int(groups[i]) for i in rest if not lesion[i]})
    lesion_groups = sorted({int(groups[i]) for i in rest} - set(free_groups))
    rng = random.Random(seed)
    rng.shuffle(free_groups)
    rng.shuffle(lesion_groups)
    fold_of_group = {g: r % FOLDS for r, g in enumerate(free_groups)}
    fold_of_group.update({g: r % FOLDS for r, g in enumerate(lesion_groups)})
    folds = np.zeros(len(names), int)
    for i, name in enumerate(names):
        folds[i] = published[name] % FOLDS if name in published else fold_of_group[int(groups[i])]
    return folds


def held_out_logits(x: np.ndarray, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Each image's logit from a regression fitted on the training images outside its fold. Rows with
    ``y`` < 0 are only scored, never fitted on (validation images, in the fold of their group)."""
    out = np.zeros(len(y))
    fitted_on = y >= 0
    for k in range(FOLDS):
        inside = folds == k
        if inside.any():
            train = ~inside & fitted_on
            out[inside] = _logit(fit(x[train], y[train].astype(bool)), x[inside])
    return out


def choose_thresholds(logit: np.ndarray, lesion: np.ndarray, source: np.ndarray) -> tuple[float, float]:
    """``threshold``: the highest grid logit emptying at most :data:`MAX_MISSED` of each source's lesion
    scans; ``unsure_below``: the lowest grid logit (not below ``threshold``) with at most
    :data:`MAX_UNFLAGGED` of the lesion-free scans at or above it."""
    def missed_ok(t: float) -> bool:
        return all(np.mean(logit[lesion & (source == s)] < t) <= MAX_MISSED for s in np.unique(source[lesion]))

    threshold = max((t for t in GRID if missed_ok(t)), default=GRID[0])
    free = logit[~lesion]
    unsure = min((t for t in GRID if t >= threshold and np.mean(free >= t) <= MAX_UNFLAGGED), default=GRID[-1])
    return threshold, unsure


def outcome(measured: dict[str, np.ndarray], logit: np.ndarray, gate: PresenceGate | None,
            review_below: float) -> dict[str, Any]:
    """What users get on a list with ``gate`` (``None``: no gate): lesions emptied, lesion-free scans
    left empty / flagged for review / given a mask nobody is asked to review, the mean Dice (a gated
    image scoring 1 if lesion-free, else 0) and the mean Dice of the masks not flagged for review."""
    lesion, dice, conf, drawn = (measured[k] for k in ("lesion", "dice", "confidence", "drawn"))
    if gate is None:
        answer = np.array([""] * len(logit))
    else:
        answer = np.array([gate.answer(float(v), bool(d)) for v, d in zip(logit, drawn, strict=True)])
    empty = answer == NO_LESION
    review = ((conf < review_below) & ~empty) | (answer == UNSURE)
    final = np.where(empty, (~lesion).astype(float), dice)
    free = ~lesion
    return {
        "n": len(lesion), "dice": float(final.mean()),
        "lesions": int(lesion.sum()), "lesions_emptied": int((empty & lesion).sum()),
        "lesions_unsure": int(((answer == UNSURE) & lesion).sum()),
        "lesion_free": int(free.sum()),
        "lesion_free_empty": int((free & (final == 1) & ~review).sum()),
        "lesion_free_flagged": int((free & review).sum()),
        "lesion_free_unflagged_mask": int((free & (final < 1) & ~review).sum()),
        "flagged": int(review.sum()),
        "unflagged_dice": float(final[~review].mean()) if (~review).any() else None,
    }


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """How well the logit ranks lesions above lesion-free scans, whatever the threshold (ties count half)."""
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def _cached(seg: Segmenter, pairs: list, what: str, cache: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """:func:`measure` of ``pairs``, from ``cache`` when it holds the same names in the same order."""
    names = np.array([p.name for p in pairs])
    hit = cache.get(what)
    if hit is not None and np.array_equal(hit.get("names"), names):
        return hit
    cache[what] = {**measure(seg, pairs, what), "names": names}
    return cache[what]


def _load_cache(path: str | None, flips: bool) -> dict[str, dict[str, np.ndarray]]:
    if not path or not Path(path).is_file():
        return {}
    with np.load(path) as data:
        if bool(data.get("flips", not flips)) != flips:
            return {}  # measured with the other test-time flips
        cache: dict[str, dict[str, np.ndarray]] = {}
        for key in data.files:
            if "::" in key:
                what, field = key.split("::", 1)
                cache.setdefault(what, {})[field] = data[key]
    return cache


def _save_cache(path: str | None, cache: dict[str, dict[str, np.ndarray]], flips: bool) -> None:
    if path:
        np.savez(path, flips=flips, **{f"{what}::{k}": v for what, rows in cache.items() for k, v in rows.items()})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="built-in model name")
    p.add_argument("--config", required=True, help="the model's training config (its splits)")
    p.add_argument("--folds-of", metavar="DIR", action="append", default=[],
                   help="a data set among the training images whose splits/fold1.txt … give the held-out folds "
                   "(patient-wise); the other training images are dealt into folds at random")
    p.add_argument("--also", nargs=2, action="append", default=[], metavar=("DIR", "LIST"),
                   help="another held-out list (data folder, split list), scored once")
    p.add_argument("--cache", help="an .npz file keeping each image's features and scores between runs")
    p.add_argument("--write-card", action="store_true", help="store the gate in the model card")
    p.add_argument("--json", help="write every number to this JSON file")
    args = p.parse_args(argv)
    name = canonical_name(args.model) or args.model
    config = TrainConfig.from_yaml(args.config)
    splits = make_splits(config)
    seg = Segmenter(name, device="cpu", presence=False)
    flips = bool(seg.flips)
    cache = _load_cache(args.cache, flips)
    train = list({pair.name: pair for pair in splits.train}.values())
    tr = _cached(seg, train, "training", cache)
    val = _cached(seg, splits.val, "validation", cache)
    tests = [("test", splits.test)] + [
        (f"{Path(d).name} {lst}", scan_pairs(Path(d) / "images", Path(d) / "masks",
                                            names=read_split(resolve_split(lst, Path(d)))).pairs)
        for d, lst in args.also]
    measured_tests = {what: _cached(seg, pairs, what, cache) for what, pairs in tests if pairs}
    _save_cache(args.cache, cache, flips)

    published: dict[str, int] = {}
    for folder in args.folds_of:
        for k in range(FOLDS):
            published.update({n: k for n in read_split(Path(folder) / "splits" / f"fold{k + 1}.txt")})
    keep = ~np.isnan(tr["features"]).any(1)
    names = [str(n) for n, k in zip(tr["names"], keep, strict=True) if k]
    x, y = tr["features"][keep], tr["lesion"][keep]
    val_names = [str(n) for n in val["names"]]
    # training and validation images without a published fold: frames of one examination stay together
    images = {p.name: p.image for p in [*train, *splits.val]}
    loose = [n for n in dict.fromkeys(names + val_names) if n not in published]
    group_of = dict(zip(loose, same_examination_groups(np.stack([thumbnail(images[n]) for n in loose])
                                                if loose else np.zeros((0, 4096))).tolist(), strict=True))
    every = names + val_names
    groups = np.array([group_of.get(n, -1) for n in every])
    folds = fold_of(every, np.r_[y, val["lesion"]], published, groups)
    fitted = fit(x, y)
    gate0 = PresenceGate(*(tuple(v.tolist()) for v in fitted[:3]), fitted[3], 0.0, flips=flips)

    held = held_out_logits(np.r_[x, val["features"]], np.r_[y.astype(int), np.full(len(val_names), -1)], folds)
    held_lesion = np.r_[y, val["lesion"]]
    print(f"held-out folds: {len(loose)} images without published folds in {len(set(group_of.values()))} groups "
          f"of the same examination (thumbnails correlating above {SAME_EXAMINATION})")
    in_published = np.array([n in published for n in names]
                            + [n in published or n.startswith("bus_") for n in val_names])
    source = np.where(in_published, "published folds", "other")
    threshold, unsure = choose_thresholds(held, held_lesion, source)
    gate = PresenceGate(gate0.centre, gate0.scale, gate0.weights, gate0.bias, threshold, flips=flips,
                        unsure_below=unsure)
    review_below = seg.review_below
    held_measured = {"lesion": held_lesion, "dice": np.r_[tr["dice"][keep], val["dice"]],
                     "confidence": np.r_[tr["confidence"][keep], val["confidence"]],
                     "drawn": np.r_[tr["drawn"][keep], val["drawn"]]}
    by_source = {s: int((held_lesion & (source == s) & (held < threshold)).sum()) for s in np.unique(source)}
    lesions_of = {s: int((held_lesion & (source == s)).sum()) for s in np.unique(source)}
    print(f"held-out images: {len(held)} ({int(held_lesion.sum())} with a lesion); AUROC "
          f"{auroc(held[held_lesion], held[~held_lesion]):.4f}")
    print(f"chosen: empty below logit {threshold:+.2f} (lesions emptied: "
          + ", ".join(f"{s} {by_source[s]}/{lesions_of[s]}" for s in by_source)
          + f"); unsure below {unsure:+.2f} (lesion-free scans above it: "
          f"{int((held[~held_lesion] >= unsure).sum())}/{int((~held_lesion).sum())})")
    held_out = outcome(held_measured, held, gate, review_below)
    val_logit = _logit(fitted, val["features"])
    results: dict[str, Any] = {"validation": {"without": outcome(val, val_logit, None, review_below),
                                              "with": outcome(val, val_logit, gate, review_below)}}
    for what, measured in measured_tests.items():
        logit = _logit(fitted, measured["features"])
        results[what] = {"without": outcome(measured, logit, None, review_below),
                         "with": outcome(measured, logit, gate, review_below)}
    for what, r in results.items():
        print(f"{what}{'' if what == 'validation' else ' (once, after the choice)'}:\n"
              f"    without the gate {r['without']}\n    with the gate    {r['with']}")

    record = {**gate.to_dict(), "chosen_on": {
        "split": f"held-out logits of the {int(keep.sum())} distinct training images ({FOLDS} folds"
                 f"{', published folds of ' + ', '.join(Path(f).name for f in args.folds_of) if args.folds_of else ''})"
                 f" and the {len(splits.val)} validation pairs ({splits.how.get('val', '')})",
        "rule": f"empty below the highest logit (grid 0.25) that empties at most {MAX_MISSED:.1%} of each source's "
                f"held-out lesion scans; unsure below the lowest logit with at most {MAX_UNFLAGGED:.0%} of held-out "
                "lesion-free scans at or above it",
        "fitted_on": f"{int(keep.sum())} distinct training images ({int(y.sum())} with a lesion)",
        "command": f"python -m napari_wavegms.tuning.presence_fit --model {name} --config {args.config} "
                   + "".join(f"--folds-of {Path(f).name} " for f in args.folds_of) + "--write-card",
        "held_out_auroc": round(auroc(held[held_lesion], held[~held_lesion]), 4),
        "held_out_lesions_emptied": {s: f"{by_source[s]}/{lesions_of[s]}" for s in by_source},
        "held_out": held_out, "results": results,
        "note": "native resolution, threshold 0.5, the card's flips and post-processing; review as the segmenter "
                "flags it (confidence below its review threshold unless emptied, or unsure); test lists scored "
                "once, after the choice"}}
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1))
    if args.write_card:
        print(f"wrote the presence gate in {set_card_entry(name, 'presence', record)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
