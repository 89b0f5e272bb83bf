"""Images of kinds the built-in models do not know, for fitting and testing the open-set image-kind check.

    python training/scripts/negatives.py OUT [--copies 6] [--seed 0]

Sources are what pip packages ship (``skimage.data``: natural photos, textures, text, a fundus photo,
histology, microscopy, astronomy, a CT phantom), each used as it is and as ``--copies`` transformed
copies (crops, rotations, greyscale, colour casts, gamma, blur, noise, JPEG, low resolution), so that
the check is judged on variety, not on a list of files. The sources are split once into a *dev* part
(used to choose the check's settings) and a *test* part kept for testing only; a source's copies stay in
its part. Images that skimage downloads on first use are left out (no network is assumed).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

# Kept apart by kind of picture, so that each part has photos, grey images, textures and scientific images.
DEV = ("chelsea", "coffee", "camera", "brick", "grass", "cell", "retina", "page", "shepp_logan_phantom",
       "colorwheel", "clock", "binary_blobs")
TEST = ("astronaut", "cat", "rocket", "moon", "gravel", "coins", "immunohistochemistry", "hubble_deep_field",
        "microaneurysms", "text", "checkerboard", "horse", "logo")


def source(name: str) -> np.ndarray:
    """An skimage.data image as uint8 (grey, RGB; alpha dropped)."""
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)())
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    elif image.dtype != np.uint8:
        lo, hi = float(image.min()), float(image.max())
        image = ((image - lo) / max(hi - lo, 1e-9) * 255).astype(np.uint8)
    return image[..., :3] if image.ndim == 3 else image


def transformed(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random variant of ``image``, as another camera, scanner or person might have saved it."""
    img = Image.fromarray(image)
    w, h = img.size
    if rng.random() < 0.7:  # crop
        f = rng.uniform(0.45, 0.95)
        cw, ch = max(16, int(w * f)), max(16, int(h * f))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        img = img.crop((x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        img = img.rotate(float(rng.choice([90, 180, 270])), expand=True)
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    side = int(rng.integers(96, 640))
    scale = side / max(img.size)
    img = img.resize((max(8, int(img.size[0] * scale)), max(8, int(img.size[1] * scale))), Image.Resampling.BILINEAR)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 2.0))))
    a = np.asarray(img.convert("RGB") if img.mode not in ("L", "RGB") else img).astype(np.float32) / 255.0
    colour = a.ndim == 3
    if colour and rng.random() < 0.25:
        a = a.mean(axis=-1)
        colour = False
    elif not colour and rng.random() < 0.3:  # grey saved as RGB, sometimes with a tint
        a = np.repeat(a[..., None], 3, axis=-1) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
        colour = True
    elif colour:
        a = a * rng.uniform(0.8, 1.2, 3).astype(np.float32)  # white balance
    a = np.clip(a, 0, 1) ** float(rng.uniform(0.6, 1.6))  # gamma
    if rng.random() < 0.3:
        a = a + rng.normal(0, rng.uniform(0.01, 0.06), a.shape).astype(np.float32)
    out = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
    if rng.random() < 0.5:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=int(rng.integers(40, 96)))
        out = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
    return out


def negatives(part: str, copies: int, seed: int = 0):
    """``(name, image)`` of one part (``dev`` or ``test``): each source as it is, then its copies."""
    names = {"dev": DEV, "test": TEST}[part]
    for i, name in enumerate(names):
        try:
            image = source(name)
        except Exception as err:  # a download-on-first-use image without network
            print(f"skipped {name}: {type(err).__name__}", file=sys.stderr)
            continue
        yield name, image
        rng = np.random.default_rng([seed, i, len(name)])
        for c in range(copies):
            yield f"{name}-{c}", transformed(image, rng)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="folder to write dev/ and test/ PNGs into")
    p.add_argument("--copies", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for part in ("dev", "test"):
        folder = args.out / part
        folder.mkdir(parents=True, exist_ok=True)
        n = 0
        for name, image in negatives(part, args.copies, args.seed):
            Image.fromarray(image).save(folder / f"{name}.png")
            n += 1
        print(f"{part}: {n} images in {folder}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
