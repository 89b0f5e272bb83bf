"""Wave-GMS against a plain U-Net, trained on the same split with the same budget, in one run.

Both models get the same data (a training config such as ``training/configs/busi.yaml``, GMS's 517/130
split, or ``training/configs/kvasir-seg.yaml``, the official 880/120 split; 10 % of the training images
carved out for validation with the same seed), the same augmentations (``augment.py``), the same optimiser
and schedule (AdamW lr 2e-3, weight decay 0.01, per-step warm-up then cosine), batch, image size and
number of epochs; each is selected on validation Dice and scored once on the test
split in both protocols (``metrics.py``). The U-Net is ``unet.py``'s baseline (MONAI's ``UNet``, channels
64…1024, one residual unit per level, 13.4M parameters, random initialisation) with Dice + BCE loss.

    python training/benchmarks/compare_unet.py [--config training/configs/busi.yaml] [--epochs 50]
        [--device auto] [--output runs/compare] [--image-size 224] [--batch-size 12] [--wavegms-run runs/busi]

``--wavegms-run`` reuses a finished ``wavegms-train`` run made with the same config and budget instead of
training Wave-GMS again (on a CPU one run can take an hour); its ``best`` checkpoint is scored here
with the same evaluation as the U-Net, and the table says the run was reused.

Prints a Markdown table (test Dice / IoU / HD95 in both protocols, trainable parameters, seconds
per epoch) and writes ``compare.json`` in the output folder.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from unet import train_unet  # this script's folder

from napari_wavegms.core.progress import relay, run_to_end
from napari_wavegms.training.config import TrainConfig
from napari_wavegms.training.data import make_splits
from napari_wavegms.training.evaluate import evaluate
from napari_wavegms.training.loop import train


def train_wavegms(cfg: TrainConfig) -> dict:
    seen = []

    def report(ev):
        seen.append(ev)
        if ev.kind == "epoch":
            print(f"wave-gms {ev.message} ({ev.seconds:.1f} s)", flush=True)

    result = run_to_end(relay(train(cfg), report))
    from napari_wavegms.network.checkpoint import load_checkpoint

    model, _ = load_checkpoint(result.best)
    seconds = [h["seconds"] for h in result.history]
    return {"test": result.test, "best_val_dice": max(h.get("val_dice", -1) for h in result.history),
            "trainable": sum(p.numel() for p in model.trainable_parameters()),
            "s_per_epoch": sum(seconds) / len(seconds), "device": seen[-1].device}


def reuse_wavegms(run: Path, cfg: TrainConfig) -> dict:
    """Score a finished Wave-GMS run's best checkpoint on this config's test split."""
    import csv

    from napari_wavegms.network.checkpoint import load_checkpoint

    while not (run / "test.json").is_file():  # the run writes test.json last: its best is final then
        time.sleep(30)
    model, header = load_checkpoint(run / "best.safetensors")
    trained = header["training"]
    for key in ("epochs", "batch_size", "image_size", "lr", "seed", "train_split", "test_split"):
        if trained[key] != getattr(cfg, key):
            raise SystemExit(f"{run} was trained with {key}={trained[key]!r}; "
                             f"this comparison uses {getattr(cfg, key)!r}")
    with open(run / "history.csv") as f:
        history = list(csv.DictReader(f))
    test = run_to_end(evaluate(model, cfg.data_dir, pairs=make_splits(cfg).test)).to_json()
    return {"test": test, "best_val_dice": max(float(h["val_dice"]) for h in history),
            "trainable": sum(p.numel() for p in model.trainable_parameters()),
            "s_per_epoch": sum(float(h["seconds"]) for h in history) / len(history),
            "device": header["run"]["device"] + f" (reused run {run})"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "busi.yaml"))
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--device", default="auto")
    p.add_argument("--output", default="runs/compare")
    p.add_argument("--image-size", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--data")
    p.add_argument("--wavegms-run", type=Path, help="reuse this finished Wave-GMS run (same config and budget)")
    args = p.parse_args()
    out = Path(args.output)
    base = TrainConfig.from_yaml(args.config, epochs=args.epochs, device=args.device, image_size=args.image_size,
                                 batch_size=args.batch_size, data_dir=args.data)
    wave_cfg = TrainConfig(**{**base.to_dict(), "output_dir": str(out / "wavegms"), "overwrite": True})
    if args.wavegms_run:  # U-Net first: the reused run may still be finishing
        unet = train_unet(base, out)
        results = {"wave-gms": reuse_wavegms(args.wavegms_run, base), "u-net": unet}
    else:
        results = {"wave-gms": train_wavegms(wave_cfg), "u-net": train_unet(base, out)}
    results["budget"] = {"epochs": base.epochs, "batch_size": base.batch_size, "image_size": base.image_size,
                         "lr": base.lr, "config": args.config}
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(results, indent=1))
    print(f"\n{base.name} ({base.data_dir}), {base.epochs} epochs, batch {base.batch_size}, {base.image_size}²; "
          f"Wave-GMS on {results['wave-gms']['device']}, U-Net on {results['u-net']['device']}")
    print("| model | trainable | s / epoch | Dice | IoU | HD95 (px) | native Dice | native IoU | native HD95 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in ("wave-gms", "u-net"):
        r = results[name]
        t, n = r["test"], r["test"]["native"]
        print(f"| {name} | {r['trainable'] / 1e6:.2f}M | {r['s_per_epoch']:.1f} | {t['dice']:.4f} | {t['iou']:.4f} "
              f"| {t['hd95']:.2f} | {n['dice']:.4f} | {n['iou']:.4f} | {n['hd95']:.2f} |")


if __name__ == "__main__":
    main()
