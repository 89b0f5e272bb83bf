"""The user's own models: kept under the name given, listed after the built-in ones, chosen for a kind
only when the user says so, and never able to take a built-in model's name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from napari_wavegms.zoo import registry, user_models
from napari_wavegms.zoo.card import UNRANKED

BUILTIN = registry.default_model()


def _checkpoint(tmp_path: Path) -> Path:
    """A stand-in weights file: the registry and the folder only copy and list it (loading is tested
    with real weights in tests/integration/test_finetune.py)."""
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"weights")
    return path


def test_a_model_is_kept_under_its_name_and_listed_after_the_builtin_ones(tmp_path, user_models_dir):
    name = "ultrasound — my hospital"
    kept = user_models.install(_checkpoint(tmp_path), name, {"kind": "ultrasound", "rank": 0},
                               set(registry.installed_models()))
    assert kept.parent == user_models_dir and kept.name == "ultrasound-my-hospital.safetensors"
    assert kept.read_bytes() == b"weights"
    models = registry.installed_models()
    builtin = list(registry.builtin_models())
    assert list(models)[-1] == name and list(models)[: len(builtin)] == builtin
    assert models[name].card.kind == "ultrasound" and models[name].card.rank == UNRANKED
    assert registry.resolve_model(name) == kept
    assert registry.model_card(kept).name == name  # the widgets pass the resolved path
    assert name not in registry.builtin_models()


def test_names_are_checked(tmp_path):
    ckpt = _checkpoint(tmp_path)
    taken = set(registry.installed_models())
    with pytest.raises(ValueError, match="exists already"):
        user_models.install(ckpt, BUILTIN, {}, taken)
    with pytest.raises(ValueError, match="give the model a name"):
        user_models.install(ckpt, "   ", {}, taken)
    first = user_models.install(ckpt, "my model", {}, taken)
    second = user_models.install(ckpt, "my  model!", {}, taken)  # another name, the same safe file name
    assert first != second and second.name == "my-model-2.safetensors"
    assert {"my model", "my model!"} <= set(registry.user_models())


def test_a_kind_gets_the_users_model_only_when_chosen_and_the_choice_can_be_undone(tmp_path):
    name = "ultrasound — my hospital"
    user_models.install(_checkpoint(tmp_path), name, {"kind": "ultrasound"}, set(registry.installed_models()))
    builtin = registry.suggest_model("ultrasound")
    assert builtin != name and builtin in registry.builtin_models()
    user_models.set_preferred("ultrasound", name)
    assert registry.suggest_model("ultrasound") == name
    assert registry.suggest_model("endoscopy") != name
    user_models.set_preferred("ultrasound", None)
    assert registry.suggest_model("ultrasound") == builtin


def test_removing_a_model_removes_its_preference_and_a_damaged_card_hides_only_its_model(tmp_path, user_models_dir):
    kept = user_models.install(_checkpoint(tmp_path), "mine", {"kind": "ultrasound"}, set())
    user_models.set_preferred("ultrasound", "mine")
    other = user_models.install(_checkpoint(tmp_path), "other", {}, set())
    other.with_suffix(".json").write_text("{ not json")
    assert "other" not in registry.user_models() and "mine" in registry.user_models()
    user_models.remove(kept)
    assert not kept.exists() and "mine" not in registry.installed_models()
    assert json.loads((user_models_dir / user_models.PREFERENCES).read_text())["for_kind"] == {}
    assert registry.suggest_model("ultrasound") in registry.builtin_models()


def test_a_preference_for_a_model_no_longer_there_is_ignored(user_models_dir):
    user_models.set_preferred("ultrasound", "gone")
    assert registry.suggest_model("ultrasound") in registry.builtin_models()
    (user_models_dir / user_models.PREFERENCES).write_text("[broken")
    assert user_models.preferred("ultrasound") is None
