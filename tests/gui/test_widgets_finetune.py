"""Teach it your site, in a real napari viewer under Xvfb: keep corrected masks as training examples
(Segment and Batch), fine-tune from them in the Train widget, and find the new model in Segment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import BUSI, SHARED
from napari_wavegms.core.io import read_image, read_mask
from napari_wavegms.training.finetune import FinetuneResult

pytestmark = pytest.mark.gui

PLUGIN = "napari-wavegms"
START = "breast-ultrasound-busi-busbra"
BUSBRA = SHARED / "data" / "bus-bra-256"


def shown_(widget) -> bool:
    """Whether the widget is meant to be seen (not hidden): the test viewer itself is not on screen."""
    return not widget.native.isHidden()


def open_widget(viewer, name: str):
    return viewer.window.add_plugin_dock_widget(PLUGIN, name)[1]


@pytest.fixture
def shown(monkeypatch):
    """Info and error notifications, as the widgets send them."""
    said: dict[str, list[str]] = {"info": [], "error": []}
    monkeypatch.setattr("napari.utils.notifications.show_info", said["info"].append)
    monkeypatch.setattr("napari.utils.notifications.show_error", said["error"].append)
    return said


def test_a_corrected_segment_result_is_kept_as_a_training_pair(make_napari_viewer, qtbot, tmp_path, shown):
    viewer = make_napari_viewer()
    image = read_image(BUSI / "images" / "benign_3.png")
    viewer.add_image(image, name="benign_3")
    segment = open_widget(viewer, "Segment")
    segment.model.set_model(START, by_hand=True)
    segment.tta.value = False
    job = segment.run()
    qtbot.waitUntil(lambda: not job.running, timeout=120_000)
    labels = viewer.layers["benign_3_wavegms"]
    drawn = np.asarray(labels.data).copy()
    corrected = drawn.copy()
    corrected[:40, :40] = 1  # painted by hand
    labels.data = corrected

    folder = tmp_path / "corrections"
    folder.mkdir()
    assert segment.corrections.count.value == "choose a folder"
    segment.corrections.folder.value = folder
    assert segment.corrections.count.value == "0 examples kept"
    viewer.layers.selection.active = labels
    example = segment.corrections.keep_selected()
    assert example is not None and not shown["error"], shown["error"]
    assert segment.corrections.count.value == "1 example kept"
    assert np.array_equal(read_image(folder / "images" / "benign_3.png"), image)
    assert np.array_equal(read_mask(folder / "masks" / "benign_3.png"), corrected > 0)
    record = json.loads((folder / "records" / "benign_3.json").read_text())
    assert record["model"] == START and record["source"] == "benign_3"
    assert 0 < record["changed_dice"] < 1  # the model's mask and the corrected one differ, by this much
    assert "kept benign_3 as training example 1" in shown["info"][-1]
    # the folder is remembered: the next Segment, Batch and Train widgets start with it
    assert open_widget(make_napari_viewer(), "Batch").corrections.folder.value == folder
    # a layer that is not a mask is refused with the reason
    viewer.layers.selection.active = viewer.layers["benign_3"]
    assert segment.corrections.keep_selected() is None and "select the mask layer" in shown["error"][-1]


def test_a_batch_result_layer_is_kept_with_its_image_file_and_the_mask_the_model_wrote(
        make_napari_viewer, qtbot, tmp_path, shown):
    source = tmp_path / "in"
    source.mkdir()
    (source / "benign_3.png").symlink_to(BUSI / "images" / "benign_3.png")
    viewer = make_napari_viewer()
    batch = open_widget(viewer, "Batch")
    batch.input.value = source
    batch.output.value = tmp_path / "out"
    batch.model.set_model(START, by_hand=True)
    batch.tta.value = "off"
    job = batch.run()
    qtbot.waitUntil(lambda: not job.running, timeout=120_000)
    _, labels = batch.open_results()
    assert labels.metadata["wavegms"]["image_file"] == str(source / "benign_3.png")
    labels.data = np.zeros_like(labels.data)  # the user erased a false lesion
    viewer.layers.selection.active = labels
    batch.corrections.folder.value = tmp_path / "kept"
    (tmp_path / "kept").mkdir()
    example = batch.corrections.keep_selected()
    assert example is not None and batch.corrections.count.value == "1 example kept"
    assert example.record["model"] == START and example.record["source"] == str(source / "benign_3.png")
    drawn = read_mask(tmp_path / "out" / "benign_3.png")
    assert example.record["changed_dice"] == (1.0 if not drawn.any() else 0.0)
    assert not read_mask(example.mask).any()


def test_fine_tune_from_corrections_and_the_offer_follows_the_comparison(make_napari_viewer, qtbot, tmp_path):
    folder = tmp_path / "corrections"
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True)
        for name in (BUSBRA / "splits" / "fold2.txt").read_text().split()[:6]:
            (folder / sub / f"{name}.png").symlink_to(BUSBRA / sub / f"{name}.png")
    (folder / "records").mkdir()
    (folder / "records" / "a.json").write_text(json.dumps({"name": "a", "model": START}))
    viewer = make_napari_viewer()
    train = open_widget(viewer, "Train")
    train.source.value = "my corrections (fine-tune)"
    assert shown_(train.corrections) and shown_(train.minutes) and not shown_(train.epochs)
    assert train.minutes.value == 10 and train.run_button.text == "Fine-tune"
    train.corrections.value = folder
    qtbot.waitUntil(lambda: train.pairs.value.startswith("pairs: 6 matched"), timeout=60_000)
    qtbot.waitUntil(lambda: "about" in train.estimate.value, timeout=120_000)
    assert "about 10 min on cpu (" in train.estimate.value  # the budget, shown before Run
    assert train.init.model == START  # the model that drew the corrected masks
    train.minutes.value = 0.5
    train.device.value = "cpu"
    job = train.run()
    qtbot.waitUntil(lambda: not job.running, timeout=300_000)
    result = train.result
    assert job.status == "done" and isinstance(result, FinetuneResult)
    assert "held-out Dice on 4 pairs: starting model" in train.offer.verdict.value
    assert shown_(train.offer) and not result.offered and not shown_(train.offer.add_button)  # 6 pairs: too few
    assert Path(result.model).parent.parent == folder / "fine-tunes"
    assert "nothing to add" in train.status.value


def test_a_better_model_is_kept_under_its_name_remembered_and_chosen_for_its_kind_on_request(
        make_napari_viewer, tmp_path, shown):
    from napari_wavegms.network.checkpoint import save_checkpoint
    from napari_wavegms.zoo.registry import load_model, model_card, suggest_model

    # a fine-tune's output: weights and the card the fine-tune writes (the start's kind, flips, clean-up)
    model, _, _ = load_model(START, device="cpu")
    out = tmp_path / "run"
    weights = save_checkpoint(out / "model.safetensors", model, {"note": "fine-tuned"})
    card = {"kind": "ultrasound", "images": "gray", "tta": dict(model_card(START).record["tta"])}
    weights.with_suffix(".json").write_text(json.dumps(card))

    viewer = make_napari_viewer()
    train = open_widget(viewer, "Train")
    offer = train.offer
    offer.show(FinetuneResult(out, weights, START, start_dice=0.80, dice=0.78, held_out=["a", "b"]))
    assert "not better, keep using the starting model" in offer.verdict.value
    assert not shown_(offer.add_button) and not shown_(offer.use_for_kind)  # nothing is offered

    offer.show(FinetuneResult(out, weights, START, start_dice=0.70, dice=0.78, held_out=["a", "b"], n_train=18))
    assert shown_(offer.add_button) and offer.model_name.value == "ultrasound — my site"
    offer.model_name.value = "ultrasound — my hospital"
    assert offer.add() == "ultrasound — my hospital"
    assert suggest_model("ultrasound") == START  # not chosen automatically until the user says so
    offer.use_for_kind.value = True
    assert suggest_model("ultrasound") == "ultrasound — my hospital"

    # a new viewer and widget (a later napari session): the model is listed, and chosen for ultrasound
    viewer2 = make_napari_viewer()
    segment = open_widget(viewer2, "Segment")
    assert "ultrasound — my hospital" in segment.model.combo.choices
    viewer2.add_image(read_image(BUSI / "images" / "benign_3.png"), name="benign_3")
    assert segment.model.model == "ultrasound — my hospital"
    assert "ultrasound — my hospital for ultrasound" in segment.model.combo.tooltip
    assert shown_(segment.my_models) and "my 'ultrasound — my hospital' for ultrasound" in segment.my_models.text.value
    # undo, in the Train widget or later in Segment: back to the built-in model for ultrasound
    offer.use_for_kind.value = False
    assert suggest_model("ultrasound") == START and not shown_(segment.my_models)
    offer.use_for_kind.value = True
    assert shown_(segment.my_models)
    segment.my_models.use_builtin()
    assert suggest_model("ultrasound") == START and not shown_(segment.my_models)
    # the same name twice is refused with the reason
    offer.show(FinetuneResult(out, weights, START, start_dice=0.70, dice=0.78, held_out=["a", "b"], n_train=18))
    offer.model_name.value = "ultrasound — my hospital"
    assert offer.add() is None and "exists already" in shown["error"][-1]
