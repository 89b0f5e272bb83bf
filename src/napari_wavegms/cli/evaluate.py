"""``wavegms-eval``: score a model on a folder of image/mask pairs with
:func:`napari_wavegms.training.evaluate.evaluate`."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from napari_wavegms.cli.common import CANCELLED, SOME_FAILED, parse

PROG = "wavegms-eval"


def build_parser() -> argparse.ArgumentParser:
    """The options; the precisions are the engine's own list."""
    from napari_wavegms.core.device import PRECISIONS

    p = argparse.ArgumentParser(
        prog=PROG,
        description="Score a model on a folder of image/mask pairs: Dice, IoU, HD95 per image, in the "
        "paper's protocol (at the model's size) and at native resolution.",
    )
    p.add_argument("model", help="built-in model name, checkpoint file or training output folder")
    p.add_argument("data", help="folder holding images/ and masks/")
    p.add_argument("--split", help="list file of names to score (or relative to DATA: splits/gms_test.txt)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--csv", help="write per-image scores to this CSV file")
    p.add_argument("--json", action="store_true", help="print one JSON object with the means")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--precision", choices=PRECISIONS, default=PRECISIONS[0],
                   help="auto: fp16 on CUDA, bf16 on CPUs that have it natively, else fp32")
    p.add_argument("--images", default="images", help="name of the images sub-folder")
    p.add_argument("--masks", default="masks", help="name of the masks sub-folder")
    p.add_argument("--as-predicted", action="store_true",
                   help="score the masks wavegms-predict writes (the model card's test-time flips, clean-up "
                   "and presence check, from the image files) instead of the bare model")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _number(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def print_scores(result: Any) -> None:
    """The means of both protocols, one line each, for a person reading the terminal."""
    print(f"{result.n} images, model {result.model}")
    for name, s in (("paper (224², px)", result.paper), ("native", result.native)):
        n_undef = s["hd95_undefined"]
        undefined = f"  ({n_undef} HD95 undefined: one mask empty)" if n_undef else ""
        print(f"  {name:17s} Dice {_number(s['dice'])} ± {_number(s['dice_std'])}  IoU {_number(s['iou'])} ± "
              f"{_number(s['iou_std'])}  HD95 {_number(s['hd95'])} ± {_number(s['hd95_std'])}{undefined}")
    if result.csv:
        print(f"  per-image scores: {result.csv}")


def eval_main(argv: list[str] | None = None) -> int:
    """``wavegms-eval MODEL DATA [--split LISTFILE] [--device D] [--csv FILE] [--json]``."""
    args = parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    from napari_wavegms.core.progress import run_with_tqdm
    from napari_wavegms.network.checkpoint import CheckpointError
    from napari_wavegms.training.data import DataError
    from napari_wavegms.training.evaluate import evaluate

    try:
        job = evaluate(args.model, args.data, split=args.split, device=args.device,
                       batch_size=args.batch_size, threshold=args.threshold, images=args.images,
                       masks=args.masks, csv=args.csv, precision=args.precision, as_predicted=args.as_predicted)
        result = run_with_tqdm(job, desc="evaluating", unit="img", disable=args.quiet)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return CANCELLED
    except (DataError, CheckpointError, OSError, ValueError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return SOME_FAILED
    for problem in result.problems:
        print(f"{PROG}: skipped: {problem}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print_scores(result)
    return SOME_FAILED if result.problems else 0
