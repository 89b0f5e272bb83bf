"""Checksums of the masks each built-in model writes for 20 fixed real images: proof that a change of the
code's layout left what users get unchanged.

    python training/scripts/mask_checksums.py OUT.json          # record
    python training/scripts/mask_checksums.py OUT.json --check  # compare with a record; exit 1 on a change

The 20 images are 7 BUSI test scans (lesions and lesion-free), 7 Kvasir-SEG validation polyps and 6
ISIC-2017 validation lesions, from ``$WAVEGMS_DATA_DIR`` (default ``../shared/data``). Each built-in model
segments all 20 through ``wavegms-predict`` (the user's path: the card's flips, clean-up and presence
check) in float32, so the sums do not depend on whether the CPU has bfloat16. Float32 kernels may still
round differently on another CPU: compare records made on one machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("WAVEGMS_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data"))
IMAGES = {
    "busi": ("busi", ".png", ["gms_test.txt"], 5, ["normal_test.txt"], 2),
    "kvasir": ("kvasir-seg", ".jpg", ["medico2020_val.txt"], 7, [], 0),
    "isic": ("isic2017-256", ".jpg", ["val.txt"], 6, [], 0),
}


def chosen_images() -> list[Path]:
    """The fixed 20: the first names of each list, as the lists are committed with the data."""
    paths = []
    for folder, suffix, lists, n, extra, m in IMAGES.values():
        root = DATA / folder
        for split, count in ((lists, n), (extra, m)):
            names = [name for f in split for name in (root / "splits" / f).read_text().split()]
            paths += [root / "images" / f"{name}{suffix}" for name in names[:count]]
    return paths


def mask_sums(model: str, images: list[Path], work: Path) -> dict[str, dict]:
    src, out = work / f"{model}-in", work / f"{model}-out"
    src.mkdir()
    for path in images:
        (src / f"{path.parent.parent.name}__{path.name}").symlink_to(path)
    cmd = [sys.executable, "-c", "import sys; from napari_wavegms.cli import predict_main; sys.exit(predict_main())",
           str(src), str(out), "--model", model, "--precision", "fp32", "--device", "cpu", "--quiet"]
    subprocess.run(cmd, check=True)
    import imageio.v3 as iio

    sums = {}
    for mask in sorted(out.glob("*.png")):
        array = np.ascontiguousarray(iio.imread(mask))
        sums[mask.stem] = {"sha256": hashlib.sha256(array.tobytes()).hexdigest(),
                           "foreground": int(np.count_nonzero(array))}
    return sums


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("record", type=Path)
    p.add_argument("--check", action="store_true", help="compare with the record instead of writing it")
    args = p.parse_args(argv)
    builtin = subprocess.run([sys.executable, "-c", "from napari_wavegms.cli import predict_main; predict_main("
                              "['--list-models'])"], check=True, capture_output=True, text=True).stdout.split()
    images = chosen_images()
    with tempfile.TemporaryDirectory() as tmp:
        sums = {model: mask_sums(model, images, Path(tmp)) for model in builtin}
    if not args.check:
        args.record.write_text(json.dumps(sums, indent=1, sort_keys=True) + "\n")
        print(f"{sum(len(v) for v in sums.values())} masks of {len(builtin)} models → {args.record}")
        return 0
    before = json.loads(args.record.read_text())
    changed = [(m, name) for m in before for name in before[m] if sums.get(m, {}).get(name) != before[m][name]]
    total = sum(len(v) for v in before.values())
    print(f"{total - len(changed)} of {total} masks identical")
    for model, name in changed:
        print(f"changed: {model} {name}: {before[model][name]} → {sums.get(model, {}).get(name)}")
    return 1 if changed or set(sums) != set(before) else 0


if __name__ == "__main__":
    sys.exit(main())
