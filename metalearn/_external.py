"""Histories that live outside a metalearn store (a lakehouse on Spark).

A :class:`MetaLearningService` normally mirrors a :class:`~metalearn.HistoryStore` into
DuckDB. An external history takes the mirror's place: it has nothing to refresh, hands
out snapshots whose queries its own engine runs, and has no store to write analysis
snapshots to. This module knows no engine, so the service never imports Spark.
"""

from __future__ import annotations

import abc
from contextlib import AbstractContextManager
from typing import Any

from metalearn._errors import MetalearnError
from metalearn._interrupt import Interrupt

__all__ = ["ExternalHistory", "UnsupportedError"]


class UnsupportedError(MetalearnError, NotImplementedError):
    """The operation needs something this history does not have (say, a store to write to)."""


class ExternalHistory(abc.ABC):
    """What a service needs of a history it does not mirror (see :mod:`metalearn.spark`)."""

    engine_name = "external"

    def refresh(self, interrupt: Interrupt | None = None) -> int:
        """Nothing to mirror: the engine reads the history where it is. Returns 0."""
        return 0

    @abc.abstractmethod
    def snapshot(self) -> AbstractContextManager[Any]:
        """A job's own view of the history (a query engine, see ``_pattern_sql``)."""

    @abc.abstractmethod
    def cancel(self) -> None:
        """Cancel the running work of every snapshot (from any thread)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the history holds (cached tables, views)."""

    def unsupported(self, what: str) -> UnsupportedError:
        """The error for an operation this history cannot do, saying why."""
        return UnsupportedError(
            f"{what} needs a metalearn store (HistoryStore): a {self.engine_name} history has "
            "none to write snapshots to or read them from; run background analysis on a "
            "store, or call the analyses (analyze_execution_patterns, "
            "extract_successful_patterns, hint_table, next_step_hints, detect_changes) "
            "directly"
        )
