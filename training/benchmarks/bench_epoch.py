"""One real training epoch of each recipe through ``wavegms-train``, side by side in one run.

The same 96 BUSI pairs (the first 96 names of GMS's training list, linked, never copied; 10 % carved
out for validation as usual), ``--epochs 1 --image-size 128``, the same threads, each recipe in its own
process one after the other. Prints the epoch's ``seconds`` (``history.csv``: training and validation)
and the process's peak resident memory (``/usr/bin/time``-style, from ``wait4``), and their ratios.

    OMP_WAIT_POLICY=PASSIVE python training/benchmarks/bench_epoch.py [--data ../shared/data/busi] [--threads 2]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def link_pairs(data: Path, names: list[str], root: Path) -> Path:
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
        for name in names:
            for f in (data / sub).glob(f"{name}.*"):
                os.symlink(f, root / sub / f.name)
    return root


def config_without_splits(out: Path) -> Path:
    """``busi.yaml`` minus its split lists: the linked folder is the training data (10 % for validation)."""
    import yaml

    values = yaml.safe_load((REPO / "training" / "configs" / "busi.yaml").read_text())
    for key in ("train_split", "test_split", "data_dir"):
        values.pop(key, None)
    path = out / "busi-96.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def run(recipe: str, data: Path, out: Path, size: int, threads: int) -> tuple[float, float]:
    """(epoch seconds, peak RSS MiB) of one ``wavegms-train`` process."""
    cmd = [str(Path(sys.executable).with_name("wavegms-train")), str(config_without_splits(out)),
           "--data", str(data), "--output", str(out / recipe), "--recipe", recipe, "--epochs", "1",
           "--image-size", str(size), "--quiet"]
    log = open(out / f"{recipe}.log", "w")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen(cmd, env=env, stderr=log)
    _, status, usage = os.wait4(proc.pid, 0)
    log.close()
    if status:
        raise SystemExit(f"{recipe}: wavegms-train failed: {(out / f'{recipe}.log').read_text()[-2000:]}")
    with open(out / recipe / "history.csv") as f:
        row = next(csv.DictReader(f))
    return float(row["seconds"]), usage.ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "busi")
    p.add_argument("--pairs", type=int, default=96)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    names = (args.data / "splits" / "gms_train.txt").read_text().split()[:args.pairs]
    with tempfile.TemporaryDirectory(prefix="wavegms-bench-epoch-") as tmp:
        data = link_pairs(args.data, names, Path(tmp) / "data")
        results = {r: run(r, data, Path(tmp), args.image_size, args.threads) for r in ("paper", "fast")}
    (ps, pm), (fs, fm) = results["paper"], results["fast"]
    print(f"{args.pairs} BUSI pairs, 1 epoch at {args.image_size}², {args.threads} threads")
    print("| recipe | epoch seconds | × paper speed | peak RSS MiB | × paper memory |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| paper | {ps:.0f} | 1.00 | {pm:.0f} | 1.00 |")
    print(f"| fast | {fs:.0f} | {ps / fs:.2f} | {fm:.0f} | {fm / pm:.2f} |")


if __name__ == "__main__":
    main()
