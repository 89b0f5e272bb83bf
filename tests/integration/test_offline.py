"""Offline use (``WAVEGMS_OFFLINE=1``, no ``WAVEGMS_WEIGHTS_DIR``, empty cache): what a pip install
does with no network. Training takes the frozen TAEF2 encoder shipped in the package; whatever is
missing fails at once with one line that says what to put where, and nothing touches the network."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import WEIGHTS, drain, link_busi_pairs
from napari_wavegms.network import load_tiny_vae
from napari_wavegms.network.checkpoint import _digest, load_checkpoint, read_checkpoint
from napari_wavegms.training.loop import TrainConfig, train
from napari_wavegms.zoo import downloads as weights


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Offline with an empty weights folder and an empty cache; any network connection fails the test."""
    empty = tmp_path / "no-weights"
    empty.mkdir()
    monkeypatch.setenv(weights.WEIGHTS_ENV, str(empty))
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")

    calls: list[tuple] = []

    def no_network(*args, **kwargs):
        calls.append(args[:2])
        raise AssertionError(f"network used offline: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    yield empty
    assert calls == []  # even where the library caught the failure and went on


def original(part: str) -> dict[str, torch.Tensor]:
    """The published TAEF2 file (float16), original keys."""
    return torch.load(WEIGHTS / f"taef2_{part}.pth", map_location="cpu", weights_only=True)


def encoder_state(vae) -> dict[str, torch.Tensor]:
    return {k: v.to(torch.float16) for k, v in vae.autoencoder.encoder.layers.state_dict().items()}


def test_the_shipped_encoder_is_taef2s_own_with_its_licence():
    """One float16 copy of the frozen TAEF2 encoder ships beside the decoder, pinned by its tensors' sha256;
    the published file is float16 already, so the copy is exact."""
    from napari_wavegms.network.tiny_vae import tensor_sha256

    path, sha = weights.shipped_encoder("taef2")
    shipped = load_file(str(path))
    assert tensor_sha256(shipped) == sha
    assert path.stat().st_size < 3_000_000
    published = original("encoder")
    assert shipped.keys() == published.keys()
    assert all(shipped[k].dtype == torch.float16 and torch.equal(shipped[k], published[k]) for k in published)
    assert "MIT License" in path.with_name("LICENSE-taesd").read_text()
    assert weights.shipped_encoder("taesd") is None


def test_a_pip_install_trains_offline(offline: Path, tmp_path: Path, busi_names: list[str]):
    """The encoder and decoder come from the package: the weights equal the published files, and a
    one-step training run completes."""
    enc = encoder_state(load_tiny_vae("taef2"))
    assert enc.keys() == original("encoder").keys()
    assert all(torch.equal(enc[k], v) for k, v in original("encoder").items())  # float16 values, exactly

    data = link_busi_pairs(tmp_path / "busi", busi_names[:3])
    cfg = TrainConfig(data_dir=str(data), image_size=32, epochs=1, batch_size=2, max_steps=1, val_fraction=0.34,
                      output_dir=str(tmp_path / "run"), device="cpu")
    _, result = drain(train(cfg))
    assert result.last.is_file() and [h["step"] for h in result.history] == [1]
    assert read_checkpoint(result.last)[0]["tiny_vae"]["name"] == "taef2"


def _install_without(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, modify: str | None = None) -> Path:
    """A package folder whose shipped Tiny-VAE is missing (``modify=None``) or has one weight changed."""
    folder = tmp_path / "builtin"
    folder.mkdir()
    if modify is not None:
        data = bytearray(weights.shipped_file("taef2", modify)[0].read_bytes())
        data[-2] ^= 0xFF
        (folder / f"taef2_{modify}.safetensors").write_bytes(bytes(data))
    monkeypatch.setattr(weights, "SHIPPED_DIR", folder)
    return folder


def test_a_modified_shipped_encoder_is_not_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Its tensors fail the pinned sha256: the registry's checked file is used instead, never the changed one."""
    folder = _install_without(tmp_path, monkeypatch, modify="encoder")
    modified = load_file(str(folder / "taef2_encoder.safetensors"))
    published = original("encoder")
    changed = [k for k in published if not torch.equal(modified[k], published[k])]
    assert len(changed) == 1
    vae = load_tiny_vae("taef2", WEIGHTS)  # the registry's file, sha256-checked
    enc = encoder_state(vae)
    assert all(torch.equal(enc[k], published[k]) for k in published)
    assert not torch.equal(enc[changed[0]], modified[changed[0]])
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    monkeypatch.delenv(weights.WEIGHTS_ENV)
    with pytest.raises(weights.WeightsUnavailableError, match=r"^Put taef2_encoder\.pth at \$WAVEGMS_WEIGHTS_DIR/"):
        load_tiny_vae("taef2", tmp_path / "nothing-here")


def test_training_without_a_tiny_vae_fails_at_once_and_leaves_no_run_folder(
    offline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, busi_names: list[str]
):
    _install_without(tmp_path, monkeypatch)
    data = link_busi_pairs(tmp_path / "busi", busi_names[:3])
    out = tmp_path / "run"
    cfg = TrainConfig(data_dir=str(data), image_size=32, epochs=1, batch_size=2, output_dir=str(out), device="cpu")
    events: list = []
    with pytest.raises(weights.WeightsUnavailableError) as info:
        events.extend(train(cfg))
    assert events == []  # before loading any data
    assert info.value.summary.startswith("Put taef2_encoder.pth at $WAVEGMS_WEIGHTS_DIR/taef2_encoder.pth")
    assert not out.exists()


def _with_hub_tiny_vae(src: Path, dst: Path, decoder: str) -> Path:
    """A real checkpoint whose header names a Tiny-VAE on the Hugging Face hub (digest kept valid)."""
    config, tensors = read_checkpoint(src)
    config["tiny_vae"] |= {"name": "someone/evil-taesd", "decoder": decoder}
    if decoder == "registry":
        tensors = {k: v for k, v in tensors.items() if not k.startswith("vae_decoder.")}
    save_file(tensors, str(dst), metadata={"wavegms": json.dumps(config), "sha256": _digest(tensors)})
    return dst


@pytest.mark.parametrize("decoder", ["registry", "embedded"])
def test_a_checkpoint_naming_a_hub_tiny_vae_fails_at_once_offline(offline: Path, tmp_path: Path,
                                                                  random_checkpoint: Path, decoder: str):
    """No HEAD requests to the hub with retries: one clear line, at once. Inference of a checkpoint with
    its decoder embedded needs no Tiny-VAE at all; training from it (``need_encoder``) does."""
    path = _with_hub_tiny_vae(random_checkpoint, tmp_path / "hub.safetensors", decoder)
    if decoder == "embedded":
        assert load_checkpoint(path)[1]["tiny_vae"]["name"] == "someone/evil-taesd"
    t0 = time.perf_counter()
    with pytest.raises(weights.WeightsUnavailableError) as info:
        load_checkpoint(path, need_encoder=decoder == "embedded")
    assert time.perf_counter() - t0 < 10
    summary = info.value.summary
    assert "\n" not in summary and len(summary) <= 160
    assert summary.startswith("Tiny-VAE someone/evil-taesd is a Hugging Face hub name: save it to a folder")
    assert "WAVEGMS_OFFLINE is set" in summary
    assert "save_pretrained" in str(info.value)


def test_offline_sample_data_error_says_exactly_where_the_file_goes(offline: Path, monkeypatch):
    from napari_wavegms.zoo.samples import SAMPLES, load_sample

    monkeypatch.setenv(weights.DATA_ENV, str(offline))
    with pytest.raises(weights.WeightsUnavailableError) as info:
        load_sample("kvasir_polyp")
    first = str(info.value).splitlines()[0]
    image = SAMPLES["kvasir_polyp"].image
    assert image.relative_path == "kvasir-seg/images/cju16jgnyzp970878melv7r25.jpg"
    assert first == f"Put cju16jgnyzp970878melv7r25.jpg at $WAVEGMS_DATA_DIR/{image.relative_path} (working offline)."


def test_a_hub_tiny_vae_already_in_the_hugging_face_cache_loads_offline(offline: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch):
    """Offline is not "never the hub's files": a copy the Hugging Face cache holds is used, found on disk."""
    from huggingface_hub import constants

    from napari_wavegms.network.tiny_vae import TinyVAE

    snapshot = tmp_path / "hf" / "models--someone--taesd-like" / "snapshots" / "abc123"
    TinyVAE.random(4).autoencoder.save_pretrained(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    vae = load_tiny_vae("someone/taesd-like", need_encoder=True)
    assert vae.latent_channels == 4 and vae.name == "someone/taesd-like"
