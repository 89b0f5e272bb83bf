"""Resuming after a kill -9 between the two files a run saves at each epoch's end.

``last.state.safetensors`` (optimizer, counters, random state) is written first, then
``last.safetensors``; a run killed between them leaves the state of epoch N beside the weights of
epoch N-1. A resume must not pair them (it would silently skip an epoch's training): the state keeps
the weights it belongs to and the resume continues from those, exactly as if never stopped. A state
file from before it kept weights is refused when its epoch is not the weights' epoch.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_training import assert_same_training, run_until

from conftest import WEIGHTS, drain, link_busi_pairs
from napari_wavegms.network.checkpoint import CheckpointError, checkpoint_header
from napari_wavegms.training import TrainConfig, train


def strip_weights(state: Path) -> None:
    """Make a state file as the version before weights were kept wrote it."""
    with safe_open(str(state), "pt") as f:
        metadata = {k: v for k, v in (f.metadata() or {}).items() if k != "weights_sha256"}
    tensors = {k: v for k, v in load_file(state).items() if not k.startswith("model.")}
    save_file(tensors, str(state), metadata=metadata)


def test_a_run_killed_between_its_two_saves_resumes_as_if_never_stopped(tmp_path, busi_names, caplog):
    data = link_busi_pairs(tmp_path / "busi", busi_names[:6])
    out = tmp_path / "run"
    cfg = TrainConfig(data_dir=str(data), image_size=32, epochs=3, batch_size=4, warmup_epochs=1, val_fraction=0.34,
                      output_dir=str(out), weights_dir=str(WEIGHTS), device="cpu")
    _, reference = drain(train(TrainConfig(**{**cfg.to_dict(), "output_dir": str(tmp_path / "ref")})))
    resume = TrainConfig(**{**cfg.to_dict(), "resume": True})

    run_until(cfg, "epoch")                                    # epoch 1 saved
    shutil.copy(out / "last.safetensors", tmp_path / "epoch1.safetensors")
    run_until(resume, "epoch")                                 # epoch 2 saved
    shutil.copy(tmp_path / "epoch1.safetensors", out / "last.safetensors")  # killed before the weights were written
    assert checkpoint_header(out / "last.safetensors")["epoch"] == 1

    # a state file from before it kept its weights cannot be paired with weights of another epoch
    old = tmp_path / "old"
    shutil.copytree(out, old)
    strip_weights(old / "last.state.safetensors")
    with pytest.raises(CheckpointError, match=r"from epoch 2 but last\.safetensors from epoch 1"):
        drain(train(TrainConfig(**{**resume.to_dict(), "output_dir": str(old)})))

    with caplog.at_level(logging.WARNING, logger="napari_wavegms.training.loop"):
        events, result = drain(train(resume))
    assert [e.epoch for e in events if e.kind == "epoch"] == [3]  # no epoch skipped, none repeated
    assert_same_training(out, tmp_path / "ref", result.history, reference.history)
    assert "stopped while saving" in caplog.text
