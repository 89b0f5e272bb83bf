"""Pieces shared by the widgets: model and device pickers, remembered settings, folder fields.

Nothing here imports torch: the device list is only asked of torch once torch is loaded (a job has
run); before that the picker offers ``auto``, ``cpu`` and the device remembered from last time.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from magicgui.widgets import ComboBox, Container, PushButton, Widget

from . import _settings
from ._session import session_models

RECENT_LIMIT = 6


def folder_or_none(value: Any) -> Path | None:
    """A folder field's value, or ``None`` when it is empty (magicgui reports an empty field as ``.``,
    which must never silently mean the working directory)."""
    text = str(value or "").strip()
    if text in ("", "."):
        return None
    return Path(text).expanduser()


def remember_model_file(path: str | Path) -> None:
    recent = [str(path), *(p for p in _settings.load("general").get("recent_models", []) if p != str(path))]
    _settings.save("general", {"recent_models": recent[:RECENT_LIMIT]})


def model_choices(include_scratch: bool = False) -> list[tuple[str, str]]:
    """(label, value) pairs: built-in models, models trained in this session, recently chosen files."""
    from ..models import builtin_models

    choices: list[tuple[str, str]] = [("scratch (no initial model)", "")] if include_scratch else []
    for name, info in builtin_models().items():
        summary = info.summary if info.summary != name else ""
        choices.append((f"{name} — {summary}" if summary else name, name))
    seen = {value for _, value in choices}
    for entry in session_models.models():
        if str(entry.path) not in seen:
            choices.append((f"trained: {entry.label}", str(entry.path)))
            seen.add(str(entry.path))
    recent = _settings.load("general").get("recent_models", [])
    for path in recent:
        if path and path not in seen and Path(path).exists():
            choices.append((f"file: {Path(path).parent.name}/{Path(path).name}", path))
            seen.add(path)
    return choices


def device_choices(remembered: str | None = None) -> list[str]:
    """``auto`` plus the devices this machine has; without torch loaded, what can be known cheaply."""
    if "torch" in sys.modules:
        from ..device import available_devices

        return available_devices()
    names = ["auto", "cpu"]
    if remembered and remembered not in names:
        names.insert(1, remembered)
    return names


class ModelPicker(Container):
    """A combo box of models plus a "Browse…" button for any checkpoint file."""

    def __init__(self, label: str = "model", include_scratch: bool = False, **kwargs: Any) -> None:
        self._include_scratch = include_scratch
        self.combo = ComboBox(
            choices=self._choices,
            nullable=False,
            tooltip=(
                "Built-in models, models trained in this session, and checkpoint files (.safetensors) "
                "or training output folders you chose with Browse…"
            ),
        )
        self.browse = PushButton(text="Browse…", tooltip="Choose a checkpoint file (.safetensors)")
        super().__init__(
            widgets=[self.combo, self.browse], layout="horizontal", labels=False, label=label, **kwargs
        )
        self.margins = (0, 0, 0, 0)
        self.browse.changed.connect(self._browse)
        session_models.changed.connect(self._refresh)

    def _choices(self, _widget: Any = None) -> list[tuple[str, str]]:
        return model_choices(self._include_scratch)

    def _refresh(self) -> None:
        try:
            self.combo.reset_choices()
        except RuntimeError:  # the widget was deleted; the registry outlives it
            session_models.changed.disconnect(self._refresh)

    def _browse(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(
            self.native, "Choose a Wave-GMS checkpoint", "", "Wave-GMS checkpoints (*.safetensors)"
        )
        if path:
            self.add_file(path)

    def add_file(self, path: str | Path) -> None:
        """Offer ``path`` (checkpoint file or training folder) and select it."""
        remember_model_file(path)
        self.combo.reset_choices()
        self.combo.value = str(path)

    @property
    def model(self) -> str | None:
        value = self.combo.value
        return value or None

    def set_model(self, value: str | None) -> None:
        if value is None:
            return
        if value not in self.combo.choices and Path(value).exists():
            remember_model_file(value)
            self.combo.reset_choices()
        try:
            self.combo.value = value
        except ValueError:
            pass


def device_combo(remembered: str | None = None) -> ComboBox:
    combo = ComboBox(
        label="device",
        choices=lambda _w=None: device_choices(remembered),
        tooltip="auto picks CUDA, then Apple MPS, then the CPU. The device actually used is shown after a run.",
    )
    if remembered in combo.choices:
        combo.value = remembered
    return combo


def restore(widgets: Iterable[Widget], values: dict[str, Any]) -> None:
    """Set each widget whose name is in ``values``; a value that no longer fits is skipped."""
    for widget in widgets:
        if widget.name in values and values[widget.name] is not None:
            try:
                widget.value = values[widget.name]
            except (ValueError, TypeError, KeyError):
                pass


def snapshot(widgets: Iterable[Widget]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for widget in widgets:
        value = widget.value
        out[widget.name] = str(value) if isinstance(value, Path) else value
    return out
