"""Inference precision: the engine's defaults segment real images as float32 does, on every CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import BUSI
from napari_wavegms.core.device import native_bf16
from napari_wavegms.core.io import read_image
from napari_wavegms.inference.segmenter import Segmenter
from napari_wavegms.zoo.registry import suggest_model

MODEL = suggest_model("ultrasound")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


@pytest.fixture(scope="module")
def busi_images(busi_names) -> list[np.ndarray]:
    return [read_image(BUSI / "images" / f"{n}.png") for n in busi_names[:8]]


@pytest.fixture(scope="module")
def fp32_masks(busi_images) -> list[np.ndarray]:
    reference = Segmenter(MODEL, device="cpu", precision="fp32", channels_last=False)
    assert reference.precision == "fp32" and not reference.model.vae.channels_last
    return [reference(im) for im in busi_images]


def test_auto_masks_equal_fp32_masks_on_real_busi_images(busi_images, fp32_masks):
    auto = Segmenter(MODEL, device="cpu")
    # bf16 only where this CPU computes it natively; the frozen decoder runs channels-last on a CPU
    assert auto.precision == ("bf16" if native_bf16(torch.device("cpu")) else "fp32")
    assert auto.model.vae.channels_last and not auto.channels_last
    scores = [dice(auto(im), ref) for im, ref in zip(busi_images, fp32_masks, strict=True)]
    assert np.mean(scores) >= 0.99 and sum(ref.any() for ref in fp32_masks) >= 6


def test_forced_bf16_masks_agree_with_fp32(busi_images, fp32_masks):
    bf16 = Segmenter(MODEL, device="cpu", precision="bf16", batch_size=4)
    assert bf16.precision == "bf16" and bf16.dtype is torch.bfloat16
    scores = [dice(bf16(im), ref) for im, ref in zip(busi_images[:4], fp32_masks[:4], strict=True)]
    assert np.mean(scores) >= 0.97


def test_precision_is_checked():
    with pytest.raises(ValueError, match="float16 needs a CUDA or MPS device"):
        Segmenter(MODEL, device="cpu", precision="fp16")
    with pytest.raises(TypeError):  # the older half=True/False spelling is gone: precision= says it
        Segmenter(MODEL, device="cpu", half=True)
