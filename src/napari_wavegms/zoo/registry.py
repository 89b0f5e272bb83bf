"""Models by name or path: the built-in trained models shipped in ``builtin/`` and any checkpoint file.

A built-in model is ``builtin/<name>.safetensors`` with its model card ``builtin/<name>.json``
(kind of image, modality, data, licence, recipe, test scores). Names contain their dataset (``busi``,
``kvasir-seg``, ``isic``). A card's ``"aliases"`` keep the names of the models it replaced working
(``busi-wavegms-cpu64`` → today's ultrasound model), so scripts and saved settings do not break.
Cards are read as typed :class:`~napari_wavegms.zoo.card.ModelCard` objects, once per file.
:func:`suggest_model` names the built-in model made for a kind of image; which model an *image* gets
is decided in :mod:`napari_wavegms.inference.routing`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_wavegms.zoo.card import ModelCard, forget, read_card

BUILTIN_DIR = Path(__file__).parent / "builtin"


@dataclass(frozen=True)
class ModelInfo:
    """What a user picks from: a name, a file, and what the model is for."""

    name: str
    path: Path
    card: ModelCard

    @property
    def summary(self) -> str:
        return self.card.summary


def builtin_models() -> dict[str, ModelInfo]:
    """Built-in models, default first (the order of ``"rank"`` in their cards)."""
    found = []
    for card_path in sorted(BUILTIN_DIR.glob("*.json")):
        weights = card_path.with_suffix(".safetensors")
        if weights.is_file():
            found.append(ModelInfo(card_path.stem, weights, read_card(card_path)))
    found.sort(key=lambda m: (m.card.rank, m.name))
    return {m.name: m for m in found}


def canonical_name(name: str) -> str | None:
    """The built-in model a name or an old alias (a card's ``"aliases"``) stands for; ``None`` when it
    is neither."""
    return _canonical(name, builtin_models())


def _canonical(name: str, models: dict[str, ModelInfo]) -> str | None:
    if name in models:
        return name
    return next((n for n, info in models.items() if name in info.card.aliases), None)


def builtin_card(model: str | os.PathLike | None) -> ModelCard | None:
    """The card of a built-in model found by name, old alias or the path of its weights (the widgets
    pass the resolved path); ``None`` (the default model) gives the default's card; ``None`` for any
    other checkpoint. Reads only the JSON cards (no torch), so a widget can show a card's defaults
    before a run."""
    models = builtin_models()
    key = next(iter(models), None) if model is None else str(model)  # None: the default (first) model
    if key is None:
        return None
    info = models.get(_canonical(key, models) or "")  # the cards already read, not read again
    if info is None:
        try:
            path = Path(key).expanduser().resolve()
        except (OSError, RuntimeError):
            return None
        info = next((m for m in models.values() if m.path.resolve() == path), None)
    return info.card if info is not None else None


def card_tta(model: str | os.PathLike | None) -> bool:
    """Whether a built-in model's card turns test-time flips on (``"tta": {"flips": true, ...}``, chosen
    on validation by ``napari_wavegms.tuning.tta_choice``); ``False`` for other checkpoints. No torch: the widgets
    read it to set their box before a run."""
    card = builtin_card(model)
    return card.tta if card is not None else False


def set_card_entry(name: str, key: str, value: Any) -> Path:
    """Store ``value`` as ``key`` in built-in model ``name``'s card (``None`` removes it), atomically: the
    training scripts that choose a card's defaults on validation write them here."""
    from napari_wavegms.core.atomic import atomic_path

    canonical = canonical_name(name)
    if canonical is None:
        raise ValueError(f"no built-in model named {name!r}; built-in: {', '.join(builtin_models())}")
    path = BUILTIN_DIR / f"{canonical}.json"
    card = json.loads(path.read_text())
    card.pop(key, None)
    if value is not None:
        card[key] = value
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(card, indent=2, default=float) + "\n")
    forget(path)
    return path


def default_model() -> str | None:
    """Name of the default built-in model, or ``None`` when the package ships none."""
    return next(iter(builtin_models()), None)


# What each kind of image looks like to a model: the fallback when no built-in model is made for a kind.
KIND_IMAGES = {"ultrasound": "gray", "endoscopy": "rgb", "dermoscopy": "rgb"}


def suggest_model(kind: str) -> str | None:
    """The built-in model made for this kind of image (``"ultrasound"``, ``"endoscopy"``, ``"dermoscopy"``).

    When no built-in model is made for that kind, the first (by rank) whose training images look alike
    (colour or grey, see :data:`KIND_IMAGES`), else the default model.
    """
    models = builtin_models()
    exact = next((name for name, info in models.items() if info.card.kind == kind), None)
    if exact is not None:
        return exact
    wanted = KIND_IMAGES.get(kind, "")
    return next((name for name, info in models.items() if info.card.images == wanted), None) or default_model()


def resolve_model(name_or_path: str | os.PathLike | None) -> Path:
    """The checkpoint file for a built-in name or a path (file, or a training output folder with ``best``)."""
    if name_or_path is None:
        name_or_path = default_model()
        if name_or_path is None:
            raise FileNotFoundError("no built-in model is installed; pass a checkpoint with --model")
    key = str(name_or_path)
    models = builtin_models()
    builtin = canonical_name(key)
    if builtin is not None:
        return models[builtin].path
    path = Path(key).expanduser()
    if path.is_dir():
        for candidate in ("best.safetensors", "last.safetensors", "model.safetensors"):
            if (path / candidate).is_file():
                return path / candidate
        raise FileNotFoundError(f"{path} is a folder without best.safetensors or last.safetensors")
    if path.is_file():
        return path
    known = ", ".join(models) or "none installed"
    raise FileNotFoundError(f"{key!r} is neither a built-in model ({known}) nor a checkpoint file")


def load_model(name_or_path: str | os.PathLike | None = None, device: Any = "auto"):
    """Load a model for inference on the device :func:`napari_wavegms.core.device.resolve_device` picks.

    Returns ``(model, config, device)``.
    """
    from napari_wavegms.core.device import resolve_device
    from napari_wavegms.network.checkpoint import load_checkpoint

    dev = resolve_device(device)
    model, config = load_checkpoint(resolve_model(name_or_path), device=dev)
    return model, config, dev
