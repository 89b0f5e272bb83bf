"""When things happen in a run: the learning rate at each step, how far the run is, the side a step trains at.

By steps (epochs × steps per epoch) or, with a time budget, by training time: a short budget then still
anneals to 0 instead of being cut off at a high learning rate.
"""

from __future__ import annotations

import math
import time

from napari_wavegms.training.config import Recipe


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps (first step at lr/warmup, not 0), then cosine to 0."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class Schedule:
    """How far a run is (0 → 1) and its learning-rate factor, by steps or by a time budget.

    Without a budget the run is ``total`` steps (epochs × steps per epoch) and warm-up then cosine
    follow the step count. With ``budget_s`` the same warm-up fraction and cosine follow the time spent
    training instead, so a 30-minute run anneals to 0 at 30 minutes whatever one step costs: a schedule
    that fits a short budget (an epoch count would leave it cut off at a high learning rate). When the
    epoch cap comes before the budget, the steps lead: the run anneals by whichever end comes first.
    ``clock`` is ``wall`` or ``process`` (this process's CPU seconds: fair when other jobs share the CPU).
    """

    def __init__(self, total: int, warmup: int, budget_s: float | None = None, clock: str = "wall") -> None:
        if clock not in ("wall", "process"):
            raise ValueError(f"time_budget_clock must be 'wall' or 'process', not {clock!r}")
        self.total, self.warmup, self.budget_s = max(1, total), warmup, budget_s
        self._now = time.perf_counter if clock == "wall" else time.process_time
        self.spent = 0.0
        self._since: float | None = None

    def resume(self) -> None:
        """Start (or continue) counting training time; :meth:`pause` stops it (validation is not training)."""
        self._since = self._now()

    def pause(self) -> None:
        if self._since is not None:
            self.spent += self._now() - self._since
            self._since = None

    def elapsed(self) -> float:
        return self.spent + (self._now() - self._since if self._since is not None else 0.0)

    def progress(self, step: int) -> float:
        """How far the run is: by steps, or with a budget by whichever end comes first (the budget, or
        the epoch cap), so a run that reaches its epoch cap early has still annealed to 0 by then."""
        by_steps = min(1.0, step / self.total)
        if self.budget_s:
            return max(by_steps, min(1.0, self.elapsed() / self.budget_s))
        return by_steps

    def lr_factor(self, step: int) -> float:
        if not self.budget_s:
            return lr_factor(step, self.total, self.warmup)
        p, w = self.progress(step), self.warmup / self.total
        if w > 0 and p < w:
            return max(p / w, 1.0 / max(1, self.warmup))
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (p - w) / max(1e-9, 1 - w))))

    def exhausted(self, step: int) -> bool:
        return bool(self.budget_s) and self.elapsed() >= self.budget_s


def stage_size(image_size: int, progress: float, recipe: Recipe) -> int:
    """The side a step trains at: half of ``image_size`` (a multiple of 8, at least 32) early in a
    ``fast`` run, then the full size, which the model keeps for inference."""
    if progress < recipe.small_fraction:
        return max(32, (image_size // 2) // 8 * 8)
    return image_size

