"""Built-in models: each still scores what its model card recorded when it was made.

A broken checkpoint, a changed preprocessing step or a metric that drifted moves the mean Dice on
the card's ten fixed test images by more than 0.02, and this fails. The ultrasound model's ten include
three lesion-free scans (BUSI ``normal_test``), where only an empty mask scores.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import BUSI, KVASIR, SHARED
from napari_wavegms.cli import predict_main
from napari_wavegms.core.io import read_image
from napari_wavegms.core.progress import run_to_end
from napari_wavegms.inference.routing import choose_model
from napari_wavegms.training.data import scan_pairs
from napari_wavegms.training.evaluate import evaluate
from napari_wavegms.zoo.registry import KIND_IMAGES, builtin_models, default_model, resolve_model, suggest_model

MODELS = builtin_models()
#: what each kind's model must be named after (its data)
NAMED_AFTER = {"ultrasound": "busi", "endoscopy": "kvasir-seg", "dermoscopy": "isic"}
#: the names of the 64² previews they replaced
OLD_NAMES = {"busi-wavegms-cpu64": "ultrasound", "kvasir-seg-wavegms-cpu64": "endoscopy"}


def test_one_model_per_kind_ships_named_after_its_data_and_ultrasound_is_the_default():
    kinds = {name: info.card.kind for name, info in MODELS.items()}
    assert sorted(kinds.values()) == sorted(NAMED_AFTER)
    for name, kind in kinds.items():
        assert NAMED_AFTER[kind] in name
    assert kinds[default_model()] == "ultrasound"


def test_the_old_preview_names_still_work(tmp_path):
    """``busi-wavegms-cpu64`` / ``kvasir-seg-wavegms-cpu64`` in scripts and saved settings reach the
    models that replaced them, with those models' post-processing."""
    from napari_wavegms.inference.postprocess import card_postprocess

    for old, kind in OLD_NAMES.items():
        new = suggest_model(kind)
        assert old not in MODELS and old in MODELS[new].card.aliases
        assert resolve_model(old) == resolve_model(new) == MODELS[new].path
        assert card_postprocess(old) == card_postprocess(new)
    out = tmp_path / "out"
    assert predict_main([str(BUSI / "images" / "benign_3.png"), str(out), "--model", "busi-wavegms-cpu64",
                         "--device", "cpu", "--quiet"]) == 0
    assert (out / "benign_3.png").is_file()


def test_colour_images_get_the_polyp_model_and_grey_ones_the_ultrasound_model_also_saved_as_colour(tmp_path):
    from PIL import Image

    polyp = read_image(KVASIR / "images" / "cju16jgnyzp970878melv7r25.jpg")
    grey = read_image(BUSI / "images" / "benign_3.png")
    Image.fromarray(grey).convert("RGB").save(tmp_path / "grey.jpg", quality=75)
    grey_jpeg = read_image(tmp_path / "grey.jpg")  # grey saved as a colour JPEG: channels almost, not exactly, equal
    assert grey_jpeg.shape == (*grey.shape, 3)

    assert choose_model(polyp).model == suggest_model("endoscopy")
    assert choose_model(np.stack([polyp, polyp]), rgb=True).model == suggest_model("endoscopy")  # its first frame
    for image in (grey, np.repeat(grey[..., None], 3, axis=-1), grey_jpeg):  # grey, also saved as colour
        assert "busi" in choose_model(image).model
    for info in MODELS.values():
        assert info.card.images == KIND_IMAGES[info.card.kind]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_builtin_model_matches_its_card(name: str):
    from napari_wavegms.training.data import read_split

    card = MODELS[name].card.record
    for key in ("summary", "modality", "data", "trained_on", "split", "recipe", "training", "tiny_vae", "test",
                "postprocess"):
        assert card[key], key
    data = SHARED / "data" / card["data"]["folder"]
    names = card["reference_check"]["images"]
    assert len(names) == 10
    if MODELS[name].card.kind == "ultrasound":  # lesion-free scans among them: empty masks are checked
        assert len(set(names) & set(read_split(data / "splits" / "normal_test.txt"))) == 3
    pairs = scan_pairs(data / "images", data / "masks", names=names).pairs
    assert [p.name for p in pairs] == names
    result = run_to_end(evaluate(name, data, pairs=pairs, device="cpu"))
    assert result.paper["dice"] == pytest.approx(card["reference_check"]["dice"], abs=0.02)


def test_list_models_prints_one_name_per_line(capsys):
    assert predict_main(["--list-models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == list(MODELS)
    assert all(any(word in n for word in NAMED_AFTER.values()) for n in lines)


def test_the_shipped_decoder_is_taef2s_own_with_its_licence():
    """One float16 copy of the frozen TAEF2 decoder ships in the package, pinned by its tensors' sha256."""
    import tomllib
    import torch
    from safetensors.torch import load_file

    from conftest import REPO, WEIGHTS
    from napari_wavegms.network.tiny_vae import tensor_sha256
    from napari_wavegms.zoo import downloads as weights

    path, sha = weights.shipped_decoder("taef2")
    shipped = load_file(str(path))
    assert tensor_sha256(shipped) == sha
    assert path.stat().st_size < 3_000_000
    original = torch.load(WEIGHTS / "taef2_decoder.pth", map_location="cpu", weights_only=True)
    assert shipped.keys() == original.keys()
    assert all(torch.equal(shipped[k], original[k].to(torch.float16)) for k in original)
    licence = path.with_name("LICENSE-taesd")
    assert "MIT License" in licence.read_text() and "Ollin Boer Bohan" in licence.read_text()
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert {"builtin/LICENSE-taesd", "builtin/*.safetensors"} <= set(package_data["napari_wavegms.zoo"])
    assert "modality.json" in package_data["napari_wavegms.inference"]
    assert weights.shipped_decoder("taesd") is None  # other Tiny-VAEs: downloaded into the cache as before


def test_a_modified_shipped_decoder_is_not_trusted(tmp_path, monkeypatch, caplog):
    """A corrupt install falls back to the registry's (sha256-checked) decoder, with a warning."""
    import shutil

    from napari_wavegms.network.checkpoint import load_checkpoint
    from napari_wavegms.zoo import downloads as weights

    name = default_model()
    folder = tmp_path / "builtin"
    folder.mkdir()
    shutil.copy(MODELS[name].path, folder / MODELS[name].path.name)
    data = bytearray(weights.shipped_decoder("taef2")[0].read_bytes())
    data[-2] ^= 0xFF  # one weight changed
    (folder / "taef2_decoder.safetensors").write_bytes(bytes(data))
    monkeypatch.setattr(weights, "SHIPPED_DIR", folder)
    with caplog.at_level("WARNING"):
        model, _ = load_checkpoint(folder / MODELS[name].path.name)  # WAVEGMS_WEIGHTS_DIR has the original
    assert "pinned sha256" in caplog.text
    # the decoder it segments with is the published one, not the changed copy
    import torch
    from safetensors.torch import load_file

    from conftest import WEIGHTS

    published = torch.load(WEIGHTS / "taef2_decoder.pth", map_location="cpu", weights_only=True)
    modified = load_file(str(folder / "taef2_decoder.safetensors"))
    [changed] = [k for k in published if not torch.equal(modified[k], published[k])]
    loaded = {f"{int(k.split('.', 1)[0]) + 1}.{k.split('.', 1)[1]}": v.to(torch.float16)  # diffusers drops the clamp
              for k, v in model.vae.autoencoder.decoder.layers.state_dict().items()}
    assert loaded.keys() == published.keys()
    assert all(torch.equal(loaded[k], published[k]) for k in published)
    assert not torch.equal(loaded[changed], modified[changed])


def test_each_card_says_whether_test_time_flips_helped_on_validation_and_the_segmenter_follows_it():
    """``"tta"`` in a card is a validated choice (``napari_wavegms.tuning.tta_choice``): on exactly when the flips'
    validation Dice gain was worth their 3-4x time (``worth_it``); ``Segmenter`` and ``card_tta`` follow it, and
    an explicit setting wins."""
    from napari_wavegms.inference.segmenter import Segmenter
    from napari_wavegms.tuning.tta_choice import worth_it
    from napari_wavegms.zoo.registry import card_tta

    for name, info in MODELS.items():
        record = info.card.record["tta"]
        val = record["chosen_on"]["validation"]
        assert val["gain"] == pytest.approx(val["dice_flips"] - val["dice_plain"]), name
        assert record["flips"] == worth_it(val), name
        assert val["n"] > 50 and "validation" in record["chosen_on"]["split"]
        assert card_tta(name) is record["flips"] and card_tta(info.path) is record["flips"]
        assert Segmenter(name, device="cpu").tta is record["flips"]
        assert Segmenter(name, device="cpu", tta=not record["flips"]).tta is (not record["flips"])
    for old, kind in OLD_NAMES.items():
        assert card_tta(old) is card_tta(suggest_model(kind))
    assert card_tta(None) is card_tta(default_model())


def test_card_entries_are_written_atomically_and_only_for_builtin_models(tmp_path, monkeypatch):
    import json
    import shutil

    from napari_wavegms.zoo import registry as models

    name = default_model()
    shutil.copy(MODELS[name].path.with_suffix(".json"), tmp_path / f"{name}.json")
    (tmp_path / f"{name}.safetensors").write_bytes(b"")  # a card is listed beside its weights
    monkeypatch.setattr(models, "BUILTIN_DIR", tmp_path)
    before = json.loads((tmp_path / f"{name}.json").read_text())

    path = models.set_card_entry(MODELS[name].card.aliases[0], "tta", {"flips": False})  # an old name too
    after = json.loads(path.read_text())
    assert path == tmp_path / f"{name}.json" and after["tta"] == {"flips": False}
    assert {k: v for k, v in after.items() if k != "tta"} == {k: v for k, v in before.items() if k != "tta"}
    assert not models.card_tta(name)
    models.set_card_entry(name, "tta", None)
    assert "tta" not in json.loads(path.read_text())
    with pytest.raises(ValueError, match="no built-in model named 'nonsense'"):
        models.set_card_entry("nonsense", "tta", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{name}.json", f"{name}.safetensors"])
