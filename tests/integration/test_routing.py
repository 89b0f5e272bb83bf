"""Which model an image gets: the rules of napari_wavegms.inference.routing, which the batch engine, the
CLI and the widgets all follow."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import BUSI, KVASIR
from napari_wavegms.core.io import read_image
from napari_wavegms.core.progress import run_to_end
from napari_wavegms.inference.modality import KINDS
from napari_wavegms.inference.routing import (
    FolderRouter,
    ModelChoice,
    choice_for_image,
    choose_model,
    pick,
    users_model,
)
from napari_wavegms.zoo.registry import builtin_models, default_model, suggest_model

POLYP = KVASIR / "images" / "cju16jgnyzp970878melv7r25.jpg"
SCAN = BUSI / "images" / "benign_3.png"


def never() -> ModelChoice | None:
    raise AssertionError("the user's model was kept: no image is judged")


def test_the_users_model_always_wins(tmp_path):
    builtin = default_model()
    checkpoint = str(tmp_path / "mine.safetensors")
    assert users_model(checkpoint, by_hand=False) and users_model(builtin, by_hand=True)
    assert not users_model(builtin, by_hand=False) and not users_model(None, by_hand=True)
    assert pick(checkpoint, False, never) == (checkpoint, None)
    assert pick(builtin, True, never) == (builtin, None)


def test_otherwise_the_image_decides_and_an_image_that_cannot_be_judged_keeps_the_model():
    polyp = choose_model(read_image(POLYP))
    assert pick(default_model(), False, lambda: polyp) == (suggest_model("endoscopy"), polyp)
    assert pick(default_model(), False, lambda: None) == (default_model(), None)
    nothing_installed = ModelChoice(None, "endoscopy", "colour", False)
    assert pick(default_model(), False, lambda: nothing_installed) == (default_model(), nothing_installed)
    assert choice_for_image("not an image") is None


def test_a_folder_run_segments_an_image_it_cannot_judge_with_the_default_model():
    choice = FolderRouter().choose(np.zeros(2))
    assert choice.model == default_model() and choice.kind == "unknown" and not choice.exact
    assert choice.reason.startswith("could not judge the image")
    assert choice.unknown and choice.note.endswith("; review: could not judge the kind of image")


def test_a_choice_says_why_in_the_words_the_csv_and_the_status_line_use():
    choice = choose_model(read_image(SCAN))
    assert choice.exact and choice.model == suggest_model("ultrasound")
    assert choice.note == f"ultrasound: {choice.reason}"
    assert choice.message == f"{choice.model} for ultrasound ({choice.reason})"
    nearest = ModelChoice(suggest_model("endoscopy"), "dermoscopy", "colour", False)
    assert nearest.message.startswith(f"{nearest.model} (made for endoscopy): no built-in model for dermoscopy")


@pytest.mark.parametrize("readable", [1, 3])
def test_the_folder_prior_is_judged_from_its_readable_images(tmp_path, readable):
    names = sorted(p.name for p in (BUSI / "images").glob("benign_*.png"))[:readable]
    for name in names:
        shutil.copy(BUSI / "images" / name, tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    router = FolderRouter()
    files = sorted(tmp_path.iterdir())
    run_to_end(router.judge_folder(iter(files), len(files)))
    if readable == 1:  # one image is no folder to learn from
        assert router.prior is None
    else:
        assert router.prior is not None and router.prior[KINDS.index("ultrasound")] > 0.5
        assert router.choose(read_image(SCAN)).model == suggest_model("ultrasound")
    assert set(builtin_models()) >= {router.choose(read_image(POLYP)).model}
