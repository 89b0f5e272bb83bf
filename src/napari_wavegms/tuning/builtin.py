"""Turn a training run into a built-in model: a half-precision checkpoint and its model card.

    python -m napari_wavegms.tuning.builtin runs/v2/ultrasound-128 --name breast-ultrasound-busi-busbra --dataset busi \
        --trained-on busi bus-bra-256 --split splits/gms_test.txt --reference-also splits/normal_test.txt \
        --alias busi-wavegms-cpu64 --summary "..." --hardware "..."

The card's scores are those of the *shipped* file: it is written first, loaded back and evaluated with
the same ``evaluate`` that ``wavegms-eval`` runs, on the whole test split (never seen in training) and
on the first 10 test images (the reference the test suite re-checks within 0.02). With
``--reference-also LIST`` the ten are the first 7 test images and the first 3 of LIST (the ultrasound
model's lesion-free scans: an empty mask scores 1 there, any mask 0). Then, in this order, each choice
made on validation on the masks the previous ones give: ``python -m napari_wavegms.tuning.tta_choice
--write-card`` (test-time flips), ``python -m napari_wavegms.tuning.postprocess_choice --write-card``
(post-processing) and, for a model trained with lesion-free images, ``python -m
napari_wavegms.tuning.presence_fit --write-card`` (its presence gate). They belong to these
weights: a rebuilt card has none of them until they are chosen again.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from napari_wavegms.core.atomic import atomic_path
from napari_wavegms.core.progress import run_to_end
from napari_wavegms.network.checkpoint import load_checkpoint, save_checkpoint
from napari_wavegms.training.data import read_split, resolve_split, scan_pairs
from napari_wavegms.training.evaluate import evaluate
from napari_wavegms.zoo.registry import BUILTIN_DIR

DATASETS = {
    "busi": {
        "name": "BUSI (Breast Ultrasound Images Dataset)",
        "modality": "breast ultrasound (B-mode), lesion masks",
        "images": "gray",
        "licence": "CC BY 4.0",
        "citation": "W. Al-Dhabyani, M. Gomaa, H. Khaled, A. Fahmy, Dataset of breast ultrasound images, "
        "Data in Brief 28 (2020) 104863",
    },
    "kvasir-seg": {
        "name": "Kvasir-SEG",
        "modality": "colonoscopy (RGB endoscopy), polyp masks",
        "images": "rgb",
        "licence": "research and education use (Simula lists CC BY 4.0); commercial use needs permission",
        "citation": "D. Jha et al., Kvasir-SEG: A Segmented Polyp Dataset, MMM 2020",
    },
    "bus-bra-256": {
        "name": "BUS-BRA (Brazil; GE Logiq 5 / 7, Toshiba Aplio 300, U-Systems), longer side 256 px",
        "modality": "breast ultrasound (B-mode), lesion masks",
        "images": "gray",
        "licence": "MIT-style (free use with citation; see LICENSE.txt of the data set)",
        "citation": "W. Gómez-Flores et al., BUS-BRA: A breast ultrasound dataset for assessing "
        "computer-aided diagnosis systems, Medical Physics 51 (2024) 3110-3123",
    },
    "isic2017-256": {
        "name": "ISIC 2017 Task 1 (lesion segmentation), 256×256",
        "modality": "dermoscopy (RGB), skin-lesion masks",
        "images": "rgb",
        "licence": "ISIC Archive: each image CC-0 or CC BY-NC; research and non-commercial use with attribution",
        "citation": "N. Codella et al., Skin Lesion Analysis Toward Melanoma Detection: A Challenge at ISBI "
        "2017, hosted by the ISIC, ISBI 2018 (arXiv:1710.05006)",
    },
}
KINDS = {"busi": "ultrasound", "bus-bra-256": "ultrasound", "kvasir-seg": "endoscopy", "isic2017-256": "dermoscopy"}


def portable(value: Any, places: dict[str, str]) -> Any:
    """``value`` with this machine's absolute paths replaced by names that mean something elsewhere
    (``$WAVEGMS_DATA_DIR/busi``, ``runs/busi-cpu64``), so a card does not leak or depend on them."""
    if isinstance(value, dict):
        return {k: portable(v, places) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, places) for v in value]
    if isinstance(value, str):
        for absolute, name in places.items():
            value = value.replace(absolute, name)
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="training output folder (best.safetensors, history.csv)")
    p.add_argument("--name", required=True, help="built-in name; must contain the dataset name")
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    p.add_argument("--data", type=Path, help="data folder (default: $WAVEGMS_DATA_DIR/DATASET)")
    p.add_argument("--split", required=True, help="test split list, relative to the data folder")
    p.add_argument("--summary", required=True, help="one line shown in the model picker")
    p.add_argument("--hardware", required=True, help="what it was trained on")
    p.add_argument("--rank", type=int, default=1, help="order in the model picker (1 = default model)")
    p.add_argument("--trained-on", nargs="+", choices=sorted(DATASETS),
                   help="the data sets it was trained on (default: --dataset)")
    p.add_argument("--reference-also", help="split list whose first 3 images join the first 7 test images")
    p.add_argument("--alias", action="append", default=[], help="an old built-in name this model replaces")
    args = p.parse_args(argv)
    if args.dataset.split("-")[0] not in args.name:
        p.error(f"the name must contain the dataset name {args.dataset.split('-')[0]!r}")
    data = args.data or Path(os.environ["WAVEGMS_DATA_DIR"]) / args.dataset

    model, config = load_checkpoint(args.run / "best.safetensors")
    target = BUILTIN_DIR / f"{args.name}.safetensors"
    save_checkpoint(target, model, config, dtype=torch.float16, embed_decoder=False)
    shipped, shipped_config = load_checkpoint(target)

    full = run_to_end(evaluate(shipped, data, split=args.split, device="cpu",
                               csv=args.run / f"{args.name}-test.csv"))
    names = read_split(resolve_split(args.split, data))[:10]
    if args.reference_also:
        names = names[:7] + read_split(resolve_split(args.reference_also, data))[:3]
    ten_pairs = scan_pairs(data / "images", data / "masks", names=names).pairs
    ten = run_to_end(evaluate(shipped, data, pairs=ten_pairs, device="cpu"))

    with open(args.run / "history.csv") as f:
        history = list(csv.DictReader(f))
    card = {
        "name": args.name,
        "rank": args.rank,
        "aliases": args.alias,
        "kind": KINDS[args.dataset],
        "summary": args.summary,
        "modality": DATASETS[args.dataset]["modality"],
        "images": DATASETS[args.dataset]["images"],
        "data": {**DATASETS[args.dataset], "folder": args.dataset, "test_split": args.split},
        "trained_on": [{**DATASETS[d], "folder": d} for d in (args.trained_on or [args.dataset])],
        "split": shipped_config["data"],
        "recipe": shipped_config["training"],
        "training": {
            "epochs_run": len(history),
            "seconds": round(sum(float(r["seconds"]) for r in history), 1),
            "best_val_dice": max(float(r["val_dice"]) for r in history if r.get("val_dice")),
            "hardware": args.hardware,
        },
        "tiny_vae": shipped_config["tiny_vae"],
        "image_size": shipped_config["image_size"],
        "weights": "float16",
        "test": {"command": f"wavegms-eval {args.name} {data} --split {args.split} --json", **full.to_json(),
                 "model": args.name},
        "reference_check": {"images": names, "dice": ten.paper["dice"],
                            "note": "mean paper-protocol Dice on these 10 test images; "
                                    "tests/integration/test_builtin_models.py"},
    }
    data_name = f"$WAVEGMS_DATA_DIR/{args.dataset}"
    card = portable(card, {str(data.resolve()): data_name, str(data): data_name,
                           str(args.run.resolve()): str(args.run), str(Path.cwd()) + os.sep: ""})
    with atomic_path(target.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(card, indent=2, default=float) + "\n")
    print(json.dumps({"file": str(target), "bytes": target.stat().st_size, "test": card["test"],
                      "reference_check": card["reference_check"]}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
