"""Progress events shared by every long job, so the CLI and the napari widgets show the same thing.

Long jobs are generators: they ``yield`` :class:`Progress` (or a richer subclass) and ``return`` their
result. To cancel, the consumer stops iterating and calls ``close()`` on the generator; jobs clean up
in ``finally`` (training saves its ``last`` checkpoint there).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class Progress:
    """``done`` of ``total`` units of work (images, slices, steps); ``message`` says what is happening."""

    done: int
    total: int
    message: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


def run_to_end(job: Generator[Any, None, T]) -> T:
    """Drive a job generator to completion without showing progress and return its result."""
    while True:
        try:
            next(job)
        except StopIteration as stop:
            return stop.value


def relay(job: Generator[Any, None, T], translate: Callable[[Any], Any]) -> Generator[Any, None, T]:
    """Re-yield each event of ``job`` as ``translate(event)`` (dropped when that is ``None``) and return
    ``job``'s result: for a long job that runs another one as a step (``result = yield from relay(...)``).
    Closing the relay (a cancel) closes ``job`` at once, so its own clean-up (``finally``) runs then."""
    try:
        while True:
            try:
                event = next(job)
            except StopIteration as stop:
                return stop.value
            translated = translate(event)
            if translated is not None:
                yield translated
    finally:
        job.close()


def run_with_tqdm(job: Generator[Any, None, T], desc: str = "", unit: str = "it", disable: bool = False) -> T:
    """Drive a job with a tqdm progress bar (the CLI's view); Ctrl-C closes the job cleanly."""
    from tqdm.auto import tqdm

    bar = tqdm(desc=desc, unit=unit, disable=disable, dynamic_ncols=True)
    try:
        while True:
            try:
                event = next(job)
            except StopIteration as stop:
                return stop.value
            if isinstance(event, Progress):
                bar.total = event.total
                bar.n = event.done
                if event.message:
                    bar.set_postfix_str(event.message, refresh=False)
                bar.refresh()
    except KeyboardInterrupt:
        job.close()
        raise
    finally:
        bar.close()
