"""The exceptions metalearn raises.

Hierarchy::

    MetalearnError
    ├── InvalidRecordError (also a ValueError)     a plan, step or import row is malformed
    ├── InvalidArgumentError (also a ValueError)   an analysis option is out of range
    ├── DuplicatePlanError                         a plan_id is already in the store
    ├── QueueFullError                             background analysis queue is at its bound
    ├── QueueClosedError (also a RuntimeError)     work submitted after close()
    ├── AnalysisInterrupted                        a running analysis was stopped on purpose
    └── MissingDependencyError (also ImportError)  an optional extra is not installed

Every message names the record (plan id, step index or import row) and the field, and
says what would have been accepted.
"""

from __future__ import annotations

__all__ = [
    "AnalysisInterrupted",
    "DuplicatePlanError",
    "InvalidArgumentError",
    "InvalidRecordError",
    "MetalearnError",
    "MissingDependencyError",
    "QueueClosedError",
    "QueueFullError",
]


class MetalearnError(Exception):
    """Base class of every error metalearn raises on purpose."""


class InvalidRecordError(MetalearnError, ValueError):
    """A plan, a step or a row of an import is malformed.

    The attributes say where: ``plan_id`` and ``step_index`` (``None`` when unknown),
    ``field`` (the offending field or column), ``row`` (0-based position in an imported
    table, ``None`` for records built in code) and ``table`` (``"plans"`` or ``"steps"``).
    """

    def __init__(
        self,
        message: str,
        *,
        plan_id: str | None = None,
        step_index: int | None = None,
        field: str | None = None,
        row: int | None = None,
        table: str | None = None,
    ) -> None:
        super().__init__(message)
        self.plan_id = plan_id
        self.step_index = step_index
        self.field = field
        self.row = row
        self.table = table


class InvalidArgumentError(MetalearnError, ValueError):
    """An option passed to an analysis is outside what it accepts; the message says what is."""


class DuplicatePlanError(MetalearnError):
    """A plan with this ``plan_id`` is already recorded; history is append-only."""

    def __init__(self, plan_id: str) -> None:
        super().__init__(
            f"plan {plan_id!r} is already recorded; finalized plans are immutable, "
            "so give a new attempt a new plan_id"
        )
        self.plan_id = plan_id


class QueueFullError(MetalearnError):
    """The analysis queue holds ``max_pending`` agents and its overflow policy is "reject".

    The plan itself is recorded; its analysis will run with the agent's next plan or at
    the next start (recovery). Raise ``max_pending`` or use ``overflow="drop_lowest"``.
    """


class QueueClosedError(MetalearnError, RuntimeError):
    """Work was submitted to a queue that is closing or closed."""


class AnalysisInterrupted(MetalearnError):
    """A running analysis was interrupted (the queue was closed without draining)."""


class MissingDependencyError(MetalearnError, ImportError):
    """An optional dependency is needed; the message names the ``pip install`` that fixes it."""
