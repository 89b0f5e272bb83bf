"""The U-Net baseline the benchmarks set beside Wave-GMS, written once so that every table measures the same network.

MONAI's ``UNet`` with channels (64, 128, 256, 512, 1024), strides (2, 2, 2, 2) and one residual unit per
level: 13.4M parameters, the size of the GMS paper's 14.0M U-Net (``num_res_units=2`` would be 26M); random
initialisation, Dice + BCE loss. :class:`UNetBaseline` has Wave-GMS's ``image_size`` / ``predict`` interface,
so the engine's validation, evaluation and :class:`~napari_wavegms.inference.segmenter.Segmenter` take it as
they take Wave-GMS. Imported by the scripts beside it (``compare_unet.py``, ``bench_inference.py``,
``bench_memory.py``, ``bench_model.py``, ``time_to_accuracy.py``), whose folder Python puts on the path.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from napari_wavegms.core.device import describe, resolve_device
from napari_wavegms.core.images import resize_image
from napari_wavegms.core.progress import run_to_end
from napari_wavegms.network.wavegms import soft_dice_loss
from napari_wavegms.training.augment import AUGMENTATIONS, augment_batch
from napari_wavegms.training.config import TrainConfig
from napari_wavegms.training.data import PairDataset, make_splits
from napari_wavegms.training.evaluate import evaluate, validate
from napari_wavegms.training.schedule import Schedule

CHANNELS = (64, 128, 256, 512, 1024)


class UNetBaseline(torch.nn.Module):
    """MONAI's U-Net with Wave-GMS's ``image_size`` / ``predict`` interface, so the same validation,
    evaluation and inference apply to both."""

    def __init__(self, image_size: int = 224) -> None:
        super().__init__()
        from monai.networks.nets import UNet  # only the baseline needs MONAI

        self.image_size = image_size
        self.net = UNet(spatial_dims=2, in_channels=3, out_channels=1, channels=CHANNELS,
                        strides=(2, 2, 2, 2), num_res_units=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """Soft mask at the input's size: resized to ``image_size`` and back, as Wave-GMS predicts."""
        size = tuple(image.shape[-2:])
        x = resize_image(image, self.image_size) if size != (self.image_size,) * 2 else image
        prob = torch.sigmoid(self.net(x).float())
        if tuple(prob.shape[-2:]) != size:
            prob = F.interpolate(prob, size=size, mode="bilinear", align_corners=False)
        return prob


def unet_loss(model: torch.nn.Module, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Dice + BCE on the U-Net's logits (in float32 under autocast), the usual loss of a U-Net baseline."""
    logits = model(x).float()
    return F.binary_cross_entropy_with_logits(logits, m) + soft_dice_loss(torch.sigmoid(logits), m)


def train_unet(cfg: TrainConfig, out: Path, budget_s: float | None = None, clock: str = "wall") -> dict:
    """The same loop as :func:`napari_wavegms.training.train`, minus its bookkeeping, for the U-Net.

    With ``budget_s`` it trains until that much training time is spent (``clock`` as in
    :class:`~napari_wavegms.training.schedule.Schedule`, which also anneals the learning rate over the
    budget) rather than for ``cfg.epochs``; the result's ``curve`` lists (training seconds, validation Dice)
    after each epoch.
    """
    device = resolve_device(cfg.device)
    splits = make_splits(cfg)
    train_data = PairDataset(splits.train, cfg.image_size).to(device)
    val_data = PairDataset(splits.val, cfg.image_size).to(device)
    torch.manual_seed(cfg.seed)
    model = UNetBaseline(cfg.image_size).to(device)
    amp = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed * 1009)
    steps_per_epoch = math.ceil(len(train_data) / cfg.batch_size)
    schedule = Schedule(steps_per_epoch * cfg.epochs, round(cfg.warmup_epochs * steps_per_epoch), budget_s, clock)
    best, best_state, step, epoch_seconds, curve = -1.0, None, 0, [], []
    for epoch in range(cfg.epochs):
        t = time.perf_counter()
        model.train()
        schedule.resume()
        order = torch.randperm(len(train_data), generator=torch.Generator().manual_seed(cfg.seed + epoch)).tolist()
        for i in range(0, len(order), cfg.batch_size):
            x, m = train_data.batch(order[i:i + cfg.batch_size])
            if cfg.augment:  # the same set as the Wave-GMS run of this config (standard or robust)
                x, m = augment_batch(x, m, gen, AUGMENTATIONS[cfg.augmentation])
            for g in opt.param_groups:
                g["lr"] = cfg.lr * schedule.lr_factor(step)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                loss = unet_loss(model, x, m)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if schedule.exhausted(step):
                break
        schedule.pause()
        _, val = validate(model, val_data, batch_size=cfg.val_batch_size)
        epoch_seconds.append(time.perf_counter() - t)
        curve.append((schedule.elapsed(), val["dice"]))
        if val["dice"] > best:
            best = val["dice"]
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        print(f"unet epoch {epoch + 1}/{cfg.epochs} loss {float(loss.detach()):.3f} val Dice {val['dice']:.4f} "
              f"({epoch_seconds[-1]:.1f} s, {schedule.elapsed():.0f} s training)", flush=True)
        if schedule.exhausted(step):
            break
    model.load_state_dict(best_state)
    test = run_to_end(evaluate(model, cfg.data_dir, pairs=splits.test, csv=out / "unet_test.csv")).to_json()
    return {"test": test, "best_val_dice": best, "trainable": sum(p.numel() for p in model.parameters()),
            "s_per_epoch": sum(epoch_seconds) / len(epoch_seconds), "device": describe(device), "curve": curve}
