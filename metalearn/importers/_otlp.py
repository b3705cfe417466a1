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
from collections.abc import Iterator, Mapping, Sequence
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
    documents,
    exception_message,
    is_path,
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


def _any_value(value: Any) -> Any:
    """A Python value from an OTLP ``AnyValue`` (camelCase or snake_case keys)."""
    if not isinstance(value, Mapping):
        return value
    for key, raw in value.items():
        name = key.replace("_", "").lower()
        if name in _VALUE_KEYS:
            return _VALUE_KEYS[name](raw)
        if name == "arrayvalue":
            return [_any_value(item) for item in (raw or {}).get("values", [])]
        if name == "kvlistvalue":
            return _attributes((raw or {}).get("values", []))
    return None


def _attributes(pairs: Any) -> dict[str, Any]:
    """OTLP ``[{key, value}]`` attributes (or an already plain mapping) as a dict."""
    if isinstance(pairs, Mapping):
        return dict(pairs)
    return {pair["key"]: _any_value(pair.get("value")) for pair in pairs or [] if "key" in pair}


def _kind(attributes: Mapping[str, Any]) -> str:
    kind = attributes.get("openinference.span.kind") or attributes.get("langfuse.observation.type")
    return str(kind).upper() if kind else ""


def _required_id(raw: Any, where: str, field: str, width: int) -> str:
    ident = span_id(raw, width)
    if ident is None:
        raise TraceFormatError(
            f"{where}: span has no {field!r} (or an all-zero one); every span needs a trace "
            "id and a span id",
            source=where,
            field=field,
        )
    return ident


def _otlp_span(raw: Mapping[str, Any], resource: dict[str, Any], where: str) -> Span:
    attributes = _attributes(raw.get("attributes"))
    status = raw.get("status") or {}
    return Span(
        trace_id=_required_id(raw.get("traceId", raw.get("trace_id")), where, "traceId", 32),
        span_id=_required_id(raw.get("spanId", raw.get("span_id")), where, "spanId", 16),
        parent_id=span_id(raw.get("parentSpanId", raw.get("parent_span_id"))),
        name=str(raw.get("name") or ""),
        kind=_kind(attributes),
        start_ns=to_ns(raw.get("startTimeUnixNano"), where, "startTimeUnixNano"),
        end_ns=to_ns(raw.get("endTimeUnixNano"), where, "endTimeUnixNano"),
        status=status_of(status.get("code")),
        status_message=text(status.get("message")),
        attributes=attributes,
        resource=resource,
        exception=exception_message(raw.get("events"), _attributes),
    )


def _resource_spans(document: Mapping[str, Any], where: str) -> Iterator[Span]:
    for block in document.get("resourceSpans") or document.get("resource_spans") or []:
        resource = _attributes((block.get("resource") or {}).get("attributes"))
        scopes = block.get("scopeSpans") or block.get("instrumentationLibrarySpans") or []
        for scope in scopes:
            for position, raw in enumerate(scope.get("spans") or []):
                yield _otlp_span(raw, resource, f"{where}, span {position}")


def _parent_of(raw: Mapping[str, Any]) -> Any:
    if "parent_id" in raw:
        return raw["parent_id"]
    parent = raw.get("parent") or {}
    return parent.get("span_id") if isinstance(parent, Mapping) else None


def _sdk_span(raw: Mapping[str, Any], where: str) -> Span:
    context = raw.get("context") or {}
    attributes = dict(raw.get("attributes") or {})
    status = raw.get("status") or {}
    return Span(
        trace_id=_required_id(context.get("trace_id"), where, "context.trace_id", 32),
        span_id=_required_id(context.get("span_id"), where, "context.span_id", 16),
        parent_id=span_id(_parent_of(raw)),
        name=str(raw.get("name") or ""),
        kind=_kind(attributes),
        start_ns=to_ns(raw.get("start_time"), where, "start_time"),
        end_ns=to_ns(raw.get("end_time"), where, "end_time"),
        status=status_of(status.get("status_code")),
        status_message=text(status.get("description")),
        attributes=attributes,
        resource=dict((raw.get("resource") or {}).get("attributes") or {}),
        exception=exception_message(raw.get("events"), _attributes),
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
        yield f"{path.name} message {number}", _hex_ids(json_format.MessageToDict(message))


def _all_documents(source: Any) -> Iterator[tuple[str, Any]]:
    items = list(source) if isinstance(source, list | tuple) else [source]
    for position, item in enumerate(items):
        if is_path(item) and Path(item).suffix.lower() in _BINARY:
            yield from _binary_documents(Path(item))
        elif is_path(item) or not isinstance(item, Mapping | list | tuple):
            yield from documents(item)
        else:
            yield ("input" if item is source else f"input item {position}"), item


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
