"""Synthetic execution history with planted ground truth, for demos, tests and benchmarks.

:func:`make_history` draws plans of several agents (different skill) on several goal
types (different difficulty). Each plan's background steps follow a fixed Markov chain
over everyday tools, drawn independently of the agent, the goal and the outcome, so
background tool sequences carry no signal. Into some plans one *planted pattern* is
inserted at the start or the end, built from tools that never occur otherwise; it shifts
the plan's log-odds of success by a known amount (:data:`PLANTED_PATTERNS`). Step errors
and skips are drawn after the outcome (failed plans have more of them), as they look in
real logs.

Two more planted cases test what a careful analyst must get right (:data:`PLANTED_CASES`):
tools used mostly on the easy goal type (``lookup``), so that the pooled comparison
mixes goal types. ``read_faq`` is placed first in 40% of lookup plans and 2% of the others
and does nothing: pooled it "goes with success", within every goal type it has no effect.
``quick_answer`` is placed last as often, and lowers the log-odds of success by 0.5 in
every goal type: pooled it still "goes with success" (a Simpson reversal).

So an analysis should find the planted success patterns with lift > 1, the planted
failure patterns with lift < 1, ``quick_answer`` with failure within goal types, not
``read_faq``, and few significant patterns among the rest that share no tool with a
planted pattern or case (:func:`is_planted_related`). :func:`planted_truth` lists all
six with the direction a stratified analysis should report.

A history can also carry a planted change (:class:`PlantedChange`): one agent's success
log-odds shift by a known amount for the plans that finish after a given moment, as after
a model or prompt update; change detection should find it there and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import numpy as np
import pandas as pd

from metalearn._types import epoch_micros

__all__ = [
    "BACKGROUND_TOOLS",
    "PLANTED_CASES",
    "PLANTED_PATTERNS",
    "PLANTED_TOOLS",
    "PlantedCase",
    "PlantedChange",
    "PlantedPattern",
    "is_planted_related",
    "make_history",
    "planted_patterns",
    "planted_truth",
]


@dataclass(frozen=True)
class PlantedPattern:
    """A tool sequence inserted into a share of plans, shifting their success log-odds."""

    pattern: tuple[str, ...]
    direction: Literal["success", "failure"]
    log_odds: float
    share: float


@dataclass(frozen=True)
class PlantedChange:
    """One agent's success log-odds shift by ``log_odds`` for plans finishing after ``at``.

    >>> PlantedChange("support-bot", datetime(2026, 2, 1, tzinfo=UTC), log_odds=-1.5).log_odds
    -1.5
    """

    agent_id: str
    at: datetime
    log_odds: float


PLANTED_PATTERNS: tuple[PlantedPattern, ...] = (
    PlantedPattern(("validate_input", "dry_run", "apply_change"), "success", 1.5, 0.08),
    PlantedPattern(("ask_clarification", "confirm_goal"), "success", 1.0, 0.08),
    PlantedPattern(("retry", "retry", "retry"), "failure", -1.5, 0.08),
    PlantedPattern(("fallback_model", "guess_answer"), "failure", -1.2, 0.08),
)
"""The ground truth: each pattern, its direction, its effect and the share of plans with it."""


@dataclass(frozen=True)
class PlantedCase:
    """A tool used mostly on the easiest goal type, so that pooling misleads.

    Placed ``"first"`` or ``"last"`` in a share ``easy_share`` of ``lookup`` plans and
    ``other_share`` of the others; shifts success log-odds by ``log_odds`` in every goal
    type. ``pooled`` is the direction a pooled comparison sees; ``stratified`` the one
    within goal types (None: no effect at all).
    """

    tool: str
    kind: Literal["confounded", "simpson"]
    where: Literal["first", "last"]
    log_odds: float
    easy_share: float
    other_share: float
    pooled: Literal["success", "failure"]
    stratified: Literal["success", "failure"] | None


PLANTED_CASES: tuple[PlantedCase, ...] = (
    PlantedCase("read_faq", "confounded", "first", 0.0, 0.40, 0.02, "success", None),
    PlantedCase("quick_answer", "simpson", "last", -0.5, 0.40, 0.02, "success", "failure"),
)
"""The stratification cases: (a) a confounded tool with no effect, (b) a Simpson reversal."""

PLANTED_TOOLS = frozenset(
    [tool for p in PLANTED_PATTERNS for tool in p.pattern] + [c.tool for c in PLANTED_CASES]
)
"""Tools that occur only inside planted patterns, or as a planted case."""

BACKGROUND_TOOLS: tuple[str, ...] = (
    "search_web",
    "fetch_page",
    "read_file",
    "write_file",
    "query_db",
    "call_api",
    "run_code",
    "run_tests",
    "summarize",
    "send_message",
    "lookup_user",
    "parse_document",
)
"""Everyday tools; their sequences are independent of the outcome."""

_AGENT_NAMES = (
    "support-bot",
    "research-agent",
    "booking-agent",
    "code-agent",
    "data-analyst",
    "ops-agent",
    "sales-assistant",
    "triage-agent",
)
_GOAL_TYPES = {  # name: (difficulty in log-odds, share of plans)
    "lookup": (0.9, 0.25),
    "summarize": (0.5, 0.20),
    "booking": (0.0, 0.20),
    "refund": (-0.3, 0.15),
    "data_migration": (-0.8, 0.10),
    "debugging": (-1.1, 0.10),
}
_BASE_LOG_ODDS = 0.45
_MEDIAN_MS = {  # typical duration of one call, in milliseconds
    "search_web": 900,
    "fetch_page": 1400,
    "read_file": 40,
    "write_file": 60,
    "query_db": 120,
    "call_api": 650,
    "run_code": 2500,
    "run_tests": 8000,
    "summarize": 3200,
    "send_message": 300,
    "lookup_user": 90,
    "parse_document": 700,
    "validate_input": 150,
    "dry_run": 1800,
    "apply_change": 400,
    "ask_clarification": 200,
    "confirm_goal": 1200,
    "retry": 2600,
    "fallback_model": 5000,
    "guess_answer": 2200,
    "read_faq": 300,
    "quick_answer": 900,
}
_MIN_STEPS, _MAX_BACKGROUND = 3, 12
_EASY_GOAL = 0  # "lookup", where the planted cases are mostly used


def _transitions() -> tuple[np.ndarray, np.ndarray]:
    """A fixed (seed-independent) Markov chain over the background tools."""
    chain_rng = np.random.default_rng(20260101)
    n = len(BACKGROUND_TOOLS)
    matrix = chain_rng.dirichlet(np.full(n, 0.6), size=n)
    start = chain_rng.dirichlet(np.full(n, 1.5))
    return np.cumsum(start), np.cumsum(matrix, axis=1)


def _next(rng: np.random.Generator, cumulative: np.ndarray) -> np.ndarray:
    draws = rng.random(size=(cumulative.shape[0], 1))
    picked: np.ndarray = (draws > cumulative).sum(axis=1)
    capped: np.ndarray = np.minimum(picked, cumulative.shape[1] - 1)
    return capped


def _background(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    start, matrix = _transitions()
    lengths = rng.integers(_MIN_STEPS, _MAX_BACKGROUND + 1, size=n)
    tools = np.empty((n, _MAX_BACKGROUND), dtype=np.int16)
    current = _next(rng, np.broadcast_to(start, (n, start.size)))
    for column in range(_MAX_BACKGROUND):
        tools[:, column] = current
        current = _next(rng, matrix[current])
    return tools, lengths


def _planted_codes() -> np.ndarray:
    vocabulary = {tool: code for code, tool in enumerate(_vocabulary())}
    width = max(len(p.pattern) for p in PLANTED_PATTERNS)
    codes = np.full((len(PLANTED_PATTERNS), width), -1, dtype=np.int16)
    for row, planted in enumerate(PLANTED_PATTERNS):
        codes[row, : len(planted.pattern)] = [vocabulary[t] for t in planted.pattern]
    return codes


def _vocabulary() -> tuple[str, ...]:
    extra = [t for p in PLANTED_PATTERNS for t in p.pattern if t not in BACKGROUND_TOOLS]
    return BACKGROUND_TOOLS + tuple(dict.fromkeys(extra)) + tuple(c.tool for c in PLANTED_CASES)


def _add_cases(
    rng: np.random.Generator, tools: np.ndarray, goal: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Put each planted case's tool first or last in its share of plans.

    Returns the wider tool matrix (holes of -1 are dropped when steps are made) and a
    (plans, cases) matrix of which plans got which case.
    """
    vocabulary = {tool: code for code, tool in enumerate(_vocabulary())}
    easy = goal == _EASY_GOAL
    used = np.column_stack(
        [rng.random(len(goal)) < np.where(easy, c.easy_share, c.other_share) for c in PLANTED_CASES]
    )
    columns = []
    for index, case in enumerate(PLANTED_CASES):
        column = np.where(used[:, index], vocabulary[case.tool], -1).astype(np.int16)[:, None]
        columns.append((case.where, column))
    first = [c for where, c in columns if where == "first"]
    last = [c for where, c in columns if where == "last"]
    return np.hstack([*first, tools, *last]), used


def _insert(
    rng: np.random.Generator, background: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Put at most one planted pattern at the start or end of each plan.

    Returns the (n, width) tool matrix padded with -1 and the planted choice (-1: none).
    """
    n = len(lengths)
    shares = np.array([p.share for p in PLANTED_PATTERNS])
    choice = rng.choice(len(shares) + 1, size=n, p=np.append(shares, 1 - shares.sum()))
    choice = np.where(choice == len(shares), -1, choice)
    codes = _planted_codes()
    planted_len = np.where(choice >= 0, (codes >= 0).sum(axis=1)[choice], 0)
    at_start = rng.random(n) < 0.5
    width = _MAX_BACKGROUND + codes.shape[1]
    position = np.arange(width)[None, :]
    bg_index = position - np.where(at_start, planted_len, 0)[:, None]
    in_bg = (bg_index >= 0) & (bg_index < lengths[:, None])
    pat_index = position - np.where(at_start, 0, lengths)[:, None]
    in_pat = (pat_index >= 0) & (pat_index < planted_len[:, None])
    tools = np.full((n, width), -1, dtype=np.int16)
    rows, _ = np.nonzero(in_bg)
    tools[in_bg] = background[rows, bg_index[in_bg]]
    rows, _ = np.nonzero(in_pat)
    tools[in_pat] = codes[choice[rows], pat_index[in_pat]]
    return tools, choice


def _outcomes(
    rng: np.random.Generator,
    agent: np.ndarray,
    goal: np.ndarray,
    choice: np.ndarray,
    skills: np.ndarray,
    shift: np.ndarray,
    cases: np.ndarray,
) -> np.ndarray:
    difficulty = np.array([d for d, _ in _GOAL_TYPES.values()] + [0.0])
    effects = np.array([p.log_odds for p in PLANTED_PATTERNS] + [0.0])
    log_odds = _BASE_LOG_ODDS + skills[agent] + difficulty[goal] + effects[choice] + shift
    log_odds = log_odds + cases @ np.array([c.log_odds for c in PLANTED_CASES])
    succeeded: np.ndarray = rng.random(len(agent)) < 1 / (1 + np.exp(-log_odds))
    return succeeded


def _error_texts(rng: np.random.Generator, tools: pd.Series) -> np.ndarray:
    """Error messages whose numbers, ids and quoted values vary, as in real logs."""
    n = len(tools)
    tool = tools.reset_index(drop=True)
    big = pd.Series(rng.integers(100, 60_000, size=n)).astype("str")
    small = pd.Series(rng.integers(1, 90, size=n)).astype("str")
    templates = [
        "TimeoutError: " + tool + " did not answer within " + big + " ms",
        "HTTPError 503: upstream 'svc-" + small + "' is unavailable",
        "ValidationError: field 'user_id' has invalid value 'u-" + big + "'",
        "RateLimitError: retry after " + small + " s (request req_" + big + ")",
    ]
    kind = rng.integers(0, len(templates), size=n)
    return np.select(
        [kind == k for k in range(len(templates))],
        [t.to_numpy(dtype=object) for t in templates],
        default="",
    )


def _step_frame(
    rng: np.random.Generator, tools_matrix: np.ndarray, succeeded: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray]:
    valid = tools_matrix >= 0
    lengths = valid.sum(axis=1)
    plan = np.repeat(np.arange(len(lengths)), lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    position = np.arange(plan.size) - offsets[plan]
    codes = tools_matrix[valid]
    failed = ~succeeded[plan]
    last = position == lengths[plan] - 1
    error = rng.random(plan.size) < np.where(failed, 0.06, 0.015)
    error |= failed & last & (rng.random(plan.size) < 0.6)
    first_error = np.minimum.reduceat(np.where(error, position, 1 << 30), offsets)
    skip_plan = rng.random(len(lengths)) < 0.5
    skipped = failed & skip_plan[plan] & (position > first_error[plan])
    error &= ~skipped
    medians = np.array([_MEDIAN_MS[tool] for tool in _vocabulary()], dtype="float64")
    duration = medians[codes] * np.exp(rng.normal(0.0, 0.6, size=plan.size))
    unknown = skipped | (rng.random(plan.size) < 0.01)
    names = np.array(_vocabulary())
    tool = pd.Series(names[codes], dtype="str")
    status = np.where(skipped, "skipped", np.where(error, "error", "ok"))
    frame = pd.DataFrame(
        {
            "plan": plan,
            "step_index": position.astype("int64"),
            "tool": tool,
            "status": pd.Series(status, dtype="str"),
            "duration_ms": np.where(unknown, np.nan, np.round(duration, 1)),
        }
    )
    texts = np.full(plan.size, None, dtype=object)
    texts[error] = _error_texts(rng, tool[error])
    frame["error"] = pd.Series(texts, dtype="str")
    return frame, lengths


def _plan_errors(steps: pd.DataFrame, n: int, succeeded: np.ndarray) -> pd.Series:
    errors = steps[steps["status"] == "error"].drop_duplicates("plan")
    text = (
        "step "
        + errors["step_index"].astype("str")
        + " ("
        + errors["tool"]
        + ") failed: "
        + errors["error"]
    )
    result = pd.Series(pd.NA, index=range(n), dtype="str")
    result[errors["plan"].to_numpy()] = text.to_numpy()
    return result.fillna("goal not achieved").where(~succeeded)


def make_history(
    n_plans: int = 10_000,
    *,
    n_agents: int = 6,
    seed: int = 0,
    end: datetime | None = None,
    days: float = 60.0,
    change: PlantedChange | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Draw a realistic execution history with planted patterns (and, optionally, a change).

    Deterministic for a given ``seed`` and ``end`` (the latest ``finished_at``; default:
    today's midnight UTC, so the history is always recent). Plans finish uniformly over
    the ``days`` before ``end``, in ``finished_at`` order; each has 3-17 steps.

    Returns ``(plans, steps)`` in the interchange format, ready for
    ``store.import_frames(plans, steps)``:

    - ``plans``: plan_id, agent_id, goal_type (about 2% missing), status, started_at,
      finished_at (UTC timestamps), reward (0-1), error (failed plans only)
    - ``steps``: plan_id, step_index, tool, status (``ok``/``error``/``skipped``),
      duration_ms (missing for skipped steps and ~1% of others), error

    The planted ground truth is :data:`PLANTED_PATTERNS` and :data:`PLANTED_CASES` (see
    the module docstring and :func:`planted_truth`). With ``change``, the plans of
    ``change.agent_id`` that finish after ``change.at`` succeed with log-odds shifted by
    ``change.log_odds`` (finish times are then drawn first, from their own generator, so
    the rest of the history differs from the one drawn without a change).

    >>> plans, steps = make_history(1_000, seed=7, end=datetime(2026, 1, 1, tzinfo=UTC))
    >>> sizes = steps.groupby("plan_id").size()
    >>> len(plans), plans["agent_id"].nunique(), sizes.min() >= 3, sizes.max() <= 17
    (1000, 6, np.True_, np.True_)
    >>> plans["finished_at"].max() <= pd.Timestamp("2026-01-01", tz="UTC")
    True
    """
    if n_plans < 1:
        raise ValueError(f"n_plans must be >= 1, not {n_plans}")
    if n_agents < 1:
        raise ValueError(f"n_agents must be >= 1, not {n_agents}")
    if end is None:
        end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    elif end.tzinfo is None:
        raise ValueError("end must be timezone-aware, e.g. datetime(2026, 1, 1, tzinfo=UTC)")
    rng = np.random.default_rng(seed)
    agent_names = [
        _AGENT_NAMES[i] if i < len(_AGENT_NAMES) else f"agent-{i:02d}" for i in range(n_agents)
    ]
    skills = np.linspace(0.8, -0.8, n_agents) if n_agents > 1 else np.zeros(1)
    agent = rng.integers(0, n_agents, size=n_plans)
    goal_shares = np.array([share for _, share in _GOAL_TYPES.values()])
    goal = rng.choice(len(goal_shares), size=n_plans, p=goal_shares)
    background, lengths = _background(rng, n_plans)
    tools, choice = _insert(rng, background, lengths)
    finished, shift = None, np.zeros(n_plans)
    if change is not None:
        finished = _finish_times(np.random.default_rng([seed, 1]), n_plans, end, days)
        shift = _change_shift(change, agent_names, agent, finished)
    tools, cases = _add_cases(rng, tools, goal)
    succeeded = _outcomes(rng, agent, goal, choice, skills, shift, cases)
    steps, step_counts = _step_frame(rng, tools, succeeded)
    plans = _plan_frame(rng, agent, agent_names, goal, succeeded, steps, step_counts, end, days,
                        finished)  # fmt: skip
    return _with_ids(plans, steps, seed)


def _finish_times(rng: np.random.Generator, n: int, end: datetime, days: float) -> np.ndarray:
    # Plans are drawn independently, so sorted finish times keep them in record order.
    finished = np.sort(epoch_micros(end) - (rng.random(n) * days * 86_400e6).astype("int64"))
    whole_ms: np.ndarray = finished - finished % 1000
    return whole_ms


def _change_shift(
    change: PlantedChange, agent_names: list[str], agent: np.ndarray, finished: np.ndarray
) -> np.ndarray:
    if change.agent_id not in agent_names:
        raise ValueError(f"change.agent_id must be one of {agent_names}, not {change.agent_id!r}")
    if change.at.tzinfo is None:
        raise ValueError("change.at must be timezone-aware, e.g. datetime(2026, 1, 1, tzinfo=UTC)")
    after = (agent == agent_names.index(change.agent_id)) & (finished > epoch_micros(change.at))
    shift: np.ndarray = np.where(after, change.log_odds, 0.0)
    return shift


def _plan_frame(
    rng: np.random.Generator,
    agent: np.ndarray,
    agent_names: list[str],
    goal: np.ndarray,
    succeeded: np.ndarray,
    steps: pd.DataFrame,
    step_counts: np.ndarray,
    end: datetime,
    days: float,
    finished: np.ndarray | None = None,
) -> pd.DataFrame:
    n = len(agent)
    goal_names = np.array(list(_GOAL_TYPES), dtype=object)[goal]
    goal_names[rng.random(n) < 0.02] = None
    busy_ms = steps.groupby("plan")["duration_ms"].sum().to_numpy()
    overhead_ms = rng.uniform(200, 3000, size=n) * step_counts
    if finished is None:
        finished = _finish_times(rng, n, end, days)
    started = finished - np.round(busy_ms + overhead_ms).astype("int64") * 1000
    reward = np.where(succeeded, rng.uniform(0.6, 1.0, n), rng.uniform(0.0, 0.4, n))
    return pd.DataFrame(
        {
            "agent_id": pd.Series(np.array(agent_names)[agent], dtype="str"),
            "goal_type": pd.Series(goal_names, dtype="str"),
            "status": pd.Series(np.where(succeeded, "succeeded", "failed"), dtype="str"),
            "started_at": pd.to_datetime(started, unit="us", utc=True),
            "finished_at": pd.to_datetime(finished, unit="us", utc=True),
            "reward": np.round(reward, 3),
            "error": _plan_errors(steps, n, succeeded),
        }
    )


def _with_ids(
    plans: pd.DataFrame, steps: pd.DataFrame, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    numbers = pd.Series(np.arange(len(plans))).astype("str").str.zfill(7)
    plan_ids = (f"syn{seed}-" + numbers).to_numpy()
    plans.insert(0, "plan_id", pd.Series(plan_ids, dtype="str"))
    steps.insert(0, "plan_id", pd.Series(plan_ids[steps["plan"].to_numpy()], dtype="str"))
    return plans, steps.drop(columns="plan")


def planted_patterns() -> pd.DataFrame:
    """The planted ground truth as a table.

    Columns: pattern (tuple of tools), pattern_text (``" → "``-joined), length,
    direction (``success``/``failure``), log_odds (effect on success), share (of plans).

    >>> planted_patterns()[["pattern_text", "direction"]].iloc[0].tolist()
    ['validate_input → dry_run → apply_change', 'success']
    """
    return pd.DataFrame(
        {
            "pattern": [p.pattern for p in PLANTED_PATTERNS],
            "pattern_text": [" → ".join(p.pattern) for p in PLANTED_PATTERNS],
            "length": [len(p.pattern) for p in PLANTED_PATTERNS],
            "direction": [p.direction for p in PLANTED_PATTERNS],
            "log_odds": [p.log_odds for p in PLANTED_PATTERNS],
            "share": [p.share for p in PLANTED_PATTERNS],
        }
    )


def planted_truth() -> pd.DataFrame:
    """Everything planted, with what a stratified analysis should report for it.

    Columns: pattern (tuple of tools), pattern_text, kind (``effect`` for the planted
    patterns, ``confounded``, ``simpson``), direction (within goal types; missing for the
    confounded tool, which has no effect), pooled_direction (what a pooled comparison
    sees), log_odds (effect within every goal type) and finding (whether it is a true
    effect that a report's findings should hold).

    >>> planted_truth()[["pattern_text", "kind", "finding"]].tail(2).values.tolist()
    [['read_faq', 'confounded', False], ['quick_answer', 'simpson', True]]
    """
    planted = planted_patterns()
    cases = pd.DataFrame(
        {
            "pattern": [(c.tool,) for c in PLANTED_CASES],
            "pattern_text": [c.tool for c in PLANTED_CASES],
            "kind": [c.kind for c in PLANTED_CASES],
            "direction": pd.Series([c.stratified for c in PLANTED_CASES], dtype="str"),
            "pooled_direction": [c.pooled for c in PLANTED_CASES],
            "log_odds": [c.log_odds for c in PLANTED_CASES],
        }
    )
    effects = planted.assign(kind="effect", pooled_direction=planted["direction"])
    table = pd.concat([effects[cases.columns], cases], ignore_index=True)
    table["finding"] = table["direction"].notna()
    return table.astype({"pattern_text": "str", "kind": "str", "pooled_direction": "str"})


def is_planted_related(pattern: tuple[str, ...] | list[str]) -> bool:
    """Whether a tool sequence shares a tool with a planted pattern.

    Unrelated sequences have no effect on success by construction.

    >>> is_planted_related(("search_web", "retry")), is_planted_related(("search_web",))
    (True, False)
    """
    return any(tool in PLANTED_TOOLS for tool in pattern)
