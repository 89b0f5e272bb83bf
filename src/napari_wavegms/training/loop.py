"""Training: a folder of image/mask pairs → a validated Wave-GMS checkpoint, honest numbers.

:func:`train` is a generator (the house convention for long jobs): it yields a :class:`TrainEvent`
after every optimisation step and every epoch, so the CLI's progress bar and the napari widget show
the same thing, and it stops cleanly when the consumer calls ``close()`` (or sets ``stop``), keeping
``last.safetensors`` and ``best.safetensors``.

How a run spends its compute (the recipes, :mod:`~napari_wavegms.training.config`) and when its learning
rate and image side change (:mod:`~napari_wavegms.training.schedule`) live beside it; the warm-up is per
*step* (never an epoch at lr 0, the reference's defect), and a ``time_budget_s`` lays the warm-up and cosine
over training time instead of steps.
The model is selected on the validation split only (highest mean Dice, paper protocol) and the test
split, if any, is scored once at the end with the selected model.

An output folder holds ``config.yaml`` (the resolved config), ``data.json`` (which names went to
which split, and every data problem), ``history.csv``, ``last.safetensors``, ``best.safetensors``
(checkpoints whose header carries the whole config, data summary and metrics),
``last.state.safetensors`` (optimizer, step and random state for ``resume``: tensors and JSON only,
nothing pickled) and, after a complete run with a test split, ``test.csv`` / ``test.json``.

Under ``torchrun`` (``WORLD_SIZE`` > 1) it trains with DistributedDataParallel (NCCL on CUDA, gloo on
CPU) and a DistributedSampler; only rank 0 validates, writes files and yields events.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from napari_wavegms.core.atomic import atomic_path
from napari_wavegms.core.device import describe, resolve_device
from napari_wavegms.core.dist import placement
from napari_wavegms.core.progress import Progress, relay
from napari_wavegms.network.checkpoint import (
    CheckpointError,
    checkpoint_header,
    load_checkpoint,
    load_train_state,
    restore_train_weights,
    save_checkpoint,
    save_train_state,
)
from napari_wavegms.training.augment import AUGMENTATIONS, augment_batch
from napari_wavegms.training.config import Recipe, TrainConfig, get_recipe
from napari_wavegms.training.data import DataError, PairDataset, make_splits
from napari_wavegms.training.evaluate import EvalResult, evaluate, validate
from napari_wavegms.training.metrics import write_csv
from napari_wavegms.training.schedule import Schedule, stage_size

if TYPE_CHECKING:
    from torch.utils.data import DataLoader, DistributedSampler

    from napari_wavegms.network import WaveGMS
    from napari_wavegms.training.data import Splits

log = logging.getLogger(__name__)

CHECKPOINTS = ("best.safetensors", "last.safetensors")
STATE_FILE = "last.state.safetensors"


# ---------------------------------------------------------------- events and results
@dataclass
class TrainEvent(Progress):
    """A training event; ``done``/``total`` count optimisation steps.

    ``kind`` is ``"prepare"`` (data loading; ``info`` holds ``splits`` and ``problems`` once known),
    ``"step"``, ``"epoch"`` (``val`` holds dice/iou/hd95 when validated) or ``"done"`` (``info`` holds
    ``test`` metrics when a test split was scored).
    """

    kind: str = "step"
    epoch: int = 0
    epochs: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    val: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    device: str = ""


@dataclass
class TrainResult:
    output_dir: Path
    best: Path
    last: Path
    history: list[dict]
    test: dict | None
    stopped: bool


# ---------------------------------------------------------------- distributed context
class _Dist:
    """Process-group bookkeeping for torchrun; a no-op for one process."""

    def __init__(self) -> None:
        where = placement()
        self.world, self.rank = where.world, where.rank
        self.created = False

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def init(self, device: torch.device) -> None:
        import torch.distributed as dist

        if self.active and not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.created = True

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def gather(self, obj: Any) -> list[Any]:
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.created and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
            self.created = False


class _LossView:
    """What :func:`wavegms_loss` needs from a model (``__call__`` and ``.vae``), routed through DDP."""

    def __init__(self, ddp: torch.nn.Module) -> None:
        self.ddp, self.vae = ddp, ddp.module.vae

    def __call__(self, image: torch.Tensor):
        return self.ddp(image)


# ---------------------------------------------------------------- precision and sizes
def _amp_setup(amp: str, device: torch.device, recipe: Recipe) -> tuple[torch.dtype | None, Any]:
    """Autocast dtype and gradient scaler: CUDA as ``amp`` says; bf16 on a CPU only where it is native."""
    from napari_wavegms.core.device import native_bf16

    if amp not in ("auto", "bf16", "fp16", "off"):
        raise ValueError(f"unknown amp setting {amp!r}: use auto, bf16, fp16 or off")
    if amp == "off":
        return None, None
    if device.type == "cpu":
        native = recipe.cpu_bf16 and amp == "auto" and native_bf16(device)
        return (torch.bfloat16, None) if native or amp == "bf16" else (None, None)
    if device.type != "cuda":
        return None, None
    if amp in ("auto", "bf16") and torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def set_memory_layout(model: torch.nn.Module, device: torch.device, recipe: Recipe, channels_last: bool = True
                      ) -> None:
    """Channels-last as training uses it: the whole model on CUDA (``channels_last``), the frozen Tiny-VAE
    alone on a CPU where the recipe asks (E_wave's narrow convolutions are slower that way there)."""
    if device.type == "cuda":
        if channels_last:
            model.to(memory_format=torch.channels_last)
    elif device.type == "cpu" and recipe.vae_channels_last:
        model.vae.use_channels_last(True)


def _shrink(x: torch.Tensor, m: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch at a smaller side: the image as inference resizes it, the mask by area then ≥ 0.5."""
    from torch.nn import functional as F

    from napari_wavegms.core.images import resize_image

    if x.shape[-1] == size:
        return x, m
    return resize_image(x, size), (F.interpolate(m.float(), size=(size, size), mode="area") >= 0.5).to(m.dtype)


# ---------------------------------------------------------------- training
def _check_output(out: Path, config: TrainConfig) -> None:
    existing = [n for n in (*CHECKPOINTS, STATE_FILE) if (out / n).exists()]
    if config.resume:
        if not (out / "last.safetensors").is_file():
            raise FileNotFoundError(f"{out}: nothing to resume (no last.safetensors)")
    elif existing and not config.overwrite:
        raise FileExistsError(
            f"{out} already holds a training run ({', '.join(existing)}); resume it (--resume), "
            "choose another output folder, or allow replacing it (--overwrite)"
        )


def _build_model(config: TrainConfig, out: Path):
    from napari_wavegms.network import WaveGMS, load_tiny_vae
    from napari_wavegms.zoo.registry import resolve_model

    if config.resume:
        model, _ = load_checkpoint(
            out / "last.safetensors", need_encoder=True, weights_dir=config.weights_dir
        )
        return model, {"resumed_from": str(out / "last.safetensors")}
    if config.init_from:
        path = resolve_model(config.init_from)
        model, ck = load_checkpoint(path, need_encoder=True, weights_dir=config.weights_dir)
        model.image_size = config.image_size
        return model, {"init_from": str(path), "init_from_vae": ck.get("tiny_vae", {}).get("name")}
    torch.manual_seed(config.seed)
    vae = load_tiny_vae(config.tiny_vae, config.weights_dir, need_encoder=True)
    return WaveGMS(vae, config.image_size), {}


def train(
    config: TrainConfig, stop: threading.Event | Callable[[], bool] | None = None
) -> Generator[TrainEvent, None, TrainResult]:
    """Train Wave-GMS as ``config`` says, yielding events; see the module docstring.

    ``stop`` (an Event or a callable) is checked after every step: when set, the run saves ``last``
    and returns a :class:`TrainResult` with ``stopped=True``. Calling ``close()`` on the generator
    does the same without a result.
    """
    if config.image_size % 8:
        raise ValueError(f"image_size must be a multiple of 8, got {config.image_size}")
    if config.batch_size < 1 or config.epochs < 1:
        raise ValueError("batch_size and epochs must be at least 1")
    if config.augmentation not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {config.augmentation!r}; use one of {', '.join(AUGMENTATIONS)}")
    get_recipe(config.recipe)
    should_stop = (stop.is_set if isinstance(stop, threading.Event) else stop) or (lambda: False)
    dist = _Dist()
    if dist.active and config.time_budget_s:
        # each process would see its own clock: ranks would stop, resize and set the learning rate apart
        raise ValueError("a time budget is for one process; under torchrun give the number of epochs instead")
    device = resolve_device(config.device)
    dist.init(device)
    try:
        result = yield from _train(_Run(config, device, dist), should_stop)
    finally:
        dist.close()
    return result


@dataclass(eq=False)
class _Run:
    """The whole state of one training run, declared in one place and shared by the pieces of :func:`_train`.

    What it is given, what follows from that at once, what each stage builds (``None`` until
    :func:`_build_model`, :func:`_prepare_data` or :func:`_build_training` sets it) and the progress that
    ``last.state.safetensors`` keeps for a resume.
    """

    config: TrainConfig
    device: torch.device
    dist: _Dist
    # from the above, at once
    recipe: Recipe = field(init=False)
    out: Path = field(init=False)
    dev_name: str = field(init=False)
    t_start: float = field(init=False)
    cuda: bool = field(init=False)
    channels_last: bool = field(init=False)
    # _build_model
    model: WaveGMS | None = None
    origin: dict[str, str] = field(default_factory=dict)  # where the weights came from (resume, init_from)
    # _prepare_data
    splits: Splits | None = None
    train_data: PairDataset | None = None
    val_data: PairDataset | None = None
    data_info: dict[str, Any] = field(default_factory=dict)
    # _build_training
    amp_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    optimizer: torch.optim.Optimizer | None = None
    sampler: DistributedSampler | None = None
    loader: DataLoader | None = None  # None when the pairs are preloaded (batches are sliced from memory)
    net: WaveGMS | _LossView | None = None  # what the loss calls: the model, or its DDP wrapper
    schedule: Schedule | None = None
    aug_gen: torch.Generator | None = None
    steps_per_epoch: int = 0
    total_steps: int = 0
    header_base: dict[str, Any] = field(default_factory=dict)
    # progress (restored by a resume)
    epoch: int = 0
    step: int = 0
    best_dice: float = -math.inf
    history: list[dict] = field(default_factory=list)
    val_summary: dict[str, float] = field(default_factory=dict)
    dirty: bool = False  # trained since ``last`` was saved

    def __post_init__(self) -> None:
        self.recipe = get_recipe(self.config.recipe)
        self.out = Path(self.config.output_dir).expanduser()
        self.dev_name = describe(self.device) + (f" ×{self.dist.world} (DDP)" if self.dist.active else "")
        self.t_start = time.perf_counter()
        self.cuda = self.device.type == "cuda"
        self.channels_last = self.cuda and self.config.channels_last

    def event(self, kind: str, done: int, total: int, message: str = "", **kw: Any) -> TrainEvent:
        seconds = kw.pop("seconds", time.perf_counter() - self.t_start)
        return TrainEvent(done, total, message, kind=kind, epochs=self.config.epochs, device=self.dev_name,
                          seconds=seconds, **kw)

    @property
    def best_path(self) -> Path:
        return self.out / "best.safetensors"

    @property
    def last_path(self) -> Path:
        return self.out / "last.safetensors"

    def header(self) -> dict:
        return {**self.header_base, "epoch": self.epoch, "step": self.step, "metrics": {"val": self.val_summary}}

    def save_last(self) -> None:
        meta = {
            "epoch": self.epoch,
            "step": self.epoch * self.steps_per_epoch,  # a resume repeats an interrupted epoch
            "best_dice": self.best_dice if math.isfinite(self.best_dice) else None,
            "history": self.history,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "spent_s": self.schedule.elapsed(),
        }
        rng = {"aug": self.aug_gen.get_state(), "cpu": torch.get_rng_state()}
        # the state first, with the weights it belongs to: a kill before the checkpoint is written
        # leaves a state that resumes on its own (see _restore_state)
        save_train_state(self.out / STATE_FILE, self.optimizer, meta, rng, model=self.model)
        save_checkpoint(self.last_path, self.model, self.header())


def _prepare_data(run: _Run) -> Generator[TrainEvent, None, None]:
    """Pair and split the data, load it (resized) and write ``data.json`` and ``config.yaml``."""
    config, dist = run.config, run.dist
    splits = run.splits = make_splits(config)
    if dist.main:
        info = {"splits": splits.sizes(), "problems": list(splits.problems)}
        yield run.event("prepare", 0, 0, f"loading {len(splits.train) + len(splits.val)} pairs", info=info)
    limit = config.preload_limit_mb << 20
    threads = max(1, min(8, os.cpu_count() or 1))
    job = PairDataset.loading(splits.train, config.image_size, preload=config.preload, max_bytes=limit,
                              threads=threads)

    def progress(p: tuple[int, int]) -> TrainEvent | None:
        return run.event("prepare", 0, 0, f"loading training pairs {p[0]}/{p[1]}") if dist.main else None

    run.train_data = yield from relay(job, progress)
    run.val_data = PairDataset(splits.val, config.image_size, preload=True, max_bytes=limit, threads=threads)
    problems = splits.problems + run.train_data.problems + run.val_data.problems
    notes = splits.notes + run.train_data.notes + run.val_data.notes
    if len(run.train_data) == 0:
        raise DataError(f"no readable training pairs in {config.data_dir}: " + "; ".join(problems[:5]))
    sizes = {"train": len(run.train_data), "val": len(run.val_data), "test": len(splits.test)}
    run.data_info = {"data_dir": str(config.data_dir), "splits": sizes, "split_source": splits.how,
                     "problems": len(problems)}
    if not dist.main:
        return
    names = {"train": run.train_data.names, "val": run.val_data.names, "test": [p.name for p in splits.test]}
    with atomic_path(run.out / "data.json") as tmp:
        Path(tmp).write_text(json.dumps({**run.data_info, "problems": problems, "notes": notes, "names": names},
                                        indent=1))
    config.to_yaml(run.out / "config.yaml")
    message = f"{sizes['train']} train / {sizes['val']} val / {sizes['test']} test pairs"
    yield run.event("prepare", 0, 0, message, info={"splits": sizes, "problems": problems, "notes": notes})


def _build_training(run: _Run) -> None:
    """Model on its device, optimiser, sampler, schedule and random state; a resumed run's state restored."""
    from torch.utils.data import DataLoader, DistributedSampler

    config, dist, device = run.config, run.dist, run.device
    if not config.resume:
        torch.manual_seed(config.seed + 7919 * dist.rank)  # latent sampling noise differs between ranks
    run.model.to(device)
    if run.cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    set_memory_layout(run.model, device, run.recipe, run.channels_last)
    if config.preload and run.cuda and run.train_data.preloaded:
        run.train_data.to(device)
        run.val_data.to(device)
    run.amp_dtype, run.scaler = _amp_setup(config.amp, device, run.recipe)
    run.optimizer = torch.optim.AdamW(run.model.trainable_parameters(), lr=config.lr,
                                      weight_decay=config.weight_decay)
    run.sampler = DistributedSampler(run.train_data, num_replicas=dist.world, rank=dist.rank, shuffle=True,
                                     seed=config.seed, drop_last=False)
    run.steps_per_epoch = max(1, math.ceil(len(run.sampler) / config.batch_size))
    total = run.steps_per_epoch * config.epochs
    warmup = min(round(config.warmup_epochs * run.steps_per_epoch), round(run.recipe.warmup_cap * total))
    run.schedule = Schedule(total, warmup, config.time_budget_s, config.time_budget_clock)
    run.aug_gen = torch.Generator().manual_seed(config.seed * 1009 + dist.rank)
    if config.resume:
        _restore_state(run)
    run.net = run.model
    if dist.active:
        from torch.nn.parallel import DistributedDataParallel as DDP

        run.net = _LossView(DDP(run.model, device_ids=[device.index] if run.cuda else None))
    run.loader = None
    if not run.train_data.preloaded:
        run.loader = DataLoader(run.train_data, batch_size=config.batch_size, sampler=run.sampler,
                                num_workers=config.num_workers, pin_memory=run.cuda,
                                persistent_workers=config.num_workers > 0)
    amp = str(run.amp_dtype) if run.amp_dtype else "off"
    run.header_base = {
        "training": config.to_dict(),
        "data": run.data_info,
        "run": {"world_size": dist.world, "device": run.dev_name, "amp": amp, "recipe": run.recipe.name},
        **run.origin,
    }


def _restore_state(run: _Run) -> None:
    """Optimizer, counters, random state and the weights they belong to, from ``last.state.safetensors``.

    The state file keeps the weights it was saved with, so a run killed after writing it but before
    ``last.safetensors`` resumes from a consistent pair (the newer one). A state file from before it
    kept weights is used only if its epoch is the weights' epoch.
    """
    state_path = run.out / STATE_FILE
    meta, rng = load_train_state(state_path, run.optimizer)
    weights_epoch = checkpoint_header(run.last_path).get("epoch")
    if restore_train_weights(state_path, run.model):
        if weights_epoch != meta["epoch"]:
            log.warning("%s is from epoch %s but %s from epoch %s (the run was stopped while saving them); "
                        "resuming from epoch %s with the weights kept in %s",
                        run.last_path.name, weights_epoch, STATE_FILE, meta["epoch"], meta["epoch"], STATE_FILE)
    elif weights_epoch != meta["epoch"]:
        raise CheckpointError(
            f"{run.out}: {STATE_FILE} is from epoch {meta['epoch']} but last.safetensors from epoch "
            f"{weights_epoch} (the run was stopped while saving them), so a resume would skip or repeat "
            f"training. Start a new run from its weights instead (--init-from {run.last_path}, in another "
            "output folder or with --overwrite)"
        )
    run.epoch, run.history = meta["epoch"], meta["history"]
    run.step = run.epoch * run.steps_per_epoch
    run.best_dice = -math.inf if meta["best_dice"] is None else meta["best_dice"]
    run.schedule.spent = float(meta.get("spent_s") or 0.0)
    if "aug" in rng:
        run.aug_gen.set_state(rng["aug"])
    if "cpu" in rng:
        torch.set_rng_state(rng["cpu"])
    if run.scaler is not None and meta.get("scaler"):
        run.scaler.load_state_dict(meta["scaler"])


def _batches(run: _Run):
    """This epoch's ``(image, mask, indices)`` batches on the device, this rank's share."""
    if run.loader is not None:
        for x, m, idx in run.loader:
            yield x, m, idx.tolist()
        return
    order = list(run.sampler)
    for i in range(0, len(order), run.config.batch_size):
        idx = order[i:i + run.config.batch_size]
        yield (*run.train_data.batch(idx), idx)


def _train_step(run: _Run, x: torch.Tensor, m: torch.Tensor) -> tuple[float, dict[str, float]]:
    """Augment, resize for the recipe's stage, one optimisation step; returns the lr and the loss parts."""
    from napari_wavegms.network import wavegms_loss

    config, device = run.config, run.device
    x, m = x.to(device, non_blocking=True), m.to(device, non_blocking=True)
    if config.augment:
        x, m = augment_batch(x, m, run.aug_gen, AUGMENTATIONS[config.augmentation])
    x, m = _shrink(x, m, stage_size(config.image_size, run.schedule.progress(run.step), run.recipe))
    if run.channels_last:
        x, m = x.contiguous(memory_format=torch.channels_last), m.contiguous(memory_format=torch.channels_last)
    lr = config.lr * run.schedule.lr_factor(run.step)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast(device.type, dtype=run.amp_dtype or torch.float32, enabled=run.amp_dtype is not None):
        loss, parts = wavegms_loss(run.net, x, m, dice_heads=run.recipe.dice_heads,
                                   checkpoint_decoder=run.recipe.checkpoint_decoder)
    if not math.isfinite(parts["total"]):
        raise FloatingPointError(f"the loss became {parts['total']} at step {run.step + 1} "
                                 f"(epoch {run.epoch + 1}); lower the learning rate or use amp: off")
    run.optimizer.zero_grad(set_to_none=True)
    if run.scaler is not None:
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        loss.backward()
        run.optimizer.step()
    run.step += 1
    return lr, parts


def _end_epoch(run: _Run, seen: list[int], sums: dict[str, float], n_batches: int, lr: float, seconds: float,
               last: bool) -> TrainEvent | None:
    """Validate (rank 0), keep ``best``, save ``last`` and the history; the epoch's event on rank 0."""
    config, dist = run.config, run.dist
    all_seen = [i for part in dist.gather(seen) for i in part]
    losses = {k: v / max(1, n_batches) for k, v in sums.items()}
    validate_now = len(run.val_data) > 0 and (run.epoch % max(1, config.val_every) == 0 or last)
    row: dict[str, Any] = {"epoch": run.epoch, "step": run.step, "lr": lr, **losses}
    if not dist.main:
        return None
    if validate_now:
        _, run.val_summary = validate(run.model, run.val_data, batch_size=config.val_batch_size,
                                      threshold=config.threshold, amp_dtype=run.amp_dtype,
                                      channels_last=run.channels_last)
        row.update({f"val_{k}": run.val_summary[k] for k in ("dice", "iou", "hd95", "dice_std")})
    row.update({"seconds": seconds, "train_seconds": run.schedule.elapsed(), "samples_seen": len(all_seen),
                "samples_unique": len(set(all_seen))})
    run.history.append(row)
    improved = validate_now and run.val_summary["dice"] > run.best_dice
    if improved:
        run.best_dice = run.val_summary["dice"]
    run.save_last()
    if improved or len(run.val_data) == 0 or not run.best_path.exists():
        save_checkpoint(run.best_path, run.model, run.header())
    write_csv(run.out / "history.csv", run.history)
    msg = f"epoch {run.epoch}/{config.epochs} loss {losses.get('total', math.nan):.3f}"
    if validate_now:
        msg += f" val Dice {run.val_summary['dice']:.4f} (best {run.best_dice:.4f})"
    info = {"lr": lr, "best_dice": run.best_dice, "improved": improved, "history": row}
    val = dict(run.val_summary) if validate_now else {}
    return run.event("epoch", run.step, run.total_steps, msg, epoch=run.epoch, losses=losses, val=val,
                     seconds=seconds, info=info)


def _epochs(run: _Run, should_stop: Callable[[], bool]) -> Generator[TrainEvent, None, bool]:
    """The epochs: steps with their events, then the end of each epoch. Returns whether it was stopped."""
    config, dist = run.config, run.dist
    run.total_steps = run.steps_per_epoch * config.epochs
    run.model.train()
    for epoch in range(run.epoch, config.epochs):
        run.sampler.set_epoch(epoch)
        t_epoch = time.perf_counter()
        sums: dict[str, float] = {}
        seen: list[int] = []
        n_batches, stopped, lr = 0, False, 0.0
        run.schedule.resume()
        for x, m, idx in _batches(run):
            lr, parts = _train_step(run, x, m)
            run.dirty = True
            n_batches += 1
            seen += idx
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            if dist.main:
                yield run.event("step", run.step, run.total_steps,
                                f"epoch {epoch + 1}/{config.epochs} loss {parts['total']:.3f}", epoch=epoch + 1,
                                losses=dict(parts), info={"lr": lr})
            over = run.schedule.exhausted(run.step)
            if should_stop() or over or (config.max_steps is not None and run.step >= config.max_steps):
                stopped = not over
                break
        run.schedule.pause()
        if stopped and n_batches < run.steps_per_epoch:
            return True  # a partial epoch: the caller saves `last`; resume restarts this epoch
        run.epoch = epoch + 1
        last = run.epoch == config.epochs or stopped or run.schedule.exhausted(run.step)
        event = _end_epoch(run, seen, sums, n_batches, lr, time.perf_counter() - t_epoch, last)
        run.dirty = False
        if event is not None:
            yield event
        dist.barrier()
        if last and run.epoch < config.epochs:
            return stopped
    return False


def _test_once(run: _Run) -> Generator[TrainEvent, None, dict]:
    """Score the selected (best) model on the test split, once, and record it in its checkpoint."""
    best_model, best_cfg = load_checkpoint(run.best_path, device=run.device)
    job = evaluate(best_model, run.config.data_dir, pairs=run.splits.test, batch_size=run.config.val_batch_size,
                   threshold=run.config.threshold, csv=run.out / "test.csv")
    result: EvalResult = yield from relay(job, lambda p: run.event(
        "done", run.step, run.total_steps, f"testing {p.done}/{p.total}", epoch=run.epoch))
    test = result.to_json()
    with atomic_path(run.out / "test.json") as tmp:
        Path(tmp).write_text(json.dumps(test, indent=1))
    best_cfg.setdefault("metrics", {})["test"] = test
    save_checkpoint(run.best_path, best_model, best_cfg)
    return test


def _train(run: _Run, should_stop: Callable[[], bool]) -> Generator[TrainEvent, None, TrainResult]:
    """Data, model, the epochs, and the test split once; ``last``/``best`` are kept however it ends."""
    dist = run.dist
    if dist.main:
        _check_output(run.out, run.config)
    # the model (and the frozen Tiny-VAE) before any file is written: a missing Tiny-VAE fails at once,
    # leaving no run folder behind
    run.model, run.origin = _build_model(run.config, run.out)
    if dist.main:
        run.out.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    yield from _prepare_data(run)
    _build_training(run)
    stopped = False
    try:
        stopped = yield from _epochs(run, should_stop)
    finally:
        if run.dirty and dist.main:
            # stopped mid-epoch (close() or stop): keep the weights; the epoch counter stays at the last
            # complete epoch so a resume repeats the interrupted epoch.
            run.save_last()
            if not run.best_path.exists():
                save_checkpoint(run.best_path, run.model, run.header())
    dist.barrier()
    test = None
    if dist.main and run.splits.test and not stopped:
        test = yield from _test_once(run)
    if dist.main:
        message = "stopped" if stopped else f"finished: best val Dice {run.best_dice:.4f}"
        info = {"test": test, "best_dice": run.best_dice, "output_dir": str(run.out)}
        yield run.event("done", run.step, run.total_steps, message, epoch=run.epoch, val=dict(run.val_summary),
                        info=info)
    return TrainResult(run.out, run.best_path, run.last_path, run.history, test, stopped)


# ---------------------------------------------------------------- command-line driver
def train_with_progress(config: TrainConfig, quiet: bool = False, job: Generator | None = None,
                        report: Callable[[Any], int] | None = None) -> int:
    """Run :func:`train` (or ``job``, a generator that wraps it, such as a fine-tune) with a tqdm bar and
    one line per epoch (rank 0 only); Ctrl-C stops cleanly, keeping ``last`` and ``best``. ``report``
    gets the job's result and returns the exit status. Returns the exit status for ``wavegms-train``."""
    import sys

    from tqdm.auto import tqdm

    from napari_wavegms.zoo.downloads import HashMismatchError, WeightsUnavailableError

    main = placement().main
    job = job if job is not None else train(config)
    bar = tqdm(desc="training", unit="step", disable=quiet or not main, dynamic_ncols=True)
    say = (lambda msg: None) if quiet or not main else (lambda msg: tqdm.write(msg, file=sys.stderr))
    try:
        while True:
            try:
                ev = next(job)
            except StopIteration as stop_it:
                result: TrainResult = stop_it.value
                break
            _show(ev, bar, say, config.output_dir)
    except KeyboardInterrupt:
        job.close()
        bar.close()
        say(f"stopped: checkpoints kept in {config.output_dir} (continue with --resume)")
        return 130
    except (OSError, ValueError, CheckpointError, WeightsUnavailableError, HashMismatchError) as err:
        bar.close()
        print(f"wavegms-train: {err}", file=sys.stderr)
        return 1
    bar.close()
    if report is not None:
        return report(result)
    if main and not quiet:
        print(f"best: {result.best}\nlast: {result.last}")
    return 0


def _show(ev: TrainEvent, bar: Any, say: Callable[[str], None], output_dir: str) -> None:
    """One event on the terminal: the bar follows steps; data problems, epochs and the test get a line."""
    if not isinstance(ev, TrainEvent):  # what follows training (a fine-tune's scoring)
        bar.set_description_str(ev.message[:60])
    elif ev.kind == "prepare":
        bar.set_description_str(ev.message[:60])
        if "problems" in ev.info and ev.info["problems"] and "notes" in ev.info:
            probs = ev.info["problems"]
            say(f"{len(probs)} data problem(s) (details in {output_dir}/data.json):")
            for p in probs[:10]:
                say(f"  {p}")
            if len(probs) > 10:
                say(f"  … and {len(probs) - 10} more")
        if "notes" in ev.info:
            say(f"data: {ev.message} on {ev.device}")
    elif ev.kind == "step":
        bar.set_description_str(f"epoch {ev.epoch}/{ev.epochs}")
        bar.total, bar.n = ev.total, ev.done
        bar.set_postfix(
            loss=f"{ev.losses.get('total', math.nan):.3f}",
            lr=f"{ev.info.get('lr', 0):.2e}",
            refresh=False,
        )
        bar.refresh()
    elif ev.kind == "epoch":
        say(f"{ev.message}  ({ev.seconds:.1f} s)")
    elif ev.kind == "done" and ev.info.get("test"):
        t = ev.info["test"]
        say(
            f"test ({t['n']} images, best model): Dice {t['dice']:.4f}  IoU {t['iou']:.4f}  "
            f"HD95 {t['hd95']:.2f} px  |  native Dice {t['native']['dice']:.4f}  "
            f"IoU {t['native']['iou']:.4f}  HD95 {t['native']['hd95'] or math.nan:.2f} px"
        )
