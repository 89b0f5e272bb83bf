"""Keep a corrected mask as a training example: the row shared by the Segment and Batch widgets.

The user corrects a mask with napari's paint, erase and fill tools, selects it and clicks "Use as
training example": the image under it and the corrected mask go into the corrections folder (chosen
once, remembered) through :func:`napari_wavegms.training.corrections.keep`, with the model that drew
the mask and how much the user changed it. The folder is what the Train widget fine-tunes from.

Which image belongs to a mask layer: the one its metadata names (Segment results name their image
layer, Batch results their files), else the only image layer of the same size. For a stack, the slice
on screen. The mask the model drew is what the plugin wrote into the layer (kept here, see
:func:`remember_drawn`) or, for a Batch result, the mask file it wrote.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import Container, FileEdit, Label, PushButton
from psygnal import Signal

from napari_wavegms.gui import settings as _settings
from napari_wavegms.gui.session import session_models
from napari_wavegms.gui.widgets.common import fit_label, folder_or_none

if TYPE_CHECKING:
    import napari

SETTINGS = "corrections"

#: Masks the plugin drew, by the Labels layer it wrote them into (forgotten with the layer).
_DRAWN: weakref.WeakKeyDictionary[Any, np.ndarray] = weakref.WeakKeyDictionary()


def remember_drawn(layer: Any, mask: np.ndarray) -> None:
    """Keep the mask the model drew into ``layer``, to measure later how much the user changed it."""
    _DRAWN[_unwrapped(layer)] = np.array(mask, copy=True)


def _unwrapped(layer: Any) -> Any:
    """The layer itself: napari hands plugin widgets proxies of its objects, a new one on each access."""
    return getattr(layer, "__wrapped__", layer)


def _wavegms_info(labels: Any) -> dict[str, Any]:
    """What the plugin wrote into a result layer's ``metadata["wavegms"]`` (empty for any other layer)."""
    return labels.metadata.get("wavegms", {}) if isinstance(labels.metadata, dict) else {}


def corrections_folder() -> Path | None:
    """The remembered corrections folder (shared by Segment, Batch and Train), or ``None``."""
    value = _settings.load(SETTINGS).get("folder")
    return Path(value) if value else None


def _image_for(viewer: napari.Viewer, labels: Any) -> tuple[np.ndarray, str, str | None]:
    """The image data under ``labels`` (all slices), its name and its file (``None`` for a layer)."""
    from napari.layers import Image

    info = _wavegms_info(labels)
    image_file = info.get("image_file")
    name = info.get("image")
    if image_file and Path(image_file).is_file():
        from napari_wavegms.core.io import read_image_or_stack

        return np.asarray(read_image_or_stack(image_file)[0]), Path(image_file).stem, str(image_file)
    if name and name in viewer.layers and isinstance(viewer.layers[name], Image):
        layer = viewer.layers[name]
    else:
        shape = tuple(labels.data.shape)
        same = [layer for layer in viewer.layers if isinstance(layer, Image)
                and tuple(layer.data.shape[:-1] if layer.rgb else layer.data.shape) == shape]
        if len(same) != 1:
            raise ValueError(f"cannot tell which image {labels.name!r} belongs to: "
                             f"{'no' if not same else len(same)} image layers of its size {shape}")
        layer = same[0]
    data = layer.data[0] if layer.multiscale else layer.data
    source = getattr(layer.source, "path", None)
    return np.asarray(data), layer.name, str(source) if source else layer.name


def _drawn_for(labels: Any) -> np.ndarray | None:
    if _unwrapped(labels) in _DRAWN:
        return _DRAWN[_unwrapped(labels)]
    info = _wavegms_info(labels)
    mask_file = info.get("mask_file")
    if mask_file and Path(mask_file).is_file():
        from napari_wavegms.core.io import read_image_or_stack

        return np.asarray(read_image_or_stack(mask_file)[0])
    return None


def keep_layer(viewer: napari.Viewer, labels: Any, folder: Path) -> Any:
    """Write the Labels layer ``labels`` and its image into ``folder`` as a training example (the slice
    on screen, for a stack); returns the :class:`~napari_wavegms.training.corrections.Example`."""
    from napari_wavegms.training import corrections

    image, name, source = _image_for(viewer, labels)
    mask = np.asarray(labels.data)
    drawn = _drawn_for(labels)
    rgb = image.ndim == mask.ndim + 1
    if mask.ndim > 2:  # a stack: the slice on screen
        index = tuple(int(i) for i in viewer.dims.current_step[: mask.ndim - 2])
        mask, image = mask[index], image[index]
        drawn = drawn[index] if drawn is not None and drawn.ndim == labels.data.ndim else None
        name = f"{name}_slice" + "_".join(f"{i:04d}" for i in index)
        source = f"{source}#{'_'.join(map(str, index))}"
    if not rgb and image.ndim != 2:
        raise ValueError(f"{labels.name!r}: its image has shape {image.shape}, not one 2D image")
    info = _wavegms_info(labels)
    return corrections.keep(folder, image, mask, name=name, model=info.get("model"), drawn=drawn, source=source)


class CorrectionsRow(Container):
    """The corrections folder, the count of examples it holds, and "Use as training example"."""

    kept = Signal(object)  # the Example written

    def __init__(self, viewer: napari.Viewer) -> None:
        self._viewer = viewer
        self.folder = FileEdit(mode="d", label="corrections", name="corrections_folder",
                               tooltip="Where corrected masks are kept as training examples (images/, masks/ "
                               "and a record of each); the Train widget fine-tunes a model from it")
        self.keep_button = PushButton(
            text="Use as training example",
            tooltip="Keep the selected mask layer (after correcting it with the paint, erase and fill tools) "
            "and its image as an example in the corrections folder")
        self.count = fit_label(Label(value="", name="corrections_count"))
        super().__init__(widgets=[self.folder, Container(widgets=[self.keep_button, self.count],
                                                        layout="horizontal", labels=False)])
        self.margins = (0, 0, 0, 0)
        folder = corrections_folder()
        if folder is not None:
            self.folder.value = folder
        self.folder.changed.connect(self._folder_changed)
        self.keep_button.changed.connect(self.keep_selected)
        self.show_count()

    def _folder_changed(self, *_: Any) -> None:
        folder = folder_or_none(self.folder.value)
        _settings.save(SETTINGS, {"folder": str(folder) if folder else ""})
        self.show_count()

    def show_count(self) -> int:
        from napari_wavegms.training.corrections import count

        folder = folder_or_none(self.folder.value)
        n = count(folder) if folder is not None else 0
        self.count.value = f"{n} example{'s' if n != 1 else ''} kept" if folder is not None else "choose a folder"
        return n

    def keep_selected(self, *_: Any) -> Any:
        """Keep the selected Labels layer; errors are shown, never raised into Qt."""
        from napari.layers import Labels
        from napari.utils.notifications import show_error, show_info

        folder = folder_or_none(self.folder.value)
        labels = self._viewer.layers.selection.active
        try:
            if folder is None:
                raise ValueError("choose the corrections folder first")
            if not isinstance(labels, Labels):
                raise ValueError("select the mask layer (a Labels layer) to keep")
            example = keep_layer(self._viewer, labels, folder)
        except (OSError, ValueError) as err:
            show_error(f"Wave-GMS: {err}")
            return None
        n = self.show_count()
        changed = example.record.get("changed_dice")
        how = f" (Dice with the model's mask {changed:.2f})" if changed is not None else ""
        show_info(f"Wave-GMS: kept {example.name} as training example {n}{how}")
        self.kept.emit(example)
        return example


class PreferencesRow(Container):
    """Which of the user's models are chosen automatically for a kind of image, and a way back to the
    built-in models: the visible, undoable side of "use it automatically" (set in the Train widget)."""

    def __init__(self) -> None:
        self.text = fit_label(Label(value="", name="my_models"))
        self.clear = PushButton(text="Use the built-in models",
                                tooltip="Stop choosing your own models automatically (they stay in the model list)")
        super().__init__(widgets=[self.text, self.clear], layout="horizontal", labels=False)
        self.margins = (0, 0, 0, 0)
        self.clear.changed.connect(self.use_builtin)
        session_models.changed.connect(self.refresh)
        self.refresh()

    def refresh(self, *_: Any) -> None:
        from napari_wavegms.zoo.registry import KIND_IMAGES, user_models
        from napari_wavegms.zoo.user_models import preferred

        mine = user_models()
        chosen = {kind: preferred(kind) for kind in KIND_IMAGES}
        chosen = {kind: name for kind, name in chosen.items() if name in mine}
        try:
            self.text.value = ("automatic: " + ", ".join(f"my {name!r} for {kind}" for kind, name in chosen.items())
                               if chosen else "")
            self.visible = bool(chosen)
        except RuntimeError:  # the widget was deleted; the registry outlives it
            session_models.changed.disconnect(self.refresh)

    def use_builtin(self, *_: Any) -> None:
        from napari_wavegms.zoo.registry import KIND_IMAGES
        from napari_wavegms.zoo.user_models import set_preferred

        for kind in KIND_IMAGES:
            set_preferred(kind, None)
        session_models.changed.emit()
