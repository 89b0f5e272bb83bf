"""Models by name or path: the built-in trained models shipped in ``builtin/`` and any checkpoint file.

A built-in model is ``builtin/<name>.safetensors`` with its model card ``builtin/<name>.json``
(modality, data, licence, recipe, test scores). Names contain their dataset (``busi``, ``kvasir-seg``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUILTIN_DIR = Path(__file__).parent / "builtin"


@dataclass(frozen=True)
class ModelInfo:
    """What a user picks from: a name, a file, and what the model is for."""

    name: str
    path: Path
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        return self.card.get("summary", self.name)


def builtin_models() -> dict[str, ModelInfo]:
    """Built-in models, default first (the order of ``"rank"`` in their cards)."""
    found = []
    for card_path in sorted(BUILTIN_DIR.glob("*.json")):
        weights = card_path.with_suffix(".safetensors")
        if weights.is_file():
            card = json.loads(card_path.read_text())
            found.append(ModelInfo(card_path.stem, weights, card))
    found.sort(key=lambda m: (m.card.get("rank", 99), m.name))
    return {m.name: m for m in found}


def default_model() -> str | None:
    """Name of the default built-in model, or ``None`` when the package ships none."""
    return next(iter(builtin_models()), None)


def resolve_model(name_or_path: str | os.PathLike | None) -> Path:
    """The checkpoint file for a built-in name or a path (file, or a training output folder with ``best``)."""
    if name_or_path is None:
        name_or_path = default_model()
        if name_or_path is None:
            raise FileNotFoundError("no built-in model is installed; pass a checkpoint with --model")
    key = str(name_or_path)
    models = builtin_models()
    if key in models:
        return models[key].path
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
    """Load a model for inference on the device :func:`napari_wavegms.device.resolve_device` picks.

    Returns ``(model, config, device)``.
    """
    from .device import resolve_device
    from .model.checkpoint import load_checkpoint

    dev = resolve_device(device)
    model, config = load_checkpoint(resolve_model(name_or_path), device=dev)
    return model, config, dev
