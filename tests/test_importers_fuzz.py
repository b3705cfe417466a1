"""Fuzzing the trace readers: mutated real samples import or raise a typed error.

Every reader gets copies of the real files in ``data/traces`` (the frame readers: frames
built from those files and from the format tests' fixtures) with one to three mutations: a
JSON node or a cell replaced by a number, text, a list, null, an object, a huge, NaN or
infinite number; a key or a column deleted or renamed; a timestamp moved to the year 2300,
0, a negative value, infinity or text; a node nested 100,000 levels deep; the file
truncated, re-encoded or with a byte changed. Whatever comes in, a reader returns an
``ImportResult`` or raises a ``MetalearnError`` (or an ``OSError``): nothing else escapes.

Budget: ``EXAMPLES`` (200) per reader, derandomized so every run checks the same
examples: about 12 s for this file on two cores. ``METALEARN_FUZZ_SCALE=20`` runs twenty
times as many, with fresh random examples on every run, for a longer campaign.

The tests after the fuzzers pin one case of each defect class the campaign found (a number
where an object is expected, a timestamp after 2262, an infinite timestamp, JSON nested too
deeply) with the exact error and a message naming the file and the field.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from metalearn import MetalearnError
from metalearn.importers import (
    ImportResult,
    TraceFormatError,
    read_langfuse,
    read_mlflow,
    read_openinference,
    read_otlp,
)
from tests.conftest import TRACES
from tests.test_importers_formats import mlflow3_frame, phoenix_spans

SCALE = float(os.environ.get("METALEARN_FUZZ_SCALE", "1"))
EXAMPLES = 200
DEEP = 100_000
HAS_PROTO = importlib.util.find_spec("opentelemetry") is not None and (
    importlib.util.find_spec("opentelemetry.proto") is not None
)

Reader = Callable[..., ImportResult]
NodePath = tuple[str | int, ...]
Mutation = tuple[str, int, Any]


def fuzz(examples: int = EXAMPLES) -> settings:
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        database=None,
        derandomize=SCALE == 1,
        # Shrinking documents 100,000 levels deep takes minutes; a failing example of at
        # most three mutations reads well enough as drawn.
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def survives(read: Reader, source: Any) -> None:
    """The property: a result, or a typed error; any other exception fails the test."""
    try:
        result = read(source)
    except (MetalearnError, OSError):
        return
    assert isinstance(result, ImportResult)


# -- samples -------------------------------------------------------------------------------

OTLP_FILES = [*sorted((TRACES / "any_agent").glob("*.json")), TRACES / "otlp" / "trace.json"]
LANGFUSE_FILES = sorted((TRACES / "langfuse").glob("*.json"))
TEXTS = {path.name: path.read_text(encoding="utf-8") for path in OTLP_FILES + LANGFUSE_FILES}


def sample(name: str) -> Any:
    """A fresh parsed copy of a real sample, to mutate."""
    return json.loads(TEXTS[name])


def _kind(attributes: dict[str, Any]) -> str:
    operation = attributes.get("gen_ai.operation.name")
    return {"invoke_agent": "AGENT", "execute_tool": "TOOL", "call_llm": "LLM"}.get(
        str(operation), "CHAIN"
    )


def _parent(span: dict[str, Any]) -> int | None:
    parent = span.get("parent") or {}
    return parent.get("span_id")


def phoenix_rows(name: str) -> pd.DataFrame:
    """An any-agent sample as Phoenix's spans DataFrame shows it."""
    rows = []
    for span in sample(name)["spans"]:
        attributes = span["attributes"]
        parent = _parent(span)
        rows.append(
            {
                "context.trace_id": f"{span['context']['trace_id']:032x}",
                "context.span_id": f"{span['context']['span_id']:016x}",
                "parent_id": None if parent is None else f"{parent:016x}",
                "name": span["name"],
                "span_kind": _kind(attributes),
                "start_time": pd.Timestamp(span["start_time"], unit="ns", tz="UTC"),
                "end_time": pd.Timestamp(span["end_time"], unit="ns", tz="UTC"),
                "status_code": span["status"]["status_code"].upper(),
                "status_message": span["status"]["description"],
                "events": span["events"],
                "attributes.tool.name": attributes.get("gen_ai.tool.name"),
                "attributes.agent.name": attributes.get("gen_ai.agent.name"),
                "attributes.llm.model_name": attributes.get("gen_ai.request.model"),
            }
        )
    return pd.DataFrame(rows)


def mlflow_records() -> list[dict[str, Any]]:
    """The any-agent samples as ``mlflow.search_traces()`` shows them, one row per trace."""
    rows = []
    for path in OTLP_FILES[:-1]:
        spans = [
            {
                "span_id": f"{span['context']['span_id']:016x}",
                "parent_span_id": None if _parent(span) is None else f"{_parent(span):016x}",
                "name": span["name"],
                "start_time_unix_nano": span["start_time"],
                "end_time_unix_nano": span["end_time"],
                "status": {"code": f"STATUS_CODE_{span['status']['status_code'].upper()}"},
                "attributes": {"mlflow.spanType": json.dumps(_kind(span["attributes"]))}
                | {k: json.dumps(v) for k, v in span["attributes"].items()},
                "events": span["events"],
            }
            for span in sample(path.name)["spans"]
        ]
        rows.append(
            {
                "trace_id": f"tr-{path.stem}",
                "state": "OK",
                "request_time": spans[0]["start_time_unix_nano"] // 1_000_000,
                "trace_metadata": {"mlflow.trace.user": "ana"},
                "tags": {"mlflow.traceName": path.stem},
                "spans": spans,
                "assessments": [{"assessment_name": "done", "feedback": {"value": True}}],
            }
        )
    return rows


PHOENIX_FRAMES = {
    **{path.name: phoenix_rows(path.name) for path in OTLP_FILES[:-1]},
    "phoenix_spans": phoenix_spans().reset_index(),
    "phoenix_spans_indexed": phoenix_spans(),
}
MLFLOW_FRAMES = {"any_agent": pd.DataFrame(mlflow_records()), "mlflow3_frame": mlflow3_frame()}


@pytest.mark.parametrize(
    ("read", "frames"),
    [
        pytest.param(read_openinference, PHOENIX_FRAMES, id="openinference"),
        pytest.param(read_mlflow, MLFLOW_FRAMES, id="mlflow"),
    ],
)
def test_unmutated_frames_import(read: Reader, frames: dict[str, pd.DataFrame]) -> None:
    for frame in frames.values():
        assert len(read(frame).plans) >= 1


# -- mutations -----------------------------------------------------------------------------

HUGE = st.sampled_from(
    [2**63, -(2**63) - 1, 10**30, 10**400, 1e300, float("inf"), float("-inf"), 1e400]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    HUGE,
    st.text(max_size=8),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=4), SCALARS, max_size=3),
)
YEAR_2300_NS = 10_413_792_000_000_000_000
TIMES = st.one_of(
    st.sampled_from(
        [
            "2300-01-01T00:00:00Z",
            "2300-01-01 00:00:00.000000",
            YEAR_2300_NS,
            str(YEAR_2300_NS),
            "0000-01-01T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "1000-01-01",
            0,
            -1,
            -(10**18),
            "-5",
            float("inf"),
            float("-inf"),
            float("nan"),
            1e30,
            "inf",
            "Infinity",
            "NaN",
            "now",
            "yesterday",
            "",
            "9999-12-31T23:59:59Z",
            "9" * 30,
            "١٢٣",
            "²",
        ]
    ),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
)
# Values only text can hold (a parsed copy holds their Python counterparts).
RAW = ["deep list", "deep object", "long number", "1e400"]


def deep_python(kind: str) -> Any:
    if kind == "long number":
        return 10**5000
    if kind == "1e400":
        return float("inf")
    node: Any = 0
    for _ in range(DEEP):
        node = [node] if kind == "deep list" else {"a": node}
    return node


def deep_text(kind: str) -> str:
    if kind == "deep list":
        return "[" * DEEP + "0" + "]" * DEEP
    if kind == "deep object":
        return '{"a":' * DEEP + "0" + "}" * DEEP
    return "9" * 5000 if kind == "long number" else "1e400"


MUTATION = st.one_of(
    st.tuples(st.just("replace"), st.integers(0, 10**6), VALUES),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.none()),
    st.tuples(st.just("timestamp"), st.integers(0, 10**6), TIMES),
    st.tuples(st.just("raw"), st.integers(0, 10**6), st.sampled_from(RAW)),
)
MUTATIONS = st.lists(MUTATION, min_size=1, max_size=3)
CORRUPTION = st.one_of(
    st.none(),
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("encode"), st.sampled_from(["utf-16", "utf-32", "latin-1"])),
    st.tuples(st.just("byte"), st.integers(0, 10**9), st.integers(0x80, 0xFF)),
)


def node_paths(document: Any, limit: int = 30) -> Iterator[NodePath]:
    """Paths of the nodes of a parsed document, parents first (not below ``limit`` levels)."""
    stack: list[tuple[NodePath, Any]] = [((), document)]
    while stack:
        path, node = stack.pop()
        yield path
        if len(path) >= limit:
            continue
        if isinstance(node, dict):
            stack.extend(((*path, key), value) for key, value in node.items())
        elif isinstance(node, list):
            stack.extend(((*path, index), value) for index, value in enumerate(node))


def _parent_of(document: Any, path: NodePath) -> Any:
    for key in path[:-1]:
        document = document[key]
    return document


def mutate(document: Any, mutation: Mutation, raws: list[str] | None) -> Any:
    """Apply one mutation; ``raws`` collects text-only values (``None``: use Python ones)."""
    op, pick, value = mutation
    paths = list(node_paths(document))
    if op == "timestamp":
        timed = [p for p in paths if p and isinstance(p[-1], str) and "time" in p[-1].lower()]
        paths = timed or paths
    path = paths[pick % len(paths)]
    if op == "delete":
        if path:
            del _parent_of(document, path)[path[-1]]
        return document
    if op == "raw" and raws is None:
        value = deep_python(value)
    elif op == "raw" and raws is not None:
        value = f"@@raw{len(raws)}@@"
        raws.append(deep_text(mutation[2]))
    if not path:
        return value
    _parent_of(document, path)[path[-1]] = value
    return document


def mutated(document: Any, mutations: list[Mutation], raws: list[str] | None) -> Any:
    # Deep values last: walking a node 100,000 levels deep to pick the next one is slow.
    for mutation in sorted(mutations, key=lambda m: m[0] == "raw"):
        document = mutate(document, mutation, raws)
    return document


def as_text(document: Any, raws: list[str]) -> str:
    text = json.dumps(document)
    for number, raw in enumerate(raws):
        text = text.replace(f'"@@raw{number}@@"', raw)
    return text


def corrupt(data: bytes, text: str, corruption: Any) -> bytes:
    if corruption is None:
        return data
    if corruption[0] == "truncate":
        return data[: int(len(data) * corruption[1])]
    if corruption[0] == "encode":
        return text.encode(corruption[1], errors="replace")
    if not data:
        return data
    position = corruption[1] % len(data)
    return data[:position] + bytes([corruption[2]]) + data[position + 1 :]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# -- JSON readers --------------------------------------------------------------------------


def json_lines(document: Any, raws: list[str]) -> str:
    """One record per line: the spans or observations of a sample, else the whole sample."""
    if isinstance(document, dict):
        for key in ("spans", "observations"):
            if isinstance(document.get(key), list):
                return "\n".join(as_text(item, raws) for item in document[key])
    return as_text(document, raws)


def proto_bytes(document: Any, raws: list[str]) -> bytes | None:
    """The sample as binary OTLP, when the mutated copy still converts."""
    json_format = pytest.importorskip("google.protobuf.json_format")
    trace_pb2 = pytest.importorskip("opentelemetry.proto.trace.v1.trace_pb2")
    try:
        message = json_format.Parse(as_text(document, raws), trace_pb2.TracesData())
    except (json_format.ParseError, RecursionError, ValueError, TypeError):
        return None
    return bytes(message.SerializeToString())


def deliver(folder: Path, name: str, document: Any, raws: list[str], how: str, bad: Any) -> Path:
    stem = Path(name).stem
    if how == "pb" and (data := proto_bytes(document, raws)) is not None:
        path = folder / f"{stem}.pb"
        path.write_bytes(corrupt(data, "", bad))
        return path
    text = json_lines(document, raws) if how == "jsonl" else as_text(document, raws)
    data = text.encode()
    if how == "gzip":
        path = folder / f"{stem}.json.gz"
        path.write_bytes(corrupt(gzip.compress(data), text, bad))
        return path
    path = folder / (f"{stem}.jsonl" if how == "jsonl" else f"{stem}.json")
    path.write_bytes(corrupt(data, text, bad))
    return path


HOW = ["object", "json", "jsonl", "gzip", *(["pb"] if HAS_PROTO else [])]


def fuzz_json(
    folder: Path, read: Reader, name: str, mutations: list[Mutation], how: str, bad: Any
) -> None:
    if how == "object":
        survives(read, mutated(sample(name), mutations, None))
        return
    raws: list[str] = []
    document = mutated(sample(name), mutations, raws)
    survives(read, deliver(folder, name, document, raws, how, bad))


@fuzz()
@given(
    name=st.sampled_from([p.name for p in OTLP_FILES]),
    mutations=MUTATIONS,
    how=st.sampled_from(HOW),
    bad=CORRUPTION,
)
def test_read_otlp_on_mutated_samples(
    folder: Path, name: str, mutations: list[Mutation], how: str, bad: Any
) -> None:
    fuzz_json(folder, read_otlp, name, mutations, how, bad)


@fuzz()
@given(
    name=st.sampled_from([p.name for p in LANGFUSE_FILES]),
    mutations=MUTATIONS,
    how=st.sampled_from(["object", "json", "jsonl", "gzip"]),
    bad=CORRUPTION,
)
def test_read_langfuse_on_mutated_samples(
    folder: Path, name: str, mutations: list[Mutation], how: str, bad: Any
) -> None:
    fuzz_json(folder, read_langfuse, name, mutations, how, bad)


# -- frame readers -------------------------------------------------------------------------

CELLS = st.one_of(
    VALUES,
    TIMES,
    st.sampled_from(
        [
            pd.NA,
            pd.NaT,
            np.nan,
            np.array([1, 2]),
            np.array(["TOOL", "AGENT"], dtype=object),
            pd.Timestamp("2300-01-01", tz="UTC"),
            pd.Timestamp("1000-01-01"),
            datetime(1, 1, 1),
            datetime(9999, 12, 31),
            np.datetime64("2300-01-01"),
            np.datetime64("NaT"),
            np.float64("inf"),
            np.int64(-1),
            {"trace_id": {"a": 1}},
        ]
    ),
)
FRAME_MUTATION = st.one_of(
    st.tuples(st.just("cell"), st.tuples(st.integers(0, 99), st.integers(0, 99)), CELLS),
    st.tuples(
        st.just("raw cell"), st.tuples(st.integers(0, 99), st.integers(0, 99)), st.sampled_from(RAW)
    ),
    st.tuples(st.just("inside"), st.tuples(st.integers(0, 99), st.integers(0, 99)), MUTATION),
    st.tuples(
        st.just("rename"),
        st.tuples(st.integers(0, 99), st.integers(0, 99)),
        st.sampled_from([0, "attributes.tool.name", "context.span_id", "spans", "name", None]),
    ),
    st.tuples(st.just("drop"), st.tuples(st.integers(0, 99), st.integers(0, 99)), st.none()),
    st.tuples(st.just("index"), st.tuples(st.integers(0, 99), st.integers(0, 99)), st.booleans()),
)
FRAME_MUTATIONS = st.lists(FRAME_MUTATION, min_size=1, max_size=3)


def _set_cell(frame: pd.DataFrame, row: int, column: Any, value: Any) -> pd.DataFrame:
    values = frame[column].astype(object).tolist()
    values[row] = value
    frame[column] = pd.Series(values, index=frame.index, dtype=object)
    return frame


def mutate_inside(cell: Any, mutation: Mutation) -> Any:
    """Mutate a nested cell (a span list, events, JSON text) as a JSON document."""
    if isinstance(cell, str):
        try:
            document = json.loads(cell)
        except ValueError:
            return mutate(cell, mutation, None)
        raws: list[str] = []
        return as_text(mutate(document, mutation, raws), raws)
    try:
        copy = json.loads(json.dumps(cell, default=str))
    except (RecursionError, ValueError):  # made too deep or too long to print earlier
        return cell
    return mutate(copy, mutation, None)


def mutate_frame(frame: pd.DataFrame, mutation: tuple[str, tuple[int, int], Any]) -> pd.DataFrame:
    op, (row, col), value = mutation
    if frame.columns.empty or frame.empty:
        return frame
    row, column = row % len(frame), frame.columns[col % len(frame.columns)]
    if frame.columns.duplicated().any():
        return frame  # a frame with two columns of one name cannot be edited by name
    if op == "cell":
        return _set_cell(frame, row, column, value)
    if op == "raw cell":
        return _set_cell(frame, row, column, deep_python(value))
    if op == "inside":
        return _set_cell(frame, row, column, mutate_inside(frame[column].iloc[row], value))
    if op == "rename":
        return frame.rename(columns={column: value})
    if op == "drop":
        return frame.drop(columns=column)
    if value and frame.index.name is None:
        try:
            return frame.set_index(column)
        except TypeError:  # unhashable values cannot index
            return frame
    if frame.index.name is None:
        return frame.reset_index(drop=not value)
    try:
        return frame.reset_index()
    except ValueError:  # a column already has the index's name
        return frame


def write_frame(folder: Path, frame: pd.DataFrame, how: str, bad: Any) -> Any:
    """The frame itself, or a Parquet or JSON Lines file of it (the frame when it will not save)."""
    if how == "frame":
        return frame
    path = folder / f"frame.{how}"
    try:
        if how == "parquet":
            frame.to_parquet(path)
        else:
            frame.to_json(path, orient="records", lines=True, default_handler=str)
    except Exception:  # the writers refuse some mutated frames; read those as frames
        return frame
    data = path.read_bytes()
    path.write_bytes(corrupt(data, data.decode("utf-8", errors="replace"), bad))
    return path


def fuzz_frame(
    folder: Path, read: Reader, frame: pd.DataFrame, mutations: list[Any], how: str, bad: Any
) -> None:
    frame = frame.copy()
    for mutation in mutations:
        frame = mutate_frame(frame, mutation)
    # pyarrow overflows the C stack (a segfault) converting objects 100,000 levels deep
    deep = any(m[0] == "raw cell" or (m[0] == "inside" and m[2][0] == "raw") for m in mutations)
    survives(read, frame if deep else write_frame(folder, frame, how, bad))


@fuzz()
@given(
    name=st.sampled_from(list(PHOENIX_FRAMES)),
    mutations=FRAME_MUTATIONS,
    how=st.sampled_from(["frame", "parquet", "jsonl"]),
    bad=CORRUPTION,
)
def test_read_openinference_on_mutated_frames(
    folder: Path, name: str, mutations: list[Any], how: str, bad: Any
) -> None:
    fuzz_frame(folder, read_openinference, PHOENIX_FRAMES[name], mutations, how, bad)


@fuzz()
@given(
    name=st.sampled_from(list(MLFLOW_FRAMES)),
    mutations=FRAME_MUTATIONS,
    how=st.sampled_from(["frame", "parquet", "jsonl"]),
    bad=CORRUPTION,
    spans_as_text=st.booleans(),
)
def test_read_mlflow_on_mutated_frames(
    folder: Path, name: str, mutations: list[Any], how: str, bad: Any, spans_as_text: bool
) -> None:
    frame = MLFLOW_FRAMES[name]
    if spans_as_text:  # as a frame saved to CSV or Parquet holds them
        frame = frame.assign(spans=frame["spans"].map(json.dumps))
    fuzz_frame(folder, read_mlflow, frame, mutations, how, bad)


# -- one case of each defect class the campaign found ------------------------------------

Case = Callable[[Path], Path]


def _written(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _any_agent(folder: Path, change: Callable[[Any], object], raws: list[str] = []) -> Path:  # noqa: B006
    document = sample("OPENAI_trace.json")
    change(document)
    return _written(folder, "OPENAI_trace.json", as_text(document, raws))


def _otlp_json(folder: Path, change: Callable[[Any], object]) -> Path:
    document = sample("trace.json")
    change(document["resourceSpans"][0]["scopeSpans"][0]["spans"][0])
    return _written(folder, "trace.json", as_text(document, []))


def _langfuse(folder: Path, change: Callable[[Any], object], raws: list[str] = []) -> Path:  # noqa: B006
    document = sample("langgraph-2025-08-22.json")
    change(document)
    return _written(folder, "langgraph-2025-08-22.json", as_text(document, raws))


def _mlflow(folder: Path, change: Callable[[Any], object], spans_text: bool = False) -> Path:
    row = mlflow_records()[0]
    change(row["spans"])
    if spans_text:  # as a frame saved to CSV or Parquet holds them
        row["spans"] = json.dumps(row["spans"]).replace('"@@deep@@"', DEEP_TEXT)
    return _written(folder, "traces.jsonl", as_text(row, []))


def _phoenix(folder: Path, change: Callable[[Any], object]) -> Path:
    rows = phoenix_rows("OPENAI_trace.json").astype({"start_time": str, "end_time": str})
    records = rows.to_dict("records")
    change(records[1])
    text = "\n".join(as_text(r, []) for r in records).replace('"@@deep@@"', DEEP_TEXT)
    return _written(folder, "spans.jsonl", text)


def _phoenix_parquet(folder: Path, start: pd.Timestamp) -> Path:
    frame = phoenix_rows("OPENAI_trace.json")
    frame["start_time"] = frame["start_time"].astype("datetime64[us, UTC]")
    frame.loc[1, "start_time"] = start
    path = folder / "spans.parquet"
    frame.to_parquet(path)
    return path


DEEP_TEXT = deep_text("deep object")


def _deep(target: dict[str, Any], key: str) -> None:
    target[key] = "@@raw0@@"


def _set(target: Any, key: Any, value: Any) -> None:
    target[key] = value


NUMBER_FOR_OBJECT = [
    pytest.param(
        read_otlp,
        lambda d: _any_agent(d, lambda doc: _set(doc["spans"][1], "status", 3)),
        "OPENAI_trace.json, item 1",
        "status",
        id="otlp-sdk-status",
    ),
    pytest.param(
        read_otlp,
        lambda d: _otlp_json(d, lambda span: _set(span, "attributes", [5])),
        "trace.json, span 0",
        "attributes[0]",
        id="otlp-json-attribute",
    ),
    pytest.param(
        read_langfuse,
        lambda d: _langfuse(d, lambda doc: _set(doc, "observations", 7)),
        "langgraph-2025-08-22.json",
        "observations",
        id="langfuse-observations",
    ),
    pytest.param(
        read_mlflow,
        lambda d: _mlflow(d, lambda spans: _set(spans[1], "attributes", 3)),
        "traces.jsonl row 0, span 1",
        "attributes",
        id="mlflow-attributes",
    ),
    pytest.param(
        read_openinference,
        lambda d: _phoenix(
            d, lambda row: _set(row, "events", [{"name": "exception", "attributes": 3}])
        ),
        "spans.jsonl row 1",
        "events.attributes",
        id="openinference-event-attributes",
    ),
]
AFTER_2262 = [
    pytest.param(
        read_otlp,
        lambda d: _otlp_json(d, lambda span: _set(span, "startTimeUnixNano", str(YEAR_2300_NS))),
        "trace.json, span 0",
        "startTimeUnixNano",
        id="otlp-json-nanoseconds",
    ),
    pytest.param(
        read_otlp,
        lambda d: _any_agent(d, lambda doc: _set(doc["spans"][2], "end_time", YEAR_2300_NS)),
        "OPENAI_trace.json, item 2",
        "end_time",
        id="otlp-sdk-nanoseconds",
    ),
    pytest.param(
        read_langfuse,
        lambda d: _langfuse(
            d, lambda doc: _set(doc["observations"][3], "startTime", "2300-01-01T00:00:00Z")
        ),
        "langgraph-2025-08-22.json, observations, item 3",
        "startTime",
        id="langfuse-iso",
    ),
    pytest.param(
        read_mlflow,
        lambda d: _mlflow(d, lambda spans: _set(spans[0], "start_time_unix_nano", YEAR_2300_NS)),
        "traces.jsonl row 0, span 0",
        "start_time_unix_nano",
        id="mlflow-nanoseconds",
    ),
    pytest.param(
        read_openinference,
        lambda d: _phoenix_parquet(d, pd.Timestamp("2300-01-01", tz="UTC")),
        "spans.parquet row 1",
        "start_time",
        id="openinference-parquet-datetime",
    ),
]
INFINITE = [
    pytest.param(
        read_otlp,
        lambda d: _any_agent(d, lambda doc: _set(doc["spans"][0], "start_time", float("inf"))),
        "OPENAI_trace.json, item 0",
        "start_time",
        id="otlp-sdk",
    ),
    pytest.param(
        read_langfuse,
        lambda d: _langfuse(d, lambda doc: _set(doc["observations"][0], "endTime", float("inf"))),
        "langgraph-2025-08-22.json, observations, item 0",
        "endTime",
        id="langfuse",
    ),
    pytest.param(
        read_mlflow,
        lambda d: _mlflow(d, lambda spans: _set(spans[2], "end_time_unix_nano", float("inf"))),
        "traces.jsonl row 0, span 2",
        "end_time_unix_nano",
        id="mlflow",
    ),
    pytest.param(
        read_openinference,
        lambda d: _phoenix(d, lambda row: _set(row, "end_time", float("inf"))),
        "spans.jsonl row 1",
        "end_time",
        id="openinference",
    ),
]
TOO_DEEP = [
    pytest.param(
        read_otlp,
        lambda d: _any_agent(
            d, lambda doc: _deep(doc["spans"][3]["attributes"], "deep"), [DEEP_TEXT]
        ),
        "OPENAI_trace.json",
        "spans[3].attributes.deep",
        id="otlp-file",
    ),
    pytest.param(
        read_langfuse,
        lambda d: _langfuse(d, lambda doc: _deep(doc["observations"][2], "input"), [DEEP_TEXT]),
        "langgraph-2025-08-22.json",
        "observations[2].input",
        id="langfuse-file",
    ),
    pytest.param(
        read_mlflow,
        lambda d: _mlflow(
            d, lambda spans: _set(spans[1]["attributes"], "deep", "@@deep@@"), spans_text=True
        ),
        "traces.jsonl row 0",
        "spans[1].attributes.deep",
        id="mlflow-spans-text",
    ),
    pytest.param(
        read_openinference,
        lambda d: _phoenix(d, lambda row: _set(row, "attributes.deep", "@@deep@@")),
        "spans.jsonl line 2",
        "attributes.deep",
        id="openinference-json-lines",
    ),
]


@pytest.mark.parametrize(
    ("read", "make", "where", "field"), [*NUMBER_FOR_OBJECT, *AFTER_2262, *INFINITE]
)
def test_defects_raise_a_format_error_naming_file_record_and_field(
    folder: Path, read: Reader, make: Case, where: str, field: str
) -> None:
    source = make(folder)
    with pytest.raises(TraceFormatError) as caught:
        read(source)
    message = str(caught.value)
    assert message.startswith(f"{where}: ") and f"{field!r}" in message
    assert (caught.value.source, caught.value.field) == (where, field)


def test_timestamp_messages_say_what_is_accepted(folder: Path) -> None:
    with pytest.raises(TraceFormatError, match=r"outside .* \(1677-09-21 to 2262-04-11"):
        read_otlp(_any_agent(folder, lambda doc: _set(doc["spans"][2], "end_time", 1e300)))
    for text in ("now", "today"):  # pandas would read these as the current time

        def change(doc: Any, text: str = text) -> None:
            _set(doc["spans"][2], "end_time", text)

        with pytest.raises(TraceFormatError, match=f"'end_time' = '{text}' is not an ISO-8601"):
            read_otlp(_any_agent(folder, change))


@pytest.mark.parametrize(("read", "make", "where", "field"), TOO_DEEP)
def test_deep_nesting_raises_a_format_error_naming_file_and_field(
    folder: Path, read: Reader, make: Case, where: str, field: str
) -> None:
    source = make(folder)
    with pytest.raises(TraceFormatError, match="more than 100 levels deep") as caught:
        read(source)
    assert str(caught.value).startswith(f"{where}: field '{field}")
    assert caught.value.source == where and str(caught.value.field).startswith(field)


@pytest.mark.parametrize("kind", ["deep list", "long number"])
def test_python_objects_are_checked_like_files(kind: str) -> None:
    document = {"spans": [{"context": {"trace_id": deep_python(kind)}}]}
    with pytest.raises(TraceFormatError, match=r"^input: field 'spans\[0\]\.context\.trace_id"):
        read_otlp(document)
    cyclic: dict[str, Any] = {"spans": []}
    cyclic["spans"].append(cyclic)
    with pytest.raises(TraceFormatError, match="more than 100 levels deep"):
        read_otlp(cyclic)
