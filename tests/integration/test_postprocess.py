"""Post-processing on real BUSI lesion masks and real segmentations: holes, specks (in pixels and in
physical units), the largest object, the model card's default and what overrides it, through the engine,
``segment_folder`` and ``wavegms-predict``; the confidence stays the model's own."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import label

from conftest import BUSI
from napari_wavegms import cli
from napari_wavegms.core.io import read_image
from napari_wavegms.core.progress import run_to_end
from napari_wavegms.inference.postprocess import (
    NONE,
    PostProcess,
    card_postprocess,
    fill_holes,
    keep_largest,
    pixel_area,
    remove_small,
)
from napari_wavegms.inference.segmenter import Segmenter
from napari_wavegms.zoo.registry import builtin_models


def n_objects(mask: np.ndarray) -> int:
    return int(label(np.asarray(mask) > 0, connectivity=2).max())


@pytest.fixture(scope="module")
def lesion(busi_names) -> np.ndarray:
    """A real BUSI ground-truth mask: one lesion without holes."""
    for name in busi_names:
        mask = read_image(BUSI / "masks" / f"{name}.png") > 0
        if n_objects(mask) == 1 and mask.sum() > 2000 and np.array_equal(ndimage.binary_fill_holes(mask), mask):
            return mask
    raise AssertionError("no single-lesion BUSI mask among the test names")


@pytest.fixture(scope="module")
def gray(busi_names) -> np.ndarray:
    return read_image(BUSI / "images" / f"{busi_names[0]}.png")


@pytest.fixture(scope="module")
def seg(random_checkpoint) -> Segmenter:
    return Segmenter(random_checkpoint, device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def top(seg, gray) -> float:
    """A threshold that keeps the untrained model's top 15 %: many objects of many sizes, some with holes."""
    return float(np.quantile(seg(gray, soft=True), 0.85))


# ---------------------------------------------------------------- the steps on real masks
def test_fill_holes_fills_a_ring_cut_from_a_real_lesion(lesion):
    ring = lesion & ~ndimage.binary_erosion(lesion, iterations=8)
    assert ring.sum() < lesion.sum() - 500  # a real hole
    filled = fill_holes(ring)
    np.testing.assert_array_equal(filled, lesion)
    assert PostProcess(fill_holes=True).apply(ring).dtype == np.uint8
    np.testing.assert_array_equal(PostProcess(fill_holes=True).apply(ring), lesion)
    np.testing.assert_array_equal(NONE.apply(ring), ring)  # nothing asked, nothing changed
    # A ring opened to the image border encloses nothing: it is not "filled".
    cut = ring.copy()
    rows = np.flatnonzero(lesion.any(1))
    cut[rows[len(rows) // 2], :] = False  # a gap through the ring: the hole now reaches the background
    assert fill_holes(cut).sum() < lesion.sum()


def test_keep_largest_keeps_the_lesion_and_drops_specks_and_a_second_object(lesion):
    noisy = lesion.copy()
    noisy[:4, :4] = True  # a speck in a corner
    noisy[-30:, -30:] = True  # a second, smaller object
    assert n_objects(noisy) == 3
    kept = keep_largest(noisy)
    assert n_objects(kept) == 1
    np.testing.assert_array_equal(kept, lesion)
    assert not keep_largest(np.zeros_like(lesion)).any()


def test_min_size_in_pixels_and_min_area_in_physical_units(lesion):
    noisy = lesion.copy()
    noisy[:5, :5] = True  # a 25-pixel speck
    n = int(lesion.sum())
    np.testing.assert_array_equal(remove_small(noisy, 26), lesion)
    np.testing.assert_array_equal(remove_small(noisy, 25), noisy)  # "smaller than": 25 px stays
    # At 0.1 mm a pixel (0.01 mm²), the speck is 0.25 mm² and the lesion n/100 mm².
    mm = (0.1, 0.1)
    assert pixel_area(mm) == pytest.approx(0.01)
    np.testing.assert_array_equal(PostProcess(min_area=1.0).apply(noisy, mm), lesion)
    np.testing.assert_array_equal(PostProcess(min_area=1.0).apply(noisy), noisy)  # 1 unit² = 1 px unscaled
    np.testing.assert_array_equal(PostProcess(min_area=1.0).apply(noisy, (0.5, 0.5)), noisy)  # speck 6.25 mm²
    assert not PostProcess(min_area=n / 100 + 0.01).apply(noisy, mm).any()  # larger than the lesion: all gone
    # a stack's scale (z, y, x): the last two axes are the slice's
    np.testing.assert_array_equal(PostProcess(min_area=1.0).apply(noisy, (5.0, 0.1, 0.1)), lesion)
    # a fraction of the image's area (what model cards store)
    frac = 26 / noisy.size
    np.testing.assert_array_equal(PostProcess(min_fraction=frac).apply(noisy), lesion)
    with pytest.raises(ValueError, match="positive"):
        pixel_area((0.0, 1.0))
    with pytest.raises(ValueError, match="min_area"):
        PostProcess(min_area=-1)


def test_user_options_replace_the_defaults():
    card = PostProcess(fill_holes=True, keep_largest=True, min_fraction=0.005)
    assert card.merged() == card
    assert card.merged(fill_holes=False) == PostProcess(keep_largest=True, min_fraction=0.005)
    # any size given replaces the default size, 0 included
    assert card.merged(min_size=0) == PostProcess(fill_holes=True, keep_largest=True)
    assert card.merged(min_area=2.0) == PostProcess(fill_holes=True, keep_largest=True, min_area=2.0)
    assert not card.merged(fill_holes=False, keep_largest=False, min_size=0).active
    assert PostProcess.from_dict({"fill_holes": True, "chosen_on": {"dice": 0.7}}) == PostProcess(fill_holes=True)


# ---------------------------------------------------------------- through the engine
def test_segment_applies_each_option_to_the_thresholded_mask(seg, gray, top):
    raw = seg(gray, threshold=top)
    assert seg.postprocess == NONE and n_objects(raw) >= 3  # a checkpoint without a card: no clean-up
    assert n_objects(seg(gray, threshold=top, keep_largest=True)) == 1
    np.testing.assert_array_equal(seg(gray, threshold=top, keep_largest=True), keep_largest(raw))
    np.testing.assert_array_equal(seg(gray, threshold=top, fill_holes=True), fill_holes(raw))
    assert seg(gray, threshold=top, fill_holes=True).sum() > raw.sum()  # the random mask has holes
    # min_area with the layer's scale: 0.2 mm pixels → 0.04 mm² each
    sizes = np.bincount(label(raw, connectivity=2).ravel())[1:]
    cut = float(np.median(sizes)) + 0.5
    by_area = seg(gray, threshold=top, min_area=cut * 0.04, scale=(0.2, 0.2))
    np.testing.assert_array_equal(by_area, remove_small(raw, cut))
    assert 1 <= n_objects(by_area) < n_objects(raw)
    np.testing.assert_array_equal(seg(gray, threshold=top, min_size=int(np.ceil(cut))), by_area)
    # labels after clean-up, and the same in segment_many (the batch path)
    labels = seg(gray, threshold=top, label_objects=True, keep_largest=True)
    assert labels.dtype == np.int32 and labels.max() == 1
    many = seg.segment_many([gray], threshold=top, min_area=cut * 0.04, scale=(0.2, 0.2))[0]
    np.testing.assert_array_equal(many, by_area)
    with pytest.raises(ValueError, match="positive"):
        seg(gray, min_area=1.0, scale=(0.0, 0.2))


def test_confidence_is_measured_on_what_the_model_drew(seg, gray, top):
    plain = run_to_end(seg.segment(gray, threshold=top, with_confidence=True))
    gone = run_to_end(seg.segment(gray, threshold=top, with_confidence=True, min_size=gray.size))
    assert not gone.mask.any()  # every object removed …
    assert gone.confidence == plain.confidence < 1.0  # … but the confidence is not that of an empty mask
    largest = seg.segment_many([gray], threshold=top, keep_largest=True, with_confidence=True)[0]
    assert largest.confidence == pytest.approx(float(plain.confidence))


@pytest.fixture
def carded(tmp_path, monkeypatch, random_checkpoint) -> str:
    """A built-in model (the untrained checkpoint) whose card asks for the largest object and filled holes."""
    from napari_wavegms.zoo import registry as models

    folder = tmp_path / "builtin"
    folder.mkdir()
    os.symlink(random_checkpoint, folder / "test-carded.safetensors")
    card = {"name": "test-carded", "kind": "ultrasound", "images": "gray",
            "postprocess": {"fill_holes": True, "keep_largest": True, "chosen_on": {"note": "a test"}}}
    (folder / "test-carded.json").write_text(json.dumps(card))
    monkeypatch.setattr(models, "BUILTIN_DIR", folder)
    return "test-carded"


def test_the_model_cards_default_applies_and_an_explicit_option_overrides_it(carded, gray, top, seg):
    raw = seg(gray, threshold=top)
    by_name = Segmenter(carded, device="cpu")
    assert by_name.postprocess == PostProcess(fill_holes=True, keep_largest=True)
    expected = keep_largest(fill_holes(raw))
    np.testing.assert_array_equal(by_name(gray, threshold=top), expected)
    # the widgets pass the weights' path: the card is found by it too
    by_path = Segmenter(str(builtin_models()[carded].path), device="cpu")
    np.testing.assert_array_equal(by_path(gray, threshold=top), expected)
    # what the caller gives wins
    np.testing.assert_array_equal(by_name(gray, threshold=top, keep_largest=False, fill_holes=False), raw)
    np.testing.assert_array_equal(by_name(gray, threshold=top, keep_largest=False), fill_holes(raw))
    np.testing.assert_array_equal(Segmenter(carded, device="cpu", postprocess=NONE)(gray, threshold=top), raw)
    assert card_postprocess("no/such/checkpoint.safetensors") == NONE


def test_wavegms_predict_uses_the_card_and_its_flags_override_it(carded, tmp_path, gray, top, seg, busi_names):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(BUSI / "images" / f"{busi_names[0]}.png", src / "scan.png")
    raw = seg(gray, threshold=top)
    common = [str(src), "--model", carded, "--device", "cpu", "--quiet", "--threshold", str(top),
              "--convention", "0/1"]

    def run(out: str, *flags: str) -> np.ndarray:
        assert cli.predict_main([*common[:1], str(tmp_path / out), *common[1:], *flags]) == 0
        return read_image(tmp_path / out / "scan.png")

    np.testing.assert_array_equal(run("card"), keep_largest(fill_holes(raw)))
    np.testing.assert_array_equal(run("off", "--no-fill-holes", "--no-keep-largest"), raw)
    np.testing.assert_array_equal(run("specks", "--no-fill-holes", "--no-keep-largest", "--min-size", "50"),
                                  remove_small(raw, 50))
    assert cli.predict_main([*common[:1], str(tmp_path / "bad"), *common[1:], "--min-size", "-1"]) == 2


# ---------------------------------------------------------------- the shipped cards
@pytest.mark.parametrize("name", sorted(builtin_models()))
def test_each_builtin_card_records_its_validated_choice(name):
    record = builtin_models()[name].card.record.get("postprocess")
    assert record is not None, f"{name}: run python -m napari_wavegms.tuning.postprocess_choice --write-card"
    chosen = record["chosen_on"]
    assert "validation" in chosen["split"] and "napari_wavegms.tuning.postprocess_choice" in chosen["command"]
    assert chosen["val_chosen"]["dice"] >= chosen["val_none"]["dice"]  # chosen on validation: never worse there
    assert Path(builtin_models()[name].path).is_file()
    assert card_postprocess(name) == PostProcess.from_dict(record)
