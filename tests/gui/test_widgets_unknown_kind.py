"""The Segment widget on an image of no kind the built-in models know: it says so before running, and a
model picked by hand still runs."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from napari_wavegms.zoo.registry import builtin_models

pytestmark = pytest.mark.gui

PLUGIN = "napari-wavegms"


def test_an_unknown_image_is_said_and_not_segmented_in_auto_but_runs_by_hand(make_napari_viewer, qtbot,
                                                                              monkeypatch):
    from napari.utils import notifications

    warnings: list[str] = []
    monkeypatch.setattr(notifications, "show_warning", warnings.append)
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
    photo = viewer.add_image(np.asarray(skimage.data.astronaut()), name="astronaut", rgb=True)
    widget.image.value = photo
    widget._follow_image()
    assert "not a kind of image the built-in models know" in widget.status.value
    assert "pick a model by hand" in widget.status.value

    assert widget.run() is None  # Auto does not guess a model for it
    assert len(warnings) == 1 and warnings[0].startswith("Wave-GMS: astronaut: not a kind of image")
    assert "astronaut_wavegms" not in viewer.layers

    from napari_wavegms.gui import commands

    menu_warnings: list[str] = []
    monkeypatch.setattr(commands, "show_warning", menu_warnings.append)
    viewer.layers.selection.active = photo
    assert commands.segment_selected(viewer) is None  # Layers ▸ Segment refuses it the same way
    assert len(menu_warnings) == 1 and "not a kind of image the built-in models know" in menu_warnings[0]
    assert "astronaut_wavegms" not in viewer.layers

    skin = next(n for n in builtin_models() if "isic" in n)
    widget.model.set_model(skin, by_hand=True)
    job = widget.run()
    assert job is not None
    qtbot.waitUntil(lambda: not job.running, timeout=120_000)
    assert job.status == "done" and "astronaut_wavegms" in viewer.layers

    viewer.layers.selection.active = photo  # picked by hand in the widget: the menu command runs it too
    menu_job = commands.segment_selected(viewer)
    assert menu_job is not None
    qtbot.waitUntil(lambda: not menu_job.running, timeout=120_000)
    assert menu_job.status == "done" and len(menu_warnings) == 1


def test_the_batch_checkbox_leaves_unknown_images_out_without_a_model_pass(make_napari_viewer, qtbot, tmp_path,
                                                                            random_checkpoint, monkeypatch):
    from PIL import Image

    from conftest import BUSI
    from napari_wavegms.inference import segmenter as segmenter_module

    passes: list[int] = []
    original = segmenter_module.Segmenter.segment_many
    monkeypatch.setattr(segmenter_module.Segmenter, "segment_many",
                        lambda self, images, *a, **k: (passes.append(len(images)), original(self, images, *a, **k))[1])
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.asarray(skimage.data.astronaut())).save(src / "astronaut.png")
    (src / "benign_3.png").write_bytes((BUSI / "images" / "benign_3.png").read_bytes())
    viewer = make_napari_viewer()
    widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Batch")[1]
    widget.input.value = src
    widget.output.value = tmp_path / "out"
    widget.model.add_file(random_checkpoint)
    widget.device.value = "cpu"
    widget.skip_unknown.value = True
    job = widget.run()
    qtbot.waitUntil(lambda: not job.running, timeout=120_000)
    assert job.status == "done" and passes == [1]  # the scan alone went through a model
    rows = {r.file: r for r in widget.summary.results}
    assert rows["astronaut.png"].status == "skipped" and rows["astronaut.png"].kind == "unknown"
    assert rows["benign_3.png"].status == "done" and rows["benign_3.png"].kind == "ultrasound"
    assert "skipped: astronaut.png (not a kind of image the built-in models know" in widget.summary_label.value
    assert not (tmp_path / "out" / "astronaut.png").exists()
