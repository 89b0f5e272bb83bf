"""Run an engine job (a generator yielding Progress) off the GUI thread, with progress, cancel and errors.

Every widget starts its long work through :func:`start_job`, so all of them behave alike:

- the generator runs in a napari ``GeneratorWorker`` thread; the GUI thread only receives its events;
- a ``napari.utils.progress`` bar in the activity dock follows the job's ``Progress`` events;
- :meth:`Job.cancel` asks the worker to stop (``worker.quit()``); the worker then *closes* the engine
  generator in its own thread, so the job's ``finally`` blocks run (training saves ``last`` there);
- an exception reaches the user as a napari error notification (:func:`notify_error`): one short line
  that leads with the fix when the error carries one (``summary``, as a missing-weights error does),
  and a "Details" button for the full text;
- ``WAVEGMS_SYNC=1`` runs jobs synchronously on the calling thread (deterministic scripts and tests).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Generator
from typing import Any

from napari.qt.threading import GeneratorWorker
from napari.utils import progress
from napari.utils.notifications import Notification, NotificationSeverity, notification_manager

from napari_wavegms.core.progress import Progress

log = logging.getLogger(__name__)

SYNC_ENV = "WAVEGMS_SYNC"
MESSAGE_CHARS = 160  # what a napari notification shows without cutting; the rest is behind "Details"
_details_open: list[Any] = []  # open details dialogs (kept referenced until closed)


def error_texts(description: str, err: BaseException) -> tuple[str, str]:
    """``(short, full)`` texts of a failed job: ``short`` fits a notification and leads with the fix
    when the error carries one (its ``summary``); ``full`` is everything, for the Details dialog."""
    cause = err.__cause__ if isinstance(err, JobError) and err.__cause__ is not None else err
    full = str(cause).strip() or type(cause).__name__
    fix = str(getattr(cause, "summary", "") or "").strip()
    short = f"{fix} ({description} failed)" if fix else f"{description} failed: {full.splitlines()[0]}"
    if len(short) > MESSAGE_CHARS:
        short = short[: MESSAGE_CHARS - 1].rstrip() + "…"
    return short, f"{description} failed.\n\n{full}"


def show_details(title: str, short: str, full: str) -> Any:
    """A non-modal dialog with the whole error text (selectable, so it can be copied into a report)."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QMessageBox

    box = QMessageBox(QMessageBox.Icon.Warning, title, short)
    box.setInformativeText(full)
    box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.finished.connect(lambda *_: _details_open.remove(box) if box in _details_open else None)
    _details_open.append(box)
    box.show()
    return box


def notify_error(description: str, err: BaseException) -> Notification:
    """Show ``err`` as a napari error notification: the short text, with the full one behind "Details"."""
    short, full = error_texts(description, err)
    actions = [("Details", lambda *_: show_details("Wave-GMS error", short, full))]
    notification = Notification(short, severity=NotificationSeverity.ERROR, actions=actions)
    notification.details = full  # for scripts and tests: what the Details button shows
    _dispatch(notification)
    return notification


def _dispatch(notification: Notification) -> None:
    notification_manager.dispatch(notification)


class JobError(Exception):
    """An engine ``RuntimeError`` re-raised under another type: superqt's worker treats a RuntimeError
    as "the worker object was deleted" and only warns, which would hide real failures from the user."""


def _passthrough(job: Generator[Any, None, Any]) -> Generator[Any, None, Any]:
    try:
        return (yield from job)
    except RuntimeError as err:
        raise JobError(str(err) or type(err).__name__) from err


class _ClosingWorker(GeneratorWorker):
    """A GeneratorWorker that closes its generator when it stops, in the worker thread.

    napari's worker only stops *iterating* on ``quit()``; closing the generator is what lets engine
    jobs clean up (free memory, remove temporary files, save the last checkpoint).
    Errors are reported by :class:`Job` with a readable message, so napari's generic relay is removed.
    """

    def _relay_error(self, exc: Exception) -> None:  # Job shows the error itself
        pass

    def work(self) -> Any:
        try:
            return super().work()
        finally:
            self._gen.close()


class Job:
    """One running job: its worker, its progress bar and its callbacks.

    ``on_event(event)`` gets every yielded item on the GUI thread, ``on_result(value)`` the generator's
    return value, ``on_finished(status)`` runs last with ``"done"``, ``"cancelled"`` or ``"failed"``.
    """

    def __init__(
        self,
        job: Generator[Any, None, Any],
        *,
        description: str,
        on_event: Callable[[Any], None] | None = None,
        on_result: Callable[[Any], None] | None = None,
        on_finished: Callable[[str], None] | None = None,
        show_progress: bool = True,
    ) -> None:
        self.description = description
        self._job = job
        self._on_event = on_event
        self._on_result = on_result
        self._on_finished = on_finished
        self.status = "pending"
        self.error: BaseException | None = None
        self.last_event: Any = None
        self._pbar = progress(total=0, desc=description) if show_progress else None
        self.worker: _ClosingWorker | None = None
        self._ended = False
        self._in_event = False
        self._pending: list[tuple[Callable[..., None], tuple]] = []

    @property
    def running(self) -> bool:
        """True until the job has ended *and* its finished callback has run."""
        return not self._ended

    def start(self) -> Job:
        self.status = "running"
        if os.environ.get(SYNC_ENV, "") not in ("", "0"):
            self._run_sync()
            return self
        worker = _ClosingWorker(_passthrough, self._job)
        worker.yielded.connect(self._event)
        worker.returned.connect(lambda value: self._in_order(self._returned, value))
        worker.errored.connect(lambda err: self._in_order(self._errored, err))
        worker.finished.connect(lambda: self._in_order(self._finished))
        self.worker = worker
        worker.start()
        return self

    def cancel(self) -> None:
        """Ask the job to stop; it closes (and cleans up) before its next step."""
        if self.worker is not None and self.status == "running":
            self.status = "cancelling"
            if self._pbar is not None:
                self._pbar.set_description(f"{self.description}: cancelling…")
            self.worker.quit()

    # --- callbacks, all on the GUI thread -------------------------------------------------------
    def _in_order(self, handler: Callable[..., None], *args: Any) -> None:
        """Run ``handler`` now, or right after the event being handled.

        Updating napari's progress bar processes Qt events, so the worker's ``returned``/``finished``
        could otherwise run *inside* an earlier progress event and be overwritten by it.
        """
        if self._in_event:
            self._pending.append((handler, args))
        else:
            handler(*args)

    def _event(self, event: Any) -> None:
        self.last_event = event
        self._in_event = True
        try:
            if self._on_event is not None:
                self._on_event(event)
            pbar = self._pbar
            if pbar is not None and isinstance(event, Progress):
                if event.total and pbar.total != event.total:
                    pbar.total = event.total
                if event.done != pbar.n:
                    pbar.n = 0
                    pbar.update(event.done)
                if event.message:
                    pbar.set_description(f"{self.description}: {event.message}")
        finally:
            self._in_event = False
            while self._pending:
                handler, args = self._pending.pop(0)
                handler(*args)

    def _returned(self, value: Any) -> None:
        if self.status == "cancelling":
            return
        self.status = "done"
        if self._on_result is not None:
            try:
                self._on_result(value)
            except Exception as err:  # a result that cannot be shown is still an error for the user
                self._errored(err)

    def _errored(self, err: BaseException) -> None:
        self.status = "failed"
        self.error = err
        log.error("%s failed", self.description, exc_info=(type(err), err, err.__traceback__))
        notify_error(self.description, err)

    def _finished(self) -> None:
        if self.status in ("running", "cancelling"):  # ended without a result or an error
            self.status = "cancelled"
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        try:
            if self._on_finished is not None:
                self._on_finished(self.status)
        finally:
            self._ended = True

    def _run_sync(self) -> None:
        try:
            while True:
                try:
                    event = next(self._job)
                except StopIteration as stop:
                    self._returned(stop.value)
                    break
                self._event(event)
        except Exception as err:
            self._errored(err)
        finally:
            self._job.close()
            self._finished()


def start_job(job: Generator[Any, None, Any], description: str, **callbacks: Any) -> Job:
    """Start ``job`` in a worker thread (see :class:`Job` for the callbacks) and return its handle."""
    return Job(job, description=description, **callbacks).start()
