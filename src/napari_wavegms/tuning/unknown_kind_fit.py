"""Fit the open-set check of :mod:`napari_wavegms.inference.unknown_kind` and measure it on what it never saw.

    python -m napari_wavegms.tuning.unknown_kind_fit [--cache DIR] [--negatives DIR] [--write]

Known images: the training splits of :mod:`napari_wavegms.tuning.modality_fit` (BUSI ``gms_train`` +
``normal_train``, BUS-BRA folds 1-4, Kvasir-SEG ``medico2020_train``, ISIC-2017 ``train``), evenly thinned
(:data:`PER_SET`), each as it is and as one copy augmented the way other devices' images differ
(``modality_fit.AUGMENT``). Only these are fitted on: the reference rows of each kind, the robust
scaling and each kind's threshold, chosen out of fold (each fold of training images is measured against
a reference of the other folds; an image and its copy share a fold) as the :data:`QUANTILE` of its
images' distances. The pool of other kinds (``--negatives DIR``'s ``dev/`` and ``generic/`` parts) is
shipped as it is, as the second neighbour set of
:func:`napari_wavegms.inference.unknown_kind.other_likeness`, whose threshold is again set on
out-of-fold training images only (:data:`OTHER_QUANTILE`); what the pool adds is estimated by leaving
each of its sources out in turn (pool, threshold and all refitted without it).

Reported once, on what the fit never saw: the held-out splits (BUSI ``gms_test`` + ``normal_test``,
BUS-BRA fold 5, Kvasir-SEG ``medico2020_val``, ISIC-2017 ``val``; as stored and one augmented copy) and
the images of other kinds that ``training/scripts/negatives.py`` makes (``--negatives DIR`` holding
``dev/``, ``generic/`` and ``test/``; only ``dev`` and ``generic`` may be looked at to choose settings,
``test`` is for the table).
Each image's TAEF2 latent and kind features are kept in ``--cache`` (a few minutes to fill on one
thread), so refits take seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from napari_wavegms.inference.modality import FEATURES, KINDS, classify_features
from napari_wavegms.inference.unknown_kind import (
    LATENT_SIDE,
    PARAMS_PATH,
    descriptor,
    kind_features,
    knn_distance,
    latent_grid,
    other_likeness,
    relative_distances,
)
from napari_wavegms.tuning.modality_fit import AUGMENT, DATA, SETS, names

#: Training images per data set, evenly drawn from its lists (each also counted as one augmented copy).
PER_SET = {"busi": 300, "bus-bra-256": 300, "kvasir-seg": 600, "isic2017-256": 600}
FOLDS = 5
QUANTILE = 0.99  # each kind's threshold: the distance 99 % of its out-of-fold training images stay within
OTHER_QUANTILE = 0.995  # the other-kinds ratio that 99.5 % of out-of-fold training images stay within
POOL = ("dev", "generic")  # the parts of --negatives pooled as pictures of other kinds (never "test")
K = 5  # nearest reference rows averaged
NEGATIVES = Path("runs/negatives")


# ---------------------------------------------------------------- the images' numbers, cached
def _numbers(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The kind features and the TAEF2 latent (float16) of an image, the two things the check reads."""
    return kind_features(image), latent_grid(image).astype(np.float16)


def _save(path: Path, meta: list[str], rows: list[tuple[np.ndarray, np.ndarray]]) -> None:
    feats, grids = zip(*rows, strict=True)
    np.savez(path, feats=np.array(feats, np.float32), meta=np.array(meta), **{f"g{LATENT_SIDE}": np.array(grids)})


def _load(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as stored:
        if f"g{LATENT_SIDE}" not in stored.files:
            return None
        return {"feats": stored["feats"], "grid": stored[f"g{LATENT_SIDE}"].astype(np.float32),
                "meta": stored["meta"]}


def known_images(cache: Path, data: Path, which: int) -> dict[str, np.ndarray]:
    """Training (``which`` 0, thinned) or held-out (1) images of every data set, as stored and one
    augmented copy each; ``meta`` is ``set|kind|name|copy``."""
    path = cache / f"{('train', 'test')[which]}.npz"
    stored = _load(path)
    if stored is not None:
        return stored
    meta, rows = [], []
    for name, kind, suffix, train, test in SETS:
        folder = data / name
        stems = names(folder, (train, test)[which])
        if which == 0:
            stems = stems[:: max(1, len(stems) // PER_SET[name])][: PER_SET[name]]
        rng = np.random.default_rng([7, which, len(name)])
        for stem in stems:
            img = Image.open(folder / "images" / f"{stem}{suffix}")
            img.load()
            for copy, version in enumerate((img, AUGMENT[kind](img, rng))):
                meta.append(f"{name}|{kind}|{stem}|{copy}")
                rows.append(_numbers(np.asarray(version)))
        print(f"{name}: {len(stems)} images", file=sys.stderr, flush=True)
    _save(path, meta, rows)
    return _load(path)  # type: ignore[return-value]


def negative_images(cache: Path, negatives: Path, part: str) -> dict[str, np.ndarray]:
    """The images of other kinds in ``negatives/part`` (PNGs of ``training/scripts/negatives.py``)."""
    path = cache / f"neg-{part}.npz"
    files = sorted((negatives / part).glob("*.png"))
    if not files:
        raise SystemExit(f"no negatives in {negatives / part}: python training/scripts/negatives.py {negatives}")
    # the folder as it is now (names, sizes, times): a part made again is measured again
    seen = hashlib.sha256("".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns};" for p in files).encode())
    stored = _load(path)
    if stored is not None and path.with_suffix(".sha256").is_file() \
            and path.with_suffix(".sha256").read_text() == seen.hexdigest():
        return stored
    _save(path, [f"{part}|{p.stem}" for p in files], [_numbers(np.asarray(Image.open(p))) for p in files])
    path.with_suffix(".sha256").write_text(seen.hexdigest())
    return _load(path)  # type: ignore[return-value]


# ---------------------------------------------------------------- the fit
def labels_and_groups(meta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each known row's kind (index into :data:`KINDS`) and its image (an image and its copy share one)."""
    kind = np.array([KINDS.index(m.split("|")[1]) for m in meta])
    _, group = np.unique([m.rsplit("|", 1)[0] for m in meta], return_inverse=True)
    return kind, group


def robust_scale(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and interquartile range / 1.349 of each column (a standard deviation that outliers do not
    inflate), floored so that a near-constant column cannot dominate."""
    centre = np.median(x, axis=0)
    q1, q3 = np.percentile(x, [25, 75], axis=0)
    return centre.astype(np.float32), np.maximum((q3 - q1) / 1.349, 1e-3).astype(np.float32)


def out_of_fold(z: np.ndarray, kind: np.ndarray, group: np.ndarray, seed: int = 0) -> np.ndarray:
    """N×kinds distances of each training row to each kind's rows of the other folds (:data:`FOLDS`
    folds by image)."""
    fold = np.random.default_rng(seed).integers(0, FOLDS, group.max() + 1)[group]
    oof = np.zeros((len(z), len(KINDS)), np.float32)
    for f in range(FOLDS):
        for c in range(len(KINDS)):
            oof[fold == f, c] = knn_distance(z[fold == f], z[(fold != f) & (kind == c)], K)
    return oof


def fit(described: np.ndarray, kind: np.ndarray, group: np.ndarray, seed: int = 0,
        routed: np.ndarray | None = None, others: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The shipped parameters: scaling, every training row as reference, each kind's threshold chosen
    out of fold (:data:`FOLDS` folds by image, the :data:`QUANTILE` of the kind's own distances); with
    ``others`` (:func:`descriptor` rows of other kinds) and ``routed`` (the kind the classifier names
    for each training row) also the pool and the :data:`OTHER_QUANTILE` of the training rows'
    out-of-fold ratios of :func:`~napari_wavegms.inference.unknown_kind.other_likeness`."""
    centre, scale = robust_scale(described)
    z = (described - centre) / scale
    oof = out_of_fold(z, kind, group, seed)
    own = oof[np.arange(len(z)), kind]
    threshold = np.array([np.quantile(own[kind == c], QUANTILE) for c in range(len(KINDS))], np.float32)
    params = {"kinds": np.array(KINDS), "side": np.array(LATENT_SIDE), "k": np.array(K), "centre": centre,
              "scale": scale, "reference": z.astype(np.float16), "labels": kind.astype(np.int8),
              "threshold": threshold}
    if others is not None and routed is not None:
        pool = ((others - centre) / scale).astype(np.float16)
        ratio = oof[np.arange(len(z)), routed] / np.maximum(knn_distance(z, pool.astype(np.float32), K), 1e-6)
        params |= {"others": pool, "other_threshold": np.array(np.quantile(ratio, OTHER_QUANTILE), np.float32)}
    return params


def classifier_kinds(feats: np.ndarray) -> np.ndarray:
    """The kind the image-kind classifier names for each row of features, judged alone."""
    return np.array([KINDS.index(classify_features(dict(zip(FEATURES, row.tolist(), strict=True))).kind)
                     for row in feats])


def unknown(params: dict[str, np.ndarray], found: dict[str, np.ndarray]) -> np.ndarray:
    """Whether each image of ``found`` is of no known kind under ``params`` (float16 reference as shipped):
    :attr:`napari_wavegms.inference.unknown_kind.KindCheck.known`'s rule on arrays."""
    shipped = {**params, **{name: params[name].astype(np.float32) for name in ("reference", "others")
                            if name in params}}
    described = descriptor(found["grid"])
    distance = relative_distances(described, shipped)
    kind = classifier_kinds(found["feats"])
    return ((distance.argmin(axis=1) != kind) | (distance[np.arange(len(kind)), kind] > 1.0)
            | (other_likeness(described, kind, shipped) > 1.0))


def leave_source_out(train: dict[str, np.ndarray], pool: dict[str, np.ndarray], judged: list[dict[str, np.ndarray]],
                     seed: int = 0) -> list[np.ndarray]:
    """Whether each image of each ``judged`` set is called unknown by a check whose pool lacks every
    image of that image's source (pool and threshold refitted without it): the estimate of what the
    pool does for kinds of pictures it has never seen."""
    kind, group = labels_and_groups(train["meta"])
    described, routed = descriptor(train["grid"]), classifier_kinds(train["feats"])
    others, sources = descriptor(pool["grid"]), np.array([_source(m) for m in pool["meta"]])
    said = [np.zeros(len(found["meta"]), bool) for found in judged]
    judged_sources = [np.array([_source(m) for m in found["meta"]]) for found in judged]
    for name in np.unique(np.concatenate([sources, *judged_sources])):
        params = fit(described, kind, group, seed, routed, others[sources != name])
        for found, src, flags in zip(judged, judged_sources, said, strict=True):
            if (src == name).any():
                flags[src == name] = unknown(params, {key: value[src == name] for key, value in found.items()})
    return said


def _source(meta: str) -> str:
    name = meta.split("|")[1]
    return name.rsplit("-", 1)[0] if name.rsplit("-", 1)[-1].isdigit() else name


def table(params: dict[str, np.ndarray], test: dict, negatives: dict[str, dict],
          left_out: dict[str, np.ndarray] | None = None) -> list[str]:
    """Markdown rows: held-out real images called unknown per data set (as stored / augmented copy), and
    images of other kinds called unknown (each part, and ``left_out``: each pooled part's images judged
    with their source left out of the pool) with the sources of the misses."""
    said = unknown(params, test)
    sets = np.array([m.split("|")[0] for m in test["meta"]])
    copy = np.array([m.split("|")[3] for m in test["meta"]]) == "1"
    lines = ["| held-out images | images | called unknown, as stored | called unknown, augmented copy |",
             "| --- | --- | --- | --- |"]
    for name, _, _, _, lists in SETS:
        here = sets == name
        stored, aug = said[here & ~copy], said[here & copy]
        lines.append(f"| {name} ({' + '.join(lists)}) | {len(stored)} | {stored.mean():.2%} ({stored.sum()}) | "
                     f"{aug.mean():.2%} ({aug.sum()}) |")
    lines.append(f"| all | {int((~copy).sum())} | {said[~copy].mean():.2%} ({said[~copy].sum()}) | "
                 f"{said[copy].mean():.2%} ({said[copy].sum()}) |")
    lines += ["", "| images of other kinds | images | called unknown | taken for a known kind (source) |",
              "| --- | --- | --- | --- |"]
    rows = [(f"{part} part" + (" (in the pool)" if part in POOL else ""), found["meta"], unknown(params, found))
            for part, found in negatives.items() if part in (*POOL, "test")]
    rows += [(f"{part} part, each source left out of the pool", negatives[part]["meta"], flag)
             for part, flag in (left_out or {}).items()]
    for label, meta, flag in rows:
        missed = sorted({_source(m) for m, f in zip(meta, flag, strict=True) if not f})
        lines.append(f"| {label} | {len(flag)} | {flag.mean():.1%} ({flag.sum()}) | {', '.join(missed) or '-'} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--cache", type=Path, default=Path("runs/ukcache"),
                   help="keep each image's latent and features here (default runs/ukcache)")
    p.add_argument("--negatives", type=Path, default=NEGATIVES,
                   help="dev/, generic/ and test/ images of other kinds (training/scripts/negatives.py; "
                        "default runs/negatives)")
    p.add_argument("--judge", nargs="*", default=[], metavar="PART",
                   help="more parts of --negatives (e.g. dev20: the dev sources with 20 copies) judged with "
                        "their source left out of the pool")
    p.add_argument("--skip-test", action="store_true", help="leave the test part unread (while choosing settings)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--write", action="store_true", help=f"store the fitted reference in {PARAMS_PATH.name}")
    args = p.parse_args(argv)

    start = time.perf_counter()
    args.cache.mkdir(parents=True, exist_ok=True)
    train = known_images(args.cache, args.data, 0)
    test = known_images(args.cache, args.data, 1)
    parts = [*POOL, *args.judge, *([] if args.skip_test else ["test"])]
    negatives = {part: negative_images(args.cache, args.negatives, part) for part in parts}
    pool = {key: np.concatenate([negatives[part][key] for part in POOL]) for key in ("feats", "grid", "meta")}
    kind, group = labels_and_groups(train["meta"])
    params = fit(descriptor(train["grid"]), kind, group, args.seed, classifier_kinds(train["feats"]),
                 descriptor(pool["grid"]))
    judged = [*POOL, *args.judge]
    left_out = dict(zip(judged, leave_source_out(train, pool, [negatives[part] for part in judged], args.seed),
                        strict=True))
    print("\n".join(table(params, test, negatives, left_out)))
    counts = ", ".join(f"{k} {int((kind == c).sum())}" for c, k in enumerate(KINDS))
    print(f"\nfitted on {len(kind)} training rows ({counts}); {time.perf_counter() - start:.0f} s", file=sys.stderr)
    if args.write:
        np.savez_compressed(PARAMS_PATH, **params)
        print(f"wrote {PARAMS_PATH} ({PARAMS_PATH.stat().st_size / 1024:.0f} kB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
