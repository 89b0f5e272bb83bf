"""Teaching a model a new site: corrections kept as pairs, a budgeted fine-tune without a config, the
comparison with the starting model, and the new model used by name or path with its card's kind."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import BUSI, SHARED, link_busi_pairs
from napari_wavegms.cli import predict_main, train_main
from napari_wavegms.core.io import read_image, read_mask
from napari_wavegms.training import corrections
from napari_wavegms.training.data import scan_pairs
from napari_wavegms.training.finetune import FinetuneResult, install_finetuned
from napari_wavegms.zoo import registry

BUSBRA = SHARED / "data" / "bus-bra-256"
START = "breast-ultrasound-busi-busbra"


def link_busbra(root: Path, names: list[str]) -> Path:
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
        for n in names:
            (root / sub / f"{n}.png").symlink_to(BUSBRA / sub / f"{n}.png")
    return root


def test_a_kept_correction_is_a_training_pair_with_its_record(tmp_path):
    image = read_image(BUSI / "images" / "benign_1.png")
    truth = read_mask(BUSI / "masks" / "benign_1.png")
    rows = np.flatnonzero(truth.any(1))
    middle = (rows[0] + rows[-1]) // 2
    drawn = truth.copy()
    drawn[middle:] = 0  # the model found the top half of the lesion
    folder = tmp_path / "corrections"
    assert corrections.count(folder) == 0
    kept = corrections.keep(folder, image, truth, name="benign_1", model=START, drawn=drawn,
                            source=str(BUSI / "images" / "benign_1.png"))
    assert corrections.count(folder) == 1
    assert np.array_equal(read_image(kept.image), image) and np.array_equal(read_mask(kept.mask), truth > 0)
    expected = 2 * drawn.astype(bool).sum() / (drawn.astype(bool).sum() + truth.astype(bool).sum())
    assert kept.record["changed_dice"] == pytest.approx(expected) and 0 < expected < 1
    assert kept.record["model"] == START and corrections.records(folder)[0]["name"] == "benign_1"
    # corrected again: the pair is replaced, never doubled; another image of that name gets its own
    corrections.keep(folder, image, drawn, name="benign_1", source=str(BUSI / "images" / "benign_1.png"))
    other = corrections.keep(folder, image, truth, name="benign_1", source="another hospital/benign_1.png")
    assert other.name == "benign_1-2" and corrections.count(folder) == 2
    assert np.array_equal(read_mask(folder / "masks" / "benign_1.png"), drawn > 0)
    assert sorted(scan_pairs(folder / "images", folder / "masks").names) == ["benign_1", "benign_1-2"]
    with pytest.raises(ValueError, match="does not cover the image"):
        corrections.keep(folder, image, truth[:10], name="bad")
    with pytest.raises(ValueError, match="one 2D image"):
        corrections.keep(folder, np.zeros((3, 40, 40, 2)), np.zeros((3, 40)), name="bad")
    assert corrections.count(folder) == 2


def test_wavegms_train_fine_tunes_without_a_config_and_predict_uses_the_result(tmp_path, capsys):
    """The command a site runs: no config, the start's settings and the finetune recipe, a budget that
    governs the run, the comparison printed, and a model that wavegms-predict uses with its card."""
    names = (BUSBRA / "splits" / "fold1.txt").read_text().split()[:8]
    data = link_busbra(tmp_path / "site", names)
    out = tmp_path / "out"
    rc = train_main(["--init-from", START, "--data", str(data), "--output", str(out), "--time-budget", "1",
                     "--quiet"])
    said = capsys.readouterr().out
    assert rc == 0, said
    assert "held-out Dice on 4 pairs: starting model" in said and "presence check dropped" in said
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["recipe"] == "finetune" and config["image_size"] == 128 and config["time_budget_s"] == 60
    assert config["init_from"] == START and config["augmentation"] == "robust"
    history = list(csv.DictReader(open(out / "history.csv")))
    assert float(history[-1]["lr"]) < 0.2 * config["lr"]  # annealed by the end of the budget
    assert float(history[-1]["train_seconds"]) >= 55
    card = json.loads((out / "model.json").read_text())
    start_card = registry.model_card(START)
    assert card["kind"] == start_card.kind == "ultrasound"
    assert card["tta"] == start_card.record["tta"] and card["postprocess"] == start_card.record["postprocess"]
    assert "presence" not in card and "dropped" in card["finetune"]["presence"]
    assert card["finetune"]["held_out"] == 4 and isinstance(card["finetune"]["better"], bool)
    assert registry.resolve_model(out) == out / "model.safetensors"

    images = tmp_path / "new-images"
    images.mkdir()
    for n in (BUSBRA / "splits" / "fold5.txt").read_text().split()[:2]:
        (images / f"{n}.png").symlink_to(BUSBRA / "images" / f"{n}.png")
    masks = tmp_path / "masks"
    assert predict_main([str(images), str(masks), "--model", str(out / "model.safetensors"), "--quiet"]) == 0
    rows = list(csv.DictReader(open(next(masks.glob("*.csv")))))
    assert len(rows) == 2 and all(r["status"] == "done" for r in rows)
    assert all(Path(r["model"]).name == "model.safetensors" for r in rows)
    assert len(list(masks.glob("*.png"))) == 2


def test_refits_the_presence_gate_on_lesion_free_corrections_and_offers_only_a_better_model(tmp_path):
    """With enough lesion-free and lesion pairs the gate is refitted on the new model (a gate fitted on
    the old model's latents is never carried over); a model that is not better is refused."""
    from napari_wavegms.core.progress import run_to_end
    from napari_wavegms.training.finetune import finetune, finetune_config

    free = (BUSI / "splits" / "normal_train.txt").read_text().split()[:9]
    lesion = (BUSI / "splits" / "gms_train.txt").read_text().split()[:9]
    data = link_busi_pairs(tmp_path / "site", free + lesion)
    config = finetune_config(START, data, tmp_path / "out", minutes=0.05, hold_out=0.15)
    result = run_to_end(finetune(config))
    card = json.loads((result.model.with_suffix(".json")).read_text())
    assert result.gate.startswith("presence check refitted on")
    assert card["presence"]["chosen_on"]["fitted_on"].endswith("training images of a fine-tune")
    start_gate = registry.model_card(START).presence
    assert card["presence"]["weights"] != list(start_gate.weights)
    assert registry.model_card(result.model).presence is not None  # the segmenter will use it
    assert len(result.held_out) == 4 and result.n_train == 14

    worse = FinetuneResult(result.output_dir, result.model, START, start_dice=0.8, dice=0.7)
    assert not worse.better and "not better, keep using the starting model" in worse.message
    with pytest.raises(ValueError, match="not better"):
        install_finetuned(worse, "mine")
    few = FinetuneResult(result.output_dir, result.model, START, start_dice=0.7, dice=0.8, held_out=["a"] * 4,
                         n_train=14)
    assert few.better and not few.offered and "is not offered (at least 20" in few.message
    with pytest.raises(ValueError, match="not offered"):
        install_finetuned(few, "mine")
    better = FinetuneResult(result.output_dir, result.model, START, start_dice=0.7, dice=0.8, held_out=["a"] * 4,
                            n_train=16)
    kept = install_finetuned(better, "ultrasound — test site")
    assert registry.resolve_model("ultrasound — test site") == kept
    assert registry.model_card("ultrasound — test site").kind == "ultrasound"
