"""Paired folders on real BUSI files: pairing, every bad input with its own message, splits, loading, augmentation."""

from __future__ import annotations

import shutil

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import torch

from conftest import BUSI
from napari_wavegms.core.images import normalize_intensity, resize_image, to_rgb
from napari_wavegms.training.augment import AUGMENTATIONS, AugmentConfig, augment_batch, hsv_to_rgb, rgb_to_hsv
from napari_wavegms.training.config import TrainConfig
from napari_wavegms.training.data import (
    DataError,
    Pair,
    PairDataset,
    carve,
    load_pair,
    make_splits,
    pair_tensors,
    read_split,
    scan_pairs,
)


def make_folder(root, names, src=BUSI):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copy(src / "images" / f"{n}.png", root / "images" / f"{n}.png")
        shutil.copy(src / "masks" / f"{n}.png", root / "masks" / f"{n}.png")
    return root


def test_scan_real_busi_is_complete():
    scan = scan_pairs(BUSI / "images", BUSI / "masks")
    assert len(scan) == 780 and scan.problems == []
    test = read_split(BUSI / "splits" / "gms_test.txt")
    assert len(scan_pairs(BUSI / "images", BUSI / "masks", names=test)) == 130


def test_empty_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    scan = scan_pairs(tmp_path / "images", tmp_path / "masks")
    assert len(scan) == 0 and "hold no image files" in scan.problems[0]
    with pytest.raises(DataError, match="no image/mask pairs to train on"):
        make_splits(TrainConfig(data_dir=str(tmp_path)))
    missing = scan_pairs(tmp_path / "nope", tmp_path / "masks")
    assert "images folder does not exist" in missing.problems[0]


def test_every_bad_input_has_its_own_message(tmp_path, busi_names):
    good = busi_names[:2]
    root = make_folder(tmp_path, good)
    img = iio.imread(BUSI / "images" / f"{busi_names[2]}.png")
    msk = iio.imread(BUSI / "masks" / f"{busi_names[2]}.png")
    # mismatched names
    iio.imwrite(root / "images" / "lonely.png", img)
    iio.imwrite(root / "masks" / "orphan.png", msk)
    # corrupt image
    (root / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    iio.imwrite(root / "masks" / "corrupt.png", msk)
    # a mask of another size
    iio.imwrite(root / "images" / "small.png", img)
    iio.imwrite(root / "masks" / "small.png", msk[: msk.shape[0] // 2])
    # a 16-bit TIFF image: accepted, min–max scaled like inference does
    img16 = (img.astype(np.uint16) * 257 + 3)
    tifffile.imwrite(root / "images" / "deep.tif", img16)
    iio.imwrite(root / "masks" / "deep.png", msk)
    # an RGBA mask: accepted, alpha ignored
    rgba = np.dstack([msk, msk, msk, np.full_like(msk, 255)])
    iio.imwrite(root / "images" / "rgba.png", img)
    iio.imwrite(root / "masks" / "rgba.png", rgba)
    # a non-binary (JPEG-like) mask: used, but reported
    soft = msk.copy()
    soft[msk > 0] = 200
    soft[0, 0] = 17
    iio.imwrite(root / "images" / "soft.png", img)
    iio.imwrite(root / "masks" / "soft.png", soft)

    fast = scan_pairs(root / "images", root / "masks")
    assert any("lonely.png: no mask" in p for p in fast.problems)
    assert any("orphan.png: no image" in p for p in fast.problems)
    scan = scan_pairs(root / "images", root / "masks", check=True)
    text = "\n".join(scan.problems)
    assert "unreadable image" in text and "corrupt.png" in text
    assert "small.png: mask is" in text and "pixels but its image" in text
    assert sorted(scan.names) == sorted([*good, "deep", "rgba", "soft"])  # all problems found, none fatal
    notes = "\n".join(scan.notes)
    assert "deep.tif: uint16 image" in notes
    assert "rgba.png: RGBA mask" in notes
    assert "soft.png: mask is not binary (3 distinct values)" in notes

    pairs = {p.name: p for p in scan.pairs}
    x16, _, _ = load_pair(pairs["deep"])
    assert x16.dtype == np.float32 and x16.min() == 0.0 and x16.max() == 1.0
    np.testing.assert_allclose(x16[..., 0], normalize_intensity(img16), atol=1e-6)
    raw16, m16, _ = load_pair(pairs["deep"], as_stored=True)  # the file's own array, for as-predicted scoring
    assert raw16.dtype == np.uint16 and np.array_equal(raw16, img16) and m16.shape == img16.shape
    small = Pair("small", root / "images" / "small.png", root / "masks" / "small.png")
    with pytest.raises(DataError, match=r"small\.png: mask is"):  # checked as strictly as the decoded pair
        load_pair(small, as_stored=True)
    _, m_rgba, _ = load_pair(pairs["rgba"])
    np.testing.assert_array_equal(m_rgba, msk > 0)


def test_split_files_and_carving(tmp_path):
    f = tmp_path / "list.txt"
    f.write_text("# a comment\nbenign_1\n\nbenign_2.png  # with suffix\nmalignant_3\n")
    assert read_split(f) == ["benign_1", "benign_2", "malignant_3"]
    with pytest.raises(DataError, match="split file not found"):
        read_split(tmp_path / "missing.txt")
    names = [f"n{i}" for i in range(50)]
    kept, val = carve(names, 0.1, 2333)
    assert len(val) == 5 and not set(kept) & set(val) and len(kept) + len(val) == 50
    assert carve(names, 0.1, 2333) == (kept, val) and carve(names, 0.1, 1)[1] != val
    assert len(carve(names[:3], 0.01, 0)[1]) == 1           # at least one validation image
    assert carve(names[:1], 0.5, 0) == (["n0"], [])        # cannot carve from one


def test_busi_config_splits():
    from conftest import REPO

    cfg = TrainConfig.from_yaml(REPO / "training" / "configs" / "busi.yaml")
    s = make_splits(cfg)
    assert s.sizes() == {"train": 465, "val": 52, "test": 130}
    assert not {p.name for p in s.train} & {p.name for p in s.test}
    assert not {p.name for p in s.val} & {p.name for p in s.test}
    kv = make_splits(TrainConfig.from_yaml(REPO / "training" / "configs" / "kvasir-seg.yaml"))
    assert kv.sizes() == {"train": 792, "val": 88, "test": 120} and kv.problems == []


def test_the_ultrasound_model_data_holds_lesion_free_scans_everywhere_but_the_test(tmp_path):
    """training/scripts/make_ultrasound_data.py: BUSI (lesion and lesion-free) + BUS-BRA joined by links;
    validation holds lesion-free scans and whole BUS-BRA patients; BUSI's test lists are never trained
    on; each lesion-free training scan is listed NORMAL_REPEAT times and trained on that often per epoch."""
    import importlib.util

    from conftest import REPO, SHARED

    spec = importlib.util.spec_from_file_location("mud", REPO / "training" / "scripts" / "make_ultrasound_data.py")
    mud = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mud)
    lists = mud.build(SHARED / "data", tmp_path / "us")
    normal_train = read_split(BUSI / "splits" / "normal_train.txt")
    never = set(read_split(BUSI / "splits" / "gms_test.txt")) | set(read_split(BUSI / "splits" / "normal_test.txt"))
    assert not never & set(lists["train"] + lists["val"])
    assert 10 <= len(set(lists["val"]) & set(normal_train)) < 20
    bra_val = {n.split("-")[0] for n in lists["val"] if n.startswith("bus_")}
    assert bra_val and not any(n.split("-")[0] in bra_val for n in lists["train"])  # patient-wise
    cfg = TrainConfig(data_dir=str(tmp_path / "us"), train_split="splits/train.txt", val_split="splits/val.txt",
                      test_split="splits/test.txt")
    s = make_splits(cfg)
    assert s.problems == [] and any("repeated training names" in n for n in s.notes)
    counts = {}
    for pair in s.train:
        counts[pair.name] = counts.get(pair.name, 0) + 1
    assert {counts[n] for n in normal_train if n in counts} == {mud.NORMAL_REPEAT}
    assert len(s.train) == len(lists["train"]) and len(s.val) == len(lists["val"]) and len(s.test) == 130
    # a carved validation never splits a repeated name between training and validation
    carved = make_splits(TrainConfig(data_dir=str(tmp_path / "us"), train_split="splits/train.txt", val_fraction=0.2))
    assert not {p.name for p in carved.train} & {p.name for p in carved.val}


def test_dataset_uses_the_inference_preprocessing(busi_names):
    scan = scan_pairs(BUSI / "images", BUSI / "masks", names=busi_names[:4])
    ds = PairDataset(scan.pairs, 64)
    assert ds.preloaded and len(ds) == 4
    x, m, i = ds[1]
    assert x.shape == (3, 64, 64) and m.shape == (1, 64, 64) and i == 1
    assert set(torch.unique(m).tolist()) <= {0.0, 1.0} and m.sum() > 0
    raw = iio.imread(scan.pairs[1].image)
    expected = resize_image(torch.from_numpy(to_rgb(normalize_intensity(raw), "gray")).permute(2, 0, 1)[None], 64)[0]
    torch.testing.assert_close(x, expected, atol=2e-3, rtol=0)     # float16 storage
    lazy = PairDataset(scan.pairs, 64, preload=False)
    assert not lazy.preloaded
    torch.testing.assert_close(lazy[1][0], expected)
    xb, mb = ds.batch([0, 3])
    assert xb.shape == (2, 3, 64, 64) and mb.shape == (2, 1, 64, 64)


def test_augmentations_keep_pairs_aligned_and_images_alive(busi_names):
    scan = scan_pairs(BUSI / "images", BUSI / "masks", names=busi_names)
    ds = PairDataset(scan.pairs, 64)
    x, m = ds.batch(range(len(ds)))
    gen = torch.Generator().manual_seed(0)
    # colour jitter on every image: values stay in [0, 1] and no image is blanked (the reference's bug)
    xa, ma = augment_batch(x, m, gen, AugmentConfig(flip_p=0, rot90_p=0, affine_p=0, jitter_p=1))
    assert xa.min() >= 0 and xa.max() <= 1
    assert (xa.flatten(1).std(1) > 0.5 * x.flatten(1).std(1)).all()
    assert (xa - x).abs().max() > 0.01 and torch.equal(ma, m)
    # geometry: an image that *is* its mask must still be its mask after flips, turns and affine warps
    xm = m.expand(-1, 3, -1, -1).clone()
    xg, mg = augment_batch(xm, m, gen, AugmentConfig(jitter_p=0, affine_p=0))
    torch.testing.assert_close(xg[:, :1], mg)
    assert not torch.equal(mg, m)
    xg, mg = augment_batch(xm, m, gen, AugmentConfig(flip_p=0, rot90_p=0, jitter_p=0, affine_p=1))
    assert set(torch.unique(mg).tolist()) <= {0.0, 1.0}
    inter = ((xg[:, :1] > 0.5) & (mg > 0.5)).sum()
    union = ((xg[:, :1] > 0.5) | (mg > 0.5)).sum()
    assert inter / union > 0.95
    # reproducible from the seed
    a = augment_batch(x, m, torch.Generator().manual_seed(5))
    b = augment_batch(x, m, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_robust_augmentation_changes_how_an_image_looks_never_where_the_lesion_is(busi_names):
    """Gamma, shading, blur and noise (what differs between devices) touch the image only: the mask is
    untouched, values stay in [0, 1], a grey scan stays grey and each step really changes the image."""
    from dataclasses import replace

    scan = scan_pairs(BUSI / "images", BUSI / "masks", names=busi_names)
    x, m = PairDataset(scan.pairs, 64).batch(range(len(scan.pairs)))
    only_look = AugmentConfig(flip_p=0, rot90_p=0, jitter_p=0, affine_p=0)
    grey = ((x[:, 0] == x[:, 1]) & (x[:, 1] == x[:, 2])).flatten(1).all(1)
    assert grey.any()
    for step in ("gamma_p", "shading_p", "blur_p", "noise_p"):
        xa, ma = augment_batch(x, m, torch.Generator().manual_seed(1), replace(only_look, **{step: 1.0}))
        assert torch.equal(ma, m), step
        assert xa.min() >= 0 and xa.max() <= 1, step
        assert torch.equal(xa[grey][:, 0], xa[grey][:, 1]) and torch.equal(xa[grey][:, 1], xa[grey][:, 2]), step
        assert ((xa - x).abs().flatten(1).amax(1) > 0).all(), step
    blurred, _ = augment_batch(x, m, torch.Generator().manual_seed(1), replace(only_look, blur_p=1.0))
    assert blurred.diff(dim=-1).abs().mean() < 0.9 * x.diff(dim=-1).abs().mean()  # edges softened
    robust = AUGMENTATIONS["robust"]
    assert robust.gamma_p and robust.shading_p and robust.blur_p and robust.noise_p
    assert AUGMENTATIONS["standard"] == AugmentConfig()  # docs/design.md §6 stays the default


def test_hsv_round_trip():
    rgb = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(rgb)), rgb, atol=1e-5, rtol=0)


def test_pair_tensors_resize_rules():
    image = np.random.default_rng(0).random((40, 30, 3), dtype=np.float32)
    mask = np.zeros((40, 30), bool)
    mask[10:20, 5:15] = True
    x, m = pair_tensors(image, mask, 16)
    assert x.shape == (3, 16, 16) and m.shape == (1, 16, 16)
    assert set(torch.unique(m).tolist()) == {0.0, 1.0}        # nearest: still binary
    assert isinstance(Pair("a", BUSI, BUSI).name, str)


# ---------------------------------------------------------------- channels: grey + alpha, RGBA without napari's flag
def grey_alpha_png(path, grey: np.ndarray) -> np.ndarray:
    """Write ``grey`` with a non-trivial alpha channel as a grey+alpha (LA) PNG; returns the H×W×2 array."""
    alpha = np.full_like(grey, 255)
    alpha[: grey.shape[0] // 3] = 40  # alpha is not intensity: it must not change the mask
    la = np.stack([grey, alpha], axis=-1)
    iio.imwrite(path, la, extension=".png")
    return la


def test_grey_alpha_and_unflagged_rgba_are_one_2d_image():
    from napari_wavegms.core.images import image_layout

    two = image_layout((300, 400, 2), np.uint8, rgb=False)  # napari opens LA PNGs so, rgb=False
    assert (two.kind, two.lead, two.mask_shape, two.squeeze) == ("gray", (), (300, 400), True)
    assert two.warning is None
    rgba = image_layout((300, 400, 4), np.uint8, rgb=False)  # napari did not mark it RGB
    assert (rgba.kind, rgba.mask_shape) == ("rgba", (300, 400))
    stack = image_layout((5, 300, 400, 2), np.uint16, rgb=False)
    assert (stack.kind, stack.lead, stack.mask_shape) == ("gray", (5,), (5, 300, 400))
    assert image_layout((300, 400, 3), np.uint8).kind == "rgb"
    # an array that looks misread (slices 3 pixels wide) is segmented as asked, with a warning
    misread = image_layout((300, 400, 3), np.uint8, rgb=False)
    assert misread.lead == (300,) and "300 slice(s) of 400×3 pixels" in misread.warning
    assert image_layout((300, 400), np.uint8).warning is None


def busi_model() -> str:
    from napari_wavegms.zoo.registry import builtin_models

    return next(name for name in builtin_models() if "busi" in name)


def test_grey_alpha_png_reads_as_its_grey_channel_and_segments_like_it(tmp_path, busi_names):
    from napari_wavegms.core.io import read_image
    from napari_wavegms.inference.segmenter import Segmenter

    grey = iio.imread(BUSI / "images" / f"{busi_names[0]}.png")
    la = grey_alpha_png(tmp_path / "la.png", grey)
    assert iio.imread(tmp_path / "la.png").shape == (*grey.shape, 2)
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), grey)
    seg = Segmenter(busi_model(), device="cpu")
    expected = seg(grey)
    assert expected.shape == grey.shape and expected.any() and not expected.all()
    np.testing.assert_array_equal(seg(la, rgb=False), expected)  # as napari passes it
    np.testing.assert_array_equal(seg(la), expected)


def test_a_carved_validation_can_keep_frames_of_one_examination_together(tmp_path):
    """Two frames of one examination (BUSI normal_97 / normal_98, and normal_41 / normal_47) on both
    sides of a carved split would check a model on near-copies of what it learned from; with
    ``val_by_examination`` (the fine-tune's setting) each pair stays on one side, whatever the seed."""
    twins = [("normal_97", "normal_98"), ("normal_41", "normal_47")]
    others = ["benign_3", "benign_8", "malignant_1", "malignant_5", "normal_1", "benign_20"]
    make_folder(tmp_path / "d", [n for pair in twins for n in pair] + others)
    split_apart = 0
    for seed in range(12):
        for by_examination in (False, True):
            s = make_splits(TrainConfig(data_dir=str(tmp_path / "d"), val_fraction=0.4, seed=seed,
                                        val_by_examination=by_examination))
            val = {p.name for p in s.val}
            apart = sum((a in val) != (b in val) for a, b in twins)
            assert len(s.val) >= 4 and not val & {p.name for p in s.train}
            if by_examination:
                assert apart == 0, (seed, sorted(val))
                assert "frames of one examination kept together" in s.how["val"]
            else:
                split_apart += apart
    assert split_apart > 0  # image by image, some seed puts twins on both sides

    (tmp_path / "d" / "images" / "benign_20.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    s = make_splits(TrainConfig(data_dir=str(tmp_path / "d"), val_fraction=0.4, val_by_examination=True))
    assert len(s.train) + len(s.val) == 10  # an unreadable image has a group of its own; the loader reports it


def test_grouping_changes_nothing_where_no_two_images_look_alike():
    names = [f"n{i}" for i in range(20)]
    assert carve(names, 0.2, 7, groups=list(range(20))) == carve(names, 0.2, 7)
    _, carved = carve(names, 0.2, 7, groups=[0, 0, *range(1, 19)])
    assert len(carved) >= 4 and ("n0" in carved) == ("n1" in carved)
