"""OpenInference spans as Phoenix exports them: DataFrames, Parquet, JSON Lines.

Phoenix's ``get_spans_dataframe()`` has one row per span: ``context.trace_id``,
``context.span_id`` (often the index), ``parent_id``, ``span_kind`` (``AGENT``, ``TOOL``,
``CHAIN``, ``LLM``...), ``name``, ``start_time``, ``end_time``, ``status_code``
(``OK``/``ERROR``/``UNSET``), ``status_message``, ``events`` and the attributes as
``attributes.*`` columns (``attributes.tool.name``, ``attributes.agent.name``...). The REST
API's JSON spans nest them instead (``context: {trace_id, span_id}``, ``attributes: {...}``);
both are read. Annotations (``get_span_annotations_dataframe()`` or evaluation frames with
``span_id``, a name and ``label``/``score``) become scores for :class:`ScoreRule`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from metalearn.importers._core import (
    GoalTypeSource,
    ImportResult,
    Options,
    OutcomeCallable,
    ScoreRule,
    Span,
    TraceInfo,
    assemble,
    pick_scores,
)
from metalearn.importers._errors import TraceFormatError
from metalearn.importers._parse import (
    PathLike,
    exception_message,
    flatten,
    mapping,
    present,
    rows,
    span_id,
    status_of,
    text,
    to_ns,
)

__all__ = ["read_openinference"]

_SPAN_ID_COLUMNS = ("context.span_id", "span_id", "id")
_TRACE_ID_COLUMNS = ("context.trace_id", "trace_id")

Row = Mapping[str, Any]


def _first(row: Row, names: Sequence[str]) -> Any:
    return next((row[name] for name in names if present(row.get(name))), None)


def _attributes(row: Row) -> dict[str, Any]:
    nested = row.get("attributes")
    attributes = flatten(nested) if isinstance(nested, Mapping) else {}
    for column, value in row.items():
        if isinstance(column, str) and column.startswith("attributes.") and _filled(value):
            attributes[column.removeprefix("attributes.")] = value
    return attributes


def _filled(value: Any) -> bool:
    return isinstance(value, list | dict | np.ndarray) or present(value)


def _event_attributes(where: str) -> Callable[[Any], dict[str, Any]]:
    return lambda attributes: flatten(mapping(attributes, where, "events.attributes"))


def _row_span(row: Row, where: str) -> Span:
    row = flatten({k: v for k, v in row.items() if k == "context"}) | dict(row)
    trace_id, ident = (
        span_id(_first(row, _TRACE_ID_COLUMNS), where, "context.trace_id", 32),
        span_id(_first(row, _SPAN_ID_COLUMNS), where, "context.span_id"),
    )
    if trace_id is None or ident is None:
        field = "context.trace_id" if trace_id is None else "context.span_id"
        raise TraceFormatError(
            f"{where}: span has no {field!r}; every span needs a trace id and a span id",
            source=where,
            field=field,
        )
    attributes = _attributes(row)
    kind = text(row.get("span_kind")) or text(attributes.get("openinference.span.kind")) or ""
    return Span(
        trace_id=trace_id,
        span_id=ident,
        parent_id=span_id(_first(row, ("parent_id", "parent_span_id")), where, "parent_id"),
        name=text(row.get("name")) or "",
        kind=kind.upper(),
        start_ns=to_ns(row.get("start_time"), where, "start_time"),
        end_ns=to_ns(row.get("end_time"), where, "end_time"),
        status=status_of(row.get("status_code")),
        status_message=text(row.get("status_message")),
        attributes=attributes,
        exception=exception_message(row.get("events"), _event_attributes(where)),
    )


_ACCEPTS = (
    "read_openinference() takes a spans DataFrame or the path of a Parquet or JSON Lines export"
)


def _annotation_rows(annotations: Any) -> Iterator[tuple[str | None, str, Row]]:
    """``(name, where, row)`` per annotation; a mapping gives ``{name: frame}``."""
    if isinstance(annotations, Mapping):
        for name, frame in annotations.items():
            found = rows(frame, _ACCEPTS, f"annotations {str(name)!r}")
            yield from ((str(name), where, row) for where, row in found)
    else:
        found = rows(annotations, _ACCEPTS, "annotations")
        yield from ((None, where, row) for where, row in found)


def _annotation_value(row: Row) -> Any:
    label = _first(row, ("result.label", "label"))
    return label if label is not None else _first(row, ("result.score", "score"))


def _scores(annotations: Any, spans: list[Span]) -> dict[str, dict[str, Any]]:
    where = {span.span_id: span for span in spans}
    entries: dict[str, list[tuple[str, Any, bool, Any]]] = {}
    for position, (name, at, row) in enumerate(_annotation_rows(annotations)):
        span = where.get(span_id(_first(row, _SPAN_ID_COLUMNS), at, "span_id") or "")
        label = name or text(_first(row, ("annotation_name", "name", "eval_name")))
        if span is not None and label is not None:
            entry = (label, _annotation_value(row), span.parent_id is None, position)
            entries.setdefault(span.trace_id, []).append(entry)
    return {trace_id: pick_scores(found) for trace_id, found in entries.items()}


def read_openinference(
    source: PathLike | pd.DataFrame | Sequence[PathLike | pd.DataFrame],
    *,
    annotations: pd.DataFrame | PathLike | Mapping[str, pd.DataFrame] | None = None,
    per_agent: bool = False,
    flatten: bool = False,
    goal_type: GoalTypeSource = None,
    outcome: OutcomeCallable | None = None,
    score: ScoreRule | None = None,
) -> ImportResult:
    """Read OpenInference spans (Phoenix exports) into plans and steps.

    ``source`` is a spans DataFrame (``px.Client().get_spans_dataframe()``), the path of a
    Parquet, JSON or JSON Lines export, or a list of them. ``annotations`` are span
    annotations or evaluations: a DataFrame with a span id (``span_id`` or
    ``context.span_id``, as a column or the index), a name (``annotation_name`` or
    ``name``) and ``result.label``/``label`` or ``result.score``/``score``; or a mapping
    ``{name: frame}`` for evaluation frames without a name column. An annotation on the
    trace's root span beats one on another span. ``score=ScoreRule(name, ...)`` lets one
    decide the outcome; the other options are explained in :mod:`metalearn.importers`.

    >>> t0 = pd.Timestamp("2026-01-05T10:00:00Z")
    >>> spans = pd.DataFrame({
    ...     "context.trace_id": ["t1", "t1"], "context.span_id": ["a1", "b2"],
    ...     "parent_id": [None, "a1"], "span_kind": ["AGENT", "TOOL"],
    ...     "name": ["support_agent", "lookup_order"],
    ...     "start_time": [t0, t0 + pd.Timedelta("1s")],
    ...     "end_time": [t0 + pd.Timedelta("4s"), t0 + pd.Timedelta("1.5s")],
    ...     "status_code": ["OK", "OK"], "attributes.tool.name": [None, "lookup_order"]})
    >>> evals = pd.DataFrame({"span_id": ["a1"], "label": ["incorrect"], "score": [0]})
    >>> result = read_openinference(
    ...     spans, annotations={"correctness": evals},
    ...     score=ScoreRule("correctness", labels={"correct": True, "incorrect": False}))
    >>> result.plans.loc[0, ["agent_id", "status"]].tolist(), result.report.loc[0, "outcome_rule"]
    (['support_agent', 'failed'], 'score')
    >>> result.steps[["tool", "duration_ms"]].to_dict("records")
    [{'tool': 'lookup_order', 'duration_ms': 500.0}]
    """
    spans = [_row_span(row, where) for where, row in rows(source, _ACCEPTS)]
    scores = _scores(annotations, spans) if annotations is not None else {}
    infos = {trace_id: TraceInfo(scores=found) for trace_id, found in scores.items()}
    options = Options(per_agent, flatten, goal_type, outcome, score)
    return assemble(spans, infos, options)
