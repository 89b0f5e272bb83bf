"""Built-in models: each still scores what its model card recorded when it was made.

A broken checkpoint, a changed preprocessing step or a metric that drifted moves the mean Dice on
the card's ten fixed test images by more than 0.02, and this fails.
"""

from __future__ import annotations

import pytest

from conftest import SHARED
from napari_wavegms.cli import predict_main
from napari_wavegms.data import scan_pairs
from napari_wavegms.evaluation import evaluate
from napari_wavegms.models import builtin_models, default_model
from napari_wavegms.progress import run_to_end

MODELS = builtin_models()


def test_a_breast_ultrasound_model_ships_and_is_the_default():
    assert any("busi" in name for name in MODELS)
    assert default_model() in MODELS


@pytest.mark.parametrize("name", sorted(MODELS))
def test_builtin_model_matches_its_card(name: str):
    card = MODELS[name].card
    assert card["data"]["folder"] in name
    for key in ("summary", "modality", "data", "split", "recipe", "training", "tiny_vae", "test"):
        assert card[key], key
    data = SHARED / "data" / card["data"]["folder"]
    names = card["reference_check"]["images"]
    assert len(names) == 10
    pairs = scan_pairs(data / "images", data / "masks", names=names).pairs
    assert [p.name for p in pairs] == names
    result = run_to_end(evaluate(name, data, pairs=pairs, device="cpu"))
    assert result.paper["dice"] == pytest.approx(card["reference_check"]["dice"], abs=0.02)


def test_list_models_prints_one_name_per_line(capsys):
    assert predict_main(["--list-models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == list(MODELS)
    assert all(("busi" in n) or ("kvasir-seg" in n) for n in lines)
