"""Each reader's own format: OTLP JSON/SDK JSON/binary, OpenInference, Langfuse, MLflow.

Fixtures are hand-made after the formats' documentation (Collector file exporter, Phoenix
spans and annotations DataFrames, Langfuse blob-export field reference, MLflow span dicts).
"""

from __future__ import annotations

import base64
import gzip
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from metalearn import HistoryStore
from metalearn.importers import (
    ImportResult,
    MissingDependencyError,
    ScoreRule,
    TraceFormatError,
    TraceImportError,
    read_langfuse,
    read_mlflow,
    read_openinference,
    read_otlp,
)

T0 = pd.Timestamp("2026-02-01T09:00:00Z")
NS = T0.value
HAS_PROTO = importlib.util.find_spec("opentelemetry") is not None and (
    importlib.util.find_spec("opentelemetry.proto") is not None
)


def ms(offset: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(milliseconds=offset)


def stored(result: ImportResult) -> None:
    with HistoryStore("sqlite://") as store:
        report = store.import_frames(result.plans, result.steps)
        assert (report.imported, report.rejected) == (len(result.plans), 0)


# -- OTLP JSON and SDK JSON ----------------------------------------------------------------


def value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, list):
        return {"arrayValue": {"values": [value(x) for x in v]}}
    return {"stringValue": v}


def otlp_span(
    sid: str, parent: str, name: str, start: int, end: int, **attrs: Any
) -> dict[str, Any]:
    return {
        "traceId": "4BF92F3577B34DA6A3CE929D0E0E4736",
        "spanId": sid,
        "parentSpanId": parent,
        "name": name,
        "kind": "SPAN_KIND_INTERNAL",
        "startTimeUnixNano": str(NS + start * 1_000_000),
        "endTimeUnixNano": str(NS + end * 1_000_000),
        "attributes": [{"key": k.replace("__", "."), "value": value(v)} for k, v in attrs.items()],
    }


def traces_data(*spans: dict[str, Any]) -> dict[str, Any]:
    service = {"key": "service.name", "value": {"stringValue": "booking"}}
    return {
        "resourceSpans": [
            {"resource": {"attributes": [service]}, "scopeSpans": [{"spans": list(spans)}]}
        ]
    }


AGENT_SPAN = otlp_span(
    "00F067AA0BA902B7", "", "invoke_agent", 0, 900, gen_ai__operation__name="invoke_agent"
)
TOOL_SPANS = [
    otlp_span(
        "00F067AA0BA902B8",
        "00F067AA0BA902B7",
        "execute_tool find_flight",
        100,
        300,
        gen_ai__operation__name="execute_tool",
        gen_ai__tool__name="find_flight",
        retries=2,
        score=0.5,
        cached=False,
        legs=["AMS", "JFK"],
    )
    | {"status": {"code": "STATUS_CODE_ERROR", "message": "no seats"}},
    otlp_span(
        "00F067AA0BA902B9",
        "00F067AA0BA902B7",
        "execute_tool book",
        400,
        450,
        gen_ai__operation__name="execute_tool",
        gen_ai__tool__name="book",
    ),
]


def check_booking(result: ImportResult) -> None:
    assert result.plans["plan_id"].tolist() == ["4bf92f3577b34da6a3ce929d0e0e4736"]
    assert result.plans["agent_id"].tolist() == ["booking"]
    assert result.steps[["tool", "status"]].values.tolist() == [
        ["find_flight", "error"],
        ["book", "ok"],
    ]
    assert result.steps["error"].iloc[0] == "no seats"
    stored(result)


def test_otlp_json_lines_split_over_files_are_joined(tmp_path: Path) -> None:
    first, second = tmp_path / "traces-1.jsonl", tmp_path / "traces-2.json"
    first.write_text(
        json.dumps(traces_data(TOOL_SPANS[1])) + "\n\n" + json.dumps(traces_data(AGENT_SPAN)) + "\n"
    )
    second.write_text(
        json.dumps(traces_data(TOOL_SPANS[0])) + "\n" + json.dumps(traces_data(TOOL_SPANS[1]))
    )
    check_booking(read_otlp([first, second]))


def test_otlp_gzip_and_attribute_types(tmp_path: Path) -> None:
    path = tmp_path / "traces.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        json.dump(traces_data(AGENT_SPAN, *TOOL_SPANS), handle)
    check_booking(read_otlp(path))
    seen: dict[str, Any] = {}

    def keep(trace: Any, root: Any) -> None:
        seen.update(next(s for s in trace.spans if s.span_id == "00f067aa0ba902b8").attributes)

    read_otlp(path, outcome=keep)
    assert (seen["retries"], seen["score"], seen["cached"], seen["legs"]) == (
        2,
        0.5,
        False,
        ["AMS", "JFK"],
    )


def sdk_span(
    sid: str, parent: str | None, name: str, start: int, end: int, **extra: Any
) -> dict[str, Any]:
    """A span as the OpenTelemetry Python SDK's ``ReadableSpan.to_json()`` writes it."""
    return {
        "name": name,
        "context": {
            "trace_id": "0x4bf92f3577b34da6a3ce929d0e0e4736",
            "span_id": sid,
            "trace_state": "[]",
        },
        "kind": "SpanKind.INTERNAL",
        "parent_id": parent,
        "start_time": ms(start).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "end_time": ms(end).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "status": {"status_code": "UNSET"},
        "attributes": extra.pop("attributes", {}),
        "events": extra.pop("events", []),
        "links": [],
        "resource": {"attributes": {"service.name": "booking"}, "schema_url": ""},
    } | extra


def test_sdk_span_json_with_iso_times_and_exception_events() -> None:
    spans = [
        sdk_span(
            "0x00f067aa0ba902b7",
            None,
            "invoke_agent",
            0,
            900,
            attributes={"gen_ai.operation.name": "invoke_agent"},
        ),
        sdk_span(
            "0x00f067aa0ba902b8",
            "0x00f067aa0ba902b7",
            "execute_tool find_flight",
            100,
            300,
            attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "find_flight"},
            events=[
                {
                    "name": "exception",
                    "timestamp": "x",
                    "attributes": {"exception.message": "no seats"},
                }
            ],
        ),
        sdk_span(
            "0x00f067aa0ba902b9",
            "0x00f067aa0ba902b7",
            "execute_tool book",
            400,
            450,
            attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "book"},
        ),
    ]
    result = read_otlp(spans)
    check_booking(result)
    assert result.steps["duration_ms"].tolist() == [200.0, 50.0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param('{"resourceSpans": [\n', r"bad\.json line 1: not valid JSON", id="not-json"),
        pytest.param('{"spans": 3}', r"bad\.json: not an OTLP trace document", id="not-otlp"),
        pytest.param(
            json.dumps(traces_data({"spanId": "01", "name": "x"})),
            r"bad\.json, span 0: span has no 'traceId'",
            id="no-trace-id",
        ),
        pytest.param(
            json.dumps(traces_data(AGENT_SPAN | {"startTimeUnixNano": "yesterday"})),
            r"field 'startTimeUnixNano' = 'yesterday' is not an ISO-8601 timestamp",
            id="bad-timestamp",
        ),
    ],
)
def test_otlp_format_errors_name_the_place(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(TraceFormatError, match=message):
        read_otlp(path)


def test_unreadable_source_type_is_a_typed_error() -> None:
    with pytest.raises(TraceFormatError, match="cannot read traces from a int"):
        read_otlp(42)  # type: ignore[arg-type]


def test_binary_otlp_without_the_extra_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a None entry in sys.modules makes the import fail as if the extra were missing
    monkeypatch.setitem(sys.modules, "opentelemetry.proto.trace.v1.trace_pb2", None)
    path = tmp_path / "traces.pb"
    path.write_bytes(b"\x0a\x00")
    with pytest.raises(MissingDependencyError, match=r"pip install 'metalearn\[otlp\]'"):
        read_otlp(path)


@pytest.mark.skipif(not HAS_PROTO, reason="needs opentelemetry-proto")
def test_binary_otlp_single_and_length_delimited(tmp_path: Path) -> None:
    json_format = importlib.import_module("google.protobuf.json_format")
    trace_pb2 = importlib.import_module("opentelemetry.proto.trace.v1.trace_pb2")
    document = traces_data(AGENT_SPAN, *TOOL_SPANS)
    for raw in document["resourceSpans"][0]["scopeSpans"][0]["spans"]:
        for key in ("traceId", "spanId", "parentSpanId"):
            raw[key] = base64.b64encode(bytes.fromhex(raw[key])).decode() if raw[key] else ""
    data = json_format.ParseDict(document, trace_pb2.TracesData()).SerializeToString()
    single, delimited = tmp_path / "one.pb", tmp_path / "stream.binpb"
    single.write_bytes(data)
    delimited.write_bytes(len(data).to_bytes(4, "big") + data)
    check_booking(read_otlp(single))
    check_booking(read_otlp(delimited))


# -- OpenInference / Phoenix ---------------------------------------------------------------


def phoenix_spans() -> pd.DataFrame:
    """Like ``px.Client().get_spans_dataframe()``: indexed by span id, attributes.* columns."""
    frame = pd.DataFrame(
        {
            "context.span_id": ["a1", "t1", "t2", "l1"],
            "context.trace_id": ["tr1"] * 4,
            "parent_id": [None, "a1", "a1", "a1"],
            "name": ["support_agent", "lookup_order", "refund", "ChatOpenAI"],
            "span_kind": ["AGENT", "TOOL", "TOOL", "LLM"],
            "start_time": [ms(0), ms(100), ms(300), ms(20)],
            "end_time": [ms(900), ms(250), ms(380), ms(90)],
            "status_code": ["OK", "OK", "ERROR", "OK"],
            "status_message": ["", "", "refund limit", ""],
            "events": [[], [], [], []],
            "attributes.tool.name": [None, "lookup_order", "refund", None],
            "attributes.agent.name": ["support", None, None, None],
            "attributes.goal": ["refund", None, None, None],
        }
    )
    return frame.set_index("context.span_id")


def test_phoenix_spans_dataframe() -> None:
    result = read_openinference(phoenix_spans(), goal_type="goal")
    assert result.plans[["plan_id", "agent_id", "goal_type", "status"]].values.tolist() == [
        ["tr1", "support", "refund", "succeeded"]
    ]
    assert result.steps[["tool", "status", "duration_ms"]].values.tolist() == [
        ["lookup_order", "ok", 150.0],
        ["refund", "error", 80.0],
    ]
    assert result.steps["error"].iloc[1] == "refund limit" and pd.isna(
        result.steps["error"].iloc[0]
    )
    stored(result)


def test_phoenix_annotations_root_beats_other_spans() -> None:
    annotations = pd.DataFrame(
        {
            "span_id": ["t1", "a1"],
            "annotation_name": ["correctness", "correctness"],
            "annotator_kind": ["LLM", "HUMAN"],
            "result.label": ["correct", "incorrect"],
            "result.score": [1.0, 0.0],
        }
    )
    rule = ScoreRule("correctness", labels={"correct": True, "incorrect": False})
    result = read_openinference(phoenix_spans(), annotations=annotations, score=rule)
    assert result.plans["status"].tolist() == ["failed"]
    assert result.plans["error"].tolist() == ["score 'correctness' = 'incorrect'"]
    by_score = read_openinference(
        phoenix_spans(),
        annotations={
            "quality": pd.DataFrame({"score": [0.9]}, index=pd.Index(["a1"], name="span_id"))
        },
        score=ScoreRule("quality", at_least=0.8),
    )
    assert by_score.plans[["status", "reward"]].values.tolist() == [["succeeded", 0.9]]


def test_phoenix_parquet_and_json_lines(tmp_path: Path) -> None:
    parquet = tmp_path / "spans.parquet"
    phoenix_spans().to_parquet(parquet)
    assert read_openinference(parquet).steps["tool"].tolist() == ["lookup_order", "refund"]
    lines = tmp_path / "spans.jsonl"
    rows = [
        {
            "name": "support_agent",
            "context": {"trace_id": "tr1", "span_id": "a1"},
            "span_kind": "AGENT",
            "parent_id": None,
            "start_time": "2026-02-01T09:00:00+00:00",
            "end_time": "2026-02-01T09:00:00.900000+00:00",
            "status_code": "UNSET",
            "attributes": {"openinference.span.kind": "AGENT"},
        },
        {
            "name": "lookup_order",
            "context": {"trace_id": "tr1", "span_id": "t1"},
            "span_kind": "TOOL",
            "parent_id": "a1",
            "start_time": "2026-02-01T09:00:00.100000+00:00",
            "end_time": "2026-02-01T09:00:00.250000+00:00",
            "status_code": "ERROR",
            "events": [{"name": "exception", "attributes": {"exception.type": "KeyError"}}],
            "attributes": {"tool": {"name": "lookup_order"}},
        },
    ]
    lines.write_text("\n".join(json.dumps(r) for r in rows))
    result = read_openinference(lines)
    assert result.steps[["tool", "status", "error"]].values.tolist() == [
        ["lookup_order", "error", "KeyError"]
    ]


def test_phoenix_bad_inputs() -> None:
    with pytest.raises(TraceImportError, match="takes a spans DataFrame"):
        read_openinference({"spans": []})  # type: ignore[arg-type]
    frame = phoenix_spans().reset_index().drop(columns="context.span_id")
    with pytest.raises(TraceFormatError, match=r"row 0: span has no 'context\.span_id'"):
        read_openinference(frame)


# -- Langfuse ------------------------------------------------------------------------------


def blob_rows() -> list[dict[str, Any]]:
    """Enriched observations as the blob export writes them (snake_case, UTC, no offset)."""
    common = {
        "trace_id": "lf-1",
        "trace_name": "refund-flow",
        "user_id": "u-7",
        "environment": "production",
    }
    return [
        common
        | {
            "id": "o1",
            "type": "AGENT",
            "parent_observation_id": "",
            "name": "refund_agent",
            "start_time": "2024-05-29 13:46:19.963000",
            "end_time": "2024-05-29 13:46:25.000000",
            "level": "DEFAULT",
            "status_message": "",
            "metadata": json.dumps({"attributes": {"gen_ai.agent.name": "refunds"}}),
            "latency": 5.037,
        },
        common
        | {
            "id": "o2",
            "type": "TOOL",
            "parent_observation_id": "o1",
            "name": "charge_card",
            "start_time": "2024-05-29 13:46:21.000000",
            "end_time": "2024-05-29 13:46:21.250000",
            "level": "ERROR",
            "status_message": "card declined",
            "metadata": "{}",
            "latency": 250,
        },
        common
        | {
            "id": "o3",
            "type": "EVENT",
            "parent_observation_id": "o1",
            "name": "user_notified",
            "start_time": "2024-05-29 13:46:22.000000",
            "end_time": "",
            "level": "DEFAULT",
            "status_message": "",
            "metadata": "{}",
            "latency": "",
        },
    ]


SCORE_ROWS = [
    {
        "id": "s1",
        "trace_id": "lf-1",
        "observation_id": "",
        "name": "resolution",
        "value": 1,
        "data_type": "CATEGORICAL",
        "string_value": "resolved",
        "timestamp": "2024-05-29 14:00:00.000000",
    },
    {
        "id": "s2",
        "trace_id": "lf-1",
        "observation_id": "o2",
        "name": "resolution",
        "value": 0,
        "data_type": "CATEGORICAL",
        "string_value": "unresolved",
        "timestamp": "2024-05-29 15:00:00.000000",
    },
]


def check_blob(result: ImportResult) -> None:
    plan = result.plans.iloc[0]
    assert (plan.plan_id, plan.agent_id, plan.goal_type, plan.status) == (
        "lf-1",
        "refunds",
        "refund-flow",
        "succeeded",
    )
    assert plan.started_at == pd.Timestamp("2024-05-29T13:46:19.963Z")
    assert result.steps[["tool", "status", "duration_ms", "error"]].values.tolist() == [
        ["charge_card", "error", 250.0, "card declined"]
    ]
    assert result.report[["outcome_rule", "incomplete"]].values.tolist() == [["score", False]]
    stored(result)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json", ".parquet", ".csv.gz"])
def test_langfuse_blob_export_files(tmp_path: Path, suffix: str) -> None:
    observations, scores = tmp_path / f"observations{suffix}", tmp_path / f"scores{suffix}"
    for path, rows in ((observations, blob_rows()), (scores, SCORE_ROWS)):
        frame = pd.DataFrame(rows)
        if suffix == ".jsonl":
            path.write_text("\n".join(json.dumps(r) for r in rows))
        elif suffix == ".json":
            path.write_text(json.dumps(rows))
        elif suffix == ".parquet":
            frame.astype("str").to_parquet(path)
        else:
            frame.to_csv(path, index=False)
    rule = ScoreRule("resolution", labels={"resolved": True, "unresolved": False})
    check_blob(
        read_langfuse(observations, scores=scores, goal_type="langfuse.trace.name", score=rule)
    )


def test_langfuse_blob_dataframe_and_score_rows() -> None:
    rule = ScoreRule("resolution", labels={"resolved": True, "unresolved": False})
    frame = pd.DataFrame(blob_rows())
    check_blob(read_langfuse(frame, scores=SCORE_ROWS, goal_type="langfuse.trace.name", score=rule))


def camel(row: dict[str, Any]) -> dict[str, Any]:
    names = {
        "trace_id": "traceId",
        "parent_observation_id": "parentObservationId",
        "start_time": "startTime",
        "end_time": "endTime",
        "status_message": "statusMessage",
    }
    return {names.get(k, k): v for k, v in row.items()}


def test_langfuse_api_observation_list_and_trace() -> None:
    observations = [camel(r) for r in blob_rows()]
    api_list = {"data": observations, "meta": {"page": 1, "totalItems": 3}}
    assert read_langfuse(api_list).steps["tool"].tolist() == ["charge_card"]
    api_trace = {
        "id": "lf-1",
        "name": "refund-flow",
        "observations": observations,
        "scores": [{"name": "solved", "value": 1, "dataType": "BOOLEAN", "observationId": None}],
    }
    result = read_langfuse(api_trace, score=ScoreRule("solved"), goal_type="langfuse.trace.name")
    assert result.plans[["goal_type", "status"]].values.tolist() == [["refund-flow", "succeeded"]]


def test_langfuse_api_trace_list_with_observation_ids_and_score_pages(tmp_path: Path) -> None:
    # GET /api/public/traces lists only the ids of observations and scores; the
    # observations come from GET /api/public/observations, the scores from /scores.
    traces = {
        "data": [
            {"id": "lf-1", "name": "refund-flow", "observations": ["o1", "o2"], "scores": ["s9"]}
        ]
    }
    observations = {"data": [camel(r) for r in blob_rows()]}
    scores = tmp_path / "scores.json"
    scores.write_text(
        json.dumps(
            {"data": [{"traceId": "lf-1", "name": "solved", "value": 0, "dataType": "BOOLEAN"}]}
        )
    )
    result = read_langfuse(
        [traces, observations],
        scores=scores,
        score=ScoreRule("solved"),
        goal_type="langfuse.trace.name",
    )
    assert result.plans[["goal_type", "status", "error"]].values.tolist() == [
        ["refund-flow", "failed", "score 'solved' = False"]
    ]
    only_traces = read_langfuse(traces)
    assert only_traces.report["skipped_reason"].tolist() == ["no spans"]


def test_langfuse_langchain_tool_spans_and_missing_ids() -> None:
    langchain_tool = {"inputs": {"q": "x"}, "color": "green"}
    rows = [
        blob_rows()[0],
        blob_rows()[1] | {"type": "SPAN", "name": "Web-Search", "level": "DEFAULT"},
        blob_rows()[1] | {"id": "o4", "type": "SPAN", "name": "tools", "level": "DEFAULT"},
    ]
    rows[1]["metadata"] = json.dumps(langchain_tool)
    assert read_langfuse(rows).steps["tool"].tolist() == ["Web-Search"]
    with pytest.raises(TraceFormatError, match=r"input item 0: observation has no 'id'"):
        read_langfuse([{"trace_id": "lf-1", "type": "SPAN", "name": "no id"}])
    with pytest.raises(TraceFormatError, match="not a Langfuse export"):
        read_langfuse({"hello": "world"})


# -- MLflow --------------------------------------------------------------------------------


def b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode()


def mlflow3_span(
    sid: str,
    parent: str | None,
    name: str,
    kind: str,
    start: int,
    end: int | None,
    code: str = "STATUS_CODE_OK",
    **attrs: Any,
) -> dict[str, Any]:
    """A span dict of MLflow 3 (proto-style: base64 ids, JSON-encoded attribute values)."""
    return {
        "trace_id": b64("4bf92f3577b34da6a3ce929d0e0e4736"),
        "span_id": b64(sid),
        "parent_span_id": b64(parent) if parent else "",
        "name": name,
        "start_time_unix_nano": str(NS + start * 1_000_000),
        "end_time_unix_nano": None if end is None else str(NS + end * 1_000_000),
        "events": [],
        "status": {"code": code, "message": "boom" if code.endswith("ERROR") else ""},
        "attributes": {
            "mlflow.spanType": json.dumps(kind),
            "mlflow.traceRequestId": json.dumps("tr-1"),
        }
        | {k: json.dumps(v) for k, v in attrs.items()},
    }


def mlflow3_frame(end: int | None = 900, state: str = "OK") -> pd.DataFrame:
    spans = [
        mlflow3_span("00f067aa0ba902b7", None, "agent", "AGENT", 0, end),
        mlflow3_span("00f067aa0ba902b8", "00f067aa0ba902b7", "search_docs", "TOOL", 100, 200),
        mlflow3_span("00f067aa0ba902b9", "00f067aa0ba902b7", "ChatModel", "CHAT_MODEL", 210, 400),
        mlflow3_span(
            "00f067aa0ba902ba",
            "00f067aa0ba902b7",
            "send_email",
            "TOOL",
            500,
            600,
            "STATUS_CODE_ERROR",
        ),
    ]
    assessments = [
        {
            "assessment_name": "correct",
            "feedback": {"value": "no"},
            "span_id": None,
            "valid": False,
        },
        {"assessment_name": "correct", "feedback": {"value": "yes"}, "span_id": None},
        {"assessment_name": "correct", "expectation": {"value": "no"}},
    ]
    return pd.DataFrame(
        {
            "trace_id": ["tr-1"],
            "trace": [None],
            "state": [state],
            "request_time": [NS // 1_000_000],
            "execution_duration": [900],
            "trace_metadata": [{"mlflow.trace.user": "ana"}],
            "tags": [{"mlflow.traceName": "support_flow"}],
            "spans": [spans],
            "assessments": [assessments],
        }
    )


def test_mlflow3_search_traces_frame() -> None:
    rule = ScoreRule("correct", labels={"yes": True, "no": False})
    result = read_mlflow(mlflow3_frame(), goal_type="mlflow.traceName", score=rule)
    assert result.plans[["plan_id", "agent_id", "goal_type", "status"]].values.tolist() == [
        ["tr-1", "agent", "support_flow", "succeeded"]
    ]
    assert result.steps[["tool", "status", "duration_ms"]].values.tolist() == [
        ["search_docs", "ok", 100.0],
        ["send_email", "error", 100.0],
    ]
    assert result.report["outcome_rule"].tolist() == ["score"]
    stored(result)


def test_mlflow_in_progress_and_json_text(tmp_path: Path) -> None:
    running = read_mlflow(mlflow3_frame(end=None, state="IN_PROGRESS"))
    assert running.report["skipped_reason"].str.startswith("still running").tolist() == [True]
    frame = mlflow3_frame().assign(spans=lambda f: f["spans"].map(json.dumps))
    path = tmp_path / "traces.jsonl"
    frame.to_json(path, orient="records", lines=True)
    assert read_mlflow(path).steps["tool"].tolist() == ["search_docs", "send_email"]


def test_mlflow2_columns_and_v2_span_dicts() -> None:
    def span(
        sid: str, parent: str | None, name: str, kind: str, start: int, end: int, status: str = "OK"
    ) -> dict[str, Any]:
        return {
            "name": name,
            "context": {"span_id": sid, "trace_id": "0x4bf92f3577b34da6a3ce929d0e0e4736"},
            "parent_id": parent,
            "start_time": NS + start * 1_000_000,
            "end_time": NS + end * 1_000_000,
            "status_code": status,
            "status_message": "",
            "attributes": {
                "mlflow.spanType": json.dumps(kind),
                "mlflow.traceRequestId": json.dumps("r-1"),
            },
            "events": [],
        }

    trace = {
        "info": {"request_id": "r-1"},
        "data": {
            "spans": [
                span("0x00f067aa0ba902b7", None, "chain", "CHAIN", 0, 500, "ERROR"),
                span("0x00f067aa0ba902b8", "0x00f067aa0ba902b7", "calculator", "TOOL", 10, 20),
            ]
        },
    }
    frame = pd.DataFrame(
        {"request_id": ["r-1"], "status": ["ERROR"], "trace": [json.dumps(trace)], "tags": [{}]}
    )
    result = read_mlflow(frame)
    assert result.plans[["plan_id", "agent_id", "status"]].values.tolist() == [
        ["r-1", "chain", "failed"]
    ]
    assert result.steps["tool"].tolist() == ["calculator"]
    with pytest.raises(TraceFormatError, match="row 0: no 'trace_id'"):
        read_mlflow(pd.DataFrame({"state": ["OK"]}))
    with pytest.raises(TraceImportError, match=r"takes the DataFrame mlflow\.search_traces"):
        read_mlflow({"trace_id": "x"})  # type: ignore[arg-type]
