"""How long a training run will take on this machine: one measured step, scaled to the run.

A user about to train on a laptop should know whether it is minutes or hours before pressing Run. The
cost of a step depends on the CPU or GPU, the thread count, the image size and the recipe far more than
on anything we could tabulate, so it is measured: one warm-up and one timed optimisation step on a small
random batch, with a Tiny-VAE of TAEF2's shape and random weights (the same cost as the real one, and no
weights needed), at each image size the recipe trains at. Per-image costs are cached per
(size, recipe, device), so changing the epochs or the number of pairs costs nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

_PER_IMAGE: dict[tuple[int, str, str], float] = {}


@dataclass(frozen=True)
class Estimate:
    """The estimated training time of a run and where it was measured."""

    seconds: float
    device: str

    def text(self) -> str:
        """``about 12 min on cpu (2 threads)``: rounded as a person would say it."""
        s = self.seconds
        if s < 90:
            amount = f"{max(10, round(s / 10) * 10):.0f} s"
        elif s < 90 * 60:
            amount = f"{round(s / 60):.0f} min"
        elif s < 48 * 3600:
            amount = f"{s / 3600:.1f} h"
        else:
            amount = f"{s / 86400:.0f} days"
        return f"about {amount} on {self.device}"


def seconds_per_image(image_size: int, recipe: str = "fast", device: str | torch.device = "auto",
                      batch: int = 2) -> float:
    """Measured seconds of one training step per image at ``image_size`` with ``recipe`` on ``device``."""
    from napari_wavegms.core.device import resolve_device
    from napari_wavegms.network import TinyVAE, WaveGMS, wavegms_loss
    from napari_wavegms.training.loop import _amp_setup, get_recipe, set_memory_layout

    dev = resolve_device(device)
    key = (image_size, recipe, str(dev))
    if key in _PER_IMAGE:
        return _PER_IMAGE[key]
    rec = get_recipe(recipe)
    model = WaveGMS(TinyVAE.random(32, pool=True), image_size).to(dev)
    set_memory_layout(model, dev, rec)
    amp, _ = _amp_setup("auto", dev, rec)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, image_size, image_size, generator=gen).to(dev)
    m = (torch.rand(batch, 1, image_size, image_size, generator=gen) > 0.5).float().to(dev)
    elapsed = 0.0
    for i in range(2):  # the first step warms up allocators and kernels
        start = time.perf_counter()
        with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss, _ = wavegms_loss(model, x, m, dice_heads=rec.dice_heads,
                                   checkpoint_decoder=rec.checkpoint_decoder)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        elapsed = time.perf_counter() - start if i else elapsed
    _PER_IMAGE[key] = elapsed / batch
    return _PER_IMAGE[key]


def estimate_training(image_size: int, epochs: int, n_train: int, *, recipe: str = "fast",
                      device: str | torch.device = "auto", time_budget_s: float | None = None,
                      n_val: int = 0) -> Estimate:
    """Estimated duration of a run: training steps at the recipe's sizes, plus validating every epoch
    (about a third of a training step per image), capped by a time budget when one is set."""
    from napari_wavegms.core.device import describe, resolve_device
    from napari_wavegms.training.loop import get_recipe, stage_size

    dev = resolve_device(device)
    rec = get_recipe(recipe)
    full = seconds_per_image(image_size, recipe, dev)
    small_size = stage_size(image_size, 0.0, rec)
    small = seconds_per_image(small_size, recipe, dev) if small_size != image_size else full
    per_epoch = n_train * (rec.small_fraction * small + (1 - rec.small_fraction) * full) + n_val * full / 3
    seconds = per_epoch * epochs
    if time_budget_s:
        seconds = min(seconds, time_budget_s)
    return Estimate(seconds, describe(dev))
