"""Screenshots of the three widgets docked in napari with a result on screen (docs/images/*.png).

Runs the widgets exactly as a user does (real viewer, real BUSI images, real jobs in workers) and saves
``viewer.screenshot(canvas_only=False)`` downscaled to at most 1000 px wide. Needs a display:

    xvfb-run -a -s "-screen 0 1600x1000x24" python training/scripts/make_screenshots.py --model busi

(``--only batch --model M`` retakes one screenshot.)

The fine-tune screenshot (``--only finetune --finetune-from MODEL``) is the Train widget after
fine-tuning MODEL on a corrections folder of BUS-BRA pairs (``--finetune-minutes`` of training), with
one of them on screen as an image and its corrected mask.

The Train screenshot is a short run in the Train widget: with ``--model`` it fine-tunes that model
(a few CPU minutes then give a healthy validation Dice); without, it trains a small model from scratch
and segments with it, so the masks are only as good as a few CPU minutes allow. The Segment and Batch
screenshots show each mask's confidence (status line, masks to review).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("WAVEGMS_SHARED", REPO.parent / "shared"))
BUSI = SHARED / "data" / "busi"
SHOTS = ("train", "segment", "batch", "finetune")
BUSBRA = SHARED / "data" / "bus-bra-256"


def wait(job, timeout: float = 1800) -> None:
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    start = time.time()
    while job.running:
        app.processEvents()
        time.sleep(0.02)
        if time.time() - start > timeout:
            raise TimeoutError(f"{job.description} did not finish in {timeout} s")
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)


def save(viewer, path: Path, width: int = 1000) -> None:
    from PIL import Image

    from napari_wavegms.core.atomic import atomic_path

    for _ in range(10):
        viewer.window._qt_window.repaint()
        from qtpy.QtWidgets import QApplication

        QApplication.instance().processEvents()
    viewer.reset_view()
    pixels = viewer.screenshot(canvas_only=False, flash=False)
    image = Image.fromarray(pixels[..., :3])
    if image.width > width:
        image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        # a 256-colour palette keeps UI screenshots sharp at a third of the size
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(tmp, optimize=True)
    print(f"wrote {path} ({image.width}×{image.height})")


def new_viewer():
    import napari
    from napari.settings import get_settings

    get_settings().application.gui_notification_level = "error"  # no deprecation toasts over the canvas
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    return viewer


def pairs_folder(root: Path, names: list[str]) -> Path:
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            (root / sub / f"{name}.png").symlink_to(BUSI / sub / f"{name}.png")
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="built-in model name or checkpoint; default: train a small one here")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    parser.add_argument("--pairs", type=int, default=48, help="BUSI training pairs for the Train screenshot")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--finetune-from", default="breast-ultrasound-busi-busbra",
                        help="the model the fine-tune screenshot starts from")
    parser.add_argument("--finetune-minutes", type=float, default=2.0)
    parser.add_argument("--corrections", type=int, default=20, help="BUS-BRA pairs in the corrections folder")
    parser.add_argument("--only", nargs="+", choices=SHOTS, default=list(SHOTS[:3]),
                        help="retake only these screenshots (without train, --model is needed)")
    args = parser.parse_args(argv)
    if "train" not in args.only and not args.model and set(args.only) != {"finetune"}:
        parser.error("--model is needed when the Train screenshot (which trains one) is not taken")

    import torch  # noqa: F401  (before Qt, as napari's docs advise)

    os.environ.setdefault("WAVEGMS_WEIGHTS_DIR", str(SHARED / "weights"))
    os.environ.setdefault("WAVEGMS_CONFIG_DIR", tempfile.mkdtemp(prefix="wavegms-config-"))
    # napari's own settings too: the screenshots must not change (or depend on) the user's napari set-up
    os.environ.setdefault(
        "NAPARI_CONFIG", str(Path(tempfile.mkdtemp(prefix="napari-config-")) / "settings.yaml")
    )
    train_names = (BUSI / "splits" / "gms_train.txt").read_text().split()
    test_names = (BUSI / "splits" / "gms_test.txt").read_text().split()
    work = Path(tempfile.mkdtemp(prefix="wavegms-shots-"))

    model = args.model
    if "train" in args.only:
        model = train_shot(args, train_names, work)
    if "segment" in args.only:
        segment_shot(args.out, model, test_names)
    if "batch" in args.only:
        batch_shot(args.out, model, test_names, work)
    if "finetune" in args.only:
        finetune_shot(args, work)
    return 0


def train_shot(args: argparse.Namespace, train_names: list[str], work: Path) -> str:
    """A short run in the Train widget (a fine-tune with ``--model``); returns the model to segment with."""
    from napari_wavegms.core.io import read_image, read_mask

    viewer = new_viewer()
    shown = train_names[0]
    viewer.add_image(read_image(BUSI / "images" / f"{shown}.png"), name=shown)
    viewer.add_labels(
        read_mask(BUSI / "masks" / f"{shown}.png").astype("uint8"), name=f"{shown} ground truth", opacity=0.4
    )
    _, train = viewer.window.add_plugin_dock_widget("napari-wavegms", "Train")
    data = pairs_folder(work / "busi", train_names[: args.pairs])
    train.images.value = data / "images"
    train.masks.value = data / "masks"
    train.epochs.value = args.epochs
    train.image_size.value = args.image_size
    train.batch_size.value = 8
    train.val_percent.value = 20
    train.output.value = work / "runs"
    if args.model:
        train.init.set_model(args.model)  # fine-tune: what a user with a few images of their own does
    wait(train.check_pairs())
    job = train.run()
    wait(job)
    if job.status != "done":
        raise SystemExit(f"training failed: {job.error}")
    save(viewer, args.out / "train.png")
    model = args.model or str(train.output_dir)
    viewer.close()
    return model


def segment_shot(out: Path, model: str, test_names: list[str]) -> None:
    from napari_wavegms.core.io import read_image

    viewer = new_viewer()
    name = test_names[3]
    viewer.add_image(read_image(BUSI / "images" / f"{name}.png"), name=name, scale=(0.1, 0.1), units="mm")
    _, segment = viewer.window.add_plugin_dock_widget("napari-wavegms", "Segment")
    segment.model.set_model(model)
    wait(segment.run())
    viewer.layers[f"{name}_wavegms"].opacity = 0.6
    save(viewer, out / "segment.png")
    viewer.close()


def batch_shot(out: Path, model: str, test_names: list[str], work: Path) -> None:
    viewer = new_viewer()
    folder = work / "batch-in"
    folder.mkdir()
    for n in test_names[:12]:
        (folder / f"{n}.png").symlink_to(BUSI / "images" / f"{n}.png")
    _, batch = viewer.window.add_plugin_dock_widget("napari-wavegms", "Batch")
    batch.input.value = folder
    batch.output.value = work / "batch-out"
    batch.model.set_model(model)
    batch.open_count.value = 4  # Open results: each image with its mask, in napari's grid view
    wait(batch.run())
    batch.open_results()
    for layer in viewer.layers:
        if layer.name.endswith("_wavegms"):
            layer.opacity = 0.6
    save(viewer, out / "batch.png")
    viewer.close()


def finetune_shot(args: argparse.Namespace, work: Path) -> None:
    """The Train widget after a fine-tune from a corrections folder, one correction on screen."""
    import json

    from napari_wavegms.core.io import read_image, read_mask

    names = (BUSBRA / "splits" / "fold1.txt").read_text().split()[: args.corrections]
    folder = work / "corrections"
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True)
        for name in names:
            (folder / sub / f"{name}.png").symlink_to(BUSBRA / sub / f"{name}.png")
    (folder / "records").mkdir()
    for name in names:
        (folder / "records" / f"{name}.json").write_text(json.dumps({"name": name, "model": args.finetune_from}))
    viewer = new_viewer()
    shown = names[0]
    viewer.add_image(read_image(BUSBRA / "images" / f"{shown}.png"), name=shown)
    viewer.add_labels(read_mask(BUSBRA / "masks" / f"{shown}.png").astype("uint8"), name=f"{shown}_wavegms",
                      opacity=0.5)
    _, train = viewer.window.add_plugin_dock_widget("napari-wavegms", "Train")
    train.source.value = "my corrections (fine-tune)"
    train.corrections.value = folder
    wait(train.check_pairs())
    train.init.set_model(args.finetune_from)
    train.minutes.value = args.finetune_minutes
    train.output.value = work / "fine-tunes"
    job = train.run()
    wait(job, timeout=3600)
    if job.status != "done":
        raise SystemExit(f"fine-tuning failed: {job.error}")
    save(viewer, args.out / "finetune.png")
    viewer.close()


if __name__ == "__main__":
    raise SystemExit(main())
