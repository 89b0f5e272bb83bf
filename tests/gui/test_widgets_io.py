"""Manifest, writer and sample data, as napari uses them."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import KVASIR, REPO
from napari_wavegms.core.io import read_image, read_mask
from napari_wavegms.zoo.registry import builtin_models, suggest_model

STEM = "cju16jgnyzp970878melv7r25"


def test_extras_use_napari_all_and_pyqt6_never_pyqt5():
    """napari's default binding is PyQt6 and 0.9 warns about PyQt5 (NAPARI.md): neither extra names PyQt5,
    and the system libraries script installs what Qt 6 needs to open a window under Xvfb."""
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(dep.replace(" ", "").startswith("napari[all]") for dep in extras["all"])
    assert any(dep.lower().startswith("pyqt6") for dep in extras["testing"])
    for name in ("all", "testing"):
        assert not any("pyqt5" in dep.lower() for dep in extras[name]), extras[name]
    deps = (REPO / "scripts" / "system-deps.sh").read_text()
    for package in ("xvfb", "libegl1", "libgl1", "libfontconfig1", "libdbus-1-3", "libxcb-cursor0"):
        assert f" {package}" in deps or f"({package}" in deps
    assert "pyqt5" not in (REPO / "README.md").read_text().lower()


@pytest.mark.gui
def test_gui_tests_run_on_pyqt6(make_napari_viewer):
    import qtpy

    make_napari_viewer()
    assert qtpy.API_NAME == "PyQt6"


def test_manifest_declares_widgets_menus_sample_and_writer():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(REPO / "napari.yaml")
    manifest.validate_imports()  # every python_name resolves
    contrib = manifest.contributions
    assert [w.display_name for w in contrib.widgets] == ["Segment", "Train", "Batch"]
    # one entry, with a name that says what it does (the widget itself is under Plugins ▸ Wave-GMS)
    assert [m.command for m in contrib.menus["napari/layers/segment"]] == ["napari-wavegms.segment_selected"]
    titles = {c.id: c.title for c in contrib.commands}
    assert titles["napari-wavegms.segment_selected"] == "Segment selected image"
    assert [m.command for m in contrib.menus["napari/file/io_utilities"]] == [
        "napari-wavegms.batch_widget", "napari-wavegms.save_mask"]
    assert [s.key for s in contrib.sample_data] == ["kvasir_polyp"]
    assert contrib.writers[0].layer_types == ["labels"]


@pytest.mark.gui
def test_sample_data_opens_image_and_ground_truth(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-wavegms", "kvasir_polyp")
    image, truth = viewer.layers
    assert image.rgb and image.data.shape == (529, 560, 3)
    np.testing.assert_array_equal(image.data, read_image(KVASIR / "images" / f"{STEM}.jpg"))
    np.testing.assert_array_equal(truth.data > 0, read_mask(KVASIR / "masks" / f"{STEM}.png"))
    assert "Kvasir-SEG" in image.metadata["citation"] and "Jha" in truth.metadata["citation"]


@pytest.mark.gui
def test_sample_ground_truth_and_a_segment_result_have_different_colours(make_napari_viewer, random_checkpoint,
                                                                          monkeypatch):
    """The sample's ground truth is green; the mask Segment draws on the sample keeps napari's own
    label colour, so the two can be told apart where they overlap and where they do not."""
    monkeypatch.setenv("WAVEGMS_SYNC", "1")
    viewer = make_napari_viewer()
    viewer.open_sample("napari-wavegms", "kvasir_polyp")
    image, truth = viewer.layers
    widget = viewer.window.add_plugin_dock_widget("napari-wavegms", "Segment")[1]
    widget.model.add_file(random_checkpoint)
    widget.image.value = image
    assert widget.run().status == "done"
    prediction = viewer.layers[f"{image.name}_wavegms"]
    truth_rgb, predicted_rgb = np.asarray(truth.get_color(1))[:3], np.asarray(prediction.get_color(1))[:3]
    assert np.linalg.norm(truth_rgb - predicted_rgb) > 0.5, (truth_rgb, predicted_rgb)
    assert truth_rgb[1] > 0.6 and truth_rgb[1] > 2 * max(truth_rgb[0], truth_rgb[2])  # green
    assert truth.get_color(0) is None or truth.get_color(0)[3] == 0  # the background stays transparent


def test_sample_licence_wording_matches_readme_and_model_card():
    """The sample, the README's data credits and the polyp model's card say the same: research and
    education are free, commercial use needs permission (not a bare "CC BY 4.0")."""
    from npe2 import PluginManifest

    from napari_wavegms.zoo.samples import KVASIR_CITATION, KVASIR_LICENCE

    assert KVASIR_LICENCE in KVASIR_CITATION
    assert KVASIR_LICENCE in " ".join((REPO / "README.md").read_text().split())
    card = builtin_models()[suggest_model("endoscopy")].card.record
    assert "research and education" in card["data"]["licence"] and "commercial use needs" in card["data"]["licence"]
    sample = PluginManifest.from_file(REPO / "napari.yaml").contributions.sample_data[0]
    assert "research and education" in sample.display_name and "CC BY" not in sample.display_name


def test_sample_mask_from_the_original_jpeg_is_verified_by_its_pixels(tmp_path, monkeypatch):
    """Where only the publisher's JPEG mask is at hand (as after a download), its pixels are checked."""
    import imageio.v3 as iio

    from napari_wavegms.zoo.downloads import HashMismatchError
    from napari_wavegms.zoo.samples import load_sample

    root = tmp_path / "data" / "kvasir-seg"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    shutil.copy(KVASIR / "images" / f"{STEM}.jpg", root / "images")
    truth = read_mask(KVASIR / "masks" / f"{STEM}.png")
    rgb = np.repeat((truth * 255).astype(np.uint8)[..., None], 3, axis=-1)
    iio.imwrite(root / "masks" / f"{STEM}.jpg", rgb, extension=".jpg", quality=90)
    monkeypatch.setenv("WAVEGMS_DATA_DIR", str(tmp_path / "data"))
    _image, mask, _ = load_sample("kvasir_polyp")
    np.testing.assert_array_equal(mask, truth)

    rgb[200:260, 200:260] = 255 - rgb[200:260, 200:260]  # a different mask
    iio.imwrite(root / "masks" / f"{STEM}.jpg", rgb, extension=".jpg", quality=90)
    with pytest.raises(HashMismatchError, match="pixel sha256"):
        load_sample("kvasir_polyp")


@pytest.mark.gui
def test_writer_saves_labels_as_png_and_tif(make_napari_viewer, tmp_path: Path):
    viewer = make_napari_viewer()
    mask = np.zeros((40, 50), np.uint8)
    mask[10:20, 5:30] = 1
    viewer.add_labels(mask, name="m")
    written = viewer.layers.save(str(tmp_path / "m.png"), plugin="napari-wavegms")
    assert written == [str(tmp_path / "m.png")]
    stored = read_image(tmp_path / "m.png")
    assert set(np.unique(stored)) == {0, 255}
    np.testing.assert_array_equal(stored > 0, mask > 0)

    stack = np.zeros((3, 40, 50), np.uint8)
    stack[1, 5:9, 5:9] = 2
    stack[2, 20:30, 20:30] = 7
    viewer.add_labels(stack, name="s")
    viewer.layers.selection = {viewer.layers["s"]}
    viewer.layers.save(str(tmp_path / "s.tif"), selected=True, plugin="napari-wavegms")
    import tifffile

    np.testing.assert_array_equal(tifffile.imread(tmp_path / "s.tif"), stack)  # label ids kept

    from napari_wavegms.gui.writer import write_labels

    with pytest.raises(ValueError, match=r"save it as \.tif"):
        write_labels(str(tmp_path / "s.png"), stack, {})
    assert not (tmp_path / "s.png").exists()


@pytest.mark.gui
def test_a_mask_saves_as_0_255_png_by_default_and_the_mask_writer_is_offered(make_napari_viewer, tmp_path: Path,
                                                                            monkeypatch):
    """napari picks a writer by the file's extension alone (npe2 ``get_writer``: the longest matching
    extension, ties to the first registered, which is napari's own; layer metadata is never asked). So a
    mask saved as .png, with no plugin named, gets the Wave-GMS writer (napari's Labels writer has no .png)
    and a 0/255 PNG; .tif stays napari's 0/1 uint32. The mask writer is in the Save dialog under a name that
    says what it writes, and File ▸ IO Utilities ▸ Save selected mask writes 0/255 directly."""
    import tifffile
    from napari._app_model import get_app_model
    from napari.plugins._npe2 import file_extensions_string_for_layers

    from conftest import BUSI
    from napari_wavegms.gui import commands as _commands

    truth = read_mask(BUSI / "masks" / "malignant_5.png").astype(np.uint8)
    viewer = make_napari_viewer()
    layer = viewer.add_labels(truth, name="malignant_5_wavegms", metadata={"wavegms": {"model": "x"}})
    viewer.layers.selection = {layer}

    assert viewer.layers.save(str(tmp_path / "mask.png"), selected=True) == [str(tmp_path / "mask.png")]
    stored = read_image(tmp_path / "mask.png")
    assert stored.dtype == np.uint8 and set(np.unique(stored)) == {0, 255}
    np.testing.assert_array_equal(stored > 0, truth > 0)

    viewer.layers.save(str(tmp_path / "napari.tif"), selected=True)  # napari's own writer comes first here
    assert set(np.unique(tifffile.imread(tmp_path / "napari.tif"))) == {0, 1}

    filters, writers = file_extensions_string_for_layers([layer])
    offered = dict(zip(filters.split(";;"), (w.command for w in writers), strict=True))
    assert offered["Wave-GMS mask, 0/255 PNG or TIFF (*.png *.tif *.tiff)"] == "napari-wavegms.write_labels"

    monkeypatch.setattr(_commands, "ask_save_path", lambda viewer, suggested: str(tmp_path / suggested))
    monkeypatch.setattr(_commands, "show_info", lambda message: None)
    viewer.layers.selection.active = layer
    written = get_app_model().commands.execute_command("napari-wavegms.save_mask").result()
    assert written == [str(tmp_path / "malignant_5_wavegms.png")]
    assert set(np.unique(read_image(tmp_path / "malignant_5_wavegms.png"))) == {0, 255}
