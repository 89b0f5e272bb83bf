"""Paired folders of images and masks: finding the pairs, checking them, splitting them, loading them.

A data set is a folder with ``images/`` and ``masks/`` whose files are matched by stem
(``benign_1.png`` ↔ ``benign_1.png``, ``case.jpg`` ↔ ``case.png``). Images may be PNG, JPEG, TIFF or
BMP, 8- or 16-bit (or float), gray, RGB or RGBA; masks 0/255, 0/1 or any nonzero value for foreground.

Every problem is collected and reported by file name rather than raised on the first one, so a user
fixes a folder in one go: unmatched files, files that cannot be read, masks whose size differs from
their image, masks that are not binary. Pairs with a problem that makes them unusable are left out;
only zero usable pairs stops training (:class:`DataError`).

Images go through exactly the preprocessing inference uses (:func:`preprocess.normalize_intensity`,
:func:`preprocess.to_rgb`, :func:`preprocess.resize_image`), masks are resized nearest. Small data sets
(the usual case: hundreds of images) are decoded and resized once and kept in memory, which makes
an epoch on a CPU cost only the model's time.
"""

from __future__ import annotations

import os
import random
from collections.abc import Generator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from napari_wavegms.core.images import (
    UnsupportedImageError,
    channel_axis_kind,
    normalize_intensity,
    resize_image,
    resize_mask,
    to_rgb,
)
from napari_wavegms.core.io import IMAGE_SUFFIXES, ImageReadError, mask_from_array, read_image
from napari_wavegms.core.progress import run_to_end

if TYPE_CHECKING:  # the config holds the data folder and the split lists; the trainer imports this module
    from napari_wavegms.training.loop import TrainConfig


class DataError(ValueError):
    """A data set that cannot be used (no pairs, a missing folder or split file), with the reason."""


@dataclass(frozen=True)
class Pair:
    """One image and its mask, matched by ``name`` (the common file stem)."""

    name: str
    image: Path
    mask: Path


@dataclass
class PairScan:
    """The pairs found in a folder and everything wrong with it, by file name.

    ``problems`` make a file unusable or unmatched (it is left out of ``pairs``); ``notes`` describe
    inputs that are used but converted (a 16-bit image min–max scaled, an RGBA mask's alpha ignored).
    """

    pairs: list[Pair]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.pairs]


def _image_files(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """Image files of ``folder`` by stem, and problems (duplicate stems such as ``a.png`` + ``a.jpg``)."""
    by_stem: dict[str, Path] = {}
    problems = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.stem in by_stem:
            problems.append(
                f"{path}: same name as {by_stem[path.stem].name}; using {by_stem[path.stem].name}"
            )
            continue
        by_stem[path.stem] = path
    return by_stem, problems


def scan_pairs(
    images_dir: str | os.PathLike,
    masks_dir: str | os.PathLike,
    *,
    check: bool = False,
    names: Iterable[str] | None = None,
) -> PairScan:
    """Match ``images_dir`` and ``masks_dir`` by file stem.

    Fast by default (directory listings only: the Train widget calls it on every keystroke);
    ``check=True`` also decodes every pair and reports unreadable files, size mismatches and
    non-binary masks, leaving unusable pairs out. ``names`` restricts the scan to those stems
    (a split) and reports the ones that have no pair.
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    problems: list[str] = []
    for folder, what in ((images_dir, "images"), (masks_dir, "masks")):
        if not folder.is_dir():
            problems.append(f"{folder}: the {what} folder does not exist")
    if problems:
        return PairScan([], problems)
    images, dup_i = _image_files(images_dir)
    masks, dup_m = _image_files(masks_dir)
    problems += dup_i + dup_m
    wanted = None if names is None else list(dict.fromkeys(names))
    if wanted is None:
        problems += [f"{images[s]}: no mask with this name in {masks_dir}" for s in images if s not in masks]
        problems += [f"{masks[s]}: no image with this name in {images_dir}" for s in masks if s not in images]
        stems = [s for s in images if s in masks]
    else:
        stems = []
        for s in wanted:
            if s in images and s in masks:
                stems.append(s)
            else:
                missing = " and ".join(w for w, d in (("image", images), ("mask", masks)) if s not in d)
                problems.append(f"{s}: listed in the split but its {missing} is missing")
    if not images and not masks and wanted is None:
        problems.append(f"{images_dir} and {masks_dir} hold no image files ({', '.join(IMAGE_SUFFIXES)})")
    scan = PairScan([Pair(s, images[s], masks[s]) for s in stems], problems)
    if check:
        good = []
        for pair in scan.pairs:
            try:
                _, _, notes = load_pair(pair)
            except DataError as err:
                scan.problems.append(str(err))
                continue
            scan.notes += notes
            good.append(pair)
        scan.pairs = good
    return scan


# ---------------------------------------------------------------- decoding one pair
def decode_image(array: np.ndarray, source: str = "") -> tuple[np.ndarray, list[str]]:
    """Raw image array → float32 H×W×3 in [0, 1] by the inference rule, plus notes on conversions."""
    notes = []
    try:
        kind = channel_axis_kind(array.shape) if array.ndim == 3 else "gray"
        if array.dtype not in (np.uint8, np.bool_):
            notes.append(f"{source}: {array.dtype} image, scaled to [0, 1] by the preprocessing rule")
        if kind == "rgba":
            notes.append(f"{source}: RGBA image, alpha channel ignored")
        return to_rgb(normalize_intensity(array), kind), notes
    except UnsupportedImageError as err:
        raise DataError(f"{source}: {err}") from err


def load_pair(pair: Pair, as_stored: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode a pair at native size: (H×W×3 float image in [0, 1], H×W bool mask, notes).

    Raises :class:`DataError` naming the file for an unreadable file or a mask of another size.
    A mask with more than two values is used (foreground = nonzero) and noted. ``as_stored`` returns
    the image array as its file holds it (what a user opens) instead, checked the same way: scoring
    the masks a user gets reads each file once.
    """
    try:
        raw = read_image(pair.image)
    except ImageReadError as err:
        raise DataError(f"unreadable image {err}") from err
    try:
        raw_mask = read_image(pair.mask)
    except ImageReadError as err:
        raise DataError(f"unreadable mask {err}") from err
    image, notes = decode_image(raw, str(pair.image))
    if raw_mask.shape[:2] != raw.shape[:2]:
        raise DataError(
            f"{pair.mask}: mask is {raw_mask.shape[1]}×{raw_mask.shape[0]} pixels but its image "
            f"{pair.image.name} is {raw.shape[1]}×{raw.shape[0]}"
        )
    mask, binary = mask_from_array(raw_mask)
    if as_stored:
        image = raw
    if raw_mask.ndim == 3 and raw_mask.shape[-1] == 4:
        notes.append(f"{pair.mask}: RGBA mask, alpha ignored (foreground = nonzero colour)")
    if not binary:
        notes.append(
            f"{pair.mask}: mask is not binary ({len(np.unique(raw_mask))} distinct values); "
            "every nonzero pixel is taken as foreground"
        )
    return image, mask, notes


def pair_tensors(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Native arrays → (3×S×S float image, 1×S×S float mask): bilinear antialiased / nearest."""
    x = resize_image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None], size)[0]
    m = resize_mask(torch.from_numpy(mask)[None, None].float(), size)[0]
    return x.clamp_(0, 1), m


# ---------------------------------------------------------------- splits
def read_split(path: str | os.PathLike) -> list[str]:
    """Stems listed in a split file: one per line; blank lines and ``#`` comments skipped; a file
    suffix (``benign_1.png``) is dropped so lists of file names work too."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: split file not found")
    names = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(
                line[: -len(Path(line).suffix)] if Path(line).suffix.lower() in IMAGE_SUFFIXES else line
            )
    return names


def resolve_split(split: str | os.PathLike, data_dir: str | os.PathLike) -> Path:
    """A split path as given if it exists, else relative to the data folder (``splits/gms_test.txt``)."""
    path = Path(split).expanduser()
    if path.is_absolute() or path.is_file():
        return path
    return Path(data_dir) / path


def carve(names: Sequence[str], fraction: float, seed: int,
          groups: Sequence[int] | None = None) -> tuple[list[str], list[str]]:
    """Split ``names`` into (kept, carved) with a seeded shuffle; at least one carved and one kept
    when there are two or more names. The order of each part follows ``names``.

    With ``groups`` (one label per name, e.g. :func:`same_examination_groups`) whole groups are carved,
    in a seeded random order, until at least ``fraction`` of the names are: frames of one examination
    never end up on both sides, where a model would be checked on near-copies of what it learned from.
    Where no two names share a group the split is the same as without ``groups``.
    """
    if len(names) < 2 or fraction <= 0:
        return list(names), []
    n = min(len(names) - 1, max(1, round(fraction * len(names))))
    if groups is None or len(set(np.asarray(groups).tolist())) == len(names):  # no two images alike
        chosen = set(random.Random(seed).sample(range(len(names)), n))
    else:
        members: dict[int, list[int]] = {}
        for i, g in enumerate(groups):
            members.setdefault(int(g), []).append(i)
        order = sorted(members)
        random.Random(seed).shuffle(order)
        chosen = set()
        for g in order[:-1]:  # the last group is always kept
            if len(chosen) >= n:
                break
            chosen.update(members[g])
    return [s for i, s in enumerate(names) if i not in chosen], [
        s for i, s in enumerate(names) if i in chosen
    ]


#: Two images whose thumbnails (:func:`thumbnail`) correlate above this are taken for frames of one
#: examination (or one picture saved twice). BUSI, which has no patient IDs, holds many such pairs
#: (``normal_97`` and ``normal_98``: 0.998), while different patients' scans stay well below it.
SAME_EXAMINATION = 0.9


def thumbnail(path: str | os.PathLike) -> np.ndarray:
    """An image as a 64 × 64 grey vector of zero mean and unit length, so that two of them correlate
    by a dot product. Cheap next to training: one decode and a resize."""
    from PIL import Image

    image = np.asarray(read_image(path), np.float32)
    if image.ndim == 3:
        image = image[..., :3].mean(-1) if image.shape[-1] in (3, 4) else image[0]
    small = np.array(Image.fromarray(image).resize((64, 64), Image.BILINEAR), np.float32).ravel()
    small -= small.mean()
    return small / (np.linalg.norm(small) + 1e-6)


def _thumbnail_or_alone(path: str | os.PathLike) -> np.ndarray:
    """:func:`thumbnail`, or zeros (a group of its own) for an image that cannot be read: the loader
    reports it with the other problems, the split goes on."""
    try:
        return thumbnail(path)
    except (ImageReadError, OSError, ValueError):
        return np.zeros(64 * 64, np.float32)


def same_examination_groups(thumbs: np.ndarray, cut: float = SAME_EXAMINATION) -> np.ndarray:
    """Each image's group from its :func:`thumbnail`: images correlating above ``cut``, and the images
    linked to them, are one group."""
    from scipy.sparse.csgraph import connected_components

    if len(thumbs) == 0:
        return np.zeros(0, int)
    return connected_components(np.asarray(thumbs) @ np.asarray(thumbs).T > cut, directed=False)[1]


# ---------------------------------------------------------------- in-memory data set
class PairDataset(torch.utils.data.Dataset):
    """Pairs resized to ``size``: items are ``(image 3×S×S, mask 1×S×S, index)`` float tensors.

    With ``preload`` the pairs are decoded once (in threads) and kept as float16 images and bool
    masks: 224² costs 0.35 MB a pair, so a thousand pairs fit easily; ``max_bytes`` bounds it, and
    beyond it pairs are decoded on demand (use DataLoader workers then). Pairs that fail to decode
    are left out and listed in ``problems``. :meth:`loading` does the same while yielding progress.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        size: int,
        *,
        preload: bool = True,
        max_bytes: int = 4 << 30,
        threads: int = 4,
    ) -> None:
        run_to_end(self._load(pairs, size, preload, max_bytes, threads))

    @classmethod
    def loading(
        cls,
        pairs: Sequence[Pair],
        size: int,
        *,
        preload: bool = True,
        max_bytes: int = 4 << 30,
        threads: int = 4,
    ) -> Generator[tuple[int, int], None, PairDataset]:
        """Build the data set, yielding ``(pairs decoded, pairs)`` as it goes."""
        self = cls.__new__(cls)
        yield from self._load(pairs, size, preload, max_bytes, threads)
        return self

    def _load(
        self, pairs: Sequence[Pair], size: int, preload: bool, max_bytes: int, threads: int
    ) -> Generator[tuple[int, int], None, None]:
        self.size = size
        self.problems: list[str] = []
        self.notes: list[str] = []
        per_pair = size * size * (3 * 2 + 1)
        self.preloaded = preload and per_pair * len(pairs) <= max_bytes
        self.pairs = list(pairs)
        self.images = self.masks = None
        if not self.preloaded:
            return

        def work(pair: Pair):
            try:
                image, mask, notes = load_pair(pair)
            except DataError as err:
                return pair, None, None, [str(err)]
            x, m = pair_tensors(image, mask, size)
            return pair, x.half(), m.bool(), notes

        kept, images, masks = [], [], []
        with ThreadPoolExecutor(max(1, threads)) as pool:
            for i, (pair, x, m, notes) in enumerate(pool.map(work, pairs)):
                if x is None:
                    self.problems += notes
                else:
                    self.notes += notes
                    kept.append(pair)
                    images.append(x)
                    masks.append(m)
                if (i + 1) % 16 == 0 or i + 1 == len(pairs):
                    yield i + 1, len(pairs)
        self.pairs = kept
        self.images = torch.stack(images) if images else torch.zeros(0, 3, size, size, dtype=torch.half)
        self.masks = torch.stack(masks) if masks else torch.zeros(0, 1, size, size, dtype=torch.bool)

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.pairs]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        if self.preloaded:
            return self.images[index].float(), self.masks[index].float(), index
        image, mask, _ = load_pair(self.pairs[index])
        x, m = pair_tensors(image, mask, self.size)
        return x, m, index

    def to(self, device: torch.device) -> PairDataset:
        """Move preloaded tensors to ``device`` (a GPU holds a few hundred pairs at 224² in ~0.2 GB)."""
        if self.preloaded:
            self.images, self.masks = self.images.to(device), self.masks.to(device)
        return self

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and masks at ``indices`` as float tensors (B×3×S×S, B×1×S×S), without a DataLoader."""
        if not self.preloaded:
            items = [self[i] for i in indices]
            return torch.stack([it[0] for it in items]), torch.stack([it[1] for it in items])
        idx = torch.as_tensor(list(indices), dtype=torch.long, device=self.images.device)
        return self.images[idx].float(), self.masks[idx].float()


# ---------------------------------------------------------------- splits
@dataclass
class Splits:
    """The pairs of each split and what went wrong finding them."""

    train: list[Pair]
    val: list[Pair]
    test: list[Pair]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    how: dict[str, str] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _carve_pairs(train: list[Pair], fraction: float, seed: int,
                 by_examination: bool = False) -> tuple[list[Pair], list[Pair]]:
    """(kept, carved) by :func:`carve` over the distinct names, so a name repeated for oversampling
    lands wholly on one side (never in training and validation at once); ``by_examination`` keeps
    images that look alike together too (:func:`same_examination_groups`)."""
    names = list(dict.fromkeys(p.name for p in train))
    first = {p.name: p for p in train}
    groups = None
    if by_examination and len(names) > 1 and fraction > 0:
        groups = same_examination_groups(np.stack([_thumbnail_or_alone(first[n].image) for n in names]))
    _, carved = carve(names, fraction, seed, groups)
    held = set(carved)
    return [p for p in train if p.name not in held], [first[n] for n in carved]


def make_splits(config: TrainConfig) -> Splits:
    """Pair the data folder and split it as ``config`` says; raises :class:`DataError` for zero
    training pairs. Other problems are collected, not raised."""
    if not config.data_dir:
        raise DataError("no data folder given (data_dir / --data)")
    data_dir = Path(config.data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data folder not found")
    scan = scan_pairs(data_dir / config.images, data_dir / config.masks)
    by_name = {p.name: p for p in scan.pairs}
    splits = Splits([], [], [], list(scan.problems))
    if config.test_split:
        splits.test = _listed(config.test_split, "test", data_dir, by_name, splits)
    if config.val_split:
        splits.val = _listed(config.val_split, "val", data_dir, by_name, splits)
    if config.train_split:
        splits.train = _listed(config.train_split, "train", data_dir, by_name, splits)
    else:
        held = {p.name for p in splits.test + splits.val}
        splits.train = [p for p in scan.pairs if p.name not in held]
        splits.how["train"] = "all pairs not in the other splits"
    _drop_held_out(splits)
    _carve_missing(splits, config)
    if not splits.train:
        detail = "; ".join(splits.problems[:5]) or "no pairs left for training after the validation/test splits"
        raise DataError(f"no image/mask pairs to train on in {data_dir} ({detail})")
    return splits


def _listed(split: str, what: str, data_dir: Path, by_name: dict[str, Pair], splits: Splits) -> list[Pair]:
    """The pairs a split file names; the file goes to ``splits.how``, names without a pair to its problems.

    A name listed k times for training is trained on k times per epoch (oversampling); the other splits
    score each name once."""
    path = resolve_split(split, data_dir)
    names = read_split(path)
    missing = [n for n in names if n not in by_name]
    if missing:
        splits.problems.append(
            f"{path}: {len(missing)} of {len(names)} {what} names have no image/mask pair "
            f"(e.g. {', '.join(missing[:5])})"
        )
    splits.how[what] = str(path)
    if what == "train":
        repeated = len(names) - len(set(names))
        if repeated:
            splits.notes.append(f"{path}: {repeated} repeated training names, each seen as often as listed")
        return [by_name[n] for n in names if n in by_name]
    return [by_name[n] for n in dict.fromkeys(names) if n in by_name]


def _drop_held_out(splits: Splits) -> None:
    """Training names that are also validation or test names leave training (a problem says so)."""
    held_out = {p.name for p in splits.test} | {p.name for p in splits.val}
    overlap = [p.name for p in splits.train if p.name in held_out]
    if overlap:
        splits.problems.append(
            f"{len(overlap)} training names are also in the validation or test split and are left "
            f"out of training (e.g. {', '.join(overlap[:5])})"
        )
        splits.train = [p for p in splits.train if p.name not in held_out]


def _carve_missing(splits: Splits, config: TrainConfig) -> None:
    """A test split carved from training when asked and none is listed; validation from ``val_dir`` or,
    when no list names it, carved from training."""
    if not splits.test and config.test_fraction > 0:
        splits.train, splits.test = _carve_pairs(splits.train, config.test_fraction, config.seed + 1)
        splits.how["test"] = f"{config.test_fraction:g} of the training pairs (seed {config.seed + 1})"
    if config.val_dir:
        vdir = Path(config.val_dir)
        vscan = scan_pairs(vdir / config.images, vdir / config.masks)
        splits.problems += vscan.problems
        splits.val = vscan.pairs
        splits.how["val"] = str(vdir)
    elif not config.val_split:
        splits.train, splits.val = _carve_pairs(splits.train, config.val_fraction, config.seed,
                                                config.val_by_examination)
        if not splits.val:
            splits.notes.append(
                f"{len(splits.train)} training pair(s): no validation split; the best model is the last one"
            )
        splits.how["val"] = (f"{config.val_fraction:g} of the training pairs (seed {config.seed}"
                             + ("; frames of one examination kept together)" if config.val_by_examination else ")"))
