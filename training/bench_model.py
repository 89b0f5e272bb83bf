"""Cost of the Wave-GMS network at 224² for C=4 (TAESD-shaped) and C=32 (TAEF2), CPU or CUDA.

Prints trainable / frozen parameters, forward+backward time per image and peak memory for a
training step at batch 12, and inference images/s. Each configuration runs in a fresh subprocess so
peak memory (CPU: the process's peak RSS above its level after building the model; CUDA:
``max_memory_allocated``) is not polluted by the previous one. Random weights are used for C=4 (the
paper's TAESD weights cannot be downloaded here); C=32 uses the real TAEF2 if ``WAVEGMS_WEIGHTS_DIR``
points at it, otherwise a random TAEF2-shaped one (cost is identical).

    python training/bench_model.py [--device cpu|cuda] [--batch 12] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def measure(latent_channels: int, device: str, batch: int, steps: int, size: int) -> dict:
    import resource

    import torch

    from napari_wavegms.model import TinyVAE, WaveGMS, load_tiny_vae, wavegms_loss

    dev = torch.device(device)
    try:
        vae = load_tiny_vae("taef2", need_encoder=True) if latent_channels == 32 else TinyVAE.random(4)
    except Exception:
        vae = TinyVAE.random(latent_channels)
    model = WaveGMS(vae, image_size=size).to(dev)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4)
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
        loss, _ = wavegms_loss(model, x, m)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        if i:  # first step warms up allocators and kernels
            times.append(time.perf_counter() - t)
    if dev.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    model.eval()
    n_inf = 16
    xi = torch.rand(n_inf, 3, size, size, device=dev)
    model.predict(xi[:2])
    sync()
    t = time.perf_counter()
    model.predict(xi)
    sync()
    ips = n_inf / (time.perf_counter() - t)
    return {"C": latent_channels, "trainable": trainable, "frozen": frozen,
            "ms_per_image_train": 1000 * min(times) / batch, "peak_mb": peak_mb, "inference_ips": ips}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.one, args.device, args.batch, args.steps, args.size)))
        return
    rows = []
    for c in (4, 32):
        cmd = [sys.executable, __file__, "--one", str(c), "--device", args.device, "--batch", str(args.batch),
               "--steps", str(args.steps), "--size", str(args.size)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    import torch

    print(f"device {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"{args.size}², training batch {args.batch}")
    print("| C | trainable | frozen | train fwd+bwd ms/image | peak train memory MB | inference images/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['C']} | {r['trainable']:,} | {r['frozen']:,} | {r['ms_per_image_train']:.0f} | "
              f"{r['peak_mb']:.0f} | {r['inference_ips']:.1f} |")


if __name__ == "__main__":
    main()
