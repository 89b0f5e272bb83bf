"""Peak training memory and time per step: Wave-GMS vs a U-Net vs GMS's architecture, at 224².

The paper's claim is that Wave-GMS trains with large batches in little memory because the large
frozen SD-VAE of GMS is replaced by a Tiny-VAE. This measures one full training step (forward,
loss, backward, AdamW) of:

- ``wavegms``: Wave-GMS with the frozen TAEF2 (real weights when ``WAVEGMS_WEIGHTS_DIR`` or
  ``--weights`` points at them, else random weights of the same shape: the cost is identical);
  its own loss (three heads decoded through the frozen decoder, alignment to the Tiny-VAE encoder).
- ``unet``: ``unet.py``'s baseline, MONAI's ``UNet`` (channels 64…1024, one residual unit per level:
  13.4M parameters, the size of the 14.0M U-Net baseline of the GMS paper), no pretrained weights,
  Dice + BCE loss.
- ``gms``: GMS's architecture for cost only: diffusers' ``AutoencoderKL`` with the Stable Diffusion
  VAE configuration (83.7M parameters, random weights, frozen) and the latent mapping model with
  C = 4 as the only trainable part. Loss as GMS: image and mask encoded by the frozen VAE
  (no gradients), MSE on the three heads' latents, and soft Dice on the *final* head decoded through
  the frozen VAE decoder (gradients flow through it). Decoding one head instead of three makes this
  a lower bound on GMS's cost. No accuracy is claimed for it.

Each (model, batch) runs in a fresh subprocess so peaks do not mix. Memory: on CUDA
``torch.cuda.max_memory_allocated`` (weights + optimizer state + activations); on the CPU the
increase of the process's peak RSS over its level after building the model and the optimizer
(activations + optimizer state + allocator overhead). Time per step: mean over ``--steps`` steps
after one warm-up step.

    python training/benchmarks/bench_memory.py [--device cpu|cuda] [--batch 12 32] [--models wavegms unet gms]
                                               [--steps 3] [--size 224] [--amp]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

MODELS = ("wavegms", "unet", "gms")


def _build(name: str, device, size: int):
    """(trainable module, loss function(x, m) -> scalar, trainable params, frozen params)."""
    import torch
    from torch.nn import functional as F

    from napari_wavegms.network.wavegms import soft_dice_loss

    if name == "wavegms":
        from napari_wavegms.network import TinyVAE, WaveGMS, load_tiny_vae, wavegms_loss

        try:
            vae = load_tiny_vae("taef2", os.environ.get("WAVEGMS_WEIGHTS_DIR"), need_encoder=True)
        except Exception:
            vae = TinyVAE.random(32)
        model = WaveGMS(vae, image_size=size).to(device).train()
        return model, lambda x, m: wavegms_loss(model, x, m)[0]
    if name == "unet":
        from unet import UNetBaseline, unet_loss  # this script's folder

        model = UNetBaseline(size).to(device).train()
        return model, lambda x, m: unet_loss(model, x, m)
    if name == "gms":
        from diffusers import AutoencoderKL

        from napari_wavegms.network import LatentMappingModel

        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=4, layers_per_block=2,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
        vae.requires_grad_(False)
        vae = vae.to(device).eval()
        lmm = LatentMappingModel(4).to(device).train()
        scale = 0.18215

        def gms_loss(x, m):
            with torch.no_grad():
                z = vae.encode(torch.cat([x, m.expand(-1, 3, -1, -1)]) * 2 - 1).latent_dist.mean * scale
                z_img, z_mask = z.chunk(2)
            out = lmm(z_img)
            loss = sum(F.mse_loss(v.float(), z_mask.float()) for v in out.values())
            decoded = vae.decode(out["out"] / scale).sample
            prob = ((decoded.float() + 1) / 2).mean(1, keepdim=True).clamp(0, 1)
            return loss + soft_dice_loss(prob, m)

        lmm.vae_params = sum(p.numel() for p in vae.parameters())  # for the report
        return lmm, gms_loss
    raise ValueError(f"unknown model {name!r}: use one of {MODELS}")


def measure(name: str, device: str, batch: int, steps: int, size: int, amp: bool) -> dict:
    import resource

    import torch

    dev = torch.device(device)
    torch.manual_seed(0)
    model, loss_fn = _build(name, dev, size)
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    frozen = getattr(model, "vae_params", 0) + sum(p.numel() for p in model.parameters() if not p.requires_grad)
    opt = torch.optim.AdamW(params, lr=1e-4)
    x = torch.rand(batch, 3, size, size, device=dev)
    m = (torch.rand(batch, 1, size, size, device=dev) > 0.5).float()
    amp_on = amp and dev.type == "cuda"

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp_on):
            loss = loss_fn(x, m)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base_rss = _rss_kib()
    step()  # warm-up (allocates optimizer state)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - t) / steps
    if dev.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
        what = "max_memory_allocated"
    else:
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
        what = "peak RSS increase"
    return {"model": name, "batch": batch, "size": size, "device": device, "amp": amp_on,
            "trainable_M": round(trainable / 1e6, 3), "frozen_M": round(frozen / 1e6, 2),
            "peak_MiB": round(peak_mib), "memory": what, "s_per_step": round(per_step, 3),
            "threads": torch.get_num_threads()}


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, nargs="+", default=[12, 32])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA (as training uses)")
    p.add_argument("--one", nargs=2, metavar=("MODEL", "BATCH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], args.device, int(args.one[1]), args.steps, args.size, args.amp)))
        return
    rows = []
    for batch in args.batch:
        for name in args.models:
            cmd = [sys.executable, __file__, "--one", name, str(batch), "--device", args.device,
                   "--steps", str(args.steps), "--size", str(args.size)] + (["--amp"] if args.amp else [])
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                err = (proc.stderr.strip().splitlines() or ["?"])[-1]
                row = {"model": name, "batch": batch, "error": err}
            else:
                row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print("| model | batch | trainable | frozen | peak memory (MiB) | s / step |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['batch']} | | | failed: {r['error']} | |")
        else:
            print(f"| {r['model']} | {r['batch']} | {r['trainable_M']}M | {r['frozen_M']}M | {r['peak_MiB']} "
                  f"| {r['s_per_step']} |")


if __name__ == "__main__":
    main()
