"""The image-kind classifier and the model choice built on it, on real images of each data set.

The accuracy on whole held-out splits is measured by ``napari_wavegms.tuning.modality_fit`` (docs/results.md);
these tests re-check a few held-out images of each set, the shapes, dtypes and array types a napari
layer can hold, and the disguises an ultrasound image arrives in from other devices.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import BUSI, KVASIR, SHARED
from napari_wavegms.core.io import read_image
from napari_wavegms.inference.modality import FOLDER_FLOOR, KINDS, classify, folder_prior, with_prior
from napari_wavegms.inference.routing import choose_model
from napari_wavegms.zoo.registry import builtin_models, suggest_model

BUSBRA = SHARED / "data" / "bus-bra-256"
ISIC = SHARED / "data" / "isic2017-256"


def held_out(folder, split: str, suffix: str, n: int = 6) -> list:
    names = (folder / "splits" / split).read_text().split()
    step = max(1, len(names) // n)
    return [folder / "images" / f"{name}{suffix}" for name in names[::step][:n]]


CASES = [
    (BUSI, "gms_test.txt", ".png", "ultrasound"),
    (BUSI, "normal_test.txt", ".png", "ultrasound"),
    (BUSBRA, "fold5.txt", ".png", "ultrasound"),
    (KVASIR, "medico2020_val.txt", ".jpg", "endoscopy"),
    (ISIC, "val.txt", ".jpg", "dermoscopy"),
]


@pytest.mark.parametrize(("folder", "split", "suffix", "kind"), CASES, ids=[f"{c[0].name}-{c[1]}" for c in CASES])
def test_held_out_images_of_each_data_set(folder, split, suffix, kind):
    for path in held_out(folder, split, suffix):
        found = classify(read_image(path))
        assert found.kind == kind, (path.name, found)
        assert found.reason.startswith("grey" if kind == "ultrasound" else "colour"), found.reason
        assert 0.5 < found.confidence <= 1.0 and set(found.scores) == set(KINDS)


def _jpeg(rgb: np.ndarray, quality: int = 70) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer))


def test_ultrasound_in_the_disguises_other_devices_give_it():
    grey = read_image(BUSI / "images" / "benign_3.png")
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    annotated = Image.fromarray(rgb)
    draw = ImageDraw.Draw(annotated)
    draw.line((20, 20, 200, 120), fill=(255, 255, 0), width=2)
    draw.text((30, 300), "LT BREAST 2 o'clock 3 cm", fill=(0, 255, 0))
    for x in (150, 260):
        draw.line((x - 6, 200, x + 6, 200), fill=(0, 255, 255))
        draw.line((x, 194, x, 206), fill=(0, 255, 255))
    doppler = rgb.copy()
    h, w = grey.shape
    box = doppler[h // 3: h // 3 + 80, w // 3: w // 3 + 100]
    flow = np.random.default_rng(0).random(box.shape[:2]) < 0.3
    box[flow] = (220, 30, 10)
    for image in (
        grey,
        rgb,  # grey saved as RGB
        _jpeg(rgb),  # ... and as JPEG: channels almost, not exactly, equal
        np.asarray(annotated),  # calipers and text in colour
        _jpeg(np.asarray(annotated)),
        doppler,  # a colour Doppler box
        grey.astype(np.uint16) * 257,  # 16 bit
        grey.astype(np.float32) / 255,  # float
        np.stack([grey, np.full_like(grey, 255)], axis=-1),  # grey + alpha, as napari opens such PNGs
        np.stack([grey] * 3),  # a stack of frames
        np.asarray(Image.fromarray(grey).resize((w * 3, h * 3))),  # a large image
        np.asarray(Image.fromarray(grey).resize((w // 4, h // 4))),  # a small one
    ):
        found = classify(image)
        assert found.kind == "ultrasound", (image.shape, image.dtype, found)


def test_busis_own_colour_overlays_stay_ultrasound():
    """BUSI keeps 16 scans as RGB because they carry colour overlays (read_image keeps the colour)."""
    for name in ("benign_173", "benign_240", "benign_255", "malignant_196", "normal_113"):
        image = read_image(BUSI / "images" / f"{name}.png")
        assert image.ndim == 3
        assert classify(image).kind == "ultrasound", name


def test_colour_kinds_survive_16_bit_rgba_and_stacks():
    polyp = read_image(KVASIR / "images" / "cju16jgnyzp970878melv7r25.jpg")
    skin = read_image(held_out(ISIC, "val.txt", ".jpg")[0])
    for image, kind in ((polyp, "endoscopy"), (skin, "dermoscopy")):
        alpha = np.full((*image.shape[:2], 1), 255, np.uint8)
        for variant in (image, image.astype(np.uint16) * 257, np.concatenate([image, alpha], -1),
                        np.stack([image, image]), image.astype(np.float64) / 255):
            assert classify(variant).kind == kind, (kind, variant.shape, variant.dtype)
        assert not classify(image).reason.startswith("grey")


class CountingArray:
    """A lazy array (like dask's) that counts the pixels actually read from it."""

    def __init__(self, data: np.ndarray, repeat: int) -> None:
        self.data, self.repeat = data, repeat
        self.shape = (data.shape[0] * repeat, data.shape[1] * repeat, *data.shape[2:])
        self.dtype, self.ndim = data.dtype, data.ndim
        self.read = 0

    def __getitem__(self, key):
        rows, cols = key[0], key[1]
        h, w = self.data.shape[:2]
        ys = np.arange(self.shape[0])[rows] % h
        xs = np.arange(self.shape[1])[cols] % w
        out = self.data[ys][:, xs]
        if len(key) > 2:
            out = out[(slice(None), slice(None), *key[2:])]
        self.read += out.shape[0] * out.shape[1]
        return out


def test_huge_and_lazy_images_are_sampled_not_read():
    polyp = read_image(KVASIR / "images" / "cju16jgnyzp970878melv7r25.jpg")
    lazy = CountingArray(polyp, repeat=40)  # ~ 21k × 25k pixels
    assert classify(lazy, rgb=True).kind in KINDS
    assert lazy.read <= 65_536

    import dask.array as da

    grey = read_image(BUSI / "images" / "benign_3.png")
    assert classify(da.from_array(grey, chunks=128)).kind == "ultrasound"


def test_blank_and_tiny_images_do_not_break_it():
    for image in (np.zeros((64, 64), np.uint8), np.full((64, 64, 3), 128, np.uint8), np.zeros((1, 1, 3)),
                  np.full((8, 8), np.nan, np.float32)):
        assert classify(image).kind in KINDS


# ---------------------------------------------------------------- a folder's images inform each other
#: An ISIC 2017 validation image of pink, evenly lit skin that the classifier alone takes for endoscopy.
AMBIGUOUS_SKIN = ISIC / "images" / "ISIC_0014979.jpg"


def _probabilities(paths: list) -> np.ndarray:
    return np.array([[classify(read_image(p)).scores[k] for k in KINDS] for p in paths])


def test_a_dermoscopy_folder_settles_the_image_taken_alone_for_endoscopy():
    alone = classify(read_image(AMBIGUOUS_SKIN))
    assert alone.kind == "endoscopy", "the classifier changed: pick another ambiguous ISIC image for this test"
    prior = folder_prior(_probabilities([*held_out(ISIC, "val.txt", ".jpg", n=8), AMBIGUOUS_SKIN]))
    assert prior.sum() == pytest.approx(1.0)
    assert prior[KINDS.index("dermoscopy")] > 0.9
    assert prior.min() >= FOLDER_FLOOR * 0.9  # a kind the folder lacks keeps a floor share

    judged = classify(read_image(AMBIGUOUS_SKIN), prior=prior)
    assert judged.kind == "dermoscopy"
    assert "taken with its folder, mostly dermoscopy (alone: endoscopy" in judged.reason
    assert judged.scores["dermoscopy"] > alone.scores["dermoscopy"]
    assert choose_model(read_image(AMBIGUOUS_SKIN), prior=prior).model == suggest_model("dermoscopy")

    # images of other kinds that are clear keep their kind in that folder, and say nothing of it
    for path, kind in ((KVASIR / "images" / "cju16jgnyzp970878melv7r25.jpg", "endoscopy"),
                       (BUSI / "images" / "benign_3.png", "ultrasound")):
        found = classify(read_image(path), prior=prior)
        assert found.kind == kind and "folder" not in found.reason


def test_folder_prior_and_bayes_rule():
    uniform = np.full(3, 1 / 3)
    rows = np.array([[0.1, 0.6, 0.3], [0.0, 0.2, 0.8]])
    np.testing.assert_allclose(with_prior(rows, uniform), rows)  # the classifier's own prior changes nothing
    np.testing.assert_allclose(with_prior(rows[0], [0.0, 0.5, 0.5]), [[0.0, 2 / 3, 1 / 3]])
    np.testing.assert_allclose(folder_prior(np.empty((0, 3))), uniform)
    balanced = folder_prior(np.eye(3).repeat(5, axis=0))  # five sure images of each kind
    np.testing.assert_allclose(balanced, uniform, atol=1e-6)
    one_kind = folder_prior(np.array([[0.0, 0.1, 0.9]] * 20 + [[0.0, 0.55, 0.45]]))
    assert one_kind[2] > 0.9 and one_kind.min() == pytest.approx(FOLDER_FLOOR, rel=0.05)
    assert with_prior([0.0, 0.55, 0.45], one_kind).argmax() == 2  # the ambiguous one follows its folder
    assert with_prior([0.0, 0.995, 0.005], one_kind).argmax() == 1  # a sure one keeps its own kind


# ---------------------------------------------------------------- the model choice
def test_each_kind_gets_its_built_in_model():
    models = builtin_models()
    assert {info.card.kind for info in models.values()} == set(KINDS)
    for path, kind in (
        (BUSI / "images" / "benign_3.png", "ultrasound"),
        (KVASIR / "images" / "cju16jgnyzp970878melv7r25.jpg", "endoscopy"),
        (held_out(ISIC, "val.txt", ".jpg")[1], "dermoscopy"),
    ):
        choice = choose_model(read_image(path))
        assert choice.kind == kind and choice.exact
        assert models[choice.model].card.kind == kind
        assert choice.message.startswith(choice.model) and kind in choice.message and choice.reason in choice.message
    assert "busi" in suggest_model("ultrasound")
    assert "kvasir-seg" in suggest_model("endoscopy")
    assert "isic" in suggest_model("dermoscopy")


def test_a_kind_without_its_model_gets_the_nearest_one_and_says_so(monkeypatch):
    """An install without the skin model (or a kind added later) falls back to a colour model, with a
    message that names what is missing."""
    from napari_wavegms.zoo import registry as models_module

    everything = builtin_models()
    without_skin = {n: i for n, i in everything.items() if i.card.kind != "dermoscopy"}
    monkeypatch.setattr(models_module, "builtin_models", lambda: without_skin)
    choice = choose_model(read_image(held_out(ISIC, "val.txt", ".jpg")[1]))
    assert choice.kind == "dermoscopy" and not choice.exact
    assert without_skin[choice.model].card.images == "rgb"
    assert "no built-in model for dermoscopy" in choice.message and "choose a dermoscopy model" in choice.message


def test_cards_say_their_kind():
    for name, info in builtin_models().items():
        assert info.card.kind in KINDS, name
