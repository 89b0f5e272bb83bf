"""The Batch widget in a real napari viewer: a temp folder with real BUSI images and one broken file."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from conftest import BUSI
from napari_wavegms.core.io import read_image, read_mask

pytestmark = pytest.mark.gui


@pytest.fixture
def folder(tmp_path: Path, busi_names) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    for name in busi_names[:3]:
        (src / f"{name}.png").symlink_to(BUSI / "images" / f"{name}.png")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (src / "notes.txt").write_text("not an image")
    return src


def test_batch_widget_processes_a_folder(
    make_napari_viewer, qtbot, folder, tmp_path, random_checkpoint, busi_names
):
    viewer = make_napari_viewer()
    widget = viewer.window.add_plugin_dock_widget("napari-wavegms", "Batch")[1]
    widget.input.value = folder
    widget.output.value = tmp_path / "out"
    widget.pattern.value = "*.png"
    widget.model.add_file(random_checkpoint)
    widget.device.value = "cpu"
    events = []
    job = widget.run()
    job._on_event = lambda e: (events.append(e), widget._event(e))
    assert not widget.run_button.enabled and widget.cancel_button.enabled
    qtbot.waitUntil(lambda: not job.running, timeout=120_000)
    assert job.status == "done"
    summary = widget.summary
    assert len(summary.done) == 3 and len(summary.failed) == 1
    assert summary.failed[0].file == "broken.png" and "broken.png" in summary.failed[0].error
    assert "3 done, 0 skipped, 1 failed" in widget.summary_label.value
    assert "broken.png" in widget.summary_label.value
    assert events and events[-1].total == 4  # per-file progress
    assert widget.progress.value == widget.progress.max == 4
    for name in busi_names[:3]:
        mask = read_mask(tmp_path / "out" / f"{name}.png")
        assert mask.shape == read_image(folder / f"{name}.png").shape[:2]
    assert summary.csv_path.is_file()

    # open a few results in the viewer
    widget.open_count.value = 2
    assert widget.open_button.enabled
    added = widget.open_results()
    assert len(added) == 4
    assert f"{busi_names[0]}_wavegms" in viewer.layers
    assert set(np.unique(viewer.layers[f"{busi_names[0]}_wavegms"].data)) <= {0, 1}

    # a rerun skips what exists, and still shows the whole folder: the earlier masks with their model
    job = widget.run()
    qtbot.waitUntil(lambda: not job.running, timeout=120_000)
    assert len(widget.summary.skipped) == 3 and len(widget.summary.done) == 0
    assert f"models: {random_checkpoint} (3)" in widget.summary_label.value
    assert all(r.confidence is not None for r in widget.summary.skipped)
    assert widget.open_button.enabled and len(widget.open_results()) == 4


def test_batch_widget_refuses_missing_folders(make_napari_viewer, monkeypatch):
    from napari_wavegms.gui.widgets import batch

    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    viewer = make_napari_viewer()
    widget = viewer.window.add_plugin_dock_widget("napari-wavegms", "Batch")[1]
    assert widget.run() is None
    assert shown and "input folder" in shown[0]
    assert batch.folder_or_none(widget.output.value) is None


def test_batch_widget_takes_the_builtin_model_made_for_the_folder(make_napari_viewer, folder, tmp_path,
                                                                  random_checkpoint):
    import shutil

    from conftest import KVASIR

    polyps = tmp_path / "polyps"
    polyps.mkdir()
    shutil.copy(KVASIR / "images" / "cju0qkwl35piu0993l0dewei2.jpg", polyps / "polyp.jpg")
    viewer = make_napari_viewer()
    widget = viewer.window.add_plugin_dock_widget("napari-wavegms", "Batch")[1]
    widget.input.value = polyps
    assert "kvasir-seg" in widget.model.model and widget.automatic
    assert widget.status.value.startswith("model per image:") and "for endoscopy (colour" in widget.status.value
    widget.input.value = folder
    assert "busi" in widget.model.model and "for ultrasound (grey" in widget.status.value
    widget.model.add_file(random_checkpoint)
    widget.input.value = polyps
    assert widget.model.model == str(random_checkpoint) and not widget.automatic
    assert widget.status.value == f"model for every image: {random_checkpoint} (picked by hand)"


def pick_model_by_hand(picker, value: str) -> None:
    """What a user's click in the model picker does: select the entry and emit ``activated``."""
    combo = picker.combo.native
    index = next(i for i in range(combo.count()) if combo.itemData(i) == value)
    combo.setCurrentIndex(index)
    combo.activated.emit(index)


def _csv_models(summary) -> dict[str, str]:
    with open(summary.csv_path, newline="") as f:
        return {row["file"]: row["model"] for row in csv.DictReader(f)}


def test_a_folder_mixing_kinds_is_segmented_per_image_until_a_model_is_picked_by_hand(
    make_napari_viewer, qtbot, tmp_path, busi_names
):
    """A polyp and two BUSI scans in one folder: with the automatic model each file gets the model made
    for its kind, so the BUSI masks equal those of a run on the BUSI scans alone and the CSV names both
    models; a model picked by hand is used for every file."""
    from conftest import KVASIR, drain
    from napari_wavegms.inference.batch import segment_folder
    from napari_wavegms.zoo.registry import builtin_models
    busi_model = next(n for n in builtin_models() if "busi" in n)
    polyp_model = next(n for n in builtin_models() if "kvasir-seg" in n)
    mixed, alone = tmp_path / "mixed", tmp_path / "busi-alone"
    mixed.mkdir()
    alone.mkdir()
    scans = [f"{n}.png" for n in busi_names[:2]]
    for name in scans:
        (mixed / name).symlink_to(BUSI / "images" / name)
        (alone / name).symlink_to(BUSI / "images" / name)
    (mixed / "polyp.jpg").symlink_to(KVASIR / "images" / "cju0qkwl35piu0993l0dewei2.jpg")
    drain(segment_folder(alone, tmp_path / "out-alone", model=busi_model, device="cpu"))
    for name in scans:  # the BUSI scans alone get the ultrasound model
        assert read_mask(tmp_path / "out-alone" / name).any()

    viewer = make_napari_viewer()
    widget = viewer.window.add_plugin_dock_widget("napari-wavegms", "Batch")[1]
    widget.input.value = mixed
    widget.output.value = tmp_path / "out-auto"
    widget.device.value = "cpu"
    assert widget.automatic and "per image" in widget.status.value
    job = widget.run()
    qtbot.waitUntil(lambda: not job.running, timeout=180_000)
    assert job.status == "done" and len(widget.summary.done) == 3
    assert _csv_models(widget.summary) == {scans[0]: busi_model, scans[1]: busi_model, "polyp.jpg": polyp_model}
    assert f"models: {busi_model} (2), {polyp_model} (1)" in widget.summary_label.value
    for name in scans:
        np.testing.assert_array_equal(read_mask(tmp_path / "out-auto" / name),
                                      read_mask(tmp_path / "out-alone" / name))

    pick_model_by_hand(widget.model, polyp_model)  # the user's model wins, for every file
    assert not widget.automatic and "picked by hand" in widget.status.value
    widget.output.value = tmp_path / "out-hand"
    job = widget.run()
    qtbot.waitUntil(lambda: not job.running, timeout=180_000)
    assert job.status == "done"
    assert set(_csv_models(widget.summary).values()) == {polyp_model}


def test_cancel_shows_the_summary_and_open_results_pairs_each_image_with_its_mask(
    make_napari_viewer, qtbot, folder, tmp_path, random_checkpoint, busi_names, monkeypatch
):
    """Cancel after the first of four images to do (all in one read-ahead group): the run stops after
    the image being segmented, so at most two are segmented. A second image the worker starts waits
    until the cancel has been asked, so how fast the machine is decides nothing. The fifth image's mask
    is an earlier run's: the cancelled run's summary lists it too, and Open results shows it."""
    import threading

    from conftest import drain
    from napari_wavegms.inference.batch import segment_folder
    from napari_wavegms.inference.segmenter import Segmenter

    for name in busi_names[3:5]:
        (folder / f"{name}.png").symlink_to(BUSI / "images" / f"{name}.png")
    scans = sorted(p.name for p in folder.glob("*.png") if p.name != "broken.png")
    out = tmp_path / "out"
    drain(segment_folder(folder, out, pattern=scans[-1], model=str(random_checkpoint), device="cpu"))
    asked = threading.Event()
    calls = []
    original = Segmenter.segment_many

    def after_the_first_waits_for_the_cancel(self, images, **kw):
        calls.append(len(images))
        if len(calls) > 1:
            assert asked.wait(30)
        return original(self, images, **kw)

    monkeypatch.setattr(Segmenter, "segment_many", after_the_first_waits_for_the_cancel)
    viewer = make_napari_viewer()
    viewer.add_points(name="someone's points")  # a layer that was there before
    widget = viewer.window.add_plugin_dock_widget("napari-wavegms", "Batch")[1]
    widget.model.add_file(random_checkpoint)
    widget.input.value = folder
    widget.output.value = out
    widget.pattern.value = "*.png"
    widget.device.value = "cpu"
    job = widget.run()
    while_cancelling = []

    def cancel_after_the_first_file(event):
        widget._event(event)
        if event.done == 1:
            widget.cancel()
            while_cancelling.append((widget.cancel_button.enabled, widget.status.value))
            asked.set()

    job._on_event = cancel_after_the_first_file
    qtbot.waitUntil(lambda: not job.running and widget.status.value.startswith("cancelled"), timeout=120_000)
    assert while_cancelling == [(False, "cancelling…")]  # Cancel is disabled while the run stops
    assert job.status == "cancelled" and not widget.cancel_button.enabled and widget.run_button.enabled
    summary = widget.summary
    new = [p for p in out.glob("*.png") if p.name != scans[-1]]
    # The first image, and the second only when the worker had started it before Cancel came; the
    # others are never segmented, although all four were in one read-ahead group.
    assert 1 <= len(new) <= 2 and calls == [1] * len(new)
    assert sorted(r.file for r in summary.done) == sorted(p.name for p in new)  # every new mask, in the CSV too
    (earlier,) = summary.skipped
    assert earlier.file == scans[-1] and earlier.confidence is not None and "not reached" in earlier.error
    assert f"{len(summary.done)} done" in widget.summary_label.value and summary.csv_path.is_file()
    assert not widget.summary_label.native.isHidden() and widget.open_button.enabled

    widget.open_count.value = 2
    added = widget.open_results()
    assert len(added) == 4
    assert viewer.grid.enabled and viewer.grid.stride == 2  # one grid cell per image + mask
    for n in range(2):  # image below its mask, pair by pair at the bottom of the layer list
        image, mask = viewer.layers[2 * n], viewer.layers[2 * n + 1]
        assert image._type_string == "image" and mask.name == f"{image.name}_wavegms"
        assert mask.data.shape == image.data.shape[:2]
    assert viewer.grid.position(0, viewer.layers) == viewer.grid.position(1, viewer.layers)
    assert viewer.grid.position(0, viewer.layers) != viewer.grid.position(2, viewer.layers)
    widget.open_results()  # again: the same layers, updated, not duplicated
    assert len(viewer.layers) == 5


def test_flips_and_the_presence_check_reach_every_file(make_napari_viewer, qtbot, tmp_path, busi_names):
    """The automatic (ultrasound) model on a lesion scan and a lesion-free scan: with flips on and the
    presence check on by default, the lesion-free scan's mask is empty; with flips off and the check
    unticked, each mask is exactly what the engine draws with those options, and the lesion-free scan
    keeps its drawing."""
    from napari_wavegms.inference.segmenter import Segmenter
    from napari_wavegms.zoo.registry import suggest_model

    src = tmp_path / "in"
    src.mkdir()
    names = [busi_names[0], "normal_90"]
    for name in names:
        (src / f"{name}.png").symlink_to(BUSI / "images" / f"{name}.png")
    model = suggest_model("ultrasound")
    viewer = make_napari_viewer()
    widget = viewer.window.add_plugin_dock_widget("napari-wavegms", "Batch")[1]
    widget.input.value = src
    widget.device.value = "cpu"

    def run(out: str) -> dict[str, np.ndarray]:
        widget.output.value = tmp_path / out
        job = widget.run()
        qtbot.waitUntil(lambda: not job.running, timeout=120_000)
        assert job.status == "done" and len(widget.summary.done) == 2
        return {name: read_mask(tmp_path / out / f"{name}.png") > 0 for name in names}

    assert widget.tta.value == "model's choice" and widget.presence.value
    assert widget.segmenter_options()["tta"] is None  # the card's choice, whichever it is
    widget.tta.value = "on"
    default = run("default")
    assert not default["normal_90"].any()
    widget.tta.value = "off"
    widget.presence.value = False
    assert widget.segmenter_options() == {"tta": False, "presence": False}
    plain = run("plain")
    engine = Segmenter(model, device="cpu", tta=False, presence=False)
    for name in names:
        np.testing.assert_array_equal(plain[name], engine(read_image(src / f"{name}.png")) > 0)
    assert plain["normal_90"].any() and not np.array_equal(plain[names[0]], default[names[0]])
