"""How well the confidence score ranks bad masks first, and what test-time flips (``tta``) gain and cost.

For every image of the test splits (BUSI ``gms_test`` with the ultrasound model, Kvasir-SEG
``medico2020_val`` with the polyp model, ISIC 2017 ``val`` with the skin model) it segments the image as a user does
(:meth:`Segmenter.segment_many`, native resolution), scores the mask against the ground truth (Dice,
:mod:`napari_wavegms.training.metrics`) and computes candidate confidence scores from the model's soft masks of
the image and its flips. A mask is *bad* when its Dice is below 0.5.

The images are split into two halves (every other name in sorted order, per data set): the score and
the review threshold are chosen on half A (highest AUROC; the threshold with the best F1 of the
"review" flag) and reported on half B, then on all images. Also: the lesion-free BUSI scans
(``normal_test``: what the model draws where there is nothing), blank images, and the Dice gain and time
cost of ``tta=True``.

    OMP_NUM_THREADS=1 WAVEGMS_WEIGHTS_DIR=../shared/weights python training/scripts/measure_confidence.py
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("WAVEGMS_SHARED", REPO.parent / "shared"))
SETS = {  # data set: (folder, split, kind of the built-in model)
    "busi": ("busi", "gms_test.txt", "ultrasound"),
    "kvasir": ("kvasir-seg", "medico2020_val.txt", "endoscopy"),
    "isic": ("isic2017-256", "val.txt", "dermoscopy"),
    "busi-normal": ("busi", "normal_test.txt", "ultrasound"),
}
BAD_DICE = 0.5


# ---------------------------------------------------------------- candidate scores
FREE = ("band", "margin_fg", "fg_margin")  # from the one soft mask that gave the mask: no extra cost
AGREEMENT = ("flip_dice", "hflip_dice", "flip_soft")  # agreement with the flips: 2–4 model passes


def free_scores(p: np.ndarray) -> dict[str, float]:
    """Scores of one soft mask (S×S at the model's size); higher = more confident.

    ``band``: 1 − undecided pixels (0.1 < p < 0.9) / (undecided + sure foreground); ``margin_fg``:
    mean |2p − 1| over p > 0.1 (the object and its fuzzy rim); ``fg_margin``: the engine's
    :func:`~napari_wavegms.inference.segmenter.mask_confidence`, mean 2p − 1 over p > 0.5. Each is 1 when there is
    nothing to score."""
    import torch

    from napari_wavegms.inference.segmenter import mask_confidence

    region, unsure, sure = p > 0.1, (p > 0.1) & (p < 0.9), p >= 0.9
    return {
        "band": 1.0 - unsure.sum() / (unsure.sum() + sure.sum()) if region.any() else 1.0,
        "margin_fg": float(np.abs(2 * p[region] - 1).mean()) if region.any() else 1.0,
        "fg_margin": float(mask_confidence(torch.from_numpy(np.ascontiguousarray(p))[None, None])[0]),
    }


def candidates(flips: np.ndarray) -> dict[str, float]:
    """Candidate confidences from the soft masks (F×S×S at the model's size) of an image and its flips,
    already flipped back; index 0 is the image itself, 1 its left–right flip. The free scores are also
    taken on the left–right (``_h``) and all-flips (``_all``) averages that ``tta`` segments with."""
    p, masks = flips[0], flips > 0.5

    def dice(a: np.ndarray, b: np.ndarray) -> float:
        total = a.sum() + b.sum()
        return 1.0 if total == 0 else float(2 * (a & b).sum() / total)

    union = (flips > 0.1).any(0)
    out = {
        **free_scores(p),
        **{f"{k}_h": v for k, v in free_scores(flips[:2].mean(0)).items()},
        **{f"{k}_all": v for k, v in free_scores(flips.mean(0)).items()},
        "flip_dice": float(np.mean([dice(masks[0], m) for m in masks[1:]])),
        "hflip_dice": dice(masks[0], masks[1]),
        "flip_soft": float(1 - np.abs(flips[1:] - p).mean(0)[union].mean()) if union.any() else 1.0,
    }
    return out


def auroc(score: np.ndarray, bad: np.ndarray) -> float:
    """P(a bad mask scores lower than a good one), ties half (Mann–Whitney)."""
    b, g = score[bad], score[~bad]
    if not len(b) or not len(g):
        return float("nan")
    less = (b[:, None] < g[None, :]).sum() + 0.5 * (b[:, None] == g[None, :]).sum()
    return float(less / (len(b) * len(g)))


def flag_stats(score: np.ndarray, bad: np.ndarray, threshold: float) -> dict[str, float]:
    flag = score < threshold
    tp = int((flag & bad).sum())
    return {
        "flagged": int(flag.sum()), "bad": int(bad.sum()), "n": len(bad),
        "precision": tp / flag.sum() if flag.any() else float("nan"),
        "recall": tp / bad.sum() if bad.any() else float("nan"),
    }


def fit_threshold(score: np.ndarray, bad: np.ndarray) -> float:
    """The review threshold with the best F1 of "score < threshold" for bad masks (midpoints of scores)."""
    values = np.unique(score)
    cuts = np.concatenate([(values[:-1] + values[1:]) / 2, [values[-1] + 1e-6]])
    best, best_f1 = float(cuts[0]), -1.0
    for t in cuts:
        s = flag_stats(score, bad, t)
        p, r = s["precision"], s["recall"]
        f1 = 0.0 if not s["flagged"] or not (p + r) else 2 * p * r / (p + r)
        if f1 > best_f1:
            best, best_f1 = float(t), f1
    return round(best, 3)


# ---------------------------------------------------------------- measuring
def measure_set(key: str, limit: int | None) -> list[dict]:
    """One row per image: Dice plain / tta, foreground fractions, candidate scores, seconds."""
    import torch

    from napari_wavegms.core.io import read_image, read_mask
    from napari_wavegms.inference.segmenter import TTA_FLIPS, Segmenter
    from napari_wavegms.training.metrics import dice_iou
    from napari_wavegms.zoo.registry import suggest_model

    folder, split, kind = SETS[key]
    model = suggest_model(kind)
    root = SHARED / "data" / folder
    names = sorted((root / "splits" / split).read_text().split())[:limit]
    plain = Segmenter(model, device="cpu", batch_size=1, tta=False)
    variants = {}  # test-time flips: left-right only, or all three flips (TTA_FLIPS)
    for label, flips in (("h", ((-1,),)), ("all", TTA_FLIPS)):
        variants[label] = Segmenter(model, device="cpu", batch_size=1, tta=True)
        variants[label].flips = flips
    rows = []
    for n, name in enumerate(names):
        image_path = next((root / "images").glob(f"{name}.*"))
        mask_path = next((root / "masks").glob(f"{name}.*"))
        image, gt = read_image(image_path), read_mask(mask_path) > 0
        t0 = time.perf_counter()
        a = plain.segment_many([image], with_confidence=True)[0]
        seconds = {"s_plain": time.perf_counter() - t0}
        tta = {}
        for label, seg in variants.items():
            t0 = time.perf_counter()
            b = seg.segment_many([image], with_confidence=True)[0]
            seconds[f"s_tta_{label}"] = time.perf_counter() - t0
            tta.update({f"dice_tta_{label}": dice_iou(b.mask, gt)[0], f"fg_tta_{label}": float(b.mask.mean()),
                        f"confidence_tta_{label}": float(b.confidence)})
        with torch.inference_mode():
            x = plain.model_input(image)
            x = torch.cat([x, *(x.flip(d) for d in TTA_FLIPS)])
            prob = plain.model.predict(x).float()
            prob = torch.cat([prob[:1], *(prob[i + 1:i + 2].flip(d) for i, d in enumerate(TTA_FLIPS))])
        rows.append({
            "set": key, "name": name, "half": "A" if n % 2 == 0 else "B",
            "dice": dice_iou(a.mask, gt)[0], "fg": float(a.mask.mean()), "gt_fg": float(gt.mean()),
            "confidence": float(a.confidence), **tta, **seconds,
            **candidates(prob[:, 0].numpy()),
        })
        if (n + 1) % 20 == 0:
            print(f"  {key}: {n + 1}/{len(names)}", flush=True)
    return rows


def blank_check() -> dict[str, float]:
    """Foreground fraction of the masks of blank images with each built-in model."""
    from napari_wavegms.inference.segmenter import Segmenter
    from napari_wavegms.zoo.registry import builtin_models

    out = {}
    images = {"black": np.zeros((300, 400), np.uint8), "grey": np.full((300, 400), 128, np.uint8),
              "grey RGB": np.full((300, 400, 3), 90, np.uint8)}
    for model in builtin_models():
        seg = Segmenter(model, device="cpu")
        for what, image in images.items():
            r = seg.segment_many([image], with_confidence=True)[0]
            out[f"{model} {what}"] = float(r.mask.mean())
    return out


# ---------------------------------------------------------------- report
def col(rows: list[dict], key: str) -> np.ndarray:
    return np.array([r[key] for r in rows], float)


def groups(rows: list[dict]) -> list[tuple[str, list[dict]]]:
    lesion = [r for r in rows if r["set"] != "busi-normal"]
    return [("half A (fit)", [r for r in lesion if r["half"] == "A"]),
            ("half B (report)", [r for r in lesion if r["half"] == "B"]), ("all", lesion),
            *[(k, [r for r in lesion if r["set"] == k]) for k in ("busi", "kvasir", "isic")]]


def report(rows: list[dict]) -> dict:
    """Prints (and returns) AUROCs, the chosen score and threshold with its review flag, tta's gain and cost."""
    table: dict = {}
    print(f"\nbad = Dice < {BAD_DICE} of the mask a user gets (native resolution); AUROC = P(bad scores lower)")
    mode_columns = {"plain": ("dice", [*FREE, *AGREEMENT]), "tta h": ("dice_tta_h", [f"{k}_h" for k in FREE]),
                    "tta all": ("dice_tta_all", [f"{k}_all" for k in FREE])}
    for mode, (dice_key, scores) in mode_columns.items():
        print(f"\n{mode:<26}" + "".join(f"{s:>14}" for s in scores))
        for label, rs in groups(rows):
            bad = col(rs, dice_key) < BAD_DICE
            table[(mode, label)] = {s: auroc(col(rs, s), bad) for s in scores}
            print(f"{label:<16} n={len(rs):3d} bad={int(bad.sum()):2d}"
                  + "".join(f"{table[(mode, label)][s]:14.3f}" for s in scores))
    chosen = max(FREE, key=lambda s: table[("plain", "half A (fit)")][s])
    half_a = groups(rows)[0][1]
    flags, thresholds = {}, {}
    for mode, suffix, dice_key in (("plain", "", "dice"), ("tta h", "_h", "dice_tta_h"),
                                   ("tta all", "_all", "dice_tta_all")):
        threshold = thresholds[mode] = fit_threshold(col(half_a, chosen + suffix), col(half_a, dice_key) < BAD_DICE)
        print(f"\n{mode}: {chosen} (the free score with the best AUROC on half A, plain); review below "
              f"{threshold} (best F1 on half A)")
        for label, rs in groups(rows):
            f = flags[(mode, label)] = flag_stats(col(rs, chosen + suffix), col(rs, dice_key) < BAD_DICE, threshold)
            print(f"{mode:<8} {label:<16} review {f['flagged']:3d}/{f['n']:3d}, bad {f['bad']:2d}: "
                  f"precision {f['precision']:.2f} recall {f['recall']:.2f}")
    engine = {}
    print()
    for label, rs in groups(rows)[2:]:
        e = engine[label] = {"dice": col(rs, "dice").mean(), "ms_plain": 1000 * np.median(col(rs, "s_plain"))}
        line = f"{label:<8} Dice plain {e['dice']:.4f}, median {e['ms_plain']:.0f} ms/image"
        for v in ("h", "all"):
            e[f"dice_{v}"] = col(rs, f"dice_tta_{v}").mean()
            e[f"ms_{v}"] = 1000 * np.median(col(rs, f"s_tta_{v}"))
            line += (f"; tta {v}: {e[f'dice_{v}']:.4f} ({e[f'dice_{v}'] - e['dice']:+.4f}), "
                     f"{e[f'ms_{v}']:.0f} ms (x{e[f'ms_{v}'] / e['ms_plain']:.2f})")
        print(line)
    normal = [r for r in rows if r["set"] == "busi-normal"]
    if normal:
        fg = col(normal, "fg")
        empty = {k: int((col(normal, k) == 0).sum()) for k in ("fg", "fg_tta_h", "fg_tta_all")}
        flagged = {mode: int((col(normal, chosen + suffix) < thresholds[mode]).sum())
                   for mode, suffix in (("plain", ""), ("tta all", "_all"))}
        print(f"\nlesion-free BUSI scans (normal_test, n={len(normal)}): empty mask {empty['fg']} "
              f"(tta h {empty['fg_tta_h']}, all {empty['fg_tta_all']}); median foreground {np.median(fg):.3f}; "
              f"flagged for review {flagged['plain']} (tta all {flagged['tta all']})")
    return {"auroc": table, "chosen": chosen, "thresholds": thresholds, "flags": flags, "engine": engine}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="only the first N images of each split (a quick look)")
    parser.add_argument("--rows", type=Path, help="JSON file of per-image rows: reused if it exists, else written")
    args = parser.parse_args(argv)
    os.environ.setdefault("WAVEGMS_WEIGHTS_DIR", str(SHARED / "weights"))
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.rows and args.rows.exists():
        rows = json.loads(args.rows.read_text())
    else:
        rows = [row for key in SETS for row in measure_set(key, args.limit)]
        if args.rows:
            args.rows.write_text(json.dumps(rows))
    print("blank images, foreground fraction of the mask:", blank_check())
    report(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
