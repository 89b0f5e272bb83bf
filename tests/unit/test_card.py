"""Model cards, typed: every entry the code acts on is read from the shipped JSON once per file."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from napari_wavegms.inference.postprocess import NONE, PostProcess, card_postprocess
from napari_wavegms.inference.presence import PresenceGate, card_presence
from napari_wavegms.zoo import registry
from napari_wavegms.zoo.card import NO_CARD, UNRANKED, ModelCard, read_card
from napari_wavegms.zoo.registry import builtin_models, card_tta, default_model, model_card

MODELS = builtin_models()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_shipped_card_reads_as_typed_entries_equal_to_its_json(name):
    info = MODELS[name]
    record = json.loads(info.path.with_suffix(".json").read_text())
    card = info.card
    assert card.name == name and card.kind == record["kind"] and card.images == record["images"]
    assert card.aliases == tuple(record["aliases"]) and card.rank == record["rank"]
    assert card.summary == record["summary"] == info.summary
    assert card.tta is record["tta"]["flips"]
    assert card.postprocess == PostProcess.from_dict(record["postprocess"]) == card_postprocess(name)
    gate = record.get("presence")
    assert card.presence == (PresenceGate.from_dict(gate) if gate else None) == card_presence(name)
    assert dict(card.record) == record


def test_a_card_is_found_by_name_old_name_or_weights_path_and_other_checkpoints_have_none(tmp_path):
    name = default_model()
    card = MODELS[name].card
    assert model_card(name) is card and model_card(str(MODELS[name].path)) is card
    assert model_card(None) is card  # the default model's
    for old in card.aliases:
        assert model_card(old) is card
    assert model_card(tmp_path / "mine.safetensors") is None and model_card("nonsense") is None
    assert card_tta(tmp_path / "mine.safetensors") is False


def test_a_checkpoint_without_a_card_gets_no_flips_no_clean_up_and_no_gate():
    assert NO_CARD.tta is False and NO_CARD.postprocess == NONE and NO_CARD.presence is None
    assert NO_CARD.kind is None and NO_CARD.aliases == () and NO_CARD.rank == UNRANKED


def test_a_card_cannot_be_changed_in_memory():
    card = MODELS[default_model()].card
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.tta = not card.tta  # type: ignore[misc]
    with pytest.raises(TypeError):
        card.record["tta"] = {}  # type: ignore[index]


def _builtin_copy(tmp_path, monkeypatch) -> str:
    """The default model's card in a folder of its own (weights: an empty stand-in) as the built-in models."""
    name = default_model()
    shutil.copy(MODELS[name].path.with_suffix(".json"), tmp_path / f"{name}.json")
    (tmp_path / f"{name}.safetensors").write_bytes(b"")
    monkeypatch.setattr(registry, "BUILTIN_DIR", tmp_path)
    return name


def test_a_card_is_read_once_and_again_after_it_is_written(tmp_path, monkeypatch):
    name = _builtin_copy(tmp_path, monkeypatch)
    path = tmp_path / f"{name}.json"
    first = read_card(path)
    assert read_card(path) is first and builtin_models()[name].card is first  # no second read
    flips = first.tta
    registry.set_card_entry(name, "tta", {"flips": not flips})  # what the tuning scripts do
    assert read_card(path) is not first and read_card(path).tta is (not flips) and card_tta(name) is (not flips)
    record = json.loads(path.read_text())
    record["kind"] = "endoscopy"
    path.write_text(json.dumps(record))  # edited by hand: a new modification time or size
    assert model_card(name).kind == "endoscopy"


def test_a_malformed_gate_fails_the_model_that_needs_it_not_the_list_of_models(tmp_path, monkeypatch):
    name = _builtin_copy(tmp_path, monkeypatch)
    path = tmp_path / f"{name}.json"
    record = json.loads(path.read_text())
    record["presence"] = {"centre": [0.0]}
    path.write_text(json.dumps(record))
    assert list(builtin_models()) == [name]
    with pytest.raises(ValueError, match="malformed"):
        card_presence(name)


def test_a_card_without_the_optional_entries_takes_their_defaults():
    card = ModelCard.from_record("plain", {})
    assert (card.kind, card.aliases, card.rank, card.summary, card.images, card.tta) == (
        None, (), UNRANKED, "plain", None, False)
    assert card.postprocess == NONE and card.presence is None
