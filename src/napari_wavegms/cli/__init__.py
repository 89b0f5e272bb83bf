"""The command line: ``wavegms-predict``, ``wavegms-train`` and ``wavegms-eval``, thin over the engine.

Exit status: 0 success, 1 when some inputs failed, 2 for a usage error (argparse's convention).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Generator


# ---------------------------------------------------------------- wavegms-predict (inference/batch)
def predict_main(argv: list[str] | None = None) -> int:
    """``wavegms-predict INPUT OUTPUT [--model NAME_OR_PATH] [--pattern GLOB] [--format png|tif] [--device D]``.

    The same run as :func:`napari_wavegms.inference.batch.segment_folder` (the napari batch widget's engine).
    """
    parser = argparse.ArgumentParser(
        prog="wavegms-predict",
        description="Segment an image file or every matching image of a folder with Wave-GMS; masks keep "
                    "the input's name (and sub-folder), a summary CSV lists every file's outcome.",
        epilog="Exit status: 0 all files done or skipped, 1 some failed, 2 usage error, 130 cancelled.",
    )
    parser.add_argument("input", nargs="?", help="an image file or a folder of images")
    parser.add_argument("output", nargs="?", help="output folder (not the input folder)")
    parser.add_argument("--model", default=None,
                        help="built-in model name, checkpoint file or training folder (default: for each image the "
                        "built-in model made for its kind: ultrasound, endoscopy or dermoscopy)")
    parser.add_argument("--kind-per-image", action="store_true",
                        help="without --model: judge each image's kind alone (default: an image the kind classifier "
                        "finds ambiguous is judged with the kinds of the rest of its folder)")
    parser.add_argument("--pattern", default="*", help="glob for file names, case-insensitive (default: *)")
    parser.add_argument("--recursive", action="store_true", help="also process sub-folders (kept in OUTPUT)")
    parser.add_argument("--format", dest="fmt", choices=("png", "tif"), default="png", help="mask file type")
    parser.add_argument("--convention", choices=("0/255", "0/1", "labels"), default="0/255",
                        help="mask values: 0/255, 0/1, or connected objects numbered 1..n (default 0/255)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    parser.add_argument("--threshold", type=float, default=0.5, help="soft-mask threshold (default 0.5)")
    parser.add_argument("--min-size", type=int, default=None,
                        help="remove objects smaller than this many pixels (0: keep all; default: the model "
                        "card's choice, made on validation)")
    parser.add_argument("--fill-holes", action=argparse.BooleanOptionalAction, default=None,
                        help="fill holes inside objects (default: the model card's choice, made on validation)")
    parser.add_argument("--keep-largest", action=argparse.BooleanOptionalAction, default=None,
                        help="keep only the largest object of each mask (default: the model card's choice)")
    parser.add_argument("--no-presence-check", action="store_true",
                        help="keep every mask: without this, a model whose card has a presence gate (the ultrasound "
                        "model) leaves the mask of an image it finds without a lesion empty")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="images read ahead, and slices of a TIFF stack per model call (default 8); images are "
                        "segmented one at a time, so progress and Ctrl-C are per image")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                        help="auto: fp16 on CUDA, bf16 on CPUs that have it natively, else fp32 (default auto)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="test-time flips: average the masks of each image and its 3 flips (about 3x the time; "
                        "better masks with the built-in models). Default: the model card's "
                        "choice, made on validation; --no-tta for speed")
    parser.add_argument("--overwrite", action="store_true", help="replace existing masks (default: skip)")
    parser.add_argument("--overlays", action="store_true", help="also write previews to OUTPUT/overlays")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--list-models", action="store_true", help="print the built-in model names and exit")
    try:  # argparse exits (2 on usage errors, 0 for --help); return the status instead
        args = parser.parse_args(argv)
        if not args.list_models and (args.input is None or args.output is None):
            parser.error("INPUT and OUTPUT are required")
        if not 0.0 <= args.threshold <= 1.0:
            parser.error(f"--threshold must be in [0, 1], got {args.threshold}")
        if args.batch_size < 1:
            parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
        if args.min_size is not None and args.min_size < 0:
            parser.error(f"--min-size must be at least 0, got {args.min_size}")
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 2

    from napari_wavegms.zoo import registry as models

    if args.list_models:
        for name in models.builtin_models():
            print(name)
        return 0

    from napari_wavegms.core.progress import run_with_tqdm
    from napari_wavegms.inference.batch import BatchUsageError, check_paths, printable, segment_folder
    from napari_wavegms.inference.segmenter import Segmenter
    from napari_wavegms.network.checkpoint import CheckpointError
    from napari_wavegms.zoo.downloads import WeightsUnavailableError

    cannot_start = (BatchUsageError, FileNotFoundError, CheckpointError, ValueError, WeightsUnavailableError)
    # for every Segmenter of the run (one per model without --model)
    options = {"batch_size": args.batch_size, "precision": args.precision, "tta": args.tta}
    if args.no_presence_check:
        options["presence"] = False
    try:
        check_paths(args.input, args.output, args.fmt, args.convention)
        segmenter = Segmenter(args.model, device=args.device, **options) if args.model else None
    except cannot_start as err:
        print(f"wavegms-predict: error: {err}", file=sys.stderr)
        return 2
    if segmenter is not None:
        print(f"model: {args.model} on {segmenter.device_name} ({segmenter.precision})", file=sys.stderr)
    else:
        print("model: for each image the built-in model made for its kind (ultrasound, endoscopy, dermoscopy); "
              "--model to choose one", file=sys.stderr)
    job = segment_folder(args.input, args.output, pattern=args.pattern, recursive=args.recursive,
                         fmt=args.fmt, convention=args.convention, overwrite=args.overwrite,
                         overlays=args.overlays, threshold=args.threshold, min_size=args.min_size,
                         fill_holes=args.fill_holes, keep_largest=args.keep_largest, model=args.model,
                         segmenter=segmenter, device=args.device, segmenter_options=options,
                         kind_per_image=args.kind_per_image)
    started: list = []  # the run's summary, handed over by its first event
    try:
        summary = run_with_tqdm(_watched(job, started), desc="segmenting", unit="file", disable=args.quiet)
    except KeyboardInterrupt:
        csv_path = started[0].csv_path if started else None
        said = (f"finished masks are kept and listed in {csv_path}" if csv_path is not None and csv_path.is_file()
                else "nothing was written")
        print(f"wavegms-predict: cancelled; {said}", file=sys.stderr)
        return 130
    except cannot_start as err:  # without --model, a built-in model loads when its first image comes
        print(f"wavegms-predict: error: {err}", file=sys.stderr)
        return 2
    if segmenter is None:
        _print_choices(summary.results)
    print(f"{len(summary.done)} done, {len(summary.skipped)} skipped, {len(summary.failed)} failed "
          f"-> {summary.output_dir}", file=sys.stderr)
    if not summary.results:
        print(f"wavegms-predict: no file matched {args.pattern!r} in {args.input}", file=sys.stderr)
    for result in summary.failed:
        print(f"FAILED {printable(result.file)}: {printable(result.error)}", file=sys.stderr)
    print(f"summary: {summary.csv_path}", file=sys.stderr)
    return 1 if summary.failed else 0


def _watched(job: Generator, started: list) -> Generator:
    """``job``, putting the summary its first event hands over into ``started`` (so that a cancelled
    run can name its CSV); closing this closes ``job``, whose ``finally`` writes that CSV."""
    try:
        while True:
            try:
                event = next(job)
            except StopIteration as stop:
                return stop.value
            summary = getattr(event, "info", {}).get("summary")
            if summary is not None and not started:
                started.append(summary)
            yield event
    finally:
        job.close()


def _print_choices(results: list) -> None:
    """Which built-in model segmented how many files, and why (the first file's reason; each file's is in
    the CSV's ``model_choice`` column)."""
    seen: dict[str, list] = {}
    for result in results:
        if result.choice:
            seen.setdefault(result.model, [0, result.choice])[0] += 1
    for model, (n, why) in seen.items():
        print(f"model: {model} for {n} file{'' if n == 1 else 's'}, the built-in model for its kind ({why}); "
              "--model to choose another", file=sys.stderr)


# ---------------------------------------------------------------- wavegms-train (training)
def train_main(argv: list[str] | None = None) -> int:
    """``wavegms-train CONFIG [--data DIR] [--output DIR] [--epochs N] [--image-size S] [--batch-size B]
    [--device D]`` (plus --lr, --resume, --init-from, --val-fraction, … see ``--help``)."""
    import os

    p = argparse.ArgumentParser(
        prog="wavegms-train",
        description="Train Wave-GMS on a folder of image/mask pairs (DIR/images + DIR/masks, matched by file "
        "name). Under torchrun it trains on every process's device with DistributedDataParallel.",
    )
    p.add_argument("config", help="YAML config (see training/configs/busi.yaml); options below override it")
    p.add_argument("--data", help="data folder holding images/ and masks/ (replaces data_dir)")
    p.add_argument("--output", help="output folder for checkpoints, config and history")
    p.add_argument("--epochs", type=int)
    p.add_argument("--image-size", type=int, help="training side in pixels (multiple of 8)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--seed", type=int)
    p.add_argument("--val-fraction", type=float, help="fraction of training pairs carved out for validation")
    p.add_argument("--init-from", help="fine-tune from a built-in model name, checkpoint or run folder")
    p.add_argument("--resume", action="store_true", help="continue the output folder's run")
    p.add_argument("--overwrite", action="store_true", help="start afresh in a used output folder")
    p.add_argument("--workers", type=int, help="DataLoader workers (only when pairs are not preloaded)")
    p.add_argument("--recipe", choices=["fast", "paper", "finetune"],
                   help="fast (the most validation Dice per CPU-second; the default from scratch), paper "
                        "(docs/design.md exactly) or finetune (fast at full size throughout; the default with "
                        "--init-from)")
    p.add_argument("--time-budget", type=float, metavar="MINUTES",
                   help="train for this long (the learning rate anneals to 0 by then), at most --epochs")
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"],
                   help="mixed precision: auto = bf16 on CUDA (else fp16) and on CPUs with native bf16")
    p.add_argument("--augment", choices=["standard", "robust", "off"],
                   help="standard (the paper's, docs/design.md) or robust (+ gamma, shading, blur, noise: for "
                        "other devices)")
    p.add_argument("--max-steps", type=int, help="stop after this many optimisation steps (smoke test)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    args = p.parse_args(argv)

    from napari_wavegms.training.loop import TrainConfig, train_with_progress

    absolute = lambda v: os.path.abspath(os.path.expanduser(v)) if v else None  # noqa: E731
    overrides = {
        "data_dir": absolute(args.data), "output_dir": absolute(args.output), "epochs": args.epochs,
        "image_size": args.image_size, "batch_size": args.batch_size, "device": args.device, "lr": args.lr,
        "seed": args.seed, "val_fraction": args.val_fraction, "init_from": args.init_from,
        "resume": True if args.resume else None, "overwrite": True if args.overwrite else None,
        "num_workers": args.workers, "amp": args.amp, "max_steps": args.max_steps, "recipe": args.recipe,
        "time_budget_s": args.time_budget * 60 if args.time_budget else None,
        "augment": None if args.augment is None else args.augment != "off",
        "augmentation": args.augment if args.augment not in (None, "off") else None,
    }
    try:
        config = TrainConfig.from_yaml(args.config, **overrides)
    except (OSError, ValueError) as err:
        print(f"wavegms-train: {err}", file=sys.stderr)
        return 2
    return train_with_progress(config, quiet=args.quiet)


# ---------------------------------------------------------------- wavegms-eval (metrics)
def eval_main(argv: list[str] | None = None) -> int:
    """``wavegms-eval MODEL DATA [--split LISTFILE] [--device D] [--csv FILE] [--json]``."""
    import json
    import math

    p = argparse.ArgumentParser(
        prog="wavegms-eval",
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
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="auto: fp16 on CUDA, bf16 on CPUs that have it natively, else fp32")
    p.add_argument("--images", default="images", help="name of the images sub-folder")
    p.add_argument("--masks", default="masks", help="name of the masks sub-folder")
    p.add_argument("--as-predicted", action="store_true",
                   help="score the masks wavegms-predict writes (the model card's test-time flips, clean-up "
                   "and presence check, from the image files) instead of the bare model")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)

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
        print("wavegms-eval: interrupted", file=sys.stderr)
        return 130
    except (DataError, CheckpointError, OSError, ValueError) as err:
        print(f"wavegms-eval: {err}", file=sys.stderr)
        return 1
    for problem in result.problems:
        print(f"wavegms-eval: skipped: {problem}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        fmt = lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"  # noqa: E731
        print(f"{result.n} images, model {result.model}")
        for name, s in (("paper (224², px)", result.paper), ("native", result.native)):
            n_undef = s["hd95_undefined"]
            undefined = f"  ({n_undef} HD95 undefined: one mask empty)" if n_undef else ""
            print(f"  {name:17s} Dice {fmt(s['dice'])} ± {fmt(s['dice_std'])}  IoU {fmt(s['iou'])} ± "
                  f"{fmt(s['iou_std'])}  HD95 {fmt(s['hd95'])} ± {fmt(s['hd95_std'])}{undefined}")
        if result.csv:
            print(f"  per-image scores: {result.csv}")
    return 1 if result.problems else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(predict_main())
