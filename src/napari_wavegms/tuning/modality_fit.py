"""Fit the image-kind classifier of :mod:`napari_wavegms.inference.modality` and measure it on held-out images.

    python -m napari_wavegms.tuning.modality_fit [--data DIR] [--copies 2] [--seed 0] [--write]

Training images (training splits only): BUSI ``gms_train`` + ``normal_train`` and BUS-BRA folds 1-4
(ultrasound), Kvasir-SEG ``medico2020_train`` (endoscopy), ISIC-2017 ``train`` (dermoscopy). Each image
counts once as it is and ``--copies`` times augmented the way other hospitals' and devices' images
differ from these: grey ultrasound saved as RGB JPEG, with colour annotations, Doppler boxes, colour
bars or a slight tint; colour images with another white balance, saturation and exposure, cropped
inside the endoscope's black frame or with a dermatoscope's dark ring; every kind rescaled, cropped
and JPEG-compressed. Small gradient-boosted trees (class-balanced softmax; 30 rounds of 3 depth-2
trees by default) are fitted with numpy and, with ``--write``, stored in
``src/napari_wavegms/inference/modality.json``. (A multinomial logistic regression on the same features reached
96.7 % / 97.3 % on Kvasir-SEG / ISIC held out: colour kinds need combinations of features.)

Held-out images: BUSI ``gms_test`` + ``normal_test``, BUS-BRA fold 5 (patient-wise), Kvasir-SEG
``medico2020_val``, ISIC-2017 ``val``; accuracy per data set on the images as they are and on one
augmented copy of each (the robustness column). Prints a markdown table for ``docs/results.md``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from napari_wavegms.inference.modality import FEATURES, KINDS, PARAMS_PATH, image_features
from napari_wavegms.tuning.common import shared_folder
from napari_wavegms.zoo.downloads import DATA_ENV

DATA = shared_folder(DATA_ENV, "data")

# (data set, kind, images sub-folder suffix, training lists, held-out lists)
SETS = [
    ("busi", "ultrasound", ".png", ["gms_train.txt", "normal_train.txt"], ["gms_test.txt", "normal_test.txt"]),
    ("bus-bra-256", "ultrasound", ".png", ["fold1.txt", "fold2.txt", "fold3.txt", "fold4.txt"], ["fold5.txt"]),
    ("kvasir-seg", "endoscopy", ".jpg", ["medico2020_train.txt"], ["medico2020_val.txt"]),
    ("isic2017-256", "dermoscopy", ".jpg", ["train.txt"], ["val.txt"]),
]


def names(folder: Path, lists: list[str]) -> list[str]:
    """The image names of a data set's split lists, in list order (the order fixes the augmentation draws)."""
    out: list[str] = []
    for name in lists:
        out += (folder / "splits" / name).read_text().split()
    return out


# ---------------------------------------------------------------- augmentation
def _jpeg(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=int(rng.integers(40, 96)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _geometry(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Another size and framing: crop 70-100 % of each side, rescale the longer side to 128-1200 px."""
    w, h = img.size
    cw, chh = int(w * rng.uniform(0.7, 1.0)), int(h * rng.uniform(0.7, 1.0))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - chh + 1))
    img = img.crop((x, y, x + cw, y + chh))
    side = rng.uniform(128, 1200)
    f = side / max(img.size)
    img = img.resize((max(8, int(img.size[0] * f)), max(8, int(img.size[1] * f))), Image.BILINEAR)
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return img


def _tone(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure and contrast: gamma 0.7-1.4, gain 0.75-1.25 (float image in [0, 1])."""
    return np.clip((a ** rng.uniform(0.7, 1.4)) * rng.uniform(0.75, 1.25), 0, 1)


_OVERLAY_COLOURS = [(255, 255, 0), (0, 255, 0), (0, 255, 255), (255, 0, 0), (255, 128, 0), (0, 128, 255),
                    (255, 0, 255)]


def augment_ultrasound(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A BUSI / BUS-BRA scan as another scanner or report shows it: RGB, tinted, Doppler, bars, annotations."""
    img = _geometry(img.convert("L"), rng)
    a = _tone(np.asarray(img, np.float32) / 255, rng)
    rgb = np.repeat(a[..., None], 3, axis=-1)
    if rng.random() < 0.15:  # a scanner's tinted grey map (sepia, blue)
        tint = rng.choice([[1.0, 0.93, 0.82], [0.85, 0.93, 1.0], [1.0, 0.97, 0.9]])
        rgb = rgb * np.asarray(tint, np.float32)
    h, w = a.shape
    if rng.random() < 0.3:  # colour Doppler box: part of the pixels in a box replaced by red/blue flow
        bh, bw = int(h * rng.uniform(0.15, 0.5)), int(w * rng.uniform(0.15, 0.5))
        y, x = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        flow = rng.random((bh, bw)) < rng.uniform(0.1, 0.6)
        from scipy.ndimage import binary_dilation

        flow = binary_dilation(flow, iterations=int(rng.integers(0, 3)))
        speed = rng.random((bh, bw))
        red = np.stack([0.6 + 0.4 * speed, 0.3 * speed, 0.05 + 0 * speed], -1)
        blue = np.stack([0.05 + 0 * speed, 0.3 * speed, 0.6 + 0.4 * speed], -1)
        colour = np.where((rng.random((bh, bw)) < 0.5)[..., None], red, blue)
        box = rgb[y:y + bh, x:x + bw]
        box[flow] = colour[flow]
    if rng.random() < 0.2:  # colour scale bar at a side
        bar = max(2, int(w * 0.03))
        ramp = np.linspace(0, 1, h)[:, None]
        rgb[:, -bar:] = np.stack([ramp, 0.2 + 0 * ramp, 1 - ramp], -1)
    img = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB")
    if rng.random() < 0.4:  # annotations: calipers, lines, boxes, text-like strokes
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(1, 8))):
            c = tuple(int(v) for v in _OVERLAY_COLOURS[rng.integers(len(_OVERLAY_COLOURS))])
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
            x1, y1 = x0 + int(rng.integers(-w // 3, w // 3)), y0 + int(rng.integers(-h // 3, h // 3))
            kind = rng.integers(3)
            if kind == 0:
                draw.line((x0, y0, x1, y1), fill=c, width=int(rng.integers(1, 3)))
            elif kind == 1:
                draw.text((x0, y0), "".join(rng.choice(list("ABCDEFGH0123456789 cm+x"), 8)), fill=c)
            else:
                s = int(rng.integers(3, 10))
                draw.line((x0 - s, y0, x0 + s, y0), fill=c)
                draw.line((x0, y0 - s, x0, y0 + s), fill=c)
    if rng.random() < 0.5:
        img = _jpeg(img, rng)
    return img


def _colour_jitter(img: Image.Image, rng: np.random.Generator) -> np.ndarray:
    a = np.asarray(img.convert("RGB"), np.float32) / 255
    a = a * rng.uniform(0.85, 1.18, size=3).astype(np.float32)  # white balance
    grey = a.mean(-1, keepdims=True)
    a = grey + (a - grey) * rng.uniform(0.7, 1.3)  # saturation
    return _tone(np.clip(a, 0, 1), rng)


def _dark_ring(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = a.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot((yy - h / 2) / (h / 2), (xx - w / 2) / (w / 2))
    edge = rng.uniform(0.85, 1.2)
    return a * np.clip((edge - r) / 0.08, 0, 1)[..., None]


def augment_endoscopy(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A Kvasir-SEG frame as another endoscope gives it: other framing, white balance and exposure."""
    if rng.random() < 0.3:  # another endoscope's frame: the view fills the image, no black corners
        w, h = img.size
        f = rng.uniform(0.55, 0.8)
        img = img.crop((int(w * (1 - f) / 2), int(h * (1 - f) / 2), int(w * (1 + f) / 2), int(h * (1 + f) / 2)))
    img = _geometry(img, rng)
    a = _colour_jitter(img, rng)
    if rng.random() < 0.2:
        a = _dark_ring(a, rng)
    img = Image.fromarray((a * 255).astype(np.uint8), "RGB")
    return _jpeg(img, rng) if rng.random() < 0.5 else img


def augment_dermoscopy(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """An ISIC image as another dermatoscope gives it: other colours and exposure, sometimes a dark ring."""
    img = _geometry(img, rng)
    a = _colour_jitter(img, rng)
    if rng.random() < 0.25:  # a dermatoscope's dark ring
        a = _dark_ring(a, rng)
    img = Image.fromarray((a * 255).astype(np.uint8), "RGB")
    return _jpeg(img, rng) if rng.random() < 0.5 else img


AUGMENT = {"ultrasound": augment_ultrasound, "endoscopy": augment_endoscopy, "dermoscopy": augment_dermoscopy}


def feature_vector(image: np.ndarray) -> list[float]:
    """The image's features in :data:`FEATURES` order, the columns the classifier is fitted on."""
    f = image_features(image)
    return [f[n] for n in FEATURES]


def extract_cached(cache: Path | None, data: Path, which: int, copies: int, seed: int) -> dict:
    """:func:`extract`, kept in ``cache`` (an .npz) for refits with other settings of the classifier."""
    key = f"{which}-{copies}-{seed}-{','.join(FEATURES)}"
    if cache is not None and cache.is_file():
        stored = np.load(cache, allow_pickle=False)
        if str(stored["key"]) == key:
            return {name: (stored[f"{name}.plain"], stored[f"{name}.aug"], stored[f"{name}.label"])
                    for name, *_ in SETS}
    out = extract(data, which, copies, seed)
    if cache is not None:
        arrays = {f"{name}.{part}": arr for name, parts in out.items()
                  for part, arr in zip(("plain", "aug", "label"), parts, strict=True)}
        np.savez(cache, key=key, **arrays)
    return out


def extract(data: Path, which: int, copies: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per data set: features of the images as they are, of ``copies`` augmented versions, and labels."""
    out = {}
    for name, kind, suffix, train, test in SETS:
        folder = data / name
        stems = names(folder, (train, test)[which])
        rng = np.random.default_rng([seed, which, len(name)])
        plain, augmented = [], []
        for stem in stems:
            img = Image.open(folder / "images" / f"{stem}{suffix}")
            img.load()
            plain.append(feature_vector(np.asarray(img)))
            for _ in range(copies):
                augmented.append(feature_vector(np.asarray(AUGMENT[kind](img, rng))))
        label = KINDS.index(kind)
        out[name] = (np.asarray(plain), np.asarray(augmented).reshape(-1, len(FEATURES)),
                     np.full(len(stems), label))
        print(f"{name}: {len(stems)} images", file=sys.stderr)
    return out


# ---------------------------------------------------------------- the model
def _tree(x: np.ndarray, g: np.ndarray, h: np.ndarray, depth: int, cuts: list[np.ndarray], lam: float,
          min_hessian: float) -> list:
    """One regression tree on Newton steps (gradient ``g``, hessian ``h``), splits at fixed cuts.

    A node is ``[feature, threshold, left, right, value]``, a leaf ``[value]``; every value is the
    node's Newton step, so a prediction's path also says which features moved it (the reason)."""

    def build(idx: np.ndarray, d: int) -> list:
        big_g, big_h = g[idx].sum(), h[idx].sum()
        value = float(big_g / (big_h + lam))
        if d == 0 or len(idx) < 2:
            return [value]
        best, split = 0.0, None
        base = big_g * big_g / (big_h + lam)
        for j, thresholds in enumerate(cuts):
            column = x[idx, j]
            for t in thresholds:
                left = column <= t
                gl, hl = g[idx][left].sum(), h[idx][left].sum()
                gr, hr = big_g - gl, big_h - hl
                if hl < min_hessian or hr < min_hessian:
                    continue
                gain = gl * gl / (hl + lam) + gr * gr / (hr + lam) - base
                if gain > best:
                    best, split = gain, (j, float(t))
        if split is None:
            return [value]
        j, t = split
        left = x[idx, j] <= t
        return [j, t, build(idx[left], d - 1), build(idx[~left], d - 1), value]

    return build(np.arange(len(g)), depth)


def _tree_values(tree: list, x: np.ndarray) -> np.ndarray:
    if len(tree) == 1:
        return np.full(len(x), tree[0])
    j, t, left, right, _ = tree
    go_left = x[:, j] <= t
    out = np.empty(len(x))
    out[go_left] = _tree_values(left, x[go_left])
    out[~go_left] = _tree_values(right, x[~go_left])
    return out


def fit(x: np.ndarray, y: np.ndarray, rounds: int, depth: int, rate: float, lam: float = 1.0) -> dict:
    """Gradient-boosted trees for the softmax over kinds, class-balanced: small (``rounds`` × 3 trees of
    ``depth``), readable as JSON, and able to weigh combinations (dark corners *and* speckle) that a
    linear model cannot. Split candidates are 40 quantiles of each feature."""
    k = len(KINDS)
    cuts = [np.unique(np.quantile(x[:, j], np.linspace(0.02, 0.98, 40))) for j in range(x.shape[1])]
    onehot = np.eye(k)[y]
    weight = (len(y) / (k * np.bincount(y, minlength=k)))[y]
    scores = np.zeros((len(y), k))
    trees = []
    for _ in range(rounds):
        prob = np.exp(scores - scores.max(1, keepdims=True))
        prob /= prob.sum(1, keepdims=True)
        round_trees = []
        for c in range(k):
            g = (onehot[:, c] - prob[:, c]) * weight
            h = np.maximum(prob[:, c] * (1 - prob[:, c]), 1e-6) * weight
            tree = _tree(x, g, h, depth, cuts, lam, min_hessian=1.0)
            scores[:, c] += rate * _tree_values(tree, x)
            round_trees.append(tree)
        trees.append(round_trees)
    return {"kinds": list(KINDS), "features": list(FEATURES), "rate": rate, "trees": trees,
            "median": np.median(x, axis=0).tolist(), "rounds": rounds, "depth": depth}


def staged_scores(params: dict, x: np.ndarray) -> Iterator[np.ndarray]:
    """The kinds' scores after each boosting round (one array, updated in place)."""
    scores = np.zeros((len(x), len(KINDS)))
    for round_trees in params["trees"]:
        for c, tree in enumerate(round_trees):
            scores[:, c] += params["rate"] * _tree_values(tree, x)
        yield scores


def probabilities(params: dict, x: np.ndarray) -> np.ndarray:
    """Each sample's probability of each kind: the softmax of the last round's scores."""
    scores = np.zeros((len(x), len(KINDS)))
    for scores in staged_scores(params, x):  # noqa: B007 (the last round's scores are the model's)
        pass
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def predict(params: dict, x: np.ndarray) -> np.ndarray:
    """Each sample's most probable kind (an index into :data:`KINDS`)."""
    return np.argmax(probabilities(params, x), axis=1)


def staged_errors(params: dict, x: np.ndarray, y: np.ndarray, stages: list[int]) -> dict[int, np.ndarray]:
    """Mistakes (a boolean per sample) after each number of rounds in ``stages``: one fit of the most
    rounds scores every smaller setting, since boosting only adds trees."""
    return {r: np.argmax(scores, axis=1) != y
            for r, scores in enumerate(staged_scores(params, x), 1) if r in stages}


def in_folds(train: dict, copies: int, folds: int, seed: int) -> tuple[np.ndarray, ...]:
    """Every training sample (images as stored, then their augmented copies) with its kind, its fold
    (an image and its copies share one) and its data set: ``(x, y, fold, which)``."""
    rng = np.random.default_rng(seed)
    parts = []  # (data set, features, labels, fold of each sample)
    for name, (plain, aug, lab) in train.items():
        fold = rng.permutation(len(lab)) % folds
        parts.append((name, np.concatenate([plain, aug]), np.concatenate([lab] * (1 + copies)),
                      np.concatenate([fold, np.repeat(fold, copies)])))
    x, y, f = (np.concatenate([part[i] for part in parts]) for i in (1, 2, 3))
    which = np.concatenate([[name] * len(part[2]) for name, *part in parts])
    return x, y, f, which


def cross_validate(train: dict, copies: int, folds: int, seed: int, stages: list[int], depths: list[int],
                   rates: list[float]) -> dict[tuple[int, int, float], dict[str, int]]:
    """Mistakes per data set of every setting (rounds, depth, rate) on held-out folds of the *training*
    images, each image with its augmented copies in one fold, so settings are chosen without the
    held-out (test) images."""
    x, y, f, which = in_folds(train, copies, folds, seed)
    errors: dict[tuple[int, int, float], dict[str, int]] = {}
    for depth in depths:
        for rate in rates:
            for k in range(folds):
                held = f == k
                params = fit(x[~held], y[~held], max(stages), depth, rate)
                for rounds, wrong in staged_errors(params, x[held], y[held], stages).items():
                    row = errors.setdefault((rounds, depth, rate), dict.fromkeys(train, 0))
                    for name in train:
                        row[name] += int(wrong[which[held] == name].sum())
            print(f"cross-validated depth {depth}, rate {rate}", file=sys.stderr)
    return errors


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--copies", type=int, default=2, help="augmented copies of each training image")
    p.add_argument("--rounds", type=int, default=30, help="boosting rounds (3 trees each)")
    p.add_argument("--depth", type=int, default=2, help="depth of each tree")
    p.add_argument("--rate", type=float, default=0.3, help="learning rate (shrinkage)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--write", action="store_true", help=f"store the fitted parameters in {PARAMS_PATH.name}")
    p.add_argument("--cache", type=Path, help="keep the extracted features in this folder (refits skip extraction)")
    p.add_argument("--cv", type=int, metavar="K",
                   help="choose rounds (30/60/90), depth (2/3) and rate (0.2/0.3) by K-fold cross-validation on "
                   "the training images (fewest mistakes; ties to the smaller model), instead of the options")
    args = p.parse_args(argv)

    start = time.perf_counter()
    caches = [None, None] if args.cache is None else [args.cache / f"modality-{part}.npz" for part in ("train", "test")]
    if args.cache is not None:
        args.cache.mkdir(parents=True, exist_ok=True)
    train = extract_cached(caches[0], args.data, 0, args.copies, args.seed)
    test = extract_cached(caches[1], args.data, 1, 1, args.seed + 1)
    if args.cv:
        errors = cross_validate(train, args.copies, args.cv, args.seed, [30, 60, 90], [2, 3], [0.2, 0.3])
        print(f"| rounds | depth | rate | {' | '.join(train)} | all |  (mistakes on held-out training folds, "
              f"{args.cv}-fold, each image with its {args.copies} augmented copies)")
        print("| --- " * (4 + len(train)) + "|")
        for (rounds, depth, rate), row in sorted(errors.items()):
            print(f"| {rounds} | {depth} | {rate} | {' | '.join(str(v) for v in row.values())} | {sum(row.values())} |")
        args.rounds, args.depth, args.rate = min(errors, key=lambda s: (sum(errors[s].values()), s[0] * 2 ** s[1]))
        print(f"chosen by cross-validation: {args.rounds} rounds, depth {args.depth}, rate {args.rate}\n")
    x = np.concatenate([np.concatenate([plain, aug]) for plain, aug, _ in train.values()])
    y = np.concatenate([np.concatenate([lab] + [lab] * args.copies) for _, _, lab in train.values()])
    params = fit(x, y, args.rounds, args.depth, args.rate)
    params["fitted_on"] = {name: len(lab) for name, (_, _, lab) in train.items()}
    params["copies"] = args.copies
    chosen = f"--cv {args.cv}" if args.cv else f"--rounds {args.rounds} --depth {args.depth} --rate {args.rate}"
    params["command"] = (f"python -m napari_wavegms.tuning.modality_fit --copies {args.copies} --seed {args.seed} "
                         f"{chosen} --write")

    print("| data set (held-out split) | kind | images | correct as stored | correct, augmented copy | "
          "mistaken for (both columns) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, kind, _, _, lists in SETS:
        plain, aug, lab = test[name]
        pred, pred_aug = predict(params, plain), predict(params, aug)
        wrong = [KINDS[k] for k in np.concatenate([pred[pred != lab], pred_aug[pred_aug != lab[0]]])]
        confused = ", ".join(f"{k} {wrong.count(k)}" for k in sorted(set(wrong))) or "-"
        print(f"| {name} ({' + '.join(lists)}) | {kind} | {len(lab)} | {np.mean(pred == lab):.1%} "
              f"({int((pred == lab).sum())}) | {np.mean(pred_aug == lab[0]):.1%} | {confused} |")
    train_acc = np.mean(predict(params, x) == y)
    print(f"\ntraining accuracy (with augmented copies) {train_acc:.1%} on {len(y)} samples; "
          f"{time.perf_counter() - start:.0f} s", file=sys.stderr)
    if args.write:
        PARAMS_PATH.write_text(json.dumps(params, indent=1) + "\n")
        print(f"wrote {PARAMS_PATH}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
