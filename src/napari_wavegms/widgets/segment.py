"""The Segment widget and the one-click "Segment selected image" command share :func:`segment_layer`.

What is captured when Run is pressed (the image layer, its data, the slice, the transforms and the
name of the result layer) is what the result is written to, even if the user selects another layer
or moves the slider while the job runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSlider, Label, PushButton, create_widget

from ..progress import Progress
from . import _settings
from ._common import ModelPicker, device_combo, folder_or_none, restore, snapshot
from ._worker import Job, start_job

if TYPE_CHECKING:
    import napari

SUFFIX = "_wavegms"
TRANSFORMS = ("scale", "translate", "rotate", "shear", "affine", "units", "axis_labels")

# One loaded model is kept between runs (loading costs a second or more); the lock keeps two jobs
# (widget and menu command) from using it at the same time.
_CACHE: dict[str, Any] = {}
_CACHE_LOCK = threading.Lock()


@dataclass
class SegmentRequest:
    """Everything a run needs, captured on the GUI thread when it starts."""

    image_name: str
    output_name: str
    data: Any  # the image (or the current slice of a stack), still lazy for dask arrays
    rgb: bool
    full_shape: tuple[int, ...]  # spatial shape of the whole layer (channel axis dropped)
    index: tuple[int, ...] | None  # leading indices of the slice, or None for the whole stack
    transforms: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    device: str = "auto"
    threshold: float = 0.5


def capture(
    layer: napari.layers.Image,
    viewer: napari.Viewer | None,
    *,
    whole_stack: bool,
    model: str | None,
    device: str,
    threshold: float,
) -> SegmentRequest:
    """Freeze what to segment and where the result goes."""
    data = layer.data[0] if layer.multiscale else layer.data
    shape = tuple(data.shape[:-1] if layer.rgb else data.shape)
    n_lead = len(shape) - 2
    index = None
    if n_lead > 0 and not whole_stack and viewer is not None:
        # the slider position in world coordinates, mapped through this layer's own transforms
        point = layer.world_to_data(viewer.dims.point)
        index = tuple(int(np.clip(round(float(point[i])), 0, shape[i] - 1)) for i in range(n_lead))
        data = data[index]
    transforms = {
        "scale": tuple(layer.scale),
        "translate": tuple(layer.translate),
        "rotate": np.asarray(layer.rotate),
        "shear": np.asarray(layer.shear),
        "affine": np.asarray(layer.affine.affine_matrix),
        "units": tuple(layer.units),
        "axis_labels": tuple(layer.axis_labels),
    }
    return SegmentRequest(
        image_name=layer.name,
        output_name=f"{layer.name}{SUFFIX}",
        data=data,
        rgb=bool(layer.rgb),
        full_shape=shape,
        index=index,
        transforms=transforms,
        model=model,
        device=device,
        threshold=threshold,
    )


def model_for_layer(layer: napari.layers.Image, chosen: str | None) -> str | None:
    """The model to offer for ``layer``: the user's own checkpoint stays; among the built-in models the
    one made for this kind of image (colour endoscopy or grey ultrasound) is taken."""
    from ..models import builtin_models, has_color, suggest_model

    if chosen and chosen not in builtin_models():
        return chosen
    data = layer.data[0] if layer.multiscale else layer.data
    return suggest_model(has_color(data, bool(layer.rgb))) or chosen


def segment_job(request: SegmentRequest) -> Generator[Progress, None, tuple[np.ndarray, str]]:
    """Engine work for one request (runs in the worker thread): load the model once, segment."""
    yield Progress(0, 0, "loading the model")
    with _CACHE_LOCK:
        from ..inference import Segmenter
        from ..models import resolve_model

        path = str(resolve_model(request.model))
        key = f"{path}|{request.device}"
        segmenter = _CACHE.get(key)
        if segmenter is None:
            _CACHE.clear()
            segmenter = Segmenter(path, device=request.device)
            _CACHE[key] = segmenter
        image = np.asarray(request.data)
        mask = yield from segmenter.segment(image, rgb=request.rgb, threshold=request.threshold)
    return np.asarray(mask), segmenter.device_name


def write_result(viewer: napari.Viewer, request: SegmentRequest, mask: np.ndarray, info: dict[str, Any]):
    """Put the mask into ``{image}_wavegms``: update it if it exists, else add it with the image's transforms."""
    from napari.layers import Labels

    mask = mask.astype(np.uint8, copy=False)
    layer = viewer.layers[request.output_name] if request.output_name in viewer.layers else None
    if layer is not None and not isinstance(layer, Labels):
        raise ValueError(f"a layer named {request.output_name!r} exists and is not a Labels layer; rename it")
    if request.index is not None:
        if layer is not None and tuple(layer.data.shape) == request.full_shape:
            full = np.asarray(layer.data)
        else:
            full = np.zeros(request.full_shape, dtype=np.uint8)
        full[request.index] = mask
        mask = full
    metadata = {"wavegms": info}
    if layer is None:
        layer = viewer.add_labels(mask, name=request.output_name, metadata=metadata, **request.transforms)
    else:
        layer.data = mask
        for key, value in request.transforms.items():
            setattr(layer, key, value)
        layer.metadata.update(metadata)
    return layer


def segment_layer(
    viewer: napari.Viewer,
    layer: napari.layers.Image,
    *,
    model: str | None,
    device: str = "auto",
    threshold: float = 0.5,
    whole_stack: bool = True,
    on_done: Callable[[str, str | None], None] | None = None,
    on_event: Callable[[Any], None] | None = None,
) -> Job:
    """Segment ``layer`` in a worker and write ``{layer}_wavegms``; ``on_done(status, device_name)``."""
    request = capture(layer, viewer, whole_stack=whole_stack, model=model, device=device, threshold=threshold)
    state: dict[str, Any] = {"device": None}

    def _result(value: tuple[np.ndarray, str]) -> None:
        mask, device_name = value
        state["device"] = device_name
        info = {
            "model": str(model),
            "device": device_name,
            "threshold": threshold,
            "image": request.image_name,
        }
        write_result(viewer, request, mask, info)

    def _finished(status: str) -> None:
        if on_done is not None:
            on_done(status, state["device"])

    return start_job(
        segment_job(request),
        f"Wave-GMS: segmenting {layer.name}",
        on_result=_result,
        on_finished=_finished,
        on_event=on_event,
    )


class SegmentWidget(Container):
    """Segment an image layer (2D, or a stack slice by slice) into a ``{image}_wavegms`` Labels layer."""

    SETTINGS = "segment"

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        import napari

        self._viewer = viewer
        saved = _settings.load(self.SETTINGS)
        _settings.apply_cache_setting()
        self.image = create_widget(annotation=napari.layers.Image, label="image", name="image")
        self.model = ModelPicker(label="model", name="model")
        self.device = device_combo(saved.get("device"))
        self.device.name = "device"
        self.threshold = FloatSlider(
            value=0.5,
            min=0.01,
            max=0.99,
            step=0.01,
            label="threshold",
            name="threshold",
            tooltip="Foreground where the soft mask is above this",
        )
        self.scope = ComboBox(
            choices=["whole stack", "current slice"],
            value="whole stack",
            label="stacks",
            name="scope",
            tooltip="For 3D / time stacks: every slice, or only the one shown",
        )
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.device_used = Label(value="device in use: (not run yet)")
        self.cache = FileEdit(
            mode="d",
            label="cache folder",
            name="cache_dir",
            value=_settings.load("general").get("cache_dir", ""),
            tooltip="Where downloaded weights and sample data are kept (empty: the default "
            "per-user cache; the WAVEGMS_CACHE_DIR environment variable wins)",
        )
        super().__init__(
            widgets=[
                self.image,
                self.model,
                self.device,
                self.threshold,
                self.scope,
                Container(widgets=[self.run_button, self.cancel_button], layout="horizontal", labels=False),
                self.status,
                self.device_used,
                self.cache,
            ]
        )
        restore([self.threshold, self.scope], saved)
        self.model.set_model(saved.get("model"))
        self._follow_image()
        self.job: Job | None = None
        self.image.changed.connect(self._follow_image)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        for widget in (self.model.combo, self.device, self.threshold, self.scope):
            widget.changed.connect(self._save)
        self.cache.changed.connect(self._cache_changed)

    def _follow_image(self, *_: Any) -> None:
        layer = self.image.value
        if layer is not None:
            suggestion = model_for_layer(layer, self.model.model)
            if suggestion != self.model.model:
                self.model.set_model(suggestion)
                self.status.value = f"model for this image: {suggestion}"

    def _cache_changed(self, value: Any) -> None:
        import os

        from ..weights import CACHE_ENV

        folder = folder_or_none(value)
        _settings.save("general", {"cache_dir": str(folder) if folder else ""})
        if folder:
            os.environ[CACHE_ENV] = str(folder)

    def settings(self) -> dict[str, Any]:
        values = snapshot([self.device, self.threshold, self.scope])
        values["model"] = self.model.model
        return values

    def _save(self, *_: Any) -> None:
        _settings.save(self.SETTINGS, self.settings())

    def run(self, *_: Any) -> Job | None:
        """Start segmenting the chosen layer (what is chosen now is what gets written)."""
        from napari.utils.notifications import show_error

        layer = self.image.value
        if layer is None:
            show_error("Wave-GMS: open an image first (no Image layer is chosen)")
            return None
        if self.model.model is None:
            show_error(
                "Wave-GMS: no model chosen. Pick a built-in model, Browse… for a checkpoint, or train one."
            )
            return None
        self._save()
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.status.value = f"segmenting {layer.name}…"
        self.job = segment_layer(
            self._viewer,
            layer,
            model=self.model.model,
            device=self.device.value,
            threshold=float(self.threshold.value),
            whole_stack=self.scope.value == "whole stack",
            on_done=self._done,
            on_event=self._event,
        )
        return self.job

    def _event(self, event: Any) -> None:
        if isinstance(event, Progress) and event.total:
            self.status.value = f"{event.done}/{event.total} slices"

    def cancel(self, *_: Any) -> None:
        if self.job is not None:
            self.job.cancel()
            self.status.value = "cancelling…"

    def _done(self, status: str, device_name: str | None) -> None:
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        self.status.value = {
            "done": "done",
            "cancelled": "cancelled",
            "failed": "failed (see the notification)",
        }.get(status, status)
        if device_name:
            self.device_used.value = f"device in use: {device_name}"
        current = self.device.value
        self.device.reset_choices()  # torch is loaded now: list the real devices
        if current in self.device.choices:
            self.device.value = current
