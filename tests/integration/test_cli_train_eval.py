"""``wavegms-train`` and ``wavegms-eval`` as a user runs them, and two-process DDP training with gloo."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import BUSI, WEIGHTS, link_busi_pairs
from napari_wavegms.cli import eval_main, train_main
from napari_wavegms.network.checkpoint import read_checkpoint


@pytest.fixture
def busi10(tmp_path, busi_names):
    """Ten real BUSI pairs (symlinks) with split lists: 8 for training, 2 for validation."""
    root = link_busi_pairs(tmp_path / "data", busi_names[:10])
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("\n".join(busi_names[:8]) + "\n")
    (root / "splits" / "val.txt").write_text("\n".join(busi_names[8:10]) + "\n")
    return root


def write_config(folder: Path, data: Path) -> Path:
    cfg = folder / "cfg" / "tiny.yaml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(data, cfg.parent)  # relative to the YAML file, as in training/configs/busi.yaml
    cfg.write_text(f"data_dir: {rel}\ntrain_split: splits/train.txt\nval_split: splits/val.txt\n"
                   f"weights_dir: {WEIGHTS}\nwarmup_epochs: 1\nseed: 7\n")
    return cfg


def test_train_then_eval_cli(tmp_path, busi10, capsys):
    cfg = write_config(tmp_path, busi10)
    out = tmp_path / "run"
    rc = train_main([str(cfg), "--output", str(out), "--epochs", "1", "--image-size", "32",
                     "--batch-size", "4", "--device", "cpu"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "8 train / 2 val / 0 test pairs" in err and "epoch 1/1" in err
    assert {"best.safetensors", "last.safetensors", "last.state.safetensors", "config.yaml",
            "history.csv", "data.json"} <= {p.name for p in out.iterdir()}
    header, _ = read_checkpoint(out / "best.safetensors")
    assert header["training"]["image_size"] == 32 and header["training"]["data_dir"] == str(busi10.resolve())
    assert header["training"]["recipe"] == "fast" and header["run"]["recipe"] == "fast"  # the default

    # the paper's recipe, asked for by name, and a time budget in minutes
    paper = tmp_path / "paper"
    assert train_main([str(cfg), "--output", str(paper), "--epochs", "3", "--image-size", "32", "--batch-size",
                       "4", "--device", "cpu", "--recipe", "paper", "--time-budget", "1e-6", "--quiet"]) == 0
    header, _ = read_checkpoint(paper / "last.safetensors")
    assert header["run"]["recipe"] == "paper" and header["training"]["time_budget_s"] == pytest.approx(6e-5)
    # 60 µs: spent by the first step on any machine, so the run ends after it (epoch 1 of 3, step 1 of 6)
    assert header["epoch"] == 1 and header["step"] == 1

    # eval: one JSON object with both protocols; the split is read relative to DATA
    rc = eval_main([str(out), str(busi10), "--split", "splits/val.txt", "--device", "cpu", "--json",
                    "--csv", str(tmp_path / "scores.csv"), "--quiet", "--precision", "fp32"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 2
    assert result["dice"] == result["paper"]["dice"]
    assert {"dice", "iou", "hd95"} <= set(result["paper"]) and {"dice", "iou", "hd95"} <= set(result["native"])
    rows = list(csv.DictReader((tmp_path / "scores.csv").open()))
    assert sorted(r["name"] for r in rows) == sorted((busi10 / "splits" / "val.txt").read_text().split())

    # a table without --json
    assert eval_main([str(out / "last.safetensors"), str(busi10), "--device", "cpu", "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "10 images" in table and "native" in table and "HD95" in table


def test_eval_as_predicted_scores_the_masks_a_user_gets(tmp_path, busi_names, capsys):
    """The ultrasound model on a lesion scan and a lesion-free one. ``--as-predicted`` scores exactly the
    masks ``Segmenter`` makes with the card's defaults: the presence check empties the lesion-free scan's
    mask (Dice 1), where the bare model draws on it (Dice 0)."""
    import numpy as np

    from napari_wavegms.core.io import read_image
    from napari_wavegms.inference.segmenter import Segmenter
    from napari_wavegms.training.data import Pair, load_pair
    from napari_wavegms.training.metrics import dice_iou
    from napari_wavegms.zoo.registry import card_tta, suggest_model

    model = suggest_model("ultrasound")
    names = [busi_names[0], "normal_90"]
    split = tmp_path / "two.txt"
    split.write_text("\n".join(names) + "\n")

    def scores(*flags: str) -> tuple[dict, dict[str, float]]:
        table = tmp_path / f"scores{len(flags)}.csv"
        assert eval_main([model, str(BUSI), "--split", str(split), "--device", "cpu", "--precision", "fp32",
                          "--csv", str(table), "--json", "--quiet", *flags]) == 0
        summary = json.loads(capsys.readouterr().out)
        with open(table, newline="") as f:
            return summary, {row["name"]: float(row["native_dice"]) for row in csv.DictReader(f)}

    bare, bare_dice = scores()
    user, user_dice = scores("--as-predicted")
    assert "as predicted" not in bare["model"]
    flips = "on" if card_tta(model) else "off"
    assert f"as predicted: flips {flips}" in user["model"] and "presence check on" in user["model"]
    assert bare_dice["normal_90"] == 0.0 and user_dice["normal_90"] == 1.0
    segmenter = Segmenter(model, device="cpu", precision="fp32")
    for name in names:
        _, truth, _ = load_pair(Pair(name, BUSI / "images" / f"{name}.png", BUSI / "masks" / f"{name}.png"))
        expected = dice_iou(segmenter(read_image(BUSI / "images" / f"{name}.png")) > 0, truth)[0]
        assert user_dice[name] == pytest.approx(expected)
    assert user["native"]["dice"] == pytest.approx(np.mean(list(user_dice.values())))


def test_cli_errors_are_clear(tmp_path, busi10, capsys):
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 1\n")
    assert train_main([str(cfg), "--data", str(empty), "--output", str(tmp_path / "o"), "--quiet"]) == 1
    assert "no image/mask pairs to train on" in capsys.readouterr().err
    assert train_main([str(tmp_path / "missing.yaml")]) == 2
    assert "no such config file" in capsys.readouterr().err
    assert eval_main([str(tmp_path / "nope.safetensors"), str(busi10), "--quiet"]) == 1
    assert "neither an installed model" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_gloo(tmp_path, busi10):
    """torchrun with 2 CPU processes: each epoch sees the 8 training pairs once across ranks, and one
    checkpoint set is written (by rank 0)."""
    cfg = write_config(tmp_path, busi10)
    out = tmp_path / "ddp"
    script = Path(__file__).with_name("ddp_worker.py")  # wavegms-train that also saves each rank's weights
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), str(script), str(cfg), "--output", str(out), "--epochs", "1",
           "--image-size", "32", "--batch-size", "2", "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = list(csv.DictReader((out / "history.csv").open()))
    assert len(history) == 1
    assert history[0]["samples_seen"] == "8" and history[0]["samples_unique"] == "8"
    assert history[0]["step"] == "2"                    # 4 pairs per rank, batch 2
    ranks = [load_file(out / f"rank{r}.safetensors") for r in (0, 1)]
    files = sorted(p.name for p in out.iterdir() if not p.name.startswith("rank"))
    assert files == ["best.safetensors", "config.yaml", "data.json", "history.csv", "last.safetensors",
                     "last.state.safetensors"]
    # The ranks trained on different halves with different noise, yet end with the same weights: DDP's
    # all-reduce, which rank 0's checkpoint (what users get) therefore speaks for.
    assert ranks[0].keys() == ranks[1].keys() and len(ranks[0]) > 10
    for name, tensor in ranks[0].items():
        torch.testing.assert_close(ranks[1][name], tensor, rtol=0, atol=0, msg=name)
    _, saved = read_checkpoint(out / "last.safetensors")
    trained = [name for name in ranks[0] if name in saved]
    assert trained and all(torch.equal(saved[name].float(), ranks[0][name].float()) for name in trained)
    header, _ = read_checkpoint(out / "best.safetensors")
    assert header["run"]["world_size"] == 2
    assert proc.stderr.count("epoch 1/1 loss") == 1       # only rank 0 reports
