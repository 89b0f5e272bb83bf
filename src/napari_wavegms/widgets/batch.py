"""The Batch widget: a folder of images → a folder of masks, with per-file progress and a summary.

All the work (and every safety rule: inputs never overwritten, atomic outputs, bad files reported and
skipped, summary CSV) is :func:`napari_wavegms.batch.segment_folder`; this widget only collects the
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
    FloatSlider,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)

from . import _settings
from ._common import ModelPicker, device_combo, folder_or_none, restore, snapshot
from ._worker import Job, start_job

if TYPE_CHECKING:
    import napari


def batch_job(options: dict[str, Any]) -> Generator[Any, None, Any]:
    from ..batch import segment_folder

    return (yield from segment_folder(**options))


class BatchWidget(Container):
    """Segment every image of a folder into mask files."""

    SETTINGS = "batch"

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        saved = _settings.load(self.SETTINGS)
        self.input = FileEdit(mode="d", label="input folder", name="input")
        self.pattern = LineEdit(
            value="*",
            label="pattern",
            name="pattern",
            tooltip="Which files, e.g. *.png or case_*; '*' takes every image file",
        )
        self.recursive = CheckBox(value=False, text="include sub-folders", name="recursive")
        self.output = FileEdit(
            mode="d",
            label="output folder",
            name="output",
            tooltip="Masks keep the input's file names; the input folder itself is refused",
        )
        self.fmt = ComboBox(choices=["png", "tif"], value="png", label="format", name="fmt")
        self.convention = ComboBox(
            choices=["0/255", "0/1", "labels"],
            value="0/255",
            label="mask values",
            name="convention",
            tooltip="0/255 or 0/1 binary masks, or numbered objects",
        )
        self.skip_existing = CheckBox(value=True, text="skip files whose mask exists", name="skip_existing")
        self.overlays = CheckBox(value=False, text="also save overlay previews", name="overlays")
        self.model = ModelPicker(label="model", name="model")
        self.device = device_combo(saved.get("device"))
        self.device.name = "device"
        self.threshold = FloatSlider(
            value=0.5, min=0.01, max=0.99, step=0.01, label="threshold", name="threshold"
        )
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress")
        self.status = Label(value="")
        self.summary_label = Label(value="")
        self.open_count = SpinBox(value=3, min=1, max=50, label="open first", name="open_count")
        self.open_button = PushButton(text="Open results in the viewer", enabled=False)
        super().__init__(
            widgets=[
                self.input,
                self.pattern,
                self.recursive,
                self.output,
                self.fmt,
                self.convention,
                self.skip_existing,
                self.overlays,
                self.model,
                self.device,
                self.threshold,
                Container(widgets=[self.run_button, self.cancel_button], layout="horizontal", labels=False),
                self.progress,
                self.status,
                self.summary_label,
                Container(widgets=[self.open_count, self.open_button], layout="horizontal"),
            ]
        )
        self._remembered = [
            self.input,
            self.pattern,
            self.recursive,
            self.output,
            self.fmt,
            self.convention,
            self.skip_existing,
            self.overlays,
            self.device,
            self.threshold,
            self.open_count,
        ]
        restore(self._remembered, saved)
        self.model.set_model(saved.get("model"))
        self.job: Job | None = None
        self.summary: Any = None
        for widget in [*self._remembered, self.model.combo]:
            widget.changed.connect(self._save)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.open_button.changed.connect(self.open_results)
        self.input.changed.connect(self._follow_folder)

    def _follow_folder(self, *_: Any) -> None:
        """Among the built-in models, take the one made for the chosen folder's kind of image (colour
        endoscopy or grey ultrasound); a checkpoint the user chose stays."""
        from ..batch import BatchPaths, model_for_folder
        from ..models import builtin_models

        src = folder_or_none(self.input.value)
        chosen = self.model.model
        if src is None or not src.is_dir() or (chosen and chosen not in builtin_models()):
            return
        out = folder_or_none(self.output.value) or src / "masks"
        suggestion = model_for_folder(BatchPaths(src, None, out), self.pattern.value or "*", self.recursive.value)
        if suggestion and suggestion != chosen:
            self.model.set_model(suggestion)
            self.status.value = f"model for these images: {suggestion}"

    def _save(self, *_: Any) -> None:
        values = snapshot(self._remembered)
        values["model"] = self.model.model
        _settings.save(self.SETTINGS, values)

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
            model=self.model.model,
            pattern=self.pattern.value or "*",
            recursive=self.recursive.value,
            fmt=self.fmt.value,
            convention=self.convention.value,
            overwrite=not self.skip_existing.value,
            overlays=self.overlays.value,
            threshold=float(self.threshold.value),
            device=self.device.value,
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
        if self.job is not None:
            self.job.cancel()
            self.status.value = "cancelling…"

    def _event(self, event: Any) -> None:
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
        lines = [
            f"{len(summary.done)} done, {len(summary.skipped)} skipped, {len(summary.failed)} failed",
            f"summary: {summary.csv_path}",
        ]
        lines += [f"failed: {r.file}: {r.error}" for r in summary.failed[:5]]
        if len(summary.failed) > 5:
            lines.append(f"… {len(summary.failed) - 5} more failures in the CSV")
        self.summary_label.value = "\n".join(lines)
        self.open_button.enabled = bool(summary.done)

    def _finished(self, status: str) -> None:
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        if status == "cancelled":
            self.status.value = "cancelled (finished masks are kept; a rerun skips them)"
        elif status == "failed":
            self.status.value = "failed (see the notification)"
        else:
            self.status.value = "done"

    def open_results(self, *_: Any) -> list:
        """Add the first few inputs and their masks to the viewer."""
        from ..io import read_image, read_mask

        if self.summary is None:
            return []
        added = []
        root = folder_or_none(self.input.value)
        for result in self.summary.done[: int(self.open_count.value)]:
            if not result.output:
                continue
            source = (root / result.file) if root else None
            stem = Path(result.file).stem
            if source is not None and source.is_file():
                added.append(self._viewer.add_image(read_image(source), name=stem))
            mask = (
                read_image(result.output) if self.convention.value == "labels" else read_mask(result.output)
            )
            added.append(
                self._viewer.add_labels(
                    np.asarray(mask).astype(np.uint32 if mask.dtype.itemsize > 1 else np.uint8),
                    name=f"{stem}_wavegms",
                )
            )
        return added
