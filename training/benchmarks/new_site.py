"""A new hospital, simulated: adapt an ultrasound model to k pairs of another site and score other patients.

The starting model never saw BUS-BRA (a BUSI-only model, e.g. ``wavegms-train training/configs/busi.yaml
--image-size 128 --recipe fast --augment robust --time-budget 20 --output runs/site/start``). For each
k, k BUS-BRA images of patients drawn at random from folds 1–4 (whole cases: a patient's two images
stay together) play the corrections a site would keep. Each run is the product's own fine-tune
(:func:`napari_wavegms.training.finetune.finetune`: the starting model's settings, the ``finetune``
recipe, a fifth of the pairs held out, the new model offered only if it beats the start on them) in a
fresh process under ``/usr/bin/time -v`` (peak memory), against a model trained from scratch (the
``fast`` recipe) on the same pairs for the same time. Every model is then scored once on BUS-BRA fold 5
(patients none of the pairs came from), as a user gets masks (native resolution, card defaults).

The budget is "minutes of T threads": ``minutes × 60 × T`` CPU-seconds of training, counted on the
process's CPU clock, so another job on the machine slows a run down but does not shorten its training.

    OMP_WAIT_POLICY=PASSIVE python training/benchmarks/new_site.py --start runs/site/start/best.safetensors \\
        --output runs/site/bench [--k 10 20 40] [--minutes 5 10] [--threads 2] [--runs finetune scratch]
    python training/benchmarks/new_site.py --output runs/site/bench --report

Runs already in ``--output`` are kept (a stopped benchmark continues where it was); ``--report`` prints
the table from what is there.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(os.environ.get("WAVEGMS_DATA_DIR", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
BUSBRA = DATA / "bus-bra-256"
RUNS = ("finetune", "scratch")


def cases() -> dict[str, list[str]]:
    """BUS-BRA folds 1–4 by patient (``Case``): the images of each, for drawing whole patients."""
    allowed = set()
    for fold in range(1, 5):
        allowed |= set((BUSBRA / "splits" / f"fold{fold}.txt").read_text().split())
    by_case: dict[str, list[str]] = {}
    with open(BUSBRA / "bus_data.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["ID"] in allowed:
                by_case.setdefault(row["Case"], []).append(row["ID"])
    return by_case


def site_pairs(k: int, seed: int) -> list[str]:
    """k images of whole patients from folds 1–4, the same for every run with this k and seed."""
    by_case = cases()
    order = sorted(by_case)
    random.Random(seed).shuffle(order)
    chosen: list[str] = []
    for case in order:
        if len(chosen) + len(by_case[case]) <= k:
            chosen += by_case[case]
        if len(chosen) == k:
            break
    return sorted(chosen)


def make_folder(names: list[str], folder: Path) -> Path:
    """A data folder (images/, masks/) of links to the chosen pairs."""
    for part in ("images", "masks"):
        (folder / part).mkdir(parents=True, exist_ok=True)
        for name in names:
            link = folder / part / f"{name}.png"
            if not link.exists():
                link.symlink_to(BUSBRA / part / f"{name}.png")
    return folder


def score(model: str | Path) -> float:
    """Mean native Dice on BUS-BRA fold 5 (other patients), masks as a user gets them."""
    from napari_wavegms.core.progress import run_to_end
    from napari_wavegms.training.evaluate import evaluate

    result = run_to_end(evaluate(model, BUSBRA, split=BUSBRA / "splits" / "fold5.txt", device="cpu",
                                 as_predicted=True))
    return float(result.native["dice"])


def run_one(kind: str, start: str, data: Path, out: Path, budget_cpu_s: float, lr: float | None = None) -> dict:
    """One budgeted run in this process: the product's fine-tune, or a model from scratch."""
    from napari_wavegms.core.progress import run_to_end
    from napari_wavegms.training.config import TrainConfig
    from napari_wavegms.training.finetune import finetune, finetune_config

    t0 = time.perf_counter()
    cfg = finetune_config(start, data, out, minutes=budget_cpu_s / 60, overwrite=True,
                          time_budget_clock="process", lr=lr)
    if kind == "finetune":
        result = run_to_end(finetune(cfg))
        offered = result.model if result.offered else start
        row = {"held_out_start": result.start_dice, "held_out_new": result.dice, "offered": result.offered,
               "test_new": score(result.model), "gate": result.gate}
        row["test_offered"] = row["test_new"] if result.offered else None  # the start's score is measured once
    else:
        from napari_wavegms.training.loop import train

        scratch = TrainConfig(**{**cfg.to_dict(), "init_from": None, "recipe": "fast"})
        trained = run_to_end(train(scratch))
        offered = trained.last
        row = {"test_new": score(trained.last)}
    history = json.loads((out / "data.json").read_text())["splits"]
    row.update({"kind": kind, "pairs": history, "wall_s": time.perf_counter() - t0,
                "offered_model": str(offered)})
    return row


def peak_mb(time_log: Path) -> float | None:
    """Peak resident memory from ``/usr/bin/time -v``'s report, in MB."""
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_log.read_text()) if time_log.exists() else None
    return int(m.group(1)) / 1024 if m else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--start", help="the starting model (a checkpoint that never saw BUS-BRA)")
    p.add_argument("--output", default="runs/site/bench")
    p.add_argument("--k", type=int, nargs="+", default=[20, 10, 40])
    p.add_argument("--minutes", type=float, nargs="+", default=[10, 5])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    p.add_argument("--scratch-minutes", type=float, nargs="+", default=None,
                   help="budgets of the scratch runs (default: those of --minutes)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--lr", type=float, help="peak learning rate (default: the training default, 2e-3); runs "
                   "with another one are kept apart (``-lr`` in their folder's name)")
    p.add_argument("--report", action="store_true")
    p.add_argument("--one", nargs=4, metavar=("KIND", "K", "MINUTES", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    out = Path(args.output)
    if args.report:
        report(out)
        return
    if args.one:
        import torch

        torch.set_num_threads(args.threads)
        kind, k, minutes, run_out = args.one
        data = make_folder(site_pairs(int(k), args.seed), out / f"data-k{k}")
        row = run_one(kind, args.start, data, Path(run_out), float(minutes) * 60 * args.threads, args.lr)
        (Path(run_out) / "site.json").write_text(json.dumps(row, indent=1))
        return
    out.mkdir(parents=True, exist_ok=True)
    start_file = out / "start.json"
    if not start_file.exists():
        print("scoring the starting model on fold 5", flush=True)
        start_file.write_text(json.dumps({"start": args.start, "test": score(args.start)}, indent=1))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OMP_WAIT_POLICY": "PASSIVE"}
    plan = [(kind, k, m) for m in args.minutes for k in args.k for kind in args.runs
            if kind == "finetune" or m in (args.scratch_minutes or args.minutes)]
    for kind, k, minutes in plan:
        run_out = out / (f"{kind}-k{k}-{minutes:g}min" + (f"-lr{args.lr:g}" if args.lr else ""))
        if (run_out / "site.json").exists():
            continue
        print(f"== {kind}, k={k}, {minutes:g} min × {args.threads} threads", flush=True)
        cmd = ["/usr/bin/time", "-v", "-o", str(out / f"{run_out.name}.time"), sys.executable, __file__,
               "--one", kind, str(k), str(minutes), str(run_out), "--start", args.start, "--output", str(out),
               "--threads", str(args.threads), "--seed", str(args.seed), *(["--lr", str(args.lr)] if args.lr else [])]
        subprocess.run(cmd, env=env, check=True)
        report(out)


def report(out: Path) -> None:
    """The table: Dice on other patients by k and budget, fine-tune (as offered) against scratch. Whether a
    model is offered follows the product's rule (:attr:`FinetuneResult.offered`), applied to the recorded
    held-out scores and pair counts."""
    from napari_wavegms.training.finetune import MIN_PAIRS_TO_OFFER

    start = json.loads((out / "start.json").read_text())
    print(f"\nstarting model on BUS-BRA fold 5 (other patients): Dice {start['test']:.3f}")
    print("| k pairs | budget | fine-tune: held-out start → new | offered? | Dice, other patients (as offered) "
          "| gain | fine-tuned model | from scratch | peak memory |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = {}
    for f in sorted(out.glob("*/site.json")):
        r = json.loads(f.read_text())
        found = re.fullmatch(r"(\w+)-k(\d+)-([\d.]+)min", f.parent.name)
        if found is None:  # a run with another learning rate: printed on its own line below
            r = json.loads(f.read_text())
            held = f", held-out {r['held_out_start']:.3f} → {r['held_out_new']:.3f}" if "held_out_new" in r else ""
            print(f"({f.parent.name}: other patients {r['test_new']:.3f}{held})")
            continue
        kind, k, minutes = found.groups()
        r["peak_mb"] = peak_mb(out / f"{f.parent.name}.time")
        rows[(kind, int(k), float(minutes))] = r
    for k, minutes in sorted({(k, m) for _, k, m in rows}):
        ft, sc = rows.get(("finetune", k, minutes)), rows.get(("scratch", k, minutes))
        cells = ["–"] * 7
        if ft:
            n_pairs = sum(ft["pairs"].values())
            is_offered = ft["held_out_new"] > ft["held_out_start"] and n_pairs >= MIN_PAIRS_TO_OFFER
            offered = ft["test_new"] if is_offered else start["test"]
            why = "" if is_offered or ft["held_out_new"] <= ft["held_out_start"] else f" ({n_pairs} pairs)"
            held = f"{ft['held_out_start']:.3f} → {ft['held_out_new']:.3f}"
            cells[:5] = [held, ("yes" if is_offered else "no") + why, f"{offered:.3f}",
                         f"{offered - start['test']:+.3f}", f"{ft['test_new']:.3f}"]
            cells[6] = f"{ft['peak_mb']:.0f} MB" if ft.get("peak_mb") else "–"
        if sc:
            cells[5] = f"{sc['test_new']:.3f}"
        print(f"| {k} | {minutes:g} min | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
