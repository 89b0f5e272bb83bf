"""A training run's configuration and recipes: what to train on, how long, and how to spend the compute.

Kept apart from the loop, and free of torch, so that reading or writing a config (the widget's defaults,
a YAML file, a checkpoint's header) does not load the training machinery.

Recipes (:data:`RECIPES`): ``paper`` is docs/design.md §5–6, the Wave-GMS loss, AdamW (lr 2e-3, weight
decay 0.01), a linear warm-up per *step* over ``warmup_epochs`` then cosine to 0, seeded; ``fast`` (the
default) spends a CPU's time where it buys Dice (see :class:`Recipe`); ``finetune`` is ``fast`` at full
size throughout.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_wavegms.core.atomic import atomic_path


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
    val_by_examination: bool = False  # carve whole groups of look-alike images (frames of one examination)
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
    augmentation: str = "standard"  # standard (docs/design.md §6) | robust (+ what differs between devices)
    preload: bool = True  # keep resized pairs in memory (bounded by preload_limit_mb)
    preload_limit_mb: int = 4096
    num_workers: int = 0  # DataLoader workers when pairs are not preloaded
    amp: str = "auto"  # auto: CUDA bf16 (else fp16), CPU bf16 where native (fast recipe) | bf16 | fp16 | off
    channels_last: bool = True  # CUDA only
    val_every: int = 1  # validate every N epochs (and after the last)
    val_batch_size: int = 32
    threshold: float = 0.5
    max_steps: int | None = None  # stop after this many optimisation steps in total (smoke tests)
    name: str = ""  # a free description of the run
    # fast (best Dice per CPU-second) | paper (docs/design.md §5–6) | finetune | auto (finetune with
    # init_from, else fast; resolved when the config is made, so saved configs name the recipe); see RECIPES
    recipe: str = "auto"
    time_budget_s: float | None = None  # stop (and anneal the learning rate to 0) after this much training time
    time_budget_clock: str = "wall"  # wall | process (this process's CPU seconds)

    _PATH_FIELDS = ("data_dir", "val_dir", "weights_dir")

    def __post_init__(self) -> None:
        if self.recipe == "auto":
            self.recipe = default_recipe(self.init_from)

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
        kinds = {f.name: f.type for f in dataclasses.fields(cls)}
        return cls(**{k: _number(k, kinds[k], v) for k, v in values.items()})

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


_NUMBERS = {"float": float, "float | None": float, "int": int, "int | None": int}


def _number(option: str, kind: str, value: Any) -> Any:
    """``value`` as the number option ``option`` needs, or a clear error naming it.

    Why: YAML 1.1 (PyYAML) reads ``lr: 2e-3``, without a dot, as the *string* "2e-3"; AdamW then failed
    deep inside PyTorch with a TypeError about comparing a float with a str."""
    convert = _NUMBERS.get(kind)
    if convert is None or value is None:
        return value
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if math.isnan(number) or (convert is int and not number.is_integer()):
        raise ValueError(f"training option {option}: {value!r} is not {'an integer' if convert is int else 'a number'}")
    return convert(number)


def _resolve_from(value: str, base: Path) -> Path:
    p = Path(os.path.expandvars(os.path.expanduser(str(value))))
    return p if p.is_absolute() else (base / p).resolve()



# ---------------------------------------------------------------- recipes
@dataclass(frozen=True)
class Recipe:
    """How a run spends its compute: what the loss decodes, precision, memory layout, sizes, warm-up.

    ``paper`` is docs/design.md §5–6 exactly (how we reproduce the paper on a GPU). ``fast``, the
    default, buys the most validation Dice per CPU-second; each of its choices has an ablation row in
    ``docs/results.md``.
    """

    name: str
    dice_heads: tuple[str, ...]  # heads decoded through the frozen decoder for the soft Dice
    cpu_bf16: bool  # bf16 autocast on CPUs that compute it natively (never on emulating CPUs)
    vae_channels_last: bool  # the frozen Tiny-VAE in channels-last memory on the CPU
    small_fraction: float  # this first fraction of the run trains at half the image size
    warmup_cap: float  # warm-up lasts at most this fraction of the run
    checkpoint_decoder: bool  # recompute the frozen decoder in the backward pass instead of storing it


RECIPES: dict[str, Recipe] = {
    "paper": Recipe("paper", ("level2", "level1", "out"), False, False, 0.0, 1.0, False),
    "fast": Recipe("fast", ("out",), True, True, 0.5, 0.05, True),
    # fast, all at full size: a model already trained at this size (``init_from``) has nothing to gain
    # from the cheap half-size phase, which would first un-learn its full-size detail
    "finetune": Recipe("finetune", ("out",), True, True, 0.0, 0.05, True),
}


def default_recipe(init_from: str | None) -> str:
    """The recipe a run gets unless it names one: ``finetune`` when it starts from a trained model (a
    built-in model or a checkpoint, trained at its size already), else ``fast``."""
    return "finetune" if init_from else "fast"


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; use one of {', '.join(RECIPES)}") from None

