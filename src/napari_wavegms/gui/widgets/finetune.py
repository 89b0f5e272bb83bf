"""Fine-tune from corrections, in the Train widget: the run and the offer of its result.

The run is :func:`napari_wavegms.training.finetune.finetune` in a worker; this module is the glue: the
request captured on the GUI thread, and :class:`OfferPanel`, which shows the held-out Dice of the starting
and the fine-tuned model side by side and offers the new model only when it is better: a name (kept across
sessions, listed in Segment and Batch) and "use it automatically for <kind> images" (undoable here or
by unticking it later).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from magicgui.widgets import CheckBox, Container, Label, LineEdit, PushButton
from psygnal import Signal

from napari_wavegms.gui.session import session_models
from napari_wavegms.gui.widgets.common import fit_label


@dataclass
class FinetuneRequest:
    """What a fine-tune needs, captured on the GUI thread."""

    init_from: str
    data_dir: str
    output_dir: str
    minutes: float
    hold_out: float
    device: str


def finetune_job(request: FinetuneRequest) -> Generator[Any, None, Any]:
    """Engine work (worker thread): :func:`~napari_wavegms.training.finetune.finetune` as asked."""
    from napari_wavegms.training.finetune import finetune, finetune_config

    config = finetune_config(request.init_from, request.data_dir, request.output_dir, minutes=request.minutes,
                             hold_out=request.hold_out, device=request.device)
    return (yield from finetune(config))


class OfferPanel(Container):
    """The comparison of a finished fine-tune, and the offer of its model when it is better."""

    installed = Signal(str)  # the name the model was kept under

    def __init__(self) -> None:
        self.verdict = fit_label(Label(value="", name="verdict",
                                       tooltip="Dice on the held-out corrections, which neither model trained on"))
        self.model_name = LineEdit(value="", label="name", name="model_name",
                             tooltip="The name the new model is listed under in Segment and Batch")
        self.add_button = PushButton(text="Add as my model", tooltip="Keep the fine-tuned model under this name")
        self.use_for_kind = CheckBox(value=False, text="use it automatically", name="use_for_kind",
                                     enabled=False, tooltip="Segment and Batch then choose it for every image of "
                                     "its kind, in place of the built-in model; untick to go back")
        super().__init__(widgets=[self.verdict, self.model_name, self.add_button, self.use_for_kind])
        self.margins = (0, 0, 0, 0)
        self.result: Any = None
        self.kept_name: str | None = None
        self._kind: str | None = None
        self.add_button.changed.connect(self.add)
        self.use_for_kind.changed.connect(self._use_for_kind)
        self.show(None)

    def show(self, result: Any) -> None:
        """Show a :class:`~napari_wavegms.training.finetune.FinetuneResult` (``None``: nothing yet)."""
        from napari_wavegms.zoo.registry import model_card

        self.result, self.kept_name = result, None
        better = result is not None and result.offered
        self.visible = result is not None
        self.verdict.value = "" if result is None else result.message + (f"\n{result.gate}" if result.gate else "")
        card = model_card(result.model) if better else None
        self._kind = card.kind if card is not None else None
        for widget in (self.model_name, self.add_button):
            widget.visible = better
            widget.enabled = better
        self.use_for_kind.visible = better and self._kind is not None
        self.use_for_kind.enabled = False
        self.use_for_kind.value = False
        if better:
            self.model_name.value = f"{self._kind or 'my model'} — my site"
            self.use_for_kind.text = f"use it automatically for {self._kind} images"
            self.use_for_kind.tooltip = (f"Segment and Batch then choose it for every {self._kind} image, in place "
                                         "of the built-in model; untick to go back")

    def add(self, *_: Any) -> str | None:
        """Keep the model under the name given; errors (a name in use) are shown, never raised into Qt."""
        from napari.utils.notifications import show_error, show_info

        from napari_wavegms.training.finetune import install_finetuned

        try:
            install_finetuned(self.result, self.model_name.value)
        except (OSError, ValueError) as err:
            show_error(f"Wave-GMS: {err}")
            return None
        self.kept_name = " ".join(self.model_name.value.split())
        self.add_button.enabled = self.model_name.enabled = False
        self.use_for_kind.enabled = self._kind is not None
        session_models.changed.emit()  # the model pickers list it now
        show_info(f"Wave-GMS: {self.kept_name!r} is now in the model lists of Segment and Batch")
        self.installed.emit(self.kept_name)
        return self.kept_name

    def _use_for_kind(self, use: bool) -> None:
        from napari_wavegms.zoo.user_models import set_preferred

        if self.kept_name and self._kind:
            set_preferred(self._kind, self.kept_name if use else None)
            session_models.changed.emit()
