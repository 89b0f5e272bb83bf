"""The models the GUI has loaded, kept between runs, and their loading in the background.

Loading a model costs seconds the first time (importing torch and diffusers, reading the weights), so
the Segment widget and the menu command share one small cache of loaded ``Segmenter`` objects, and the
widget loads the model its next Run will use while the user is still choosing an image (:class:`Warmer`).
"""

from __future__ import annotations

import threading
from typing import Any

# Loaded models are kept between runs (loading costs a second or more), the most recently used last,
# KEEP_MODELS of them (a few MB each), so switching back and forth between models, or toggling test-time
# flips or the presence check (which only change how a loaded network is used), loads nothing. The lock
# keeps two jobs (widget and menu command) from loading or using them at the same time.
_CACHE: dict[tuple[str, int, str], Any] = {}
CACHE_LOCK = threading.Lock()
KEEP_MODELS = 3
LOADING = "loading the model (once per model and device)…"


def model_key(model: str | None, device: str) -> tuple[str, int, str]:
    """The cache key of a model on a device: its checkpoint file and that file's modification time (a
    model retrained into the same folder is loaded again)."""
    from napari_wavegms.zoo.registry import resolve_model

    path = resolve_model(model)
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        mtime = 0
    return str(path), mtime, device


def model_loaded(model: str | None, device: str) -> bool:
    """Whether a run with this model on this device can start without loading it."""
    try:
        return model_key(model, device) in _CACHE
    except (OSError, ValueError):  # a model that cannot be found is reported by the run
        return False


def cached_segmenter(model: str | None, device: str, tta: bool | None, presence: bool) -> Any:
    """A ``Segmenter`` for these settings, sharing the loaded network when this model was loaded on this
    device before (only the flips and the presence gate differ); call with :data:`CACHE_LOCK` held."""
    from napari_wavegms.inference.presence import card_presence
    from napari_wavegms.inference.segmenter import Segmenter
    from napari_wavegms.zoo.registry import card_tta

    key = model_key(model, device)
    path = key[0]
    loaded = _CACHE.pop(key, None)
    if loaded is None:
        loaded = Segmenter(path, device=device, tta=tta, presence=None if presence else False)
    _CACHE[key] = loaded  # the most recently used is last
    while len(_CACHE) > KEEP_MODELS:
        _CACHE.pop(next(iter(_CACHE)))
    flips = card_tta(path) if tta is None else bool(tta)
    gate = card_presence(path) if presence else None
    if loaded.tta == flips and (loaded.presence is None) == (gate is None):
        return loaded
    return Segmenter(loaded.model, device=str(loaded.device), batch_size=loaded.batch_size, tta=flips,
                     postprocess=loaded.postprocess, presence=gate if gate is not None else False)


WARMUP_ENV = "WAVEGMS_WARMUP"  # "0": no loading in the background when the Segment dock opens


def warm_up(model: str | None, device: str, tta: bool | None, presence: bool) -> None:
    """Import torch and the engine and load ``model`` into the cache, as the first Run would.

    Run in a background thread while the user is still choosing an image: a first click then costs one
    pass of the model instead of importing torch and diffusers and reading weights (seconds) first.
    """
    import torch  # noqa: F401  (the biggest import of a first run)

    from napari_wavegms.inference import segmenter as inference  # noqa: F401

    if model is None or model_loaded(model, device):
        return
    with CACHE_LOCK:
        cached_segmenter(model, device, tta, presence)


class Warmer:
    """Loads, in one background thread, the model the next Run will use (:func:`warm_up`).

    Only the latest wish counts (an image switch that picks another model replaces an earlier one not
    started yet). It never blocks the GUI thread and never reports errors: a model that cannot be loaded
    is reported by the Run that uses it. :meth:`stop` (the dock closed) drops what is not started yet; a
    step already under way (an import, a model load) ends in its daemon thread and only fills the cache.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wanted: tuple[Any, ...] | None = None
        self._thread: threading.Thread | None = None
        self.stopped = False
        self.idle = threading.Event()
        self.idle.set()

    @staticmethod
    def enabled() -> bool:
        import os

        return os.environ.get(WARMUP_ENV, "1").strip() not in ("0", "false", "no", "off")

    def want(self, model: str | None, device: str, tta: bool | None, presence: bool) -> None:
        with self._lock:
            if self.stopped:
                return
            self._wanted = (model, device, tta, presence)
            self.idle.clear()
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="wavegms-warm-up", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            self._wanted = None

    def _work(self) -> None:
        import logging

        while True:
            with self._lock:
                wanted, self._wanted = self._wanted, None
                if wanted is None or self.stopped:
                    self._thread = None
                    self.idle.set()
                    return
            try:
                warm_up(*wanted)
            except Exception as err:  # reported by the Run that uses this model, where it can be fixed
                logging.getLogger(__name__).debug("warm-up of %s failed: %s", wanted[0], err)
