"""Where this process stands under ``torchrun``: its rank, the number of processes and its local GPU.

Read from the environment that ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), in one
place, so that training (DistributedDataParallel), folder batches (every ``world``-th file) and the
device choice (this process's GPU) agree. Nothing here starts a process group: only training needs one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Placement:
    rank: int = 0
    world: int = 1
    local_rank: int | None = None

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def placement() -> Placement:
    """This process's rank and world size (``0`` and ``1`` outside ``torchrun``, or when the variables are
    malformed or inconsistent) and its ``LOCAL_RANK`` (``None`` when unset)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError:
        world, rank = 1, 0
    if world <= 1 or not 0 <= rank < world:
        world, rank = 1, 0
    try:
        local = os.environ.get("LOCAL_RANK")
        local_rank = int(local) if local is not None else None
    except ValueError:
        local_rank = None
    return Placement(rank, world, local_rank)
