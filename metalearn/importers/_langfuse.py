"""Langfuse: UI trace downloads, public-API observation lists, blob-storage exports.

- **UI download**: ``{"trace": {..., "scores": [...]}, "observations": [...]}``, camelCase
  (``id, traceId, type, parentObservationId, startTime, endTime, name, level,
  statusMessage, metadata``).
- **Public API**: ``GET /api/public/traces/{id}`` (a trace with ``observations`` and
  ``scores``), and lists ``{"data": [...]}`` of observations or of such traces.
- **Blob export** (Parquet, JSON, JSON Lines or CSV; ``.gz`` allowed for text): snake_case
  rows (``trace_id, parent_observation_id, start_time, ...``; timestamps like
  ``2024-05-29 13:46:19.963000`` in UTC; an empty parent for top-level rows). The scores
  file goes in ``scores=``.

``level`` ``ERROR`` is an error status. EVENT observations are points in time (end = start).
A SPAN observation counts as a tool when it carries ``gen_ai.tool.name``/``tool.name`` or,
as LangChain runs recorded by Langfuse's callback handler before it had a TOOL type, when
its metadata holds the ``inputs`` and ``color`` that LangChain passes only to tool starts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    bounded,
    documents,
    flatten,
    is_path,
    json_object,
    mapping,
    present,
    read_table,
    records,
    sequence,
    shown,
    span_id,
    text,
    to_ns,
)

__all__ = ["read_langfuse"]

_TABLES = frozenset({".parquet", ".csv"})
_LANGCHAIN_TOOL_KEYS = frozenset({"inputs", "color"})
_RESERVED_METADATA = frozenset({"attributes", "resourceAttributes", "scope"})

_TRACE_FIELDS = {
    "name": "langfuse.trace.name",
    "userId": "langfuse.user.id",
    "sessionId": "langfuse.session.id",
    "tags": "langfuse.trace.tags",
}
_ENRICHED_FIELDS = {"trace_name": "name", "user_id": "userId", "session_id": "sessionId"}

Row = Mapping[str, Any]
Located = tuple[str, Any]  # (where, row): a row and the place it was read from


def _field(row: Row, camel: str, snake: str) -> Any:
    value = row.get(camel)
    return value if present(value) else row.get(snake)


def _metadata(row: Row, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Span attributes (OTel attributes plus other metadata keys) and resource attributes."""
    metadata = json_object(row.get("metadata"), where, "metadata")
    attributes = json_object(metadata.get("attributes"), where, "metadata.attributes")
    attributes.update({k: v for k, v in metadata.items() if k not in _RESERVED_METADATA})
    resource = json_object(metadata.get("resourceAttributes"), where, "metadata.resourceAttributes")
    return attributes, resource


def _kind(row: Row, attributes: Mapping[str, Any]) -> str:
    kind = (text(row.get("type")) or "").upper()
    if kind == "SPAN" and attributes.keys() >= _LANGCHAIN_TOOL_KEYS:
        return "TOOL"
    return kind


def _observation(row: Row, where: str) -> Span:
    trace_id = text(_field(row, "traceId", "trace_id"))
    ident = span_id(row.get("id"), where, "id")
    if trace_id is None or ident is None:
        field = "traceId" if trace_id is None else "id"
        raise TraceFormatError(
            f"{where}: observation has no {field!r}; every observation needs an id and a trace id",
            source=where,
            field=field,
        )
    attributes, resource = _metadata(row, where)
    kind = _kind(row, attributes)
    start = to_ns(_field(row, "startTime", "start_time"), where, "startTime")
    end = to_ns(_field(row, "endTime", "end_time"), where, "endTime")
    level = (text(row.get("level")) or "").upper()
    parent = _field(row, "parentObservationId", "parent_observation_id")
    return Span(
        trace_id=trace_id,
        span_id=ident,
        parent_id=span_id(parent, where, "parentObservationId"),
        name=text(row.get("name")) or "",
        kind=kind,
        start_ns=start,
        end_ns=start if kind == "EVENT" and end is None else end,
        status="ERROR" if level == "ERROR" else "UNSET",
        status_message=text(_field(row, "statusMessage", "status_message")),
        attributes=attributes,
        resource=resource,
    )


def _number(value: Any, where: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise TraceFormatError(
            f"{where}: score field 'value' = {shown(value)} is not a number; a NUMERIC or "
            "BOOLEAN score has a numeric value (labels go in 'stringValue')",
            source=where,
            field="value",
        ) from None


def _score_value(score: Row, where: str) -> Any:
    kind = (text(_field(score, "dataType", "data_type")) or "NUMERIC").upper()
    label = _field(score, "stringValue", "string_value")
    if kind in ("CATEGORICAL", "TEXT"):
        return text(label)
    value: Any = score.get("value")
    if not present(value):
        return None
    number = _number(value, where)
    return number != 0 if kind == "BOOLEAN" else number


def _score_entries(scores: Sequence[Located]) -> Iterator[tuple[str, tuple[str, Any, bool, Any]]]:
    """``(trace_id, (name, value, trace_level, timestamp))`` per score row."""
    for where, row in scores:
        score = mapping(row, where, None)
        trace_id = text(_field(score, "traceId", "trace_id"))
        name = text(score.get("name"))
        if trace_id is not None and name is not None:
            trace_level = not present(_field(score, "observationId", "observation_id"))
            stamp = text(score.get("timestamp")) or ""
            yield trace_id, (name, _score_value(score, where), trace_level, stamp)


def _trace_info(trace: Row, scores: Mapping[str, Any], where: str) -> TraceInfo:
    metadata = json_object(trace.get("metadata"), where, "metadata")
    attributes = flatten(json_object(metadata.get("attributes"), where, "metadata.attributes"))
    attributes.update(flatten({k: v for k, v in metadata.items() if k not in _RESERVED_METADATA}))
    for key, name in _TRACE_FIELDS.items():
        if present(trace.get(key)):
            attributes[name] = trace[key]
    return TraceInfo(text(trace.get("name")), attributes, scores)


@dataclass
class _Collected:
    spans: list[Span] = field(default_factory=list)
    traces: dict[str, dict[str, Any]] = field(default_factory=dict)
    scores: list[Located] = field(default_factory=list)

    def add_trace(self, trace: Row, observations: Any, where: str) -> None:
        trace_id = text(trace.get("id"))
        if trace_id is None:
            raise TraceFormatError(f"{where}: the trace has no 'id'", source=where, field="id")
        self.traces.setdefault(trace_id, {}).update(trace)
        # The API's trace lists hold only the ids of observations and scores: skip those.
        scores = sequence(trace.get("scores"), where, "scores")
        self.scores.extend(
            (f"{where}, score {n}", {**score, "traceId": trace_id})
            for n, score in enumerate(scores)
            if isinstance(score, Mapping)
        )
        listed = sequence(observations, where, "observations")
        self.add([o for o in listed if isinstance(o, Mapping)], f"{where}, observations")

    def add_row(self, row: Row, where: str) -> None:
        span = _observation(row, where)
        self.spans.append(span)
        enriched = {new: row[old] for old, new in _ENRICHED_FIELDS.items() if present(row.get(old))}
        if present(row.get("tags")):
            enriched["tags"] = row["tags"]
        if enriched and span.trace_id not in self.traces:
            self.traces[span.trace_id] = enriched

    def add(self, document: Any, where: str) -> None:
        if isinstance(document, Sequence) and not isinstance(document, str):
            for position, item in enumerate(document):
                self.add(item, f"{where}, item {position}")
        elif isinstance(document, Mapping) and "observations" in document:
            trace = mapping(document.get("trace", document), where, "trace")
            self.add_trace(trace, document["observations"], where)
        elif isinstance(document, Mapping) and isinstance(document.get("data"), list):
            self.add(document["data"], where)
        elif isinstance(document, Mapping) and present(_field(document, "traceId", "trace_id")):
            self.add_row(document, where)
        else:
            raise TraceFormatError(
                f"{where}: not a Langfuse export; expected a trace download "
                "({'trace', 'observations'}), an API response or observation rows",
                source=where,
            )

    def infos(self) -> dict[str, TraceInfo]:
        entries: dict[str, list[tuple[str, Any, bool, Any]]] = {}
        for trace_id, entry in _score_entries(self.scores):
            entries.setdefault(trace_id, []).append(entry)
        trace_ids = dict.fromkeys([*self.traces, *entries])
        return {
            trace_id: _trace_info(
                self.traces.get(trace_id, {}),
                pick_scores(entries.get(trace_id, [])),
                f"trace {trace_id!r}",
            )
            for trace_id in trace_ids
        }


def _unwrapped(document: Any, where: str) -> list[Located]:
    """Score rows from a row, a list of rows, or an API page ``{"data": [...]}``."""
    if isinstance(document, Mapping):
        data = document.get("data")
        if isinstance(data, list):
            return [(f"{where}, item {n}", row) for n, row in enumerate(data)]
        return [(where, document)]
    if isinstance(document, list | tuple):
        items = enumerate(document)
        return [found for n, item in items for found in _unwrapped(item, f"{where}, item {n}")]
    return []


def _is_table(item: Any) -> bool:
    return is_path(item) and bool(_TABLES.intersection(s.lower() for s in Path(item).suffixes))


def _score_rows(source: Any, where: str = "scores") -> list[Located]:
    if isinstance(source, pd.DataFrame):
        return records(source, where)
    if _is_table(source):
        return records(read_table(Path(source)), Path(source).name)
    if is_path(source):
        return [row for at, document in documents(source) for row in _unwrapped(document, at)]
    if isinstance(source, list | tuple):
        items = enumerate(source)
        return [row for n, item in items for row in _score_rows(item, f"{where} item {n}")]
    return _unwrapped(bounded(source, where), where)


def _collect(collected: _Collected, source: Any) -> None:
    items = list(source) if isinstance(source, list | tuple) else [source]
    for position, item in enumerate(items):
        if isinstance(item, pd.DataFrame) or _is_table(item):
            frame = item if isinstance(item, pd.DataFrame) else read_table(Path(item))
            name = f"data frame {position}" if item is frame else Path(item).name
            for where, row in records(frame, name):
                collected.add(row, where)
        elif is_path(item):
            for where, document in documents(item):
                collected.add(document, where)
        else:
            where = "input" if item is source else f"input item {position}"
            collected.add(bounded(item, where), where)


def read_langfuse(
    source: PathLike | pd.DataFrame | Mapping[str, Any] | Sequence[Any],
    *,
    scores: PathLike | pd.DataFrame | Sequence[Mapping[str, Any]] | None = None,
    per_agent: bool = False,
    flatten: bool = False,
    goal_type: GoalTypeSource = None,
    outcome: OutcomeCallable | None = None,
    score: ScoreRule | None = None,
) -> ImportResult:
    """Read Langfuse traces (UI downloads, API responses, blob exports) into plans and steps.

    ``source`` is a path (a trace download or API response ``.json``; a blob export
    ``.parquet``, ``.jsonl``, ``.json`` or ``.csv``), a parsed object, a DataFrame of
    exported observations, or a list of these. ``scores`` adds score rows (the blob
    export's ``scores`` file, or the API's score list); downloads carry their own.
    ``score=ScoreRule(name, ...)`` lets a named score decide the outcome; trace-level
    fields are available to ``goal_type`` and the callables as trace attributes
    (``langfuse.trace.name``, ``langfuse.user.id``, ``langfuse.session.id``,
    ``langfuse.trace.tags`` and the trace metadata with dotted keys). The other options
    are explained in :mod:`metalearn.importers`.

    >>> download = {
    ...     "trace": {"id": "t-1", "name": "weather", "scores": [
    ...         {"name": "helpful", "value": 0.2, "dataType": "NUMERIC"}]},
    ...     "observations": [
    ...         {"id": "a", "traceId": "t-1", "type": "AGENT", "name": "assistant",
    ...          "parentObservationId": None, "level": "DEFAULT",
    ...          "startTime": "2025-10-14T16:44:29.952Z", "endTime": "2025-10-14T16:44:42.399Z"},
    ...         {"id": "b", "traceId": "t-1", "type": "TOOL", "name": "get_weather",
    ...          "parentObservationId": "a", "level": "ERROR", "statusMessage": "timeout",
    ...          "startTime": "2025-10-14T16:44:35.938Z", "endTime": "2025-10-14T16:44:36.000Z"}]}
    >>> result = read_langfuse(download, score=ScoreRule("helpful", at_least=0.5),
    ...                        goal_type="langfuse.trace.name")
    >>> plan = result.plans.iloc[0]
    >>> plan.agent_id, plan.goal_type, plan.status, float(plan.reward)
    ('assistant', 'weather', 'failed', 0.2)
    >>> result.plans.loc[0, "error"], result.report.loc[0, "outcome_rule"]
    ("score 'helpful' = 0.2", 'score')
    >>> result.steps[["tool", "status", "duration_ms", "error"]].to_dict("records")
    [{'tool': 'get_weather', 'status': 'error', 'duration_ms': 62.0, 'error': 'timeout'}]
    """
    collected = _Collected()
    _collect(collected, source)
    if scores is not None:
        collected.scores.extend(_score_rows(scores))
    options = Options(per_agent, flatten, goal_type, outcome, score)
    return assemble(collected.spans, collected.infos(), options)
