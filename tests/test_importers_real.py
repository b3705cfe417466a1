"""Every real trace file in data/traces imports as a person reading it sees it.

The expectations below were written by hand from the files and their SOURCE.md: the
any-agent traces each run one task through a framework (one ``invoke_agent [any_agent]``
root with status unset, tool spans all ok); the Langfuse downloads hold one trace each,
no observation marked as an error; the OTLP example is a single server span whose parent
is not in the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from metalearn import HistoryStore, MetaLearningService
from metalearn.importers import ImportResult, ScoreRule, read_langfuse, read_otlp
from tests.conftest import TRACES

ANY_AGENT = TRACES / "any_agent"
LANGFUSE = TRACES / "langfuse"


@dataclass(frozen=True)
class Seen:
    """What the file shows: its trace, the tools in order, the outcome, the agent."""

    trace_id: str
    tools: tuple[str, ...]
    agent_id: str
    status: str = "succeeded"


TIME_AND_FILE = ("get_current_time", "write_file")
ANY_AGENT_FILES = {
    "AGNO_trace.json": Seen("1de0532b350588ff152b1edf6bf358b3", TIME_AND_FILE, "any_agent"),
    "GOOGLE_trace.json": Seen(
        "cdbd7b99cef221c28dd6d03c27d09b4c", (*TIME_AND_FILE, "final_output"), "any_agent"
    ),
    "LANGCHAIN_trace.json": Seen("572318454595034fe5076610d6400542", TIME_AND_FILE, "any_agent"),
    "LLAMA_INDEX_trace.json": Seen(
        "89c41176422c506985d55a0d2d2091db", (*TIME_AND_FILE, "final_output"), "any_agent"
    ),
    "OPENAI_trace.json": Seen("4bedea77bb33b9c5f280371eae21ea97", TIME_AND_FILE, "any_agent"),
    "SMOLAGENTS_trace.json": Seen(
        "9135313a4e40fe254d48742d230ea040", (*TIME_AND_FILE, "final_answer"), "any_agent"
    ),
    "TINYAGENT_trace.json": Seen(
        "9707d5fd6d4a546d47757044c6127e04", (*TIME_AND_FILE, "final_answer"), "any_agent"
    ),
}
LANGFUSE_FILES = {
    "google-adk-2025-08-28.json": Seen(
        "b82a0bdc1994fc5d1c8576ca032543f7", ("say_hello",), "agent_run [hello_agent]"
    ),
    "langgraph-2025-08-22.json": Seen(
        "e1fde3efec57ce8a69bafd3fb928a7eb", ("Web-Search",), "LangGraph"
    ),
    "microsoft-agent-2025-10-14.json": Seen(
        "e3a407423619277a2dcef3c13dc89982",
        ("get_weather",),
        "99981f6a-abd1-4d09-9fba-00e2ab172193",
    ),
    "openai-agents-2025-09-30.json": Seen(
        "fee618f96dc31e0ca38b2f7b26eb8b29", ("get_weather",), "Agent workflow"
    ),
    "pydantic-ai-tools-2025-12-04.json": Seen(
        "7a38edd8123db47ad8dcb8aa4c5e3926",
        ("get_pun_suggestion", "get_dad_joke_suggestion", "get_one_liner_suggestion"),
        "run_joke_generator",
    ),
}
PLAN_FILES = [
    *(pytest.param(read_otlp, ANY_AGENT / n, seen, id=n) for n, seen in ANY_AGENT_FILES.items()),
    *(pytest.param(read_langfuse, LANGFUSE / n, seen, id=n) for n, seen in LANGFUSE_FILES.items()),
]


def test_every_real_file_is_covered() -> None:
    on_disk = {p.name for p in TRACES.glob("*/*.json")}
    covered = {*ANY_AGENT_FILES, *LANGFUSE_FILES, "openai-assistants-2024-05-29.json", "trace.json"}
    assert on_disk == covered


@pytest.mark.parametrize(("read", "path", "seen"), PLAN_FILES)
def test_real_trace_imports_as_one_plan(read: Any, path: Path, seen: Seen) -> None:
    result: ImportResult = read(path)
    (plan,) = result.plans.itertuples(index=False)
    assert (plan.plan_id, plan.agent_id, plan.status) == (seen.trace_id, seen.agent_id, seen.status)
    assert tuple(result.steps["tool"]) == seen.tools
    assert set(result.steps["status"]) == {"ok"}
    assert result.steps["duration_ms"].notna().all()
    (row,) = result.report.itertuples(index=False)
    assert (row.outcome_rule, row.incomplete, row.steps) == ("root_status", False, len(seen.tools))


def test_any_agent_times_come_from_the_span_timestamps() -> None:
    result = read_otlp(ANY_AGENT / "AGNO_trace.json")
    plan = result.plans.iloc[0]
    assert plan.started_at == pd.Timestamp("2025-09-16T12:43:14.771631Z")
    assert plan.finished_at == pd.Timestamp("2025-09-16T12:43:19.652409Z")
    assert result.steps["duration_ms"].tolist() == pytest.approx([3.165, 0.809])


def test_any_agent_google_trace_keeps_tools_whose_parent_spans_were_not_exported() -> None:
    # The ADK's own spans are missing from the file: the tool and LLM spans point at parents
    # (0xf0c22a1083ed1935 and others) that are not in it. They still belong to the run.
    result = read_otlp(ANY_AGENT / "GOOGLE_trace.json")
    assert result.report["incomplete"].tolist() == [False]
    assert result.plans["status"].tolist() == ["succeeded"]


def test_langfuse_parallel_tools_keep_their_order() -> None:
    # "running 3 tools": get_pun_suggestion starts at .416, the other two at .417 and all
    # end at .422, so the tie is broken by span id (02d7... before 199e...).
    result = read_langfuse(LANGFUSE / "pydantic-ai-tools-2025-12-04.json")
    assert result.steps["duration_ms"].tolist() == [6.0, 5.0, 5.0]


def test_otlp_example_has_no_root_and_is_skipped() -> None:
    result = read_otlp(TRACES / "otlp" / "trace.json")
    assert result.plans.empty and result.steps.empty
    (row,) = result.report.itertuples(index=False)
    assert row.trace_id == "5b8efff798038103d269b633813fc60c"
    assert row.skipped_reason == (
        "no root span: every span has a parent, and the parent eee19b7ec3c1b173 of span "
        "eee19b7ec3c1b174 is not in the trace"
    )


def test_langfuse_assistants_trace_without_tools_is_skipped_and_flagged_incomplete() -> None:
    # Three top-level spans, no tool call, and the GENERATION under get_response has no end.
    result = read_langfuse(LANGFUSE / "openai-assistants-2024-05-29.json")
    assert result.plans.empty
    assert result.report[["trace_id", "incomplete", "skipped_reason"]].values.tolist() == [
        ["b3b7b128-5664-4f42-9fab-31999da9e2f1", True, "no tool spans"]
    ]


@pytest.mark.parametrize(
    ("name", "status", "reward"),
    [
        pytest.param("google-adk-2025-08-28.json", "succeeded", 0.0, id="google-adk"),
        pytest.param("langgraph-2025-08-22.json", "succeeded", 0.1, id="langgraph"),
        pytest.param("microsoft-agent-2025-10-14.json", "failed", 1.0, id="microsoft-agent"),
        pytest.param("openai-agents-2025-09-30.json", "succeeded", 0.0, id="openai-agents"),
    ],
)
def test_langfuse_scores_decide_the_outcome(name: str, status: str, reward: float) -> None:
    result = read_langfuse(LANGFUSE / name, score=ScoreRule("hallucination", at_most=0.5))
    plan = result.plans.iloc[0]
    assert (plan.status, float(plan.reward)) == (status, reward)
    assert result.report["outcome_rule"].tolist() == ["score"]


def test_langfuse_trace_metadata_reaches_goal_type_and_outcome() -> None:
    # The pydantic-ai trace has no scores; its verdict sits in trace metadata.evaluation.
    def judged_good(trace: Any, root: Any) -> bool | None:
        quality = trace.attributes.get("evaluation.quality")
        return None if quality is None else quality == "good"

    path = LANGFUSE / "pydantic-ai-tools-2025-12-04.json"
    result = read_langfuse(path, goal_type="langfuse.trace.name", outcome=judged_good)
    assert result.plans[["goal_type", "status"]].values.tolist() == [
        ["joke-generator", "succeeded"]
    ]
    assert result.report["outcome_rule"].tolist() == ["callable"]
    no_score = read_langfuse(path, score=ScoreRule("hallucination", at_most=0.5))
    assert no_score.report["outcome_rule"].tolist() == ["root_status"]


def test_per_agent_plans_on_real_files() -> None:
    agents = read_langfuse(LANGFUSE / "openai-agents-2025-09-30.json", per_agent=True)
    assert agents.plans[["plan_id", "agent_id"]].values.tolist() == [
        ["fee618f96dc31e0ca38b2f7b26eb8b29:d950b668796240b5", "Hello world"]
    ]
    jokes = read_langfuse(LANGFUSE / "pydantic-ai-tools-2025-12-04.json", per_agent=True)
    assert jokes.plans[["plan_id", "agent_id"]].values.tolist() == [
        ["7a38edd8123db47ad8dcb8aa4c5e3926:5b5c52d029f28206", "joke_agent"]
    ]
    assert len(jokes.steps) == 3


def test_all_real_files_import_into_a_store_without_rejections() -> None:
    results = [
        read_otlp(sorted(ANY_AGENT.glob("*.json"))),
        read_otlp(TRACES / "otlp" / "trace.json"),
    ]
    results.append(read_langfuse(sorted(LANGFUSE.glob("*.json"))))
    plans = pd.concat([r.plans for r in results], ignore_index=True)
    steps = pd.concat([r.steps for r in results], ignore_index=True)
    with HistoryStore("sqlite://") as store:
        report = store.import_frames(plans, steps)
        assert (report.imported, report.rejected, report.steps) == (12, 0, 25)
        stored_plans, stored_steps = store.plans_after(0, limit=None).to_pandas()
        with MetaLearningService(store, max_workers=1) as service:
            analysis = service.analyze_execution_patterns_sync(time_range_days=None)
            patterns = service.extract_successful_patterns_sync(
                time_range_days=None, min_support=2, max_length=2
            )
    assert stored_plans["status"].value_counts().to_dict() == {"succeeded": 12}
    assert stored_steps.groupby("tool").size()["write_file"] == 7
    assert (analysis.n_plans, analysis.success_rate) == (12, 1.0)
    tools = analysis.by_tool.set_index("tool")
    assert (tools.loc["write_file", "calls"], tools.loc["get_current_time", "plans"]) == (7, 7)
    # every plan succeeded, so nothing can be significant, yet supports are counted
    pairs = patterns.patterns.set_index("pattern_text")
    assert pairs.loc["get_current_time → write_file", "plans"] == 7
    assert not patterns.patterns["significant"].any()
    assert (patterns.patterns["p_value"] == 1.0).all()
