"""Training and evaluation: a folder of image/mask pairs → a validated Wave-GMS checkpoint, honest numbers.

:func:`train` is a generator (the house convention for long jobs): it yields a :class:`TrainEvent`
after every optimisation step and every epoch, so the CLI's progress bar and the napari widget show
the same thing, and it stops cleanly when the consumer calls ``close()`` (or sets ``stop``), keeping
``last.safetensors`` and ``best.safetensors``.

Recipe (DESIGN.md §1.4): the Wave-GMS loss, AdamW (lr 2e-3, weight decay 0.01), a linear warm-up
per *step* over ``warmup_epochs`` (never an epoch at lr 0, the reference's defect) then cosine to 0,
seeded. The model is selected on the validation split only (highest mean Dice, paper protocol) and
the test split, if any, is scored once at the end with the selected model.

An output folder holds ``config.yaml`` (the resolved config), ``data.json`` (which names went to
which split, and every data problem), ``history.csv``, ``last.safetensors``, ``best.safetensors``
(checkpoints whose header carries the whole config, data summary and metrics),
``last.state.safetensors`` (optimizer, step and random state for ``resume``: tensors and JSON only,
nothing pickled) and, after a complete run with a test split, ``test.csv`` / ``test.json``.

Under ``torchrun`` (``WORLD_SIZE`` > 1) it trains with DistributedDataParallel (NCCL on CUDA, gloo on
CPU) and a DistributedSampler; only rank 0 validates, writes files and yields events.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_path
from .augment import augment_batch
from .data import DataError, Pair, PairDataset, carve, read_split, resolve_split, scan_pairs
from .device import describe, resolve_device
from .evaluation import EvalResult, evaluate
from .metrics import score, summarize, write_csv
from .model.checkpoint import CheckpointError, load_checkpoint, load_train_state, save_checkpoint, save_train_state
from .progress import Progress, relay

CHECKPOINTS = ("best.safetensors", "last.safetensors")
STATE_FILE = "last.state.safetensors"


# ---------------------------------------------------------------- configuration
@dataclass
class TrainConfig:
    """Everything about a run; saved as ``config.yaml`` and inside every checkpoint's header.

    Relative input paths in a YAML file (``data_dir``, ``val_dir``, ``weights_dir``, a checkpoint in
    ``init_from``) are read relative to the YAML file's folder, so a config works from any current
    folder; split files are relative to ``data_dir``; ``output_dir`` is relative to the current folder.
    """

    data_dir: str = ""
    images: str = "images"
    masks: str = "masks"
    train_split: str | None = None  # list file of stems; None = every pair not in val/test
    val_split: str | None = None  # list file; None = carve val_fraction from the training pairs
    test_split: str | None = None  # list file; scored once at the end with the best model
    val_fraction: float = 0.1
    test_fraction: float = 0.0  # carve a test split from the training pairs when none is given
    val_dir: str | None = None  # a separate validation folder with images/ and masks/
    image_size: int = 224
    epochs: int = 100
    batch_size: int = 12
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_epochs: float = 5
    seed: int = 2333
    tiny_vae: str = "taef2"
    weights_dir: str | None = None
    device: str = "auto"
    output_dir: str = "runs/wavegms"
    init_from: str | None = None  # fine-tune: a built-in model name or a checkpoint / run folder
    resume: bool = False  # continue output_dir's last.safetensors
    overwrite: bool = False  # allow starting a fresh run in a folder that holds one
    augment: bool = True
    preload: bool = True  # keep resized pairs in memory (bounded by preload_limit_mb)
    preload_limit_mb: int = 4096
    num_workers: int = 0  # DataLoader workers when pairs are not preloaded
    amp: str = "auto"  # CUDA mixed precision: auto (bf16 if supported, else fp16) | bf16 | fp16 | off
    channels_last: bool = True  # CUDA only
    val_every: int = 1  # validate every N epochs (and after the last)
    val_batch_size: int = 32
    threshold: float = 0.5
    max_steps: int | None = None  # stop after this many optimisation steps in total (smoke tests)
    name: str = ""  # a free description of the run

    _PATH_FIELDS = ("data_dir", "val_dir", "weights_dir")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, **overrides: Any) -> TrainConfig:
        """Load a YAML config; ``overrides`` (e.g. from the command line, relative to the current
        folder) replace its values; ``None`` overrides are ignored."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such config file")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path} is not valid YAML: {err}") from err
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a mapping of option: value")
        base = path.resolve().parent
        for key in cls._PATH_FIELDS:
            if values.get(key):
                values[key] = str(_resolve_from(values[key], base))
        init = values.get("init_from")
        if init and (base / os.path.expanduser(init)).exists() and not Path(init).is_absolute():
            values["init_from"] = str((base / init).resolve())
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(values)

    def to_yaml(self, path: str | os.PathLike) -> Path:
        import yaml

        with atomic_path(path) as tmp:
            Path(tmp).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return Path(path)


def _resolve_from(value: str, base: Path) -> Path:
    p = Path(os.path.expandvars(os.path.expanduser(str(value))))
    return p if p.is_absolute() else (base / p).resolve()


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


@dataclass
class Splits:
    """The pairs of each split and what went wrong finding them."""

    train: list[Pair]
    val: list[Pair]
    test: list[Pair]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    how: dict[str, str] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def make_splits(config: TrainConfig) -> Splits:
    """Pair the data folder and split it as ``config`` says; raises :class:`DataError` for zero
    training pairs. Other problems are collected, not raised."""
    if not config.data_dir:
        raise DataError("no data folder given (data_dir / --data)")
    data_dir = Path(config.data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data folder not found")
    scan = scan_pairs(data_dir / config.images, data_dir / config.masks)
    problems = list(scan.problems)
    by_name = {p.name: p for p in scan.pairs}
    how: dict[str, str] = {}

    def listed(split: str, what: str) -> list[Pair]:
        path = resolve_split(split, data_dir)
        names = read_split(path)
        missing = [n for n in names if n not in by_name]
        if missing:
            problems.append(
                f"{path}: {len(missing)} of {len(names)} {what} names have no image/mask pair "
                f"(e.g. {', '.join(missing[:5])})"
            )
        how[what] = str(path)
        return [by_name[n] for n in dict.fromkeys(names) if n in by_name]

    test = listed(config.test_split, "test") if config.test_split else []
    val = listed(config.val_split, "val") if config.val_split else []
    if config.train_split:
        train = listed(config.train_split, "train")
    else:
        held = {p.name for p in test + val}
        train = [p for p in scan.pairs if p.name not in held]
        how["train"] = "all pairs not in the other splits"
    held_out = {p.name for p in test} | {p.name for p in val}
    overlap = [p.name for p in train if p.name in held_out]
    if overlap:
        problems.append(
            f"{len(overlap)} training names are also in the validation or test split and are left "
            f"out of training (e.g. {', '.join(overlap[:5])})"
        )
        train = [p for p in train if p.name not in held_out]
    if not test and config.test_fraction > 0:
        kept, carved = carve([p.name for p in train], config.test_fraction, config.seed + 1)
        test = [by_name[n] for n in carved]
        train = [by_name[n] for n in kept]
        how["test"] = f"{config.test_fraction:g} of the training pairs (seed {config.seed + 1})"
    notes: list[str] = []
    if config.val_dir:
        vdir = Path(config.val_dir)
        vscan = scan_pairs(vdir / config.images, vdir / config.masks)
        problems += vscan.problems
        val = vscan.pairs
        how["val"] = str(vdir)
    elif not config.val_split:
        kept, carved = carve([p.name for p in train], config.val_fraction, config.seed)
        if not carved:
            notes.append(
                f"{len(train)} training pair(s): no validation split; the best model is the last one"
            )
        val = [by_name[n] for n in carved]
        train = [by_name[n] for n in kept]
        how["val"] = f"{config.val_fraction:g} of the training pairs (seed {config.seed})"
    if not train:
        detail = "; ".join(problems[:5]) or "no pairs left for training after the validation/test splits"
        raise DataError(f"no image/mask pairs to train on in {data_dir} ({detail})")
    return Splits(train, val, test, problems, notes, how)


# ---------------------------------------------------------------- distributed context
class _Dist:
    """Process-group bookkeeping for torchrun; a no-op for one process."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
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


# ---------------------------------------------------------------- optimisation helpers
def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps (first step at lr/warmup, not 0), then cosine to 0."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _amp_setup(amp: str, device: torch.device) -> tuple[torch.dtype | None, Any]:
    if device.type != "cuda" or amp == "off":
        return None, None
    if amp in ("auto", "bf16") and torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    if amp in ("auto", "fp16", "bf16"):
        return torch.float16, torch.amp.GradScaler("cuda")
    raise ValueError(f"unknown amp setting {amp!r}: use auto, bf16, fp16 or off")


# ---------------------------------------------------------------- validation
@torch.no_grad()
def validate(
    model: torch.nn.Module,
    data: PairDataset,
    *,
    batch_size: int = 32,
    threshold: float = 0.5,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> tuple[list[dict], dict[str, float]]:
    """Paper-protocol Dice/IoU/HD95 of ``model`` on a resized data set (per-image rows, summary)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    rows: list[dict] = []
    try:
        for start in range(0, len(data), batch_size):
            idx = list(range(start, min(len(data), start + batch_size)))
            x, m = data.batch(idx)
            x = x.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                prob = model.predict(x)
            pred = (prob.float() > threshold).cpu().numpy()
            gt = m.cpu().numpy() > 0.5
            for j, i in enumerate(idx):
                rows.append({"name": data.pairs[i].name, **score(pred[j, 0], gt[j, 0], "paper")})
    finally:
        model.train(was_training)
    return rows, summarize(rows)


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
    from .model import WaveGMS, load_tiny_vae
    from .models import resolve_model

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


def _write_history(path: Path, history: list[dict]) -> None:
    write_csv(path, history)


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
    should_stop = (stop.is_set if isinstance(stop, threading.Event) else stop) or (lambda: False)
    dist = _Dist()
    device = resolve_device(config.device)
    dist.init(device)
    try:
        result = yield from _train(config, device, dist, should_stop)
    finally:
        dist.close()
    return result


def _train(
    config: TrainConfig, device: torch.device, dist: _Dist, should_stop: Callable[[], bool]
) -> Generator[TrainEvent, None, TrainResult]:
    from torch.utils.data import DataLoader, DistributedSampler

    from .model import wavegms_loss

    out = Path(config.output_dir).expanduser()
    dev_name = describe(device) + (f" ×{dist.world} (DDP)" if dist.active else "")
    if dist.main:
        _check_output(out, config)
        out.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    t_start = time.perf_counter()

    def event(kind: str, done: int, total: int, message: str = "", **kw) -> TrainEvent:
        return TrainEvent(
            done,
            total,
            message,
            kind=kind,
            epochs=config.epochs,
            device=dev_name,
            seconds=kw.pop("seconds", time.perf_counter() - t_start),
            **kw,
        )

    # ---- data
    splits = make_splits(config)
    if dist.main:
        yield event(
            "prepare",
            0,
            0,
            f"loading {len(splits.train) + len(splits.val)} pairs",
            info={"splits": splits.sizes(), "problems": list(splits.problems)},
        )
    limit = config.preload_limit_mb << 20
    threads = max(1, min(8, os.cpu_count() or 1))
    train_job = PairDataset.loading(
        splits.train, config.image_size, preload=config.preload, max_bytes=limit, threads=threads
    )
    train_data: PairDataset = yield from relay(
        train_job,
        lambda p: event("prepare", 0, 0, f"loading training pairs {p[0]}/{p[1]}") if dist.main else None,
    )
    val_data = PairDataset(splits.val, config.image_size, preload=True, max_bytes=limit, threads=threads)
    problems = splits.problems + train_data.problems + val_data.problems
    notes = splits.notes + train_data.notes + val_data.notes
    if len(train_data) == 0:
        raise DataError(f"no readable training pairs in {config.data_dir}: " + "; ".join(problems[:5]))
    data_info = {
        "data_dir": str(config.data_dir),
        "splits": {"train": len(train_data), "val": len(val_data), "test": len(splits.test)},
        "split_source": splits.how,
        "problems": len(problems),
    }
    if dist.main:
        data_json = {
            **data_info,
            "problems": problems,
            "notes": notes,
            "names": {
                "train": train_data.names,
                "val": val_data.names,
                "test": [p.name for p in splits.test],
            },
        }
        with atomic_path(out / "data.json") as tmp:
            Path(tmp).write_text(json.dumps(data_json, indent=1))
        config.to_yaml(out / "config.yaml")
        yield event(
            "prepare",
            0,
            0,
            f"{len(train_data)} train / {len(val_data)} val / {len(splits.test)} test pairs",
            info={"splits": data_info["splits"], "problems": problems, "notes": notes},
        )

    # ---- model, optimizer, schedule
    model, origin = _build_model(config, out)
    if not config.resume:
        torch.manual_seed(config.seed + 7919 * dist.rank)  # latent sampling noise differs between ranks
    model.to(device)
    cuda = device.type == "cuda"
    channels_last = cuda and config.channels_last
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        if channels_last:
            model.to(memory_format=torch.channels_last)
    if config.preload and cuda and train_data.preloaded:
        train_data.to(device)
        val_data.to(device)
    amp_dtype, scaler = _amp_setup(config.amp, device)
    params = model.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    sampler = DistributedSampler(
        train_data, num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=config.seed, drop_last=False
    )
    per_rank = len(sampler)
    steps_per_epoch = max(1, math.ceil(per_rank / config.batch_size))
    total_steps = steps_per_epoch * config.epochs
    warmup = round(config.warmup_epochs * steps_per_epoch)
    aug_gen = torch.Generator().manual_seed(config.seed * 1009 + dist.rank)

    start_epoch, best_dice, history = 0, -math.inf, []
    if config.resume:
        meta, rng = load_train_state(out / STATE_FILE, optimizer)
        start_epoch, best_dice, history = meta["epoch"], meta["best_dice"], meta["history"]
        if "aug" in rng:
            aug_gen.set_state(rng["aug"])
        if "cpu" in rng:
            torch.set_rng_state(rng["cpu"])
        if scaler is not None and meta.get("scaler"):
            scaler.load_state_dict(meta["scaler"])
        if best_dice is None:
            best_dice = -math.inf
    net: Any = model
    if dist.active:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp = DDP(model, device_ids=[device.index] if cuda else None)
        net = _LossView(ddp)
    loader = None
    if not train_data.preloaded:
        loader = DataLoader(
            train_data,
            batch_size=config.batch_size,
            sampler=sampler,
            num_workers=config.num_workers,
            pin_memory=cuda,
            persistent_workers=config.num_workers > 0,
        )

    header_base = {
        "training": config.to_dict(),
        "data": data_info,
        "run": {"world_size": dist.world, "device": dev_name, "amp": str(amp_dtype) if amp_dtype else "off"},
        **origin,
    }
    val_summary: dict[str, float] = {}
    best_path, last_path = out / "best.safetensors", out / "last.safetensors"
    step = start_epoch * steps_per_epoch
    epochs_done = start_epoch
    dirty = False
    stopped = False

    def save_last(epoch_done: int, val: dict) -> None:
        meta = {
            "epoch": epoch_done,
            "step": epoch_done * steps_per_epoch,
            "best_dice": best_dice if math.isfinite(best_dice) else None,
            "history": history,
            "scaler": scaler.state_dict() if scaler is not None else None,
        }
        save_train_state(
            out / STATE_FILE, optimizer, meta, {"aug": aug_gen.get_state(), "cpu": torch.get_rng_state()}
        )
        save_checkpoint(
            last_path, model, {**header_base, "epoch": epoch_done, "step": step, "metrics": {"val": val}}
        )

    try:
        model.train()
        for epoch in range(start_epoch, config.epochs):
            sampler.set_epoch(epoch)
            t_epoch = time.perf_counter()
            sums: dict[str, float] = {}
            n_batches = 0
            seen: list[int] = []
            if loader is not None:
                batches = iter(loader)
            else:
                order = list(sampler)
                batches = (order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size))
            for batch in batches:
                if loader is not None:
                    x, m, idx = batch
                    idx = idx.tolist()
                else:
                    idx = batch
                    x, m = train_data.batch(idx)
                seen += idx
                x, m = x.to(device, non_blocking=True), m.to(device, non_blocking=True)
                if config.augment:
                    x, m = augment_batch(x, m, aug_gen)
                if channels_last:
                    x, m = (
                        x.contiguous(memory_format=torch.channels_last),
                        m.contiguous(memory_format=torch.channels_last),
                    )
                lr = config.lr * lr_factor(step, total_steps, warmup)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with torch.autocast(
                    device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
                ):
                    loss, parts = wavegms_loss(net, x, m)
                if not math.isfinite(parts["total"]):
                    raise FloatingPointError(
                        f"the loss became {parts['total']} at step {step + 1} "
                        f"(epoch {epoch + 1}); lower the learning rate or use amp: off"
                    )
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                step += 1
                n_batches += 1
                dirty = True
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v
                if dist.main:
                    yield event(
                        "step",
                        step,
                        total_steps,
                        f"epoch {epoch + 1}/{config.epochs} loss {parts['total']:.3f}",
                        epoch=epoch + 1,
                        losses=dict(parts),
                        info={"lr": lr},
                    )
                if should_stop() or (config.max_steps is not None and step >= config.max_steps):
                    stopped = True
                    break
            if stopped and n_batches < steps_per_epoch:
                break  # a partial epoch: `finally` saves `last`; resume restarts this epoch
            # ---- end of epoch: gather what was seen, validate, save
            gathered = dist.gather(seen)
            all_seen = [i for part in gathered for i in part]
            epochs_done = epoch + 1
            losses = {k: v / max(1, n_batches) for k, v in sums.items()}
            validate_now = len(val_data) > 0 and (
                epochs_done % max(1, config.val_every) == 0 or epochs_done == config.epochs or stopped
            )
            row: dict[str, Any] = {"epoch": epochs_done, "step": step, "lr": lr, **losses}
            if dist.main:
                if validate_now:
                    _, val_summary = validate(
                        model,
                        val_data,
                        batch_size=config.val_batch_size,
                        threshold=config.threshold,
                        amp_dtype=amp_dtype,
                        channels_last=channels_last,
                    )
                    row.update({f"val_{k}": val_summary[k] for k in ("dice", "iou", "hd95", "dice_std")})
                seconds = time.perf_counter() - t_epoch
                row.update(
                    {"seconds": seconds, "samples_seen": len(all_seen), "samples_unique": len(set(all_seen))}
                )
                history.append(row)
                improved = validate_now and val_summary["dice"] > best_dice
                if improved:
                    best_dice = val_summary["dice"]
                save_last(epochs_done, val_summary)
                if improved or (len(val_data) == 0) or not best_path.exists():
                    save_checkpoint(
                        best_path,
                        model,
                        {**header_base, "epoch": epochs_done, "step": step, "metrics": {"val": val_summary}},
                    )
                _write_history(out / "history.csv", history)
                dirty = False
                msg = f"epoch {epochs_done}/{config.epochs} loss {losses.get('total', math.nan):.3f}"
                if validate_now:
                    msg += f" val Dice {val_summary['dice']:.4f} (best {best_dice:.4f})"
                yield event(
                    "epoch",
                    step,
                    total_steps,
                    msg,
                    epoch=epochs_done,
                    losses=losses,
                    val=dict(val_summary) if validate_now else {},
                    seconds=seconds,
                    info={"lr": lr, "best_dice": best_dice, "improved": improved, "history": row},
                )
            dirty = False
            dist.barrier()
            if stopped:
                break
    finally:
        if dirty and dist.main:
            # stopped mid-epoch (close() or stop): keep the weights; the epoch counter stays at the last
            # complete epoch so a resume repeats the interrupted epoch.
            save_last(epochs_done, val_summary)
            if not best_path.exists():
                save_checkpoint(
                    best_path,
                    model,
                    {**header_base, "epoch": epochs_done, "step": step, "metrics": {"val": val_summary}},
                )
    dist.barrier()

    # ---- the test split, once, with the selected model
    test = None
    if dist.main and splits.test and not stopped:

        best_model, best_cfg = load_checkpoint(best_path, device=device)
        job = evaluate(
            best_model,
            config.data_dir,
            pairs=splits.test,
            batch_size=config.val_batch_size,
            threshold=config.threshold,
            csv=out / "test.csv",
        )
        result: EvalResult = yield from relay(
            job, lambda p: event("done", step, total_steps, f"testing {p.done}/{p.total}", epoch=epochs_done)
        )
        test = result.to_json()
        with atomic_path(out / "test.json") as tmp:
            Path(tmp).write_text(json.dumps(test, indent=1))
        best_cfg.setdefault("metrics", {})["test"] = test
        save_checkpoint(best_path, best_model, best_cfg)
    if dist.main:
        yield event(
            "done",
            step,
            total_steps,
            "stopped" if stopped else f"finished: best val Dice {best_dice:.4f}",
            epoch=epochs_done,
            val=dict(val_summary),
            info={"test": test, "best_dice": best_dice, "output_dir": str(out)},
        )
    return TrainResult(out, best_path, last_path, history, test, stopped)


# ---------------------------------------------------------------- command-line driver
def train_with_progress(config: TrainConfig, quiet: bool = False) -> int:
    """Run :func:`train` with a tqdm bar and one line per epoch (rank 0 only); Ctrl-C stops cleanly,
    keeping ``last`` and ``best``. Returns the exit status for ``wavegms-train``."""
    import sys

    from tqdm.auto import tqdm

    from .weights import HashMismatchError, WeightsUnavailableError

    main = int(os.environ.get("RANK", "0")) == 0
    job = train(config)
    bar = tqdm(desc="training", unit="step", disable=quiet or not main, dynamic_ncols=True)
    say = (lambda msg: None) if quiet or not main else (lambda msg: tqdm.write(msg, file=sys.stderr))
    try:
        while True:
            try:
                ev = next(job)
            except StopIteration as stop_it:
                result: TrainResult = stop_it.value
                break
            if ev.kind == "prepare":
                bar.set_description_str(ev.message[:60])
                if "problems" in ev.info and ev.info["problems"] and "notes" in ev.info:
                    probs = ev.info["problems"]
                    say(f"{len(probs)} data problem(s) (details in {config.output_dir}/data.json):")
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
    if main and not quiet:
        print(f"best: {result.best}\nlast: {result.last}")
    return 0
