"""The checkpoint format: round trip, and clear errors for truncated, tampered or mismatched files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from napari_wavegms.network import WaveGMS
from napari_wavegms.network.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint


def test_round_trip_is_exact_and_needs_no_tiny_vae_files(random_checkpoint: Path, taef2, monkeypatch):
    monkeypatch.delenv("WAVEGMS_WEIGHTS_DIR")  # inference needs only what the checkpoint holds
    model, config = load_checkpoint(random_checkpoint)
    assert config["tiny_vae"] == {"name": "taef2", "latent_channels": 32, "pool": True, "decoder": "embedded"}
    assert config["image_size"] == 64 and config["note"] == "untrained"
    torch.manual_seed(0)
    reference = WaveGMS(taef2, image_size=64).eval()
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(model.predict(x), reference.predict(x), atol=0, rtol=0)


def test_half_precision_checkpoint_is_smaller_and_agrees(tmp_path: Path, random_checkpoint: Path):
    model, _ = load_checkpoint(random_checkpoint)
    half = save_checkpoint(tmp_path / "half.safetensors", model, dtype=torch.float16)
    assert half.stat().st_size < 0.6 * random_checkpoint.stat().st_size
    model16, _ = load_checkpoint(half)
    x = torch.rand(2, 3, 64, 64)
    assert (model16.predict(x) - model.predict(x)).abs().max() < 0.05


def test_checkpoint_without_decoder_takes_it_from_the_registry(tmp_path: Path, random_checkpoint: Path,
                                                              monkeypatch):
    from napari_wavegms.zoo.downloads import WeightsUnavailableError

    model, _ = load_checkpoint(random_checkpoint)
    slim = save_checkpoint(tmp_path / "slim.safetensors", model, embed_decoder=False)
    assert slim.stat().st_size < random_checkpoint.stat().st_size - 5_000_000
    again, config = load_checkpoint(slim)
    assert config["tiny_vae"]["decoder"] == "registry"
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(again.predict(x), model.predict(x), atol=0, rtol=0)
    monkeypatch.delenv("WAVEGMS_WEIGHTS_DIR")  # offline, nothing cached: the error says what to fetch
    monkeypatch.setenv("WAVEGMS_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match=r"taef2_decoder\.pth"):
        load_checkpoint(slim)


def test_truncated_checkpoint(tmp_path: Path, random_checkpoint: Path):
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(random_checkpoint.read_bytes()[: random_checkpoint.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.safetensors.*(truncated|corrupt)"):
        load_checkpoint(bad)


def test_not_a_checkpoint(tmp_path: Path):
    bad = tmp_path / "text.safetensors"
    bad.write_text("hello")
    with pytest.raises(CheckpointError, match=r"text\.safetensors"):
        read_checkpoint(bad)
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not a Wave-GMS checkpoint"):
        read_checkpoint(other)


def _rewrite(src: Path, dst: Path, edit_tensors=None, edit_config=None, keep_digest=True) -> Path:
    from safetensors import safe_open

    with safe_open(str(src), "pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(src)
    if edit_tensors:
        edit_tensors(tensors)
    if edit_config:
        cfg = json.loads(meta["wavegms"])
        edit_config(cfg)
        meta["wavegms"] = json.dumps(cfg)
    if not keep_digest:
        from napari_wavegms.network.checkpoint import _digest

        meta["sha256"] = _digest(tensors)
    save_file(tensors, dst, metadata=meta)
    return dst


def test_tampered_weights_are_refused(tmp_path: Path, random_checkpoint: Path):
    def poke(t):
        t["lmm.stem.weight"][0, 0, 0, 0] += 1.0

    bad = _rewrite(random_checkpoint, tmp_path / "tampered.safetensors", edit_tensors=poke)
    with pytest.raises(CheckpointError, match="do not match the checksum"):
        load_checkpoint(bad)


def test_mismatched_config_is_refused(tmp_path: Path, random_checkpoint: Path):
    def wrong_width(cfg):
        cfg["tiny_vae"]["latent_channels"] = 4

    bad = _rewrite(random_checkpoint, tmp_path / "width.safetensors", edit_config=wrong_width)
    with pytest.raises(CheckpointError, match="do not fit the model"):
        load_checkpoint(bad)

    def drop(t):
        del t["encoder.aggregate.conv_out.weight"]

    bad = _rewrite(random_checkpoint, tmp_path / "missing.safetensors", edit_tensors=drop, keep_digest=False)
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(bad)

    def future(cfg):
        cfg["format"] = "napari-wavegms/99"

    bad = _rewrite(random_checkpoint, tmp_path / "future.safetensors", edit_config=future)
    with pytest.raises(CheckpointError, match="not supported"):
        load_checkpoint(bad)


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path: Path, random_checkpoint: Path):
    model, _ = load_checkpoint(random_checkpoint)
    target = save_checkpoint(tmp_path / "out" / "m.safetensors", model, {"a": 1})
    assert [p.name for p in target.parent.iterdir()] == ["m.safetensors"]


def test_training_state_round_trip_and_corrupt_file(tmp_path: Path, random_checkpoint: Path):
    from napari_wavegms.network.checkpoint import load_train_state, restore_train_weights, save_train_state

    model, _ = load_checkpoint(random_checkpoint)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    model.lmm.stem.weight.grad = torch.ones_like(model.lmm.stem.weight)
    opt.step()
    saved = torch.get_rng_state()
    path = save_train_state(tmp_path / "last.state.safetensors", opt, {"epoch": 3}, {"cpu": saved}, model=model)
    after_save = torch.rand(5)  # the generator moves on: the file must hold the state it had when saved
    trained = {k: v.clone() for k, v in model.lmm.state_dict().items()}
    with torch.no_grad():
        model.lmm.stem.weight.add_(1.0)  # weights of another epoch
    fresh = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    meta, rng = load_train_state(path, fresh)
    assert meta == {"epoch": 3} and torch.equal(rng["cpu"], saved)
    assert not torch.equal(rng["cpu"], torch.get_rng_state())
    torch.set_rng_state(rng["cpu"])
    assert torch.equal(torch.rand(5), after_save)
    p = model.lmm.stem.weight
    assert torch.equal(fresh.state[p]["exp_avg"], opt.state[p]["exp_avg"])
    # the state keeps the weights it belongs to
    assert restore_train_weights(path, model)
    assert all(torch.equal(v, trained[k]) for k, v in model.lmm.state_dict().items())
    without = save_train_state(tmp_path / "old.state.safetensors", opt, {"epoch": 3}, {"cpu": saved})
    assert not restore_train_weights(without, model)  # a state file from before weights were kept

    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="unreadable training state"):
        load_train_state(path, fresh)
