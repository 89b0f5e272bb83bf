"""Inference speed of Wave-GMS beside a U-Net baseline, in one run on the same machine (not a test).

    python training/benchmarks/bench_inference.py                 # CPU, and CUDA when there is one
    python training/benchmarks/bench_inference.py --device cuda --reps 20

Prints markdown tables:
1. images/s at 224² (batch 1 and 8, the model alone) and the latency of one 512×512 uint8 image end
   to end through :class:`napari_wavegms.inference.segmenter.Segmenter` (normalise, resize to 224², model, soft
   mask back to full size, threshold), for Wave-GMS in float32 without channels-last (the baseline)
   and with the engine's defaults (``precision="auto"``: bf16 only on CPUs that have it natively, the
   Tiny-VAE channels-last on a CPU, everything channels-last and float16 on CUDA), and the U-Net;
2. where Wave-GMS's time goes: E_wave, LMM, Tiny-VAE decoder;
3. the effect of ``torch.no_grad`` vs ``torch.inference_mode``, channels-last memory and (CUDA) float16
   autocast, with the agreement of float16 masks with float32 ones.

Wave-GMS uses the real TAEF2 decoder and random E_wave/LMM weights (cost does not depend on the
values). The U-Net is ``unet.py``'s baseline, MONAI's ``UNet`` with channels (64, 128, 256, 512, 1024),
strides (2, 2, 2, 2) and ``num_res_units=1``: 13.4M parameters, the size of the paper's 14.0M U-Net (``num_res_units=2``
would be 26M). Both run at 224², the training size of the paper. The default run takes about
2-3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn
from unet import UNetBaseline  # this script's folder

from napari_wavegms.core.device import describe, resolve_device
from napari_wavegms.inference.segmenter import Segmenter
from napari_wavegms.network import WaveGMS, load_tiny_vae

SIZE = 224


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, reps: int, warmup: int = 1) -> float:
    """Median seconds of ``reps`` calls after ``warmup`` calls."""
    return timed_result(fn, device, reps, warmup)[0]


def timed_result(fn: Callable[[], object], device: torch.device, reps: int, warmup: int = 1) -> tuple[float, object]:
    """Median seconds of ``reps`` calls after ``warmup`` calls, and the last call's result."""
    result = None
    for _ in range(warmup):
        result = fn()
    sync(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def params(module: nn.Module, trainable_only: bool = False) -> float:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only) / 1e6


def build(device: torch.device, weights: str | None) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    vae = load_tiny_vae("taef2", weights, need_encoder=False)
    return {"Wave-GMS": WaveGMS(vae, SIZE).to(device).eval(), "U-Net (MONAI)": UNetBaseline(SIZE).to(device).eval()}


def throughput_and_latency(models: dict[str, nn.Module], device: torch.device, reps: int,
                           big_batch: int) -> list[str]:
    """Wave-GMS as float32 without channels-last (the baseline) and with the engine's defaults (``auto``),
    then the U-Net: images/s at 224² and one 512² image end to end, with the speed-up over the baseline."""
    rows = []
    image = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    runs = [("Wave-GMS", "fp32", {"precision": "fp32", "channels_last": False}),
            ("Wave-GMS", "auto", {}), ("U-Net (MONAI)", "auto", {})]
    baseline = None
    for name, setting, options in runs:
        model = models[name]
        seg = Segmenter(model, device=str(device), batch_size=big_batch, **options)
        x1 = torch.rand(1, 3, SIZE, SIZE, device=device)
        xb = torch.rand(big_batch, 3, SIZE, SIZE, device=device)
        if seg.channels_last:
            x1, xb = (t.contiguous(memory_format=torch.channels_last) for t in (x1, xb))

        def run(x: torch.Tensor, seg: Segmenter = seg) -> torch.Tensor:
            with torch.inference_mode(), seg._autocast():
                return seg.model.predict(x)  # the engine's path

        b1 = 1 / timed(lambda x=x1, run=run: run(x), device, reps)
        bb = big_batch / timed(lambda x=xb, run=run: run(x), device, max(1, reps // 3), warmup=1)
        lat = timed(lambda seg=seg: seg(image), device, max(1, reps // 2))
        baseline = baseline or bb
        trainable = params(model, trainable_only=True)
        vae_last = getattr(getattr(model, "vae", None), "channels_last", False)
        layout = "all" if seg.channels_last else "Tiny-VAE" if vae_last else "no"
        rows.append(f"| {name} | {setting}: {seg.precision}, channels-last {layout} "
                    f"| {trainable:.2f}M / {params(model):.2f}M | {b1:.1f} | {bb:.1f} | {bb / baseline:.2f} "
                    f"| {lat * 1e3:.0f} |")
    return rows


def breakdown(model: WaveGMS, device: torch.device, reps: int, batch: int, half: bool) -> list[str]:
    x = torch.rand(batch, 3, SIZE, SIZE, device=device)
    ctx = (lambda: torch.autocast(device.type, dtype=torch.float16)) if half else nullcontext
    with torch.inference_mode(), ctx():
        mean, _ = model.encoder(x)
        latent = model.lmm(mean, heads=("out",))["out"]
        parts = {
            "E_wave (wavelet encoder)": timed(lambda: model.encoder(x), device, reps),
            "LMM (latent mapping)": timed(lambda: model.lmm(mean, heads=("out",)), device, reps),
            "Tiny-VAE decoder (TAEF2, frozen)": timed(lambda: model.vae.decode_mask(latent), device, reps),
        }
    rows = []
    for name, sec in parts.items():
        rows.append(f"| {name} | {sec / batch * 1e3:.1f} | {100 * sec / sum(parts.values()):.0f} % |")
    rows.append(f"| sum | {sum(parts.values()) / batch * 1e3:.1f} | |")
    return rows


def variants(model: WaveGMS, device: torch.device, reps: int, batch: int) -> list[str]:
    """Same inputs under each setting; the float32 soft masks of the first setting are the reference."""
    x = torch.rand(batch, 3, SIZE, SIZE, device=device, generator=None)
    settings = [("no_grad, contiguous, float32", torch.no_grad, False, False),
                ("inference_mode, contiguous, float32", torch.inference_mode, False, False),
                ("inference_mode, channels-last, float32", torch.inference_mode, True, False)]
    if device.type == "cuda":
        settings += [("inference_mode, channels-last, float16 autocast (the engine's CUDA default)",
                      torch.inference_mode, True, True)]
    rows, reference = [], None
    for label, mode, channels_last, half in settings:
        model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        xi = x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
        amp = torch.autocast(device.type, dtype=torch.float16) if half else nullcontext()

        def run(xi: torch.Tensor = xi, mode=mode, amp=amp) -> torch.Tensor:
            with mode(), amp:
                mean, _ = model.encoder(xi)
                return model.vae.decode_mask(model.lmm(mean, heads=("out",))["out"]).float()

        sec, soft = timed_result(run, device, reps)
        if reference is None:
            reference = soft
        agree = ((soft > 0.5) == (reference > 0.5)).float().mean().item()
        diff = (soft - reference).abs().max().item()
        rows.append(f"| {label} | {batch / sec:.1f} | {agree * 100:.3f} % | {diff:.1e} |")
    model.to(memory_format=torch.contiguous_format)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="all", help="cpu, cuda, … or all (CPU plus CUDA if present)")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions (median reported)")
    parser.add_argument("--batch", type=int, default=8, help="the large batch of the throughput column")
    parser.add_argument("--parts-batch", type=int, default=2, help="batch of the breakdown and variant tables")
    parser.add_argument("--weights", default=os.environ.get("WAVEGMS_WEIGHTS_DIR"),
                        help="folder with taef2_decoder.pth (default: $WAVEGMS_WEIGHTS_DIR, then ../shared/weights)")
    args = parser.parse_args(argv)
    if args.weights is None:
        shared = Path(__file__).resolve().parents[3] / "shared" / "weights"
        args.weights = str(shared) if shared.is_dir() else None

    names = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.device == "all" else [args.device]
    start = time.perf_counter()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads\n")
    for name in names:
        device = resolve_device(name)
        models = build(device, args.weights)
        print(f"## {describe(device)}\n")
        print(f"| model | precision | params trainable / total | img/s 224² b1 | img/s 224² b{args.batch} "
              "| × Wave-GMS fp32 | ms 512² image |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for row in throughput_and_latency(models, device, args.reps, args.batch):
            print(row, flush=True)
        wave = models["Wave-GMS"]
        half = device.type == "cuda"
        print(f"\nWhere Wave-GMS's time goes (224², batch {args.parts_batch}, {'float16' if half else 'float32'}):\n")
        print("| part | ms / image | share |\n| --- | --- | --- |")
        wave.to(memory_format=torch.channels_last if device.type == "cuda" else torch.contiguous_format)
        for row in breakdown(wave, device, args.reps, args.parts_batch, half):
            print(row, flush=True)
        print(f"\nSettings (Wave-GMS, 224², batch {args.parts_batch}; masks at 0.5 compared with the first row):\n")
        print("| setting | img/s | same mask pixels | max soft-mask difference |\n| --- | --- | --- | --- |")
        for row in variants(wave, device, args.reps, args.parts_batch):
            print(row, flush=True)
        print()
    print(f"({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
