"""Batch runs on folders with the odd entries real folders hold, and runs a person follows and stops.

Every test runs on real BUSI images (the untrained 64² checkpoint keeps them quick); each odd entry
must fail (or be skipped) alone, with its reason, and the summary CSV must always exist.
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import BUSI, drain
from napari_wavegms import cli
from napari_wavegms.core.io import ImageReadError, read_image
from napari_wavegms.inference import batch as batch
from napari_wavegms.inference.batch import BatchUsageError, segment_folder
from napari_wavegms.inference.segmenter import Segmenter


@pytest.fixture(scope="module")
def seg(random_checkpoint) -> Segmenter:
    return Segmenter(random_checkpoint, device="cpu", batch_size=8)


@pytest.fixture
def scans(tmp_path: Path, busi_names: list[str]) -> Path:
    """Four real BUSI scans (links to the shared data, which is never written)."""
    src = tmp_path / "in"
    src.mkdir()
    for name in busi_names[:4]:
        (src / f"{name}.png").symlink_to(BUSI / "images" / f"{name}.png")
    return src


def rows_of(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


def summaries(out: Path) -> list[Path]:
    return sorted(out.glob("wavegms-summary-*.csv"))


def predict(src: Path, out: Path, checkpoint: Path, *extra: str) -> int:
    return cli.predict_main([str(src), str(out), "--model", str(checkpoint), "--device", "cpu", "--quiet", *extra])


# ---------------------------------------------------------------- odd entries
def test_link_loops_fail_alone_and_folder_loops_are_not_followed(tmp_path, scans, random_checkpoint, capsys):
    """``a.png → b.png → a.png`` fails as a link loop; ``up → ..`` and two folders linking to each other
    are reported once each and not followed, so the scan ends; the real scans are still segmented."""
    os.symlink("b.png", scans / "a.png")
    os.symlink("a.png", scans / "b.png")
    os.symlink("..", scans / "up")
    for here, there in (("x", "y"), ("y", "x")):
        (scans / here).mkdir()
        os.symlink(f"../{there}", scans / here / "link")
    out = tmp_path / "out"
    assert predict(scans, out, random_checkpoint, "--recursive") == 1
    (csv_path,) = summaries(out)
    rows = rows_of(csv_path)
    for name in ("a.png", "b.png"):
        assert rows[name]["status"] == "failed" and "symbolic link" in rows[name]["error"]
    loops = {name: row for name, row in rows.items() if "loop" in row["error"] and row["status"] == "skipped"}
    assert set(loops) == {"up", "x/link/link", "y/link/link"}
    assert sum(row["status"] == "done" for row in rows.values()) == 4
    assert "Traceback" not in capsys.readouterr().err


def test_a_file_name_that_is_not_utf8_gets_its_mask_and_its_row(tmp_path, scans, random_checkpoint, busi_names):
    raw = os.fsencode(scans) + b"/bad\xff.png"
    fd = os.open(raw, os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, (BUSI / "images" / f"{busi_names[4]}.png").read_bytes())
    os.close(fd)
    out = tmp_path / "out"
    assert predict(scans, out, random_checkpoint) == 0
    assert os.path.isfile(os.fsencode(out) + b"/bad\xff.png")
    (csv_path,) = summaries(out)
    rows = rows_of(csv_path)  # valid UTF-8: the odd byte is written as \xff
    assert rows["bad\\xff.png"]["status"] == "done" and len(rows) == 5


def test_an_output_folder_that_cannot_be_written_is_refused_before_anything_loads(
        tmp_path, scans, random_checkpoint, monkeypatch, capsys):
    """Root writes through read-only modes, so the folders here are ones no one can write: a folder
    under /proc, a folder under /sys and one whose parent is a file."""
    def load(self, *args, **kw):
        raise AssertionError("the model was loaded before the output folder was checked")

    monkeypatch.setattr(Segmenter, "__init__", load)
    (tmp_path / "a-file").write_text("not a folder")
    for out in ("/proc/wavegms-out", "/sys/wavegms-out/masks", str(tmp_path / "a-file" / "out")):
        assert predict(scans, Path(out), random_checkpoint) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("wavegms-predict: error: ")
        assert "cannot be written" in err or "not a folder" in err
    with pytest.raises(BatchUsageError, match="cannot be written"):
        next(segment_folder(scans, "/proc/wavegms-out", segmenter=object()))


def test_a_single_non_image_file_is_a_usage_error(tmp_path, random_checkpoint, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n")
    assert predict(notes, tmp_path / "out", random_checkpoint) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "notes.txt" in err and "not an image" in err


def test_empty_and_text_files_named_as_images_say_what_they_are(tmp_path, scans, random_checkpoint):
    (scans / "empty.png").write_bytes(b"")
    (scans / "text.png").write_text("hello, not a picture\n")
    (scans / "words.jpg").write_text("hello, not a picture\n")
    for name, said in (("empty.png", "empty (0 bytes)"), ("text.png", "not a PNG image"),
                       ("words.jpg", "not a JPEG image")):
        with pytest.raises(ImageReadError, match=said.replace("(", r"\(").replace(")", r"\)")):
            read_image(scans / name)
    out = tmp_path / "out"
    assert predict(scans, out, random_checkpoint) == 1
    rows = rows_of(summaries(out)[0])
    assert "empty (0 bytes)" in rows["empty.png"]["error"] and "not a PNG image" in rows["text.png"]["error"]
    assert not any("pip install" in row["error"] for row in rows.values())


@pytest.fixture
def stacks(tmp_path: Path, busi_names: list[str]) -> Path:
    """3- and 4-page greyscale TIFF stacks (minisblack: pages, not colour) of real BUSI crops, and a real
    RGB TIFF (planar, as channel-first data is stored) that stays one colour image."""
    src = tmp_path / "stacks"
    src.mkdir()
    pages = [read_image(BUSI / "images" / f"{name}.png")[:96, :128] for name in busi_names[:4]]
    pages = [p if p.ndim == 2 else p[..., 0] for p in pages]
    tifffile.imwrite(src / "three.tif", np.stack(pages[:3]), photometric="minisblack")
    tifffile.imwrite(src / "four.tif", np.stack(pages), photometric="minisblack", metadata={"axes": "ZYX"})
    tifffile.imwrite(src / "colour.tif", np.stack(pages[:3]), photometric="rgb", planarconfig="separate")
    return src


def test_tiff_stacks_of_3_and_4_pages_are_stacks_not_colour(stacks):
    from napari_wavegms.core.io import read_image_or_stack

    for name, n in (("three.tif", 3), ("four.tif", 4)):
        array, is_stack = read_image_or_stack(stacks / name)
        assert is_stack and array.shape == (n, 96, 128)
        with pytest.raises(ImageReadError, match=f"a stack of {n} pages"):
            read_image(stacks / name)
    colour, is_stack = read_image_or_stack(stacks / "colour.tif")
    assert not is_stack and colour.shape == (96, 128, 3)
    np.testing.assert_array_equal(read_image(stacks / "colour.tif"), colour)


def test_a_stack_gets_a_stack_mask_in_tif_and_fails_alone_in_png(tmp_path, stacks, seg):
    _, summary = drain(segment_folder(stacks, tmp_path / "tif", fmt="tif", overlays=True, segmenter=seg))
    assert {r.file: r.status for r in summary.results} == dict.fromkeys(("colour.tif", "four.tif", "three.tif"), "done")
    for name, n in (("three.tif", 3), ("four.tif", 4)):
        mask = tifffile.imread(tmp_path / "tif" / name)
        assert mask.shape == (n, 96, 128) and set(np.unique(mask)) <= {0, 255}
        assert read_image(tmp_path / "tif" / "overlays" / name.replace(".tif", ".png")).shape == (96, 128 * n, 3)
    assert tifffile.imread(tmp_path / "tif" / "colour.tif").shape == (96, 128)
    _, summary = drain(segment_folder(stacks, tmp_path / "png", segmenter=seg))
    status = {r.file: (r.status, r.error) for r in summary.results}
    assert status["colour.tif"] == ("done", "")
    assert status["three.tif"] == ("failed", "a stack of 3 pages: use --format tif")
    assert status["four.tif"] == ("failed", "a stack of 4 pages: use --format tif")


def test_two_runs_started_in_the_same_second_keep_both_summaries(tmp_path, scans, seg, monkeypatch):
    class Frozen:
        @staticmethod
        def now():
            from datetime import datetime

            return datetime(2024, 5, 1, 12, 0, 0)

    monkeypatch.setattr(batch, "datetime", Frozen)
    out = tmp_path / "out"
    first = segment_folder(scans, out, segmenter=seg)
    second = segment_folder(scans, out, segmenter=seg, pattern=f"{sorted(p.name for p in scans.iterdir())[0]}")
    a, b = next(first).info["summary"].csv_path, next(second).info["summary"].csv_path
    drain(first)
    drain(second)
    assert a != b and sorted(summaries(out)) == sorted([a, b])
    assert len(rows_of(a)) == 4 and len(rows_of(b)) == 1


def test_ctrl_c_while_judging_the_folder_still_leaves_the_csv_it_names(tmp_path, scans, monkeypatch, capsys):
    import napari_wavegms.inference.modality as modality

    def interrupted(image):
        raise KeyboardInterrupt

    monkeypatch.setattr(modality, "classify_features", interrupted)  # what judging the folder calls first
    out = tmp_path / "out"
    assert cli.predict_main([str(scans), str(out), "--device", "cpu", "--quiet"]) == 130
    (csv_path,) = summaries(out)
    assert rows_of(csv_path) == {}  # no file was reached
    err = capsys.readouterr().err
    assert "cancelled" in err and str(csv_path) in err


def test_stale_temporary_files_of_killed_runs_are_removed(tmp_path, scans, seg):
    """A run killed during a write leaves ``.{stem}.XXXXXXXX.part{suffix}``: the next run removes those
    older than an hour (no write takes that long, so no live run is writing it), never a fresh one (a
    run beside this one may be writing it) nor a file of another name."""
    from napari_wavegms.core.atomic import atomic_path

    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    with atomic_path(out / "sub" / "case.png") as tmp:  # the name a real write uses
        stale = tmp.with_name(tmp.name.replace("case", "old"))
        shutil.copy(BUSI / "images" / f"{next(scans.iterdir()).name}", stale)
        fresh = tmp.with_name(tmp.name.replace("case", "new"))
        fresh.write_bytes(b"being written")
    mine = out / "mine.part.png"
    mine.write_bytes(b"a user's file")
    hour_ago = time.time() - 3700
    for path in (stale, mine):
        os.utime(path, (hour_ago, hour_ago))
    drain(segment_folder(scans, out, segmenter=seg))
    assert not stale.exists() and fresh.exists() and mine.exists()


# ---------------------------------------------------------------- a run a person can follow and stop
def slow_on(scans: Path, slow: str, monkeypatch) -> None:
    """Segmenting the image ``slow`` takes 0.6 s longer."""
    original = Segmenter.segment_many
    pixels = read_image(scans / slow)

    def slow_on_one(self, images, **kw):
        if any(img.shape == pixels.shape and np.array_equal(img, pixels) for img in images):
            time.sleep(0.6)
        return original(self, images, **kw)

    monkeypatch.setattr(Segmenter, "segment_many", slow_on_one)


def test_progress_and_cancel_are_per_image(tmp_path, scans, seg):
    """Four images in one read-ahead group of 8: the first event after the start comes with the first
    mask alone on disk, and a cancel then leaves that one mask."""
    out = tmp_path / "out"
    job = segment_folder(scans, out, segmenter=seg)
    summary = next(job).info["summary"]
    first = next(job)
    assert first.done == 1 and len(list(out.glob("*.png"))) == 1
    job.close()
    assert len(list(out.glob("*.png"))) == 1
    assert [row["status"] for row in rows_of(summary.csv_path).values()] == ["done"]


def test_each_files_seconds_are_its_own(tmp_path, scans, seg, monkeypatch):
    slow = sorted(p.name for p in scans.iterdir())[1]
    slow_on(scans, slow, monkeypatch)
    _, summary = drain(segment_folder(scans, tmp_path / "all", segmenter=seg))
    seconds = {r.file: r.seconds for r in summary.done}
    others = [s for name, s in seconds.items() if name != slow]
    assert seconds[slow] >= 0.6 and seconds[slow] > max(others) + 0.3  # not the group's average


def test_a_resumed_run_lists_earlier_masks_with_their_model_and_confidence(tmp_path, scans, seg, random_checkpoint):
    out = tmp_path / "out"
    names = sorted(p.name for p in scans.iterdir())
    hidden = scans / names[-1]
    moved = tmp_path / names[-1]
    hidden.rename(moved)
    _, first = drain(segment_folder(scans, out, segmenter=seg, model=str(random_checkpoint)))
    moved.rename(hidden)
    _, again = drain(segment_folder(scans, out, segmenter=seg, model=str(random_checkpoint)))
    assert [r.file for r in again.done] == [names[-1]] and len(again.skipped) == 3
    earlier = rows_of(first.csv_path)
    now = rows_of(again.csv_path)
    for name in names[:-1]:
        for column in ("model", "confidence", "review", "foreground_fraction", "note", "shape"):
            assert now[name][column] == earlier[name][column], column
        assert now[name]["status"] == "skipped" and now[name]["confidence"]
    assert {r.file for r in again.masks} == set(names)
    assert again.to_review == [r for r in again.masks if r.review]


def test_a_hand_edited_mask_survives_a_rerun_and_overwrite_replaces_it(tmp_path, scans, seg):
    out = tmp_path / "out"
    drain(segment_folder(scans, out, segmenter=seg))
    edited = sorted(out.glob("*.png"))[0]
    import imageio.v3 as iio

    by_hand = np.zeros(read_image(edited).shape, np.uint8)
    by_hand[10:40, 10:40] = 255
    iio.imwrite(edited, by_hand)
    drain(segment_folder(scans, out, segmenter=seg))
    np.testing.assert_array_equal(read_image(edited), by_hand)
    drain(segment_folder(scans, out, segmenter=seg, overwrite=True))
    assert not np.array_equal(read_image(edited), by_hand)
