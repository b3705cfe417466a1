"""MLflow traces as ``mlflow.search_traces()`` returns them: one DataFrame row per trace.

MLflow 3 columns: ``trace_id``, ``state`` (``OK``/``ERROR``/``IN_PROGRESS``),
``request_time``, ``execution_duration``, ``trace_metadata``, ``tags``, ``spans`` (a list
of span dicts) and ``assessments``; MLflow 2 names them ``request_id``, ``status``,
``request_metadata``. A saved frame may hold ``spans`` as JSON text, or only the ``trace``
column (the trace as JSON). Span dicts come in MLflow's three layouts (``context`` with
``0x`` ids; flat ``span_id``/``parent_span_id`` with base64 or hex ids and
``start_time_unix_nano``); span attribute values are JSON-encoded, so
``mlflow.spanType`` reads ``"\\"TOOL\\""`` and is decoded. Feedback assessments
(``assessment_name`` or ``name``, ``feedback.value``) become scores for :class:`ScoreRule`;
expectations and assessments marked ``valid: false`` are ignored.
"""

from __future__ import annotations

import json
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
    json_object,
    loads,
    mapping,
    present,
    rows,
    sequence,
    span_id,
    status_of,
    text,
    to_ns,
)

__all__ = ["read_mlflow"]

Row = Mapping[str, Any]


def _decoded(value: Any, where: str, field: str) -> Any:
    """MLflow stores every span attribute JSON-encoded; decode what decodes."""
    if not isinstance(value, str):
        return value
    try:
        return loads(value, where, field)
    except json.JSONDecodeError:
        return value


def _as_list(value: Any, where: str, field: str) -> list[Any]:
    if isinstance(value, str):
        try:
            value = loads(value, where, field)
        except json.JSONDecodeError:
            raise TraceFormatError(
                f"{where}: field {field!r} is text but not JSON", source=where, field=field
            ) from None
    return sequence(value, where, field)


def _decoded_attributes(attributes: Any, where: str, field: str) -> dict[str, Any]:
    decoded = mapping(attributes, where, field)
    return {k: _decoded(v, where, f"{field}.{k}") for k, v in decoded.items()}


def _event_attributes(where: str) -> Callable[[Any], dict[str, Any]]:
    return lambda attributes: _decoded_attributes(attributes, where, "events.attributes")


def _status(raw: Row) -> tuple[str, str | None]:
    status = raw.get("status")
    if isinstance(status, Mapping):
        return status_of(status.get("code")), text(status.get("message"))
    return status_of(raw.get("status_code", status)), text(raw.get("status_message"))


def _span(raw: Row, trace_id: str, where: str) -> Span:
    context = mapping(raw.get("context"), where, "context")
    own = context.get("span_id")
    ident = span_id(own if present(own) else raw.get("span_id"), where, "span_id")
    if ident is None:
        raise TraceFormatError(f"{where}: span has no 'span_id'", source=where, field="span_id")
    attributes = _decoded_attributes(raw.get("attributes"), where, "attributes")
    status, message = _status(raw)
    start = raw.get("start_time_unix_nano", raw.get("start_time"))
    end = raw.get("end_time_unix_nano", raw.get("end_time"))
    parent = raw.get("parent_span_id", raw.get("parent_id"))
    return Span(
        trace_id=trace_id,
        span_id=ident,
        parent_id=span_id(parent, where, "parent_span_id"),
        name=text(raw.get("name")) or "",
        kind=(text(attributes.get("mlflow.spanType")) or "").upper(),
        start_ns=to_ns(start, where, "start_time_unix_nano"),
        end_ns=to_ns(end, where, "end_time_unix_nano"),
        status=status,
        status_message=message,
        attributes=attributes,
        exception=exception_message(raw.get("events"), _event_attributes(where)),
    )


def _row_spans(row: Row, where: str) -> list[Any]:
    if isinstance(row.get("spans"), str | list | tuple | np.ndarray):
        return _as_list(row["spans"], where, "spans")
    trace = json_object(row.get("trace"), where, "trace")
    data = mapping(trace.get("data"), where, "trace.data")
    return _as_list(data.get("spans"), where, "trace.data.spans")


def _assessment_entries(row: Row, where: str) -> Iterator[tuple[str, Any, bool, Any]]:
    for position, item in enumerate(_as_list(row.get("assessments"), where, "assessments")):
        if not isinstance(item, Mapping) or item.get("valid") is False:
            continue
        feedback = item.get("feedback")
        if isinstance(feedback, Mapping) and "value" in feedback:
            name = text(item.get("assessment_name")) or text(item.get("name"))
            stamps = (item.get("last_update_time"), item.get("last_update_time_ms"))
            order = (next((t for t in stamps if present(t)), 0), position)
            yield str(name), feedback["value"], not present(item.get("span_id")), str(order)


def _info(row: Row, where: str) -> TraceInfo:
    tags = json_object(row.get("tags"), where, "tags")
    metadata = json_object(
        row.get("trace_metadata", row.get("request_metadata")), where, "trace_metadata"
    )
    state = (text(row.get("state", row.get("status"))) or "").upper()
    return TraceInfo(
        name=text(tags.get("mlflow.traceName")),
        attributes={**metadata, **tags},
        scores=pick_scores(_assessment_entries(row, where)),
        in_progress=state in ("IN_PROGRESS", "TRACE_STATE_IN_PROGRESS"),
    )


_ACCEPTS = (
    "read_mlflow() takes the DataFrame mlflow.search_traces() returns, or the path of "
    "one saved as Parquet or JSON"
)


def read_mlflow(
    frame: pd.DataFrame | PathLike | Sequence[pd.DataFrame | PathLike],
    *,
    per_agent: bool = False,
    flatten: bool = False,
    goal_type: GoalTypeSource = None,
    outcome: OutcomeCallable | None = None,
    score: ScoreRule | None = None,
) -> ImportResult:
    """Read the DataFrame of ``mlflow.search_traces()`` into plans and steps.

    ``frame`` is that DataFrame (MLflow 2 or 3 columns), the path of one saved as
    Parquet, JSON or JSON Lines, or a list of them. Traces in state ``IN_PROGRESS`` are
    reported as still running. Tags and trace metadata (``mlflow.traceName``...) are
    trace attributes for ``goal_type`` and the callables; ``score=ScoreRule(name, ...)``
    lets a feedback assessment decide the outcome. The other options are explained in
    :mod:`metalearn.importers`.

    >>> def span(sid, parent, name, kind, start_s, end_s):
    ...     return {"span_id": sid, "parent_span_id": parent, "name": name,
    ...             "start_time_unix_nano": int(start_s * 1e9),
    ...             "end_time_unix_nano": int(end_s * 1e9),
    ...             "status": {"code": "STATUS_CODE_OK", "message": ""},
    ...             "attributes": {"mlflow.spanType": f'"{kind}"'}}
    >>> traces = pd.DataFrame({
    ...     "trace_id": ["tr-1"], "state": ["OK"],
    ...     "tags": [{"mlflow.traceName": "refund"}],
    ...     "spans": [[span("a", None, "refund_agent", "AGENT", 1.7e9, 1.7e9 + 9),
    ...                span("b", "a", "lookup_order", "TOOL", 1.7e9 + 1, 1.7e9 + 2)]],
    ...     "assessments": [[{"assessment_name": "resolved", "feedback": {"value": True}}]]})
    >>> result = read_mlflow(traces, goal_type="mlflow.traceName", score=ScoreRule("resolved"))
    >>> result.plans.loc[0, ["plan_id", "agent_id", "goal_type", "status"]].tolist()
    ['tr-1', 'refund_agent', 'refund', 'succeeded']
    >>> result.steps["tool"].tolist(), result.report.loc[0, "outcome_rule"]
    (['lookup_order'], 'score')
    """
    spans: list[Span] = []
    infos: dict[str, TraceInfo] = {}
    for where, row in rows(frame, _ACCEPTS):
        trace_id = text(row.get("trace_id", row.get("request_id")))
        if trace_id is None:
            raise TraceFormatError(f"{where}: no 'trace_id'", source=where, field="trace_id")
        infos[trace_id] = _info(row, where)
        raws = _row_spans(row, where)
        for n, raw in enumerate(raws):
            at = f"{where}, span {n}"
            spans.append(_span(mapping(raw, at, None), trace_id, at))
    options = Options(per_agent, flatten, goal_type, outcome, score)
    return assemble(spans, infos, options)
