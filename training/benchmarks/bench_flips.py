"""What test-time flips cost, as the Segment widget and ``wavegms-predict`` pay it (not a test).

    OMP_NUM_THREADS=2 python training/benchmarks/bench_flips.py [--reps 5] [--model NAME]

Prints side by side, for one image at the sizes people open (a BUSI scan, 471 × 558; the same scan
at 1,024² and at 2,048²), the time of one :meth:`Segmenter.segment` call (what the widget runs: normalise,
resize to the model's size, model, soft mask back to full size, threshold, clean-up, presence check)

- without flips, and with flips (the image and its three flipped copies in one batch of four);
- the **first** call with flips after a process has only run plain calls: a batch of four is a new
  shape for the CPU's convolution kernels, which are prepared on first use;
- the model alone on a batch of 1, a batch of 4 and four batches of 1, to show where the ratio comes
  from (the model's passes, not the flips themselves or the full-size work).

Plain and flipped calls are interleaved, and medians are printed, because the CPU may be shared.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from napari_wavegms.core.io import read_image
from napari_wavegms.core.progress import run_to_end
from napari_wavegms.inference.segmenter import TTA_FLIPS, Segmenter
from napari_wavegms.tuning.common import shared_folder
from napari_wavegms.zoo.registry import suggest_model


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def resized(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` (gray uint8) at ``side``² by nearest-neighbour sampling: the size, not the content, matters."""
    rows = np.linspace(0, image.shape[0] - 1, side).astype(int)
    cols = np.linspace(0, image.shape[1] - 1, side).astype(int)
    return np.ascontiguousarray(image[rows][:, cols])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=suggest_model("ultrasound"), help="model (default: the ultrasound model)")
    p.add_argument("--reps", type=int, default=5, help="timed calls of each kind (default 5)")
    args = p.parse_args(argv)
    scan = read_image(shared_folder("WAVEGMS_DATA_DIR", "data") / "busi" / "images" / "benign_3.png")
    plain = Segmenter(args.model, device="cpu", tta=False)
    flips = Segmenter(plain.model, device="cpu", tta=True, postprocess=plain.postprocess,
                      presence=plain.presence or False)
    print(f"{args.model} on {plain.device_name}, {plain.precision}, torch {torch.__version__}\n")

    x = plain.model_input(scan)
    run_to_end(plain.segment(scan))  # the plain shapes are warm, the batch of four is not
    first = timed(lambda: run_to_end(flips.segment(scan)))
    with torch.inference_mode(), plain._autocast():
        copies = torch.cat([x, *(x.flip(d) for d in TTA_FLIPS)])
        model = {"batch of 1": [], "batch of 4 (the flips)": [], "4 batches of 1": []}
        for _ in range(args.reps):
            model["batch of 1"].append(timed(lambda: plain.model.predict(x)))
            model["batch of 4 (the flips)"].append(timed(lambda: plain.model.predict(copies)))
            model["4 batches of 1"].append(timed(lambda: [plain.model.predict(c[None]) for c in copies]))
    one = statistics.median(model["batch of 1"])
    print("| the model alone | ms | × one pass |\n| --- | --- | --- |")
    for what, times in model.items():
        ms = statistics.median(times)
        print(f"| {what} | {ms * 1000:.0f} | {ms / one:.2f} |")

    print("\n| image | without flips, ms | with flips, ms | ratio |\n| --- | --- | --- | --- |")
    for name, image in (("BUSI scan 471 × 558", scan), ("1,024²", resized(scan, 1024)),
                        ("2,048²", resized(scan, 2048))):
        times: dict[str, list[float]] = {"plain": [], "flips": []}
        for _ in range(args.reps):
            for mode, seg in (("plain", plain), ("flips", flips)):
                times[mode].append(timed(lambda seg=seg, image=image: run_to_end(seg.segment(image))))
        a, b = statistics.median(times["plain"]), statistics.median(times["flips"])
        print(f"| {name} | {a * 1000:.0f} | {b * 1000:.0f} | {b / a:.1f}× |")
    print(f"\nthe first call with flips in this process (BUSI scan): {first * 1000:.0f} ms "
          f"({first / statistics.median(model['batch of 1']):.1f}× one warm model pass)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
