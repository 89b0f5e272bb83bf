"""``wavegms-predict``: exit status 0 / 1 / 2 / 130 and what it prints, on real images."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import BUSI
from napari_wavegms import cli
from napari_wavegms.core.io import read_image


@pytest.fixture
def images(tmp_path: Path, busi_names: list[str]) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    for name in busi_names[:3]:
        shutil.copy(BUSI / "images" / f"{name}.png", src / f"{name}.png")
    return src


def test_all_done_exits_0_and_rerun_skips(tmp_path, images, random_checkpoint, capsys, busi_names):
    out = tmp_path / "out"
    argv = [str(images), str(out), "--model", str(random_checkpoint), "--device", "cpu", "--quiet"]
    assert cli.predict_main(argv) == 0
    for name in busi_names[:3]:
        assert read_image(out / f"{name}.png").shape == read_image(images / f"{name}.png").shape
    err = capsys.readouterr().err
    assert "3 done, 0 skipped, 0 failed" in err and "summary: " in err and "cpu" in err
    assert cli.predict_main(argv) == 0
    assert "0 done, 3 skipped, 0 failed" in capsys.readouterr().err


def test_some_failed_exits_1_and_names_them(tmp_path, images, random_checkpoint, capsys):
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    out = tmp_path / "out"
    code = cli.predict_main([str(images), str(out), "--model", str(random_checkpoint), "--quiet",
                             "--format", "tif", "--convention", "0/1", "--overlays"])
    assert code == 1
    err = capsys.readouterr().err
    assert "FAILED broken.png" in err and "3 done" in err
    csv_path = Path(err.split("summary: ")[1].split()[0])
    assert csv_path.is_file() and csv_path.parent == out
    assert len(list(out.glob("*.tif"))) == 3 and len(list((out / "overlays").glob("*.png"))) == 3


def test_single_file_and_options(tmp_path, images, random_checkpoint, busi_names):
    image = images / f"{busi_names[0]}.png"
    out = tmp_path / "out"
    assert cli.predict_main([str(image), str(out), "--model", str(random_checkpoint), "--quiet",
                             "--threshold", "0.2", "--batch-size", "1"]) == 0
    mask = read_image(out / image.name)
    assert mask.shape == read_image(image).shape and set(np.unique(mask)) <= {0, 255}


@pytest.mark.parametrize(
    "argv",
    [
        [],  # INPUT and OUTPUT missing
        ["{in}", "{out}", "--format", "jpg"],
        ["{in}", "{out}", "--threshold", "2"],
        ["{missing}", "{out}", "--model", "{model}"],
        ["{in}", "{in}", "--model", "{model}"],
        ["{in}", "{out}", "--model", "no-such-model"],
        ["{in}", "{out}", "--model", "{model}", "--device", "tpu"],
    ],
)
def test_usage_errors_exit_2(tmp_path, images, random_checkpoint, argv, capsys):
    values = {"in": images, "out": tmp_path / "out", "missing": tmp_path / "missing", "model": random_checkpoint}
    code = cli.predict_main([a.format(**values) for a in argv])
    assert code == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_list_models_prints_the_builtin_names(capsys):
    from napari_wavegms.zoo.registry import builtin_models

    assert cli.predict_main(["--list-models"]) == 0
    assert capsys.readouterr().out.split() == list(builtin_models())


def test_ctrl_c_cancels_cleanly(tmp_path, images, random_checkpoint, monkeypatch, capsys):
    from napari_wavegms.inference.segmenter import Segmenter

    calls = []
    original = Segmenter.segment_many

    def interrupted(self, images, **kw):
        calls.append(len(images))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, images, **kw)

    monkeypatch.setattr(Segmenter, "segment_many", interrupted)
    out = tmp_path / "out"
    code = cli.predict_main([str(images), str(out), "--model", str(random_checkpoint), "--quiet",
                             "--batch-size", "1"])
    assert code == 130
    assert "cancelled" in capsys.readouterr().err
    assert len(list(out.glob("*.png"))) == 1  # the first file is kept
    assert len(list(out.glob("wavegms-summary-*.csv"))) == 1
    assert not list(out.rglob(".*"))


def test_console_script_is_installed(tmp_path):
    exe = Path(sys.executable).with_name("wavegms-predict")
    result = subprocess.run([str(exe), str(tmp_path / "missing"), str(tmp_path / "out")], capture_output=True,
                            text=True, env={**os.environ, "WAVEGMS_CACHE_DIR": str(tmp_path)}, timeout=120)
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_without_model_a_polyp_folder_is_segmented_with_the_polyp_model(tmp_path, capsys):
    from conftest import KVASIR

    src = tmp_path / "polyps"
    src.mkdir()
    shutil.copy(KVASIR / "images" / "cju0qkwl35piu0993l0dewei2.jpg", src / "polyp.jpg")
    assert cli.predict_main([str(src), str(tmp_path / "out"), "--quiet", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    from napari_wavegms.zoo.registry import suggest_model

    assert f"model: {suggest_model('endoscopy')} for 1 file" in err
    assert "kvasir-seg" in suggest_model("endoscopy") and "the built-in model for its kind (endoscopy: colour" in err
    assert read_image(tmp_path / "out" / "polyp.png").shape == read_image(src / "polyp.jpg").shape[:2]


def _csv_rows(out: Path) -> dict[str, dict[str, str]]:
    import csv

    (path,) = out.glob("wavegms-summary-*.csv")
    with open(path, newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


def test_a_folder_mixing_kinds_is_segmented_as_if_each_kind_were_alone(tmp_path, busi_names, capsys):
    """Per file: the two BUSI scans get the masks they get in a folder of their own, the polyp the polyp
    model's; the CLI and the summary CSV say which model each file got and why."""
    from conftest import KVASIR
    from napari_wavegms.zoo.registry import builtin_models

    kinds = {name: info.card.kind for name, info in builtin_models().items()}
    alone, mixed = tmp_path / "busi", tmp_path / "mixed"
    for folder in (alone, mixed):
        folder.mkdir()
        for name in busi_names[:2]:
            shutil.copy(BUSI / "images" / f"{name}.png", folder / f"{name}.png")
    shutil.copy(KVASIR / "images" / "cju0qkwl35piu0993l0dewei2.jpg", mixed / "a_polyp.jpg")  # sorted first

    for folder in (alone, mixed):
        assert cli.predict_main([str(folder), str(tmp_path / f"{folder.name}-out"), "--quiet", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    for name in busi_names[:2]:
        busi_alone = read_image(tmp_path / "busi-out" / f"{name}.png")
        assert busi_alone.any()
        np.testing.assert_array_equal(read_image(tmp_path / "mixed-out" / f"{name}.png"), busi_alone)
    rows = _csv_rows(tmp_path / "mixed-out")
    assert kinds[rows["a_polyp.jpg"]["model"]] == "endoscopy"
    assert rows["a_polyp.jpg"]["model_choice"].startswith("endoscopy: colour")
    for name in busi_names[:2]:
        assert kinds[rows[f"{name}.png"]["model"]] == "ultrasound"
        assert rows[f"{name}.png"]["model_choice"].startswith("ultrasound: grey")
    assert "for 1 file, the built-in model for its kind (endoscopy: colour" in err
    assert "for 2 files, the built-in model for its kind (ultrasound: grey" in err


def test_an_ambiguous_image_is_judged_with_its_folder(tmp_path):
    """A dermoscopy image that the kind classifier alone takes for endoscopy gets the skin model in a
    folder of dermoscopy images, and the CSV says why; ``--kind-per-image`` judges it alone."""
    from conftest import SHARED
    from napari_wavegms.zoo.registry import suggest_model

    isic = SHARED / "data" / "isic2017-256"
    src = tmp_path / "skin"
    src.mkdir()
    for name in ("ISIC_0014979", *(isic / "splits" / "val.txt").read_text().split()[:3]):
        shutil.copy(isic / "images" / f"{name}.jpg", src / f"{name}.jpg")
    with_folder, alone = tmp_path / "with-folder", tmp_path / "alone"
    assert cli.predict_main([str(src), str(with_folder), "--quiet", "--device", "cpu", "--no-tta"]) == 0
    assert cli.predict_main([str(src), str(alone), "--quiet", "--device", "cpu", "--no-tta", "--kind-per-image"]) == 0
    judged, own = _csv_rows(with_folder)["ISIC_0014979.jpg"], _csv_rows(alone)["ISIC_0014979.jpg"]
    # alone, its statistics (endoscopy) and the models' encoder (skin) disagree: unknown, flagged
    assert own["model"] == suggest_model("endoscopy") and own["kind"] == "unknown" and own["review"] == "yes"
    assert judged["model"] == suggest_model("dermoscopy") and judged["kind"] == "dermoscopy"
    assert judged["review"] == "yes"
    assert "review: its folder's kinds overturned its own reading" in judged["model_choice"]
    assert "taken with its folder, mostly dermoscopy (alone: endoscopy" in judged["model_choice"]
    for rows in (_csv_rows(with_folder), _csv_rows(alone)):  # the clear images get the skin model either way
        assert [row["model"] for name, row in rows.items() if name != "ISIC_0014979.jpg"] == [
            suggest_model("dermoscopy")] * 3
    assert not (read_image(with_folder / "ISIC_0014979.png") == read_image(alone / "ISIC_0014979.png")).all()


def test_a_model_the_user_chose_always_wins(tmp_path, busi_names, random_checkpoint, capsys):
    from conftest import KVASIR

    src = tmp_path / "mixed"
    src.mkdir()
    shutil.copy(BUSI / "images" / f"{busi_names[0]}.png", src / "scan.png")
    shutil.copy(KVASIR / "images" / "cju0qkwl35piu0993l0dewei2.jpg", src / "polyp.jpg")
    out = tmp_path / "out"
    assert cli.predict_main([str(src), str(out), "--model", str(random_checkpoint), "--quiet"]) == 0
    rows = _csv_rows(out)
    assert {row["model"] for row in rows.values()} == {str(random_checkpoint)}
    assert {row["model_choice"] for row in rows.values()} == {""}
    assert "the built-in model for its kind" not in capsys.readouterr().err


def test_offline_first_run_segments_with_every_builtin_model(tmp_path, busi_names):
    """A fresh install: no network (WAVEGMS_OFFLINE=1), no WAVEGMS_WEIGHTS_DIR and an empty cache.

    Built-in models leave the frozen decoder out; the copy shipped in the package serves them all.
    """
    from napari_wavegms.zoo.registry import builtin_models

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(BUSI / "images" / f"{busi_names[0]}.png", src / "scan.png")
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k != "WAVEGMS_WEIGHTS_DIR"}
    env |= {"WAVEGMS_OFFLINE": "1", "WAVEGMS_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    exe = Path(sys.executable).with_name("wavegms-predict")
    models = builtin_models()
    ultrasound = next(name for name in models if "busi" in name)  # the ultrasound model's name holds its data
    for name in [ultrasound, *(n for n in models if n != ultrasound)]:
        out = tmp_path / f"out-{name}"
        result = subprocess.run([str(exe), str(src), str(out), "--model", name, "--device", "cpu", "--quiet"],
                                capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr
        mask = read_image(out / "scan.png")
        assert mask.shape == read_image(src / "scan.png").shape
        if name == ultrasound:
            assert mask.any()  # a lesion scan: the shipped decoder gives a real mask
    assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*"))  # nothing was fetched
