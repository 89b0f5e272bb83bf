"""``wavegms-predict``: an image file or a folder of images → mask files and a summary CSV.

The run is :func:`napari_wavegms.inference.batch.segment_folder` (the napari Batch widget's engine); this
module only reads the command line, checks it, runs that and says what happened, in four steps.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Generator
from typing import Any

from napari_wavegms.cli.common import CANCELLED, SOME_FAILED, USAGE, parse

PROG = "wavegms-predict"


def build_parser() -> argparse.ArgumentParser:
    """The options, with their choices taken from the engine's own lists (a new mask format or
    precision appears here without an edit)."""
    from napari_wavegms.core.device import PRECISIONS
    from napari_wavegms.core.io import MASK_FORMATS
    from napari_wavegms.inference.batch import CONVENTIONS

    parser = argparse.ArgumentParser(
        prog=PROG,
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
    parser.add_argument("--skip-unknown", action="store_true",
                        help="leave out images of no kind the built-in models know (not ultrasound, endoscopy or "
                        "dermoscopy: photos, fundus, histology), before any model pass; the CSV lists them as "
                        "skipped with kind = unknown (default: segment them and flag them for review)")
    parser.add_argument("--pattern", default="*", help="glob for file names, case-insensitive (default: *)")
    parser.add_argument("--recursive", action="store_true", help="also process sub-folders (kept in OUTPUT)")
    parser.add_argument("--format", dest="fmt", choices=MASK_FORMATS, default=MASK_FORMATS[0],
                        help="mask file type")
    parser.add_argument("--convention", choices=CONVENTIONS, default=CONVENTIONS[0],
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
    parser.add_argument("--precision", choices=PRECISIONS, default=PRECISIONS[0],
                        help="auto: fp16 on CUDA, bf16 on CPUs that have it natively, else fp32 (default auto)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="test-time flips: average the masks of each image and its 3 flips (about 3x the time; "
                        "better masks with the built-in models). Default: the model card's "
                        "choice, made on validation; --no-tta for speed")
    parser.add_argument("--overwrite", action="store_true", help="replace existing masks (default: skip)")
    parser.add_argument("--overlays", action="store_true", help="also write previews to OUTPUT/overlays")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--list-models", action="store_true",
                        help="print the installed model names (built-in, then your own) and exit")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What argparse cannot check alone; a problem exits through ``parser.error`` (status 2)."""
    if not args.list_models and (args.input is None or args.output is None):
        parser.error("INPUT and OUTPUT are required")
    if not 0.0 <= args.threshold <= 1.0:
        parser.error(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.min_size is not None and args.min_size < 0:
        parser.error(f"--min-size must be at least 0, got {args.min_size}")


def segmenter_options(args: argparse.Namespace) -> dict[str, Any]:
    """Options for every ``Segmenter`` of the run (one per built-in model without ``--model``)."""
    options: dict[str, Any] = {"batch_size": args.batch_size, "precision": args.precision, "tta": args.tta}
    if args.no_presence_check:
        options["presence"] = False
    return options


def cannot_start() -> tuple[type[BaseException], ...]:
    """The errors that mean the run cannot start (a usage error: status 2), not that a file failed."""
    from napari_wavegms.inference.batch import BatchUsageError
    from napari_wavegms.network.checkpoint import CheckpointError
    from napari_wavegms.zoo.downloads import WeightsUnavailableError

    return BatchUsageError, FileNotFoundError, CheckpointError, ValueError, WeightsUnavailableError


def start(args: argparse.Namespace) -> Any:
    """Check the paths and load the chosen model before any file is read; returns the ``Segmenter``
    (``None`` without ``--model``: each image's built-in model loads when its first image comes)."""
    from napari_wavegms.inference.batch import check_paths
    from napari_wavegms.inference.segmenter import Segmenter

    check_paths(args.input, args.output, args.fmt, args.convention)
    if not args.model:
        print("model: for each image the built-in model made for its kind (ultrasound, endoscopy, dermoscopy); "
              "--model to choose one", file=sys.stderr)
        return None
    segmenter = Segmenter(args.model, device=args.device, **segmenter_options(args))
    print(f"model: {args.model} on {segmenter.device_name} ({segmenter.precision})", file=sys.stderr)
    return segmenter


def run(args: argparse.Namespace, segmenter: Any, started: list) -> Any:
    """Segment every file with a progress bar; returns the run's summary. ``started`` receives the
    summary as soon as the run hands it over, so that a cancelled run can still name its CSV."""
    from napari_wavegms.core.progress import run_with_tqdm
    from napari_wavegms.inference.batch import segment_folder

    job = segment_folder(args.input, args.output, pattern=args.pattern, recursive=args.recursive,
                         fmt=args.fmt, convention=args.convention, overwrite=args.overwrite,
                         overlays=args.overlays, threshold=args.threshold, min_size=args.min_size,
                         fill_holes=args.fill_holes, keep_largest=args.keep_largest, model=args.model,
                         segmenter=segmenter, device=args.device, segmenter_options=segmenter_options(args),
                         kind_per_image=args.kind_per_image, skip_unknown=args.skip_unknown)
    return run_with_tqdm(_watched(job, started), desc="segmenting", unit="file", disable=args.quiet)


def report(args: argparse.Namespace, summary: Any, automatic: bool) -> int:
    """Say what happened (models chosen, counts, failures, the CSV) and return the exit status."""
    from napari_wavegms.inference.batch import printable

    if automatic:
        _print_choices(summary.results)
    print(f"{len(summary.done)} done, {len(summary.skipped)} skipped, {len(summary.failed)} failed "
          f"-> {summary.output_dir}", file=sys.stderr)
    lesion = _lesion_counts(summary.masks)
    if lesion:
        print(f"presence check: {lesion}", file=sys.stderr)
    unknown = [r for r in summary.results if r.kind == "unknown"]
    if unknown:
        what = ("left out" if args.skip_unknown
                else "segmented anyway and flagged for review (--skip-unknown leaves them out)")
        print(f"{len(unknown)} file{'' if len(unknown) == 1 else 's'} of no kind the built-in models know: {what}",
              file=sys.stderr)
    if not summary.results:
        print(f"{PROG}: no file matched {args.pattern!r} in {args.input}", file=sys.stderr)
    for result in summary.failed:
        print(f"FAILED {printable(result.file)}: {printable(result.error)}", file=sys.stderr)
    print(f"summary: {summary.csv_path}", file=sys.stderr)
    return SOME_FAILED if summary.failed else 0


def _lesion_counts(results: list) -> str:
    """The presence gate's answers in words ("3 no lesion found, 1 unsure (flagged for review), 12 with a
    lesion"); ``""`` when no mask was judged (no model with a gate ran)."""
    words = {"no": "no lesion found", "unsure": "unsure (flagged for review)", "yes": "with a lesion"}
    counts = {answer: sum(r.lesion == answer for r in results) for answer in words}
    return ", ".join(f"{n} {words[answer]}" for answer, n in counts.items() if n)


def report_cancelled(started: list) -> int:
    csv_path = started[0].csv_path if started else None
    said = (f"finished masks are kept and listed in {csv_path}" if csv_path is not None and csv_path.is_file()
            else "nothing was written")
    print(f"{PROG}: cancelled; {said}", file=sys.stderr)
    return CANCELLED


def predict_main(argv: list[str] | None = None) -> int:
    """``wavegms-predict INPUT OUTPUT [--model NAME_OR_PATH] [--pattern GLOB] [--format png|tif] [--device D]``.

    Exit status: 0 every file done or skipped, 1 some failed, 2 a usage error, 130 cancelled.
    """
    args = parse(build_parser(), argv, check_args)
    if isinstance(args, int):
        return args
    if args.list_models:
        from napari_wavegms.zoo.registry import installed_models

        print("\n".join(installed_models()))
        return 0
    errors = cannot_start()
    started: list = []
    try:
        segmenter = start(args)
        summary = run(args, segmenter, started)
    except KeyboardInterrupt:
        return report_cancelled(started)
    except errors as err:  # without --model, a built-in model loads when its first image comes
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return USAGE
    return report(args, summary, automatic=segmenter is None)


def _watched(job: Generator, started: list) -> Generator:
    """``job``, putting the summary its first event hands over into ``started`` (so that a cancelled
    run can name its CSV); closing this closes ``job``, whose ``finally`` writes that CSV."""

    def keep(event: Any) -> Any:
        summary = getattr(event, "info", {}).get("summary")
        if summary is not None and not started:
            started.append(summary)
        return event

    from napari_wavegms.core.progress import relay

    return relay(job, keep)


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
