"""Widget settings remembered between sessions: one small JSON file, written atomically.

The file is ``settings.json`` in ``WAVEGMS_CONFIG_DIR`` when that environment variable is set
(tests point it at a temporary folder), else in the per-user config folder that ``platformdirs``
picks (``~/.config/napari-wavegms`` on Linux). A missing or unreadable file means defaults: a broken
settings file must never stop the widgets from opening.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any

from napari_wavegms.core.atomic import atomic_path

log = logging.getLogger(__name__)

CONFIG_ENV = "WAVEGMS_CONFIG_DIR"


def settings_path() -> Path:
    override = os.environ.get(CONFIG_ENV)
    if override:
        return Path(override).expanduser() / "settings.json"
    import platformdirs

    return Path(platformdirs.user_config_dir("napari-wavegms", appauthor=False)) / "settings.json"


def load_all() -> dict[str, dict[str, Any]]:
    path = settings_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        log.warning("ignoring unreadable settings file %s (%s)", path, err)
        return {}
    return data if isinstance(data, dict) else {}


def load(section: str) -> dict[str, Any]:
    """The remembered values of one widget (``segment``, ``train``, ``batch``, ``general``)."""
    value = load_all().get(section, {})
    return value if isinstance(value, dict) else {}


def save(section: str, values: dict[str, Any]) -> None:
    """Merge ``values`` into one section and write the file atomically; failures only log."""
    data = load_all()
    merged = {**data.get(section, {}), **values}
    if merged == data.get(section):
        return
    data[section] = merged
    path = settings_path()
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))
    except OSError as err:
        log.warning("could not save settings to %s (%s)", path, err)


def apply_cache_setting() -> None:
    """Use the remembered cache folder unless the environment variable already names one."""
    from napari_wavegms.zoo.downloads import CACHE_ENV

    folder = load("general").get("cache_dir")
    if folder and not os.environ.get(CACHE_ENV):
        os.environ[CACHE_ENV] = str(folder)


class Scope(str, Enum):
    """What of a stack the Segment widget and the menu command segment. The values are the widget's
    labels, which is also how earlier versions saved the choice, so their settings files still load."""

    WHOLE_STACK = "whole stack"
    CURRENT_SLICE = "current slice"


@dataclass
class SegmentSettings:
    """The Segment widget's choices, saved by the widget and read by Layers ▸ Segment ▸ Segment selected
    image, so that the menu command segments as the widget would without a picker of its own.

    Saved under the same keys, with the same values, as before this class existed, so settings from
    earlier versions load; a key that is missing or holds a value of the wrong kind takes its default.
    """

    SECTION = "segment"

    model: str | None = None
    model_by_hand: bool = False  # a model the user picked is kept for every image (see pick_model)
    device: str = "auto"
    threshold: float = 0.5
    tta: bool | None = None  # test-time flips; None: the model card's choice (the widget never used)
    scope: Scope = Scope.WHOLE_STACK
    presence: bool = True  # the model card's presence gate, where it has one
    cleanup_default: bool = True  # the model card's clean-up; False: the three options below
    fill_holes: bool = False
    keep_largest: bool = False
    min_area: float = 0.0  # in the image layer's units²

    @property
    def whole_stack(self) -> bool:
        return self.scope is Scope.WHOLE_STACK

    def cleanup(self) -> dict[str, Any] | None:
        """``Segmenter.segment`` clean-up options; ``None`` = the model card's choice. One reading for
        the widget and the menu command, so both clean up alike."""
        if self.cleanup_default:
            return None
        return {"fill_holes": self.fill_holes, "keep_largest": self.keep_largest, "min_area": self.min_area}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SegmentSettings:
        """Settings from a saved section; what cannot be read keeps its default (a settings file written
        by another version, or edited by hand, must never stop the widget or the command)."""
        settings = cls()
        for f in fields(cls):
            if values.get(f.name) is None:
                continue
            try:
                setattr(settings, f.name, _coerce(f.name, values[f.name]))
            except (TypeError, ValueError):
                log.warning("ignoring the saved %s setting %r", f.name, values[f.name])
        return settings

    def to_dict(self) -> dict[str, Any]:
        """The JSON section (the scope as its label, as earlier versions wrote it)."""
        values = asdict(self)
        values["scope"] = self.scope.value
        return values

    @classmethod
    def load(cls) -> SegmentSettings:
        return cls.from_dict(load(cls.SECTION))

    def save(self) -> None:
        save(self.SECTION, self.to_dict())


_BOOLS = {"model_by_hand", "tta", "presence", "cleanup_default", "fill_holes", "keep_largest"}


def _coerce(name: str, value: Any) -> Any:
    """A saved value as its field's type; raises ValueError or TypeError for one that does not fit."""
    if name in _BOOLS:
        if not isinstance(value, (bool, int)):
            raise TypeError(f"{name} must be true or false")
        return bool(value)
    if name in ("threshold", "min_area"):
        return float(value)
    if name == "scope":
        return Scope(value)
    return str(value)
