"""Folder batch processing on a folder of real images with the troubles real folders have."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import BUSI, KVASIR, drain
from napari_wavegms.core.io import read_image
from napari_wavegms.core.progress import run_to_end
from napari_wavegms.inference.batch import CSV_COLUMNS, BatchUsageError, segment_folder
from napari_wavegms.inference.segmenter import Segmenter
from napari_wavegms.zoo.registry import suggest_model

KVASIR_IMAGE = "cju0qkwl35piu0993l0dewei2"


@pytest.fixture(scope="module")
def seg(random_checkpoint) -> Segmenter:
    return Segmenter(random_checkpoint, device="cpu", batch_size=2)


@pytest.fixture
def folder(tmp_path: Path, busi_names: list[str]) -> Path:
    """Two BUSI PNGs, a Kvasir JPEG in a sub-folder, a truncated PNG, a text file and a 16-bit TIFF."""
    src = tmp_path / "in"
    (src / "nested").mkdir(parents=True)
    for name in busi_names[:2]:
        shutil.copy(BUSI / "images" / f"{name}.png", src / f"{name}.png")
    shutil.copy(KVASIR / "images" / f"{KVASIR_IMAGE}.jpg", src / "nested" / f"{KVASIR_IMAGE}.jpg")
    whole = (BUSI / "images" / f"{busi_names[2]}.png").read_bytes()
    (src / "broken.png").write_bytes(whole[: len(whole) // 3])
    (src / "notes.txt").write_text("not an image\n")
    busi = read_image(BUSI / "images" / f"{busi_names[3]}.png")
    tifffile.imwrite(src / "deep.tif", busi.astype(np.uint16) * 200 + 50)
    return src


def snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        return list(reader)


def test_folder_with_good_and_bad_files(tmp_path, folder, seg, busi_names):
    before = snapshot(folder)
    out = tmp_path / "out"
    events, summary = drain(segment_folder(folder, out, recursive=True, overlays=True, segmenter=seg))

    assert events[-1].done == events[-1].total == 6
    assert [e.done for e in events] == sorted(e.done for e in events)
    done = {r.file for r in summary.done}
    assert done == {f"{busi_names[0]}.png", f"{busi_names[1]}.png", "deep.tif", f"nested/{KVASIR_IMAGE}.jpg"}
    failed = {r.file: r.error for r in summary.failed}
    assert set(failed) == {"broken.png"}
    assert "broken.png" in failed["broken.png"] and "cannot be read" in failed["broken.png"]
    skipped = {r.file: r.error for r in summary.skipped}  # a text file beside the images is no failure
    assert set(skipped) == {"notes.txt"} and "not an image" in skipped["notes.txt"]

    for r in summary.done:  # masks: same stem and sub-folder, the input's shape, 0/255
        mask = read_image(out / Path(r.file).with_suffix(".png"))
        image = read_image(folder / r.file)
        assert mask.shape == image.shape[:2] and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255}
        assert r.shape == image.shape and 0.0 <= r.foreground <= 1.0
        assert r.foreground == pytest.approx((mask > 0).mean())
        overlay = read_image(out / "overlays" / Path(r.file).with_suffix(".png"))
        assert overlay.shape == (*image.shape[:2], 3)
    assert (out / "nested" / f"{KVASIR_IMAGE}.png").is_file()
    assert not list(out.rglob(".*"))  # no temporary files left behind

    rows = read_csv(summary.csv_path)
    assert summary.csv_path.parent == out and summary.csv_path.name.startswith("wavegms-summary-")
    assert {row["file"]: row["status"] for row in rows} == {r.file: r.status for r in summary.results}
    assert next(row for row in rows if row["file"] == "deep.tif")["shape"] == "x".join(
        str(s) for s in read_image(folder / "deep.tif").shape)
    assert snapshot(folder) == before  # inputs untouched, nothing written into the input folder

    # A rerun skips what is done (masks not rewritten) and records the failures again.
    masks_before = snapshot(out)
    _, again = drain(segment_folder(folder, out, recursive=True, overlays=True, segmenter=seg))
    assert {r.file for r in again.skipped} == done | {"notes.txt"}
    assert {r.file for r in again.failed} == {"broken.png"}
    assert again.csv_path != summary.csv_path and summary.csv_path.is_file()
    after = snapshot(out)
    assert {k: v for k, v in after.items() if not k.startswith("wavegms-summary")} == {
        k: v for k, v in masks_before.items() if not k.startswith("wavegms-summary")}

    # overwrite=True does them again.
    _, third = drain(segment_folder(folder, out, recursive=True, overwrite=True, segmenter=seg))
    assert {r.file for r in third.done} == done
    assert snapshot(folder) == before


def test_not_recursive_and_pattern(tmp_path, folder, seg):
    _, summary = drain(segment_folder(folder, tmp_path / "o1", segmenter=seg))
    assert not any(r.file.startswith("nested/") for r in summary.results)
    _, summary = drain(segment_folder(folder, tmp_path / "o2", pattern="*.PNG", recursive=True, segmenter=seg))
    assert {r.file for r in summary.results} <= {p.name for p in folder.glob("*.png")}
    assert len(summary.results) == 3 and len(summary.failed) == 1


def test_tif_output_and_conventions(tmp_path, folder, seg):
    _, summary = drain(segment_folder(folder, tmp_path / "o", pattern="*.tif", fmt="tif", convention="0/1",
                                    segmenter=seg))
    mask = tifffile.imread(tmp_path / "o" / "deep.tif")
    assert [r.status for r in summary.results] == ["done"]
    assert mask.shape == read_image(folder / "deep.tif").shape and set(np.unique(mask)) <= {0, 1}
    _, summary = drain(segment_folder(folder, tmp_path / "l", pattern="*.tif", convention="labels", min_size=20,
                                    threshold=0.45, segmenter=seg))
    labels = read_image(tmp_path / "l" / "deep.png")
    assert labels.max() >= 1 and set(np.unique(labels)) == set(range(labels.max() + 1))
    assert np.bincount(labels.ravel())[1:].min() >= 20


def test_output_equal_to_input_is_refused_and_missing_input_reported(tmp_path, folder, seg):
    with pytest.raises(BatchUsageError, match="is the input folder"):
        next(segment_folder(folder, folder, segmenter=seg))
    with pytest.raises(BatchUsageError, match="does not exist"):
        next(segment_folder(tmp_path / "nothing", tmp_path / "o", segmenter=seg))
    with pytest.raises(BatchUsageError, match="format"):
        next(segment_folder(folder, tmp_path / "o", fmt="jpg", segmenter=seg))
    image = folder / "deep.tif"
    with pytest.raises(BatchUsageError, match="is the input folder"):  # a file's own folder
        next(segment_folder(image, folder, fmt="tif", segmenter=seg))


def test_output_inside_the_input_is_left_out_of_the_scan(folder, seg):
    before = snapshot(folder)
    out = folder / "masks"
    for _ in range(2):
        _, summary = drain(segment_folder(folder, out, pattern="*.png", recursive=True, segmenter=seg))
        assert not any(r.file.startswith("masks/") for r in summary.results)
    assert {k: v for k, v in snapshot(folder).items() if not k.startswith("masks/")} == before


def test_an_output_that_would_land_on_an_input_is_refused(tmp_path, seg, busi_names):
    data = tmp_path / "data"
    src = data / "in"
    (src / "in").mkdir(parents=True)
    shutil.copy(BUSI / "images" / f"{busi_names[0]}.png", src / "x.png")
    shutil.copy(BUSI / "images" / f"{busi_names[1]}.png", src / "in" / "x.png")  # → data/in/x.png
    before = snapshot(src)
    _, summary = drain(segment_folder(src, data, recursive=True, segmenter=seg))
    status = {r.file: (r.status, r.error) for r in summary.results}
    assert status["x.png"][0] == "done"
    assert status["in/x.png"][0] == "failed" and "inside the input folder" in status["in/x.png"][1]
    assert snapshot(src) == before


def test_same_stem_twice_is_caught(tmp_path, seg, busi_names):
    src = tmp_path / "in"
    src.mkdir()
    image = read_image(BUSI / "images" / f"{busi_names[0]}.png")
    shutil.copy(BUSI / "images" / f"{busi_names[0]}.png", src / "a.png")
    tifffile.imwrite(src / "a.tif", image)
    _, summary = drain(segment_folder(src, tmp_path / "out", segmenter=seg))
    assert [r.status for r in summary.results] == ["done", "failed"]
    assert "also the output of a.png" in summary.results[1].error


def test_single_file_input(tmp_path, folder, seg):
    _, summary = drain(segment_folder(folder / "deep.tif", tmp_path / "o", segmenter=seg))
    assert [r.file for r in summary.done] == ["deep.tif"]
    assert (tmp_path / "o" / "deep.png").is_file()


def test_cancel_keeps_finished_masks_and_a_summary(tmp_path, folder, seg):
    """After a cancel the CSV has a row for every mask on disk: the file that was written (a cancel
    takes effect after the image being segmented) and masks of an earlier run that this run had not
    reached, with what that run's CSV said of them; the summary handed over by the first event says
    the same."""
    out = tmp_path / "out"
    drain(segment_folder(folder, out, pattern="deep.tif", segmenter=seg))  # an earlier run's mask
    job = segment_folder(folder, out, recursive=True, segmenter=seg)  # read ahead 2 (seg.batch_size)
    summary = next(job).info["summary"]  # the start
    first = next(job)
    job.close()
    rows = read_csv(summary.csv_path)
    assert len(rows) == 2 and rows[0]["file"] == first.message
    masks = {p.relative_to(out).with_suffix("").as_posix() for p in out.rglob("*.png")}
    assert len(masks) == 2  # the first BUSI image and deep.tif's
    assert masks == {str(Path(row["file"]).with_suffix("").as_posix()) for row in rows if row["status"] != "failed"}
    assert {r.file: r.status for r in summary.results} == {row["file"]: row["status"] for row in rows}
    assert len(summary.done) == 1 and [r.file for r in summary.skipped] == ["deep.tif"]
    assert summary.skipped[0].confidence is not None  # from the earlier run's CSV
    assert all(Path(r.output).is_file() for r in summary.done + summary.skipped)
    assert not list(out.rglob(".*"))


def test_torchrun_processes_split_the_files(tmp_path, folder, seg, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("WORLD_SIZE", "2")
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        summary = run_to_end(segment_folder(folder, out, recursive=True, segmenter=seg))
        assert summary.csv_path.name.endswith(f"-rank{rank}.csv")
        seen.append({r.file for r in summary.results})
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == 6 and abs(len(seen[0]) - len(seen[1])) <= 1


def test_without_a_model_the_folder_gets_the_builtin_model_for_its_kind_of_image(tmp_path, folder):
    """Grey ultrasound → the BUSI model, colour endoscopy → the Kvasir-SEG model; files that cannot be
    read are looked past; a folder with nothing readable gets no choice."""
    from napari_wavegms.inference.batch import check_paths
    from napari_wavegms.inference.routing import choice_for_folder

    out = tmp_path / "out"
    assert "busi" in choice_for_folder(check_paths(folder, out)).model
    assert "kvasir-seg" in choice_for_folder(check_paths(folder, out), pattern="*.jpg", recursive=True).model
    polyps = tmp_path / "polyps"
    polyps.mkdir()
    (polyps / "a_broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    shutil.copy(KVASIR / "images" / f"{KVASIR_IMAGE}.jpg", polyps / "b.jpg")
    assert "kvasir-seg" in choice_for_folder(check_paths(polyps, out)).model
    (polyps / "b.jpg").unlink()
    assert choice_for_folder(check_paths(polyps, out)) is None  # the widget then keeps its model


# ---------------------------------------------------------------- blank images, confidence, tta
@pytest.fixture
def blank_folder(tmp_path: Path, busi_names: list[str]) -> Path:
    """An all-black and an all-grey image beside a real BUSI scan."""
    import imageio.v3 as iio

    src = tmp_path / "blank-in"
    src.mkdir()
    iio.imwrite(src / "black.png", np.zeros((200, 300), np.uint8))
    iio.imwrite(src / "grey.png", np.full((200, 300), 128, np.uint8))
    shutil.copy(BUSI / "images" / f"{busi_names[0]}.png", src / "scan.png")
    return src


def test_wavegms_predict_gives_blank_images_empty_masks_and_every_mask_a_confidence(tmp_path, blank_folder):
    from napari_wavegms import cli

    out = tmp_path / "out"
    assert cli.predict_main([str(blank_folder), str(out), "--quiet", "--device", "cpu"]) == 0
    for name in ("black", "grey"):
        mask = read_image(out / f"{name}.png")
        assert mask.shape == (200, 300) and not mask.any()
    assert read_image(out / "scan.png").any()  # the real scan is segmented by the model
    rows = {r["file"]: r for r in read_csv(next(out.glob("wavegms-summary-*.csv")))}
    for name in ("black.png", "grey.png"):
        assert rows[name]["status"] == "done" and "blank" in rows[name]["note"]
        assert rows[name]["confidence"] == "1.000" and rows[name]["review"] == "no"
    scan = rows["scan.png"]
    assert scan["note"] == "" and 0.0 <= float(scan["confidence"]) <= 1.0 and scan["review"] in ("yes", "no")


def test_wavegms_predict_tta_changes_the_mask_and_defaults_to_the_model_card(tmp_path, blank_folder):
    from napari_wavegms import cli
    from napari_wavegms.zoo.registry import card_tta

    model = suggest_model("ultrasound")
    argv = [str(blank_folder), "--quiet", "--device", "cpu", "--model", model]
    for run, flags in (("plain", ["--no-tta"]), ("tta", ["--tta"]), ("default", [])):
        assert cli.predict_main([argv[0], str(tmp_path / run), *argv[1:], *flags]) == 0
    plain, tta = read_image(tmp_path / "plain" / "scan.png"), read_image(tmp_path / "tta" / "scan.png")
    assert (plain != tta).any() and (plain == tta).mean() > 0.9  # a refinement, not another mask
    assert not read_image(tmp_path / "tta" / "grey.png").any()
    default = read_image(tmp_path / "default" / "scan.png")
    np.testing.assert_array_equal(default, tta if card_tta(model) else plain)


def test_review_follows_the_confidence(tmp_path, blank_folder, seg):
    from napari_wavegms.inference.segmenter import REVIEW_BELOW

    summary = run_to_end(segment_folder(blank_folder, tmp_path / "out", segmenter=seg))
    for r in summary.done:
        assert r.confidence is not None and r.review == (r.confidence < REVIEW_BELOW)
    assert summary.to_review == [r for r in summary.done if r.review]
