"""The Segment widget and the one-click "Segment selected image" command share :func:`segment_layer`.

What is captured when Run is pressed (the image layer, its data, the slice, the transforms and the
name of the result layer) is what the result is written to, even if the user selects another layer
or moves the slider while the job runs. Every result carries the model's confidence in the mask (and
whether to review it, or that the image was blank) in the layer's ``metadata["wavegms"]``; the widget's
status line and the menu command's message say it.

A rerun updates the result layer only while its data is what the plugin wrote (a digest of it is kept
in that metadata): a mask the user has corrected by hand is never overwritten, the new result goes to a
new layer instead (:func:`napari_wavegms.gui.widgets.results.result_target`).

Post-processing (speck removal, hole filling, the largest object only) is the model card's choice,
made on validation, unless the user sets it under Advanced; a speck's size is then in the layer's
physical units² (its scale), so the same number means the same tissue whatever the pixel pitch.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    create_widget,
)

from napari_wavegms.core.images import ImageLayout, UnsupportedImageError, image_layout
from napari_wavegms.core.progress import Progress
from napari_wavegms.gui import settings as _settings
from napari_wavegms.gui.loaded_models import CACHE_LOCK, LOADING, Warmer, cached_segmenter, model_loaded
from napari_wavegms.gui.settings import Scope, SegmentSettings
from napari_wavegms.gui.widgets.common import (
    DockContainer,
    collapsible,
    fit_label,
    folder_or_none,
    model_controls,
    narrow_combo,
    presence_checkbox,
    restore,
)
from napari_wavegms.gui.widgets.corrections import CorrectionsRow, PreferencesRow
from napari_wavegms.gui.widgets.results import describe_confidence, kept_note, result_metadata, write_result
from napari_wavegms.gui.worker import Job, start_job
from napari_wavegms.zoo.registry import card_tta, card_tta_gain

if TYPE_CHECKING:
    import napari

    from napari_wavegms.inference.routing import ModelChoice

SUFFIX = "_wavegms"
TRANSFORMS = ("scale", "translate", "rotate", "shear", "affine", "units", "axis_labels")

# Sides below this many pixels are too small to segment reliably: the model reads every image resized
# to its own input size (128 × 128 for the built-in models), so a smaller one is enlarged several-fold
# and what it is trained to find (a lesion's edge against its surroundings) is a few pixels across.
MIN_SEGMENT_SIDE = 32


def input_warning(name: str, layout: ImageLayout) -> str | None:
    """What to tell the user before segmenting ``name`` (after "Wave-GMS: "), or ``None``.

    Slices a few pixels wide behind leading axes are most likely a colour axis taken as spatial
    (``ImageLayout.warning``), and that is said alone; otherwise an image, or slice, with a side below
    :data:`MIN_SEGMENT_SIDE` is too small to segment reliably: an 8 × 8 crop has no colour axis to blame.
    """
    if layout.warning and layout.lead and layout.width <= 4:
        return f"{name} looks misread: {layout.warning}"
    if min(layout.height, layout.width) < MIN_SEGMENT_SIDE:
        what = "slices are" if layout.lead else "image is"
        return (
            f"{name} is too small to segment reliably: its {what} {layout.height}×{layout.width} pixels. The "
            f"model reads each image resized to its own input size (128×128 for the built-in models), so "
            f"this one is enlarged many times and its mask is little more than a guess; segment an image or "
            f"crop of at least {MIN_SEGMENT_SIDE}×{MIN_SEGMENT_SIDE} pixels"
        )
    return None


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
    tta: bool | None = None  # average over test-time flips; None = the model card's choice
    postprocess: dict[str, Any] = field(default_factory=dict)  # Segmenter.segment options; {} = the card's
    presence: bool = True  # the model card's presence gate, where it has one (False: keep every mask)
    warning: str | None = None  # the input looks misread or is too small (see input_warning)


def layer_layout(layer: napari.layers.Image) -> ImageLayout:
    """How the engine reads this layer (slices, channels); raises UnsupportedImageError with the reason.

    napari's ``rgb`` flag is passed as a hint only: a grey+alpha PNG opens as H×W×2 without it and is
    still one 2D image (see :func:`preprocess.channel_axis_kind`).
    """
    data = layer.data[0] if layer.multiscale else layer.data
    return image_layout(data.shape, data.dtype, bool(layer.rgb))


def spatial_transforms(layer: napari.layers.Image, ndim: int) -> dict[str, Any]:
    """The layer's transforms for a mask of ``ndim`` dimensions.

    napari counts a channel axis it did not take as colour (grey+alpha H×W×2) as a dimension; the mask
    has none, so the transforms are cut to the leading ``ndim`` axes.
    """
    scale, translate = tuple(layer.scale), tuple(layer.translate)
    rotate, shear, affine = np.asarray(layer.rotate), np.asarray(layer.shear), layer.affine
    units, labels = tuple(layer.units), tuple(layer.axis_labels)
    if layer.ndim > ndim:
        from napari.utils.transforms import CompositeAffine

        axes = list(range(ndim))
        physical = CompositeAffine(
            scale=scale, translate=translate, rotate=rotate, shear=shear, ndim=layer.ndim
        ).set_slice(axes)
        scale, translate = tuple(physical.scale), tuple(physical.translate)
        rotate, shear, affine = np.asarray(physical.rotate), np.asarray(physical.shear), affine.set_slice(axes)
        units, labels = units[:ndim], labels[:ndim]
    return {
        "scale": scale,
        "translate": translate,
        "rotate": rotate,
        "shear": shear,
        "affine": np.asarray(affine.affine_matrix),
        "units": units,
        "axis_labels": labels,
    }


def capture(
    layer: napari.layers.Image,
    viewer: napari.Viewer | None,
    *,
    whole_stack: bool,
    model: str | None,
    device: str,
    threshold: float,
    tta: bool | None = None,
    postprocess: dict[str, Any] | None = None,
    presence: bool = True,
) -> SegmentRequest:
    """Freeze what to segment and where the result goes; raises UnsupportedImageError for a layer that
    cannot be segmented, before any job starts. ``postprocess``: options of ``Segmenter.segment``
    (``fill_holes``, ``keep_largest``, ``min_size``, ``min_area``); a ``min_area`` is in the layer's
    units², so the layer's pixel size goes with it."""
    data = layer.data[0] if layer.multiscale else layer.data
    layout = layer_layout(layer)
    shape = layout.mask_shape
    n_lead = len(layout.lead)
    index = None
    if n_lead > 0 and not whole_stack and viewer is not None:
        # the slider position in world coordinates, mapped through this layer's own transforms
        point = layer.world_to_data(viewer.dims.point)
        index = tuple(int(np.clip(round(float(point[i])), 0, shape[i] - 1)) for i in range(n_lead))
        data = data[index]
    transforms = spatial_transforms(layer, len(shape))
    post = dict(postprocess or {})
    if post.get("min_area") is not None:
        post["scale"] = tuple(float(s) for s in transforms["scale"][-2:])
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
        tta=tta,
        postprocess=post,
        presence=presence,
        warning=input_warning(layer.name, layout),
    )


def choice_for_layer(layer: napari.layers.Image) -> ModelChoice | None:
    """The built-in model made for this layer's kind of image (ultrasound, endoscopy, dermoscopy) and
    why (:func:`napari_wavegms.inference.routing.choice_for_image`); ``None`` for a layer that cannot be
    segmented or judged.

    The engine's reading of the layer (:func:`layer_layout`) decides the channels rather than napari's
    ``rgb`` flag alone, so a grey + alpha PNG (H×W×2) is judged on its grey channel and an RGBA array
    napari did not mark as RGB on its colours. Cheap: a strided sample of the first plane is read.
    """
    from napari_wavegms.inference.routing import choice_for_image

    try:
        layout = layer_layout(layer)
    except UnsupportedImageError:
        return None
    data = layer.data[0] if layer.multiscale else layer.data
    if layout.squeeze and len(layout.shape) > 2:
        data = data[..., 0]
    return choice_for_image(data, layout.kind != "gray")


def unknown_kind_message(choice: ModelChoice) -> str:
    """What the status line and the notification say of an image of no kind the built-in models know:
    Auto does not segment it (a model made for another kind draws confident nonsense on it), a model
    picked by hand still runs."""
    return f"{choice.message}. Not segmented: pick a model by hand to segment it anyway"


def pick_model(
    layer: napari.layers.Image, chosen: str | None, by_hand: bool = False
) -> tuple[str | None, ModelChoice | None]:
    """The model to segment ``layer`` with, and the automatic choice behind it (``None`` when the
    user's model is kept).

    A model the user chose always wins: a checkpoint file, or a built-in model picked by hand
    (``by_hand``). Otherwise the built-in model made for the layer's kind of image is taken
    (:func:`napari_wavegms.inference.routing.pick`).
    """
    from napari_wavegms.inference.routing import pick

    return pick(chosen, by_hand, lambda: choice_for_layer(layer))


def segment_job(request: SegmentRequest) -> Generator[Progress, None, tuple[Any, str, str, bool, bool]]:
    """Engine work for one request (runs in the worker thread): load the model once, segment.

    Returns the engine's ``Segmentation`` (mask, confidence, blank slices), the device's name, the
    post-processing applied, in words (``PostProcess.describe``), whether a presence gate ran and whether
    test-time flips were averaged. A run that has to load its model (the first with this model or device
    in this session) says so: importing torch and reading the weights take seconds before the first slice.
    """
    if not model_loaded(request.model, request.device):
        yield Progress(0, 0, LOADING)
    with CACHE_LOCK:
        segmenter = cached_segmenter(request.model, request.device, request.tta, request.presence)
        image = np.asarray(request.data)
        options = {k: v for k, v in request.postprocess.items() if k != "scale"}
        applied = segmenter.options(**options).describe()
        result = yield from segmenter.segment(image, rgb=request.rgb, threshold=request.threshold,
                                              with_confidence=True, **request.postprocess)
    return result, segmenter.device_name, applied, segmenter.presence is not None, segmenter.tta


def card_has_gate(model: str | None) -> bool:
    """Whether this model's card has a presence gate (read from the JSON card: no torch, no model load)."""
    from napari_wavegms.inference.presence import card_presence

    try:
        return card_presence(model) is not None
    except (OSError, ValueError):  # a checkpoint path that cannot be read is reported when it runs
        return False


def flips_tooltip(model: str | None) -> str:
    """The flips box's tooltip: what they cost (``training/benchmarks/bench_flips.py``) and what they gave
    this model on validation (its card), so the user can weigh the two."""
    gain = card_tta_gain(model)
    return ("Average the masks of the image and its three flips: four model passes, 3–4× the time of one "
            "on a CPU for a scan of about 500 × 500 px (2× at 2,048², where the full-size work weighs more; a "
            "first run with flips takes longer while the CPU prepares for a batch of four). Set to the model "
            "card's choice whenever the model changes: on only where the gain on validation was worth the time"
            + (f". This model: {gain}" if gain else ""))


def segment_layer(
    viewer: napari.Viewer,
    layer: napari.layers.Image,
    *,
    model: str | None,
    device: str = "auto",
    threshold: float = 0.5,
    whole_stack: bool = True,
    tta: bool | None = None,
    postprocess: dict[str, Any] | None = None,
    presence: bool = True,
    model_choice: str = "",
    on_done: Callable[[str, dict[str, Any]], None] | None = None,
    on_event: Callable[[Any], None] | None = None,
) -> Job | None:
    """Segment ``layer`` in a worker and write ``{layer}_wavegms``; ``on_done(status, info)`` with the
    result's metadata (device, confidence, review, note; empty when there was no result), the name of the
    layer written (``layer``: ``{layer}_wavegms [1]`` when the user had edited ``{layer}_wavegms``) and the
    edited result layers left as they were (``kept``).
    ``model_choice`` is why the model was chosen automatically (``ModelChoice.message``), kept in the
    result's metadata so a mask says which model made it and why. ``postprocess``: options of
    ``Segmenter.segment`` (see :func:`capture`); ``None`` = the model card's choice, as for ``tta`` (test-time
    flips). ``presence``: apply the model card's presence gate (an image it finds lesion-free gets an empty
    mask), where it has one.

    A layer that cannot be segmented is refused at once with the reason (``None`` is returned); one
    that looks misread (slices a few pixels wide) or is too small to segment reliably is segmented after
    a warning that says why (:func:`input_warning`).
    """
    from napari.utils.notifications import show_error, show_warning

    try:
        request = capture(layer, viewer, whole_stack=whole_stack, model=model, device=device, threshold=threshold,
                          tta=tta, postprocess=postprocess, presence=presence)
    except UnsupportedImageError as err:
        show_error(f"Wave-GMS cannot segment {layer.name}: {err}")
        return None
    if request.warning:
        show_warning(f"Wave-GMS: {request.warning}")
    state: dict[str, Any] = {}

    def _result(value: tuple[Any, str, str, bool, bool]) -> None:
        info = result_metadata(value, request, model, threshold, model_choice)
        state.update(info)
        written, kept = write_result(viewer, request, np.asarray(value[0].mask), info)
        state["layer"] = written.name
        if kept:
            state["kept"] = kept

    def _finished(status: str) -> None:
        if on_done is not None:
            on_done(status, state)

    return start_job(
        segment_job(request),
        f"Wave-GMS: segmenting {layer.name}",
        on_result=_result,
        on_finished=_finished,
        on_event=on_event,
    )


class SegmentWidget(DockContainer):
    """Segment an image layer (2D, or a stack slice by slice) into a ``{image}_wavegms`` Labels layer.

    The image picker follows the layer the user works on: the active Image layer and every Image layer
    opened, unless the user picked one in the picker by hand since (a pick that holds until the next
    Image layer is selected in the layer list).
    """

    SETTINGS = SegmentSettings.SECTION

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        saved = SegmentSettings.load()
        _settings.apply_cache_setting()
        self._build_controls(saved.device)
        self._build_cleanup_controls()
        super().__init__(widgets=self._rows())
        self._add_advanced()
        self._restore(saved)
        self.job: Job | None = None
        self._target = ""  # the name of the result layer of the last run
        self._picked_by_hand = False  # the user chose in the picker since the last selection
        self._following = False  # the picker is being set by this widget, not by the user
        self._inserted: Any = None
        self._follow_viewer(viewer)
        self._connect()
        self._show_cleanup()
        self._prepare_warm_up()

    # --- building -------------------------------------------------------------------------------
    def _build_controls(self, device: str) -> None:
        """The main rows: image, model, device, threshold, flips, stack scope, Run/Cancel and status."""
        import napari

        self.image = narrow_combo(
            create_widget(
                annotation=napari.layers.Image,
                label="image",
                name="image",
                options={"tooltip": "The image to segment: follows the layer selected in the layer list "
                         "unless you pick one here"},
            )
        )
        self.model, self.device, self.threshold = model_controls(device)
        self.tta = CheckBox(
            value=card_tta(None),
            text="test-time flips (4 passes, 3–4× slower)",
            name="tta",
            tooltip=flips_tooltip(None),
        )
        self.scope = ComboBox(
            choices=[scope.value for scope in Scope],
            value=Scope.WHOLE_STACK.value,
            label="stacks",
            name="scope",
            tooltip="For 3D / time stacks: every slice, or only the one shown",
        )
        self.run_button = PushButton(text="Run", tooltip="Segment the chosen image into {image}_wavegms")
        self.cancel_button = PushButton(text="Cancel", enabled=False, tooltip="Stop the running segmentation")
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress", visible=False,
                                    tooltip="Slices segmented (busy while the model loads)")
        self.status = fit_label(Label(value="", tooltip="What the last run did"))
        self.device_used = fit_label(Label(value="device in use: (not run yet)",
                                           tooltip="The device the last run actually used"))
        self.corrections = CorrectionsRow(self._viewer)
        self.my_models = PreferencesRow()

    def _build_cleanup_controls(self) -> None:
        """The Advanced section's controls: presence check, clean-up, and the cache folder."""
        self.cleanup_default = CheckBox(
            value=True,
            text="the model's clean-up",
            name="cleanup_default",
            tooltip="Remove specks, fill holes or keep the largest object as chosen on the model's validation "
            "images (its model card); untick to choose yourself below",
        )
        self.cleanup_note = fit_label(Label(value="", tooltip="The clean-up the model's validation chose"))
        self.fill_holes = CheckBox(value=False, text="fill holes", name="fill_holes",
                                   tooltip="Background enclosed by a lesion becomes lesion")
        self.keep_largest = CheckBox(value=False, text="largest object only", name="keep_largest",
                                     tooltip="Keep only the largest object of each mask (one lesion per image)")
        self.presence = presence_checkbox()
        self.min_area = FloatSpinBox(
            value=0.0, min=0.0, max=1e6, step=1.0, label="smallest object", name="min_area",
            tooltip="Remove objects smaller than this area, in the image layer's units² (its scale: mm² "
            "for a layer in mm; pixels when it has none); 0 keeps all",
        )
        self.cache = FileEdit(
            mode="d",
            label="cache folder",
            name="cache_dir",
            value=_settings.load("general").get("cache_dir", ""),
            tooltip="Where downloaded weights and sample data are kept (empty: the default "
            "per-user cache; the WAVEGMS_CACHE_DIR environment variable wins)",
        )

    def _rows(self) -> list[Any]:
        return [
            self.image,
            self.model,
            self.device,
            self.threshold,
            self.tta,
            self.scope,
            Container(widgets=[self.run_button, self.cancel_button], layout="horizontal", labels=False),
            self.progress,
            self.status,
            self.device_used,
            self.my_models,
            self.corrections,
        ]

    def _add_advanced(self) -> None:
        """The collapsed Advanced section under the main rows, then a stretch that keeps a tall dock's
        controls together at the top."""
        # a column of its own (no label column), so the long "smallest object (mm²)" does not widen the dock
        self.min_area.native.setMaximumWidth(110)
        self.min_area_label = Label(value="smallest object", tooltip=self.min_area.tooltip)
        area = Container(widgets=[self.min_area_label, self.min_area], layout="horizontal", labels=False)
        cleanup = Container(widgets=[self.presence, self.cleanup_default, self.cleanup_note, self.fill_holes,
                                     self.keep_largest, area], name="cleanup", label="clean-up", labels=False)
        for box in (area, cleanup):
            box.margins = (0, 0, 0, 0)
        self.advanced = collapsible("Advanced", [cleanup, self.cache], "Settings most users never change")
        self.form.layout().addWidget(self.advanced)
        self.form.layout().addStretch(1)

    def _restore(self, saved: SegmentSettings) -> None:
        """Last session's choices (the device was offered when its combo was built)."""
        restore([self.threshold, self.tta, self.scope, *self._cleanup_controls()], saved.to_dict())
        self.model.set_model(saved.model, by_hand=saved.model_by_hand)

    def _follow_viewer(self, viewer: napari.viewer.Viewer) -> None:
        """Start on the selected Image layer and its model."""
        import napari

        active = viewer.layers.selection.active
        if isinstance(active, napari.layers.Image):
            self._follow_layer(active)
        self._follow_image()

    def _connect(self) -> None:
        viewer = self._viewer
        self.image.changed.connect(self._follow_image)
        self.image.native.activated.connect(self._pick_by_hand)
        viewer.layers.events.inserted.connect(self._layer_inserted)
        viewer.layers.selection.events.active.connect(self._active_changed)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        for widget in (self.model.combo, self.device, self.threshold, self.tta, self.scope,
                       *self._cleanup_controls()):
            widget.changed.connect(self._save)
        self.cleanup_default.changed.connect(self._show_cleanup)
        self.model.combo.changed.connect(self._show_cleanup)
        self.model.combo.changed.connect(self._card_flips)
        self.image.changed.connect(self._show_cleanup)
        self.model.mode_changed.connect(self._model_mode_changed)
        self.cache.changed.connect(self._cache_changed)

    def _prepare_warm_up(self) -> None:
        """Once the dock is on screen, the model the next Run will use is loaded in the background, so the
        first click does not wait for torch and the weights (a hidden viewer, as in scripts, never does)."""
        self.warmer = Warmer()
        self._warming = False
        warmer = self.warmer
        self.native.destroyed.connect(lambda *_: warmer.stop())
        if Warmer.enabled():
            self.on_first_show(self._start_warming)
        self.model.combo.changed.connect(self._warm_next)
        self.device.changed.connect(self._warm_next)

    # --- loading ahead --------------------------------------------------------------------------
    def _start_warming(self) -> None:
        self._warming = True
        self._warm_next()

    def _warm_next(self, *_: Any) -> None:
        """Load the model now chosen (image switched, model or device picked) while the user gets ready."""
        if self._warming:
            self.warmer.want(self.model.model, str(self.device.value), bool(self.tta.value),
                             bool(self.presence.value))

    # --- which image ----------------------------------------------------------------------------
    def _pick_by_hand(self, *_: Any) -> None:
        self._picked_by_hand = True

    def _follow_layer(self, layer: Any) -> None:
        """Show ``layer`` in the picker (refreshing the choices first: this may run before napari
        tells the picker that a layer was added)."""
        if self.image.value is layer:
            return
        if layer not in self.image.choices:
            self.image.reset_choices()
        if layer in self.image.choices:
            self._following = True
            try:
                self.image.value = layer
            finally:
                self._following = False

    def _layer_inserted(self, event: Any) -> None:
        """A new Image layer (opened, or added by a script) is taken unless the user picked by hand."""
        from napari.layers import Image

        self._inserted = event.value
        if isinstance(event.value, Image) and not self._picked_by_hand:
            self._follow_layer(event.value)

    def _active_changed(self, event: Any) -> None:
        """An Image layer selected in the layer list is taken, and ends an earlier pick by hand."""
        from napari.layers import Image

        layer = event.value
        # napari activates a new layer (several times) right after inserting it: handled above
        if not isinstance(layer, Image) or layer is self._inserted:
            return
        self._inserted = None
        self._picked_by_hand = False
        self._follow_layer(layer)

    # --- which model ----------------------------------------------------------------------------
    def _follow_image(self, *_: Any) -> ModelChoice | None:
        """Until the user picks a model by hand, the picker follows the chosen image's kind and the
        status line (and the picker's tooltip) says which model and why; a model the user chose stays."""
        layer = self.image.value
        if layer is None:
            return None
        model, choice = pick_model(layer, self.model.model, self.model.by_hand)
        if choice is None:  # the user's model, or an image that cannot be judged: the model stays
            if self.model.by_hand or self.model.users_model:
                self.status.value = f"model picked by hand: {model} (Auto: the one made for each image)"
            return None
        if model != self.model.model:
            self.model.set_model(model)
        self.model.set_note(choice.message)
        self.status.value = unknown_kind_message(choice) if choice.unknown else f"model: {choice.message}"
        return choice

    def _model_mode_changed(self, by_hand: bool) -> None:
        """A pick by hand is remembered; "Auto" goes back to the model made for the chosen image."""
        self._save()
        if not by_hand:
            self._follow_image()

    def _cache_changed(self, value: Any) -> None:
        import os

        from napari_wavegms.zoo.downloads import CACHE_ENV

        folder = folder_or_none(value)
        _settings.save("general", {"cache_dir": str(folder) if folder else ""})
        if folder:
            os.environ[CACHE_ENV] = str(folder)

    # --- clean-up -------------------------------------------------------------------------------
    def _cleanup_controls(self) -> list[Any]:
        return [self.presence, self.cleanup_default, self.fill_holes, self.keep_largest, self.min_area]

    def _show_cleanup(self, *_: Any) -> None:
        """The model's clean-up in words; the user's controls only count (and are enabled) when it is off.
        The area's unit follows the chosen image layer."""
        from napari_wavegms.inference.postprocess import card_postprocess

        mine = not self.cleanup_default.value
        for widget in (self.fill_holes, self.keep_largest, self.min_area):
            widget.enabled = mine
        try:
            chosen = card_postprocess(self.model.model).describe()
        except Exception:  # a checkpoint path that cannot be read is reported when it runs
            chosen = "none"
        self.cleanup_note.value = f"model's clean-up: {chosen}"
        self.presence.enabled = card_has_gate(self.model.model)
        self.min_area_label.value = f"smallest object ({self._area_unit()})"

    def _card_flips(self, *_: Any) -> None:
        """A newly chosen model brings its card's test-time flips (on where they paid for their time on
        validation) and says what they gave it."""
        self.tta.value = card_tta(self.model.model)
        self.tta.tooltip = flips_tooltip(self.model.model)

    def _area_unit(self) -> str:
        layer = self.image.value
        if layer is None:
            return "units²"
        scale = tuple(float(s) for s in layer.scale[-2:])
        unit = layer.units[-1] if len(layer.units) else None
        text = f"{unit:~}" if unit is not None and hasattr(unit, "dimensionality") else str(unit or "")
        if text in ("", "pixel", "px"):  # no physical unit: pixels, or the scale's own units
            return "pixels" if scale == (1.0, 1.0) else "scale units²"
        return f"{text}²"

    def cleanup_options(self) -> dict[str, Any] | None:
        """``Segmenter.segment`` options from the Advanced section; ``None`` = the model card's choice."""
        return self.settings().cleanup()

    def settings(self) -> SegmentSettings:
        """The widget's choices now: what a Run uses, what is saved, what the menu command reads."""
        return SegmentSettings(
            model=self.model.model,
            model_by_hand=self.model.by_hand,  # the menu command keeps a model picked by hand
            device=str(self.device.value),
            threshold=float(self.threshold.value),
            tta=bool(self.tta.value),
            scope=Scope(self.scope.value),
            presence=bool(self.presence.value),
            cleanup_default=bool(self.cleanup_default.value),
            fill_holes=bool(self.fill_holes.value),
            keep_largest=bool(self.keep_largest.value),
            min_area=float(self.min_area.value),
        )

    def _save(self, *_: Any) -> None:
        self.settings().save()

    # --- running --------------------------------------------------------------------------------
    def run(self, *_: Any) -> Job | None:
        """Start segmenting the chosen layer (what is chosen now is what gets written)."""
        from napari.utils.notifications import show_error

        layer = self.image.value
        if layer is None:
            show_error("Wave-GMS: open an image first (no Image layer is chosen)")
            return None
        model, choice = pick_model(layer, self.model.model, self.model.by_hand)  # the image may have changed
        if model is None:
            show_error(
                "Wave-GMS: no model chosen. Pick a built-in model, Browse… for a checkpoint, or train one."
            )
            return None
        if model != self.model.model:
            self.model.set_model(model)
        if choice is not None and choice.unknown:  # Auto does not guess a model for it; by hand it runs
            from napari.utils.notifications import show_warning

            self.status.value = unknown_kind_message(choice)
            show_warning(f"Wave-GMS: {layer.name}: {unknown_kind_message(choice)}")
            return None
        chosen = self.settings()
        chosen.save()
        self._target = f"{layer.name}{SUFFIX}"
        job = segment_layer(
            self._viewer,
            layer,
            model=model,
            device=chosen.device,
            threshold=chosen.threshold,
            whole_stack=chosen.whole_stack,
            tta=chosen.tta,
            postprocess=chosen.cleanup(),
            presence=chosen.presence,
            model_choice=choice.message if choice is not None else "",
            on_done=self._done,
            on_event=self._event,
        )
        if job is None:  # refused with the reason in a notification
            self.status.value = f"cannot segment {layer.name} (see the notification)"
            return None
        self.job = job
        if job.running:  # (a synchronous job has already finished)
            self.run_button.enabled = False
            self.cancel_button.enabled = True
            self.progress.visible = True
            if not self.status.value.startswith("loading"):
                self.status.value = f"segmenting {layer.name} → {layer.name}{SUFFIX}…"
        return job

    def _event(self, event: Any) -> None:
        if not isinstance(event, Progress):
            return
        self.progress.visible = True
        if event.total:
            self.progress.max = event.total
            self.progress.value = min(event.done, event.total)
            self.status.value = f"{event.done}/{event.total} slices" + (
                f" · {event.message}" if event.message else ""
            )
        else:  # model loading: no count yet, a busy bar
            self.progress.max = 0
            self.progress.value = 0
            self.status.value = event.message or "working…"

    def cancel(self, *_: Any) -> None:
        if self.job is not None:
            self.job.cancel()
            self.cancel_button.enabled = False
            self.status.value = "cancelling…"

    def _done(self, status: str, info: dict[str, Any]) -> None:
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        self.progress.visible = False
        confidence = describe_confidence(info)
        self.status.value = {
            "done": f"done: {info.get('layer', self._target)}" + (f" · {confidence}" if confidence else "")
            + kept_note(info),
            "cancelled": "cancelled",
            "failed": "failed (see the notification)",
        }.get(status, status)
        device_name = info.get("device")
        if device_name:
            self.device_used.value = f"device in use: {device_name}"
        current = self.device.value
        self.device.reset_choices()  # torch is loaded now: list the real devices
        if current in self.device.choices:
            self.device.value = current
