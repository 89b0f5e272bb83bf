"""Build the breast-ultrasound training folder of the built-in ultrasound model: BUSI + BUS-BRA.

    python training/scripts/make_ultrasound_data.py [--data ../shared/data] [--out runs/data/ultrasound]

Why a folder of links: ``wavegms-train`` reads one ``images/`` + ``masks/`` folder and split lists,
and the two data sets' names do not collide (``benign_1`` … vs ``bus_0001-l`` …), so symbolic links
join them without copying a pixel. The split lists are written beside them:

- ``splits/train.txt``: BUSI ``gms_train`` and ``normal_train`` and all of BUS-BRA, less validation;
  each lesion-free scan is listed 5 times (:data:`NORMAL_REPEAT`): there are only 85 of them beside
  2220 lesion scans, and a model that sees an empty mask in 1 of 27 images learns to always draw one
  (3× still drew a mask on every lesion-free test scan); 5× makes it about 1 in 6 of what training
  sees, still far fewer than lesions;
- ``splits/val.txt``: 10 % of BUSI's lesion scans and 15 % of its lesion-free ones (seeded, like
  ``wavegms-train``'s own carve), and whole BUS-BRA patients from fold 1 up to 120 images, so model
  selection sees lesion-free scans and another country's scanners;
- ``splits/test.txt``: BUSI ``gms_test`` (the published protocol); ``normal_test`` stays out of
  everything and is scored separately with ``wavegms-predict``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from napari_wavegms.training.data import carve, read_split

SEED = 2333
BUSBRA_VAL_IMAGES = 120
NORMAL_REPEAT = 5


def _link(src: Path, dst: Path) -> None:
    if dst.is_symlink() or dst.exists():
        if dst.resolve() == src.resolve():
            return
        dst.unlink()
    dst.symlink_to(os.path.relpath(src, dst.parent))


def _pair_files(root: Path, names: list[str]) -> list[tuple[Path, Path]]:
    images = {p.stem: p for p in (root / "images").iterdir()}
    masks = {p.stem: p for p in (root / "masks").iterdir()}
    missing = [n for n in names if n not in images or n not in masks]
    if missing:
        raise SystemExit(f"{root}: {len(missing)} listed names have no image/mask pair (e.g. {missing[:3]})")
    return [(images[n], masks[n]) for n in names]


def build(data: Path, out: Path) -> dict[str, list[str]]:
    busi, busbra = data / "busi", data / "bus-bra-256"
    lesion = read_split(busi / "splits" / "gms_train.txt")
    normal = read_split(busi / "splits" / "normal_train.txt")
    bra_all = read_split(busbra / "splits" / "all.txt")
    lesion_keep, lesion_val = carve(lesion, 0.1, SEED)
    normal_keep, normal_val = carve(normal, 0.15, SEED)
    bra_val: list[str] = []
    patients: dict[str, list[str]] = {}
    for name in read_split(busbra / "splits" / "fold1.txt"):
        patients.setdefault(name.split("-")[0], []).append(name)
    for names in patients.values():
        if len(bra_val) + len(names) > BUSBRA_VAL_IMAGES:
            break
        bra_val += names
    held = set(bra_val)
    splits = {
        "train": lesion_keep + normal_keep * NORMAL_REPEAT + [n for n in bra_all if n not in held],
        "val": lesion_val + normal_val + bra_val,
        "test": read_split(busi / "splits" / "gms_test.txt"),
    }
    for sub in ("images", "masks", "splits"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for root, names in ((busi, lesion + normal + splits["test"]), (busbra, bra_all)):
        for image, mask in _pair_files(root, names):
            _link(image, out / "images" / image.name)
            _link(mask, out / "masks" / mask.name)
    for split, names in splits.items():
        (out / "splits" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return splits


def main(argv: list[str] | None = None) -> int:
    default_data = os.environ.get("WAVEGMS_DATA_DIR", str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=default_data, help="folder holding busi/ and bus-bra-256/")
    ap.add_argument("--out", default="runs/data/ultrasound", help="folder to create")
    args = ap.parse_args(argv)
    splits = build(Path(args.data), Path(args.out))
    print(", ".join(f"{k} {len(v)}" for k, v in splits.items()), "→", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
