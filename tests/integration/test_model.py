"""The Wave-GMS network: sizes of the reference, the frozen Tiny-VAE, gradients, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import BUSI
from napari_wavegms.core.images import normalize_intensity, resize_image, resize_mask, to_rgb, to_tensor
from napari_wavegms.core.io import read_image, read_mask
from napari_wavegms.network import LatentMappingModel, TinyVAE, WaveGMS, WaveletEncoder, wavegms_loss


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def busi_batch(names: list[str], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, masks = [], []
    for name in names:
        raw = read_image(BUSI / "images" / f"{name}.png")
        kind = "rgb" if raw.ndim == 3 else "gray"
        images.append(resize_image(to_tensor(to_rgb(normalize_intensity(raw), kind)[None]), size))
        m = torch.from_numpy(read_mask(BUSI / "masks" / f"{name}.png")).float()[None, None]
        masks.append(resize_mask(m, size))
    return torch.cat(images), torch.cat(masks)


def test_parameter_counts_match_the_reference_for_taesd_width():
    assert count(WaveletEncoder(4)) == 1_035_692
    assert count(LatentMappingModel(4)) == 1_560_112
    model = WaveGMS(TinyVAE.random(4), image_size=224)
    assert count(model) == 2_595_804
    assert count(model.vae) == 0


def test_parameter_count_for_taef2(taef2):
    model = WaveGMS(taef2, image_size=224)
    assert model.latent_channels == 32
    # Only the stem, the aggregator's output conv and the heads grow with C (docs/design.md §4).
    assert count(model) == 2_644_244


def test_tiny_vae_is_frozen_even_after_train(taef2):
    model = WaveGMS(taef2, image_size=64).train()
    assert not model.vae.training
    assert model.encoder.training
    assert all(not p.requires_grad for p in model.vae.parameters())


def test_taef2_reconstructs_busi_masks(taef2):
    """A binary mask encoded and decoded by the frozen Tiny-VAE comes back almost exactly (Dice ≥ 0.99)."""
    names = [n for n in (BUSI / "splits" / "gms_test.txt").read_text().split()][:12]
    _, masks = busi_batch(names, 224)
    with torch.no_grad():
        recon = taef2.decode_mask(taef2.encode(masks.expand(-1, 3, -1, -1))) > 0.5
    truth = masks > 0.5
    inter = (recon & truth).sum((1, 2, 3)).float()
    dice = 2 * inter / (recon.sum((1, 2, 3)) + truth.sum((1, 2, 3))).float()
    assert dice.min() > 0.97
    assert dice.mean() >= 0.99


def test_forward_and_backward_on_real_busi(taef2, busi_names):
    torch.manual_seed(0)
    model = WaveGMS(taef2, image_size=64).train()
    images, masks = busi_batch(busi_names[:4], 64)
    out = model(images)
    assert out.z.shape == (4, 32, 8, 8)
    assert set(out.latents) == {"level2", "level1", "out"}
    loss, parts = wavegms_loss(model, images, masks)
    loss.backward()
    assert np.isfinite(parts["total"]) and parts["total"] > 0
    assert {"align", "dice_out", "mse_out"} <= set(parts)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.lmm.parameters())
    assert all(p.grad is None for p in model.vae.parameters())


def test_predict_is_deterministic_and_batch_independent(taef2, busi_names):
    torch.manual_seed(1)
    model = WaveGMS(taef2, image_size=64).eval()
    images, _ = busi_batch(busi_names[:8], 96)  # not the model size: predict resizes and returns 96²
    batched = model.predict(images)
    assert batched.shape == (8, 1, 96, 96)
    assert batched.min() >= 0 and batched.max() <= 1
    single = torch.cat([model.predict(images[i : i + 1]) for i in range(8)])
    # Batched CPU kernels sum in another order: the soft masks agree to float precision, the masks exactly.
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=0)
    assert torch.equal(batched > 0.5, single > 0.5)
    torch.testing.assert_close(model.predict(images), batched, atol=0, rtol=0)


def test_model_rejects_image_size_not_multiple_of_8(taef2):
    with pytest.raises(ValueError, match="multiple of 8"):
        WaveGMS(taef2, image_size=100)


def test_folded_mask_head_equals_the_mean_of_the_decoded_image(taef2):
    """decode_mask folds the decoder's last conv; it must equal the channel mean of decode()."""
    z = torch.randn(2, 32, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        reference = taef2.decode(z).mean(dim=1, keepdim=True).clamp(0, 1)
        torch.testing.assert_close(taef2.decode_mask(z), reference, atol=1e-5, rtol=0)
