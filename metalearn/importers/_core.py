"""The span-tree core: spans of any trace format in, plans and steps out.

Each reader turns its format into :class:`Span` records (and, per trace, a
:class:`TraceInfo` with trace-level attributes and scores); :func:`assemble` groups them
into traces and applies one set of rules, so every format imports the same way. The rules
are documented in the package docstring (:mod:`metalearn.importers`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from metalearn._interchange import PLAN_COLUMNS, STEP_COLUMNS
from metalearn._types import MAX_NAME_LENGTH
from metalearn.importers._errors import TraceImportError
from metalearn.importers._parse import present, text

__all__ = [
    "ImportResult",
    "Options",
    "ScoreRule",
    "Span",
    "Trace",
    "TraceInfo",
    "assemble",
    "pick_scores",
    "role",
]

_AGENT_NAME_KEYS = ("gen_ai.agent.name", "gen_ai.agent.id", "agent.name")
_TOOL_NAME_KEYS = ("gen_ai.tool.name", "tool.name")
_NOT_AGENT_OR_TOOL = frozenset(
    {"LLM", "GENERATION", "CHAT_MODEL", "EMBEDDING", "RETRIEVER", "RERANKER", "EVENT"}
    | {"EVALUATOR", "GUARDRAIL", "PARSER", "MEMORY", "PROMPT"}
)
# The interchange columns (one definition, in metalearn._interchange) and how each is built
# here: text unless named below; "ns" is epoch nanoseconds turned into UTC datetimes.
_NOT_TEXT = {
    "started_at": "ns",
    "finished_at": "ns",
    "reward": "float64",
    "priority": "int64",
    "step_index": "int64",
    "duration_ms": "float64",
}
_PLAN_DTYPES = {name: _NOT_TEXT.get(name, "str") for name in PLAN_COLUMNS}
_STEP_DTYPES = {name: _NOT_TEXT.get(name, "str") for name in STEP_COLUMNS}
_REPORT_DTYPES = {
    "trace_id": "str",
    "plan_id": "str",
    "status": "str",
    "outcome_rule": "str",
    "incomplete": "bool",
    "steps": "int64",
    "skipped_reason": "str",
}


@dataclass(frozen=True, slots=True)
class Span:
    """One span (or observation) of a trace, in the form every reader produces.

    ``kind`` is the format's own span kind in upper case (``"AGENT"``, ``"TOOL"``,
    ``"LLM"``, ``"GENERATION"``...; empty when the format has none). ``start_ns`` and
    ``end_ns`` are nanoseconds since the epoch (``None`` when missing); ``status`` is
    ``"OK"``, ``"ERROR"`` or ``"UNSET"``; ``exception`` is the message of an ``exception``
    event (``""`` for an event without a message, ``None`` when there is none);
    ``resource`` holds the resource attributes (``service.name``, host...).

    >>> span = Span("t1", "s1", name="execute_tool search",
    ...             attributes={"gen_ai.operation.name": "execute_tool"})
    >>> role(span), span.status
    ('tool', 'UNSET')
    """

    trace_id: str
    span_id: str
    parent_id: str | None = None
    name: str = ""
    kind: str = ""
    start_ns: int | None = None
    end_ns: int | None = None
    status: str = "UNSET"
    status_message: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    resource: Mapping[str, Any] = field(default_factory=dict)
    exception: str | None = None


@dataclass(frozen=True, slots=True)
class TraceInfo:
    """What a format knows about a trace beyond its spans (all optional)."""

    name: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    scores: Mapping[str, Any] = field(default_factory=dict)
    in_progress: bool = False


@dataclass(frozen=True, slots=True)
class Trace:
    """A trace as the outcome and goal-type callables see it.

    ``spans`` are deduplicated, in the order read. ``name`` and ``attributes`` are
    trace-level fields where the format has them (Langfuse trace name, metadata and tags,
    MLflow tags and metadata). ``scores`` maps a score, annotation or assessment name to its
    value (a number, a bool or a label). ``in_progress`` is true when the source says the
    trace is still running.

    >>> trace = Trace("t1", (Span("t1", "s1"),), scores={"correct": True})
    >>> trace.scores["correct"], len(trace.spans)
    (True, 1)
    """

    trace_id: str
    spans: tuple[Span, ...]
    name: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    scores: Mapping[str, Any] = field(default_factory=dict)
    in_progress: bool = False


@dataclass(frozen=True, slots=True)
class ScoreRule:
    """Decide a plan's outcome from a named score, annotation or assessment.

    A numeric value succeeds when it lies within ``at_least``/``at_most`` (either bound may
    be left out). ``labels`` maps a label (or value) to success (``True``) or failure
    (``False``); a boolean value without ``labels`` is its own verdict. A value the rule
    cannot judge, or a trace without the score, falls through to the root span's status.

    >>> ScoreRule("hallucination", at_most=0.5).decide(0.1)
    True
    >>> ScoreRule("correctness", labels={"correct": True, "incorrect": False}).decide("incorrect")
    False
    >>> ScoreRule("correctness", labels={"correct": True}).decide("unsure") is None
    True
    """

    name: str
    at_least: float | None = None
    at_most: float | None = None
    labels: Mapping[Any, bool] | None = None

    def decide(self, value: Any) -> bool | None:
        """``True`` (succeeded), ``False`` (failed) or ``None`` (this rule cannot tell)."""
        if self.labels is not None:
            for key in (value, str(value)):
                if _hashable(key) and key in self.labels:
                    return bool(self.labels[key])
        if isinstance(value, bool | np.bool_):
            return bool(value)
        if _is_number(value) and (self.at_least is not None or self.at_most is not None):
            low = self.at_least is None or float(value) >= self.at_least
            high = self.at_most is None or float(value) <= self.at_most
            return low and high
        return None


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _is_number(value: Any) -> bool:
    if isinstance(value, bool | np.bool_):
        return False
    return isinstance(value, int | float | np.integer | np.floating) and bool(np.isfinite(value))


OutcomeCallable = Callable[[Trace, Span], bool | str | None]
GoalTypeSource = str | Callable[[Trace, Span], Any] | None


@dataclass(frozen=True, slots=True)
class Options:
    """The choices every reader offers (see the readers' docstrings)."""

    per_agent: bool = False
    flatten: bool = False
    goal_type: GoalTypeSource = None
    outcome: OutcomeCallable | None = None
    score: ScoreRule | None = None


@dataclass(frozen=True)
class ImportResult:
    """Plans and steps read from traces, and what happened to every trace.

    ``plans`` and ``steps`` are in the interchange format, ready for
    ``store.import_frames(result.plans, result.steps)``. ``plans``: plan_id, agent_id,
    goal_type, status, started_at, finished_at (UTC datetimes), reward (the numeric value of
    the outcome score, when there is one), error, priority. ``steps``: plan_id, step_index,
    tool, status (``ok``/``error``), duration_ms (from the span timestamps; empty when one
    is missing), error.

    ``report`` has one row per plan, and one per trace that gave no plan: trace_id,
    plan_id (missing when skipped), status, outcome_rule (``callable``, ``score``,
    ``root_status`` or ``incomplete``: which rule decided the status), incomplete (a span
    of the trace has no end time or a missing parent), steps (how many) and
    skipped_reason (missing when imported).

    >>> from metalearn.importers import read_otlp
    >>> read_otlp([])
    <ImportResult plans=0 steps=0 skipped=0>
    """

    plans: pd.DataFrame
    steps: pd.DataFrame
    report: pd.DataFrame

    def __repr__(self) -> str:
        return (
            f"<ImportResult plans={len(self.plans)} steps={len(self.steps)} skipped={self.skipped}>"
        )

    @property
    def skipped(self) -> int:
        """How many traces (or agent subtrees) gave no plan; see ``report.skipped_reason``."""
        return int(self.report["skipped_reason"].notna().sum())

    def _repr_html_(self) -> str:
        return f"<p>{self!r}</p>" + str(self.report.to_html(index=False))


def role(span: Span) -> str:
    """``"agent"``, ``"tool"`` or ``"other"``, from the span kind and GenAI attributes."""
    kind = span.kind.upper()
    operation = text(span.attributes.get("gen_ai.operation.name")) or ""
    if kind == "AGENT" or operation == "invoke_agent":
        return "agent"
    if kind == "TOOL" or operation == "execute_tool":
        return "tool"
    if kind in _NOT_AGENT_OR_TOOL or operation:
        return "other"
    if any(present(span.attributes.get(key)) for key in _TOOL_NAME_KEYS):
        return "tool"
    if any(present(span.attributes.get(key)) for key in _AGENT_NAME_KEYS):
        return "agent"
    return "other"


def pick_scores(entries: Iterable[tuple[str, Any, bool, Any]]) -> dict[str, Any]:
    """One value per score name from ``(name, value, trace_level, order)`` entries.

    Trace-level scores beat scores on a single span; among equals the latest ``order``
    (a timestamp or a position) wins.
    """
    best: dict[str, tuple[bool, Any, Any]] = {}
    for name, value, trace_level, order in entries:
        if not present(name) or not present(value):
            continue
        rank = (trace_level, order)
        if name not in best or rank >= best[name][:2]:
            best[name] = (trace_level, order, value)
    return {name: kept[2] for name, kept in best.items()}


# -- grouping ------------------------------------------------------------------------------


def _better(kept: Span, new: Span) -> bool:
    """Whether a duplicate of a span replaces the one kept: only to gain an end time."""
    return kept.end_ns is None and new.end_ns is not None


def _group(spans: Iterable[Span], infos: Mapping[str, TraceInfo]) -> Iterator[Trace]:
    by_trace: dict[str, dict[str, Span]] = {trace_id: {} for trace_id in infos}
    for span in spans:
        kept = by_trace.setdefault(span.trace_id, {})
        if span.span_id not in kept or _better(kept[span.span_id], span):
            kept[span.span_id] = span
    for trace_id, kept in by_trace.items():
        info = infos.get(trace_id, TraceInfo())
        yield Trace(
            trace_id,
            tuple(kept.values()),
            info.name,
            info.attributes,
            info.scores,
            info.in_progress,
        )


# -- the span tree -------------------------------------------------------------------------


@dataclass
class _Tree:
    trace: Trace
    spans: dict[str, Span]
    parent: dict[str, str | None]
    children: dict[str | None, list[str]]
    orphans: list[str]
    roles: dict[str, str]

    @classmethod
    def build(cls, trace: Trace) -> _Tree:
        spans = {span.span_id: span for span in trace.spans}
        parent = {sid: s.parent_id if s.parent_id in spans else None for sid, s in spans.items()}
        _break_cycles(parent)
        orphans = [sid for sid, pid in parent.items() if pid is None and spans[sid].parent_id]
        _adopt(parent, orphans, [sid for sid, s in spans.items() if s.parent_id is None])
        children: dict[str | None, list[str]] = {}
        for sid, pid in parent.items():
            children.setdefault(pid, []).append(sid)
        roles = {sid: role(span) for sid, span in spans.items()}
        return cls(trace, spans, parent, children, orphans, roles)

    @property
    def tops(self) -> list[str]:
        return self.children.get(None, [])

    @cached_property
    def times(self) -> dict[str, tuple[int | None, int | None]]:
        return _aligned_times(self)

    def ancestors(self, sid: str) -> Iterator[str]:
        pid = self.parent[sid]
        while pid is not None:
            yield pid
            pid = self.parent[pid]

    def subtree(self, sid: str | None) -> list[str]:
        """``sid`` and everything below it, parents first; ``None`` is the whole trace."""
        order, stack = [], list(reversed(self.children.get(sid, [])))
        while stack:
            current = stack.pop()
            order.append(current)
            stack.extend(reversed(self.children.get(current, [])))
        return order if sid is None else [sid, *order]


def _break_cycles(parent: dict[str, str | None]) -> None:
    """Cut parent links that loop back (corrupt data), so every walk up ends."""
    for start in parent:
        seen = {start}
        current = start
        while (pid := parent[current]) is not None:
            if pid in seen:
                parent[current] = None
                break
            seen.add(pid)
            current = pid


def _adopt(parent: dict[str, str | None], orphans: list[str], roots: list[str]) -> None:
    """Hang spans whose parent was never exported under the trace's single root.

    Instrumentations often leave framework-internal spans out (any-agent's Google ADK
    traces do), so a missing parent alone does not make a trace incomplete.
    """
    if len(roots) == 1:
        for sid in orphans:
            parent[sid] = roots[0]


def _rootless_reason(tree: _Tree) -> str:
    sid = tree.orphans[0]
    return (
        f"no root span: every span has a parent, and the parent "
        f"{tree.spans[sid].parent_id} of span {sid} is not in the trace"
    )


def _virtual_root(tree: _Tree) -> Span:
    """The trace itself as a root over several top-level spans."""
    tops = [tree.spans[sid] for sid in tree.tops]
    starts = [s.start_ns for s in tops if s.start_ns is not None]
    ends = [s.end_ns for s in tops]
    failed = [s for s in tops if s.status == "ERROR"]
    return Span(
        tree.trace.trace_id,
        "",
        name=tree.trace.name or "trace",
        start_ns=min(starts) if starts else None,
        end_ns=None if None in ends else max(e for e in ends if e is not None),
        status="ERROR" if failed else "UNSET",
        status_message=failed[0].status_message if failed else None,
        resource=tops[0].resource,
    )


def _trace_root(tree: _Tree) -> Span:
    tops = tree.tops
    return tree.spans[tops[0]] if len(tops) == 1 else _virtual_root(tree)


# -- plans of a trace ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    """A would-be plan: its root, the span ids inside it and its tool spans."""

    plan_id: str
    root: Span
    boundary: str | None
    scope: list[str]
    tools: list[str]
    whole_trace: bool


def _outermost_agents(tree: _Tree) -> list[str]:
    return [
        sid
        for sid, kind in tree.roles.items()
        if kind == "agent" and not any(tree.roles[a] == "agent" for a in tree.ancestors(sid))
    ]


def _whole_trace(tree: _Tree) -> _Candidate:
    agents = _outermost_agents(tree)
    root = tree.spans[agents[0]] if len(agents) == 1 else _trace_root(tree)
    scope = list(tree.spans)
    tools = [sid for sid in scope if tree.roles[sid] == "tool"]
    return _Candidate(tree.trace.trace_id, root, None, scope, tools, True)


def _nearest_agent(tree: _Tree, sid: str) -> str | None:
    return next((a for a in tree.ancestors(sid) if tree.roles[a] == "agent"), None)


def _per_agent(tree: _Tree) -> list[_Candidate]:
    owned: dict[str, list[str]] = {}
    for sid, kind in tree.roles.items():
        agent = _nearest_agent(tree, sid) if kind == "tool" else None
        if agent is not None:
            owned.setdefault(agent, []).append(sid)
    return [
        _Candidate(
            f"{tree.trace.trace_id}:{agent}",
            tree.spans[agent],
            agent,
            tree.subtree(agent),
            tools,
            False,
        )
        for agent, tools in owned.items()
    ]


def _candidates(tree: _Tree, per_agent: bool) -> list[_Candidate]:
    has_agents = any(kind == "agent" for kind in tree.roles.values())
    if per_agent and has_agents:
        return _per_agent(tree) or [_whole_trace(tree)]
    return [_whole_trace(tree)]


def _outermost_tools(tree: _Tree, candidate: _Candidate) -> list[str]:
    def nested(sid: str) -> bool:
        for ancestor in tree.ancestors(sid):
            if ancestor == candidate.boundary:
                return False
            if tree.roles[ancestor] == "tool":
                return True
        return False

    return [sid for sid in candidate.tools if not nested(sid)]


def _incomplete_reason(tree: _Tree, candidate: _Candidate) -> str | None:
    for sid in candidate.scope:
        span = tree.spans[sid]
        if span.end_ns is None:
            return f"incomplete trace: span {sid} ({span.name!r}) has no end time"
    return None


# -- clock skew and order ------------------------------------------------------------------


def _resource_key(span: Span) -> str:
    return repr(sorted((str(k), str(v)) for k, v in span.resource.items()))


def _fit_offset(child: Span, parent: Span, parent_offset: int) -> int:
    """The shift that puts ``child`` inside its parent (centred), or 0 when it fits."""
    if None in (child.start_ns, child.end_ns, parent.start_ns, parent.end_ns):
        return 0
    start, end = child.start_ns or 0, child.end_ns or 0
    p_start, p_end = (parent.start_ns or 0) + parent_offset, (parent.end_ns or 0) + parent_offset
    if start >= p_start and end <= p_end:
        return 0
    slack = max(0, (p_end - p_start) - max(0, end - start)) // 2
    return p_start + slack - start


def _shifted(span: Span, offset: int) -> tuple[int | None, int | None]:
    start, end = span.start_ns, span.end_ns
    return (None if start is None else start + offset, None if end is None else end + offset)


def _aligned_times(tree: _Tree) -> dict[str, tuple[int | None, int | None]]:
    """Start and end of every span, with one clock offset per resource (host).

    Timestamps are compared raw only within one resource. A resource is aligned to its
    parent's the first time a span of it does not fit inside a parent of another resource.
    """
    resource: dict[str, str] = {}
    offsets: dict[str, int] = {}
    times: dict[str, tuple[int | None, int | None]] = {}
    for sid in tree.subtree(None):
        span, pid = tree.spans[sid], tree.parent[sid]
        parent_key = resource[pid] if pid is not None else ""
        key = resource[sid] = (_resource_key(span) if span.resource else "") or parent_key
        if key not in offsets:
            base = offsets.get(parent_key, 0)
            fit = _fit_offset(span, tree.spans[pid], base) if pid is not None else 0
            offsets[key] = base + fit
        times[sid] = _shifted(span, offsets[key])
    return times


def _order_key(sid: str, times: tuple[int | None, int | None]) -> tuple[Any, ...]:
    start, end = times
    return (start is None, start or 0, end is None, end or 0, sid)


# -- outcome -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Decision:
    status: str
    rule: str
    error: str | None = None


def _span_error(span: Span) -> tuple[bool, str | None]:
    """Whether a span failed (status, ``error.type`` or an exception event) and why."""
    error_type = span.attributes.get("error.type")
    failed = span.status == "ERROR" or present(error_type) or span.exception is not None
    if not failed:
        return False, None
    reasons = (span.status_message, span.exception, error_type)
    return True, next((str(r) for r in reasons if present(r)), None)


def _by_callable(trace: Trace, root: Span, options: Options) -> _Decision | None:
    if options.outcome is None:
        return None
    verdict = options.outcome(trace, root)
    if verdict is None:
        return None
    if verdict is True or verdict == "succeeded":
        return _Decision("succeeded", "callable")
    if verdict is False or verdict == "failed":
        return _Decision("failed", "callable")
    raise TraceImportError(
        f"trace {trace.trace_id!r}: the outcome callable returned {verdict!r}; return True "
        "or 'succeeded', False or 'failed', or None to fall through to the next rule"
    )


def _by_score(trace: Trace, options: Options) -> _Decision | None:
    rule = options.score
    if rule is None or rule.name not in trace.scores:
        return None
    value = trace.scores[rule.name]
    verdict = rule.decide(value)
    if verdict is None:
        return None
    if verdict:
        return _Decision("succeeded", "score")
    return _Decision("failed", "score", f"score {rule.name!r} = {value!r}")


def _decide(trace: Trace, root: Span, options: Options, incomplete: str | None) -> _Decision:
    if incomplete is not None:
        return _Decision("failed", "incomplete", incomplete)
    decided = _by_callable(trace, root, options) or _by_score(trace, options)
    if decided is not None:
        return decided
    failed, error = _span_error(root)
    return _Decision("failed" if failed else "succeeded", "root_status", error)


def _reward(trace: Trace, rule: ScoreRule | None) -> float | None:
    value: Any = trace.scores.get(rule.name) if rule is not None else None
    return float(value) if _is_number(value) else None


# -- names ---------------------------------------------------------------------------------


def _clip(value: Any) -> str | None:
    return str(value).strip()[:MAX_NAME_LENGTH] if present(value) else None


def _agent_name(span: Span) -> str | None:
    return next(
        (_clip(span.attributes[k]) for k in _AGENT_NAME_KEYS if present(span.attributes.get(k))),
        None,
    )


def _service(spans: Iterable[Span]) -> str | None:
    for span in spans:
        service = _clip(span.resource.get("service.name"))
        if service and not service.startswith("unknown_service"):
            return service
    return None


def _agent_id(tree: _Tree, candidate: _Candidate) -> str:
    """Root's agent name/id; else the one agent name inside; else service.name; else name."""
    own = _agent_name(candidate.root)
    if own:
        return own
    inside = {
        name
        for sid in candidate.scope
        if tree.roles[sid] == "agent" and (name := _agent_name(tree.spans[sid]))
    }
    if len(inside) == 1:
        return inside.pop()
    scope = [candidate.root, *(tree.spans[sid] for sid in candidate.scope)]
    return _service(scope) or _clip(candidate.root.name) or "unknown"


def _goal_type(trace: Trace, root: Span, source: GoalTypeSource) -> str | None:
    if source is None:
        return None
    if callable(source):
        return _clip(source(trace, root))
    return _clip(root.attributes.get(source, trace.attributes.get(source)))


def _tool_name(span: Span) -> str:
    named = next(
        (span.attributes[k] for k in _TOOL_NAME_KEYS if present(span.attributes.get(k))), None
    )
    name = str(named) if named is not None else span.name.removeprefix("execute_tool ")
    return _clip(name) or "unknown_tool"


# -- rows ----------------------------------------------------------------------------------


Row = dict[str, Any]


@dataclass
class _Rows:
    plans: list[Row] = field(default_factory=list)
    steps: list[Row] = field(default_factory=list)
    report: list[Row] = field(default_factory=list)

    def skip(self, trace_id: str, reason: str, incomplete: bool) -> None:
        self.report.append(
            {
                "trace_id": trace_id,
                "plan_id": None,
                "status": None,
                "outcome_rule": None,
                "incomplete": incomplete,
                "steps": 0,
                "skipped_reason": reason,
            }
        )

    def result(self) -> ImportResult:
        return ImportResult(
            _frame(self.plans, _PLAN_DTYPES),
            _frame(self.steps, _STEP_DTYPES),
            _frame(self.report, _REPORT_DTYPES),
        )


def _frame(rows: list[Row], dtypes: Mapping[str, str]) -> pd.DataFrame:
    columns: dict[str, pd.Series] = {}
    for name, dtype in dtypes.items():
        values = [row[name] for row in rows]
        if dtype == "ns":
            columns[name] = pd.to_datetime(pd.Series(values, dtype="int64"), unit="ns", utc=True)
        else:
            columns[name] = pd.Series(values, dtype=dtype)
    return pd.DataFrame(columns)


def _step_rows(tree: _Tree, plan_id: str, tools: list[str]) -> list[Row]:
    ordered = sorted(tools, key=lambda sid: _order_key(sid, tree.times[sid]))
    rows = []
    for index, sid in enumerate(ordered):
        span = tree.spans[sid]
        failed, error = _span_error(span)
        rows.append(
            {
                "plan_id": plan_id,
                "step_index": index,
                "tool": _tool_name(span),
                "status": "error" if failed else "ok",
                "duration_ms": _duration_ms(span),
                "error": error,
            }
        )
    return rows


def _duration_ms(span: Span) -> float:
    if span.start_ns is None or span.end_ns is None:
        return float("nan")
    return max(0, span.end_ns - span.start_ns) / 1e6


def _started(tree: _Tree, candidate: _Candidate) -> int | None:
    if candidate.root.start_ns is not None:
        return candidate.root.start_ns
    starts = [tree.spans[sid].start_ns for sid in candidate.scope]
    return min((s for s in starts if s is not None), default=None)


def _skip_reason(tree: _Tree, candidate: _Candidate, tools: list[str]) -> str | None:
    root = candidate.root
    where = "" if candidate.whole_trace else f"agent span {root.span_id}: "
    if tree.trace.in_progress or root.end_ns is None:
        return f"{where}still running: the root span {root.name!r} has no end time"
    if not tools:
        return f"{where}no tool spans"
    if _started(tree, candidate) is None:
        return f"{where}no start time on any span"
    return None


def _plan_row(tree: _Tree, candidate: _Candidate, decision: _Decision, options: Options) -> Row:
    trace, root = tree.trace, candidate.root
    started = _started(tree, candidate) or 0
    return {
        "plan_id": candidate.plan_id,
        "agent_id": _agent_id(tree, candidate),
        "goal_type": _goal_type(trace, root, options.goal_type),
        "status": decision.status,
        "started_at": started,
        "finished_at": max(started, root.end_ns or started),
        "reward": _reward(trace, options.score),
        "error": decision.error,
        "priority": 0,
    }


def _add_plan(rows: _Rows, tree: _Tree, candidate: _Candidate, options: Options) -> None:
    tools = candidate.tools if options.flatten else _outermost_tools(tree, candidate)
    incomplete = _incomplete_reason(tree, candidate)
    reason = _skip_reason(tree, candidate, tools)
    if reason is not None:
        rows.skip(tree.trace.trace_id, reason, incomplete is not None)
        return
    decision = _decide(tree.trace, candidate.root, options, incomplete)
    rows.plans.append(_plan_row(tree, candidate, decision, options))
    rows.steps.extend(_step_rows(tree, candidate.plan_id, tools))
    rows.report.append(
        {
            "trace_id": tree.trace.trace_id,
            "plan_id": candidate.plan_id,
            "status": decision.status,
            "outcome_rule": decision.rule,
            "incomplete": incomplete is not None,
            "steps": len(tools),
            "skipped_reason": None,
        }
    )


def _add_trace(rows: _Rows, trace: Trace, options: Options) -> None:
    if not trace.spans:
        rows.skip(trace.trace_id, "no spans", False)
        return
    tree = _Tree.build(trace)
    if not any(span.parent_id is None for span in trace.spans):
        rows.skip(trace.trace_id, _rootless_reason(tree), True)
        return
    for candidate in _candidates(tree, options.per_agent):
        _add_plan(rows, tree, candidate, options)


def assemble(
    spans: Iterable[Span], infos: Mapping[str, TraceInfo], options: Options
) -> ImportResult:
    """Group spans into traces (deduplicating by trace and span id) and build the result.

    ``infos`` lists trace-level facts by trace id; a trace listed there without spans is
    reported as skipped ("no spans").
    """
    rows = _Rows()
    for trace in _group(spans, infos):
        _add_trace(rows, trace, options)
    return rows.result()
