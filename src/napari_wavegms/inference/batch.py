"""Folder batch processing: every image of a folder (or one file) → a mask file, without babysitting.

Safety rules, in order of importance:
- nothing is ever written into the input folder or over an input: an output folder equal to the input
  folder is refused; an output folder *inside* the input folder is allowed and left out of the scan;
  any single output that would land inside the input tree is refused (that file fails, the run goes on);
- every output (masks, overlays, the summary CSV) is written atomically (temporary file, then rename),
  so a cancelled or crashed run never leaves half a file that a rerun would take as done;
- existing outputs are skipped unless ``overwrite``: a rerun finishes what is missing, and its CSV lists
  the skipped masks with what the earlier run's CSV said of them (model, confidence, review, note);
- a file that cannot be read or segmented (an empty file, a link loop, a stack asked for as PNG) fails
  with its reason and the run continues; every file's outcome goes into a summary CSV
  (``file,status,error,shape,foreground_fraction,seconds``, …) named with the run's time stamp. Its name
  is reserved when the run starts (two runs never share one); it is written at the end, and on cancel
  or crash for the files done so far;
- an output folder that cannot be written is refused before anything is loaded; temporary files that
  a killed run left there are removed by the next run (:func:`remove_stale_parts`);
- every mask gets the model's ``confidence`` in it and ``review`` = yes when it is low
  (:data:`napari_wavegms.inference.segmenter.REVIEW_BELOW`), so a person looks at the doubtful ones first; a
  blank image (no intensity variation) gets an empty mask and a ``note`` saying so;
- a model with a presence gate (the ultrasound model) answers ``lesion`` = yes, no or unsure
  (:mod:`napari_wavegms.inference.presence`): "no" is an empty mask that needs no review ("no lesion
  found"), "unsure" a kept mask flagged for review (the scan may be healthy); ``""`` without a gate.

Files are found lazily (one directory listing at a time, in sorted order; folder links that lead back
into the scan are reported, not followed) and read a few ahead in threads, so a folder of any size works
in bounded memory. Images are segmented and written one at a time, so progress, ``seconds`` and a cancel
are per image. A multi-page TIFF is a stack: each page is segmented into a TIFF stack mask.

Under ``torchrun`` (``WORLD_SIZE`` and ``RANK`` set) each process takes every ``WORLD_SIZE``-th file of
that sorted order and writes its own CSV part (``…-rank{R}.csv``); no ``torch.distributed`` set-up is
needed.
"""

from __future__ import annotations

import csv
import fnmatch
import os
import re
import tempfile
import time
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_wavegms.core.atomic import atomic_path
from napari_wavegms.core.dist import placement
from napari_wavegms.core.io import (
    IMAGE_SUFFIXES,
    MASK_FORMATS,
    ImageReadError,
    is_image_file,
    read_image_or_stack,
    write_mask,
)
from napari_wavegms.core.progress import Progress, run_to_end

CSV_COLUMNS = (
    "file", "status", "error", "shape", "foreground_fraction", "seconds", "model", "model_choice", "kind",
    "confidence", "review", "lesion", "note",
)
CONVENTIONS = ("0/255", "0/1", "labels")
OVERLAY_DIR = "overlays"

if TYPE_CHECKING:  # torch is imported only when a run starts, so the widgets can use this module freely
    from napari_wavegms.inference.routing import FolderRouter
    from napari_wavegms.inference.segmenter import Segmentation, Segmenter


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
    kind: str = ""  # what the image looks like: ultrasound, endoscopy, dermoscopy or unknown (routing.UNKNOWN)
    lesion: str = ""  # the presence gate's answer: yes / no ("no lesion found") / unsure; "" without a gate
    doubt: str = ""  # why the kind or model choice should be checked (routing.ModelChoice.doubt); not a column

    def row(self) -> dict[str, str]:
        """The CSV row; every text is valid UTF-8 (a name's undecodable bytes are written as ``\\xff``)."""
        return {
            "file": printable(self.file),
            "status": self.status,
            "error": printable(self.error),
            "shape": "x".join(str(s) for s in self.shape) if self.shape else "",
            "foreground_fraction": "" if self.foreground is None else f"{self.foreground:.6f}",
            "seconds": f"{self.seconds:.3f}",
            "confidence": "" if self.confidence is None else f"{self.confidence:.3f}",
            "review": "" if self.review is None else ("yes" if self.review else "no"),
            "note": printable(self.note),
            "model": printable(self.model),
            "model_choice": printable(self.choice),
            "kind": self.kind,
            "lesion": self.lesion,
        }

    def fill_from(self, row: dict[str, str]) -> None:
        """Take what an earlier run's CSV row says of this file's mask (a mask skipped as existing)."""
        self.model, self.choice, self.note = row.get("model", ""), row.get("model_choice", ""), row.get("note", "")
        self.kind, self.lesion = row.get("kind", ""), row.get("lesion", "")
        self.confidence = _number(row.get("confidence"))
        self.foreground = _number(row.get("foreground_fraction"))
        self.review = {"yes": True, "no": False}.get(row.get("review", ""))
        shape = row.get("shape", "")
        self.shape = tuple(int(n) for n in shape.split("x")) if re.fullmatch(r"\d+(x\d+)*", shape) else None


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def printable(text: str) -> str:
    """``text`` safe to encode as UTF-8: a file name's undecodable bytes (kept by Python as surrogates)
    become ``\\xNN``, so a CSV, a terminal or a Qt label can always show it."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


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
    def masks(self) -> list[FileResult]:
        """Every mask of the run's files in the output folder: written now, or skipped as existing."""
        return [r for r in self.results if r.status in ("done", "skipped") and r.output]

    @property
    def to_review(self) -> list[FileResult]:
        """Masks whose confidence is low (see :attr:`FileResult.review`; for skipped masks, as the earlier
        run's CSV said)."""
        return [r for r in self.masks if r.review]

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
    if single is not None and not is_image_file(single):
        raise BatchUsageError(f"input {src} is not an image file (expected one of {', '.join(IMAGE_SUFFIXES)})")
    root = src.parent if single else src
    if out == root:
        raise BatchUsageError(
            f"the output folder {out} is the input folder: choose another (inputs are never overwritten)"
        )
    if out.exists() and not out.is_dir():
        raise BatchUsageError(f"the output {out} exists and is not a folder")
    _check_writable(out)
    return BatchPaths(root, single, out)


def _check_writable(out: Path) -> None:
    """Refuse an output folder where no file can be made: ``out`` or, when it does not exist yet, its
    first existing ancestor (where it will be made) must take a new file. File modes cannot tell (root
    writes through them; a read-only mount refuses everyone), so a file is made there and removed."""
    folder = out
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise BatchUsageError(f"the output folder {out} cannot be made: {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".wavegms-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise BatchUsageError(f"the output folder {out} cannot be written ({folder}: {err.strerror})") from None


def _matches(rel: str, name: str, pattern: str) -> bool:
    """Case-insensitive glob on the name (or on the relative path when the pattern holds a '/')."""
    target = rel if "/" in pattern else name
    return fnmatch.fnmatch(target.lower(), pattern.lower())


def _is_dir(entry: os.DirEntry) -> bool:
    """Whether the entry is a folder (a link loop is not: it is listed, and fails, as a file)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _real(path: Path) -> Path | None:
    """The folder a path leads to; ``None`` when its links cannot be followed."""
    try:
        return path.resolve(strict=True)
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop, on older Pythons
        return None


def is_folder_loop(path: Path) -> bool:
    """Whether ``path`` is a folder entry that :func:`iter_inputs` listed instead of entering (a loop)."""
    return path.is_dir()


def iter_inputs(paths: BatchPaths, pattern: str = "*", recursive: bool = False) -> Iterator[Path]:
    """Files to process, lazily, in a stable sorted order: one directory listing at a time.

    Hidden files and folders (leading '.') and the output folder (when it lies inside the input
    folder) are left out. Files of any type that match ``pattern`` are returned: the run records
    non-images as failures rather than silently ignoring them. With ``recursive``, a folder link that
    leads back to a folder being scanned (``up -> ..``, two folders linking to each other) is returned
    itself, not entered (:func:`is_folder_loop`): following it would never end.
    """
    if paths.single_file is not None:
        yield paths.single_file
        return

    # The output folder is left out when it lies inside the input folder (not when the input lies
    # inside the output: then everything would be left out).
    out_in_input = _inside(paths.output_dir, paths.input_root)

    def walk(folder: Path, chain: tuple[Path, ...]) -> Iterator[Path]:
        """``chain``: the real folders from the input root down to ``folder``."""
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if _is_dir(entry):
                if not recursive:
                    continue
                real = _real(path)
                if real is not None and out_in_input and _inside(real, paths.output_dir):
                    continue
                if real is None or any(_inside(seen, real) for seen in chain):
                    yield path  # leads back into the scan: one row, not an endless walk
                else:
                    subdirs.append((path, real))
                continue
            rel = path.relative_to(paths.input_root).as_posix()
            if _matches(rel, entry.name, pattern):
                yield path
        for sub, real in subdirs:
            yield from walk(sub, (*chain, real))

    yield from walk(paths.input_root, (paths.input_root,))


class _ModelPerFile:
    """The models of a run where the user chose none: :class:`~napari_wavegms.inference.routing.FolderRouter`
    picks one per file; one :class:`Segmenter` per model, loaded on first use."""

    def __init__(self, **segmenter_options) -> None:
        from napari_wavegms.inference.routing import FolderRouter

        self.router = FolderRouter()
        self.options = segmenter_options
        self.segmenters: dict[str | None, Segmenter] = {}

    def segmenter(self, model: str | None) -> Segmenter:
        if model not in self.segmenters:
            from napari_wavegms.inference.segmenter import Segmenter

            self.segmenters[model] = Segmenter(model, **self.options)
        return self.segmenters[model]


# ---------------------------------------------------------------- outputs
def overlay_image(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RGB uint8 preview: the image (normalised for display), the mask tinted red and outlined in yellow."""
    from skimage.segmentation import find_boundaries

    from napari_wavegms.core.images import image_layout, intensity_scale

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


def _write_overlay(path: Path, image: np.ndarray, mask: np.ndarray, stack: bool = False) -> None:
    """The preview PNG; a stack's pages side by side, left to right."""
    import imageio.v3 as iio

    preview = (np.concatenate([overlay_image(p, m) for p, m in zip(image, mask, strict=True)], axis=1)
               if stack else overlay_image(image, mask))
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, preview, extension=".png")


def write_summary(path: Path, results: list[FileResult]) -> Path:
    """The run's CSV, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for r in results:
            writer.writerow(r.row())
    return path


def _reserve_summary(output_dir: Path, rank: int, world: int) -> Path:
    """A new summary CSV name, made now (empty) so that no other run, started in the same second, can
    take it; :func:`write_summary` replaces it with the rows."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    part = f"-rank{rank}" if world > 1 else ""
    n = 0
    while True:
        path = output_dir / f"wavegms-summary-{stamp}{f'-{n}' if n else ''}{part}.csv"
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return path
        except FileExistsError:
            n += 1


def earlier_rows(output_dir: Path, own: Path | None = None) -> dict[str, dict[str, str]]:
    """What earlier runs' summary CSVs in ``output_dir`` say of each mask they list (file → row, the
    newest CSV's row first); ``own`` (this run's CSV) and unreadable CSVs are left out."""
    def newest_first(path: Path) -> float:
        try:
            return -path.stat().st_mtime
        except OSError:
            return 0.0

    rows: dict[str, dict[str, str]] = {}
    for path in sorted(output_dir.glob("wavegms-summary-*.csv"), key=newest_first):
        if path == own:
            continue
        try:
            with open(path, newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    if row.get("status") in ("done", "skipped") and (row.get("model") or row.get("confidence")):
                        rows.setdefault(row.get("file", ""), row)
        except (OSError, UnicodeDecodeError, csv.Error):
            continue
    return rows


#: A temporary file (:func:`napari_wavegms.core.atomic.atomic_path`) older than this was left by a killed
#: run: writing one mask never takes so long, so no live run is writing it, whether on this machine or
#: another sharing the folder (where a process id would say nothing).
STALE_PART_SECONDS = 3600.0
_PART = re.compile(r"\..+\.[a-z0-9_]{8}\.part(\.[A-Za-z0-9]+)?")


def remove_stale_parts(output_dir: Path, input_root: Path | None = None) -> list[Path]:
    """Remove the temporary files of atomic writes that runs killed mid-write left in ``output_dir``
    (hidden, ``.{stem}.XXXXXXXX.part{suffix}``, older than :data:`STALE_PART_SECONDS`); nothing else,
    and nothing inside ``input_root``. Returns what was removed."""
    removed = []
    now = time.time()
    for folder, dirs, files in os.walk(output_dir):
        here = Path(folder)
        dirs[:] = [d for d in dirs if not d.startswith(".")
                   and not (input_root and _inside((here / d).resolve(), input_root))]
        for name in files:
            path = here / name
            try:
                if _PART.fullmatch(name) and path.is_file() and not path.is_symlink() \
                        and now - path.stat().st_mtime > STALE_PART_SECONDS:
                    path.unlink()
                    removed.append(path)
            except OSError:
                continue
    return removed


# ---------------------------------------------------------------- the run, in small steps
@dataclass
class _Plan:
    """Which files this process takes and where each one's outputs go (no file is read here)."""

    paths: BatchPaths
    pattern: str
    recursive: bool
    fmt: str
    overlays: bool
    overwrite: bool
    rank: int = 0
    world: int = 1
    earlier: dict[str, dict[str, str]] = field(default_factory=dict)  # earlier runs' CSV rows
    targets: dict[Path, str] = field(default_factory=dict)  # mask path → the first input that claims it

    @property
    def out(self) -> Path:
        return self.paths.output_dir

    def mask_path(self, rel: Path) -> Path:
        return (self.out / rel).with_suffix(f".{self.fmt}")

    def files(self) -> Iterator[Path]:
        """This process's share of the files; every image's output is claimed, so that two inputs with
        the same stem (``a.png``, ``a.jpg``) are caught even when different processes get them."""
        for n, path in enumerate(iter_inputs(self.paths, self.pattern, self.recursive)):
            if is_image_file(path):
                self.targets.setdefault(self.mask_path(self._rel(path)), self._rel(path).as_posix())
            if n % self.world == self.rank:
                yield path

    def _rel(self, path: Path) -> Path:
        return path.relative_to(self.paths.input_root)

    def decide(self, path: Path) -> tuple[FileResult, Path | None, Path | None]:
        """A file's result and outputs; a result that is already final (skipped/failed) has no target."""
        rel = self._rel(path)
        result = FileResult(rel.as_posix(), "done")
        target = self.mask_path(rel)
        overlay = (self.out / OVERLAY_DIR / rel).with_suffix(".png") if self.overlays else None
        reason = self._refusal(path, result.file, target, overlay)
        if reason:
            result.status, result.error = reason
            return result, None, None
        result.output = str(target)
        if not self.overwrite and target.exists() and (overlay is None or overlay.exists()):
            result.status = "skipped"
            self.fill_skipped(result)
            return result, None, None
        return result, target, overlay

    def _refusal(self, path: Path, file: str, target: Path, overlay: Path | None) -> tuple[str, str] | None:
        """``(status, reason)`` when a file gets no output, else ``None``."""
        if self.recursive and is_folder_loop(path):
            return "skipped", "a folder link that leads back into the scanned folders (a loop): not followed"
        if not is_image_file(path):  # a README or CSV beside the images is no failure
            return "skipped", f"not an image (suffix {path.suffix!r})"
        out_in_input = _inside(self.out, self.paths.input_root)
        for t in (target, overlay):
            if t is not None and _inside(t.resolve(), self.paths.input_root) and not out_in_input:
                return "failed", f"the output {t} would be inside the input folder"
        first = self.targets.get(target, file)
        if first != file:
            return "failed", f"its output {target.name} is also the output of {first}"
        return None

    def fill_skipped(self, result: FileResult) -> None:
        """A mask skipped as existing gets what the earlier run's CSV said of it."""
        row = self.earlier.get(printable(result.file))
        if row is not None:
            result.fill_from(row)

    def unreached(self, seen: set[str]) -> list[FileResult]:
        """Rows for the files a stopped run did not reach whose mask exists (from an earlier run), so
        that the CSV of a cancelled run still lists every mask in the output folder."""
        rows = []
        for path in self.files():
            rel = self._rel(path)
            target = self.mask_path(rel)
            if rel.as_posix() not in seen and is_image_file(path) and target.exists():
                result = FileResult(rel.as_posix(), "skipped", "not reached (run stopped); its mask exists",
                                    output=str(target))
                self.fill_skipped(result)
                rows.append(result)
        return rows


@dataclass
class _Models:
    """The model(s) of a run: a given one for every file, or per file the one made for its kind."""

    segmenter: Segmenter | None
    picker: _ModelPerFile | None
    name: str  # the given model's name in the CSV ("" when none)
    options: dict  # threshold, label_objects and post-processing, for every file
    skip_unknown: bool = False  # leave out images of no kind the built-in models know, before any model pass
    kinds: FolderRouter | None = None  # judges each image's kind when the run has a given model

    def segment(self, result: FileResult, image: np.ndarray, stack: bool) -> Segmentation | None:
        """One image's (or stack's) mask with its confidence; the model, the image's kind and why go into
        ``result``. ``None``, with no model pass, for an image of an unknown kind when ``skip_unknown``."""
        segmenter = self._choose(result, image[0] if stack else image)
        if segmenter is None:
            return None
        try:
            if stack:  # each page, with one intensity scale for the stack (Segmenter.segment)
                return run_to_end(segmenter.segment(image, rgb=image.ndim == 4, with_confidence=True,
                                                    **self.options))
            (found,) = segmenter.segment_many([image], with_confidence=True, **self.options)
        except Exception as err:  # out of memory, say: this image fails, the run goes on
            raise RuntimeError(f"segmentation failed ({type(err).__name__}: {err})") from err
        if isinstance(found, Exception):
            raise found
        return found

    def _choose(self, result: FileResult, image: np.ndarray) -> Segmenter | None:
        """The image's kind (judged in every run: the CSV's ``kind`` and its doubts) and its model; ``None``
        for an image left out as unknown. A given model is used whatever the kind; only an unknown kind
        is then a doubt, since no automatic choice was made."""
        from napari_wavegms.inference.routing import FolderRouter

        if self.picker is None:
            self.kinds = self.kinds or FolderRouter()
            choice = self.kinds.choose(image)
            result.model = self.name
            result.doubt = choice.doubt if choice.unknown else ""
            if choice.unknown:
                result.note = f"{choice.message}; segmented with the chosen model"
        else:
            choice = self.picker.router.choose(image)
            result.model = choice.model or ""
            result.choice = choice.note
            result.doubt = choice.doubt
        result.kind = choice.kind
        if choice.unknown and self.skip_unknown:
            result.model = ""
            return None
        return self.segmenter if self.picker is None else self.picker.segmenter(choice.model)


def _read(path: Path) -> tuple[tuple[np.ndarray, bool] | Exception, float]:
    """The image and whether it is a stack (or the reason it cannot be read), and the seconds reading
    took (runs in a thread)."""
    start = time.perf_counter()
    try:
        image: tuple[np.ndarray, bool] | Exception = read_image_or_stack(path)
    except ImageReadError as err:
        image = err
    return image, time.perf_counter() - start


def _segment_and_write(result: FileResult, target: Path, overlay: Path | None, read: Future,
                       models: _Models, convention: str) -> None:
    """One file from its read to its mask on disk; ``result`` says how it went and took how long."""
    image, result.seconds = read.result()
    if isinstance(image, Exception):
        result.status, result.error = "failed", str(image)
        return
    image, stack = image
    result.shape = tuple(image.shape)
    if stack and target.suffix == ".png":
        result.status, result.error = "failed", f"a stack of {len(image)} pages: use --format tif"
        return
    start = time.perf_counter()
    try:
        found = models.segment(result, image, stack)
        if found is None:  # an unknown kind of image, left out before any model pass: no mask
            result.status, result.output, result.review = "skipped", None, True
            result.error = "not a kind of image the built-in models know: left out (skip unknown)"
            return
        result.confidence, result.note = found.score, "; ".join(n for n in (found.note, result.note) if n)
        result.review, result.lesion = bool(found.review or result.doubt), found.lesion_answer
        write_mask(target, found.mask, convention)
        if overlay is not None:
            _write_overlay(overlay, image, found.mask, stack)
        result.foreground = float(np.count_nonzero(found.mask)) / found.mask.size
    except (RuntimeError, ValueError, OSError) as err:  # UnsupportedImageError is a ValueError
        result.status, result.error = "failed", str(err)
    finally:
        result.seconds += time.perf_counter() - start


def _run(plan: _Plan, models: _Models, convention: str, ahead: int) -> Generator[FileResult, None, None]:
    """Each file's final result as soon as its mask is on disk, in order; up to ``ahead`` files are
    read in threads while the current one is segmented."""
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="wavegms-read")
    files = plan.files()
    pending: deque[tuple[FileResult, Path | None, Path | None, Future | None]] = deque()
    try:
        while True:
            while len(pending) < ahead and (path := next(files, None)) is not None:
                result, target, overlay = plan.decide(path)
                pending.append((result, target, overlay, pool.submit(_read, path) if target else None))
            if not pending:
                return
            result, target, overlay, read = pending.popleft()
            if read is not None:
                _segment_and_write(result, target, overlay, read, models, convention)
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _engine(model: str | os.PathLike | None, segmenter: Segmenter | None, device: str, batch_size: int | None,
            segmenter_options: dict | None) -> tuple[Segmenter | None, _ModelPerFile | None, str, int]:
    """The run's segmenter (or per-file picker), its device's name and how many files to read ahead."""
    options = {"device": device, **(segmenter_options or {}), **({"batch_size": batch_size} if batch_size else {})}
    picker = _ModelPerFile(**options) if segmenter is None and model is None else None
    if segmenter is None and picker is None:
        from napari_wavegms.inference.segmenter import Segmenter

        segmenter = Segmenter(model, **options)
    if segmenter is not None:
        return segmenter, picker, segmenter.device_name, max(1, batch_size or segmenter.batch_size)
    from napari_wavegms.core.device import describe, resolve_device

    return None, picker, describe(resolve_device(device)), max(1, options.get("batch_size", 8))


def _open_output(plan: _Plan) -> Path:
    """Ready the output folder before any file is read: made, cleared of the temporary files a killed
    run left, this run's CSV name reserved (two runs never share one) and the earlier runs' rows read
    (a mask skipped as existing keeps what they said of it). Returns the CSV's path."""
    out = plan.out
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(out, plan.paths.input_root)
    csv_path = _reserve_summary(out, plan.rank, plan.world)
    plan.earlier = earlier_rows(out, csv_path)
    return csv_path


def _events(plan: _Plan, models: _Models, convention: str, ahead: int, judge: FolderRouter | None,
            summary: BatchSummary) -> Generator[Progress, None, None]:
    """The run's progress: the file count (with ``summary``, so a caller that cancels still has it), the
    folder's kinds judged by ``judge`` (``None``: each image alone), then one event per file. Each file
    joins ``summary.results`` once its mask is on disk, before its event: a cancel keeps it in the CSV."""
    info, results = summary.info, summary.results
    total = sum(1 for _ in plan.files())
    yield Progress(0, total, f"{total} files on {info['device']}", {**info, "summary": summary})
    if judge is not None:
        yield from judge.judge_folder((p for p in plan.files() if is_image_file(p)), total)
    for result in _run(plan, models, convention, ahead):
        results.append(result)
        yield Progress(len(results), total, printable(result.file),
                       {**info, "status": result.status, "model": result.model})


def segment_folder(
    input_dir: str | os.PathLike, output_dir: str | os.PathLike, *, model: str | os.PathLike | None = None,
    pattern: str = "*", recursive: bool = False, fmt: str = "png", convention: str = "0/255",
    overwrite: bool = False, overlays: bool = False, threshold: float = 0.5, device: str = "auto",
    segmenter: Segmenter | None = None, min_size: int | None = None, batch_size: int | None = None,
    segmenter_options: dict | None = None, fill_holes: bool | None = None, keep_largest: bool | None = None,
    kind_per_image: bool = False, skip_unknown: bool = False,
) -> Generator[Progress, None, BatchSummary]:
    """Segment every file of ``input_dir`` matching ``pattern`` into ``output_dir`` (module docstring).

    ``input_dir`` may also be a single image file. Masks keep the input's relative path and stem
    (``a/b.jpg`` → ``output/a/b.png``); overlay previews go to ``output/overlays/``. ``convention``
    ``labels`` numbers connected objects. A multi-page TIFF gets a stack mask (``fmt="tif"``; as PNG it
    fails with the reason). Without ``model`` (or ``segmenter``) each image is segmented by
    the built-in model made for its kind (:class:`~napari_wavegms.inference.routing.FolderRouter`; the CSV's
    ``model`` and ``model_choice`` say which and why). The kinds of up to
    :data:`~napari_wavegms.inference.routing.FOLDER_SAMPLE` of the folder's images are judged first,
    so that an image the classifier finds ambiguous is judged as an image of its folder
    (:func:`napari_wavegms.inference.modality.folder_prior`); ``kind_per_image`` judges every image alone.
    Every image's kind goes into the CSV's ``kind`` column, ``unknown`` for one of no kind the built-in
    models know (:mod:`napari_wavegms.inference.unknown_kind`), and a doubt about the kind or the model
    choice (:func:`napari_wavegms.inference.routing.doubts`) sets ``review``; ``skip_unknown`` leaves the
    unknown images out (``skipped``, no mask) before any model pass.
    A given ``model`` or ``segmenter`` is used for every file (with a ``segmenter``,
    ``model`` only names it in the CSV). ``segmenter_options`` go to every :class:`Segmenter` made
    here (``precision=``, say). Post-processing (``min_size`` in pixels, ``fill_holes``, ``keep_largest``):
    ``None`` takes each model's card default (:meth:`Segmenter.segment`). ``batch_size``: files read
    ahead (and a stack's slices per model call); images are segmented one at a time. Yields
    ``Progress(done_files, total_files, message=file)`` after each file; returns a :class:`BatchSummary`.
    Usage errors raise :class:`BatchUsageError` at the first ``next``.
    """
    paths = check_paths(input_dir, output_dir, fmt, convention)
    segmenter, picker, device_name, ahead = _engine(model, segmenter, device, batch_size, segmenter_options)
    where = placement()
    plan = _Plan(paths, pattern, recursive, fmt, overlays, overwrite, where.rank, where.world)
    models = _Models(segmenter, picker, "" if model is None else str(model), {
        "threshold": threshold, "label_objects": convention == "labels", "min_size": min_size,
        "fill_holes": fill_holes, "keep_largest": keep_largest}, skip_unknown)
    csv_path = _open_output(plan)
    # The summary fills as files finish; a caller that cancels (close()) gets no return value, so the
    # first event hands it over: after a cancel it holds every file done, as the CSV does.
    summary = BatchSummary([], csv_path, paths.output_dir,
                           {"device": device_name, "rank": plan.rank, "world_size": plan.world})
    completed = False
    try:  # from here on, a cancel or a crash (even while the folder is judged) still writes the CSV
        judge = None if kind_per_image or picker is None else picker.router
        yield from _events(plan, models, convention, ahead, judge, summary)
        completed = True
    finally:
        if not completed:  # cancelled or crashed: masks already on disk from earlier runs get their rows too
            summary.results.extend(plan.unreached({r.file for r in summary.results}))
        write_summary(csv_path, summary.results)
    return summary
