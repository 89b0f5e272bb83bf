"""Honest about images of no kind the built-in models know, and about doubtful model choices: the open-set
check, the router's doubts, and what a folder run and ``wavegms-predict`` make of them."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from conftest import BUSI, KVASIR, SHARED
from napari_wavegms import cli
from napari_wavegms.core.io import read_image
from napari_wavegms.inference import segmenter as segmenter_module
from napari_wavegms.inference.modality import KINDS, folder_prior
from napari_wavegms.inference.routing import UNKNOWN, FolderRouter, choose_model
from napari_wavegms.inference.unknown_kind import check
from napari_wavegms.zoo.registry import suggest_model

ISIC = SHARED / "data" / "isic2017-256"
BUSBRA = SHARED / "data" / "bus-bra-256"
#: Photos that ship with scikit-image (no download): a person, a drink, a grey photographer, a rocket.
PHOTOS = ("astronaut", "coffee", "camera", "rocket")
#: An ISIC 2017 validation image of pink, evenly lit skin that the classifier alone takes for endoscopy.
AMBIGUOUS_SKIN = ISIC / "images" / "ISIC_0014979.jpg"
POLYP = KVASIR / "images" / "cju16jgnyzp970878melv7r25.jpg"


def held_out(folder: Path, split: str, suffix: str, n: int = 4) -> list[Path]:
    names = (folder / "splits" / split).read_text().split()
    return [folder / "images" / f"{name}{suffix}" for name in names[:: max(1, len(names) // n)][:n]]


def photo(name: str) -> np.ndarray:
    return np.asarray(getattr(skimage.data, name)())


def rows(out: Path) -> dict[str, dict[str, str]]:
    (csv_path,) = out.glob("*.csv")
    with csv_path.open(newline="", encoding="utf-8") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


# ---------------------------------------------------------------- the open-set check
def test_photos_are_no_kind_the_models_know_and_held_out_scans_are():
    for name in PHOTOS:
        found = check(photo(name))
        assert not found.known, (name, found.distance)
        assert "further from" in str(found) or "the models' own encoder finds it nearer" in str(found)
    for path in (held_out(BUSI, "gms_test.txt", ".png") + held_out(BUSBRA, "fold5.txt", ".png")
                 + held_out(KVASIR, "medico2020_val.txt", ".jpg") + held_out(ISIC, "val.txt", ".jpg")):
        found = check(read_image(path))
        assert found.known, (path.name, found.distance)


def test_an_unknown_image_gets_the_unknown_kind_the_nearest_model_and_a_doubt():
    choice = choose_model(photo("astronaut"))
    assert choice.unknown and choice.kind == UNKNOWN and not choice.exact
    assert choice.model is not None  # what a run uses if it segments it anyway
    assert choice.doubt.startswith("not a kind of image the built-in models know")
    assert choice.message.startswith("not a kind of image the built-in models know")
    assert choice.note.startswith("unknown: ") and "review: not a kind" in choice.note
    closed = choose_model(photo("astronaut"), open_set=False)
    assert closed.kind in KINDS and not closed.doubt  # today's closed-set answer, for comparison


# ---------------------------------------------------------------- routing never hides its doubt
def test_a_clear_image_in_its_own_kinds_folder_has_no_doubt():
    prior = folder_prior(np.array([[0.01, 0.01, 0.98]] * 10))
    for choice in (choose_model(read_image(BUSI / "images" / "benign_3.png")),
                   choose_model(read_image(held_out(ISIC, "val.txt", ".jpg")[1]), prior=prior)):
        assert not choice.doubt and "review" not in choice.note


def test_the_folder_overturning_an_image_or_an_image_against_its_folder_is_flagged():
    skin_folder = folder_prior(np.array([[0.01, 0.02, 0.97]] * 30))
    alone = choose_model(read_image(AMBIGUOUS_SKIN))  # its statistics say endoscopy, the encoder skin
    assert alone.unknown and "its statistics say endoscopy" in alone.reason
    overturned = choose_model(read_image(AMBIGUOUS_SKIN), prior=skin_folder)
    assert overturned.kind == "dermoscopy"
    assert "its folder's kinds overturned its own reading (endoscopy" in overturned.doubt
    against = choose_model(read_image(POLYP), prior=skin_folder)  # a clear polyp keeps its kind, flagged
    assert against.kind == "endoscopy" and "unlike most of its folder (dermoscopy" in against.doubt
    assert "review: " in against.note


def test_an_uncertain_kind_is_flagged_whether_or_not_the_folder_changed_it():
    from napari_wavegms.inference.modality import Modality
    from napari_wavegms.inference.routing import doubts

    unsure = Modality("endoscopy", "colour", 0.55, {}, {"ultrasound": 0.0, "endoscopy": 0.55, "dermoscopy": 0.45})
    assert doubts(unsure, None) == ["image kind uncertain (endoscopy 0.55)"]
    sure = Modality("endoscopy", "colour", 0.99, {}, {"ultrasound": 0.0, "endoscopy": 0.99, "dermoscopy": 0.01})
    assert doubts(sure, None) == []


def test_the_folder_prior_leaves_out_images_of_unknown_kinds(tmp_path):
    for name in PHOTOS:
        Image.fromarray(photo(name)).save(tmp_path / f"{name}.png")
    router = FolderRouter()
    files = sorted(tmp_path.iterdir())
    list(router.judge_folder(iter(files), len(files)))
    assert router.prior is None  # no image of a known kind: nothing to learn the folder's kinds from


# ---------------------------------------------------------------- folder runs and wavegms-predict
@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in PHOTOS[:3]:
        Image.fromarray(photo(name)).save(folder / f"{name}.png")
    return folder


@pytest.fixture
def model_passes(monkeypatch) -> list[int]:
    """Counts every model pass of every Segmenter (one entry per ``segment_many`` call)."""
    calls: list[int] = []
    original = segmenter_module.Segmenter.segment_many

    def counted(self, images, *args, **kwargs):
        calls.append(len(images))
        return original(self, images, *args, **kwargs)

    monkeypatch.setattr(segmenter_module.Segmenter, "segment_many", counted)
    return calls


def test_predict_on_photos_writes_kind_unknown_and_review_yes(tmp_path, photos, capsys):
    out = tmp_path / "out"
    assert cli.predict_main([str(photos), str(out), "--device", "cpu", "--quiet"]) == 0
    found = rows(out)
    assert set(found) == {f"{name}.png" for name in PHOTOS[:3]}
    for row in found.values():
        assert row["status"] == "done" and row["kind"] == "unknown" and row["review"] == "yes", row
        assert "not a kind of image the built-in models know" in row["model_choice"]
    assert "3 files of no kind the built-in models know: segmented anyway and flagged" in capsys.readouterr().err


@pytest.mark.parametrize("given_model", [False, True])
def test_skip_unknown_leaves_photos_out_without_a_model_pass(tmp_path, photos, model_passes, given_model,
                                                             random_checkpoint, capsys):
    scan = photos / "benign_3.png"
    scan.write_bytes((BUSI / "images" / "benign_3.png").read_bytes())
    out = tmp_path / "out"
    argv = [str(photos), str(out), "--device", "cpu", "--quiet", "--skip-unknown"]
    if given_model:
        argv += ["--model", str(random_checkpoint)]
    assert cli.predict_main(argv) == 0
    assert model_passes == [1]  # the scan alone
    found = rows(out)
    assert found["benign_3.png"]["status"] == "done" and found["benign_3.png"]["kind"] == "ultrasound"
    if not given_model:
        assert found["benign_3.png"]["model"] == suggest_model("ultrasound")
    for name in PHOTOS[:3]:
        row = found[f"{name}.png"]
        assert row["status"] == "skipped" and row["kind"] == "unknown" and row["review"] == "yes", row
        assert "left out" in row["error"] and not (out / f"{name}.png").exists()
    assert "3 files of no kind the built-in models know: left out" in capsys.readouterr().err


def test_a_given_model_still_says_the_kind_and_flags_an_unknown_one(tmp_path, photos, random_checkpoint):
    out = tmp_path / "out"
    assert cli.predict_main([str(photos), str(out), "--model", str(random_checkpoint), "--device", "cpu",
                             "--quiet"]) == 0
    for row in rows(out).values():
        assert row["kind"] == "unknown" and row["review"] == "yes" and row["model_choice"] == ""
        assert "segmented with the chosen model" in row["note"]
