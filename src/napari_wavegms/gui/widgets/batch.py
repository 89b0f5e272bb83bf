"""The Batch widget: a folder of images → a folder of masks, with per-file progress and a summary.

All the work (and every safety rule: inputs never overwritten, atomic outputs, bad files reported and
skipped, summary CSV) is :func:`napari_wavegms.inference.batch.segment_folder`; this widget only collects the
options, runs it in a worker and shows what happened.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
    TextEdit,
)

from napari_wavegms.core.io import MASK_FORMATS
from napari_wavegms.gui import settings as _settings
from napari_wavegms.gui.widgets.common import (
    DockContainer,
    fit_label,
    folder_or_none,
    model_controls,
    presence_checkbox,
    restore,
    snapshot,
)
from napari_wavegms.gui.widgets.corrections import CorrectionsRow
from napari_wavegms.gui.worker import Job, start_job
from napari_wavegms.inference.batch import CONVENTIONS

if TYPE_CHECKING:
    import napari


#: The test-time flips choice → ``Segmenter(tta=...)``.
FLIPS: dict[str, bool | None] = {"model's choice": None, "on": True, "off": False}


def batch_job(options: dict[str, Any]) -> Generator[Any, None, Any]:
    from napari_wavegms.inference.batch import segment_folder

    return (yield from segment_folder(**options))


class BatchWidget(DockContainer):
    """Segment every image of a folder into mask files."""

    SETTINGS = "batch"

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        saved = _settings.load(self.SETTINGS)
        self._build_folder_controls()
        self.model, self.device, self.threshold = model_controls(saved.get("device"))
        self._build_model_options()
        self._build_run_controls()
        super().__init__(widgets=self._rows())
        self._remembered = [
            self.input, self.pattern, self.recursive, self.output, self.fmt, self.convention,
            self.skip_existing, self.overlays, self.skip_unknown, self.device, self.threshold, self.tta,
            self.presence,
            self.open_count,
        ]
        self._restore(saved)
        self.job: Job | None = None
        self.summary: Any = None
        self._connect()

    # --- building -------------------------------------------------------------------------------
    def _build_folder_controls(self) -> None:
        """Where the images come from and where the masks go, in which format."""
        self.input = FileEdit(
            mode="d", label="input folder", name="input", tooltip="The folder of images to segment (never written to)"
        )
        self.pattern = LineEdit(
            value="*",
            label="pattern",
            name="pattern",
            tooltip="Which files, e.g. *.png or case_*; '*' takes every image file",
        )
        self.recursive = CheckBox(
            value=False, text="include sub-folders", name="recursive", tooltip="Also segment images in sub-folders"
        )
        self.output = FileEdit(
            mode="d",
            label="output folder",
            name="output",
            tooltip="Masks keep the input's file names; the input folder itself is refused",
        )
        self.fmt = ComboBox(
            choices=list(MASK_FORMATS), value=MASK_FORMATS[0], label="format", name="fmt",
            tooltip="File type of the masks",
        )
        self.convention = ComboBox(
            choices=list(CONVENTIONS),
            value=CONVENTIONS[0],
            label="mask values",
            name="convention",
            tooltip="0/255 or 0/1 binary masks, or numbered objects",
        )
        self.skip_existing = CheckBox(
            value=True,
            text="skip files whose mask exists",
            name="skip_existing",
            tooltip="A rerun finishes what is missing; untick to segment everything again",
        )
        self.overlays = CheckBox(
            value=False,
            text="also save overlay previews",
            name="overlays",
            tooltip="PNG previews of each image with its mask, in overlays/ of the output folder",
        )
        self.skip_unknown = CheckBox(
            value=False,
            text="leave out images of unknown kinds",
            name="skip_unknown",
            tooltip="Images that are not ultrasound, endoscopy or dermoscopy (photos, fundus, histology) get no "
            "mask and no model pass; unticked they are segmented and flagged for review. The CSV's kind "
            "column says unknown either way",
        )

    def _build_model_options(self) -> None:
        """How each model is used: test-time flips and the presence check."""
        self.tta = ComboBox(
            choices=list(FLIPS),
            value="model's choice",
            label="test-time flips",
            name="tta",
            tooltip="Average each image's masks over its three flips (four model passes, about 3× the time): "
            "\"model's choice\" follows each model card (on where it raised validation Dice); off for speed",
        )
        self.presence = presence_checkbox()

    def _build_run_controls(self) -> None:
        """Run/Cancel, progress, the summary and opening the results."""
        self.run_button = PushButton(text="Run", tooltip="Segment the folder in the background")
        self.cancel_button = PushButton(
            text="Cancel", enabled=False, tooltip="Stop after the image being segmented; finished masks are kept"
        )
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress", tooltip="Files handled")
        self.status = fit_label(Label(value="", tooltip="What the run is doing"))
        self.summary_label = TextEdit(value="", tooltip="Done / skipped / failed files, with the reasons")
        self.summary_label.native.setReadOnly(True)
        self.summary_label.native.setMaximumHeight(110)  # a long failure list scrolls
        self.summary_label.visible = False
        self.open_count = SpinBox(
            value=3, min=1, max=50, label="open first", name="open_count", tooltip="How many results to open"
        )
        self.open_button = PushButton(
            text="Open results",
            enabled=False,
            tooltip="Open the first images with their masks, side by side in napari's grid view",
        )
        self.corrections = CorrectionsRow(self._viewer)

    def _rows(self) -> list[Any]:
        return [
            self.input,
            self.pattern,
            self.recursive,
            self.output,
            self.fmt,
            self.convention,
            self.skip_existing,
            self.overlays,
            self.skip_unknown,
            self.model,
            self.device,
            self.threshold,
            self.tta,
            self.presence,
            Container(widgets=[self.run_button, self.cancel_button], layout="horizontal", labels=False),
            self.progress,
            self.status,
            self.summary_label,
            Container(widgets=[self.open_count, self.open_button], layout="horizontal"),
            self.corrections,
        ]

    def _restore(self, saved: dict[str, Any]) -> None:
        """Last session's choices (the device was offered when its combo was built)."""
        restore(self._remembered, saved)
        self.model.set_model(saved.get("model"), by_hand=bool(saved.get("model_by_hand", False)))

    def _connect(self) -> None:
        for widget in [*self._remembered, self.model.combo]:
            widget.changed.connect(self._save)
        self.model.mode_changed.connect(self._model_mode_changed)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.open_button.changed.connect(self.open_results)
        self.input.changed.connect(self._follow_folder)

    @property
    def automatic(self) -> bool:
        """Whether the model is still the automatic one: then each file gets the built-in model made for
        its kind (``model=None`` to the engine; an ambiguous image is judged with its folder, see
        :func:`napari_wavegms.inference.batch.segment_folder`). A model picked by hand, or a checkpoint file, is used
        for every file (:func:`napari_wavegms.inference.routing.users_model`)."""
        return not self.model.users_model

    def _follow_folder(self, *_: Any) -> None:
        """Show what the automatic choice makes of the chosen folder: the model for its first readable
        image and why (:func:`napari_wavegms.inference.routing.choice_for_folder`), said to be per image; a model
        the user chose stays and is said to be used for every file."""
        from napari_wavegms.inference.batch import BatchPaths
        from napari_wavegms.inference.routing import choice_for_folder

        src = folder_or_none(self.input.value)
        if src is None or not src.is_dir():
            return
        if not self.automatic:
            self.status.value = f"model for every image: {self.model.model} (picked by hand)"
            return
        out = folder_or_none(self.output.value) or src / "masks"
        choice = choice_for_folder(BatchPaths(src, None, out), self.pattern.value or "*", self.recursive.value)
        if choice is None:
            self.status.value = "model per image: the one made for each image's kind (no image read yet)"
            return
        if choice.model and choice.model != self.model.model:
            self.model.set_model(choice.model)
        note = f"per image: the model made for each image's kind; the first: {choice.message}"
        self.model.set_note(note)
        self.status.value = f"model {note}"

    def _model_mode_changed(self, by_hand: bool) -> None:
        """A pick by hand is remembered and said; "Auto" goes back to the per-image choice."""
        self._save()
        self._follow_folder()

    def _save(self, *_: Any) -> None:
        values = snapshot(self._remembered)
        values["model"] = self.model.model
        values["model_by_hand"] = self.model.by_hand
        _settings.save(self.SETTINGS, values)

    def segmenter_options(self) -> dict[str, Any]:
        """``Segmenter`` options for every model of the run: the flips (``None`` = each card's choice) and,
        when unticked, no presence gate (every mask kept), as ``wavegms-predict --no-presence-check``."""
        options: dict[str, Any] = {"tta": FLIPS[self.tta.value]}
        if not self.presence.value:
            options["presence"] = False
        return options

    def run(self, *_: Any) -> Job | None:
        from napari.utils.notifications import show_error

        src, out = folder_or_none(self.input.value), folder_or_none(self.output.value)
        problem = (
            "choose the input folder"
            if src is None
            else "choose the output folder"
            if out is None
            else "no model chosen: pick one or Browse… for a checkpoint"
            if self.model.model is None
            else ""
        )
        if problem:
            show_error(f"Wave-GMS batch: {problem}")
            return None
        self._save()
        options = dict(
            input_dir=src,
            output_dir=out,
            model=None if self.automatic else self.model.model,  # None: the engine chooses per file
            pattern=self.pattern.value or "*",
            recursive=self.recursive.value,
            fmt=self.fmt.value,
            convention=self.convention.value,
            overwrite=not self.skip_existing.value,
            overlays=self.overlays.value,
            threshold=float(self.threshold.value),
            device=self.device.value,
            segmenter_options=self.segmenter_options(),
            skip_unknown=self.skip_unknown.value,
        )
        self.summary = None
        self.summary_label.value = ""
        self.open_button.enabled = False
        self.progress.value = 0
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.status.value = "loading the model…"
        self.job = start_job(
            batch_job(options),
            f"Wave-GMS: segmenting {src.name}",
            on_event=self._event,
            on_result=self._result,
            on_finished=self._finished,
        )
        return self.job

    def cancel(self, *_: Any) -> None:
        """Stop after the image being segmented; Cancel stays disabled until the run has stopped."""
        if self.job is not None and self.job.running:
            self.cancel_button.enabled = False
            self.job.cancel()
            self.status.value = "cancelling…"

    def _event(self, event: Any) -> None:
        info = getattr(event, "info", {}) or {}
        if "summary" in info:  # the run's summary, filled as files finish (kept after a cancel)
            self.summary = info["summary"]
        total = int(getattr(event, "total", 0) or 0)
        if total:
            self.progress.max = total
            self.progress.value = min(int(event.done), total)
            self.status.value = f"{event.done}/{total} files" + (
                f" · {event.message}" if event.message else ""
            )

    def _result(self, summary: Any) -> None:
        self.summary = summary
        self.progress.max = max(1, len(summary.results))
        self.progress.value = len(summary.results)
        self._show_summary(summary)

    def _show_summary(self, summary: Any) -> None:
        """Counts, the CSV, the masks to review (low confidence: the CSV's ``review`` column) and every
        failure with its reason (the box scrolls when they are many)."""
        review = summary.to_review
        lines = [
            f"{len(summary.done)} done, {len(summary.skipped)} skipped, {len(summary.failed)} failed"
            + (f", {len(review)} to review" if review else ""),
            f"summary: {summary.csv_path}",
        ]
        used: dict[str, int] = {}
        for r in summary.masks:  # skipped masks too, with the model the earlier run's CSV names
            used[r.model] = used.get(r.model, 0) + 1
        if used:
            lines.append("models: " + ", ".join(f"{name or '?'} ({n})" for name, n in used.items()))
        lines += [f"review: {r.file} ({r.doubt or 'low confidence'}"
                  + (f", confidence {r.confidence:.2f})" if r.confidence is not None else ")") for r in review]
        lines += [f"failed: {r.file}: {r.error}" for r in summary.failed]
        lines += [f"skipped: {r.file} ({r.error})" for r in summary.skipped if r.error]
        self.summary_label.value = "\n".join(lines)
        self.summary_label.visible = True
        self.open_button.enabled = bool(summary.masks)

    def _finished(self, status: str) -> None:
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        if status == "cancelled":
            self.status.value = "cancelled (finished masks are kept; a rerun skips them)"
            if self.summary is not None:  # its CSV was written when the run stopped
                self._show_summary(self.summary)
        elif status == "failed":
            self.status.value = "failed (see the notification)"
        else:
            self.status.value = "done"

    def open_results(self, *_: Any) -> list:
        """Open the first few images with a mask (written now or, skipped, by an earlier run), each with
        its mask over it, in napari's grid view: one cell per image+mask pair (grid stride 2), so images
        of any size sit side by side, not stacked. A TIFF stack opens as a stack with its stack mask.

        The pairs go to the bottom of the layer list, so the grid pairs them whatever layers were
        there before; opening again updates the same layers.
        """
        from napari_wavegms.core.io import read_image_or_stack

        if self.summary is None:
            return []
        root = folder_or_none(self.input.value)
        pairs = []
        for result in self.summary.masks[: int(self.open_count.value)]:
            source = (root / result.file) if root else None
            if not result.output or source is None or not source.is_file() or not Path(result.output).is_file():
                continue
            stem = Path(result.file).stem
            image, stack = read_image_or_stack(source)
            mask = self._mask(Path(result.output), stack)
            labels = self._layer("labels", f"{stem}_wavegms", mask)
            # what "Use as training example" needs: the image file, the mask the model drew and its model
            labels.metadata["wavegms"] = {"image": stem, "image_file": str(source), "mask_file": str(result.output),
                                          "model": result.model}
            pairs.append((self._layer("image", stem, image), labels))
        layers = self._viewer.layers
        for n, (image, labels) in enumerate(pairs):
            layers.move(layers.index(image), 2 * n)
            layers.move(layers.index(labels), 2 * n + 1)
        if pairs:
            self._viewer.grid.stride = 2
            self._viewer.grid.enabled = True
            self._viewer.reset_view()
        return [layer for pair in pairs for layer in pair]

    def _mask(self, path: Path, stack: bool) -> np.ndarray:
        """A mask file as label data: its labels (``labels`` convention) or foreground 0/1."""
        from napari_wavegms.core.io import read_image_or_stack, read_mask

        if stack or self.convention.value == "labels":
            mask = read_image_or_stack(path)[0]
            mask = mask if self.convention.value == "labels" else mask > 0
        else:
            mask = read_mask(path)
        return np.asarray(mask).astype(np.uint32 if mask.dtype.itemsize > 1 else np.uint8)

    def _layer(self, kind: str, name: str, data: np.ndarray) -> Any:
        """The layer called ``name`` with ``data``: updated when it is there already, else added."""
        layers = self._viewer.layers
        if name in layers and layers[name]._type_string == kind:
            layers[name].data = data
            return layers[name]
        add = self._viewer.add_labels if kind == "labels" else self._viewer.add_image
        return add(data, name=name)
