"""Models trained in this napari session, so the Segment widget can offer them as soon as training ends."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from psygnal import Signal


@dataclass(frozen=True)
class SessionModel:
    label: str
    path: Path


class _Registry:
    changed = Signal()

    def __init__(self) -> None:
        self._models: list[SessionModel] = []

    def add(self, path: str | Path, label: str | None = None) -> SessionModel:
        """Add (or move to the front) a checkpoint file or training output folder."""
        path = Path(path)
        entry = SessionModel(label or f"{path.parent.name}/{path.name}", path)
        self._models = [entry, *(m for m in self._models if m.path != path)]
        self.changed.emit()
        return entry

    def models(self) -> list[SessionModel]:
        return list(self._models)

    def clear(self) -> None:
        self._models = []
        self.changed.emit()


session_models = _Registry()
