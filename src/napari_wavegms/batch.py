"""Folder batch processing: every image of a folder (or one file) → a mask file, without babysitting.

Safety rules, in order of importance:
- nothing is ever written into the input folder or over an input: an output folder equal to the input
  folder is refused; an output folder *inside* the input folder is allowed and left out of the scan;
  any single output that would land inside the input tree is refused (that file fails, the run goes on);
- every output (masks, overlays, the summary CSV) is written atomically (temporary file, then rename),
  so a cancelled or crashed run never leaves half a file that a rerun would take as done;
- existing outputs are skipped unless ``overwrite``: a rerun finishes what is missing;
- a file that cannot be read or segmented fails with its reason and the run continues; every file's
  outcome goes into a summary CSV (``file,status,error,shape,foreground_fraction,seconds``, …) named
  with the run's time stamp, written at the end (and on cancel, for the files done so far);
- every mask gets the model's ``confidence`` in it and ``review`` = yes when it is low
  (:data:`napari_wavegms.inference.REVIEW_BELOW`), so a person looks at the doubtful ones first; a
  blank image (no intensity variation) gets an empty mask and a ``note`` saying so.

Files are found lazily (one directory listing at a time, in sorted order) and images are read a batch
at a time, so a folder of any size works in bounded memory. Under ``torchrun`` (``WORLD_SIZE`` and
``RANK`` set) each process takes every ``WORLD_SIZE``-th file of that sorted order and writes its own
CSV part (``…-rank{R}.csv``); no ``torch.distributed`` set-up is needed.
"""

from __future__ import annotations

import csv
import fnmatch
import os
import time
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .atomic import atomic_path
from .io import MASK_FORMATS, ImageReadError, is_image_file, read_image, write_mask
from .progress import Progress

CSV_COLUMNS = (
    "file", "status", "error", "shape", "foreground_fraction", "seconds", "model", "model_choice",
    "confidence", "review", "note",
)
CONVENTIONS = ("0/255", "0/1", "labels")
OVERLAY_DIR = "overlays"

if TYPE_CHECKING:  # torch is imported only when a run starts, so the widgets can use this module freely
    from .inference import Segmenter
    from .models import ModelChoice


class BatchUsageError(ValueError):
    """The run cannot start: missing input, output equal to the input, bad format or convention."""


@dataclass
class FileResult:
    """What happened to one input file."""

    file: str  # relative to the input folder, with '/' separators
    status: str  # "done" | "skipped" | "failed"
    error: str = ""
    shape: tuple | None = None
    foreground: float | None = None
    seconds: float = 0.0
    output: str | None = None
    confidence: float | None = None  # the model's confidence in the mask (inference.mask_confidence)
    review: bool | None = None  # confidence below inference.REVIEW_BELOW (…_TTA): a person should look at it
    note: str = ""  # what the mask alone does not say ("the image is blank …")
    model: str = ""  # the model that segmented it
    choice: str = ""  # why, when the model was chosen for this image: "ultrasound: grey, speckle texture"

    def row(self) -> dict[str, str]:
        return {
            "file": self.file,
            "status": self.status,
            "error": self.error,
            "shape": "x".join(str(s) for s in self.shape) if self.shape else "",
            "foreground_fraction": "" if self.foreground is None else f"{self.foreground:.6f}",
            "seconds": f"{self.seconds:.3f}",
            "confidence": "" if self.confidence is None else f"{self.confidence:.3f}",
            "review": "" if self.review is None else ("yes" if self.review else "no"),
            "note": self.note,
            "model": self.model,
            "model_choice": self.choice,
        }


@dataclass
class BatchSummary:
    """All results of a run, where its CSV was written and the output folder."""

    results: list[FileResult]
    csv_path: Path
    output_dir: Path
    info: dict = field(default_factory=dict)

    def _with(self, status: str) -> list[FileResult]:
        return [r for r in self.results if r.status == status]

    @property
    def to_review(self) -> list[FileResult]:
        """Masks written in this run whose confidence is low (see :attr:`FileResult.review`)."""
        return [r for r in self.done if r.review]

    @property
    def done(self) -> list[FileResult]:
        return self._with("done")

    @property
    def skipped(self) -> list[FileResult]:
        return self._with("skipped")

    @property
    def failed(self) -> list[FileResult]:
        return self._with("failed")


# ---------------------------------------------------------------- paths
def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


@dataclass(frozen=True)
class BatchPaths:
    """Resolved input root (a folder, or a single file's folder), the single file if any, and the output."""

    input_root: Path
    single_file: Path | None
    output_dir: Path


def check_paths(input_path: str | os.PathLike, output_dir: str | os.PathLike, fmt: str = "png",
                convention: str = "0/255") -> BatchPaths:
    """Validate a run's paths and options before anything is loaded; raises :class:`BatchUsageError`."""
    if fmt not in MASK_FORMATS:
        raise BatchUsageError(f"format {fmt!r} is not supported: use {' or '.join(MASK_FORMATS)}")
    if convention not in CONVENTIONS:
        raise BatchUsageError(f"convention {convention!r} is not supported: use {', '.join(CONVENTIONS)}")
    src = Path(input_path).expanduser()
    if not src.exists():
        raise BatchUsageError(f"input {src} does not exist")
    src = src.resolve()
    out = Path(output_dir).expanduser().resolve()
    single = src if src.is_file() else None
    root = src.parent if single else src
    if out == root:
        raise BatchUsageError(
            f"the output folder {out} is the input folder: choose another (inputs are never overwritten)"
        )
    if out.exists() and not out.is_dir():
        raise BatchUsageError(f"the output {out} exists and is not a folder")
    return BatchPaths(root, single, out)


def _matches(rel: str, name: str, pattern: str) -> bool:
    """Case-insensitive glob on the name (or on the relative path when the pattern holds a '/')."""
    target = rel if "/" in pattern else name
    return fnmatch.fnmatch(target.lower(), pattern.lower())


def iter_inputs(paths: BatchPaths, pattern: str = "*", recursive: bool = False) -> Iterator[Path]:
    """Files to process, lazily, in a stable sorted order: one directory listing at a time.

    Hidden files and folders (leading '.') and the output folder (when it lies inside the input
    folder) are left out. Files of any type that match ``pattern`` are returned: the run records
    non-images as failures rather than silently ignoring them.
    """
    if paths.single_file is not None:
        yield paths.single_file
        return

    # The output folder is left out when it lies inside the input folder (not when the input lies
    # inside the output: then everything would be left out).
    out_in_input = _inside(paths.output_dir, paths.input_root)

    def walk(folder: Path) -> Iterator[Path]:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if entry.is_dir():
                if recursive and not (out_in_input and _inside(path.resolve(), paths.output_dir)):
                    subdirs.append(path)
                continue
            rel = path.relative_to(paths.input_root).as_posix()
            if _matches(rel, entry.name, pattern):
                yield path
        for sub in subdirs:
            yield from walk(sub)

    yield from walk(paths.input_root)


def choice_for_folder(paths: BatchPaths, pattern: str = "*", recursive: bool = False,
                      look_at: int = 5) -> ModelChoice | None:
    """The built-in model for the kind of the first readable image among the first ``look_at`` files,
    with the reason (:func:`napari_wavegms.models.choose_model`); ``None`` when none can be read.

    A run without a chosen model still decides per file (:func:`segment_folder`); this is what a
    widget shows when a folder is picked."""
    from .models import choose_model

    for n, path in enumerate(iter_inputs(paths, pattern, recursive)):
        if n >= look_at:
            break
        if is_image_file(path):
            try:
                image = read_image(path)
            except ImageReadError:
                continue
            return choose_model(image)
    return None


def model_for_folder(paths: BatchPaths, pattern: str = "*", recursive: bool = False, look_at: int = 5) -> str | None:
    """The model of :func:`choice_for_folder`; the default model when no image can be read."""
    from .models import default_model

    choice = choice_for_folder(paths, pattern, recursive, look_at)
    return choice.model if choice is not None else default_model()


#: Images read, evenly spread over a folder, to estimate which kinds of image it holds.
FOLDER_SAMPLE = 100


class ModelPicker:
    """Per-file choice of the built-in model, for runs where the user chose none: each image is
    segmented by the model made for its kind (ultrasound, endoscopy, dermoscopy), so a folder that mixes
    kinds gives each of its clear images what it would get alone. With :attr:`prior` (the kinds' shares
    in the folder, :meth:`judge_folder`) an image the classifier finds ambiguous is judged as an image of
    its folder. One :class:`Segmenter` per model, loaded on first use.
    """

    def __init__(self, **segmenter_options) -> None:
        self.options = segmenter_options
        self.segmenters: dict[str | None, Segmenter] = {}
        self.prior: np.ndarray | None = None

    def choose(self, image: np.ndarray) -> ModelChoice:
        from .models import ModelChoice, choose_model, default_model

        try:
            return choose_model(image, prior=self.prior)
        except Exception as err:  # an image the statistics cannot judge still gets segmented
            return ModelChoice(default_model(), "unknown", f"could not judge the image: {err}", False)

    def judge_folder(self, files: Iterator[Path], count: int) -> Generator[Progress, None, None]:
        """Set :attr:`prior` from up to :data:`FOLDER_SAMPLE` of ``files`` (``count`` of them, taken evenly
        spread); yields progress. Unreadable files are left to the run, which reports them."""
        from .modality import KINDS, classify, folder_prior

        step = max(1, -(-count // FOLDER_SAMPLE))
        probs = []
        for n, path in enumerate(files):
            if n % step:
                continue
            try:
                found = classify(read_image(path))
            except Exception:  # the run itself reports what is wrong with this file
                continue
            probs.append([found.scores[k] for k in KINDS])
            if len(probs) % 10 == 0:
                yield Progress(0, count, f"judging the kinds of the folder's images: {len(probs)}")
        self.prior = folder_prior(np.array(probs)) if len(probs) > 1 else None

    def segmenter(self, model: str | None) -> Segmenter:
        if model not in self.segmenters:
            from .inference import Segmenter

            self.segmenters[model] = Segmenter(model, **self.options)
        return self.segmenters[model]


def _unreached_masks(inputs: Iterator[Path], root: Path, seen: set[str], mask_path) -> list[FileResult]:
    """Rows for the files a stopped run did not reach whose mask exists (from an earlier run), so that
    the CSV of a cancelled run still lists every mask in the output folder."""
    rows = []
    for path in inputs:
        rel = path.relative_to(root)
        target = mask_path(rel)
        if rel.as_posix() not in seen and is_image_file(path) and target.exists():
            rows.append(FileResult(rel.as_posix(), "skipped", "not reached (run stopped); its mask exists",
                                   output=str(target)))
    return rows


def _rank() -> tuple[int, int]:
    """``(rank, world_size)`` under torchrun, ``(0, 1)`` otherwise."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0, 1
    return (rank, world) if world > 1 and 0 <= rank < world else (0, 1)


# ---------------------------------------------------------------- outputs
def overlay_image(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RGB uint8 preview: the image (normalised for display), the mask tinted red and outlined in yellow."""
    from skimage.segmentation import find_boundaries

    from .inference import image_layout, intensity_scale

    layout = image_layout(image.shape, image.dtype)
    colour = image[..., :3] if layout.kind == "rgba" else image
    rgb = intensity_scale([colour], image.dtype).apply(colour)
    if layout.kind == "gray":
        rgb = np.repeat(rgb[..., None], 3, axis=-1)
    rgb = np.clip(rgb, 0.0, 1.0)
    inside = mask > 0
    rgb[inside] = 0.6 * rgb[inside] + 0.4 * np.array([1.0, 0.0, 0.0], np.float32)
    rgb[find_boundaries(mask, mode="inner")] = (1.0, 1.0, 0.0)
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def _write_overlay(path: Path, image: np.ndarray, mask: np.ndarray) -> None:
    import imageio.v3 as iio

    with atomic_path(path) as tmp:
        iio.imwrite(tmp, overlay_image(image, mask), extension=".png")


def write_summary(path: Path, results: list[FileResult]) -> Path:
    """The run's CSV, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for r in results:
            writer.writerow(r.row())
    return path


def _summary_path(output_dir: Path, rank: int, world: int) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    part = f"-rank{rank}" if world > 1 else ""
    path = output_dir / f"wavegms-summary-{stamp}{part}.csv"
    n = 1
    while path.exists():
        path = output_dir / f"wavegms-summary-{stamp}-{n}{part}.csv"
        n += 1
    return path


def _read(path: Path) -> tuple[np.ndarray | Exception, float]:
    """The image (or the reason it cannot be read) and the seconds reading took (runs in a thread)."""
    start = time.perf_counter()
    try:
        image: np.ndarray | Exception = read_image(path)
    except ImageReadError as err:
        image = err
    return image, time.perf_counter() - start


def _segment_group(segmenter: Segmenter, images: list[np.ndarray], **kw) -> list:
    """Masks with their confidence (:class:`~napari_wavegms.inference.Segmentation`) or errors of a group
    of images; if the shared batch fails (out of memory, say), each image is retried alone so one bad
    image does not fail its neighbours."""
    if not images:
        return []
    kw["with_confidence"] = True
    try:
        return segmenter.segment_many(images, **kw)
    except Exception:
        results: list = []
        for image in images:
            try:
                results.extend(segmenter.segment_many([image], **kw))
            except Exception as err:
                results.append(RuntimeError(f"segmentation failed ({type(err).__name__}: {err})"))
        return results


# ---------------------------------------------------------------- the run
def segment_folder(
    input_dir: str | os.PathLike, output_dir: str | os.PathLike, *, model: str | os.PathLike | None = None,
    pattern: str = "*", recursive: bool = False, fmt: str = "png", convention: str = "0/255",
    overwrite: bool = False, overlays: bool = False, threshold: float = 0.5, device: str = "auto",
    segmenter: Segmenter | None = None, min_size: int | None = None, batch_size: int | None = None,
    segmenter_options: dict | None = None, fill_holes: bool | None = None, keep_largest: bool | None = None,
    kind_per_image: bool = False,
) -> Generator[Progress, None, BatchSummary]:
    """Segment every file of ``input_dir`` matching ``pattern`` into ``output_dir`` (module docstring).

    ``input_dir`` may also be a single image file. Masks keep the input's relative path and stem
    (``a/b.jpg`` → ``output/a/b.png``); overlay previews go to ``output/overlays/``. ``convention``
    ``labels`` numbers connected objects. Without ``model`` (or ``segmenter``) each image is segmented by
    the built-in model made for its kind (:class:`ModelPicker`; the CSV's ``model`` and ``model_choice``
    say which and why). The kinds of up to :data:`FOLDER_SAMPLE` of the folder's images are judged first,
    so that an image the classifier finds ambiguous is judged as an image of its folder
    (:func:`napari_wavegms.modality.folder_prior`); ``kind_per_image`` judges every image alone.
    A given ``model`` or ``segmenter`` is used for every file (with a ``segmenter``,
    ``model`` only names it in the CSV). ``segmenter_options`` go to every :class:`Segmenter` made
    here (``half=``, say). Post-processing (``min_size`` in pixels, ``fill_holes``, ``keep_largest``):
    ``None`` takes each model's card default (:meth:`Segmenter.segment`). Yields
    ``Progress(done_files, total_files, message=file)``; returns a :class:`BatchSummary`. Usage errors
    raise :class:`BatchUsageError` at the first ``next``.
    """
    paths = check_paths(input_dir, output_dir, fmt, convention)
    options = {"device": device, **(segmenter_options or {}), **({"batch_size": batch_size} if batch_size else {})}
    picker = ModelPicker(**options) if segmenter is None and model is None else None
    if segmenter is None and picker is None:
        from .inference import Segmenter

        segmenter = Segmenter(model, **options)
    if segmenter is not None:
        device_name, group = segmenter.device_name, max(1, batch_size or segmenter.batch_size)
    else:
        from .device import describe, resolve_device

        device_name, group = describe(resolve_device(device)), max(1, options.get("batch_size", 8))
    rank, world = _rank()
    label_objects = convention == "labels"

    out = paths.output_dir
    targets: dict[Path, str] = {}  # mask path → the first input (in sorted order) that claims it

    def mask_path(rel: Path) -> Path:
        return (out / rel).with_suffix(f".{fmt}")

    def mine() -> Iterator[Path]:
        """This process's share of the files; every image's output is claimed, so that two inputs with
        the same stem (``a.png``, ``a.jpg``) are caught even when different processes get them."""
        for n, path in enumerate(iter_inputs(paths, pattern, recursive)):
            if is_image_file(path):
                rel = path.relative_to(paths.input_root)
                targets.setdefault(mask_path(rel), rel.as_posix())
            if n % world == rank:
                yield path

    total = sum(1 for _ in mine())
    out.mkdir(parents=True, exist_ok=True)
    csv_path = _summary_path(out, rank, world)
    results: list[FileResult] = []
    info = {"device": device_name, "rank": rank, "world_size": world}
    # The summary fills as files finish; a caller that cancels (close()) gets no return value, so the
    # first event hands it over: after a cancel it holds every file done, as the CSV does.
    summary = BatchSummary(results, csv_path, out, info)
    yield Progress(0, total, f"{total} files on {device_name}", {**info, "summary": summary})
    if picker is not None and not kind_per_image:
        yield from picker.judge_folder((p for p in mine() if is_image_file(p)), total)

    def segment(todo: list) -> list:
        """Masks (or errors) of a group's images, each by its own model when none was chosen."""
        images = [t[3] for t in todo]
        kw = {"threshold": threshold, "label_objects": label_objects, "min_size": min_size,
              "fill_holes": fill_holes, "keep_largest": keep_largest}
        if picker is None:
            for result, *_ in todo:
                result.model = "" if model is None else str(model)
            return _segment_group(segmenter, images, **kw)
        by_model: dict[str | None, list[int]] = {}
        for i, (result, *_rest) in enumerate(todo):
            choice = picker.choose(images[i])
            result.model = choice.model or ""
            result.choice = f"{choice.kind}: {choice.reason}" + ("" if choice.exact else "; no built-in model for it")
            by_model.setdefault(choice.model, []).append(i)
        masks: list = [None] * len(todo)
        for name, indices in by_model.items():
            chosen = _segment_group(picker.segmenter(name), [images[i] for i in indices], **kw)
            for i, mask in zip(indices, chosen, strict=True):
                masks[i] = mask
        return masks

    def plan(path: Path) -> tuple[FileResult, Path | None, Path | None]:
        """Decide a file's outputs; a result that is already final (skipped/failed) comes with no target."""
        rel = path.relative_to(paths.input_root)
        result = FileResult(rel.as_posix(), "done")
        target = mask_path(rel)
        overlay = (out / OVERLAY_DIR / rel).with_suffix(".png") if overlays else None
        if not is_image_file(path):  # a README or CSV beside the images is no failure of the run
            result.status, result.error = "skipped", f"not an image (suffix {path.suffix!r})"
            return result, None, None
        out_in_input = _inside(out, paths.input_root)
        for t in (target, overlay):
            if t is not None and _inside(t.resolve(), paths.input_root) and not out_in_input:
                result.status, result.error = "failed", f"the output {t} would be inside the input folder"
                return result, None, None
        first = targets.get(target, result.file)
        if first != result.file:
            result.status, result.error = "failed", f"its output {target.name} is also the output of {first}"
            return result, None, None
        result.output = str(target)
        if not overwrite and target.exists() and (overlay is None or overlay.exists()):
            result.status = "skipped"
            return result, None, None
        return result, target, overlay

    def groups() -> Iterator[list[Path]]:
        chunk: list[Path] = []
        for path in mine():
            chunk.append(path)
            if len(chunk) == group:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="wavegms-read")
    done = 0
    completed = False
    try:
        pending: list[tuple[FileResult, Path | None, Path | None, Future | None]] = []
        chunks = groups()

        def submit(chunk: list[Path]) -> list:
            planned = []
            for path in chunk:
                result, target, overlay = plan(path)
                fut = pool.submit(_read, path) if target is not None else None
                planned.append((result, target, overlay, fut))
            return planned

        nxt = next(chunks, None)
        pending = submit(nxt) if nxt is not None else []
        while pending:
            nxt = next(chunks, None)
            upcoming = submit(nxt) if nxt is not None else []  # read ahead while this group computes
            todo = []
            for result, target, overlay, fut in pending:
                if fut is None:
                    continue
                image, result.seconds = fut.result()
                if isinstance(image, Exception):
                    result.status, result.error = "failed", str(image)
                else:
                    result.shape = tuple(image.shape)
                    todo.append((result, target, overlay, image))
            start = time.perf_counter()
            masks = segment(todo)
            share = (time.perf_counter() - start) / max(1, len(todo))  # the group's model time, shared
            for (result, target, overlay, image), mask in zip(todo, masks, strict=True):
                start = time.perf_counter()
                try:
                    if isinstance(mask, Exception):
                        raise mask
                    result.confidence, result.review, result.note = mask.score, mask.review, mask.note
                    mask = mask.mask
                    write_mask(target, mask, convention)
                    if overlay is not None:
                        _write_overlay(overlay, image, mask)
                    result.foreground = float(np.count_nonzero(mask)) / mask.size
                except (RuntimeError, ValueError, OSError) as err:  # UnsupportedImageError is a ValueError
                    result.status, result.error = "failed", str(err)
                result.seconds += share + time.perf_counter() - start
            finished = [result for result, *_ in pending]
            results.extend(finished)  # this group's masks are on disk: in the CSV even if cancelled below
            for result in finished:
                done += 1
                yield Progress(done, total, result.file, {**info, "status": result.status, "model": result.model})
            pending = upcoming
        completed = True
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if not completed:  # cancelled or crashed: masks already on disk from earlier runs get their rows too
            results.extend(_unreached_masks(mine(), paths.input_root, {r.file for r in results}, mask_path))
        if results or total == 0:
            write_summary(csv_path, results)
    return summary
