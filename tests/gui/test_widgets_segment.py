"""The Segment widget and the one-click menu command, in a real napari viewer under Xvfb."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import BUSI
from napari_wavegms.core.io import read_image
from napari_wavegms.zoo.registry import card_tta, suggest_model

pytestmark = pytest.mark.gui

PLUGIN = "napari-wavegms"


def open_widget(viewer, name: str):
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def wait_done(qtbot, job, timeout: int = 60_000) -> None:
    qtbot.waitUntil(lambda: not job.running, timeout=timeout)


@pytest.fixture
def notifications(monkeypatch):
    """Error notifications of failed jobs, as napari would show them (not dispatched, so no toasts)."""
    from napari_wavegms.gui import worker as _worker

    shown: list = []
    monkeypatch.setattr(_worker, "_dispatch", shown.append)
    return shown


@pytest.fixture
def errors(notifications):
    """The text of every error notification: the short message and the full text behind Details."""

    class Texts(list):
        def __getitem__(self, i):
            return f"{notifications[i].message}\n{notifications[i].details}"

        def __len__(self):
            return len(notifications)

    return Texts()


@pytest.fixture
def busi_image(busi_names) -> np.ndarray:
    return read_image(BUSI / "images" / f"{busi_names[0]}.png")


def test_segment_busi_layer_keeps_shape_scale_and_transforms(
    make_napari_viewer, qtbot, random_checkpoint, busi_image
):
    viewer = make_napari_viewer()
    image = viewer.add_image(
        busi_image,
        name="busi",
        scale=(0.1, 0.1),
        translate=(5.0, 7.0),
        units=("mm", "mm"),
        axis_labels=("y", "x"),
        rotate=10,
    )
    widget = open_widget(viewer, "Segment")
    widget.model.add_file(random_checkpoint)
    widget.image.value = image
    job = widget.run()
    assert not widget.run_button.enabled  # no second run while one is going
    wait_done(qtbot, job)
    assert job.status == "done"
    labels = viewer.layers["busi_wavegms"]
    assert labels.data.shape == busi_image.shape
    assert labels.data.dtype == np.uint8 and set(np.unique(labels.data)) <= {0, 1}
    np.testing.assert_allclose(labels.scale, (0.1, 0.1))
    np.testing.assert_allclose(labels.translate, (5.0, 7.0))
    np.testing.assert_allclose(labels.affine.affine_matrix, image.affine.affine_matrix)
    np.testing.assert_allclose(labels.rotate, image.rotate)
    assert tuple(str(u) for u in labels.units) == tuple(str(u) for u in image.units)
    assert tuple(labels.axis_labels) == ("y", "x")
    assert widget.run_button.enabled
    assert widget.device_used.value.startswith("device in use: cpu")
    assert labels.metadata["wavegms"]["model"] == str(random_checkpoint)

    # rerun with another threshold: the same layer is updated, not duplicated
    first = labels.data.copy()
    widget.threshold.value = 0.01
    wait_done(qtbot, widget.run())
    assert [layer.name for layer in viewer.layers] == ["busi", "busi_wavegms"]
    assert viewer.layers["busi_wavegms"] is labels
    assert labels.data.sum() > first.sum()


def test_stack_whole_and_current_slice(make_napari_viewer, qtbot, random_checkpoint, busi_names):
    stack = np.stack([read_image(BUSI / "images" / f"{n}.png")[:200, :240] for n in busi_names[:3]])
    viewer = make_napari_viewer()
    viewer.add_image(stack, name="stack", scale=(2.0, 0.1, 0.1))
    widget = open_widget(viewer, "Segment")
    widget.model.add_file(random_checkpoint)
    widget.threshold.value = 0.01
    wait_done(qtbot, widget.run())
    whole = viewer.layers["stack_wavegms"].data.copy()
    assert whole.shape == (3, 200, 240)
    np.testing.assert_allclose(viewer.layers["stack_wavegms"].scale, (2.0, 0.1, 0.1))
    assert all(whole[i].any() for i in range(3))

    viewer.layers.remove("stack_wavegms")
    viewer.dims.set_current_step(0, 1)
    widget.scope.value = "current slice"
    wait_done(qtbot, widget.run())
    one = viewer.layers["stack_wavegms"].data
    assert one.shape == (3, 200, 240)
    assert not one[0].any() and not one[2].any()
    np.testing.assert_array_equal(one[1], whole[1])


def test_result_goes_to_the_layer_chosen_at_run(make_napari_viewer, qtbot, random_checkpoint, busi_image):
    viewer = make_napari_viewer()
    first = viewer.add_image(busi_image, name="first")
    second = viewer.add_image(busi_image[::2, ::2], name="second")
    widget = open_widget(viewer, "Segment")
    widget.model.add_file(random_checkpoint)
    widget.image.value = first
    job = widget.run()
    widget.image.value = second  # the user switches while the job runs
    viewer.layers.selection.active = second
    wait_done(qtbot, job)
    assert "first_wavegms" in viewer.layers and "second_wavegms" not in viewer.layers
    assert viewer.layers["first_wavegms"].data.shape == busi_image.shape


def gate_segment_job(monkeypatch):
    """Hold every Segment job in its worker thread until the returned event is set: after its first
    event with slices done (``after_slices=True``), or before it starts (``False``). Tests then wait
    on conditions instead of hoping the machine is slow or fast enough."""
    import threading

    from napari_wavegms.gui.widgets import segment

    release = threading.Event()
    original = segment.segment_job

    def gated(request, after_slices: bool):
        if not after_slices:
            assert release.wait(60), "the test never released the job"
        job = original(request)
        try:
            event = next(job)
            while True:
                yield event
                if after_slices and event.total and event.done:
                    assert release.wait(60), "the test never released the job"
                event = job.send(None)
        except StopIteration as stop:
            return stop.value
        finally:
            job.close()

    def install(after_slices: bool) -> threading.Event:
        monkeypatch.setattr(segment, "segment_job", lambda request: gated(request, after_slices))
        return release

    return install


@pytest.fixture
def gated_jobs(monkeypatch):
    return gate_segment_job(monkeypatch)


def test_cancel_stops_the_job_and_closes_the_engine_generator(
    make_napari_viewer, qtbot, random_checkpoint, busi_image, gated_jobs
):
    """Cancel pressed after the first slices: the worker is held there until the cancel has been asked
    for, so the job cannot finish first however fast the machine is."""
    release = gated_jobs(after_slices=True)
    viewer = make_napari_viewer()
    viewer.add_image(np.stack([busi_image] * 40), name="long")
    widget = open_widget(viewer, "Segment")
    widget.model.add_file(random_checkpoint)
    seen = []

    def cancel_on_first_slices(event):
        seen.append(event)
        if event.total and event.done and not release.is_set():
            widget.cancel()
            release.set()

    job = widget.run()
    job._on_event = cancel_on_first_slices
    wait_done(qtbot, job)
    assert job.status == "cancelled"
    assert max(e.done for e in seen) < 40
    assert job.worker._gen.gi_frame is None  # closed: the engine's finally blocks have run
    assert "long_wavegms" not in viewer.layers
    assert widget.run_button.enabled and not widget.cancel_button.enabled
    assert widget.status.value == "cancelled"


def test_event_loop_keeps_running_during_a_job(make_napari_viewer, qtbot, random_checkpoint, busi_image,
                                               gated_jobs):
    """A timer on the GUI thread keeps ticking while the job is held in its worker thread."""
    from qtpy.QtCore import QTimer

    release = gated_jobs(after_slices=False)
    viewer = make_napari_viewer()
    viewer.add_image(busi_image, name="scan")
    widget = open_widget(viewer, "Segment")
    widget.model.add_file(random_checkpoint)
    ticks_during_job = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks_during_job.append(1) if widget.job and widget.job.running else None)
    timer.start()
    job = widget.run()
    try:
        qtbot.waitUntil(lambda: len(ticks_during_job) >= 3, timeout=30_000)
        assert job.running
    finally:
        release.set()
        timer.stop()
    wait_done(qtbot, job)
    assert job.status == "done"


def test_errors_reach_the_user_with_the_reason(make_napari_viewer, qtbot, busi_image, errors, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(busi_image, name="img")
    widget = open_widget(viewer, "Segment")
    not_a_model = tmp_path / "notes.safetensors"
    not_a_model.write_bytes(b"this is not a checkpoint")
    widget.model.add_file(not_a_model)
    job = widget.run()
    wait_done(qtbot, job)
    assert job.status == "failed"
    assert len(errors) == 1 and "notes.safetensors" in errors[0]
    assert widget.run_button.enabled


def test_settings_are_remembered_and_the_menu_command_uses_them(
    make_napari_viewer, qtbot, random_checkpoint, busi_image, _isolated_settings
):
    from app_model.types import MenuItem
    from napari._app_model import get_app_model

    viewer = make_napari_viewer()
    widget = open_widget(viewer, "Segment")
    widget.model.add_file(random_checkpoint)
    widget.threshold.value = 0.3
    assert (_isolated_settings / "settings.json").is_file()

    viewer2 = make_napari_viewer()
    widget2 = open_widget(viewer2, "Segment")
    assert widget2.threshold.value == pytest.approx(0.3)
    assert widget2.model.model == str(random_checkpoint)

    app = get_app_model()
    in_menu = [i.command.id for i in app.menus.get_menu("napari/layers/segment") if isinstance(i, MenuItem)]
    assert "napari-wavegms.segment_selected" in in_menu
    batch_menu = [
        i.command.id for i in app.menus.get_menu("napari/file/io_utilities") if isinstance(i, MenuItem)
    ]
    assert "napari-wavegms.batch_widget" in batch_menu

    from napari_wavegms.gui.commands import segment_selected

    layer = viewer2.add_image(busi_image, name="menu", scale=(0.5, 0.5))
    viewer2.layers.selection.active = layer
    job = segment_selected(viewer2)
    wait_done(qtbot, job)
    result = viewer2.layers["menu_wavegms"]
    assert result.data.shape == busi_image.shape
    np.testing.assert_allclose(result.scale, (0.5, 0.5))


def test_napari_start_and_widget_construction_do_not_import_torch():
    code = textwrap.dedent("""
        import sys
        import napari
        viewer = napari.Viewer(show=False)
        for name in ("Segment", "Train", "Batch"):
            viewer.window.add_plugin_dock_widget("napari-wavegms", name)
        print("torch" in sys.modules)
        viewer.close()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_rgb_image_synchronous_mode(make_napari_viewer, random_checkpoint, monkeypatch):
    """An RGB Kvasir frame gives an H×W Labels layer (the channel axis is not spatial); WAVEGMS_SYNC=1
    runs the job on the calling thread, so the result is there when run() returns."""
    from conftest import KVASIR

    monkeypatch.setenv("WAVEGMS_SYNC", "1")
    rgb = read_image(KVASIR / "images" / "cju16jgnyzp970878melv7r25.jpg")
    viewer = make_napari_viewer()
    viewer.add_image(rgb, name="polyp", scale=(0.2, 0.3))
    widget = open_widget(viewer, "Segment")
    widget.model.add_file(random_checkpoint)
    job = widget.run()
    assert not job.running and job.status == "done" and job.worker is None
    labels = viewer.layers["polyp_wavegms"]
    assert labels.data.shape == rgb.shape[:2]
    np.testing.assert_allclose(labels.scale, (0.2, 0.3))


def pick_model_by_hand(picker, value: str) -> None:
    """What a user's click in the model picker does: select the entry and emit ``activated``."""
    combo = picker.combo.native
    index = next(i for i in range(combo.count()) if combo.itemData(i) == value)
    combo.setCurrentIndex(index)
    combo.activated.emit(index)


def test_model_follows_the_kind_of_the_active_image_and_says_why(make_napari_viewer, random_checkpoint,
                                                                  busi_image):
    """Selecting a BUSI scan or a Kvasir frame in the layer list moves the model picker between the
    ultrasound and polyp models, with the kind and the evidence in the status line and the picker's
    tooltip; an ultrasound saved as RGB is still ultrasound; a dermoscopy image gets the skin model; a
    checkpoint file the user chose is never swapped."""
    from conftest import KVASIR, SHARED
    from napari_wavegms.gui.widgets.segment import pick_model
    from napari_wavegms.zoo.registry import builtin_models

    busi_model = next(n for n in builtin_models() if "busi" in n)
    polyp_model = next(n for n in builtin_models() if "kvasir-seg" in n)
    skin_model = next(n for n in builtin_models() if "isic" in n)
    viewer = make_napari_viewer()
    widget = open_widget(viewer, "Segment")
    polyp = viewer.add_image(read_image(KVASIR / "images" / "cju16jgnyzp970878melv7r25.jpg"), name="polyp")
    ultrasound = viewer.add_image(busi_image, name="us")
    ultrasound_rgb = viewer.add_image(np.repeat(busi_image[..., None], 3, axis=-1), name="us_rgb", rgb=True)
    skin = viewer.add_image(read_image(SHARED / "data" / "isic2017-256" / "images" / "ISIC_0000000.jpg"),
                            name="skin")

    for _ in range(2):  # back and forth: the picker follows every time
        viewer.layers.selection.active = polyp
        assert widget.image.value is polyp and widget.model.model == polyp_model
        assert widget.status.value.startswith(f"model: {polyp_model} for endoscopy (colour")
        assert "chosen automatically" in widget.model.combo.tooltip and "endoscopy" in widget.model.combo.tooltip
        viewer.layers.selection.active = ultrasound
        assert widget.image.value is ultrasound and widget.model.model == busi_model
        assert widget.status.value.startswith(f"model: {busi_model} for ultrasound (grey")
        assert "ultrasound" in widget.model.combo.tooltip
    viewer.layers.selection.active = ultrasound_rgb
    assert widget.model.model == busi_model and "for ultrasound" in widget.status.value

    viewer.layers.selection.active = skin
    assert widget.model.model == skin_model
    assert widget.status.value.startswith(f"model: {skin_model} for dermoscopy (")

    widget.model.add_file(random_checkpoint)
    viewer.layers.selection.active = polyp
    assert widget.model.model == str(random_checkpoint)
    assert "picked by hand" in widget.status.value
    assert pick_model(polyp, str(random_checkpoint))[0] == str(random_checkpoint)
    assert pick_model(polyp, None)[0] == polyp_model


def test_a_builtin_model_picked_by_hand_stays_until_auto(make_napari_viewer, qtbot, busi_image, monkeypatch):
    """The ultrasound model picked by hand for a polyp stays through image changes, a new widget and the
    menu command (whose message says it was chosen in the widget); "Auto" goes back to following. An
    automatic run records why its model was chosen, and so does the menu command's message."""
    from conftest import KVASIR
    from napari_wavegms.gui import commands as _commands
    from napari_wavegms.zoo.registry import builtin_models

    busi_model = next(n for n in builtin_models() if "busi" in n)
    polyp_model = next(n for n in builtin_models() if "kvasir-seg" in n)
    frame = read_image(KVASIR / "images" / "cju16jgnyzp970878melv7r25.jpg")[::4, ::4]
    viewer = make_napari_viewer()
    widget = open_widget(viewer, "Segment")
    polyp = viewer.add_image(frame, name="polyp")
    ultrasound = viewer.add_image(busi_image, name="us")
    viewer.layers.selection.active = polyp
    assert widget.model.model == polyp_model and not widget.model.by_hand
    assert not widget.model.auto.enabled

    pick_model_by_hand(widget.model, busi_model)
    assert widget.model.by_hand and widget.model.auto.enabled
    viewer.layers.selection.active = ultrasound
    viewer.layers.selection.active = polyp
    assert widget.model.model == busi_model  # the user's choice wins over the polyp frame's kind
    assert "picked by hand" in widget.status.value and "picked by hand" in widget.model.combo.tooltip
    again = open_widget(make_napari_viewer(), "Segment")  # remembered as picked by hand
    assert again.model.by_hand and again.model.model == busi_model

    messages: list[str] = []
    monkeypatch.setattr(_commands, "show_info", messages.append)
    wait_done(qtbot, _commands.segment_selected(viewer))
    info = viewer.layers["polyp_wavegms"].metadata["wavegms"]
    assert info["model"] == busi_model and "model_choice" not in info
    assert f"model {busi_model} (chosen in the Segment widget)" in messages[-1]

    widget.model.auto.changed.emit(True)  # the user clicks "Auto"
    assert not widget.model.by_hand and widget.model.model == polyp_model
    assert widget.status.value.startswith(f"model: {polyp_model} for endoscopy")
    viewer.layers.selection.active = polyp  # (the result layer became the active one)
    wait_done(qtbot, _commands.segment_selected(viewer))
    info = viewer.layers["polyp_wavegms"].metadata["wavegms"]
    assert info["model"] == polyp_model and info["model_choice"].startswith(f"{polyp_model} for endoscopy (")
    assert f"model {polyp_model} for endoscopy (colour" in messages[-1]
    wait_done(qtbot, widget.run())
    assert viewer.layers["polyp_wavegms"].metadata["wavegms"]["model_choice"].startswith(polyp_model)


def test_picker_follows_the_active_image_unless_picked_by_hand(make_napari_viewer, busi_image):
    """Opening or selecting an image moves the picker to it; a pick by hand holds against new layers
    until the user selects an image in the layer list again; non-image layers never move it."""
    viewer = make_napari_viewer()
    first = viewer.add_image(busi_image, name="first")
    widget = open_widget(viewer, "Segment")
    assert widget.image.value is first
    second = viewer.add_image(busi_image[::2, ::2], name="second")  # opened: taken
    assert widget.image.value is second
    viewer.layers.selection.active = first  # selected in the layer list: taken
    assert widget.image.value is first
    viewer.add_labels(np.zeros(busi_image.shape, np.uint8), name="labels")  # not an image
    assert widget.image.value is first

    combo = widget.image.native  # the user picks "second" in the picker
    index = next(i for i in range(combo.count()) if combo.itemData(i) is second)
    combo.setCurrentIndex(index)
    combo.activated.emit(index)
    assert widget.image.value is second
    third = viewer.add_image(busi_image[:100, :100], name="third")
    assert widget.image.value is second  # the pick by hand holds
    viewer.layers.selection.active = first  # until an image is selected in the layer list
    assert widget.image.value is first
    viewer.layers.selection.active = third
    assert widget.image.value is third


def test_grey_alpha_png_opened_and_segmented_from_the_layers_menu(
    make_napari_viewer, qtbot, tmp_path, random_checkpoint, busi_image, monkeypatch
):
    """napari opens a grey+alpha PNG as H×W×2 (not RGB); Layers ▸ Segment ▸ Segment selected image
    gives a 2D Labels layer of the image's size, the mask of its grey channel, without a warning."""
    import imageio.v3 as iio
    from napari._app_model import get_app_model

    from napari_wavegms.gui import settings as _settings
    from napari_wavegms.inference.segmenter import Segmenter

    warnings_shown = []
    monkeypatch.setattr("napari.utils.notifications.show_warning", warnings_shown.append)
    alpha = np.full_like(busi_image, 255)
    alpha[:50] = 0
    iio.imwrite(tmp_path / "grey_alpha.png", np.stack([busi_image, alpha], axis=-1), extension=".png")
    _settings.save("segment", {"model": str(random_checkpoint), "threshold": 0.5})

    viewer = make_napari_viewer()
    [layer] = viewer.open(tmp_path / "grey_alpha.png")
    assert layer.data.shape == (*busi_image.shape, 2) and not layer.rgb  # as napari reads it
    viewer.layers.selection.active = layer
    get_app_model().commands.execute_command("napari-wavegms.segment_selected").result()
    qtbot.waitUntil(lambda: "grey_alpha_wavegms" in viewer.layers, timeout=60_000)
    labels = viewer.layers["grey_alpha_wavegms"]
    assert labels.data.shape == busi_image.shape and labels.ndim == 2
    expected = Segmenter(random_checkpoint, device="cpu")(busi_image, threshold=0.5)
    np.testing.assert_array_equal(labels.data, expected)
    assert warnings_shown == []


def test_an_input_that_looks_misread_is_segmented_with_a_warning(make_napari_viewer, random_checkpoint,
                                                                 monkeypatch, busi_image):
    monkeypatch.setenv("WAVEGMS_SYNC", "1")
    warnings_shown = []
    monkeypatch.setattr("napari.utils.notifications.show_warning", warnings_shown.append)
    viewer = make_napari_viewer()
    viewer.add_image(np.repeat(busi_image[:60, :80, None], 3, axis=-1), name="narrow", rgb=False)
    widget = open_widget(viewer, "Segment")
    widget.model.add_file(random_checkpoint)
    job = widget.run()
    assert job.status == "done"
    assert len(warnings_shown) == 1 and "60 slice(s) of 80×3 pixels" in warnings_shown[0]
    assert "open it as an RGB image" in warnings_shown[0] and "too small" not in warnings_shown[0]


def test_first_run_says_it_loads_the_model_and_has_its_own_progress_bar(
    make_napari_viewer, qtbot, random_checkpoint, busi_image, monkeypatch
):
    from napari_wavegms.gui import loaded_models

    monkeypatch.setattr(loaded_models, "_CACHE", {})
    viewer = make_napari_viewer()
    viewer.add_image(np.stack([busi_image] * 4), name="stack")
    widget = open_widget(viewer, "Segment")
    widget.model.add_file(random_checkpoint)
    assert widget.progress.native.isHidden()  # only shown while a job runs
    seen: list[tuple[str, int, int, bool]] = []
    original = widget._event

    def record(event):
        original(event)
        shown = not widget.progress.native.isHidden()
        seen.append((widget.status.value, widget.progress.value, widget.progress.max, shown))

    widget._event = record
    wait_done(qtbot, widget.run())
    assert seen[0][0] == loaded_models.LOADING and seen[0][2] == 0  # busy bar while the model loads
    assert all(visible for *_, visible in seen)
    assert seen[-1][1:3] == (4, 4) and seen[-1][0].startswith("4/4 slices")
    assert widget.progress.native.isHidden() and widget.status.value.startswith("done: stack_wavegms · confidence")

    seen.clear()
    wait_done(qtbot, widget.run())  # the model is loaded: no loading message
    assert seen and all(loaded_models.LOADING not in status for status, *_ in seen)


def test_missing_weights_notification_leads_with_the_fix_and_has_details(
    make_napari_viewer, qtbot, busi_image, notifications, monkeypatch, tmp_path, taef2
):
    """Offline without the Tiny-VAE decoder (a checkpoint that takes it from the weights registry):
    the notification's text is short and starts with what to do; the whole message (folders
    searched, the variable) is one click away."""
    import torch

    from napari_wavegms.gui import loaded_models
    from napari_wavegms.gui import worker as _worker
    from napari_wavegms.network import WaveGMS
    from napari_wavegms.network.checkpoint import save_checkpoint

    torch.manual_seed(0)
    needs_decoder = save_checkpoint(tmp_path / "small.safetensors", WaveGMS(taef2, image_size=64), {},
                                    embed_decoder=False)

    empty = tmp_path / "nothing"
    empty.mkdir()
    monkeypatch.setenv("WAVEGMS_WEIGHTS_DIR", str(empty))
    monkeypatch.setenv("WAVEGMS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WAVEGMS_OFFLINE", "1")
    monkeypatch.setattr(loaded_models, "_CACHE", {})
    viewer = make_napari_viewer()
    viewer.add_image(busi_image, name="us")
    widget = open_widget(viewer, "Segment")
    widget.model.add_file(needs_decoder)
    job = widget.run()
    wait_done(qtbot, job)
    assert job.status == "failed"
    [note] = notifications
    first_line = note.message.splitlines()[0]
    assert note.message == first_line and len(first_line) <= _worker.MESSAGE_CHARS
    assert first_line.startswith("Put ") and "WAVEGMS_WEIGHTS_DIR" in first_line
    assert not first_line.startswith("HTTPSConnectionPool")
    assert len(note.details) > len(first_line) and "WAVEGMS_WEIGHTS_DIR" in note.details
    [(button, callback)] = note.actions
    box = callback(None)  # what the Details button opens
    assert button == "Details" and note.details in box.informativeText()
    box.close()


def test_every_result_shows_its_confidence_and_a_blank_image_says_so(
    make_napari_viewer, qtbot, busi_image, monkeypatch
):
    from napari_wavegms.gui import commands as _commands
    from napari_wavegms.inference.segmenter import REVIEW_BELOW

    viewer = make_napari_viewer()
    widget = open_widget(viewer, "Segment")
    for kind in ("endoscopy", "ultrasound"):  # a newly chosen model brings its card's test-time flips
        widget.tta.value = not card_tta(suggest_model(kind))
        widget.model.set_model(suggest_model(kind))
        assert widget.tta.value is card_tta(suggest_model(kind))
    widget.tta.value = False
    viewer.add_image(busi_image, name="scan")
    assert widget.image.value.name == "scan"
    wait_done(qtbot, widget.run())
    info = viewer.layers["scan_wavegms"].metadata["wavegms"]
    assert 0.0 <= info["confidence"] <= 1.0 and info["review"] == (info["confidence"] < REVIEW_BELOW)
    assert info["tta"] is False and "note" not in info
    assert f"confidence {info['confidence']:.2f}" in widget.status.value
    assert ("review this mask" in widget.status.value) == info["review"]

    widget.tta.value = True  # best quality: remembered, and the menu command below uses it too
    wait_done(qtbot, widget.run())
    assert viewer.layers["scan_wavegms"].metadata["wavegms"]["tta"] is True

    messages: list[str] = []
    monkeypatch.setattr(_commands, "show_info", messages.append)
    blank = viewer.add_image(np.full((100, 120), 128, np.uint8), name="blank")
    viewer.layers.selection.active = blank
    wait_done(qtbot, _commands.segment_selected(viewer))
    result = viewer.layers["blank_wavegms"]
    assert result.data.shape == (100, 120) and not result.data.any()
    assert result.metadata["wavegms"]["tta"] is True and "blank" in result.metadata["wavegms"]["note"]
    assert len(messages) == 1 and "confidence 1.00" in messages[0] and "blank" in messages[0]


def test_clean_up_under_advanced_reaches_the_mask_in_the_layers_units(
    make_napari_viewer, qtbot, random_checkpoint, busi_image, monkeypatch
):
    """The Advanced clean-up reaches the mask, in the layer's units, from the widget and from the menu
    command (which reads the widget's saved settings); ticking "the model's clean-up" undoes it."""
    from skimage.measure import label

    from napari_wavegms.gui import commands as _commands
    from napari_wavegms.inference.postprocess import keep_largest, remove_small

    viewer = make_napari_viewer()
    image = viewer.add_image(busi_image, name="scan", scale=(0.2, 0.2), units=("mm", "mm"))
    widget = open_widget(viewer, "Segment")
    widget.model.add_file(random_checkpoint)
    widget.image.value = image
    assert widget.advanced.isAncestorOf(widget.keep_largest.native)
    assert widget.cleanup_default.value and not widget.keep_largest.enabled  # the model's choice by default
    assert widget.cleanup_note.value == "model's clean-up: none"  # a checkpoint without a model card
    assert widget.min_area_label.value == "smallest object (mm²)"
    widget.threshold.value = 0.45  # the untrained model: many objects of many sizes
    wait_done(qtbot, widget.run())
    layer = viewer.layers["scan_wavegms"]
    raw = layer.data.copy()
    assert label(raw, connectivity=2).max() >= 3 and layer.metadata["wavegms"]["postprocess"] == "none"

    widget.cleanup_default.value = False
    assert widget.keep_largest.enabled
    widget.keep_largest.value = True
    wait_done(qtbot, widget.run())
    np.testing.assert_array_equal(layer.data, keep_largest(raw))
    assert layer.metadata["wavegms"]["postprocess"] == "largest object only"

    # 2 mm² at 0.2 mm pixels (0.04 mm² each) is 50 pixels
    widget.keep_largest.value = False
    widget.min_area.value = 2.0
    wait_done(qtbot, widget.run())
    np.testing.assert_array_equal(layer.data, remove_small(raw, 50))
    assert 0 < label(layer.data, connectivity=2).max() < label(raw, connectivity=2).max()
    assert "2 units²" in layer.metadata["wavegms"]["postprocess"]
    by_widget = layer.data.copy()
    viewer.layers.remove(layer)
    viewer.layers.selection.active = image
    monkeypatch.setattr(_commands, "show_info", lambda message: None)
    wait_done(qtbot, _commands.segment_selected(viewer))  # the menu command cleans up as the widget did
    layer = viewer.layers["scan_wavegms"]
    np.testing.assert_array_equal(layer.data, by_widget)
    assert "2 units²" in layer.metadata["wavegms"]["postprocess"]

    widget.cleanup_default.value = True  # back to the model's choice: the user's settings no longer count
    wait_done(qtbot, widget.run())
    np.testing.assert_array_equal(layer.data, raw)


def test_a_lesion_free_scan_gets_an_empty_mask_unless_the_check_is_unticked(make_napari_viewer, qtbot,
                                                                             monkeypatch):
    """The ultrasound model's presence gate empties the mask of a lesion-free BUSI test scan, and the
    status line and the layer's metadata say "no lesion found" rather than asking for a review; unticking
    "empty mask if no lesion" keeps what the model drew, in the widget and in the menu command; the box
    is greyed out for a model without a gate."""
    from napari_wavegms.gui import commands as _commands
    from napari_wavegms.zoo.registry import builtin_models

    viewer = make_napari_viewer()
    widget = open_widget(viewer, "Segment")
    viewer.add_image(read_image(BUSI / "images" / "normal_90.png"), name="normal")
    ultrasound = suggest_model("ultrasound")
    assert widget.model.model == ultrasound and widget.presence.enabled and widget.presence.value
    wait_done(qtbot, widget.run())
    result = viewer.layers["normal_wavegms"]
    info = result.metadata["wavegms"]
    assert not np.asarray(result.data).any() and info["presence_check"]
    assert info["lesion"] == "no" and not info["review"]  # the gate's answer is trusted: nothing to review
    assert "no lesion found" in widget.status.value and "review" not in widget.status.value
    widget.presence.value = False
    wait_done(qtbot, widget.run())
    result = viewer.layers["normal_wavegms"]
    assert np.asarray(result.data).any() and not result.metadata["wavegms"]["presence_check"]
    assert "lesion" not in result.metadata["wavegms"] and "no lesion found" not in widget.status.value
    viewer.layers.remove(result)
    viewer.layers.selection.active = viewer.layers["normal"]
    monkeypatch.setattr(_commands, "show_info", lambda message: None)
    wait_done(qtbot, _commands.segment_selected(viewer))  # the menu command follows the unticked box
    assert np.asarray(viewer.layers["normal_wavegms"].data).any()
    pick_model_by_hand(widget.model, next(n for n in builtin_models() if "kvasir-seg" in n))
    assert not widget.presence.enabled


def paint_a_stroke(layer) -> np.ndarray:
    """What a user's brush does on a Labels layer: a stroke of label 1 over background (or of the eraser
    over the mask, if the mask has no background); returns the layer's data after it."""
    data = np.asarray(layer.data)
    background = np.argwhere(data == 0)
    y, x = background[len(background) // 2] if len(background) else np.argwhere(data > 0)[0]
    layer.brush_size = 15
    layer.paint((int(y), int(x)), 1 if len(background) else 0)
    return np.asarray(layer.data).copy()


def test_a_hand_corrected_mask_is_never_overwritten(make_napari_viewer, qtbot, random_checkpoint, monkeypatch):
    """malignant_5 segmented, its mask painted on by hand, then segmented again from the widget and from
    the menu command: the edited layer keeps the user's pixels and a new numbered layer takes the result;
    a result layer nobody edited is updated in place, as before."""
    from napari.layers import Labels

    from napari_wavegms.gui import commands as _commands

    messages: list[str] = []
    monkeypatch.setattr(_commands, "show_info", messages.append)
    scan = read_image(BUSI / "images" / "malignant_5.png")
    viewer = make_napari_viewer()
    image = viewer.add_image(scan, name="malignant_5")
    widget = open_widget(viewer, "Segment")
    widget.model.add_file(random_checkpoint)
    wait_done(qtbot, widget.run())
    mask = viewer.layers["malignant_5_wavegms"]
    model_mask = mask.data.copy()

    widget.threshold.value = 0.3  # not edited: the same layer is updated
    wait_done(qtbot, widget.run())
    assert viewer.layers["malignant_5_wavegms"] is mask and len(viewer.layers) == 2
    assert not np.array_equal(mask.data, model_mask)

    widget.threshold.value = 0.5
    edited = paint_a_stroke(mask)
    assert not np.array_equal(edited, model_mask)
    wait_done(qtbot, widget.run())
    assert [layer.name for layer in viewer.layers] == ["malignant_5", "malignant_5_wavegms",
                                                       "malignant_5_wavegms [1]"]
    np.testing.assert_array_equal(mask.data, edited)  # the user's pixels, untouched
    rerun = viewer.layers["malignant_5_wavegms [1]"]
    assert isinstance(rerun, Labels)
    np.testing.assert_array_equal(rerun.data, model_mask)
    assert widget.status.value.startswith("done: malignant_5_wavegms [1]")
    assert "malignant_5_wavegms kept" in widget.status.value

    widget.threshold.value = 0.3  # the new layer is the plugin's own: reruns update it
    wait_done(qtbot, widget.run())
    assert len(viewer.layers) == 3 and viewer.layers["malignant_5_wavegms [1]"] is rerun
    np.testing.assert_array_equal(mask.data, edited)

    # the menu command: the unedited [1] is updated, then once painted on it is kept too
    viewer.layers.selection.active = image
    wait_done(qtbot, _commands.segment_selected(viewer))
    assert len(viewer.layers) == 3 and viewer.layers["malignant_5_wavegms [1]"] is rerun
    edited_rerun = paint_a_stroke(rerun)
    viewer.layers.selection.active = image
    wait_done(qtbot, _commands.segment_selected(viewer))
    assert [layer.name for layer in viewer.layers][-1] == "malignant_5_wavegms [2]"
    np.testing.assert_array_equal(rerun.data, edited_rerun)
    np.testing.assert_array_equal(mask.data, edited)
    assert "into malignant_5_wavegms [2]" in messages[-1]
    assert "malignant_5_wavegms, malignant_5_wavegms [1] kept" in messages[-1]


def test_a_tiny_crop_is_called_too_small_not_misread_colour(make_napari_viewer, random_checkpoint, monkeypatch):
    """An 8×8 crop of a BUSI scan has no colour axis to blame: the warning says it is too small to segment
    reliably and why; it is still segmented. A stack of slices three pixels wide still gets the colour hint."""
    monkeypatch.setenv("WAVEGMS_SYNC", "1")
    warnings_shown: list[str] = []
    monkeypatch.setattr("napari.utils.notifications.show_warning", warnings_shown.append)
    scan = read_image(BUSI / "images" / "malignant_5.png")
    viewer = make_napari_viewer()
    viewer.add_image(scan[200:208, 200:208], name="crop")
    widget = open_widget(viewer, "Segment")
    widget.model.add_file(random_checkpoint)
    job = widget.run()
    assert job.status == "done" and viewer.layers["crop_wavegms"].data.shape == (8, 8)
    [warning] = warnings_shown
    assert "crop is too small to segment reliably" in warning and "8×8 pixels" in warning
    assert "at least 32×32" in warning and "enlarged" in warning
    assert "colour" not in warning and "misread" not in warning

    warnings_shown.clear()  # a big enough scan: no warning at all
    viewer.add_image(scan[:64, :64], name="corner")
    widget.image.value = viewer.layers["corner"]
    assert widget.run().status == "done" and warnings_shown == []


def test_loading_is_said_only_when_a_model_really_loads(make_napari_viewer, qtbot, random_checkpoint,
                                                        monkeypatch):
    """Toggling test-time flips or the presence check, or going back to a model used before, loads
    nothing and says nothing about loading; a model not loaded yet in this session does. The flips
    still take effect: the mask is the one a freshly loaded model with flips gives."""
    from napari_wavegms.gui import loaded_models
    from napari_wavegms.inference.segmenter import Segmenter
    from napari_wavegms.zoo.registry import builtin_models

    monkeypatch.setattr(loaded_models, "_CACHE", {})
    scan = read_image(BUSI / "images" / "malignant_5.png")[::4, ::4]
    viewer = make_napari_viewer()
    viewer.add_image(scan, name="scan")
    widget = open_widget(viewer, "Segment")
    widget.model.add_file(random_checkpoint)
    widget.tta.value = False
    statuses: list[str] = []
    original = widget._event

    def record(event):
        original(event)
        statuses.append(widget.status.value)

    widget._event = record

    def run_says_loading() -> bool:
        statuses.clear()
        wait_done(qtbot, widget.run())
        assert widget.status.value.startswith("done: scan_wavegms"), widget.status.value
        return loaded_models.LOADING in statuses

    assert run_says_loading()  # the first run loads the model
    widget.tta.value = True
    assert not run_says_loading()
    assert viewer.layers["scan_wavegms"].metadata["wavegms"]["tta"] is True
    flipped = Segmenter(random_checkpoint, device="cpu", tta=True)(scan, threshold=0.5)
    np.testing.assert_array_equal(viewer.layers["scan_wavegms"].data, flipped)
    widget.tta.value = False
    assert not run_says_loading()
    assert viewer.layers["scan_wavegms"].metadata["wavegms"]["tta"] is False

    ultrasound = next(n for n in builtin_models() if "busi" in n)
    pick_model_by_hand(widget.model, ultrasound)  # another model: loaded once
    assert run_says_loading()
    widget.presence.value = not widget.presence.value
    assert not run_says_loading()
    widget.model.add_file(random_checkpoint)  # back to the first model: still loaded
    assert not run_says_loading()


def test_the_model_is_loaded_while_the_user_opens_an_image(make_napari_viewer, qtbot, random_checkpoint,
                                                           monkeypatch):
    """Once the Segment dock is on screen, the model it will use is loaded in a background thread while
    the GUI keeps running; the first Run then reuses it and does not say it is loading. Closing the dock
    stops what is not started; a hidden viewer (scripts, other tests) loads nothing ahead."""
    from qtpy.QtCore import QTimer

    from napari_wavegms.gui import loaded_models
    from napari_wavegms.gui import settings as _settings

    monkeypatch.delenv(loaded_models.WARMUP_ENV, raising=False)
    monkeypatch.setattr(loaded_models, "_CACHE", {})
    _settings.save("segment", {"model": str(random_checkpoint), "model_by_hand": True})

    hidden = open_widget(make_napari_viewer(), "Segment")
    assert not hidden._warming and hidden.warmer.idle.is_set()

    viewer = make_napari_viewer(show=True)
    ticks: list[int] = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start()
    widget = open_widget(viewer, "Segment")
    qtbot.waitUntil(lambda: widget._warming, timeout=10_000)  # the dock appeared
    qtbot.waitUntil(lambda: loaded_models.model_loaded(str(random_checkpoint), widget.device.value), timeout=60_000)
    qtbot.waitUntil(widget.warmer.idle.is_set, timeout=10_000)
    timer.stop()
    assert ticks  # the GUI thread ran while the model loaded

    viewer.add_image(read_image(BUSI / "images" / "malignant_5.png")[::2, ::2], name="scan")
    statuses: list[str] = []
    original = widget._event
    widget._event = lambda event: (original(event), statuses.append(widget.status.value))
    wait_done(qtbot, widget.run())
    assert "scan_wavegms" in viewer.layers and loaded_models.LOADING not in statuses
    assert not hidden._warming and hidden.warmer.idle.is_set()  # events ran: still nothing for a hidden viewer

    widget.native.close()
    widget.native.deleteLater()
    qtbot.waitUntil(lambda: widget.warmer.stopped, timeout=10_000)
    widget.warmer.want(None, "cpu", False, True)  # a stopped warmer takes no more work
    assert widget.warmer.idle.is_set()


def test_the_status_line_gives_each_of_the_three_answers_and_the_flips_box_its_cost():
    """A lesion-free answer is said as such, with no confidence to second-guess; an unsure one asks for a
    review even when the mask looks sure; without a gate the confidence rules as before. The flips box
    says what flips cost and what they gave the chosen model on validation."""
    from napari_wavegms.gui.widgets.results import describe_confidence
    from napari_wavegms.gui.widgets.segment import flips_tooltip

    assert describe_confidence({"confidence": 0.41, "review": False, "lesion": "no"}) == "no lesion found (empty mask)"
    unsure = describe_confidence({"confidence": 0.97, "review": True, "lesion": "unsure"})
    assert unsure.startswith("confidence 0.97") and "may hold no lesion: review this mask" in unsure
    assert describe_confidence({"confidence": 0.97, "review": False, "lesion": "yes"}) == "confidence 0.97"
    assert describe_confidence({"confidence": 0.5, "review": True}) == "confidence 0.50, review this mask"
    for kind in ("ultrasound", "endoscopy"):
        tip = flips_tooltip(suggest_model(kind))
        assert "four model passes, 3–4× the time" in tip and "validation Dice" in tip
        assert ("on by default" if card_tta(suggest_model(kind)) else "off by default") in tip
