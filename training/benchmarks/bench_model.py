"""Cost of one training step: the paper recipe, the fast recipe and a U-Net, side by side in one run.

For each image size it prints milliseconds per image of a training step (forward, backward and
optimiser at batch 12, the fastest of ``--steps`` timed steps after a warm-up step) and the step's
peak memory (CPU: the process's peak RSS above its level after building the model; CUDA:
``max_memory_allocated``), each configuration in a fresh subprocess so peaks do not mix. The recipes
are those of ``training.RECIPES`` with the real TAEF2 (``WAVEGMS_WEIGHTS_DIR``), in the precision and
memory layout ``training`` gives them on this device; the fast recipe's first half runs at half the
side, so its row at S/2 is shown too (a whole fast run costs about the mean of its two rows). The
U-Net is ``unet.py``'s baseline (MONAI, 13.4M parameters, Dice + BCE).

    OMP_WAIT_POLICY=PASSIVE python training/benchmarks/bench_model.py [--device cpu] [--threads 2]
                                                                    [--sizes 128 224] [--batch 12] [--steps 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def measure(kind: str, size: int, device: str, batch: int, steps: int) -> dict:
    import resource

    import torch

    from napari_wavegms.network import WaveGMS, load_tiny_vae, wavegms_loss
    from napari_wavegms.training.config import get_recipe
    from napari_wavegms.training.loop import _amp_setup, set_memory_layout

    dev = torch.device(device)
    torch.manual_seed(0)
    if kind == "unet":
        from unet import UNetBaseline, unet_loss  # this script's folder

        model = UNetBaseline(size).to(dev)
        amp = None

        def loss_fn(x, m):
            return unet_loss(model, x, m)
    else:
        recipe = get_recipe(kind)
        model = WaveGMS(load_tiny_vae("taef2", need_encoder=True), image_size=size).to(dev)
        set_memory_layout(model, dev, recipe)
        amp, _ = _amp_setup("auto", dev, recipe)

        def loss_fn(x, m):
            return wavegms_loss(model, x, m, dice_heads=recipe.dice_heads,
                                checkpoint_decoder=recipe.checkpoint_decoder)[0]
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    opt = torch.optim.AdamW(params, lr=1e-4)
    x = torch.rand(batch, 3, size, size, device=dev)
    m = (torch.rand(batch, 1, size, size, device=dev) > 0.5).float()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model.train()
    times = []
    for i in range(steps + 1):
        sync()
        t = time.perf_counter()
        with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = loss_fn(x, m)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        if i:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - t)
    if dev.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    return {"kind": kind, "size": size, "trainable": trainable, "frozen": frozen, "amp": str(amp),
            "ms_per_image": 1000 * min(times) / batch, "peak_mb": peak_mb, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.device, args.batch, args.steps)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    print(f"device {args.device}, {args.threads} threads, batch {args.batch}")
    print("| size | run | ms / image (training step) | × paper speed | peak MiB | × paper memory | autocast |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for size in args.sizes:
        half = max(32, (size // 2) // 8 * 8)
        rows = {}
        for kind, s in (("paper", size), ("fast", size), ("fast", half), ("unet", size)):
            cmd = [sys.executable, __file__, "--one", kind, str(s), "--device", args.device, "--batch",
                   str(args.batch), "--steps", str(args.steps), "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode:
                raise SystemExit(f"{kind} at {s}²: {out.stderr[-2000:]}")
            r = rows[kind, s] = json.loads(out.stdout.strip().splitlines()[-1])
            base = rows["paper", size]
            label = kind if s == size else f"{kind}, first half at {s}²"
            print(f"| {size}² | {label} | {r['ms_per_image']:.0f} | {base['ms_per_image'] / r['ms_per_image']:.2f} "
                  f"| {r['peak_mb']:.0f} | {r['peak_mb'] / base['peak_mb']:.2f} | {r['amp']} |", flush=True)


if __name__ == "__main__":
    main()
