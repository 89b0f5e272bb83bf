"""Menu commands: napari injects the viewer (and the selected layer) by their type annotations."""

from __future__ import annotations

from pathlib import Path

from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning
from napari.viewer import Viewer

from napari_wavegms.gui.settings import SegmentSettings
from napari_wavegms.gui.worker import Job


def segment_selected(viewer: Viewer) -> Job | None:
    """Layers ▸ Segment ▸ Segment selected image: the selected image, the Segment widget's settings.

    The model is the one picked by hand in the Segment widget (or a checkpoint file chosen there);
    otherwise the built-in model made for this kind of image, and the message says which and why, as the
    widget does: the command has no picker where a user could see it. Flips, clean-up and the presence
    check are the widget's too (the model card's until they are changed there). An image of no kind the
    built-in models know is not segmented by the automatic choice, as in the widget: the message says so
    and a model picked by hand there still runs.
    """
    from napari_wavegms.gui.widgets.results import describe_confidence, kept_note
    from napari_wavegms.gui.widgets.segment import SUFFIX, pick_model, segment_layer, unknown_kind_message

    layer = viewer.layers.selection.active
    if not isinstance(layer, Image):
        show_error("Wave-GMS: select an Image layer to segment")
        return None
    saved = SegmentSettings.load()
    model, choice = pick_model(layer, saved.model, saved.model_by_hand)
    if not model:
        show_error(
            "Wave-GMS: no model chosen yet. Pick one (or a checkpoint file) in the Wave-GMS Segment "
            "widget, then use this command again."
        )
        viewer.window.add_plugin_dock_widget("napari-wavegms", "Segment")
        return None
    if choice is not None and choice.unknown:
        show_warning(f"Wave-GMS: {layer.name}: {unknown_kind_message(choice)} in the Segment widget")
        return None
    why = f"model {choice.message}" if choice is not None else f"model {model} (chosen in the Segment widget)"

    def _done(status: str, info: dict) -> None:
        if status == "done":
            target = info.get("layer", f"{layer.name}{SUFFIX}")
            show_info(f"Wave-GMS: segmented {layer.name} into {target} on {info.get('device')}; "
                      f"{describe_confidence(info)}; {why}{kept_note(info).replace(' · ', '; ')}")

    return segment_layer(
        viewer,
        layer,
        model=model,
        device=saved.device,
        threshold=saved.threshold,
        whole_stack=saved.whole_stack,
        tta=saved.tta,  # None (the widget never used): the model card's choice
        postprocess=saved.cleanup(),  # the widget's clean-up: the card's unless set by hand there
        presence=saved.presence,
        model_choice=choice.message if choice is not None else "",
        on_done=_done,
    )


def ask_save_path(viewer: Viewer, suggested: str) -> str:
    """The file the user picks in a save dialog, or "" when cancelled."""
    from napari.utils.history import get_save_history, update_save_history
    from qtpy.QtWidgets import QFileDialog

    folder = Path(get_save_history()[0])
    path, _ = QFileDialog.getSaveFileName(
        viewer.window._qt_window, "Save mask (0/255)", str(folder / suggested), "Mask image (*.png *.tif *.tiff)"
    )
    if path:
        update_save_history(path)
    return path


def save_mask(viewer: Viewer) -> list[str]:
    """File ▸ IO Utilities ▸ Save selected mask: the selected Labels layer as a 0/255 mask image.

    napari's File ▸ Save Selected Layer(s) offers napari's own Labels writer first (0/1 values in a
    uint32 TIFF, which most viewers show black) and npe2 gives a plugin no way to come first; this
    command goes straight to the plugin's mask writer (:func:`napari_wavegms.gui.writer.write_labels`):
    a 2D mask as a 0/255 PNG, a stack as a TIFF, several labels with their ids.
    """
    from napari_wavegms.gui.writer import write_labels

    layer = viewer.layers.selection.active
    if not isinstance(layer, Labels):
        show_error("Wave-GMS: select a Labels layer (a mask) to save")
        return []
    suggested = f"{layer.name}{'.png' if layer.ndim == 2 else '.tif'}"
    path = ask_save_path(viewer, suggested)
    if not path:
        return []
    try:
        written = write_labels(path, layer.data, {})
    except (OSError, ValueError) as err:
        show_error(f"Wave-GMS: {layer.name} was not saved: {err}")
        return []
    show_info(f"Wave-GMS: saved {layer.name} as {', '.join(written)}")
    return written
