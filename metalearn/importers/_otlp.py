"""OpenTelemetry traces: OTLP JSON (Collector file exporter), SDK span JSON, binary OTLP.

Three shapes are read into :class:`~metalearn.importers.Span` records:

- **OTLP JSON** (``TracesData`` / ``ExportTraceServiceRequest``): ``resourceSpans[]
  .scopeSpans[].spans[]`` with hex ``traceId``/``spanId``/``parentSpanId``, decimal-string
  ``startTimeUnixNano``/``endTimeUnixNano``, ``status.code`` as ``0/1/2`` or enum names, and
  attributes as ``{key, value: {stringValue|intValue|...}}``. Parsed with :mod:`json`:
  protobuf's ``json_format.Parse`` would silently base64-decode the hex ids.
- **SDK span JSON** (``ReadableSpan.to_json()``, and the any-agent ``{"spans": [...]}``
  trace files): ``context.trace_id``/``span_id`` as ``0x`` hex or integers, ``parent_id``
  or ``parent.span_id``, times as ISO text or integer nanoseconds.
- **Binary OTLP** (``.pb``/``.binpb``; one message, or the Collector's length-delimited
  stream): only with the optional ``opentelemetry-proto`` package installed.
"""

from __future__ import annotations

import base64
import importlib
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from metalearn.importers._core import (
    GoalTypeSource,
    ImportResult,
    Options,
    OutcomeCallable,
    Span,
    assemble,
)
from metalearn.importers._errors import MissingDependencyError, TraceFormatError
from metalearn.importers._parse import (
    PathLike,
    bounded,
    documents,
    exception_message,
    is_path,
    mapping,
    sequence,
    shown,
    span_id,
    status_of,
    text,
    to_ns,
)

__all__ = ["read_otlp"]

_VALUE_KEYS = {
    "stringvalue": str,
    "intvalue": int,
    "doublevalue": float,
    "boolvalue": bool,
    "bytesvalue": str,
}
_BINARY = frozenset({".pb", ".binpb", ".protobuf"})


def _scalar(kind: str, raw: Any, where: str, field: str) -> Any:
    try:
        return _VALUE_KEYS[kind](raw)
    except (TypeError, ValueError, OverflowError):
        raise TraceFormatError(
            f"{where}: attribute {field!r} has {kind} = {shown(raw)}, which is not a "
            f"{_VALUE_KEYS[kind].__name__}; fix or drop that attribute",
            source=where,
            field=field,
        ) from None


def _any_value(value: Any, where: str, field: str) -> Any:
    """A Python value from an OTLP ``AnyValue`` (camelCase or snake_case keys)."""
    if not isinstance(value, Mapping):
        return value
    for key, raw in value.items():
        name = str(key).replace("_", "").lower()
        if name in _VALUE_KEYS:
            return _scalar(name, raw, where, field)
        if name == "arrayvalue":
            values = sequence(mapping(raw, where, field).get("values"), where, field)
            return [_any_value(item, where, field) for item in values]
        if name == "kvlistvalue":
            return _attributes(mapping(raw, where, field).get("values"), where, field)
    return None


def _attributes(pairs: Any, where: str, field: str) -> dict[str, Any]:
    """OTLP ``[{key, value}]`` attributes (or an already plain mapping) as a dict."""
    if isinstance(pairs, Mapping):
        return dict(pairs)
    attributes = {}
    for position, pair in enumerate(sequence(pairs, where, field)):
        entry = mapping(pair, where, f"{field}[{position}]")
        key = entry.get("key")
        if key is None:
            continue
        if not isinstance(key, str):
            raise TraceFormatError(
                f"{where}: field '{field}[{position}].key' is {shown(key)}; an attribute "
                "key is text",
                source=where,
                field=f"{field}[{position}].key",
            )
        attributes[key] = _any_value(entry.get("value"), where, key)
    return attributes


def _event_attributes(where: str) -> Callable[[Any], dict[str, Any]]:
    return lambda attributes: _attributes(attributes, where, "events.attributes")


def _kind(attributes: Mapping[str, Any]) -> str:
    kind = text(attributes.get("openinference.span.kind")) or text(
        attributes.get("langfuse.observation.type")
    )
    return kind.upper() if kind else ""


def _required_id(raw: Any, where: str, field: str, width: int) -> str:
    ident = span_id(raw, where, field, width)
    if ident is None:
        raise TraceFormatError(
            f"{where}: span has no {field!r} (or an all-zero one); every span needs a trace "
            "id and a span id",
            source=where,
            field=field,
        )
    return ident


def _first(raw: Mapping[str, Any], *names: str) -> Any:
    """The first of the names (camelCase, snake_case) that the record fills."""
    return next((raw[name] for name in names if raw.get(name) is not None), None)


def _otlp_span(raw: Mapping[str, Any], resource: dict[str, Any], where: str) -> Span:
    attributes = _attributes(raw.get("attributes"), where, "attributes")
    status = mapping(raw.get("status"), where, "status")
    return Span(
        trace_id=_required_id(_first(raw, "traceId", "trace_id"), where, "traceId", 32),
        span_id=_required_id(_first(raw, "spanId", "span_id"), where, "spanId", 16),
        parent_id=span_id(_first(raw, "parentSpanId", "parent_span_id"), where, "parentSpanId"),
        name=text(raw.get("name")) or "",
        kind=_kind(attributes),
        start_ns=to_ns(raw.get("startTimeUnixNano"), where, "startTimeUnixNano"),
        end_ns=to_ns(raw.get("endTimeUnixNano"), where, "endTimeUnixNano"),
        status=status_of(status.get("code")),
        status_message=text(status.get("message")),
        attributes=attributes,
        resource=resource,
        exception=exception_message(raw.get("events"), _event_attributes(where)),
    )


def _resource_spans(document: Mapping[str, Any], where: str) -> Iterator[Span]:
    blocks = _first(document, "resourceSpans", "resource_spans")
    for b, item in enumerate(sequence(blocks, where, "resourceSpans")):
        block = mapping(item, where, f"resourceSpans[{b}]")
        resource_field = f"resourceSpans[{b}].resource"
        resource = mapping(block.get("resource"), where, resource_field)
        attributes = _attributes(resource.get("attributes"), where, f"{resource_field}.attributes")
        scopes = _first(block, "scopeSpans", "instrumentationLibrarySpans")
        for s, scope in enumerate(sequence(scopes, where, f"resourceSpans[{b}].scopeSpans")):
            field = f"resourceSpans[{b}].scopeSpans[{s}]"
            spans = sequence(mapping(scope, where, field).get("spans"), where, f"{field}.spans")
            for position, raw in enumerate(spans):
                at = f"{where}, span {position}"
                yield _otlp_span(mapping(raw, at, None), attributes, at)


def _parent_of(raw: Mapping[str, Any]) -> Any:
    if "parent_id" in raw:
        return raw["parent_id"]
    parent = raw.get("parent")
    return parent.get("span_id") if isinstance(parent, Mapping) else None


def _sdk_span(raw: Mapping[str, Any], where: str) -> Span:
    context = mapping(raw.get("context"), where, "context")
    attributes = dict(mapping(raw.get("attributes"), where, "attributes"))
    status = mapping(raw.get("status"), where, "status")
    resource = mapping(raw.get("resource"), where, "resource")
    return Span(
        trace_id=_required_id(context.get("trace_id"), where, "context.trace_id", 32),
        span_id=_required_id(context.get("span_id"), where, "context.span_id", 16),
        parent_id=span_id(_parent_of(raw), where, "parent_id"),
        name=text(raw.get("name")) or "",
        kind=_kind(attributes),
        start_ns=to_ns(raw.get("start_time"), where, "start_time"),
        end_ns=to_ns(raw.get("end_time"), where, "end_time"),
        status=status_of(status.get("status_code")),
        status_message=text(status.get("description")),
        attributes=attributes,
        resource=dict(mapping(resource.get("attributes"), where, "resource.attributes")),
        exception=exception_message(raw.get("events"), _event_attributes(where)),
    )


def _document_spans(document: Any, where: str) -> Iterator[Span]:
    if isinstance(document, Sequence) and not isinstance(document, str):
        for position, item in enumerate(document):
            yield from _document_spans(item, f"{where}, item {position}")
    elif isinstance(document, Mapping) and (
        "resourceSpans" in document or "resource_spans" in document
    ):
        yield from _resource_spans(document, where)
    elif isinstance(document, Mapping) and "context" in document:
        yield _sdk_span(document, where)
    elif isinstance(document, Mapping) and isinstance(document.get("spans"), list):
        yield from _document_spans(document["spans"], where)
    else:
        raise TraceFormatError(
            f"{where}: not an OTLP trace document; expected 'resourceSpans' (OTLP JSON), "
            "a span with 'context' (SDK JSON), or an object with a 'spans' list",
            source=where,
        )


# -- binary OTLP ---------------------------------------------------------------------------


def _proto_modules() -> tuple[Any, Any, Any]:
    try:
        trace_pb2 = importlib.import_module("opentelemetry.proto.trace.v1.trace_pb2")
        json_format = importlib.import_module("google.protobuf.json_format")
        message = importlib.import_module("google.protobuf.message")
    except ImportError:
        raise MissingDependencyError(
            "reading binary OTLP (.pb) needs the optional package opentelemetry-proto: "
            "pip install 'metalearn[otlp]' (or export the traces as OTLP JSON)"
        ) from None
    return trace_pb2, json_format, message


def _messages(data: bytes) -> list[bytes]:
    """Length-delimited messages (big-endian uint32 prefixes), else the whole file as one."""
    chunks, offset = [], 0
    while offset + 4 <= len(data):
        (size,) = struct.unpack(">I", data[offset : offset + 4])
        if size == 0 or offset + 4 + size > len(data):
            return [data]
        chunks.append(data[offset + 4 : offset + 4 + size])
        offset += 4 + size
    return chunks if offset == len(data) and chunks else [data]


def _hex_ids(document: dict[str, Any]) -> dict[str, Any]:
    """Turn the base64 ids ``MessageToDict`` writes back into hex, as OTLP JSON has them."""
    for block in document.get("resourceSpans", []):
        for scope in block.get("scopeSpans", []):
            for raw in scope.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if raw.get(key):
                        raw[key] = base64.b64decode(raw[key]).hex()
    return document


def _binary_documents(path: Path) -> Iterator[tuple[str, Any]]:
    trace_pb2, json_format, proto_message = _proto_modules()
    for number, chunk in enumerate(_messages(path.read_bytes()), start=1):
        message = trace_pb2.TracesData()
        try:
            message.ParseFromString(chunk)
        except proto_message.DecodeError as err:
            raise TraceFormatError(
                f"{path.name} message {number}: not a binary OTLP TracesData ({err})",
                source=f"{path.name} message {number}",
            ) from None
        where = f"{path.name} message {number}"
        yield where, bounded(_hex_ids(json_format.MessageToDict(message)), where)


def _all_documents(source: Any) -> Iterator[tuple[str, Any]]:
    items = list(source) if isinstance(source, list | tuple) else [source]
    for position, item in enumerate(items):
        if is_path(item) and Path(item).suffix.lower() in _BINARY:
            yield from _binary_documents(Path(item))
        elif is_path(item) or not isinstance(item, Mapping | list | tuple):
            yield from documents(item)
        else:
            where = "input" if item is source else f"input item {position}"
            yield where, bounded(item, where)


def read_otlp(
    source: PathLike | Mapping[str, Any] | Sequence[Any],
    *,
    per_agent: bool = False,
    flatten: bool = False,
    goal_type: GoalTypeSource = None,
    outcome: OutcomeCallable | None = None,
) -> ImportResult:
    """Read OpenTelemetry GenAI traces into plans and steps.

    ``source`` is a path (OTLP JSON or JSON Lines, as the Collector's file exporter writes
    them, optionally ``.gz``; SDK span JSON; binary ``.pb`` with ``opentelemetry-proto``
    installed), a parsed JSON object, or a list of paths or objects: spans of one trace
    spread over several files are joined. Options are explained in
    :mod:`metalearn.importers`: ``per_agent`` makes each agent subtree its own plan,
    ``flatten`` counts nested tool spans as steps too, ``goal_type`` names an attribute
    (or a callable ``(trace, root) -> str``), ``outcome`` is a callable
    ``(trace, root) -> bool | str | None`` that decides the status before the root span's.

    Returns an :class:`ImportResult` (``plans``, ``steps``, ``report``).

    >>> def attr(key, value):
    ...     return {"key": key, "value": {"stringValue": value}}
    >>> spans = [
    ...     {"traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "EEE19B7EC3C1B174",
    ...      "name": "invoke_agent planner", "startTimeUnixNano": "1700000000000000000",
    ...      "endTimeUnixNano": "1700000003000000000",
    ...      "attributes": [attr("gen_ai.operation.name", "invoke_agent"),
    ...                     attr("gen_ai.agent.name", "planner")]},
    ...     {"traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "EEE19B7EC3C1B175",
    ...      "parentSpanId": "EEE19B7EC3C1B174", "name": "execute_tool search",
    ...      "startTimeUnixNano": "1700000001000000000",
    ...      "endTimeUnixNano": "1700000001250000000", "status": {"code": 2},
    ...      "attributes": [attr("gen_ai.operation.name", "execute_tool"),
    ...                     attr("gen_ai.tool.name", "search")]},
    ... ]
    >>> result = read_otlp({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]})
    >>> result
    <ImportResult plans=1 steps=1 skipped=0>
    >>> result.plans[["plan_id", "agent_id", "status"]].to_dict("records")
    [{'plan_id': '5b8efff798038103d269b633813fc60c', 'agent_id': 'planner', 'status': 'succeeded'}]
    >>> result.steps[["tool", "status", "duration_ms"]].to_dict("records")
    [{'tool': 'search', 'status': 'error', 'duration_ms': 250.0}]
    """
    options = Options(per_agent, flatten, goal_type, outcome)
    spans = [
        span
        for where, document in _all_documents(source)
        for span in _document_spans(document, where)
    ]
    return assemble(spans, {}, options)
