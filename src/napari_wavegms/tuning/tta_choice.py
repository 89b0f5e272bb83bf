"""Choose whether a built-in model averages test-time flips by default, on its validation split; then
report the test split once.

    WAVEGMS_WEIGHTS_DIR=../shared/weights python -m napari_wavegms.tuning.tta_choice --model polyp-kvasir-seg \
        --config training/configs/kvasir-seg.yaml --write-card

Why a per-model choice: flips only help a model that learnt to see its images flipped. The 64² previews
lost Dice with them on BUSI (an ultrasound scan upside down, skin line at the bottom, was new to them);
the built-in models are trained with flips and quarter turns, and averaging the image with its three
flips (:data:`napari_wavegms.inference.segmenter.TTA_FLIPS`) may then give smoother, surer masks. Whether it does
is measured, not assumed.

The validation pairs are the ones training used (``make_splits(TrainConfig.from_yaml(config)).val``), so
the choice never sees the test split. Each is segmented as a user's image is (native resolution,
threshold 0.5, the card's post-processing, no presence gate: the gate is fitted after this choice, on
the masks it makes) with and without flips, and scored with Dice (1 when mask and truth are both
empty). Flips cost four model passes per image: 3-4x the time of one pass on a CPU for the images
people open (a scan of about 500 x 500 px; 2x at 2,048², where the full-size work weighs more;
``training/benchmarks/bench_flips.py``). They are turned on only when they pay for that: a validation
Dice gain of at least :data:`MIN_GAIN` (half a Dice point) that is also larger than its standard error
(the per-image differences, paired), so that a gain the validation split can barely tell from chance
does not cost every user three to four times the time. A tie goes to the faster setting. Only then is
the test split scored, both ways, once. ``--write-card`` stores the choice and the numbers behind it as
the card's ``"tta"``, which :class:`~napari_wavegms.inference.segmenter.Segmenter` (``tta=None``), ``wavegms-predict``
and the Segment widget follow. Run it before :mod:`~napari_wavegms.tuning.postprocess_choice` and
:mod:`~napari_wavegms.tuning.presence_fit`, whose choices are made on the masks a user gets.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from napari_wavegms.inference.segmenter import Segmenter
from napari_wavegms.training.config import TrainConfig
from napari_wavegms.training.data import make_splits
from napari_wavegms.tuning.common import dice_scores
from napari_wavegms.zoo.registry import canonical_name, set_card_entry

#: The smallest validation Dice gain that is worth flips' 3-4x time (half a Dice point).
MIN_GAIN = 0.005


def summary(dice: np.ndarray, flipped: np.ndarray) -> dict:
    """Mean Dice both ways, the gain with its standard error (paired over images) and how many images
    each way is better on (by more than 0.01)."""
    diff = flipped - dice
    return {"n": len(dice), "dice_plain": float(dice.mean()), "dice_flips": float(flipped.mean()),
            "gain": float(diff.mean()),
            "gain_se": float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("inf"),
            "better_with_flips": int((flipped > dice + 0.01).sum()),
            "worse_with_flips": int((flipped < dice - 0.01).sum())}


def worth_it(val: dict) -> bool:
    """Whether the validation gain pays for flips' time: at least :data:`MIN_GAIN`, and larger than its
    standard error."""
    return val["gain"] >= MIN_GAIN and val["gain"] > val["gain_se"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="built-in model name")
    p.add_argument("--config", required=True, help="the model's training config (its validation split)")
    p.add_argument("--write-card", action="store_true", help="store the choice in the model card")
    p.add_argument("--json", help="write every number to this JSON file")
    args = p.parse_args(argv)
    name = canonical_name(args.model) or args.model
    splits = make_splits(TrainConfig.from_yaml(args.config))
    plain = Segmenter(name, device="cpu", tta=False, presence=False)
    flips = Segmenter(name, device="cpu", tta=True, presence=False)

    def both(pairs: list, what: str) -> dict:
        dice, _ = dice_scores(plain, pairs, f"{what} without flips")
        flipped, _ = dice_scores(flips, pairs, f"{what} with flips")
        return summary(dice, flipped)

    val = both(splits.val, "validation")
    use = worth_it(val)
    print(f"{name}: validation ({val['n']} pairs): Dice {val['dice_plain']:.4f} without flips, "
          f"{val['dice_flips']:.4f} with (gain {val['gain']:+.4f} ± {val['gain_se']:.4f}); better on "
          f"{val['better_with_flips']}, worse on {val['worse_with_flips']} images -> flips {'on' if use else 'off'}")
    test = both(splits.test, "test") if splits.test else None
    if test:
        print(f"test ({test['n']} pairs, once, after the choice): Dice {test['dice_plain']:.4f} without flips, "
              f"{test['dice_flips']:.4f} with")
    record = {"flips": use, "chosen_on": {
        "split": f"validation: {len(splits.val)} pairs ({splits.how.get('val', '')})",
        "rule": f"flips on when the validation Dice gain is at least {MIN_GAIN} and larger than its standard error "
                "(paired over images): they cost 3-4x the time of one pass at the usual image sizes",
        "command": f"python -m napari_wavegms.tuning.tta_choice --model {name} --config {args.config} --write-card",
        "validation": val, "test": test,
        "note": "native resolution, threshold 0.5, the card's post-processing, no presence gate; the test "
                "split scored once, after the choice"}}
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1))
    if args.write_card:
        print(f"wrote the choice into {set_card_entry(name, 'tta', record)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
