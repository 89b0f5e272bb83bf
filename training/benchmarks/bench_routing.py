"""What judging an image's kind costs per image, today's router beside the one with the open-set check.

    python training/benchmarks/bench_routing.py [--threads 2] [--reps 3]

The images: held-out images of each known kind (BUSI, BUS-BRA, Kvasir-SEG, ISIC-2017 as stored, 20 of
each) and photos of other kinds (``skimage.data``). Each is judged ``--reps`` times after a warm-up
(the TAEF2 encoder is loaded once per process, as in a run), and the median per image is printed:

- *kind classifier only* (today's router): :func:`napari_wavegms.inference.routing.choose_model` with
  ``open_set=False``: the strided sample, 19 statistics and the boosted trees;
- *with the open-set check*: the same plus :mod:`napari_wavegms.inference.unknown_kind` (one TAEF2
  encoder pass on a small resized sample and a nearest-neighbour distance);
- *open-set check alone* on a ready sample: the difference, measured directly.

The images are decoded before timing (a run reads them anyway). Not a test: a loaded machine gives
slower numbers, so compare lines of one run. OpenMP threads wait passively (as in the test suite): on a
busy 2-core machine spinning threads made the 2-thread encoder pass 4× slower than one thread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its threads


def images() -> list[np.ndarray]:
    """20 held-out images of each known kind, then every skimage.data photo that needs no download."""
    import skimage.data

    from napari_wavegms.core.io import read_image
    from napari_wavegms.tuning.modality_fit import DATA, SETS, names

    out = []
    for name, _, suffix, _, test in SETS:
        for stem in names(DATA / name, test)[:20]:
            out.append(read_image(DATA / name / "images" / f"{stem}{suffix}"))
    for name in ("astronaut", "coffee", "chelsea", "camera", "retina", "immunohistochemistry", "moon"):
        try:
            out.append(np.asarray(getattr(skimage.data, name)()))
        except Exception:  # downloaded on first use: not here
            continue
    return out


def per_image_ms(fn, items: list, reps: int) -> float:
    """Median milliseconds of ``fn(item)`` over the items, each the best of ``reps`` calls."""
    times = []
    for item in items:
        best = float("inf")
        for _ in range(reps):
            start = time.perf_counter()
            fn(item)
            best = min(best, time.perf_counter() - start)
        times.append(best * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)

    import torch

    from napari_wavegms.inference.modality import features_of_sample, sample_rgb
    from napari_wavegms.inference.routing import choose_model
    from napari_wavegms.inference.unknown_kind import check_sample

    torch.set_num_threads(args.threads)
    items = images()
    choose_model(items[0])  # loads the encoder and the parameters, as the first image of a run does
    closed = per_image_ms(lambda im: choose_model(im, open_set=False), items, args.reps)
    opened = per_image_ms(choose_model, items, args.reps)
    ready = [(s, features_of_sample(s)) for s in (sample_rgb(im) for im in items)]
    check = per_image_ms(lambda sf: check_sample(*sf), ready, args.reps)
    print(f"{len(items)} images, {args.threads} CPU threads, median per image:")
    print("| router | ms / image |")
    print("| --- | --- |")
    print(f"| kind classifier only (today's router) | {closed:.1f} |")
    print(f"| with the open-set check | {opened:.1f} |")
    print(f"| open-set check alone (encoder + distance) | {check:.1f} |")
    print(f"| added by the open-set check | {opened - closed:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
