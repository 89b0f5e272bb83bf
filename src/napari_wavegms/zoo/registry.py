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


def user_models() -> dict[str, ModelInfo]:
    """The user's own models (:mod:`napari_wavegms.zoo.user_models`), by the names they were given; a
    name that a built-in model has is left out (a built-in name always means the built-in model)."""
    from napari_wavegms.zoo.user_models import user_cards

    builtin = builtin_models()
    found: dict[str, ModelInfo] = {}
    for card_path in user_cards():
        try:
            card = read_card(card_path)
        except (OSError, ValueError):
            continue  # a damaged card hides its model; it never stops the listing
        if card.name not in builtin:
            found[card.name] = ModelInfo(card.name, card_path.with_suffix(".safetensors"), card)
    return found


def installed_models() -> dict[str, ModelInfo]:
    """Every model a user can pick by name: the built-in models (default first), then their own."""
    return {**builtin_models(), **user_models()}


def canonical_name(name: str) -> str | None:
    """The model a name or an old alias (a card's ``"aliases"``) stands for, built-in or the user's;
    ``None`` when it is neither."""
    return _canonical(name, installed_models())


def _canonical(name: str, models: dict[str, ModelInfo]) -> str | None:
    if name in models:
        return name
    return next((n for n, info in models.items() if name in info.card.aliases), None)


def model_card(model: str | os.PathLike | None) -> ModelCard | None:
    """The card of a model found by name, old alias or the path of its weights (the widgets pass the
    resolved path): a built-in model, a user model, or a checkpoint with a card beside it
    (``model.safetensors`` + ``model.json``, as a fine-tune writes); ``None`` (the default model) gives
    the default's card; ``None`` for a checkpoint without a card. Reads only the JSON cards (no torch),
    so a widget can show a card's defaults before a run."""
    models = installed_models()
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
        if info is None:
            return card_beside(path)
    return info.card


def card_beside(weights: Path) -> ModelCard | None:
    """The card written beside a checkpoint file (same name, ``.json``: ``model.safetensors`` and
    ``model.json``), or ``None``; a damaged card is no card (the model still segments, without its
    defaults)."""
    if weights.suffix != ".safetensors":
        return None
    path = weights.with_suffix(".json")
    try:
        return read_card(path) if path.is_file() else None
    except (OSError, ValueError):
        return None


def card_tta(model: str | os.PathLike | None) -> bool:
    """Whether a built-in model's card turns test-time flips on (``"tta": {"flips": true, ...}``, chosen
    on validation by ``napari_wavegms.tuning.tta_choice``); ``False`` for other checkpoints. No torch: the widgets
    read it to set their box before a run."""
    card = model_card(model)
    return card.tta if card is not None else False


def card_tta_gain(model: str | os.PathLike | None) -> str:
    """What test-time flips gave this model on its validation split, in words, from its card ("validation
    Dice 0.822 → 0.828 with flips (+0.007 ± 0.006): on"); ``""`` for a model whose card has no such
    numbers. No torch: the Segment widget's flips box says it in its tooltip."""
    card = model_card(model)
    chosen = ((card.record.get("tta") or {}).get("chosen_on") or {}) if card is not None else {}
    val = chosen.get("validation") or {}
    if "dice_plain" not in val or "dice_flips" not in val:
        return ""
    gain = val["dice_flips"] - val["dice_plain"]
    spread = f" ± {val['gain_se']:.3f}" if "gain_se" in val else ""
    return (f"validation Dice {val['dice_plain']:.3f} → {val['dice_flips']:.3f} with flips ({gain:+.3f}{spread}): "
            f"{'on' if card.tta else 'off'} by default")


def set_card_entry(name: str, key: str, value: Any) -> Path:
    """Store ``value`` as ``key`` in built-in model ``name``'s card (``None`` removes it), atomically: the
    training scripts that choose a card's defaults on validation write them here."""
    from napari_wavegms.core.atomic import atomic_path

    canonical = _canonical(name, builtin_models())  # a user model's card is written by its fine-tune
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

    The user's model for that kind comes first, when they chose one
    (:func:`napari_wavegms.zoo.user_models.set_preferred`) and it is still installed. When no built-in
    model is made for that kind, the first (by rank) whose training images look alike (colour or grey,
    see :data:`KIND_IMAGES`), else the default model.
    """
    from napari_wavegms.zoo.user_models import preferred

    mine = preferred(kind)
    if mine and mine in user_models():
        return mine
    models = builtin_models()
    exact = next((name for name, info in models.items() if info.card.kind == kind), None)
    if exact is not None:
        return exact
    wanted = KIND_IMAGES.get(kind, "")
    return next((name for name, info in models.items() if info.card.images == wanted), None) or default_model()


def resolve_model(name_or_path: str | os.PathLike | None) -> Path:
    """The checkpoint file for a model's name (built-in or the user's) or a path (a file, or a training
    output folder: its fine-tuned ``model``, else ``best``)."""
    if name_or_path is None:
        name_or_path = default_model()
        if name_or_path is None:
            raise FileNotFoundError("no built-in model is installed; pass a checkpoint with --model")
    key = str(name_or_path)
    models = installed_models()
    named = _canonical(key, models)
    if named is not None:
        return models[named].path
    path = Path(key).expanduser()
    if path.is_dir():
        # a fine-tune's model (with its card) first, then a training run's selected and last weights
        for candidate in ("model.safetensors", "best.safetensors", "last.safetensors"):
            if (path / candidate).is_file():
                return path / candidate
        raise FileNotFoundError(f"{path} is a folder without best.safetensors or last.safetensors")
    if path.is_file():
        return path
    known = ", ".join(models) or "none installed"
    raise FileNotFoundError(f"{key!r} is neither an installed model ({known}) nor a checkpoint file")


def load_model(name_or_path: str | os.PathLike | None = None, device: Any = "auto"):
    """Load a model for inference on the device :func:`napari_wavegms.core.device.resolve_device` picks.

    Returns ``(model, config, device)``.
    """
    from napari_wavegms.core.device import resolve_device
    from napari_wavegms.network.checkpoint import load_checkpoint

    dev = resolve_device(device)
    model, config = load_checkpoint(resolve_model(name_or_path), device=dev)
    return model, config, dev
