"""Training on real BUSI pairs at 32–64² on the CPU: checkpoints, stop, resume (as if never stopped),
evaluate; the model learns."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import BUSI, REPO, WEIGHTS, drain, link_busi_pairs
from napari_wavegms.core.progress import run_to_end
from napari_wavegms.network.checkpoint import load_checkpoint, load_train_state, read_checkpoint, save_train_state
from napari_wavegms.training import TrainConfig, train
from napari_wavegms.training.data import PairDataset, scan_pairs
from napari_wavegms.training.evaluate import evaluate
from napari_wavegms.training.schedule import lr_factor


@pytest.fixture
def busi16(tmp_path, busi_names):
    """The 16 real BUSI pairs as a data folder (symlinks: the shared data is never copied or touched)."""
    return link_busi_pairs(tmp_path / "busi16", busi_names)


def test_warmup_is_per_step_then_cosine_to_zero():
    total, warm = 100, 10
    f = [lr_factor(s, total, warm) for s in range(total)]
    assert f[0] == pytest.approx(0.1)                 # the first step already learns (not lr 0)
    assert f[9] == pytest.approx(1.0) and f[10] == pytest.approx(1.0)
    assert all(a < b for a, b in itertools.pairwise(f[:10]))
    assert all(a >= b for a, b in itertools.pairwise(f[10:]))
    assert f[-1] < 0.001


def test_config_yaml_round_trip(tmp_path):
    cfg_file = tmp_path / "conf" / "run.yaml"
    cfg_file.parent.mkdir()
    cfg_file.write_text("data_dir: ../data\nepochs: 3\nimage_size: 64\n")
    cfg = TrainConfig.from_yaml(cfg_file, batch_size=2, lr=None)
    assert cfg.data_dir == str((tmp_path / "data").resolve())     # relative to the YAML file
    assert (cfg.epochs, cfg.batch_size, cfg.lr) == (3, 2, 2e-3)
    back = TrainConfig.from_yaml(cfg.to_yaml(tmp_path / "saved.yaml"))
    assert back == cfg
    cfg_file.write_text("data_dir: x\nlr: 2e-3\nbatch_size: '16'\nwarmup_epochs: 5\ntime_budget_s: null\n")
    cfg = TrainConfig.from_yaml(cfg_file)        # YAML 1.1 reads 2e-3 (no dot) as a string
    assert (cfg.lr, cfg.batch_size, cfg.warmup_epochs, cfg.time_budget_s) == (0.002, 16, 5.0, None)
    assert isinstance(cfg.lr, float) and isinstance(cfg.batch_size, int)
    for bad, says in (("lr: fast", "lr: 'fast' is not a number"), ("epochs: 2.5", "epochs: 2.5 is not an integer")):
        cfg_file.write_text(f"data_dir: x\n{bad}\n")
        with pytest.raises(ValueError, match=f"training option {says}"):
            TrainConfig.from_yaml(cfg_file)
    cfg_file.write_text("data_dir: x\nepoch: 3\n")
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_yaml(cfg_file)


def test_the_builtin_models_configs_load_and_an_unknown_augmentation_is_refused(tmp_path):
    """The YAML files the built-in models were trained from still parse, with the robust augmentation;
    a misspelt augmentation stops the run before any work, naming the choices."""
    from napari_wavegms.cli import train_main

    for name in ("ultrasound", "kvasir-seg", "isic2017", "busi"):
        cfg = TrainConfig.from_yaml(REPO / "training" / "configs" / f"{name}.yaml")
        assert cfg.augmentation == ("standard" if name in ("busi", "kvasir-seg") else "robust"), name
    with pytest.raises(ValueError, match="unknown augmentation 'strong'; use one of standard, robust"):
        next(train(TrainConfig(data_dir=str(tmp_path), augmentation="strong")))
    assert train_main([str(REPO / "training" / "configs" / "busi.yaml"), "--augment", "sturdy"]) == 2  # usage error


TIMES = ("seconds", "train_seconds")  # wall-clock columns of the history: the only ones a resume may change


def run_until(cfg: TrainConfig, kind: str, count: int = 1) -> list:
    """Train until the ``count``-th event of ``kind``, then close the job as a user stopping it would."""
    job, events = train(cfg), []
    for ev in job:
        events.append(ev)
        if sum(e.kind == kind for e in events) == count:
            job.close()
            break
    return events


def assert_same_training(run: Path, reference: Path, history: list[dict], reference_history: list[dict]) -> None:
    """The same weights, bit for bit, and the same history but for the clock."""
    got, want = load_file(run / "last.safetensors"), load_file(reference / "last.safetensors")
    assert got.keys() == want.keys()
    assert [k for k in want if not torch.equal(got[k], want[k])] == []
    assert [{k: v for k, v in row.items() if k not in TIMES} for row in history] == [
        {k: v for k, v in row.items() if k not in TIMES} for row in reference_history]


def test_train_stop_resume_evaluate(tmp_path, busi16, busi_names):
    out = tmp_path / "run"
    lists = {"train": busi_names[4:12], "val": busi_names[12:], "test": busi_names[:4]}
    for split, names in lists.items():
        (tmp_path / f"{split}.txt").write_text("\n".join(names))
    cfg = TrainConfig(data_dir=str(busi16), image_size=32, epochs=2, batch_size=4, warmup_epochs=1,
                      train_split=str(tmp_path / "train.txt"), val_split=str(tmp_path / "val.txt"),
                      test_split=str(tmp_path / "test.txt"), output_dir=str(out), weights_dir=str(WEIGHTS),
                      device="cpu")
    # 0. the reference: the same run, never interrupted
    ref_events, reference = drain(train(TrainConfig(**{**cfg.to_dict(), "output_dir": str(tmp_path / "ref")})))
    assert [e.done for e in ref_events if e.kind == "step"] == [1, 2, 3, 4]
    # 1. stop after the first step: last and best are kept
    events = run_until(cfg, "step")
    ev = events[-1]
    assert ev.done == 1 and ev.total == 4 and ev.losses["total"] > 0 and ev.device.startswith("cpu")
    assert 0 < ev.info["lr"] <= cfg.lr
    assert events[0].kind == "prepare"
    assert (out / "last.safetensors").is_file() and (out / "best.safetensors").is_file()
    assert not (out / "test.json").exists()               # a stopped run never touches the test split
    data = json.loads((out / "data.json").read_text())
    assert data["splits"] == {"train": 8, "val": 4, "test": 4}
    assert data["names"]["test"] == lists["test"]
    # a fresh run may not silently replace it
    with pytest.raises(FileExistsError, match="already holds a training run"):
        next(train(cfg))
    # 2. replace it, and stop after the first complete epoch
    assert [e.kind for e in run_until(TrainConfig(**{**cfg.to_dict(), "overwrite": True}), "epoch")][-3:] == [
        "step", "step", "epoch"]
    # 3. resume: continues with the second epoch only, then finishes and scores the test split once; the
    # result is the uninterrupted run's, bit for bit (weights, optimizer and random state all restored)
    events, result = drain(train(TrainConfig(**{**cfg.to_dict(), "resume": True})))
    assert [e.done for e in events if e.kind == "step"] == [3, 4]
    epochs = [e for e in events if e.kind == "epoch"]
    assert [e.epoch for e in epochs] == [2]
    assert all(set(e.val) >= {"dice", "iou", "hd95"} and e.val["n"] == 4 for e in epochs)
    assert not result.stopped
    assert_same_training(out, tmp_path / "ref", result.history, reference.history)
    assert [h["samples_seen"] for h in result.history] == [8, 8]
    assert [h["samples_unique"] for h in result.history] == [8, 8]
    assert result.test["n"] == 4 and {"paper", "native", "dice"} <= set(result.test)
    assert result.test == reference.test
    assert json.loads((out / "test.json").read_text()) == result.test
    # checkpoints carry the whole config, the data summary and the metrics, and are valid models
    header, _ = read_checkpoint(result.best)
    assert header["training"]["image_size"] == 32 and header["data"]["splits"]["train"] == 8
    assert "dice" in header["metrics"]["val"] and header["metrics"]["test"]["n"] == 4
    meta, rng = load_train_state(out / "last.state.safetensors",
                                 torch.optim.AdamW(load_checkpoint(result.last)[0].trainable_parameters()))
    assert meta["epoch"] == 2 and len(meta["history"]) == 2 and "aug" in rng
    # 3. evaluate the run folder on all 16 pairs, both protocols
    res = run_to_end(evaluate(out, busi16, device="cpu", csv=tmp_path / "scores.csv"))
    assert res.n == 16 and (tmp_path / "scores.csv").is_file()
    js = res.to_json()
    assert js["dice"] == res.paper["dice"] and 0 <= js["native"]["dice"] <= 1
    assert {"name", "dice", "native_dice", "native_hd95", "height", "width"} <= set(res.rows[0])
    # 4. fine-tune from it: without a recipe named, at full size throughout (the finetune recipe)
    values = {k: v for k, v in cfg.to_dict().items() if k != "recipe"}
    ft = TrainConfig(**{**values, "output_dir": str(tmp_path / "ft"), "init_from": str(out),
                        "epochs": 1, "max_steps": 1, "test_split": None})
    ft_result = run_to_end(train(ft))
    assert ft_result.stopped and ft_result.last.is_file()
    ft_header = read_checkpoint(ft_result.last)[0]
    assert ft_header["init_from"] == str(out / "best.safetensors")
    assert ft_header["run"]["recipe"] == ft_header["training"]["recipe"] == "finetune"


def test_train_state_round_trip(tmp_path):
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    saved = torch.get_rng_state()
    save_train_state(tmp_path / "s.safetensors", opt, {"epoch": 4}, {"cpu": saved})
    after_save = torch.rand(5)  # the generator moves on: the file must hold the state it had when saved
    q = torch.nn.Parameter(torch.ones(3))
    opt2 = torch.optim.AdamW([q], lr=0.5)
    meta, rng = load_train_state(tmp_path / "s.safetensors", opt2)
    assert meta == {"epoch": 4} and torch.equal(rng["cpu"], saved)
    assert not torch.equal(rng["cpu"], torch.get_rng_state())
    torch.set_rng_state(rng["cpu"])
    assert torch.equal(torch.rand(5), after_save)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    torch.testing.assert_close(s1["state"][0]["exp_avg"], s2["state"][0]["exp_avg"])
    assert s2["param_groups"][0]["lr"] == 0.1


def test_model_overfits_a_fixed_batch(taef2):
    """The loss on 4 real images at 64² falls clearly and the masks it predicts fit them."""
    from napari_wavegms.network import WaveGMS, wavegms_loss

    names = (BUSI / "splits" / "gms_test.txt").read_text().split()[:4]
    x, m = PairDataset(scan_pairs(BUSI / "images", BUSI / "masks", names=names).pairs, 64).batch(range(4))
    torch.manual_seed(0)
    model = WaveGMS(taef2, 64).train()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=2e-3, weight_decay=0.01)
    losses = []
    for _ in range(45):
        loss, parts = wavegms_loss(model, x, m)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(parts)
    first = sum(p["total"] for p in losses[:3]) / 3
    last = sum(p["total"] for p in losses[-3:]) / 3
    assert last < 0.5 * first
    pred = model.eval().predict(x) > 0.5
    dice = 2 * (pred & (m > 0)).sum() / (pred.sum() + (m > 0).sum())
    assert dice > 0.5
