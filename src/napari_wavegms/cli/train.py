"""``wavegms-train``: a YAML config plus command-line overrides → :func:`napari_wavegms.training.train`."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from napari_wavegms.cli.common import USAGE, parse

PROG = "wavegms-train"
AMP_MODES = ("auto", "bf16", "fp16", "off")  # TrainConfig.amp
NO_AUGMENT = "off"


def build_parser() -> argparse.ArgumentParser:
    """The options; recipes and augmentations are the training engine's own lists."""
    from napari_wavegms.training.augment import AUGMENTATIONS
    from napari_wavegms.training.config import RECIPES

    p = argparse.ArgumentParser(
        prog=PROG,
        description="Train Wave-GMS on a folder of image/mask pairs (DIR/images + DIR/masks, matched by file "
        "name). Under torchrun it trains on every process's device with DistributedDataParallel.",
    )
    p.add_argument("config", nargs="?",
                   help="YAML config (see training/configs/busi.yaml); options below override it. Without "
                        "one, --init-from MODEL --data DIR --output DIR fine-tunes MODEL with its own settings "
                        "and the finetune recipe, for --time-budget minutes (default 10), and compares it with "
                        "MODEL on held-out pairs")
    p.add_argument("--data", help="data folder holding images/ and masks/ (replaces data_dir)")
    p.add_argument("--output", help="output folder for checkpoints, config and history")
    p.add_argument("--epochs", type=int)
    p.add_argument("--image-size", type=int, help="training side in pixels (multiple of 8)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--seed", type=int)
    p.add_argument("--val-fraction", type=float,
                   help="fraction of training pairs carved out for validation (without a config: held out to "
                        "compare the fine-tuned model with its start; default 0.2, at least 4 pairs)")
    p.add_argument("--init-from", help="fine-tune from a built-in model name, checkpoint or run folder")
    p.add_argument("--resume", action="store_true", help="continue the output folder's run")
    p.add_argument("--overwrite", action="store_true", help="start afresh in a used output folder")
    p.add_argument("--workers", type=int, help="DataLoader workers (only when pairs are not preloaded)")
    p.add_argument("--recipe", choices=list(RECIPES),
                   help="fast (the most validation Dice per CPU-second; the default from scratch), paper "
                        "(docs/design.md exactly) or finetune (fast at full size throughout; the default with "
                        "--init-from)")
    p.add_argument("--time-budget", type=float, metavar="MINUTES",
                   help="train for this long (the learning rate anneals to 0 by then), at most --epochs")
    p.add_argument("--amp", choices=AMP_MODES,
                   help="mixed precision: auto = bf16 on CUDA (else fp16) and on CPUs with native bf16")
    p.add_argument("--augment", choices=[*AUGMENTATIONS, NO_AUGMENT],
                   help="standard (the paper's, docs/design.md) or robust (+ gamma, shading, blur, noise: for "
                        "other devices)")
    p.add_argument("--max-steps", type=int, help="stop after this many optimisation steps (smoke test)")
    p.add_argument("--name", help="without a config: keep the fine-tuned model under this name (listed by "
                                  "wavegms-predict --list-models and in napari) if it beats its start and "
                                  "learned from at least 20 pairs")
    p.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    return p


def _absolute(path: str | None) -> str | None:
    """A folder given on the command line, made absolute: the run's saved config must not depend on
    the working directory it was started from."""
    return os.path.abspath(os.path.expanduser(path)) if path else None


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``TrainConfig`` fields from the options (``None``: keep the YAML's value)."""
    return {
        "data_dir": _absolute(args.data), "output_dir": _absolute(args.output), "epochs": args.epochs,
        "image_size": args.image_size, "batch_size": args.batch_size, "device": args.device, "lr": args.lr,
        "seed": args.seed, "val_fraction": args.val_fraction, "init_from": args.init_from,
        "resume": True if args.resume else None, "overwrite": True if args.overwrite else None,
        "num_workers": args.workers, "amp": args.amp, "max_steps": args.max_steps, "recipe": args.recipe,
        "time_budget_s": args.time_budget * 60 if args.time_budget else None,
        "augment": None if args.augment is None else args.augment != NO_AUGMENT,
        "augmentation": args.augment if args.augment not in (None, NO_AUGMENT) else None,
    }


def train_main(argv: list[str] | None = None) -> int:
    """``wavegms-train CONFIG [--data DIR] [--output DIR] [--epochs N] [--image-size S] [--batch-size B]
    [--device D]`` (plus --lr, --resume, --init-from, --val-fraction, … see ``--help``)."""
    args = parse(build_parser(), argv, _check)
    if isinstance(args, int):
        return args
    if args.config is None:
        return finetune_main(args)
    from napari_wavegms.training import TrainConfig, train_with_progress

    try:
        config = TrainConfig.from_yaml(args.config, **overrides(args))
    except (OSError, ValueError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return USAGE
    return train_with_progress(config, quiet=args.quiet)


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Options that cannot work together: a usage error (exit status 2)."""
    if args.config is None:
        missing = [opt for opt, value in (("--init-from", args.init_from), ("--data", args.data),
                                          ("--output", args.output)) if not value]
        if missing:
            parser.error(f"without a config, give {', '.join(missing)} (a fine-tune of a model on your own pairs)")
    elif args.name:
        parser.error("--name keeps a fine-tuned model: use it without a config")


def finetune_main(args: argparse.Namespace) -> int:
    """``wavegms-train --init-from MODEL --data DIR --output DIR [--time-budget MINUTES] [--name NAME]``:
    :func:`napari_wavegms.training.finetune.finetune`, the comparison printed, the model kept if better."""
    from napari_wavegms.training import train_with_progress
    from napari_wavegms.training.finetune import (
        DEFAULT_HOLD_OUT,
        DEFAULT_MINUTES,
        FinetuneResult,
        finetune,
        finetune_config,
        install_finetuned,
    )

    values = {k: v for k, v in overrides(args).items()
              if k not in ("data_dir", "output_dir", "init_from", "time_budget_s", "val_fraction")}
    try:
        config = finetune_config(args.init_from, _absolute(args.data), _absolute(args.output),
                                 minutes=args.time_budget or DEFAULT_MINUTES,
                                 hold_out=args.val_fraction or DEFAULT_HOLD_OUT, **values)
    except (OSError, ValueError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return USAGE

    def report(result: FinetuneResult) -> int:
        print(result.message)
        if result.gate:
            print(result.gate)
        if result.model is None:
            return 130
        print(f"model: {result.model} (use it with wavegms-predict --model {result.model})")
        if args.name and result.offered:
            try:
                kept = install_finetuned(result, args.name)
            except (OSError, ValueError) as err:
                print(f"{PROG}: {err}", file=sys.stderr)
                return 1
            print(f"kept as {args.name!r} ({kept}): wavegms-predict --model {args.name!r}")
        elif args.name:
            print(f"not kept as {args.name!r}: it is not offered")
        return 0

    return train_with_progress(config, quiet=args.quiet, job=finetune(config), report=report)
