"""The shared span-tree rules (importers/_core.py), driven through hand-made OTLP JSON.

Each messy case of real exports (issue 7, point 5) has its own ``pytest.param``; the rule
tests cover plan roots, agent ids, goal types, the outcome order and tool nesting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pytest

import metalearn.importers
from metalearn import HistoryStore
from metalearn.importers import (
    ImportResult,
    ScoreRule,
    Span,
    Trace,
    TraceImportError,
    read_otlp,
)

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in nanoseconds
MS = 1_000_000
TRACE = "0af7651916cd43dd8448eb211c80319c"


def span(
    span_id: str,
    parent: str | None = None,
    *,
    name: str = "",
    start: int = 0,
    end: int | None = 100,
    status: Any = None,
    trace: str = TRACE,
    **attributes: Any,
) -> dict[str, Any]:
    """One OTLP JSON span; times in milliseconds after T0, attributes as keyword args."""
    raw: dict[str, Any] = {
        "traceId": trace,
        "spanId": span_id,
        "name": name,
        "startTimeUnixNano": str(T0 + start * MS),
        "attributes": [
            {"key": key.replace("__", "."), "value": {"stringValue": str(value)}}
            for key, value in attributes.items()
        ],
    }
    if parent is not None:
        raw["parentSpanId"] = parent
    if end is not None:
        raw["endTimeUnixNano"] = str(T0 + end * MS)
    if status is not None:
        raw["status"] = {"code": status}
    return raw


def agent(span_id: str, parent: str | None = None, **kw: Any) -> dict[str, Any]:
    kw.setdefault("end", 1000)
    return span(span_id, parent, gen_ai__operation__name="invoke_agent", **kw)


def tool(span_id: str, name: str, parent: str | None = "a1", **kw: Any) -> dict[str, Any]:
    return span(
        span_id,
        parent,
        name=f"execute_tool {name}",
        gen_ai__operation__name="execute_tool",
        gen_ai__tool__name=name,
        **kw,
    )


def otlp(*spans: dict[str, Any], service: str = "support-bot") -> dict[str, Any]:
    return hosts({service: list(spans)})


def hosts(spans_by_host: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """One resourceSpans block per host (service.name), as a Collector would write them."""
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": host}}]
                },
                "scopeSpans": [{"scope": {"name": "test"}, "spans": spans}],
            }
            for host, spans in spans_by_host.items()
        ]
    }


def stored(result: ImportResult) -> None:
    """The result imports into a store with no rejection."""
    with HistoryStore("sqlite://") as store:
        report = store.import_frames(result.plans, result.steps, on_error="skip")
        assert report.rejected == 0, report.rejections.to_dict("records")
        assert report.imported == len(result.plans)


def steps_of(result: ImportResult) -> list[tuple[str, str, float]]:
    return list(result.steps[["tool", "status", "duration_ms"]].itertuples(index=False))


# -- messy real data, one case each ----------------------------------------------------


@dataclass(frozen=True)
class Expected:
    tools: list[str] = field(default_factory=list)
    statuses: list[str] | None = None
    durations: list[float] | None = None
    plan_status: str | None = "succeeded"
    rule: str | None = "root_status"
    incomplete: bool = False
    skipped: str | None = None


ORDERED = [
    agent("a1"),
    tool("b1", "search", start=100, end=200),
    tool("b2", "fetch", start=300, end=450),
]


MESSY = [
    pytest.param(
        otlp(*reversed(ORDERED)),
        Expected(["search", "fetch"], durations=[100.0, 150.0]),
        id="children-before-parents",
    ),
    pytest.param(
        otlp(ORDERED[2], ORDERED[0], ORDERED[1]),
        Expected(["search", "fetch"]),
        id="unordered-spans",
    ),
    pytest.param(
        hosts({"a": [*ORDERED, ORDERED[1]], "b": [ORDERED[0], ORDERED[2]]}),
        Expected(["search", "fetch"], durations=[100.0, 150.0]),
        id="duplicate-spans",
    ),
    pytest.param(
        otlp(
            agent("a1"),
            tool("b1", "search", start=100, end=None),
            tool("b1", "search", start=100, end=180),
        ),
        Expected(["search"], durations=[80.0]),
        id="duplicate-keeps-the-copy-with-an-end",
    ),
    pytest.param(
        otlp(
            agent("a1"),
            tool("c3", "get_pun", start=100, end=150),
            tool("c1", "get_dad_joke", start=100, end=150),
            tool("c2", "get_one_liner", start=100, end=120),
        ),
        Expected(["get_one_liner", "get_dad_joke", "get_pun"]),
        id="parallel-tools-equal-starts",
    ),
    pytest.param(
        hosts(
            {
                "host-a": [agent("a1"), tool("b1", "lookup", start=100, end=300)],
                "host-b": [tool("b2", "lookup_server", "b1", start=-4900, end=-4750)],
                "host-a2": [tool("b3", "after", start=600, end=700)],
            }
        ),
        Expected(["lookup", "after"], durations=[200.0, 100.0]),
        id="clock-skew-child-starts-before-parent",
    ),
    pytest.param(
        otlp(agent("a1", end=1000), tool("b1", "search", start=500, end=400)),
        Expected(["search"], durations=[0.0]),
        id="negative-duration-clamped",
    ),
    pytest.param(
        otlp(
            agent("a1"),
            tool("b1", "search", start=100, end=None),
            tool("b2", "fetch", start=300, end=400),
        ),
        Expected(
            ["search", "fetch"],
            durations=[float("nan"), 100.0],
            plan_status="failed",
            rule="incomplete",
            incomplete=True,
        ),
        id="missing-end-time",
    ),
    pytest.param(
        otlp(agent("a1", end=None), tool("b1", "search", start=100, end=200)),
        Expected(plan_status=None, rule=None, incomplete=True, skipped="still running"),
        id="root-still-running",
    ),
    pytest.param(
        otlp(agent("a1", "ff99"), tool("b1", "search", start=100, end=200)),
        Expected(plan_status=None, rule=None, incomplete=True, skipped="no root span"),
        id="rootless",
    ),
    *(
        pytest.param(
            otlp(
                agent("a1"),
                tool("b1", "search", status=code),
                tool("b2", "fetch", start=200, end=300),
            ),
            Expected(["search", "fetch"], ["error", "ok"]),
            id=f"status-{code}",
        )
        for code in (2, "2", "STATUS_CODE_ERROR", "ERROR", "error")
    ),
    pytest.param(
        otlp(agent("a1", status="STATUS_CODE_ERROR"), tool("b1", "search", status=1)),
        Expected(["search"], ["ok"], plan_status="failed"),
        id="root-status-error",
    ),
]


def _as_list(values: pd.Series) -> list[Any]:
    return [None if isinstance(v, float) and math.isnan(v) else v for v in values]


@pytest.mark.parametrize(("document", "expected"), MESSY)
def test_messy_data_is_handled(document: dict[str, Any], expected: Expected) -> None:
    result = read_otlp(document)
    (row,) = result.report.itertuples(index=False)
    assert result.steps["tool"].tolist() == expected.tools
    if expected.statuses is not None:
        assert result.steps["status"].tolist() == expected.statuses
    if expected.durations is not None:
        durations = result.steps["duration_ms"].tolist()
        assert _as_list(pd.Series(durations)) == _as_list(pd.Series(expected.durations))
    assert (row.incomplete, row.trace_id) == (expected.incomplete, TRACE)
    if expected.skipped is None:
        assert result.plans["status"].tolist() == [expected.plan_status]
        assert (row.status, row.outcome_rule, row.plan_id) == (
            expected.plan_status,
            expected.rule,
            TRACE,
        )
        assert pd.isna(row.skipped_reason)
    else:
        assert result.plans.empty and pd.isna(row.plan_id)
        assert row.skipped_reason.startswith(expected.skipped)
    stored(result)


def test_incomplete_and_rootless_traces_are_never_succeeded() -> None:
    outcome = lambda trace, root: True  # noqa: E731 - a user callable that says "succeeded"
    incomplete = read_otlp(otlp(agent("a1"), tool("b1", "search", end=None)), outcome=outcome)
    assert incomplete.plans["status"].tolist() == ["failed"]
    assert incomplete.plans["error"].iloc[0] == (
        "incomplete trace: span b1 ('execute_tool search') has no end time"
    )
    rootless = read_otlp(otlp(agent("a1", "ff99"), tool("b1", "search")), outcome=outcome)
    assert rootless.plans.empty and rootless.skipped == 1


def test_negative_plan_duration_is_clamped_to_its_start() -> None:
    result = read_otlp(otlp(agent("a1", start=500, end=400), tool("b1", "search", start=450)))
    assert result.plans["finished_at"].tolist() == result.plans["started_at"].tolist()
    stored(result)


def test_skew_alignment_is_per_host_and_keeps_raw_durations() -> None:
    document = hosts(
        {
            "host-a": [
                agent("a1"),
                tool("b1", "lookup", start=100, end=300),
                tool("b4", "after", start=600, end=700),
            ],
            "host-b": [tool("b2", "lookup_server", "b1", start=-4900, end=-4750)],
        }
    )
    result = read_otlp(document, flatten=True)
    assert steps_of(result) == [
        ("lookup", "ok", 200.0),
        ("lookup_server", "ok", 150.0),
        ("after", "ok", 100.0),
    ]


# -- plans: roots, agents, goal types ----------------------------------------------------


def test_missing_parent_spans_hang_under_the_root() -> None:
    document = otlp(agent("a1"), tool("b1", "search", parent="dead01"))
    result = read_otlp(document)
    assert result.steps["tool"].tolist() == ["search"]
    assert result.report["incomplete"].tolist() == [False]


def test_several_top_level_spans_make_the_trace_the_root() -> None:
    document = otlp(
        span("c1", name="prepare", start=0, end=50),
        tool("b1", "search", parent=None, start=60, end=90),
        span("c2", name="answer", start=100, end=400, status=2),
    )
    result = read_otlp(document)
    plan = result.plans.iloc[0]
    assert (plan.status, plan.agent_id, plan.finished_at - plan.started_at) == (
        "failed",
        "support-bot",
        pd.Timedelta(milliseconds=400),
    )


def test_outermost_agent_is_the_root_and_nested_agents_stay_inside() -> None:
    document = otlp(
        span("c0", name="request", start=0, end=2000),
        agent("a1", "c0", start=10, end=1900, gen_ai__agent__name="planner"),
        agent("a2", "a1", start=100, end=900, gen_ai__agent__name="researcher"),
        tool("b1", "search", parent="a2", start=200, end=300),
        tool("b2", "write", parent="a1", start=1000, end=1100),
    )
    result = read_otlp(document)
    plan = result.plans.iloc[0]
    assert (plan.plan_id, plan.agent_id) == (TRACE, "planner")
    assert plan.started_at == pd.Timestamp(T0 + 10 * MS, tz="UTC")
    assert result.steps["tool"].tolist() == ["search", "write"]


def test_per_agent_makes_each_agent_subtree_a_plan() -> None:
    document = otlp(
        agent("a1", gen_ai__agent__name="planner"),
        agent("a2", "a1", start=100, end=900, gen_ai__agent__name="researcher"),
        tool("b1", "search", parent="a2", start=200, end=300),
        tool("b2", "write", parent="a1", start=950, end=990),
        agent("a3", "a1", start=10, end=20, gen_ai__agent__name="idle"),
    )
    result = read_otlp(document, per_agent=True)
    plans = result.plans.sort_values("plan_id")
    assert plans[["plan_id", "agent_id"]].values.tolist() == [
        [f"{TRACE}:a1", "planner"],
        [f"{TRACE}:a2", "researcher"],
    ]
    by_plan = result.steps.groupby("plan_id")["tool"].agg(list).to_dict()
    assert by_plan == {f"{TRACE}:a1": ["write"], f"{TRACE}:a2": ["search"]}
    stored(result)


def test_per_agent_without_agent_spans_is_one_plan_per_trace() -> None:
    document = otlp(span("c0", name="root", end=500), tool("b1", "search", parent="c0"))
    assert read_otlp(document, per_agent=True).plans["plan_id"].tolist() == [TRACE]


@pytest.mark.parametrize(
    ("root_attributes", "inside", "service", "expected"),
    [
        pytest.param({"gen_ai__agent__name": "planner"}, {}, "svc", "planner", id="agent-name"),
        pytest.param({"gen_ai__agent__id": "agent-7"}, {}, "svc", "agent-7", id="agent-id"),
        pytest.param({"agent__name": "oi-agent"}, {}, "svc", "oi-agent", id="openinference-name"),
        pytest.param({}, {"gen_ai__agent__name": "helper"}, "svc", "helper", id="one-agent-inside"),
        pytest.param({}, {}, "billing-svc", "billing-svc", id="service-name"),
        pytest.param({}, {}, "unknown_service:python", "invoke_agent x", id="span-name"),
    ],
)
def test_agent_id_fallbacks(
    root_attributes: dict[str, str], inside: dict[str, str], service: str, expected: str
) -> None:
    document = otlp(
        agent("a1", name="invoke_agent x", **root_attributes),
        span("a2", "a1", start=10, end=900, **inside),
        tool("b1", "search", parent="a2"),
        service=service,
    )
    assert read_otlp(document).plans["agent_id"].tolist() == [expected]


def test_goal_type_from_an_attribute_or_a_callable() -> None:
    document = otlp(agent("a1", app__goal="refund"), tool("b1", "search"))
    by_attribute = read_otlp(document, goal_type="app.goal")
    by_callable = read_otlp(document, goal_type=lambda trace, root: root.name or "none")
    missing = read_otlp(document, goal_type="no.such.attribute")
    assert by_attribute.plans["goal_type"].tolist() == ["refund"]
    assert by_callable.plans["goal_type"].tolist() == ["none"]
    assert missing.plans["goal_type"].isna().all()


# -- outcome order -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verdict", "status", "rule"),
    [
        pytest.param(True, "succeeded", "callable", id="true"),
        pytest.param("failed", "failed", "callable", id="failed-text"),
        pytest.param(None, "failed", "root_status", id="none-falls-through"),
    ],
)
def test_outcome_callable_comes_before_root_status(verdict: Any, status: str, rule: str) -> None:
    seen: list[tuple[str, str]] = []

    def outcome(trace: Trace, root: Span) -> Any:
        seen.append((trace.trace_id, root.span_id))
        return verdict

    document = otlp(agent("a1", status=2), tool("b1", "search"))
    result = read_otlp(document, outcome=outcome)
    assert (result.plans["status"].iloc[0], result.report["outcome_rule"].iloc[0]) == (status, rule)
    assert seen == [(TRACE, "a1")]


def test_outcome_callable_returning_nonsense_raises() -> None:
    document = otlp(agent("a1"), tool("b1", "search"))
    with pytest.raises(
        TraceImportError, match=r"trace '0af7\w+': the outcome callable returned 'maybe'"
    ):
        read_otlp(document, outcome=lambda trace, root: "maybe")


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        pytest.param(ScoreRule("q", at_least=0.5), 0.7, True, id="at-least"),
        pytest.param(ScoreRule("q", at_least=0.5), 0.2, False, id="below"),
        pytest.param(ScoreRule("q", at_most=0.3), 0.3, True, id="at-most-inclusive"),
        pytest.param(ScoreRule("q", at_least=0.2, at_most=0.4), 0.5, False, id="band"),
        pytest.param(ScoreRule("q", labels={"good": True, "bad": False}), "bad", False, id="label"),
        pytest.param(
            ScoreRule("q", labels={True: True, False: False}), False, False, id="bool-key"
        ),
        pytest.param(ScoreRule("q"), True, True, id="bool-value"),
        pytest.param(ScoreRule("q"), 0.9, None, id="number-without-bounds"),
        pytest.param(ScoreRule("q", labels={"good": True}), "meh", None, id="unknown-label"),
        pytest.param(ScoreRule("q", at_least=0.5), float("nan"), None, id="nan"),
    ],
)
def test_score_rule_decides(rule: ScoreRule, value: Any, expected: bool | None) -> None:
    assert rule.decide(value) is expected


def test_tool_error_rules() -> None:
    exception_event = {
        "name": "exception",
        "attributes": [{"key": "exception.message", "value": {"stringValue": "boom"}}],
    }
    with_event = tool("b3", "write", start=500, end=600)
    with_event["events"] = [exception_event]
    document = otlp(
        agent("a1"),
        tool("b1", "search", start=100, end=200, error__type="TimeoutError"),
        tool("b2", "fetch", start=300, end=400) | {"status": {"code": 2, "message": "HTTP 500"}},
        with_event,
        tool("b4", "read", start=700, end=800, status="STATUS_CODE_OK"),
    )
    result = read_otlp(document)
    assert result.steps["status"].tolist() == ["error", "error", "error", "ok"]
    assert _as_list(result.steps["error"]) == ["TimeoutError", "HTTP 500", "boom", None]
    assert result.plans["status"].tolist() == ["succeeded"]


def test_nested_tool_chains_count_once_unless_flattened() -> None:
    document = otlp(
        agent("a1"),
        tool("b1", "search", start=100, end=400),
        span("b2", "b1", name="mcp.client search", start=110, end=390, tool__name="search"),
        span("b3", "b2", name="mcp.server search", start=120, end=380, tool__name="search"),
        tool("b4", "fetch", start=500, end=600),
    )
    assert read_otlp(document).steps["tool"].tolist() == ["search", "fetch"]
    flat = read_otlp(document, flatten=True)
    assert flat.steps["tool"].tolist() == ["search", "search", "search", "fetch"]
    assert flat.report["steps"].tolist() == [4]
    stored(flat)


def test_trace_without_tool_spans_is_skipped() -> None:
    chat = span("l1", "a1", name="chat", gen_ai__operation__name="chat")
    result = read_otlp(otlp(agent("a1"), chat))
    assert result.report["skipped_reason"].tolist() == ["no tool spans"]


def test_every_trace_is_accounted_for() -> None:
    other = "1" * 32
    document = otlp(
        *ORDERED,
        agent("a1", trace=other, end=None),
        tool("b1", "search", trace=other),
    )
    result = read_otlp(document)
    assert result.report["trace_id"].tolist() == [TRACE, other]
    assert result.report["plan_id"].isna().tolist() == [False, True]
    assert repr(result) == "<ImportResult plans=1 steps=2 skipped=1>"
    assert "<table" in result._repr_html_()


def test_frames_have_the_interchange_columns_and_types() -> None:
    result = read_otlp(otlp(*ORDERED))
    assert list(result.plans.columns) == [
        "plan_id",
        "agent_id",
        "goal_type",
        "status",
        "started_at",
        "finished_at",
        "reward",
        "error",
        "priority",
    ]
    assert list(result.steps.columns) == [
        "plan_id",
        "step_index",
        "tool",
        "status",
        "duration_ms",
        "error",
    ]
    assert str(result.plans["started_at"].dtype) == "datetime64[ns, UTC]"
    assert result.steps["step_index"].tolist() == [0, 1]
    empty = read_otlp([])
    assert list(empty.plans.columns) == list(result.plans.columns)
    stored(empty)


def test_public_names_are_exported_sorted_and_documented() -> None:
    module = metalearn.importers
    public = {name for name in vars(module) if not name.startswith("_")}
    assert module.__all__ == sorted(module.__all__)
    assert set(module.__all__) == public
    for name in module.__all__:
        assert getattr(module, name).__doc__, f"{name} has no docstring"
