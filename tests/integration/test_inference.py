"""The segmentation engine on real BUSI and Kvasir images: layouts, dtypes, stacks, errors, objects.

The model is the untrained (seeded, deterministic) checkpoint of conftest: its soft masks are not
meaningful, but they are non-trivial (about a quarter of a BUSI image is above 0.5), which is all
these tests need to check shapes, dtypes, normalisation, thresholding and batching.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import BUSI, KVASIR, drain, soft_atol
from napari_wavegms.core.device import native_bf16
from napari_wavegms.core.images import image_layout, intensity_scale, normalize_intensity, resize_mask
from napari_wavegms.core.io import read_image
from napari_wavegms.core.progress import Progress, run_to_end
from napari_wavegms.inference.postprocess import label_mask
from napari_wavegms.inference.segmenter import (
    TTA_FLIPS,
    BlankImageWarning,
    Segmenter,
    UnsupportedImageError,
    mask_confidence,
)
from napari_wavegms.zoo.registry import suggest_model

KVASIR_IMAGE = "cju0qoxqj9q6s0835b43399p4"  # 1070×1348 RGB: non-square and large


@pytest.fixture(scope="module")
def seg(random_checkpoint) -> Segmenter:
    return Segmenter(random_checkpoint, device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def gray(busi_names) -> np.ndarray:
    image = read_image(BUSI / "images" / f"{busi_names[0]}.png")
    assert image.ndim == 2 and image.dtype == np.uint8
    return image


@pytest.fixture(scope="module")
def colour() -> np.ndarray:
    image = read_image(KVASIR / "images" / f"{KVASIR_IMAGE}.jpg")
    assert image.shape == (1070, 1348, 3)
    return image


def test_reports_its_device_and_precision(seg):
    assert seg.device.type == "cpu"
    assert seg.device_name.startswith("cpu")
    # auto: bfloat16 exactly where this CPU computes it natively (or WAVEGMS_CPU_BF16 says so), else float32
    assert seg.precision == ("bf16" if native_bf16(torch.device("cpu")) else "fp32")
    assert seg.image_size == 64 and seg.config["note"] == "untrained"


def test_gray_image_gives_a_binary_mask_of_its_shape(seg, gray):
    mask = seg(gray)
    assert mask.shape == gray.shape and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1}
    assert 0.02 < mask.mean() < 0.98  # non-trivial, so the comparisons below mean something


def test_threshold_is_applied_to_the_soft_mask_after_resizing_back(seg, gray):
    soft = seg(gray, soft=True)
    assert soft.shape == gray.shape and soft.dtype == np.float32
    assert 0.0 <= soft.min() and soft.max() <= 1.0
    np.testing.assert_array_equal(seg(gray), (soft > 0.5).astype(np.uint8))
    np.testing.assert_array_equal(seg(gray, threshold=0.3), (soft > 0.3).astype(np.uint8))
    # Thresholding at full size gives a smooth, sub-grid boundary: not a nearest-upscaled 64² mask.
    coarse = resize_mask(__import__("torch").from_numpy(seg(gray))[None, None].float(), 64)
    blocky = resize_mask(coarse, gray.shape).numpy()[0, 0]
    assert (blocky != seg(gray)).any()


def test_uint8_and_float_versions_of_an_image_give_the_same_mask(seg, gray, colour):
    for image in (gray, colour[:300, :400]):
        reference = seg(image)
        np.testing.assert_array_equal(seg(image / 255.0), reference)
        np.testing.assert_array_equal(seg(image.astype(np.float64)), reference)
        np.testing.assert_array_equal(seg(image.astype(np.float32) / 255.0), reference)


def test_uint16_is_min_max_scaled(seg, gray):
    assert gray.min() == 0 and gray.max() == 255
    np.testing.assert_array_equal(seg(gray.astype(np.uint16) * 257), seg(gray))
    sixteen = gray.astype(np.uint16) * 200 + 1000  # another range: the same image after min-max
    soft16, soft8 = seg(sixteen, soft=True), seg(gray, soft=True)
    np.testing.assert_allclose(soft16, soft8, atol=1e-4)


def test_rgb_rgba_and_a_large_non_square_image(seg, colour):
    mask = seg(colour)
    assert mask.shape == colour.shape[:2] and mask.dtype == np.uint8
    assert 0.0 < mask.mean() < 1.0
    rgba = np.concatenate([colour, np.full((*colour.shape[:2], 1), 255, np.uint8)], axis=-1)
    np.testing.assert_array_equal(seg(rgba), mask)  # alpha is ignored
    # The same picture at twice the size gives (nearly) the same mask at twice the size.
    big = np.repeat(np.repeat(colour, 2, axis=0), 2, axis=1)
    big_mask = seg(big)
    assert big_mask.shape == (2140, 2696)
    assert (big_mask[::2, ::2] == mask).mean() > 0.97


def test_single_channel_axis_is_dropped(seg, gray):
    np.testing.assert_array_equal(seg(gray[..., None]), seg(gray))


def test_three_slice_stack_is_segmented_slice_by_slice_with_progress(seg, gray):
    stack = np.stack([gray, gray[::-1], gray[:, ::-1]])
    job = seg.segment(stack)
    events, masks = drain(job)
    assert all(isinstance(e, Progress) for e in events)
    assert events[0].done == 0 and events[-1].done == events[-1].total == 3
    assert masks.shape == stack.shape and masks.dtype == np.uint8
    # Batched slices agree with one-at-a-time segmentation (up to float rounding at the threshold).
    assert (masks[0] == seg(gray)).mean() > 0.999
    assert (masks[1] == seg(gray[::-1])).mean() > 0.999


def test_leading_axes_are_kept_for_rgb_time_series(seg, colour):
    small = colour[:120, :160]
    series = np.stack([np.stack([small, small[::-1]])] * 2)  # T×Z×H×W×3
    masks = seg(series)
    assert masks.shape == (2, 2, 120, 160)
    np.testing.assert_array_equal(masks[0], masks[1])


def test_stack_statistics_are_shared_unless_asked_per_slice(seg, gray):
    bright = gray.astype(np.uint16) * 257
    stack = np.stack([bright, bright // 4])  # the second slice is darker
    per_stack = seg(stack, soft=True)
    per_slice = seg(stack, soft=True, normalize="slice")
    atol = soft_atol(seg.precision)  # what rounding alone may change: 0.03 in bf16, ~1e-5 in fp32
    np.testing.assert_allclose(per_slice[0], per_slice[1], atol=atol)  # each stretched on its own
    assert np.abs(per_stack[0] - per_stack[1]).max() > 2 * atol  # one range: the dark slice stays dark
    np.testing.assert_allclose(per_stack[0], seg(bright, soft=True), atol=atol)


def test_cancel_between_batches(random_checkpoint, gray, monkeypatch):
    seg = Segmenter(random_checkpoint, device="cpu", batch_size=1)
    batches = []
    predict = seg.model.predict
    monkeypatch.setattr(seg.model, "predict", lambda x: batches.append(len(x)) or predict(x))
    job = seg.segment(np.stack([gray] * 5))
    first = next(job)
    assert not batches  # nothing computed before the first event: a cancel there costs nothing
    second = next(job)
    assert (first.done, second.done, second.total) == (0, 1, 5)
    ran = len(batches)
    assert 1 <= ran < 5  # the slices are computed as the job is driven, not all up front
    job.close()  # no error; the generator is finished
    with pytest.raises(StopIteration):
        next(job)
    assert len(batches) == ran  # no batch ran after the cancel


def _top_threshold(seg, image) -> float:
    """A threshold that keeps the top 15 % of the untrained model's soft mask: several objects."""
    return float(np.quantile(seg(image, soft=True), 0.85))


def test_objects_are_labelled_and_small_ones_removed(seg, gray):
    t = _top_threshold(seg, gray)
    binary = seg(gray, threshold=t)
    labels = seg(gray, threshold=t, label_objects=True)
    assert labels.dtype == np.int32 and labels.shape == gray.shape
    np.testing.assert_array_equal(labels > 0, binary > 0)
    n = int(labels.max())
    assert n >= 2 and set(np.unique(labels)) == set(range(n + 1))
    sizes = np.bincount(labels.ravel())[1:]
    cut = int(np.median(sizes)) + 1
    kept = seg(gray, threshold=t, label_objects=True, min_size=cut)
    assert 0 < kept.max() < n
    assert np.bincount(kept.ravel())[1:].min() >= cut
    cleaned = seg(gray, threshold=t, min_size=cut)
    assert cleaned.dtype == np.uint8 and set(np.unique(cleaned)) <= {0, 1}
    np.testing.assert_array_equal(cleaned, (kept > 0).astype(np.uint8))


def test_labels_are_unique_across_a_stack(seg, gray):
    labels = seg(np.stack([gray, gray]), threshold=_top_threshold(seg, gray), label_objects=True)
    first, second = set(np.unique(labels[0])) - {0}, set(np.unique(labels[1])) - {0}
    assert first and second and not first & second
    assert len(second) == len(first)


def test_label_mask_on_a_drawn_mask():
    mask = np.zeros((20, 20), np.uint8)
    mask[1:4, 1:4] = 1  # 9 px
    mask[10:18, 10:18] = 1  # 64 px
    mask[5, 15] = 1  # 1 px
    labels = label_mask(mask)
    assert labels.max() == 3
    kept = label_mask(mask, min_size=10)
    assert kept.max() == 1 and (kept > 0).sum() == 64


@pytest.mark.parametrize(
    ("array", "words"),
    [
        (np.zeros(16, np.uint8), "1-D"),
        (np.zeros((0, 16), np.uint8), "zero size"),
        (np.zeros((16, 16), np.complex64), "complex"),
        (np.full((16, 16), np.nan, np.float32), "no finite values"),
        (np.full((16, 16), "a"), "not a numeric"),
    ],
)
def test_arrays_that_cannot_be_segmented_get_a_clear_error(seg, array, words):
    with pytest.raises(UnsupportedImageError, match=words):
        seg(array)


def test_partly_nan_images_and_constant_images_still_segment(seg, gray):
    f = gray.astype(np.float32)
    f[:10] = np.nan
    f[10:12] = np.inf
    assert seg(f).shape == gray.shape
    with pytest.warns(BlankImageWarning):
        assert seg(np.zeros((50, 70), np.uint16)).shape == (50, 70)


def test_segment_many_batches_files_and_isolates_bad_ones(seg, gray, colour):
    small = colour[:200, :300]
    results = seg.segment_many([gray, np.zeros((5, 5, 5)), small])  # a stack is not one image
    assert isinstance(results[1], UnsupportedImageError)
    assert results[0].shape == gray.shape and results[2].shape == small.shape[:2]
    assert (results[0] == seg(gray)).mean() > 0.999


@pytest.mark.parametrize("name", ["u16", "float01_nan", "float_wide", "int32", "u8"])
def test_stack_scale_equals_the_training_normalisation_for_one_image(gray, name):
    f = gray.astype(np.float32)
    arrays = {
        "u16": gray.astype(np.uint16) * 100 + 7,
        "float01_nan": np.where(gray > 250, np.nan, f / 255),
        "float_wide": f * 3 - 100,
        "int32": gray.astype(np.int32) - 1000,
        "u8": gray,
    }
    a = arrays[name]
    layout = image_layout(a.shape, a.dtype)
    assert layout.kind == "gray" and layout.mask_shape == gray.shape
    np.testing.assert_array_equal(intensity_scale([a], a.dtype).apply(a), normalize_intensity(a))


# ---------------------------------------------------------------- blank images, confidence, tta
@pytest.fixture(scope="module")
def busi_model() -> Segmenter:
    """The built-in BUSI model: blank-image and confidence behaviour only mean something on a trained model."""
    return Segmenter(suggest_model("ultrasound"), device="cpu", precision="fp32")


BLANKS = {
    "black uint8": np.zeros((240, 320), np.uint8),
    "grey uint8": np.full((240, 320), 128, np.uint8),
    "grey RGB": np.full((240, 320, 3), 90, np.uint8),
    "constant uint16": np.full((240, 320), 1000, np.uint16),
    "constant float": np.full((240, 320), 0.3, np.float32),
    "grey with 1-level noise": (128 + (np.arange(240 * 320).reshape(240, 320) % 2)).astype(np.uint8),
}


@pytest.mark.parametrize("what", list(BLANKS))
def test_a_blank_image_gets_an_empty_mask_without_the_model(busi_model, what, monkeypatch):
    image = BLANKS[what]
    result = busi_model.segment_many([image], with_confidence=True)[0]
    assert result.mask.shape == image.shape[:2] and not result.mask.any()
    assert bool(result.blank) and result.score == 1.0 and not result.review
    assert "blank" in result.note
    with pytest.warns(BlankImageWarning, match="no intensity variation"):
        assert not busi_model(image).any()
    # Without the rule the model draws a large blob on the flat input: the rule is what empties it
    # (with the presence gate and the test-time flips off: the gate would hide the blob, and averaging
    # the blob with its flipped copies can thin it below the threshold).
    monkeypatch.setattr("napari_wavegms.inference.segmenter.BLANK_STD", -1.0)
    monkeypatch.setattr(busi_model, "presence", None)
    monkeypatch.setattr(busi_model, "flips", ())
    assert busi_model(image).mean() > 0.05


def test_a_blank_slice_of_a_stack_is_empty_and_the_others_are_segmented(busi_model, gray):
    stack = np.stack([gray, np.zeros_like(gray), gray[:, ::-1]])
    result = run_to_end(busi_model.segment(stack, with_confidence=True))
    assert result.blank.tolist() == [False, True, False]
    assert result.confidence.shape == (3,) and result.confidence[1] == 1.0
    assert not result.mask[1].any() and result.mask[0].any()
    np.testing.assert_array_equal(result.mask[0], busi_model(gray))
    assert result.note.startswith("1 of 3 slices are blank")
    with pytest.warns(BlankImageWarning, match="1 of 3 slices"):
        soft = busi_model(stack, soft=True)
    assert soft.dtype == np.float32 and not soft[1].any()


def test_mask_confidence_of_drawn_soft_masks():
    sharp = np.zeros((64, 64), np.float32)
    sharp[20:40, 20:40] = 1.0
    unsure = sharp * 0.6 + 0.2  # the same object at 0.8, the background at 0.2
    coin_toss = sharp * 0.55
    nothing = np.full((64, 64), 0.02, np.float32)
    c = mask_confidence(torch.from_numpy(np.stack([sharp, unsure, coin_toss, nothing]))[:, None]).tolist()
    assert c == pytest.approx([1.0, 0.6, 0.1, 1.0], abs=1e-6)  # 2p − 1 over the foreground; nothing drawn: 1


def test_tta_averages_the_flips_and_is_flip_equivariant(gray):
    plain = Segmenter(suggest_model("ultrasound"), device="cpu", precision="fp32", tta=False)
    tta = Segmenter(suggest_model("ultrasound"), device="cpu", precision="fp32", tta=True)
    x = plain.model_input(gray)
    with torch.inference_mode():
        by_hand = torch.stack([plain.predict(x.flip(d) if d else x).flip(d) if d else plain.predict(x)
                               for d in ((), *TTA_FLIPS)]).mean(0)
        np.testing.assert_allclose(tta.predict(x).numpy(), by_hand.numpy(), atol=1e-5)
        assert (tta.predict(x) - plain.predict(x)).abs().max() > 0.05  # the flips do change the soft mask
    # Averaged over all four flips, segmenting a mirrored image gives the mirrored mask.
    np.testing.assert_allclose(tta(gray[:, ::-1].copy(), soft=True), tta(gray, soft=True)[:, ::-1], atol=1e-4)
    result = tta.segment_many([gray], with_confidence=True)[0]
    assert 0.0 <= result.score <= 1.0 and result.mask.shape == gray.shape
