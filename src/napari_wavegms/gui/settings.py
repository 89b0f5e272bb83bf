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
