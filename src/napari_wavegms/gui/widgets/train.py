"""The Train widget: train (or fine-tune) a Wave-GMS model on folders of pairs, on layers in the viewer, or
on the corrections kept with "Use as training example" (a budgeted fine-tune, offered only if better).

Training runs in a worker; the widget shows the pair count and the problems found as the folders are
chosen, the loss and validation Dice live, and a progress bar. Stop closes the training job, which
keeps ``last.safetensors`` and ``best.safetensors``. The result is added to the models of this session,
so the Segment widget offers it at once. Nothing is written to the working directory: the output folder
must be chosen, and each run gets its own sub-folder (unless it resumes).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
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
    SpinBox,
    create_widget,
)
from qtpy.compat import isalive

from napari_wavegms.gui import settings as _settings
from napari_wavegms.gui.session import session_models
from napari_wavegms.gui.widgets.common import (
    DockContainer,
    ModelPicker,
    collapsible,
    device_combo,
    fit_label,
    folder_or_none,
    insert_before,
    narrow_combo,
    restore,
    snapshot,
)
from napari_wavegms.gui.widgets.corrections import SETTINGS as CORRECTIONS_SETTINGS
from napari_wavegms.gui.widgets.corrections import corrections_folder
from napari_wavegms.gui.widgets.finetune import FinetuneRequest, OfferPanel, finetune_job
from napari_wavegms.gui.widgets.plot import LossPlot
from napari_wavegms.gui.worker import Job, start_job
from napari_wavegms.training.finetune import DEFAULT_HOLD_OUT, DEFAULT_MINUTES, MIN_HELD_OUT

if TYPE_CHECKING:
    import napari

STOP = "Stop (keeps last and best)"
FOLDERS, LAYERS, CORRECTIONS = "folders of pairs", "layers in the viewer", "my corrections (fine-tune)"
SPLIT, VAL_FOLDER = "split % of the pairs", "separate folder"
POOR_DICE = 0.5  # below this validation Dice a model is offered with a warning


@dataclass
class TrainRequest:
    """What a run needs, captured on the GUI thread."""

    config: dict[str, Any]  # TrainConfig fields
    layer_pairs: tuple[Any, Any, bool] | None = None  # (image data, labels data, rgb) from the viewer


def write_layer_pairs(image: Any, labels: Any, rgb: bool, folder: Path) -> int:
    """Write an image layer and its Labels layer as ``images/`` + ``masks/`` pairs, one per 2D slice."""
    import tifffile

    from napari_wavegms.core.io import write_mask

    image, labels = np.asarray(image), np.asarray(labels)
    spatial = image.shape[:-1] if rgb else image.shape
    if tuple(labels.shape) != tuple(spatial):
        raise ValueError(
            f"the Labels layer's shape {labels.shape} does not match the image's {tuple(spatial)}"
        )
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lead = spatial[:-2]
    count = 0
    for index in np.ndindex(*lead) if lead else [()]:
        name = "slice_" + "_".join(f"{i:04d}" for i in index) if index else "image"
        tifffile.imwrite(folder / "images" / f"{name}.tif", image[index])
        write_mask(folder / "masks" / f"{name}.png", labels[index] > 0)
        count += 1
    return count


def train_job(request: TrainRequest) -> Generator[Any, None, Any]:
    """Engine work (worker thread): write layer pairs if asked, then run :func:`training.train`."""
    from napari_wavegms.training import TrainConfig, train

    tmp = None
    try:
        config = dict(request.config)
        if request.layer_pairs is not None:
            tmp = Path(tempfile.mkdtemp(prefix="wavegms-pairs-"))
            write_layer_pairs(*request.layer_pairs, tmp)
            config.update(data_dir=str(tmp), images="images", masks="masks")
        return (yield from train(TrainConfig(**config)))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _estimate_job(image_size: int, epochs: int, n_train: int, device: str, n_val: int, init_from: str | None,
                  budget_s: float | None = None) -> Generator[None, None, Any]:
    from napari_wavegms.training.config import default_recipe
    from napari_wavegms.training.cost import estimate_training

    yield
    if budget_s:  # a fine-tune: its budget, plus scoring both models on the held-out pairs
        from napari_wavegms.training.cost import Estimate
        from napari_wavegms.training.finetune import EPOCH_CAP

        run = estimate_training(image_size, EPOCH_CAP, n_train, recipe="finetune", device=device,
                                time_budget_s=budget_s)
        return Estimate(run.seconds + 2 * n_val * 1.0, run.device)
    return estimate_training(image_size, epochs, n_train, recipe=default_recipe(init_from), device=device,
                             n_val=n_val)


def _scan_job(images: Path, masks: Path) -> Generator[None, None, Any]:
    from napari_wavegms.training.data import scan_pairs

    yield
    return scan_pairs(images, masks)


class TrainWidget(DockContainer):
    """Train Wave-GMS from image/mask pairs; the trained model appears in the Segment widget."""

    SETTINGS = "train"

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        saved = _settings.load(self.SETTINGS)
        self._build_data_controls()
        self._build_training_controls(saved.get("device"))
        self._build_run_controls()
        super().__init__(widgets=self._rows())
        self._lay_out_extras()
        self._remembered = [
            self.source, self.images, self.masks, self.validation, self.val_percent, self.val_dir,
            self.epochs, self.lr, self.batch_size, self.image_size, self.device, self.output, self.minutes,
            self.hold_out,
        ]
        restore(self._remembered, saved)
        self.init.set_model(saved.get("init") or None)
        self.job: Job | None = None
        self.output_dir: Path | None = None
        self.result: Any = None
        self.best_dice: float | None = None  # the run's best validation Dice, once known
        self._scan: Job | None = None
        self._n_pairs: int | None = None  # matched pairs of the chosen folders, once counted
        self._estimating: Job | None = None
        self._estimate_again = False
        self._connect()
        self._visibility()

    # --- building -------------------------------------------------------------------------------
    def _build_data_controls(self) -> None:
        """What to train on (folders of pairs or layers) and what to validate on."""
        import napari

        self.source = ComboBox(
            choices=[FOLDERS, LAYERS, CORRECTIONS],
            value=FOLDERS,
            label="train on",
            name="source",
            tooltip="Folders of image/mask files with the same names, an image layer and its Labels layer, or "
            "the corrections you kept with \"Use as training example\" (fine-tunes the model that drew them "
            "for a time budget and offers the result only if it does better on corrections it did not train on)",
        )
        self.corrections = FileEdit(mode="d", label="corrections", name="corrections",
                                    tooltip="The corrections folder of the Segment and Batch widgets")
        folder = corrections_folder()
        if folder is not None:
            self.corrections.value = folder
        self.minutes = FloatSpinBox(value=DEFAULT_MINUTES, min=0.5, max=24 * 60, step=1, label="minutes",
                                    name="minutes", tooltip="Training time: the learning rate anneals to 0 by "
                                    "then (scoring both models on the held-out corrections comes after)")
        self.hold_out = SpinBox(value=round(DEFAULT_HOLD_OUT * 100), min=10, max=50, label="held out %",
                                name="hold_out", tooltip="Corrections kept apart to compare the starting and the "
                                "fine-tuned model (at least 4)")
        self.images = FileEdit(mode="d", label="image folder", name="images", tooltip="The training images")
        self.masks = FileEdit(
            mode="d",
            label="mask folder",
            name="masks",
            tooltip="Masks with the same file names as the images (0/255, 0/1 or labels)",
        )
        self.image_layer = narrow_combo(
            create_widget(
                annotation=napari.layers.Image,
                label="image layer",
                name="image_layer",
                options={"tooltip": "An image (or stack) to train on; each 2D slice is one example"},
            )
        )
        self.labels_layer = narrow_combo(
            create_widget(
                annotation=napari.layers.Labels,
                label="mask layer",
                name="labels_layer",
                options={"tooltip": "The Labels layer holding the image layer's masks (any label = foreground)"},
            )
        )
        self.pairs = fit_label(Label(value="pairs: choose the image and mask folders", name="pairs"))
        self.check = PushButton(text="Check pairs", tooltip="Count the matched image/mask pairs again")
        self.validation = ComboBox(
            choices=[SPLIT, VAL_FOLDER],
            value=SPLIT,
            label="validation",
            name="validation",
            tooltip="Pairs kept apart to measure Dice each epoch and pick the best model",
        )
        self.val_percent = SpinBox(
            value=10,
            min=1,
            max=50,
            label="validation %",
            name="val_percent",
            tooltip="Share of the pairs held out for validation (with very few pairs there may be none)",
        )
        self.val_dir = FileEdit(
            mode="d",
            label="validation folder",
            name="val_dir",
            tooltip="A folder holding images/ and masks/ used only to pick the best epoch",
        )

    def _build_training_controls(self, device: str | None) -> None:
        """How long and how to train, where, from which model, and where the run is saved."""
        self.epochs = SpinBox(
            value=100, min=1, max=100000, label="epochs", name="epochs", tooltip="Passes over the training pairs"
        )
        self.lr = FloatSpinBox(
            value=0.002,
            min=0.00001,
            max=1.0,
            step=0.0001,
            label="learning rate",
            name="lr",
            tooltip="Adam's learning rate (the paper's recipe: 0.002)",
        )
        self.batch_size = SpinBox(
            value=12,
            min=1,
            max=512,
            label="batch size",
            name="batch_size",
            tooltip="Pairs per optimisation step; lower it when memory runs out",
        )
        self.image_size = SpinBox(
            value=224,
            min=32,
            max=1024,
            step=32,
            label="image size",
            name="image_size",
            tooltip="Images are resized to this square size (a multiple of 32)",
        )
        self.device = device_combo(device)
        self.device.name = "device"
        self.estimate = fit_label(Label(
            value="", name="estimate",
            tooltip="Measured on this machine: one training step at the chosen image size, scaled to the pairs "
            "and epochs (from scratch, the first half of the run at half the image size; fine-tuning a "
            "model, all at full size)",
        ))
        self.init = ModelPicker(label="start from", include_scratch=True, name="init")
        self.output = FileEdit(
            mode="d",
            label="output folder",
            name="output",
            tooltip="Each run is saved in a new sub-folder of this folder",
        )
        self.resume = CheckBox(
            value=False,
            text="resume the run in the output folder",
            name="resume",
            tooltip="Continue the run saved in the output folder itself (its last.safetensors)",
        )

    def _build_run_controls(self) -> None:
        """Train/Stop, progress, status, notes and the live loss plot."""
        self.run_button = PushButton(text="Train", tooltip="Start training in the background")
        self.stop_button = PushButton(
            text=STOP, enabled=False, tooltip="Stop after the current step; last and best are saved"
        )
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress", tooltip="Optimisation steps done")
        self.status = fit_label(Label(value="", tooltip="Epoch, loss, validation Dice and device"))
        self.notes = fit_label(Label(value="", name="notes", visible=False, tooltip="Things to know about this run"))
        self.offer = OfferPanel()
        self.plot = LossPlot()
        self.plot.setToolTip("Training loss per step (blue, left) and validation Dice per epoch (orange, right)")

    def _rows(self) -> list[Any]:
        return [
            self.source,
            self.images,
            self.masks,
            self.image_layer,
            self.labels_layer,
            self.corrections,
            Container(widgets=[self.pairs, self.check], layout="horizontal", labels=False),
            self.validation,
            self.hold_out,
            self.minutes,
            self.val_percent,
            self.val_dir,
            self.epochs,
            self.estimate,
            self.device,
            self.init,
            self.output,
            self.resume,
            Container(widgets=[self.run_button, self.stop_button], layout="horizontal", labels=False),
            self.progress,
            self.status,
            self.notes,
            self.offer,
        ]

    def _lay_out_extras(self) -> None:
        """The collapsed Advanced section above the device row, and the loss plot at the bottom."""
        self.advanced = collapsible(
            "Advanced", [self.lr, self.batch_size, self.image_size], "Learning rate, batch size and image size"
        )
        insert_before(self.form, self.advanced, self.device)
        self.form.layout().addWidget(self.plot)

    def _connect(self) -> None:
        for widget in [*self._remembered, self.init.combo]:
            widget.changed.connect(self._save)
        self.images.changed.connect(self.check_pairs)
        self.masks.changed.connect(self.check_pairs)
        self.corrections.changed.connect(self.check_pairs)
        self.corrections.changed.connect(self._save_corrections_folder)
        self.source.changed.connect(self.check_pairs)
        self.check.changed.connect(self.check_pairs)
        self.source.changed.connect(self._visibility)
        self.validation.changed.connect(self._visibility)
        for widget in (self.epochs, self.image_size, self.device, self.val_percent, self.source, self.init.combo,
                       self.minutes, self.hold_out):
            widget.changed.connect(self.update_estimate)
        for widget in (self.image_layer, self.labels_layer):  # layers come and go: only when training on them
            widget.changed.connect(lambda *_: self.source.value == LAYERS and self.update_estimate())
        self.run_button.changed.connect(self.run)
        self.stop_button.changed.connect(self.stop)

    # --- settings and visibility ----------------------------------------------------------------
    def _save(self, *_: Any) -> None:
        values = snapshot(self._remembered)
        values["init"] = self.init.model or ""
        _settings.save(self.SETTINGS, values)

    def _start_from_drawing_model(self, folder: Path) -> None:
        """Start from the model that drew most of the corrected masks (their records say which)."""
        from collections import Counter

        from napari_wavegms.training.corrections import records
        from napari_wavegms.zoo.registry import canonical_name

        drawn_by = Counter(r.get("model") for r in records(folder) if r.get("model"))
        for model, _ in drawn_by.most_common():
            if canonical_name(model) or Path(model).exists():
                self.init.set_model(canonical_name(model) or model)
                return

    def _save_corrections_folder(self, *_: Any) -> None:
        """One corrections folder for Segment, Batch and Train: choosing it here chooses it there."""
        folder = folder_or_none(self.corrections.value)
        _settings.save(CORRECTIONS_SETTINGS, {"folder": str(folder) if folder else ""})

    def _visibility(self, *_: Any) -> None:
        source = self.source.value
        folders, tuning = source == FOLDERS, source == CORRECTIONS
        for w in (self.images, self.masks):
            w.visible = folders
        for w in (self.pairs, self.check):
            w.visible = folders or tuning
        for w in (self.image_layer, self.labels_layer):
            w.visible = source == LAYERS
        for w in (self.corrections, self.minutes, self.hold_out):
            w.visible = tuning
        for w in (self.validation, self.epochs, self.resume):
            w.visible = not tuning
        split = self.validation.value == SPLIT
        self.val_percent.visible = split and not tuning
        self.val_dir.visible = not split and not tuning
        self.run_button.text = "Fine-tune" if tuning else "Train"

    # --- live pair count ------------------------------------------------------------------------
    def check_pairs(self, *_: Any) -> Job | None:
        """Count the matched pairs and list problems (in a worker: folders may be slow to list)."""
        images, masks = folder_or_none(self.images.value), folder_or_none(self.masks.value)
        if self.source.value == CORRECTIONS:
            folder = folder_or_none(self.corrections.value)
            images, masks = (folder / "images", folder / "masks") if folder is not None else (None, None)
            if folder is not None and not self.init.model:
                self._start_from_drawing_model(folder)
        if images is None or masks is None:
            self.pairs.value = ("pairs: choose the corrections folder" if self.source.value == CORRECTIONS
                                else "pairs: choose the image and mask folders")
            return None
        self.pairs.value = "pairs: checking…"
        self._scan = start_job(
            _scan_job(images, masks),
            "Wave-GMS: checking pairs",
            show_progress=False,
            on_result=self._show_scan,
        )
        return self._scan

    def _show_scan(self, scan: Any) -> None:
        text = f"pairs: {len(scan.pairs)} matched, {len(scan.problems)} problem(s)"
        if scan.problems:
            text += "\n" + "\n".join(scan.problems[:3]) + ("\n…" if len(scan.problems) > 3 else "")
        self.pairs.value = text
        self.pairs.tooltip = "\n".join(scan.problems[:50]) or None
        self._n_pairs = len(scan.pairs)
        self.update_estimate()

    # --- estimated duration ---------------------------------------------------------------------
    def _pair_count(self) -> int:
        if self.source.value in (FOLDERS, CORRECTIONS):
            return self._n_pairs or 0
        image = self.image_layer.value
        if image is None or self.labels_layer.value is None:
            return 0
        spatial = image.data.shape[:-1] if image.rgb else image.data.shape
        return int(np.prod(spatial[:-2])) if len(spatial) > 2 else 1

    def update_estimate(self, *_: Any) -> Job | None:
        """Show how long the run would take here ("about 12 min on cpu (2 threads)"), measured in a worker."""
        n = self._pair_count()
        if n == 0 or (self.job is not None and self.job.status == "running"):
            self.estimate.value = ""
            return None
        if self._estimating is not None and self._estimating.running:
            self._estimate_again = True  # one measurement at a time; the latest settings win
            return self._estimating
        self._estimate_again = False
        n_val = round(n * self.val_percent.value / 100) if self.validation.value == SPLIT else 0
        budget = None
        if self.source.value == CORRECTIONS:
            n_val, budget = max(MIN_HELD_OUT, round(n * self.hold_out.value / 100)), float(self.minutes.value) * 60
        args = (int(self.image_size.value), int(self.epochs.value), n - n_val, self.device.value, n_val,
                self.init.model, budget)
        self.estimate.value = "estimated time: measuring a step…"
        self._estimating = start_job(
            _estimate_job(*args), "Wave-GMS: estimating the training time", show_progress=False,
            on_result=self._show_estimate, on_finished=self._estimate_finished,
        )
        return self._estimating

    def _show_estimate(self, estimate: Any) -> None:
        if not self._estimate_again and isalive(self.estimate.native):
            self.estimate.value = f"estimated time: {estimate.text()}"

    def _estimate_finished(self, status: str) -> None:
        if not isalive(self.estimate.native):  # the dock was closed while measuring
            return
        if self._estimate_again:  # the settings changed while measuring
            self._estimating = None
            self.update_estimate()
        elif status != "done":
            self.estimate.value = ""

    # --- running --------------------------------------------------------------------------------
    def _request(self) -> TrainRequest:
        output = folder_or_none(self.output.value)
        if output is None:
            raise ValueError("choose an output folder for the trained model")
        if self.resume.value:
            run_dir = output
            if not (output / "last.safetensors").is_file():
                raise ValueError(f"{output} holds no last.safetensors to resume from")
        else:
            run_dir = output / time.strftime("wavegms-%Y%m%d-%H%M%S")
        config: dict[str, Any] = {
            "epochs": int(self.epochs.value),
            "lr": float(self.lr.value),
            "batch_size": int(self.batch_size.value),
            "image_size": int(self.image_size.value),
            "device": self.device.value,
            "output_dir": str(run_dir),
            "init_from": self.init.model,
            "resume": bool(self.resume.value),
        }
        if self.validation.value == SPLIT:
            config["val_fraction"] = self.val_percent.value / 100
        else:
            val_dir = folder_or_none(self.val_dir.value)
            if val_dir is None:
                raise ValueError("choose the validation folder (with images/ and masks/), or use a split %")
            config["val_dir"] = str(val_dir)
        layer_pairs = None
        if self.source.value == FOLDERS:
            images, masks = folder_or_none(self.images.value), folder_or_none(self.masks.value)
            if images is None or masks is None:
                raise ValueError("choose the image folder and the mask folder")
            config.update(data_dir=str(images.parent), images=str(images), masks=str(masks))
        else:
            image, labels = self.image_layer.value, self.labels_layer.value
            if image is None or labels is None:
                raise ValueError("choose an image layer and the Labels layer holding its masks")
            data = image.data[0] if image.multiscale else image.data
            layer_pairs = (data, labels.data, bool(image.rgb))
        return TrainRequest(config, layer_pairs)

    def _finetune_request(self) -> FinetuneRequest:
        folder = folder_or_none(self.corrections.value)
        if folder is None:
            raise ValueError("choose the corrections folder (the one Segment and Batch keep corrections in)")
        if not self.init.model:
            raise ValueError("choose the model to start from: the one that drew the masks you corrected")
        output = folder_or_none(self.output.value) or folder / "fine-tunes"
        run_dir = output / time.strftime("finetune-%Y%m%d-%H%M%S")
        return FinetuneRequest(self.init.model, str(folder), str(run_dir), float(self.minutes.value),
                               self.hold_out.value / 100, self.device.value)

    def run(self, *_: Any) -> Job | None:
        from napari.utils.notifications import show_error

        tuning = self.source.value == CORRECTIONS
        try:
            request = self._finetune_request() if tuning else self._request()
        except ValueError as err:
            show_error(f"Wave-GMS training: {err}")
            return None
        self._save()
        self.offer.show(None)
        self.output_dir = Path(request.output_dir if tuning else request.config["output_dir"])
        self.result = None
        self.best_dice: float | None = None
        self.plot.clear()
        self.progress.value = 0
        self.notes.value, self.notes.visible = "", False
        self.run_button.enabled = False
        self.stop_button.enabled = True
        self.status.value = f"starting; saving to {self.output_dir}"
        self.job = start_job(
            finetune_job(request) if tuning else train_job(request),
            "Wave-GMS: fine-tuning" if tuning else "Wave-GMS: training",
            on_event=self._event,
            on_result=self._result,
            on_finished=self._finished,
        )
        return self.job

    def stop(self, *_: Any) -> None:
        if self.job is not None and self.job.status == "running":
            self.job.cancel()
            self.stop_button.enabled = False  # one Stop is enough: saving takes a moment
            self.stop_button.text = "Stopping…"
            self.status.value = "stopping: saving last and best…"

    def _event(self, event: Any) -> None:
        total = int(getattr(event, "total", 0) or 0)
        done = int(getattr(event, "done", 0) or 0)
        if total:
            self.progress.max = total
            self.progress.value = min(done, total)
        kind = getattr(event, "kind", "")
        info = getattr(event, "info", {}) or {}
        if kind == "prepare" and info.get("notes"):
            self._show_notes(info["notes"])
        if info.get("best_dice") is not None and math.isfinite(float(info["best_dice"])):
            self.best_dice = float(info["best_dice"])
        losses = getattr(event, "losses", {}) or {}
        if kind == "step" and losses:
            loss = losses.get("loss", losses.get("total", next(iter(losses.values()))))
            self.plot.add_loss(done, float(loss), total)
        val = getattr(event, "val", {}) or {}
        if kind == "epoch" and "dice" in val:
            self.plot.add_dice(done, float(val["dice"]))
        if kind == "" and getattr(event, "message", ""):  # a fine-tune scoring its two models
            self.status.value = event.message
        if kind in ("step", "epoch"):
            parts = [f"epoch {getattr(event, 'epoch', '?')}/{getattr(event, 'epochs', '?')}"]
            if losses:
                parts.append(f"loss {self.plot.losses[-1][1]:.3f}" if self.plot.losses else "")
            if self.plot.dice:
                parts.append(f"val Dice {self.plot.dice[-1][1]:.3f}")
            if getattr(event, "device", ""):
                parts.append(str(event.device))
            self.status.value = " · ".join(p for p in parts if p)

    def _show_notes(self, notes: list[str]) -> None:
        """The engine's notes on the data (e.g. too few pairs for a validation split), kept in view."""
        lines = ["no validation split: the best model is simply the last one" if "no validation split" in n else n
                 for n in notes]
        self.notes.value = "\n".join(dict.fromkeys(lines))
        self.notes.visible = True

    def _result(self, result: Any) -> None:
        self.result = result

    def _offer(self, out: Path) -> None:
        """Offer the trained model in the Segment widget, after a warning when its validation Dice is poor."""
        from napari.utils.notifications import show_warning

        dice = self.best_dice
        label = f"{out.name} (best)"
        if dice is not None and dice < POOR_DICE:
            label = f"{out.name} (best, val Dice {dice:.2f}: poor)"
            warning = (
                f"validation Dice {dice:.2f} is below {POOR_DICE}: this model will often miss or misplace "
                "lesions; train longer or on more pairs before trusting it"
            )
            self._show_notes([*filter(None, [self.notes.value]), f"warning: {warning}"])
            show_warning(f"Wave-GMS training: {warning}")
        session_models.add(out, label=label)

    def _finished(self, status: str) -> None:
        self.run_button.enabled = True
        self.stop_button.enabled = False
        self.stop_button.text = STOP
        if self.source.value == CORRECTIONS:
            self._finetune_finished(status)
            return
        out = self.output_dir
        saved = out is not None and any((out / f).is_file() for f in ("best.safetensors", "last.safetensors"))
        if saved:
            self._offer(out)
        if status == "done":
            self.status.value = f"done: {out} (now offered in the Segment widget)"
        elif status == "cancelled":
            self.status.value = (
                f"stopped: last and best kept in {out}" if saved else "stopped before any checkpoint"
            )
        else:
            self.status.value = "failed (see the notification)"

    def _finetune_finished(self, status: str) -> None:
        """Show the comparison; the offer panel offers the model only when it is better."""
        result = self.result
        if status == "done" and result is not None:
            self.offer.show(result)
            self.status.value = ("done: the fine-tuned model is better; name it and add it below" if result.offered
                                 else f"done: not better than {result.start_model}; nothing to add")
        elif status == "cancelled":
            self.status.value = f"stopped: {self.init.model} stays in use (the run is in {self.output_dir})"
        else:
            self.status.value = "failed (see the notification)"
