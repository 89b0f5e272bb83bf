"""torchrun's environment, read in one place: what training, folder batches and the device choice share."""

from __future__ import annotations

import pytest
import torch

from napari_wavegms.core.device import resolve_device
from napari_wavegms.core.dist import placement


@pytest.fixture
def torchrun(monkeypatch):
    def set_env(**values: str) -> None:
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            monkeypatch.delenv(name, raising=False)
        for name, value in values.items():
            monkeypatch.setenv(name, value)
    return set_env


def test_one_process_without_torchrun(torchrun):
    torchrun()
    where = placement()
    assert (where.rank, where.world, where.local_rank, where.distributed, where.main) == (0, 1, None, False, True)


def test_a_process_of_torchrun(torchrun):
    torchrun(RANK="3", WORLD_SIZE="4", LOCAL_RANK="1")
    where = placement()
    assert (where.rank, where.world, where.local_rank, where.distributed, where.main) == (3, 4, 1, True, False)


@pytest.mark.parametrize("env", [{"RANK": "4", "WORLD_SIZE": "4"}, {"RANK": "x", "WORLD_SIZE": "2"},
                                 {"RANK": "1", "WORLD_SIZE": "1"}])
def test_malformed_or_inconsistent_variables_mean_one_process(torchrun, env):
    torchrun(**env)
    assert (placement().rank, placement().world) == (0, 1)


def test_the_device_choice_reads_the_same_local_rank(torchrun):
    torchrun(RANK="1", WORLD_SIZE="2", LOCAL_RANK="1")
    assert resolve_device("cpu") == torch.device("cpu")  # a CPU run ignores it
    if torch.cuda.device_count() > 1:
        assert resolve_device("cuda") == torch.device("cuda:1")
