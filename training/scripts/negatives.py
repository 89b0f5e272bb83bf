"""Images of kinds the built-in models do not know, for fitting and testing the open-set image-kind check.

    python training/scripts/negatives.py OUT [--copies 6] [--seed 0]

Sources are what pip packages ship (``skimage.data``: natural photos, textures, text, a fundus photo,
histology, microscopy, astronomy, a CT phantom), each used as it is and as ``--copies`` transformed
copies (crops, rotations, greyscale, colour casts, gamma, blur, noise, JPEG, low resolution), so that
the check is judged on variety, not on a list of files. The sources are split once into a *dev* part
(used to choose the check's settings) and a *test* part kept for testing only; a source's copies stay in
its part. Images that skimage downloads on first use are left out (no network is assumed).

A third, *generic* part is made here rather than taken from a package (:data:`GENERATORS`: charts,
screenshots, documents, CT-, MRI- and X-ray-like scans, fluorescence microscopy, stained tissue,
fundus-like pictures, noise, gradients, clip art, and the faces and motorcycle photos skimage ships),
``--copies`` × 4 pictures per generator, every second one a transformed copy. With the dev part it is
the pool of other kinds the check compares an image with; nothing of the test part enters it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from scipy import ndimage as ndi

# Kept apart by kind of picture, so that each part has photos, grey images, textures and scientific images.
DEV = ("chelsea", "coffee", "camera", "brick", "grass", "cell", "retina", "page", "shepp_logan_phantom",
       "colorwheel", "clock", "binary_blobs")
# skimage.data.cat() is the same photo as chelsea(), so it is in neither list: a test source must be a
# picture the dev part does not hold (``distinct_sources`` checks it).
TEST = ("astronaut", "rocket", "moon", "gravel", "coins", "immunohistochemistry", "hubble_deep_field",
        "microaneurysms", "text", "checkerboard", "horse", "logo")


def distinct_sources(names: tuple[str, ...] = DEV + TEST) -> None:
    """Raise if two sources are the same picture (skimage ships some under two names): a test image
    that is also a dev image is not held out."""
    seen: dict[str, str] = {}
    for name in names:
        image = source(name)
        key = hashlib.sha256(repr(image.shape).encode() + image.tobytes()).hexdigest()
        if key in seen:
            raise ValueError(f"skimage.data.{name} is the same picture as {seen[key]}")
        seen[key] = name


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


# ---------------------------------------------------------------- generic images of other kinds, made here
# Each generator draws one random picture of a kind of image the models do not know from ``rng``.
def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def _smooth_noise(rng, h, w, sigma, channels=1):
    a = ndi.gaussian_filter(rng.normal(size=(h, w, channels)), (sigma, sigma, 0))
    a = (a - a.min()) / max(a.max() - a.min(), 1e-9)
    return a if channels > 1 else a[..., 0]


def _words(rng, n):
    letters = "abcdefghijklmnopqrstuvwxyz"
    return " ".join("".join(rng.choice(list(letters), int(rng.integers(2, 9)))) for _ in range(n))


def chart(rng):
    w, h = int(rng.integers(320, 720)), int(rng.integers(240, 560))
    bg = tuple(int(v) for v in (rng.choice([255, 250, 240, 30])) * np.ones(3))
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    fg = (0, 0, 0) if bg[0] > 128 else (220, 220, 220)
    x0, y0, x1, y1 = 50, 30, w - 20, h - 40
    d.line([(x0, y0), (x0, y1), (x1, y1)], fill=fg, width=2)
    for t in range(6):
        y = y1 - (y1 - y0) * t / 5
        d.line([(x0 - 5, y), (x0, y)], fill=fg)
        d.text((5, y - 6), f"{t * 20}", fill=fg, font=_font(11))
        if rng.random() < 0.5:
            d.line([(x0, y), (x1, y)], fill=tuple(int(c * 0.5 + b * 0.5) for c, b in zip(fg, bg, strict=True)))
    kind = rng.integers(0, 4)
    n = int(rng.integers(3, 12))
    colours = [tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(4)]
    if kind == 0:  # bars
        bw = (x1 - x0) / n
        for i in range(n):
            v = rng.uniform(0.1, 1) * (y1 - y0)
            d.rectangle([x0 + i * bw + 4, y1 - v, x0 + (i + 1) * bw - 4, y1], fill=colours[i % 2])
    elif kind == 1:  # lines
        for s in range(int(rng.integers(1, 4))):
            ys = np.cumsum(rng.normal(0, 1, 40))
            ys = (ys - ys.min()) / max(np.ptp(ys), 1e-9)
            pts = [(x0 + (x1 - x0) * i / 39, y1 - 10 - (y1 - y0 - 20) * v) for i, v in enumerate(ys)]
            d.line(pts, fill=colours[s], width=int(rng.integers(1, 4)))
    elif kind == 2:  # scatter
        for _ in range(int(rng.integers(30, 300))):
            x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
            r = rng.uniform(1, 5)
            d.ellipse([x - r, y - r, x + r, y + r], fill=colours[int(rng.integers(0, 3))])
    else:  # pie
        cx, cy, r = w / 2, h / 2, min(w, h) / 3
        a = 0.0
        for f in rng.dirichlet(np.ones(n)):
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            d.pieslice([cx - r, cy - r, cx + r, cy + r], a, a + 360 * f, fill=colour)
            a += 360 * f
    d.text((w / 2 - 60, 8), _words(rng, 3), fill=fg, font=_font(14))
    return np.asarray(img)


def screenshot(rng):
    w, h = int(rng.integers(480, 960)), int(rng.integers(320, 720))
    dark = rng.random() < 0.3
    bg = (40, 42, 46) if dark else (int(rng.integers(225, 256)),) * 3
    fg = (210, 210, 210) if dark else (20, 20, 20)
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    accent = tuple(int(c) for c in rng.integers(0, 256, 3))
    d.rectangle([0, 0, w, 28], fill=accent if rng.random() < 0.5 else (200, 200, 205))
    for i in range(3):
        d.ellipse([w - 20 - 18 * i, 8, w - 8 - 18 * i, 20], fill=(230, 80, 70))
    side = int(rng.integers(0, 220))
    if side:
        d.rectangle([0, 28, side, h], fill=tuple(max(0, c - 18) for c in bg))
        for y in range(40, h, 24):
            d.text((10, y), _words(rng, 2), fill=fg, font=_font(12))
    y = 40
    while y < h - 20:
        r = rng.random()
        if r < 0.5:
            words = _words(rng, int(rng.integers(3, 12)))
            d.text((side + 12, y), words, fill=fg, font=_font(int(rng.integers(11, 18))))
            y += int(rng.integers(16, 26))
        elif r < 0.7:
            bw = int(rng.integers(60, 140))
            d.rounded_rectangle([side + 12, y, side + 12 + bw, y + 26], 5, fill=accent)
            d.text((side + 20, y + 6), _words(rng, 1), fill=(255, 255, 255), font=_font(12))
            y += 36
        elif r < 0.85:
            ph = int(rng.integers(40, 160))
            pw = int(rng.integers(60, 300))
            patch = (_smooth_noise(rng, ph, pw, rng.uniform(2, 12), 3) * 255).astype(np.uint8)
            img.paste(Image.fromarray(patch), (side + 12, y))
            y += ph + 10
        else:
            d.rectangle([side + 12, y, w - 12, y + 24], outline=fg)
            y += 34
    return np.asarray(img)


def document(rng):
    w, h = int(rng.integers(400, 800)), int(rng.integers(500, 1000))
    paper = int(rng.integers(215, 256))
    img = Image.new("L", (w, h), paper)
    d = ImageDraw.Draw(img)
    size = int(rng.integers(10, 24))
    y = int(rng.integers(10, 60))
    while y < h - size:
        if rng.random() < 0.1:
            y += size
            continue
        x, words = int(rng.integers(20, 60)), _words(rng, int(rng.integers(4, 14)))
        d.text((x, y), words, fill=int(rng.integers(0, 80)), font=_font(size))
        y += int(size * rng.uniform(1.2, 1.8))
    a = np.asarray(img)
    return a if rng.random() < 0.5 else np.repeat(a[..., None], 3, -1)


def _ellipses(rng, side, n, lo=0.02, hi=0.25):
    yy, xx = np.mgrid[-1:1:side * 1j, -1:1:side * 1j]
    out = np.zeros((side, side))
    for _ in range(n):
        cx, cy = rng.uniform(-0.6, 0.6, 2)
        a, b = rng.uniform(lo, hi, 2)
        t = rng.uniform(0, np.pi)
        xr = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
        yr = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
        out[(xr / a) ** 2 + (yr / b) ** 2 <= 1] += rng.uniform(-0.3, 0.5)
    return out, yy, xx


def ct(rng):
    side = int(rng.integers(256, 512))
    inner, yy, xx = _ellipses(rng, side, int(rng.integers(4, 14)))
    ax, ay = rng.uniform(0.7, 0.95), rng.uniform(0.55, 0.9)
    body = (xx / ax) ** 2 + (yy / ay) ** 2 <= 1
    shell = body & ((xx / (ax - 0.05)) ** 2 + (yy / (ay - 0.05)) ** 2 > 1)
    img = np.where(body, 0.35 + inner, 0.0) + 0.55 * shell
    img = ndi.gaussian_filter(img, rng.uniform(0.5, 2)) + rng.normal(0, rng.uniform(0.01, 0.06), img.shape)
    img = np.clip(img, 0, 1)
    return (img * 255).astype(np.uint8)


def mri(rng):
    side = int(rng.integers(192, 384))
    yy, xx = np.mgrid[-1:1:side * 1j, -1:1:side * 1j]
    r = np.sqrt((xx / rng.uniform(0.6, 0.8)) ** 2 + (yy / rng.uniform(0.7, 0.9)) ** 2)
    wobble = _smooth_noise(rng, side, side, side / 40)
    head = r < 1 - 0.05 * wobble
    brain = r < 0.85 - 0.08 * wobble
    folds = _smooth_noise(rng, side, side, rng.uniform(1.5, 4))
    tissue = np.where(folds > rng.uniform(0.4, 0.6), 0.75, 0.45)
    ventricle = (np.abs(xx) < 0.12) & (np.abs(yy) < 0.25) & (rng.random() < 0.7)
    img = np.where(brain, tissue, np.where(head, 0.9 if rng.random() < 0.5 else 0.3, 0.0))
    img = np.where(ventricle & brain, 0.1 if rng.random() < 0.5 else 0.95, img)
    img = ndi.gaussian_filter(img, rng.uniform(0.6, 1.5))
    s = rng.uniform(0.01, 0.05)
    img = np.sqrt((img + rng.normal(0, s, img.shape)) ** 2 + rng.normal(0, s, img.shape) ** 2)  # Rician
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def xray(rng):
    h, w = int(rng.integers(256, 640)), int(rng.integers(256, 640))
    yy, xx = np.mgrid[-1:1:h * 1j, -1:1:w * 1j]
    img = 0.55 + 0.25 * _smooth_noise(rng, h, w, min(h, w) / 8)
    for sx in (-1, 1):  # lungs, dark
        cx = sx * rng.uniform(0.35, 0.5)
        img -= 0.35 * np.exp(-(((xx - cx) / 0.25) ** 2 + ((yy + 0.05) / 0.55) ** 4))
    img += 0.3 * np.exp(-(xx / 0.07) ** 2)  # spine
    for k in range(int(rng.integers(6, 11))):  # ribs
        y0 = -0.7 + k * 0.15
        for sx in (-1, 1):
            curve = y0 + 0.25 * (np.abs(xx) / 0.8) ** 2
            img += 0.12 * np.exp(-((yy - curve) / 0.02) ** 2) * (np.abs(xx) < 0.85) * (np.sign(xx) == sx)
    img = ndi.gaussian_filter(img, rng.uniform(1, 3)) + rng.normal(0, 0.02, img.shape)
    img = np.clip(img, 0, 1)
    if rng.random() < 0.5:
        img = 1 - img
    return (img * 255).astype(np.uint8)


def fluorescence(rng):
    side = int(rng.integers(256, 600))
    out = np.zeros((side, side, 3))
    for c in range(3):
        if rng.random() < 0.35:
            continue
        spots = np.zeros((side, side))
        n = int(rng.integers(10, 200))
        spots[rng.integers(0, side, n), rng.integers(0, side, n)] = rng.uniform(0.5, 1, n)
        out[..., c] = ndi.gaussian_filter(spots, rng.uniform(2, 8)) * rng.uniform(50, 400)
    out = np.clip(out + rng.normal(0, 0.02, out.shape), 0, 1)
    if rng.random() < 0.4:
        return (out.max(-1) * 255).astype(np.uint8)
    return (out * 255).astype(np.uint8)


def stained_tissue(rng):
    side = int(rng.integers(256, 600))
    background = np.array(rng.choice([[0.93, 0.75, 0.85], [0.95, 0.85, 0.8], [0.9, 0.88, 0.92]]))
    background = background * rng.uniform(0.9, 1.05)
    nucleus = np.array(rng.choice([[0.35, 0.2, 0.55], [0.45, 0.3, 0.2], [0.3, 0.25, 0.5]]))
    stroma = np.array([0.85, 0.45, 0.65]) * rng.uniform(0.8, 1.1)
    tex = _smooth_noise(rng, side, side, rng.uniform(3, 10))
    img = background[None, None] + (tex > rng.uniform(0.45, 0.6))[..., None] * (stroma - background)
    nuclei = np.zeros((side, side))
    n = int(rng.integers(50, 600))
    nuclei[rng.integers(0, side, n), rng.integers(0, side, n)] = 1
    nuclei = ndi.gaussian_filter(nuclei, rng.uniform(2, 5))
    nuclei = np.clip(nuclei / max(nuclei.max(), 1e-9) * 3, 0, 1)[..., None]
    img = img * (1 - nuclei) + nucleus * nuclei
    holes = _smooth_noise(rng, side, side, rng.uniform(6, 20)) > rng.uniform(0.75, 0.95)
    img[holes] = 0.97
    img = ndi.gaussian_filter(img, (0.8, 0.8, 0)) + rng.normal(0, 0.02, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def fundus_like(rng):
    side = int(rng.integers(256, 600))
    yy, xx = np.mgrid[-1:1:side * 1j, -1:1:side * 1j]
    r = np.sqrt(xx ** 2 + yy ** 2)
    disk = r < rng.uniform(0.85, 0.98)
    base = np.array([0.8, 0.35, 0.12]) * rng.uniform(0.6, 1.1)
    shade = 1 - 0.5 * r ** 2
    img = base[None, None] * shade[..., None]
    ox, oy = rng.uniform(-0.5, 0.5), rng.uniform(-0.2, 0.2)
    img += 0.5 * np.exp(-(((xx - ox) ** 2 + (yy - oy) ** 2) / 0.01))[..., None] * np.array([1, 0.9, 0.6])
    vessels = np.zeros((side, side))
    for _ in range(int(rng.integers(6, 14))):
        p = np.array([ox, oy])
        a = rng.uniform(0, 2 * np.pi)
        for _ in range(200):
            a += rng.normal(0, 0.15)
            p = p + 0.01 * np.array([np.cos(a), np.sin(a)])
            i, j = int((p[1] + 1) / 2 * (side - 1)), int((p[0] + 1) / 2 * (side - 1))
            if not (0 <= i < side and 0 <= j < side):
                break
            vessels[i, j] = 1
    vessels = np.clip(ndi.gaussian_filter(vessels, 1.5) * 8, 0, 1)[..., None]
    img = img * (1 - 0.6 * vessels)
    img = img * disk[..., None] + rng.normal(0, 0.01, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def noise(rng):
    h, w = int(rng.integers(128, 512)), int(rng.integers(128, 512))
    c = 3 if rng.random() < 0.5 else 1
    sigma = float(rng.choice([0.0, 1.0, 3.0, 8.0, 20.0]))
    a = rng.random((h, w, c)) if sigma == 0 else _smooth_noise(rng, h, w, sigma, c).reshape(h, w, c)
    if rng.random() < 0.3:  # octaves
        a = 0.6 * a + 0.4 * _smooth_noise(rng, h, w, 1.0, c).reshape(h, w, c)
    a = (a[..., 0] if c == 1 else a)
    return (np.clip(a, 0, 1) * 255).astype(np.uint8)


def gradient(rng):
    h, w = int(rng.integers(128, 512)), int(rng.integers(128, 512))
    yy, xx = np.mgrid[0:1:h * 1j, 0:1:w * 1j]
    t = np.sqrt((xx - rng.random()) ** 2 + (yy - rng.random()) ** 2) if rng.random() < 0.5 else \
        xx * np.cos(a := rng.uniform(0, 2 * np.pi)) + yy * np.sin(a)
    t = (t - t.min()) / max(np.ptp(t), 1e-9)
    c0, c1 = rng.random(3), rng.random(3)
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    if rng.random() < 0.3:
        img = img.mean(-1)
    return (img * 255).astype(np.uint8)


def shapes(rng):
    w, h = int(rng.integers(200, 640)), int(rng.integers(200, 640))
    img = Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(0, 256, 3)))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 30))):
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        s = rng.uniform(10, min(w, h) / 2)
        k = rng.integers(0, 3)
        if k == 0:
            d.ellipse([x - s, y - s, x + s, y + s * rng.uniform(0.5, 1.5)], fill=col)
        elif k == 1:
            d.rectangle([x, y, x + s, y + s * rng.uniform(0.3, 2)], fill=col)
        else:
            d.polygon([(x + rng.uniform(-s, s), y + rng.uniform(-s, s)) for _ in range(3)], fill=col)
    return np.asarray(img)


def faces(rng):
    import skimage.data
    stack = skimage.data.lfw_subset()
    n = int(rng.integers(1, 5))
    picks = [stack[int(i)] for i in rng.integers(0, len(stack), n * n)]
    rows = [np.concatenate(picks[r * n:(r + 1) * n], 1) for r in range(n)]
    a = np.concatenate(rows, 0)
    big = (a.shape[1] * 8, a.shape[0] * 8)
    return np.asarray(Image.fromarray((a * 255).astype(np.uint8)).resize(big, Image.Resampling.BICUBIC))


def motorcycle(rng):
    import skimage.data
    left, right, disp = skimage.data.stereo_motorcycle()
    pick = int(rng.integers(0, 3))
    disp = np.where(np.isfinite(disp), disp, 0.0)
    a = (left, right, (disp / max(float(disp.max()), 1.0) * 255).astype(np.uint8))[pick]
    h, w = a.shape[:2]
    f = rng.uniform(0.4, 1.0)
    ch, cw = int(h * f), int(w * f)
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return np.ascontiguousarray(a[y:y + ch, x:x + cw])


GENERATORS = {f.__name__: f for f in (chart, screenshot, document, ct, mri, xray, fluorescence, stained_tissue,
                                       fundus_like, noise, gradient, shapes, faces, motorcycle)}


def generic(per_source: int, seed: int = 0):
    """``(name, image)`` of the *generic* part: :data:`GENERATORS`' pictures, ``per_source`` each, every
    second one as a :func:`transformed` copy. Made here, from no image of the dev or test part."""
    for i, (name, make) in enumerate(GENERATORS.items()):
        for c in range(per_source):
            rng = np.random.default_rng([seed, 1000 + i, c])
            image = make(rng)
            yield f"{name}-{c}", transformed(image, rng) if c % 2 else image


def negatives(part: str, copies: int, seed: int = 0):
    """``(name, image)`` of one part (``dev`` or ``test``): each source as it is, then its copies;
    ``generic``: :func:`generic` with ``copies`` × 4 pictures per generator."""
    if part == "generic":
        yield from generic(copies * 4, seed)
        return
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
    distinct_sources()
    for part in ("dev", "test", "generic"):
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
