"""Fine-tune a model on a user's own image/mask pairs, and offer the result only if it does better.

The workflow a site uses to adapt a model to its scanner: a folder of corrected masks
(:mod:`napari_wavegms.training.corrections`), a starting model, a time budget. :func:`finetune_config`
makes the whole training config from the starting model (its size, Tiny-VAE and augmentation, read
from its checkpoint) and the ``finetune`` recipe, so no config file is needed; the budget governs the
run (the learning rate anneals to 0 by its end, or by the epoch cap if that comes first).

:func:`finetune` trains, then scores the **starting** and the **fine-tuned** model once each on the
pairs held out from training, as a user gets masks from them (native resolution, each model's card:
flips, clean-up, presence check), and writes ``model.safetensors`` with its card ``model.json``. The
held-out pairs are seen by nothing else: validation runs once, at the end, so no epoch is picked on them
and the comparison is not flattered by the choice. They are carved by examination
(``val_by_examination``): corrections are often frames of one examination, and a model checked on
near-copies of what it learned from looks better than it is. The result says whether the new model is better
and whether it is offered (better, and learned from at least :data:`MIN_PAIRS_TO_OFFER` pairs); callers
(the Train widget, ``wavegms-train --name``) keep it only then.

The card keeps what the starting card says about the model's kind, images, clean-up and flips. A
presence gate is not carried over: it was fitted on the old model's latents. It is refitted on the
training pairs when they hold enough lesion-free and lesion images (:data:`GATE_MIN_EACH` of each),
else it is dropped, and the card and the result say which.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_wavegms.core.atomic import atomic_path
from napari_wavegms.core.progress import Progress, relay
from napari_wavegms.training.config import TrainConfig

#: The default time budget of a fine-tune, in minutes: what a CPU gives in a coffee break.
DEFAULT_MINUTES = 10.0
#: The share of the pairs held out to compare the starting and the fine-tuned model.
DEFAULT_HOLD_OUT = 0.2
#: At least this many pairs are held out: on 2, a fine-tune on 8 BUS-BRA images looked better twice (held-out
#: Dice 0.79 → 0.84 and → 0.87) while other patients' Dice fell (0.627 → 0.602 and → 0.592).
MIN_HELD_OUT = 4
#: ... and at least this many are left to learn from.
MIN_TRAIN = 2
#: A fine-tuned model is offered only when it learned from at least this many corrections. From 10 BUS-BRA
#: images (5 patients) every fine-tune looked better on its held-out pairs, which come from the same
#: patients, while other patients' Dice fell (0.627 → 0.543–0.602); from 20 and 40 it rose (→ 0.724, 0.758).
MIN_PAIRS_TO_OFFER = 20
#: The epoch cap of a budgeted fine-tune: high enough that the budget ends a run. (A cap of 150 passes,
#: tried against overfitting a handful of pairs, did not save 10 pairs and cost 20 pairs Dice on other
#: patients, 0.724 → 0.708; too few pairs are now simply not offered: :data:`MIN_PAIRS_TO_OFFER`.)
EPOCH_CAP = 10_000
#: Lesion-free and lesion training pairs needed, of each, to refit a presence gate.
GATE_MIN_EACH = 5
MODEL_FILE = "model.safetensors"


@dataclass
class FinetuneResult:
    """What a fine-tune made and how it compares with its starting model on the held-out pairs."""

    output_dir: Path
    model: Path | None  # model.safetensors (with model.json beside it); None when stopped
    start_model: str
    start_dice: float = math.nan
    dice: float = math.nan
    held_out: list[str] = field(default_factory=list)
    n_train: int = 0
    stopped: bool = False
    gate: str = ""  # what happened to the presence check, in words

    @property
    def better(self) -> bool:
        """Whether the fine-tuned model beat its starting model on the held-out pairs."""
        return not self.stopped and self.dice > self.start_dice

    @property
    def n_pairs(self) -> int:
        return self.n_train + len(self.held_out)

    @property
    def offered(self) -> bool:
        """The offer rule: better on the held-out pairs, and learned from enough corrections for that to
        mean something (:data:`MIN_PAIRS_TO_OFFER`)."""
        return self.better and self.n_pairs >= MIN_PAIRS_TO_OFFER

    @property
    def message(self) -> str:
        """The comparison in one line, as the widget and the CLI say it."""
        if self.stopped:
            return "stopped before the end: the starting model stays in use"
        scores = (f"held-out Dice on {len(self.held_out)} pairs: starting model {self.start_dice:.3f}, "
                  f"fine-tuned {self.dice:.3f}")
        if self.offered:
            return f"{scores}: the fine-tuned model is better"
        if self.better:
            return (f"{scores}: better on these few pairs, but a fine-tune from {self.n_pairs} corrections is not "
                    f"offered (at least {MIN_PAIRS_TO_OFFER}: from fewer it learns those few patients by heart "
                    "and does worse on others); keep more corrections")
        return f"{scores}: not better, keep using the starting model"


def finetune_config(init_from: str, data_dir: str | os.PathLike, output_dir: str | os.PathLike,
                    minutes: float = DEFAULT_MINUTES, hold_out: float = DEFAULT_HOLD_OUT,
                    **overrides: Any) -> TrainConfig:
    """The training config of a fine-tune, from the starting model and the ``finetune`` recipe.

    From the starting checkpoint's header: its image size, Tiny-VAE and augmentation (a model is
    fine-tuned at the size and on the kind of variation it was trained with). ``hold_out`` of the pairs
    (at least :data:`MIN_HELD_OUT`) are kept for the comparison; ``overrides`` replace any field (``None``
    is ignored).
    """
    from napari_wavegms.network.checkpoint import checkpoint_header
    from napari_wavegms.zoo.registry import resolve_model

    if minutes <= 0:
        raise ValueError("the time budget must be a positive number of minutes")
    start = resolve_model(init_from)
    trained = checkpoint_header(start).get("training") or {}
    n_pairs = _count_pairs(Path(data_dir), overrides.get("images") or "images", overrides.get("masks") or "masks")
    if n_pairs < MIN_HELD_OUT + MIN_TRAIN:
        raise ValueError(f"{data_dir} holds {n_pairs} image/mask pair(s); a fine-tune needs at least "
                         f"{MIN_HELD_OUT + MIN_TRAIN} ({MIN_TRAIN} to learn from, {MIN_HELD_OUT} to check the "
                         "result on)")
    fraction = max(hold_out, MIN_HELD_OUT / n_pairs)
    values: dict[str, Any] = {
        "data_dir": os.path.abspath(os.fspath(data_dir)), "output_dir": os.path.abspath(os.fspath(output_dir)),
        "init_from": str(init_from), "recipe": "finetune", "epochs": EPOCH_CAP,
        "time_budget_s": minutes * 60, "val_fraction": fraction, "val_by_examination": True,
        "val_every": EPOCH_CAP,
        "image_size": int(trained.get("image_size") or 128),
        "tiny_vae": str(trained.get("tiny_vae") or "taef2"),
        "augmentation": str(trained.get("augmentation") or "robust"),
        "name": f"fine-tune of {init_from}",
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values)


def _count_pairs(data_dir: Path, images: str, masks: str) -> int:
    from napari_wavegms.training.data import scan_pairs

    try:
        return len(scan_pairs(data_dir / images, data_dir / masks))
    except OSError:
        return 0


def finetune(config: TrainConfig, stop: threading.Event | Callable[[], bool] | None = None
             ) -> Generator[Progress, None, FinetuneResult]:
    """Train as ``config`` says (a :func:`finetune_config`), then compare; yields the training events
    (:class:`~napari_wavegms.training.loop.TrainEvent`) and then ``Progress`` of the scoring. See the module
    docstring."""
    from napari_wavegms.training.loop import train

    run = yield from train(config, stop)
    out = Path(run.output_dir)
    names = json.loads((out / "data.json").read_text())["names"]
    result = FinetuneResult(out, None, str(config.init_from), held_out=list(names["val"]),
                            n_train=len(names["train"]), stopped=run.stopped)
    if run.stopped:
        return result
    model = out / MODEL_FILE
    with atomic_path(model) as tmp:
        shutil.copyfile(run.last, tmp)  # the annealed end of the run: validated once, never chosen on it
    card, result.gate = _card(config, model, names["train"])
    _write_card(model, card)
    held = _pairs_named(config, names["val"])
    result.start_dice = yield from _score(config.init_from, config, held, "starting model")
    result.dice = yield from _score(model, config, held, "fine-tuned model")
    card["finetune"].update({"start_dice": result.start_dice, "dice": result.dice, "better": result.better,
                             "offered": result.offered, "held_out": len(held)})
    _write_card(model, card)
    result.model = model
    return result


def _pairs_named(config: TrainConfig, names: list[str]) -> list:
    """The data folder's pairs with these names (the held-out ones, or the training ones for the gate)."""
    from napari_wavegms.training.data import scan_pairs

    data = Path(config.data_dir)
    by_name = {p.name: p for p in scan_pairs(data / config.images, data / config.masks).pairs}
    return [by_name[n] for n in names if n in by_name]


def _score(model: Any, config: TrainConfig, pairs: list, what: str) -> Generator[Progress, None, float]:
    """Mean native Dice of the masks ``model`` gives a user on ``pairs`` (Dice 1 when both are empty)."""
    from napari_wavegms.training.evaluate import evaluate

    job = evaluate(model, config.data_dir, pairs=pairs, device=config.device, as_predicted=True,
                   threshold=config.threshold)
    scored = yield from relay(job, lambda p: Progress(p.done, p.total, f"scoring the {what} {p.done}/{p.total}"))
    return float(scored.native["dice"])


def _card(config: TrainConfig, model: Path, train_names: list[str]) -> tuple[dict[str, Any], str]:
    """The new model's card: the starting card's kind, images, clean-up and flips, the fine-tune's
    record, and a presence gate refitted on the training pairs or dropped (and which, in words)."""
    from napari_wavegms.zoo.registry import model_card

    start = model_card(config.init_from)
    record = dict(start.record) if start is not None else {}
    keep = ("kind", "images", "modality", "tta", "postprocess")
    card: dict[str, Any] = {k: record[k] for k in keep if k in record}
    card["summary"] = f"fine-tuned from {config.init_from} on {len(train_names)} pairs"
    card["finetune"] = {"from": str(config.init_from), "pairs": len(train_names), "data": str(config.data_dir),
                        "minutes": (config.time_budget_s or 0) / 60, "recipe": config.recipe}
    if record.get("presence"):
        _write_card(model, card)  # the gate is fitted on the masks' inputs as this card makes them (flips)
        gate, note = _refit_gate(config, model, train_names)
        if gate is not None:
            card["presence"] = gate
        card["finetune"]["presence"] = note
        return card, note
    return card, ""


def _refit_gate(config: TrainConfig, model: Path, train_names: list[str]) -> tuple[dict[str, Any] | None, str]:
    """A presence gate fitted on the fine-tuned model's latents of the training pairs, or ``None`` (and
    why) when they hold fewer than :data:`GATE_MIN_EACH` lesion-free or lesion images."""
    from napari_wavegms.training.data import load_pair

    pairs = _pairs_named(config, train_names)
    lesion = [bool(load_pair(p)[1].any()) for p in pairs]
    n_free, n_lesion = lesion.count(False), lesion.count(True)
    if n_free < GATE_MIN_EACH or n_lesion < GATE_MIN_EACH:
        return None, (f"presence check dropped: it was fitted on the starting model's latents, and the "
                      f"training pairs hold {n_free} lesion-free and {n_lesion} lesion images (at least "
                      f"{GATE_MIN_EACH} of each are needed to refit it)")
    return _fit_gate(config, model, pairs, lesion), (f"presence check refitted on {n_free} lesion-free and {n_lesion} "
                                              "lesion training images")


def _fit_gate(config: TrainConfig, model: Path, pairs: list, lesion: list[bool]) -> dict[str, Any]:
    """Fit the gate as ``napari_wavegms.tuning.presence_fit`` does, on the new model; its threshold
    sits below every training lesion's logit, so the refitted gate empties none of them."""
    import numpy as np

    from napari_wavegms.inference.presence import PresenceGate
    from napari_wavegms.inference.segmenter import Segmenter
    from napari_wavegms.tuning.presence_fit import fit, image_features

    seg = Segmenter(model, device=config.device, presence=False)
    x = image_features(seg, pairs, "presence features")
    y = np.array(lesion)
    keep = ~np.isnan(x).any(1)
    centre, scale, weights, bias = fit(x[keep], y[keep])
    gate = PresenceGate(tuple(centre.tolist()), tuple(scale.tolist()), tuple(weights.tolist()), bias, 0.0,
                        flips=bool(seg.flips))
    import torch

    logits = gate.logit(torch.from_numpy(x[keep & y])).numpy()
    threshold = float(min(0.0, logits.min() - 1.0)) if len(logits) else 0.0
    chosen = {"rule": "below every training lesion's logit by 1 (never empties a training lesion), at most 0",
              "fitted_on": f"{int((~y).sum())} lesion-free and {int(y.sum())} lesion training images of a fine-tune"}
    return {**gate.to_dict(), "threshold": threshold, "chosen_on": chosen}


def _write_card(model: Path, card: dict[str, Any]) -> None:
    from napari_wavegms.zoo.card import forget

    path = model.with_suffix(".json")
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(card, indent=2, default=float) + "\n")
    forget(path)


def install_finetuned(result: FinetuneResult, name: str) -> Path:
    """Keep a better fine-tuned model as the user model ``name`` (listed in Segment, Batch and
    ``wavegms-predict --model NAME``); refuses a model that is not better than its start."""
    from napari_wavegms.zoo import user_models
    from napari_wavegms.zoo.registry import installed_models

    if result.model is None or not result.offered:
        raise ValueError(f"the fine-tuned model is not offered ({result.message})")
    card = json.loads(result.model.with_suffix(".json").read_text())
    return user_models.install(result.model, name, card, set(installed_models()))
