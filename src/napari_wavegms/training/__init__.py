"""Training and scoring Wave-GMS: configuration, data, the loop, evaluation, cost.

The run's names are importable from here; they load lazily, because the loop needs torch and napari
imports the plugin (whose training widget names these) at start-up, before anyone trains.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari_wavegms.training.config import TrainConfig
    from napari_wavegms.training.loop import TrainEvent, TrainResult, train, train_with_progress

__all__ = ["TrainConfig", "TrainEvent", "TrainResult", "train", "train_with_progress"]

_HOMES = {"TrainConfig": "config", "TrainEvent": "loop", "TrainResult": "loop", "train": "loop",
          "train_with_progress": "loop"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{home}"), name)
