"""Built-in models: each still scores what its model card recorded when it was made.

A broken checkpoint, a changed preprocessing step or a metric that drifted moves the mean Dice on
the card's ten fixed test images by more than 0.02, and this fails.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import BUSI, KVASIR, SHARED
from napari_wavegms.cli import predict_main
from napari_wavegms.data import scan_pairs
from napari_wavegms.evaluation import evaluate
from napari_wavegms.io import read_image
from napari_wavegms.models import builtin_models, default_model, has_color, suggest_model
from napari_wavegms.progress import run_to_end

MODELS = builtin_models()


def test_a_breast_ultrasound_model_ships_and_is_the_default():
    assert any("busi" in name for name in MODELS)
    assert any("kvasir-seg" in name for name in MODELS)
    assert "busi" in default_model()


def test_colour_images_get_the_polyp_model_and_grey_ones_the_ultrasound_model(tmp_path):
    from PIL import Image

    polyp = read_image(KVASIR / "images" / "cju16jgnyzp970878melv7r25.jpg")
    grey = read_image(BUSI / "images" / "benign_3.png")
    Image.fromarray(grey).convert("RGB").save(tmp_path / "grey.jpg", quality=75)
    grey_jpeg = read_image(tmp_path / "grey.jpg")  # grey saved as a colour JPEG: channels almost, not exactly, equal
    assert grey_jpeg.shape == (*grey.shape, 3)

    assert has_color(polyp, rgb=True)
    assert has_color(np.stack([polyp, polyp]), rgb=True)  # a stack of frames: its first frame decides
    assert not has_color(polyp, rgb=False)
    assert not has_color(grey, rgb=False)
    assert not has_color(np.repeat(grey[..., None], 3, axis=-1), rgb=True)
    assert not has_color(grey_jpeg, rgb=True)
    assert not has_color(np.zeros((32, 32, 3), np.uint8), rgb=True)
    assert "kvasir-seg" in suggest_model(True)
    assert "busi" in suggest_model(False)
    for name, info in MODELS.items():
        assert info.card["images"] == ("rgb" if "kvasir-seg" in name else "gray")


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


def test_the_shipped_decoder_is_taef2s_own_with_its_licence():
    """One float16 copy of the frozen TAEF2 decoder ships in the package, pinned by its tensors' sha256."""
    import tomllib
    import torch
    from safetensors.torch import load_file

    from conftest import REPO, WEIGHTS
    from napari_wavegms import weights
    from napari_wavegms.model.tiny_vae import tensor_sha256

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
    assert {"builtin/LICENSE-taesd", "builtin/*.safetensors", "modality.json"} <= set(package_data["napari_wavegms"])
    assert weights.shipped_decoder("taesd") is None  # other Tiny-VAEs: downloaded into the cache as before


def test_a_modified_shipped_decoder_is_not_trusted(tmp_path, monkeypatch, caplog):
    """A corrupt install falls back to the registry's (sha256-checked) decoder, with a warning."""
    import shutil

    from napari_wavegms import weights
    from napari_wavegms.model.checkpoint import load_checkpoint

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
    assert model is not None
