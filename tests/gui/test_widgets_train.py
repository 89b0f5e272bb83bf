"""The Train widget in a real napari viewer: a short real training run, Stop, layers as training data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import BUSI
from napari_wavegms.core.io import read_image, read_mask
from napari_wavegms.network.checkpoint import read_checkpoint

pytestmark = [pytest.mark.gui, pytest.mark.slow]

PLUGIN = "napari-wavegms"


def open_widget(viewer, name: str):
    return viewer.window.add_plugin_dock_widget(PLUGIN, name)[1]


@pytest.fixture
def busi_pairs(tmp_path: Path, busi_names) -> Path:
    """16 real BUSI pairs in images/ and masks/ (links, not copies)."""
    root = tmp_path / "busi16"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
        for name in busi_names:
            (root / sub / f"{name}.png").symlink_to(BUSI / sub / f"{name}.png")
    return root


def small_run(widget, output: Path, epochs: int = 1) -> None:
    widget.epochs.value = epochs
    widget.image_size.value = 64
    widget.batch_size.value = 4
    widget.val_percent.value = 25
    widget.device.value = "cpu"
    widget.output.value = output


def test_train_from_folders_then_segment_with_the_new_model(
    make_napari_viewer, qtbot, busi_pairs, tmp_path, busi_names, monkeypatch
):
    warnings_shown = []
    monkeypatch.setattr("napari.utils.notifications.show_warning", warnings_shown.append)
    viewer = make_napari_viewer()
    train = open_widget(viewer, "Train")
    segment = open_widget(viewer, "Segment")
    train.images.value = busi_pairs / "images"
    train.masks.value = busi_pairs / "masks"
    qtbot.waitUntil(lambda: train.pairs.value.startswith("pairs: 16 matched"), timeout=60_000)
    assert "0 problem" in train.pairs.value

    small_run(train, tmp_path / "runs")
    # before Run: the duration, from a step measured on this machine, for these pairs, epochs and size
    qtbot.waitUntil(lambda: "about" in train.estimate.value, timeout=120_000)
    assert train.estimate.value.startswith("estimated time: about ") and "on cpu (" in train.estimate.value
    job = train.run()
    assert job is not None and not train.run_button.enabled and train.stop_button.enabled
    qtbot.waitUntil(lambda: not job.running, timeout=600_000)
    assert job.status == "done", train.status.value
    out = train.output_dir
    assert out.parent == tmp_path / "runs"  # each run in its own folder inside the chosen one
    assert (out / "best.safetensors").is_file() and (out / "last.safetensors").is_file()
    assert train.result.best == out / "best.safetensors"
    assert train.plot.losses and len(train.plot.dice) == 1
    assert 0.0 <= train.plot.dice[0][1] <= 1.0
    assert train.progress.value == train.progress.max > 0
    assert train.run_button.enabled and not train.stop_button.enabled

    # one epoch on 12 pairs gives a poor model: the user is warned before it is offered
    assert train.best_dice is not None and train.best_dice < 0.5
    assert len(warnings_shown) == 1 and "validation Dice" in warnings_shown[0]
    assert "warning: validation Dice" in train.notes.value and not train.notes.native.isHidden()
    from napari_wavegms.gui.session import session_models

    assert "poor" in session_models.models()[0].label and session_models.models()[0].path == out

    # the model is offered by the Segment widget at once, and it segments
    assert str(out) in segment.model.combo.choices
    segment.model.combo.value = str(out)
    image = read_image(BUSI / "images" / f"{busi_names[0]}.png")
    viewer.add_image(image, name="busi")
    segment.image.value = viewer.layers["busi"]
    seg_job = segment.run()
    qtbot.waitUntil(lambda: not seg_job.running, timeout=60_000)
    assert seg_job.status == "done"
    assert viewer.layers["busi_wavegms"].data.shape == image.shape


def test_stop_keeps_the_last_checkpoint(make_napari_viewer, qtbot, busi_pairs, tmp_path):
    viewer = make_napari_viewer()
    train = open_widget(viewer, "Train")
    train.images.value = busi_pairs / "images"
    train.masks.value = busi_pairs / "masks"
    small_run(train, tmp_path / "runs", epochs=200)
    job = train.run()
    steps, stopping = [], []

    def stop_after_a_few_steps(event):
        train._event(event)
        if getattr(event, "kind", "") == "step":
            steps.append(event.done)
            if len(steps) == 2:
                train.stop()
                stopping.append((train.stop_button.enabled, train.stop_button.text))

    job._on_event = stop_after_a_few_steps
    qtbot.waitUntil(lambda: not job.running, timeout=300_000)
    assert job.status == "cancelled"
    assert stopping[0] == (False, "Stopping…")  # no second Stop while the checkpoints are saved
    assert train.stop_button.text.startswith("Stop (") and not train.stop_button.enabled
    assert max(steps) < 200 * 3
    assert (train.output_dir / "last.safetensors").is_file()
    assert train.status.value.startswith("stopped: last and best kept")
    from napari_wavegms.gui.session import session_models

    assert train.output_dir in [m.path for m in session_models.models()]


def test_train_on_layers_in_the_viewer(make_napari_viewer, qtbot, tmp_path, busi_names):
    names = busi_names[:4]
    images = np.stack([read_image(BUSI / "images" / f"{n}.png")[:256, :256] for n in names])
    masks = np.stack([read_mask(BUSI / "masks" / f"{n}.png")[:256, :256] for n in names]).astype(np.uint8)
    viewer = make_napari_viewer()
    viewer.add_image(images, name="scans")
    viewer.add_labels(masks, name="truth")
    train = open_widget(viewer, "Train")
    train.source.value = "layers in the viewer"
    assert not train.image_layer.native.isHidden() and train.images.native.isHidden()
    train.image_layer.value = viewer.layers["scans"]
    train.labels_layer.value = viewer.layers["truth"]
    train.init.set_model("breast-ultrasound-busi-busbra")  # fine-tune the built-in ultrasound model
    small_run(train, tmp_path / "runs")
    job = train.run()
    qtbot.waitUntil(lambda: not job.running, timeout=300_000)
    assert job.status == "done", train.status.value
    assert (train.output_dir / "best.safetensors").is_file()
    header, _ = read_checkpoint(train.output_dir / "best.safetensors")
    assert header["init_from"].endswith("breast-ultrasound-busi-busbra.safetensors")
    assert header["run"]["recipe"] == "finetune"  # from a model: full size throughout, not half first


def test_one_pair_trains_without_validation_and_says_so(make_napari_viewer, qtbot, tmp_path, busi_names):
    name = busi_names[0]
    viewer = make_napari_viewer()
    viewer.add_image(read_image(BUSI / "images" / f"{name}.png")[:128, :128], name="scan")
    viewer.add_labels(read_mask(BUSI / "masks" / f"{name}.png")[:128, :128].astype(np.uint8), name="truth")
    train = open_widget(viewer, "Train")
    train.source.value = "layers in the viewer"
    train.image_layer.value = viewer.layers["scan"]
    train.labels_layer.value = viewer.layers["truth"]
    small_run(train, tmp_path / "runs")
    assert train.notes.native.isHidden()
    job = train.run()
    qtbot.waitUntil(lambda: not job.running, timeout=300_000)
    assert job.status == "done", train.status.value
    assert "no validation split" in train.notes.value and not train.notes.native.isHidden()
    assert "validation Dice" not in train.notes.value  # no validation Dice, so nothing to judge it by


def test_train_refuses_to_start_without_an_output_folder(make_napari_viewer, busi_pairs, monkeypatch):
    from napari_wavegms.gui.widgets import train as train_module

    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    viewer = make_napari_viewer()
    train = open_widget(viewer, "Train")
    train.images.value = busi_pairs / "images"
    train.masks.value = busi_pairs / "masks"
    assert train.run() is None
    assert shown and "output folder" in shown[0]
    assert train_module.folder_or_none(train.output.value) is None
