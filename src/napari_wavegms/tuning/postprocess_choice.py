"""Choose each built-in model's default post-processing on its validation split, then report the test
split once.

For a model and its training config, the validation pairs are the ones training used
(``make_splits(TrainConfig.from_yaml(config)).val``: the config's validation list, or 10 % carved from
the training list, seed 2333), so the choice never sees the test split. Each validation image is
segmented once as a user's image is (:class:`Segmenter`, soft mask resized back to the image's size,
the card's test-time flips; no presence gate, which :mod:`~napari_wavegms.tuning.presence_fit` fits
afterwards on these masks);
every combination of

- speck removal: none, or objects below 0.05 %, 0.1 %, 0.25 %, 0.5 %, 1 % or 2 % of the image's area
  (a fraction, since a data set's images come at many sizes; stored as ``min_fraction``),
- hole filling: off / on,
- keeping the largest object: off / on,

is applied to the thresholded mask (0.5) and scored at native resolution (Dice, IoU, HD95 from
:func:`napari_wavegms.training.metrics.score`). The default is the combination with the highest validation mean
Dice; Dice equal to 3 decimals is a tie, broken by the lower mean HD95, then by the fewer steps (so
"none" wins unless a step helps). Only then is the test split scored, for "none" and the chosen
default, once. ``--also`` adds lists of lesion-free scans (BUSI ``normal_train``, never seen by the
CPU-preview model) to report how many of them each combination leaves empty; they do not take part in
the choice. ``--write-card`` stores the choice and the validation numbers behind it in the model card
(``"postprocess"``), which :class:`Segmenter` reads.

    OMP_NUM_THREADS=1 WAVEGMS_WEIGHTS_DIR=../shared/weights WAVEGMS_DATA_DIR=../shared/data \\
        python -m napari_wavegms.tuning.postprocess_choice --model busi-wavegms-cpu64 \\
        --config training/configs/busi.yaml \\
        --also splits/normal_train.txt --write-card
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from napari_wavegms.core.io import read_image
from napari_wavegms.inference.postprocess import NONE, PostProcess
from napari_wavegms.inference.segmenter import Segmenter
from napari_wavegms.training.config import TrainConfig
from napari_wavegms.training.data import load_pair, make_splits, read_split, resolve_split, scan_pairs
from napari_wavegms.training.metrics import score, summarize
from napari_wavegms.zoo.registry import set_card_entry

FRACTIONS = (0.0, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02)
THRESHOLD = 0.5


def candidates() -> list[PostProcess]:
    """Every combination tried, "none" first."""
    return [PostProcess(fill_holes=fill, keep_largest=largest, min_fraction=fraction)
            for largest, fill, fraction in itertools.product((False, True), (False, True), FRACTIONS)]


def steps(post: PostProcess) -> int:
    """How many clean-up steps a combination applies: the last tie-break, so a step must earn its place."""
    return int(post.fill_holes) + int(post.keep_largest) + int(post.min_fraction > 0)


def label(post: PostProcess) -> str:
    """A combination as the results tables name it (``min 0.1 % + fill holes``, ``none``)."""
    parts = []
    if post.min_fraction:
        parts.append(f"min {100 * post.min_fraction:g} %")
    if post.fill_holes:
        parts.append("fill holes")
    if post.keep_largest:
        parts.append("largest")
    return " + ".join(parts) or "none"


def soft_masks(seg: Segmenter, pairs: list, what: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, soft mask at native size, ground truth)`` of each pair, as a user's image is segmented."""
    out = []
    start = time.perf_counter()
    for n, pair in enumerate(pairs, 1):
        _, gt, _ = load_pair(pair)
        soft = seg(read_image(pair.image), soft=True)
        out.append((pair.name, soft, gt))
        if n % 20 == 0 or n == len(pairs):
            print(f"  {what}: {n}/{len(pairs)} segmented ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    return out


def score_all(items: list, posts: list[PostProcess]) -> dict[PostProcess, dict]:
    """Mean scores of every post-processing over the items; a mask equal to one already scored for
    the same image is not scored again (most steps change few masks)."""
    rows: dict[PostProcess, list[dict]] = {p: [] for p in posts}
    for _name, soft, gt in items:
        raw = (soft > THRESHOLD).astype(np.uint8)
        seen: dict[bytes, dict] = {}
        for post in posts:
            mask = post.apply(raw)
            key = hashlib.sha1(np.packbits(mask).tobytes()).digest()
            if key not in seen:
                seen[key] = score(mask, gt, "native")
            rows[post].append(seen[key])
    return {p: summarize(r) for p, r in rows.items()}


def empty_fraction(items: list, posts: list[PostProcess]) -> dict[PostProcess, float]:
    """The share of lesion-free scans each post-processing leaves with an empty mask."""
    out = {}
    for post in posts:
        empty = sum(1 for _n, soft, _gt in items if not post.apply((soft > THRESHOLD).astype(np.uint8)).any())
        out[post] = empty / max(1, len(items))
    return out


#: Speck removal above this share of the image is tried and reported but never made a default: at 1–2 %
#: it deletes real lesions (the BUSI preview lost 0.03 and 0.17 validation Dice; the ultrasound model's
#: 1 % emptied 10 of 130 test lesions while gaining one lesion-free validation scan). A missed lesion
#: costs a clinician more than a speck on a lesion-free scan.
MAX_DEFAULT_FRACTION = 0.005


def choose(val: dict[PostProcess, dict]) -> PostProcess:
    """Highest mean Dice (to 3 decimals), then lowest mean HD95, then fewest steps, among the
    combinations that remove specks of at most :data:`MAX_DEFAULT_FRACTION` of the image."""
    def key(post: PostProcess) -> tuple:
        s = val[post]
        hd = s["hd95"] if math.isfinite(s["hd95"]) else math.inf
        return (-round(s["dice"], 3), hd, steps(post))
    return min((p for p in val if p.min_fraction <= MAX_DEFAULT_FRACTION), key=key)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="built-in model name")
    p.add_argument("--config", required=True, help="the model's training config (its validation carving)")
    p.add_argument("--also", action="append", default=[],
                   help="split list (relative to the data folder) of lesion-free scans: report empty masks")
    p.add_argument("--write-card", action="store_true", help="store the choice in the model card")
    p.add_argument("--json", help="write every number to this JSON file")
    args = p.parse_args(argv)

    config = TrainConfig.from_yaml(args.config)
    splits = make_splits(config)
    print(f"{args.model}: {len(splits.val)} validation pairs ({splits.how.get('val', 'carved')}), "
          f"{len(splits.test)} test pairs", file=sys.stderr)
    val_source = (f"the list {config.val_split}" if config.val_split else
                  f"carved from the training list (val_fraction {config.val_fraction}, seed {config.seed})")
    seg = Segmenter(args.model, device="cpu", postprocess=NONE, presence=False)  # the gate is fitted after
    posts = candidates()

    val_items = soft_masks(seg, splits.val, "validation")
    val = score_all(val_items, posts)
    empty: dict[str, dict[PostProcess, float]] = {}
    data_dir = Path(config.data_dir)
    for extra in args.also:
        names = set(read_split(resolve_split(extra, data_dir)))
        pairs = scan_pairs(data_dir / config.images, data_dir / config.masks, names=sorted(names)).pairs
        empty[extra] = empty_fraction(soft_masks(seg, pairs, extra), posts)
    chosen = choose(val)

    # The test split, once, for "none" and the chosen default only.
    test_items = soft_masks(seg, splits.test, "test")
    test = score_all(test_items, [NONE, chosen] if chosen != NONE else [NONE])

    extra_cols = "".join(f" | empty masks on {Path(e).stem}" for e in empty)
    print(f"\n**{args.model}**: validation = {len(splits.val)} pairs, {val_source} (`{args.config}`)\n")
    print("| post-processing | val Dice | val IoU | val HD95 (px) | HD95 undefined" + extra_cols + " |")
    print("| --- | --- | --- | --- | ---" + " | ---" * len(empty) + " |")
    for post in sorted(posts, key=lambda q: -val[q]["dice"]):
        s = val[post]
        name = f"**{label(post)}**" if post == chosen else label(post)
        cols = "".join(f" | {100 * empty[e][post]:.0f} %" for e in empty)
        print(f"| {name} | {s['dice']:.4f} | {s['iou']:.4f} | {s['hd95']:.1f} | {s['hd95_undefined']}{cols} |")
    print(f"\nchosen on validation: **{label(chosen)}**")
    for post, s in test.items():
        print(f"test ({len(test_items)} pairs, once) {label(post)}: Dice {s['dice']:.4f}, IoU {s['iou']:.4f}, "
              f"HD95 {s['hd95']:.1f} px ({s['hd95_undefined']} undefined)")

    record = {
        **{k: v for k, v in chosen.to_dict().items() if v},
        "fill_holes": chosen.fill_holes,
        "keep_largest": chosen.keep_largest,
        "chosen_on": {
            "split": f"validation: {len(splits.val)} pairs, {val_source}",
            "rule": "highest mean Dice (3 decimals), then lowest mean HD95, then fewest steps; "
                    f"speck removal at most {100 * MAX_DEFAULT_FRACTION:g} % of the image",
            "command": f"python -m napari_wavegms.tuning.postprocess_choice --model {args.model} --config {args.config}"
                       + "".join(f" --also {e}" for e in args.also) + " --write-card",
            "val_none": {k: round(val[NONE][k], 4) for k in ("dice", "iou", "hd95")},
            "val_chosen": {k: round(val[chosen][k], 4) for k in ("dice", "iou", "hd95")},
            "test_none": {k: round(test[NONE][k], 4) for k in ("dice", "iou", "hd95")},
            "test_chosen": {k: round(test[chosen][k], 4) for k in ("dice", "iou", "hd95")},
            "note": "native resolution, threshold 0.5; the test split was scored once, after the choice",
        },
    }
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": args.model, "chosen": label(chosen), "record": record,
            "val": {label(q): val[q] for q in posts},
            "empty": {e: {label(q): v for q, v in d.items()} for e, d in empty.items()},
            "test": {label(q): s for q, s in test.items()},
        }, indent=2, default=float))
    if args.write_card:
        card_path = set_card_entry(args.model, "postprocess", record)
        print(f"wrote the choice into {card_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
