"""Room for the image: every dock fits 420 px of width, all three fit a 1366×768 screen, tooltips everywhere."""

from __future__ import annotations

import pytest
from magicgui.widgets import Container, Label, ProgressBar
from magicgui.widgets.bases import ButtonWidget, ValueWidget

pytestmark = pytest.mark.gui

PLUGIN = "napari-wavegms"
DOCK_WIDTH = 420


def controls(container: Container):
    """Every control a user can touch or read, inside nested containers (labels and bars included)."""
    for widget in container:
        if isinstance(widget, Container) and not isinstance(widget, ValueWidget):
            yield from controls(widget)
        elif isinstance(widget, ValueWidget | ButtonWidget):
            yield widget


def test_docks_fit_420_px_and_all_three_fit_a_1366x768_screen(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from qtpy.QtWidgets import QApplication

    monkeypatch.setenv("WAVEGMS_WARMUP", "0")  # no model loading in the background: only sizes are tested
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1366, 768)
    docks = {name: viewer.window.add_plugin_dock_widget(PLUGIN, name) for name in ("Segment", "Train", "Batch")}
    segment = docks["Segment"][1]
    long_name = tmp_path / ("a-very-long-training-run-folder-name-" * 3) / "best.safetensors"
    long_name.parent.mkdir()
    long_name.write_bytes(b"")
    segment.model.add_file(long_name)  # a long model name is elided, its full text is the tooltip
    batch = docks["Batch"][1]
    batch.summary_label.value = "\n".join(f"failed: case_{i:04d}.png: cannot be read" for i in range(200))
    batch.summary_label.visible = True
    docks["Train"][1].status.value = "done: " + "/very/long/path" * 20
    QApplication.processEvents()
    qtbot.waitUntil(lambda: window.isVisible(), timeout=10_000)
    window.resize(1366, 768)
    QApplication.processEvents()

    for name, (dock, widget) in docks.items():
        sizes = {n: (d.width(), w.native.sizeHint().width()) for n, (d, w) in docks.items()}
        assert dock.width() <= DOCK_WIDTH, sizes
        assert widget.native.sizeHint().width() <= DOCK_WIDTH, name
        assert widget.form.minimumSizeHint().width() <= DOCK_WIDTH, name
    assert window.width() <= 1366 and window.height() <= 768  # the three docks did not grow the window
    canvas = viewer.window._qt_viewer.canvas.native
    assert canvas.width() >= 1366 - 2 * DOCK_WIDTH - 300  # the image keeps most of the screen

    combo = segment.model.combo
    assert len(combo.native.currentText()) <= 28 and combo.native.currentText().endswith("…")
    assert str(long_name) in combo.tooltip or long_name.parent.name in combo.tooltip
    assert batch.summary_label.native.maximumHeight() <= 120  # the failure list scrolls


def test_every_control_has_a_tooltip_and_the_cache_folder_is_under_advanced(make_napari_viewer):
    viewer = make_napari_viewer()
    for name in ("Segment", "Train", "Batch"):
        widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)[1]
        missing = [w.name or type(w).__name__ for w in controls(widget)
                   if not isinstance(w, Label | ProgressBar) and not (w.tooltip or "").strip()]
        assert missing == [], (name, missing)
    segment = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")[1]
    assert segment.cache not in list(segment)  # not in the main flow
    assert segment.advanced.isAncestorOf(segment.cache.native) and not segment.advanced.isExpanded()
