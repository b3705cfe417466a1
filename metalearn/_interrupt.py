"""Interrupt: the token another thread uses to stop a running analysis job.

It knows no database. A job attaches whatever is running its query (the warehouse's
``Snapshot``); a request flags the job and calls that object's ``interrupt()``. How a
stopped query is reported (as :class:`AnalysisInterrupted`) is the attached object's
business, so the queue that hands out these tokens never imports DuckDB.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

from metalearn._errors import AnalysisInterrupted

__all__ = ["Interrupt", "Interruptible"]


class Interruptible(Protocol):
    """Something whose running work another thread can stop."""

    def interrupt(self) -> None:
        """Stop the work running now (called from another thread)."""


_T = TypeVar("_T", bound=Interruptible)


class Interrupt:
    """Lets another thread stop a job: flags it and interrupts what the job attached.

    The job checks :meth:`check` between steps and attaches its running query while
    querying.

    >>> interrupt = Interrupt()
    >>> interrupt.request()
    >>> interrupt.check()
    Traceback (most recent call last):
    ...
    metalearn._errors.AnalysisInterrupted: the analysis was interrupted (queue closed without drain)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attached: Interruptible | None = None
        self.requested = False

    def request(self) -> None:
        """Stop the job as soon as possible (safe from any thread)."""
        with self._lock:
            self.requested = True
            if self._attached is not None:
                self._attached.interrupt()

    def check(self) -> None:
        """Raise :class:`AnalysisInterrupted` if an interrupt was requested."""
        if self.requested:
            raise AnalysisInterrupted("the analysis was interrupted (queue closed without drain)")

    @contextmanager
    def attached(self, target: _T) -> Iterator[_T]:
        """While inside, :meth:`request` also calls ``target.interrupt()``."""
        with self._lock:
            self._attached = target
        try:
            self.check()
            yield target
        finally:
            with self._lock:
                self._attached = None
