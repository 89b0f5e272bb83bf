"""Pieces shared by the widgets: model and device pickers, remembered settings, folder fields.

Nothing here imports torch: the device list is only asked of torch once torch is loaded (a job has
run); before that the picker offers ``auto``, ``cpu`` and the device remembered from last time.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSlider, PushButton, Widget
from psygnal import Signal
from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import QFrame, QScrollArea

from napari_wavegms.gui import settings as _settings
from napari_wavegms.gui.session import session_models

RECENT_LIMIT = 6
DOCK_WIDTH = 420  # every dock must fit this width (NAPARI.md): long texts are elided or wrapped
MODEL_LABEL_CHARS = 28  # a model's name in the picker; the full text is its tooltip


def elide(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis (the full text goes into a tooltip)."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def fit_label(label: Widget) -> Widget:
    """Let a status label wrap and never widen its dock: a long path or message is cut at the dock's
    edge instead of pushing the viewer's canvas aside (its tooltip keeps the whole text)."""
    from qtpy.QtWidgets import QSizePolicy

    label.native.setWordWrap(True)
    label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    label.changed.connect(lambda text: setattr(label, "tooltip", str(text) or None))
    return label


def narrow_combo(combo: ComboBox, chars: int = 16) -> ComboBox:
    """A combo box whose width does not follow its longest entry (layer and model names can be long)."""
    from qtpy.QtWidgets import QComboBox

    combo.native.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.native.setMinimumContentsLength(chars)
    return combo


def insert_before(form: Any, widget: Any, anchor: Widget) -> None:
    """Insert a Qt ``widget`` into ``form``'s layout just above the row that holds ``anchor``
    (magicgui wraps labelled widgets, so the row is the anchor's ancestor, not the anchor)."""
    layout = form.layout()
    for i in range(layout.count()):
        row = layout.itemAt(i).widget()
        if row is not None and (row is anchor.native or row.isAncestorOf(anchor.native)):
            layout.insertWidget(i, widget)
            return
    layout.addWidget(widget)


def collapsible(title: str, widgets: list[Widget], tooltip: str = "") -> Any:
    """A collapsed "Advanced"-style section (superqt's QCollapsible) holding ``widgets`` with labels:
    settings a user rarely needs stay out of the main flow."""
    from superqt import QCollapsible

    section = QCollapsible(title)
    section.setToolTip(tooltip)
    section.setContentsMargins(0, 0, 0, 0)
    section.content().layout().setContentsMargins(0, 0, 0, 0)
    inner = Container(widgets=widgets)
    inner.margins = (0, 0, 0, 0)
    section.addWidget(inner.native)
    section.collapse(animate=False)
    return section


class _DockScroll(QScrollArea):
    """A vertical scroll area that asks for its content's full size (QScrollArea's own hint is capped),
    so a dock is as tall as its widget when there is room and scrolls only when there is not.
    :attr:`first_shown` runs once, when the dock first appears on screen (not for a hidden viewer)."""

    def __init__(self) -> None:
        super().__init__()
        self.first_shown: list[Any] = []

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        callbacks, self.first_shown = self.first_shown, []
        for callback in callbacks:
            callback()

    def sizeHint(self) -> QSize:
        inner = self.widget().sizeHint() if self.widget() is not None else QSize(0, 0)
        bar = self.verticalScrollBar().sizeHint().width()
        return QSize(inner.width() + bar + 2 * self.frameWidth(), inner.height() + 2 * self.frameWidth())


class DockContainer(Container):
    """A Container that napari docks inside a vertical scroll area.

    napari docks a magicgui widget's ``native``; here that is a scroll area around the form, so the
    three docks fit a 1366×768 screen together (each scrolls when the window is short) instead of
    growing the window past the screen. :attr:`form` is the widget that holds the layout.
    """

    @property
    def native(self) -> Any:
        scroll = self.__dict__.get("_dock_scroll")
        if scroll is None:
            scroll = _DockScroll()
            scroll.setWidgetResizable(True)
            scroll.setFrameShape(QFrame.Shape.NoFrame)
            scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
            scroll.setWidget(self._widget._mgui_get_native_widget())
            self.__dict__["_dock_scroll"] = scroll
        return scroll

    @property
    def form(self) -> Any:
        """The QWidget holding the controls (its layout takes extra Qt widgets)."""
        return self._widget._mgui_get_native_widget()

    def on_first_show(self, callback: Any) -> None:
        """Run ``callback`` once, when the dock first appears on screen (now, if it is visible)."""
        if self.native.isVisible():
            callback()
        else:
            self.native.first_shown.append(callback)


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
    """(label, value) pairs: built-in models, the user's own models, models trained in this session,
    recently chosen files."""
    from napari_wavegms.zoo.registry import builtin_models, user_models

    choices: list[tuple[str, str]] = [("scratch (no initial model)", "")] if include_scratch else []
    for name, info in builtin_models().items():
        summary = info.summary if info.summary != name else ""
        choices.append((f"{name} — {summary}" if summary else name, name))
    for name, info in user_models().items():
        choices.append((f"mine: {name}" + (f" ({info.card.kind})" if info.card.kind else ""), name))
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


def importing(name: str) -> bool:
    """Whether module ``name`` is being imported right now (by a background thread warming up): it is in
    ``sys.modules`` already, and importing from it would make this thread wait until it is finished."""
    module = sys.modules.get(name)
    return module is not None and bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def device_choices(remembered: str | None = None) -> list[str]:
    """``auto`` plus the devices this machine has; without torch loaded, what can be known cheaply."""
    if "torch" in sys.modules and not importing("torch") and not importing("napari_wavegms.core.device"):
        from napari_wavegms.core.device import available_devices

        return available_devices()
    names = ["auto", "cpu"]
    if remembered and remembered not in names:
        names.insert(1, remembered)
    return names


class ModelPicker(Container):
    """A combo box of models plus a "Browse…" button for any checkpoint file.

    With ``automatic=True`` (Segment, Batch) the widget may set the model itself, from the kind of image,
    until the user picks one by hand: :attr:`by_hand` says which, so a model the user chose is never
    replaced. An "Auto" button undoes a pick by hand; :attr:`mode_changed` tells the owner when
    :attr:`by_hand` changes. What is chosen, and when the user's model wins, is decided in
    :mod:`napari_wavegms.inference.routing` (see :attr:`users_model`); this is only the widget.
    """

    HELP = (
        "Built-in models, models trained in this session, and checkpoint files (.safetensors) "
        "or training output folders you chose with Browse…"
    )
    AUTO_HELP = ("Automatic until you pick a model here: the built-in model made for the image's kind "
                 "(ultrasound, endoscopy, dermoscopy), or your own model for that kind when you chose "
                 "\"use it automatically\" after a fine-tune. A model you pick is kept for every image.")

    mode_changed = Signal(bool)  # by_hand

    def __init__(self, label: str = "model", include_scratch: bool = False, automatic: bool = False,
                 **kwargs: Any) -> None:
        self._include_scratch = include_scratch
        self._full: dict[str, str] = {}  # value → full label (the combo shows it elided)
        self._note = ""  # why the automatic choice is what it is (shown in the tooltip)
        self._automatic = automatic
        self.by_hand = not automatic  # a picker without an automatic choice only ever holds the user's
        self.combo = narrow_combo(ComboBox(choices=self._choices, nullable=False, tooltip=self.HELP))
        self.browse = PushButton(text="Browse…", tooltip="Choose a checkpoint file (.safetensors)")
        widgets: list[Widget] = [self.combo, self.browse]
        self.auto = PushButton(text="Auto", enabled=False,
                               tooltip="Go back to the automatic choice: the built-in model made for each "
                               "image's kind (undoes a pick by hand)")
        if automatic:
            widgets.append(self.auto)
            # room for the button within DOCK_WIDTH: the combo shows fewer characters (tooltips have all)
            narrow_combo(self.combo, 12)
        super().__init__(widgets=widgets, layout="horizontal", labels=False, label=label, **kwargs)
        self.margins = (0, 0, 0, 0)
        self.tooltip = f"{self.HELP}\n\n{self.AUTO_HELP}" if automatic else self.HELP
        self.browse.changed.connect(self._browse)
        self.combo.changed.connect(self._show_full_name)
        if automatic:
            # ``activated`` comes from the user only (not from setting the value in code)
            self.combo.native.activated.connect(lambda *_: self._set_by_hand(True))
            self.auto.changed.connect(lambda *_: self._set_by_hand(False))
        session_models.changed.connect(self._refresh)
        self._show_full_name()

    def _set_by_hand(self, by_hand: bool) -> None:
        changed = by_hand != self.by_hand
        self.by_hand = by_hand
        self.auto.enabled = by_hand
        if by_hand:
            self._note = ""
        self._show_full_name()
        if changed:
            self.mode_changed.emit(by_hand)

    def set_note(self, note: str) -> None:
        """Say why the automatic choice is what it is (in the picker's tooltip)."""
        self._note = note
        self._show_full_name()

    def _choices(self, _widget: Any = None) -> list[tuple[str, str]]:
        choices = model_choices(self._include_scratch)
        self._full = {value: label for label, value in choices}
        return [(elide(label, MODEL_LABEL_CHARS), value) for label, value in choices]

    def _show_full_name(self, *_: Any) -> None:
        """The full name of every entry (and of the chosen one) in tooltips, since the combo elides them."""
        from qtpy.QtCore import Qt

        native = self.combo.native
        for i in range(native.count()):
            full = self._full.get(native.itemData(i), native.itemText(i))
            native.setItemData(i, full, Qt.ItemDataRole.ToolTipRole)
        current = self._full.get(self.combo.value, "")
        if current and self._automatic:
            current += "\n" + (f"chosen automatically: {self._note}" if self._note and not self.by_hand
                               else "picked by hand: kept for every image" if self.by_hand else "")
        self.combo.tooltip = f"{current.rstrip()}\n\n{self.HELP}" if current else self.HELP

    def _refresh(self) -> None:
        try:
            self.combo.reset_choices()
            self._show_full_name()
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
        self._set_by_hand(True)

    @property
    def model(self) -> str | None:
        value = self.combo.value
        return value or None

    @property
    def users_model(self) -> bool:
        """Whether the model shown is the user's own, kept for every image
        (:func:`napari_wavegms.inference.routing.users_model`)."""
        from napari_wavegms.inference.routing import users_model

        return users_model(self.model, self.by_hand)

    def set_model(self, value: str | None, by_hand: bool | None = None) -> None:
        """Select ``value`` (``None``: keep the current one); ``by_hand`` marks it as the user's choice
        (``True``), as the automatic one (``False``) or leaves the mark as it is (``None``)."""
        if value is not None:
            if value not in self.combo.choices and Path(value).exists():
                remember_model_file(value)
                self.combo.reset_choices()
                self._show_full_name()
            try:
                self.combo.value = value
            except ValueError:
                pass
        if by_hand is not None and self._automatic:
            self._set_by_hand(by_hand)


def device_combo(remembered: str | None = None) -> ComboBox:
    combo = ComboBox(
        label="device",
        choices=lambda _w=None: device_choices(remembered),
        tooltip="auto picks CUDA, then Apple MPS, then the CPU. The device actually used is shown after a run.",
    )
    if remembered in combo.choices:
        combo.value = remembered
    return combo


class ModelControls(NamedTuple):
    """The model, device and threshold rows the Segment and Batch widgets share."""

    model: ModelPicker
    device: ComboBox
    threshold: FloatSlider


def model_controls(device: str | None = None) -> ModelControls:
    """The rows that say which model runs where and how its soft mask is cut, built once for both
    widgets that segment, so they look, read and are remembered alike (the names are settings keys).
    ``device``: the one remembered from last time (offered even before torch is loaded)."""
    combo = device_combo(device)
    combo.name = "device"
    return ModelControls(
        model=ModelPicker(label="model", name="model", automatic=True),
        device=combo,
        threshold=FloatSlider(value=0.5, min=0.01, max=0.99, step=0.01, label="threshold", name="threshold",
                              tooltip="Foreground where the soft mask is above this"),
    )


def presence_checkbox() -> CheckBox:
    """The "empty mask if no lesion" box of the widgets that segment (the model card's presence gate)."""
    return CheckBox(
        value=True, text="empty mask if no lesion", name="presence",
        tooltip="The model's own check (its card's presence gate, chosen on validation): an image it finds "
        "lesion-free gets an empty mask. Only models trained with lesion-free images have one",
    )


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
