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


def suggest_model(color: bool) -> str | None:
    """The built-in model made for this kind of image: colour (endoscopy, dermoscopy) or grey (ultrasound).

    Each card says what its training images were (``"images": "rgb"`` or ``"gray"``); the first such
    model by rank wins, and the default model when none matches. A grey-trained model sees a colour
    image as three unfamiliar channels (and a colour-trained one sees grey as an odd colour), so the
    picker follows the image rather than leaving a new user with the wrong model.
    """
    wanted = "rgb" if color else "gray"
    for name, info in builtin_models().items():
        if info.card.get("images") == wanted:
            return name
    return default_model()


def has_color(image: Any, rgb: bool) -> bool:
    """Whether a (napari-style) image really carries colour: channels last and not all equal.

    Grey ultrasound is often saved as RGB with three equal channels (or nearly equal, after JPEG), so
    the channels of a strided sample of the first plane are compared; at most ~64k pixels are read,
    which keeps this cheap for large and lazy (dask) images.
    """
    import numpy as np

    if not rgb:
        return False
    plane = image
    while getattr(plane, "ndim", 0) > 3:
        plane = plane[0]
    h, w = plane.shape[:2]
    step = max(1, int(max(h, w) // 256))
    sample = np.asarray(plane[::step, ::step, :3], dtype=np.float32)
    spread = float(sample.max() - sample.min()) or 1.0
    differences = np.abs(sample[..., 0] - sample[..., 1]) + np.abs(sample[..., 1] - sample[..., 2])
    return float(differences.mean()) > 0.01 * spread


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
