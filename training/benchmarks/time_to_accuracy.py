"""Time to accuracy: the paper recipe, the fast recipe and a U-Net, each given the same training time.

Every run trains on the same data (a config such as ``training/configs/busi.yaml``: BUSI's GMS training split
with 10 % carved out for validation, seed 2333), at the same final image size and batch, in a fresh
process with the same number of threads, one after another. Each gets the same budget of *training*
time (validation excluded), measured as this process's CPU seconds so that another job on the machine
does not shorten one run more than another; the learning rate warms up and anneals to 0 over the
budget (``training.Schedule``), as a user with a fixed amount of time would want. After every epoch it
prints the validation Dice against the training seconds spent; at the end each run's selected model
is scored once on the test split.

    OMP_WAIT_POLICY=PASSIVE python training/benchmarks/time_to_accuracy.py [--config training/configs/busi.yaml]
        [--minutes 30] [--threads 2] [--image-size 128] [--runs paper fast unet] [--output runs/tta]

``--minutes`` is wall-clock minutes on an idle machine: the CPU budget is minutes × 60 × threads.
Writes ``tta.json`` in the output folder and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

RUNS = ("paper", "fast", "unet")


def run_one(kind: str, config: str, budget_s: float, image_size: int, out: Path) -> dict:
    """One budgeted run in this process: a Wave-GMS recipe through ``training.train``, or the U-Net."""
    from napari_wavegms.core.progress import relay, run_to_end
    from napari_wavegms.training.config import TrainConfig
    from napari_wavegms.training.loop import train

    base = TrainConfig.from_yaml(config, image_size=image_size, epochs=1000, output_dir=str(out / kind),
                                 overwrite=True)
    if kind == "unet":
        from unet import train_unet  # this script's folder

        (out / kind).mkdir(parents=True, exist_ok=True)
        result = train_unet(base, out / kind, budget_s=budget_s, clock="process")
        return {"curve": result["curve"], "test": result["test"], "best_val_dice": result["best_val_dice"],
                "trainable": result["trainable"]}
    cfg = TrainConfig(**{**base.to_dict(), "recipe": kind, "time_budget_s": budget_s,
                         "time_budget_clock": "process"})

    def report(ev):
        if ev.kind == "epoch":
            print(f"{kind} {ev.message} ({ev.info['history']['train_seconds']:.0f} s training)", flush=True)

    result = run_to_end(relay(train(cfg), report))
    curve = [(h["train_seconds"], h["val_dice"]) for h in result.history if "val_dice" in h]
    return {"curve": curve, "test": result.test, "best_val_dice": max(d for _, d in curve),
            "trainable": 2644244, "epochs": len(result.history)}


def dice_at(curve: list, seconds: float, final: bool = False) -> float | None:
    """Best validation Dice reached within ``seconds`` of training (None before the first validation);
    ``final``: the whole run (its last step may end a little past the budget)."""
    seen = [d for t, d in curve if final or t <= seconds + 1e-6]
    return max(seen) if seen else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "busi.yaml"))
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    p.add_argument("--output", default="runs/tta")
    p.add_argument("--report", action="store_true",
                   help="print the tables from the runs already in --output (e.g. runs made separately)")
    p.add_argument("--one", choices=RUNS, help=argparse.SUPPRESS)
    args = p.parse_args()
    out = Path(args.output)
    budget = args.minutes * 60 * args.threads
    if args.report:
        report({k: json.loads((out / f"{k}.json").read_text()) for k in args.runs}, budget, args)
        return
    if args.one:
        import torch

        torch.set_num_threads(args.threads)
        result = run_one(args.one, args.config, budget, args.image_size, out)
        (out / f"{args.one}.json").write_text(json.dumps(result, indent=1))
        return
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OMP_WAIT_POLICY": "PASSIVE"}
    results = {}
    for kind in args.runs:
        cmd = [sys.executable, __file__, "--one", kind, "--config", args.config, "--minutes", str(args.minutes),
               "--threads", str(args.threads), "--image-size", str(args.image_size), "--output", str(out)]
        print(f"== {kind}: {args.minutes:g} min × {args.threads} threads = {budget:.0f} CPU-s", flush=True)
        subprocess.run(cmd, env=env, check=True)
        results[kind] = json.loads((out / f"{kind}.json").read_text())
    (out / "tta.json").write_text(json.dumps({"budget_cpu_s": budget, **vars(args), "runs": results}, indent=1))
    report(results, budget, args)


def report(results: dict, budget: float, args: argparse.Namespace) -> None:
    """Markdown tables: best validation Dice at quarters of the budget, and each run's test scores."""
    marks = [budget * f for f in (0.25, 0.5, 0.75, 1.0)]
    print(f"\nvalidation Dice (best so far) against training CPU-seconds ({args.threads} threads, "
          f"{args.image_size}²)")
    print("| run | " + " | ".join(f"{m:.0f} s" for m in marks) + " |")
    print("| --- |" + " --- |" * len(marks))
    for kind, r in results.items():
        cells = [dice_at(r["curve"], m, final=m == marks[-1]) for m in marks]
        print(f"| {kind} | " + " | ".join("–" if c is None else f"{c:.3f}" for c in cells) + " |")
    print("\ntest split, selected model, once")
    print("| run | epochs | best val Dice | test Dice | IoU | HD95 px | native Dice |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for kind, r in results.items():
        t = r["test"]
        print(f"| {kind} | {r.get('epochs', len(r['curve']))} | {r['best_val_dice']:.3f} | {t['dice']:.3f} | "
              f"{t['iou']:.3f} | {t['hd95']:.1f} | {t['native']['dice']:.3f} |")


if __name__ == "__main__":
    main()
