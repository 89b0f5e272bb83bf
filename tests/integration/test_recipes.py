"""Training recipes, precision and the time-budget schedule: what each recipe computes and when."""

from __future__ import annotations

import pytest
import torch

from conftest import WEIGHTS, drain, link_busi_pairs
from napari_wavegms.core import device as device_mod
from napari_wavegms.core.device import autocast_dtype, precision_name
from napari_wavegms.network.wavegms import wavegms_loss
from napari_wavegms.training.config import RECIPES, TrainConfig, get_recipe
from napari_wavegms.training.loop import _amp_setup, _shrink, train
from napari_wavegms.training.schedule import Schedule, stage_size

CPU = torch.device("cpu")


def test_auto_precision_never_picks_emulated_bf16(monkeypatch):
    monkeypatch.setattr(device_mod, "native_bf16", lambda device: False)
    assert autocast_dtype(CPU, "auto") is None
    assert _amp_setup("auto", CPU, RECIPES["fast"]) == (None, None)
    monkeypatch.setattr(device_mod, "native_bf16", lambda device: True)
    assert autocast_dtype(CPU, "auto") is torch.bfloat16
    assert _amp_setup("auto", CPU, RECIPES["fast"])[0] is torch.bfloat16
    assert _amp_setup("auto", CPU, RECIPES["paper"]) == (None, None)  # the paper recipe stays float32
    assert autocast_dtype(CPU, "fp32") is None and autocast_dtype(CPU, "bf16") is torch.bfloat16
    assert precision_name(autocast_dtype(CPU, "bf16")) == "bf16"
    with pytest.raises(ValueError, match="float16 needs a CUDA or MPS"):
        autocast_dtype(CPU, "fp16")
    with pytest.raises(ValueError, match="unknown precision"):
        autocast_dtype(CPU, "half")
    with pytest.raises(ValueError, match="unknown recipe 'quick'"):
        get_recipe("quick")


def test_recipe_defaults_to_finetune_when_starting_from_a_model(tmp_path):
    assert TrainConfig().recipe == "fast"
    assert TrainConfig(init_from="breast-ultrasound-busi-busbra").recipe == "finetune"
    assert TrainConfig(init_from="x", recipe="paper").recipe == "paper"  # a named recipe wins
    saved = TrainConfig(init_from="x").to_yaml(tmp_path / "c.yaml")
    assert "recipe: finetune" in saved.read_text()  # the saved config names the recipe it ran
    assert TrainConfig.from_yaml(saved, init_from="").recipe == "finetune"  # and keeps it when re-read


def test_fast_loss_decodes_only_the_out_head(taef2):
    from napari_wavegms.network import WaveGMS

    torch.manual_seed(0)
    model = WaveGMS(taef2, image_size=32)
    x = torch.rand(2, 3, 32, 32)
    m = (torch.rand(2, 1, 32, 32) > 0.5).float()
    calls = []
    decode = taef2.decode_mask
    taef2.decode_mask = lambda z: calls.append(z.shape[0]) or decode(z)
    try:
        _, paper = wavegms_loss(model, x, m)
        _, fast = wavegms_loss(model, x, m, dice_heads=RECIPES["fast"].dice_heads)
    finally:
        del taef2.decode_mask
    assert calls == [6, 2]  # three heads of a batch of 2, then the out head alone
    assert {k for k in paper if k.startswith("dice_")} == {"dice_level2", "dice_level1", "dice_out"}
    assert {k for k in fast if k.startswith("dice_")} == {"dice_out"}
    assert {k for k in fast if k.startswith("mse_")} == {"mse_level2", "mse_level1", "mse_out"}
    with pytest.raises(ValueError, match="unknown Dice head"):
        wavegms_loss(model, x, m, dice_heads=("level3",))


def test_channels_last_tiny_vae_gives_the_same_mask(taef2):
    z = torch.randn(2, taef2.latent_channels, 8, 8)
    with torch.no_grad():
        plain = taef2.decode_mask(z)
        taef2.use_channels_last(True)
        try:
            fast = taef2.decode_mask(z)
        finally:
            taef2.use_channels_last(False)
    assert torch.allclose(plain, fast, atol=1e-5)


def test_fast_recipe_trains_small_first_then_at_full_size():
    fast, paper = RECIPES["fast"], RECIPES["paper"]
    assert [stage_size(224, p, fast) for p in (0.0, 0.49, 0.5, 1.0)] == [112, 112, 224, 224]
    assert stage_size(64, 0.0, fast) == 32 and stage_size(40, 0.0, fast) == 32  # never below 32
    assert stage_size(224, 0.0, paper) == 224
    finetune = RECIPES["finetune"]  # fast, but a model already trained at this size stays at it
    assert [stage_size(128, p, finetune) for p in (0.0, 0.49, 1.0)] == [128, 128, 128]
    assert (finetune.dice_heads, finetune.warmup_cap) == (fast.dice_heads, fast.warmup_cap)
    x = torch.rand(2, 3, 64, 64)
    m = torch.zeros(2, 1, 64, 64)
    m[:, :, 10:40, 20:50] = 1
    xs, ms = _shrink(x, m, 32)
    assert xs.shape == (2, 3, 32, 32) and ms.shape == (2, 1, 32, 32)
    assert set(ms.unique().tolist()) == {0.0, 1.0} and ms.sum() == 2 * 15 * 15  # the box, halved


def test_time_budget_schedule_anneals_over_the_budget():
    clock = [0.0]
    s = Schedule(total=1000, warmup=10, budget_s=100.0)
    s._now = lambda: clock[0]
    s.resume()
    assert s.lr_factor(0) == pytest.approx(0.1)  # warm-up is 1 % of the budget; the first step learns
    clock[0] = 0.5
    assert s.lr_factor(5) == pytest.approx(0.5)
    clock[0] = 50.5
    assert s.lr_factor(500) == pytest.approx(0.5, abs=0.01)  # half-way through the cosine
    s.pause()
    clock[0] = 80.0  # validation time is not training time
    assert s.elapsed() == pytest.approx(50.5) and not s.exhausted(500)
    s.resume()
    clock[0] = 130.0
    assert s.exhausted(900) and s.lr_factor(900) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="time_budget_clock"):
        Schedule(10, 1, 5.0, clock="gpu")


def test_a_budget_longer_than_the_epoch_cap_still_anneals_by_the_cap():
    """A 10-minute budget on 20 pairs reaches a 100-epoch cap after 2 minutes: the learning rate must be
    near 0 by then, not still at its peak (the cap and the budget: whichever end comes first)."""
    clock = [0.0]
    s = Schedule(total=200, warmup=2, budget_s=600.0)
    s._now = lambda: clock[0]
    s.resume()
    clock[0] = 60.0  # 10 % of the budget, but half of the steps
    assert s.progress(100) == pytest.approx(0.5)
    assert s.lr_factor(100) == pytest.approx(0.5, abs=0.02)
    clock[0] = 120.0
    assert s.lr_factor(199) < 0.001 and s.progress(200) == 1.0


@pytest.mark.slow
def test_a_time_budget_ends_the_run_validated_and_tested(tmp_path, busi_names):
    data = link_busi_pairs(tmp_path / "busi16", busi_names)
    test_list = tmp_path / "test.txt"
    test_list.write_text("\n".join(busi_names[:3]))
    cfg = TrainConfig(data_dir=str(data), image_size=64, epochs=1000, batch_size=4, val_fraction=0.25,
                      test_split=str(test_list), output_dir=str(tmp_path / "run"), weights_dir=str(WEIGHTS),
                      device="cpu", time_budget_s=3.0, recipe="fast")
    events, result = drain(train(cfg))
    epochs = [e for e in events if e.kind == "epoch"]
    assert 1 <= len(epochs) < 1000 and not result.stopped
    assert "dice" in epochs[-1].val  # the last epoch was validated
    assert result.test is not None and result.test["n"] == 3  # and the test split scored once
    assert result.history[-1]["train_seconds"] >= 3.0
    from napari_wavegms.network.checkpoint import read_checkpoint

    header, _ = read_checkpoint(result.best)
    assert header["run"]["recipe"] == "fast" and header["training"]["recipe"] == "fast"


def test_checkpointing_the_decoder_changes_memory_not_gradients(taef2):
    from napari_wavegms.network import WaveGMS

    torch.manual_seed(0)
    model = WaveGMS(taef2, image_size=32)
    x = torch.rand(6, 3, 32, 32)  # two chunks of the frozen networks (4 + 2 images)
    m = (torch.rand(6, 1, 32, 32) > 0.5).float()
    grads = []
    for checkpointed in (False, True):
        model.zero_grad()
        torch.manual_seed(1)  # the same latent sampling noise
        loss, _ = wavegms_loss(model, x, m, dice_heads=("out",), checkpoint_decoder=checkpointed)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.trainable_parameters()]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_a_time_budget_is_refused_under_torchrun(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = TrainConfig(data_dir=str(tmp_path), output_dir=str(tmp_path / "run"), time_budget_s=60.0)
    with pytest.raises(ValueError, match="time budget is for one process"):
        next(train(cfg))
