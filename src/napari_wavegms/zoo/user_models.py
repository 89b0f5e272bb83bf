"""The user's own models: fine-tuned models kept under a name, and which of them to use for a kind of image.

A user model is a checkpoint with its card, like a built-in model (``<file>.safetensors`` beside
``<file>.json``), kept in the user's data folder (``WAVEGMS_MODELS_DIR`` overrides its place; tests
point it at a temporary folder), so it survives napari sessions and package upgrades. It is listed by
the name the user gave ("ultrasound — my hospital", the card's ``"name"``); the file name is a safe
form of it. ``preferences.json`` in the same folder says which model to use automatically for a kind
of image (``{"for_kind": {"ultrasound": "ultrasound — my hospital"}}``): the user sets and clears it,
and :func:`napari_wavegms.zoo.registry.suggest_model` reads it.

Why a separate folder and not the download cache: a cache may be emptied at any time; a model a user
trained for an hour is not a cached copy of anything.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import unicodedata
from pathlib import Path
from typing import Any

from napari_wavegms.core.atomic import atomic_path

MODELS_ENV = "WAVEGMS_MODELS_DIR"
PREFERENCES = "preferences.json"


def models_dir() -> Path:
    """The folder of the user's models (``WAVEGMS_MODELS_DIR`` if set), created on demand."""
    override = os.environ.get(MODELS_ENV)
    if override:
        path = Path(override).expanduser()
    else:
        import platformdirs

        path = Path(platformdirs.user_data_dir("napari-wavegms", appauthor=False)) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_stem(name: str) -> str:
    """A file name for a model name that works on every file system: letters, digits, ``-`` and ``_``."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^A-Za-z0-9_]+", "-", plain).strip("-").lower()
    return stem[:80] or "model"


def user_cards() -> list[Path]:
    """The cards of the user's models whose weights are there, oldest first."""
    folder = models_dir()
    cards = [p for p in folder.glob("*.json") if p.name != PREFERENCES and p.with_suffix(".safetensors").is_file()]
    return sorted(cards, key=lambda p: p.stat().st_mtime)


def check_name(name: str, taken: set[str]) -> str:
    """``name`` stripped, or a ``ValueError`` saying why it cannot name a model."""
    name = " ".join(name.split())
    if not name:
        raise ValueError("give the model a name")
    if len(name) > 80:
        raise ValueError("a model name has at most 80 characters")
    if name in taken:
        raise ValueError(f"a model named {name!r} exists already; choose another name")
    return name


def install(checkpoint: str | os.PathLike, name: str, card: dict[str, Any], taken: set[str]) -> Path:
    """Keep ``checkpoint`` as the user model ``name`` with ``card``; returns the weights' new path.

    ``taken``: the names of every model already listed (built-in and the user's), which ``name`` may not
    reuse. The weights are copied first and the card written last, both atomically: a model is listed
    only once its card exists, so a half-copied model is never offered.
    """
    name = check_name(name, taken)
    folder = models_dir()
    stem, n = file_stem(name), 1
    while (folder / f"{stem}.json").exists() or (folder / f"{stem}.safetensors").exists():
        n += 1
        stem = f"{file_stem(name)}-{n}"
    weights = folder / f"{stem}.safetensors"
    with atomic_path(weights) as tmp:
        shutil.copyfile(checkpoint, tmp)
    record = {**card, "name": name, "user": True}
    record.pop("rank", None)
    record.pop("aliases", None)
    with atomic_path(weights.with_suffix(".json")) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=2, default=float) + "\n")
    return weights


def remove(weights: str | os.PathLike) -> None:
    """Delete a user model (its card first, so it is never listed without its weights) and any
    preference naming it."""
    weights = Path(weights)
    card = weights.with_suffix(".json")
    name = json.loads(card.read_text()).get("name") if card.is_file() else None
    card.unlink(missing_ok=True)
    weights.unlink(missing_ok=True)
    prefs = _preferences()
    kept = {k: v for k, v in prefs.get("for_kind", {}).items() if v != name}
    if kept != prefs.get("for_kind", {}):
        _save_preferences({**prefs, "for_kind": kept})


def _preferences() -> dict[str, Any]:
    path = models_dir() / PREFERENCES
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or damaged: no preference, never a failed segmentation
        return {}
    return values if isinstance(values, dict) else {}


def _save_preferences(values: dict[str, Any]) -> None:
    with atomic_path(models_dir() / PREFERENCES) as tmp:
        Path(tmp).write_text(json.dumps(values, indent=2) + "\n")


def preferred(kind: str) -> str | None:
    """The model the user chose for images of ``kind``, or ``None``."""
    value = _preferences().get("for_kind", {}).get(kind)
    return str(value) if value else None


def set_preferred(kind: str, name: str | None) -> None:
    """Use model ``name`` automatically for images of ``kind`` (``None``: back to the built-in model)."""
    prefs = _preferences()
    for_kind = dict(prefs.get("for_kind", {}))
    if name:
        for_kind[kind] = name
    else:
        for_kind.pop(kind, None)
    _save_preferences({**prefs, "for_kind": for_kind})
