"""Next-step hints: the success rate of each next tool after a prefix of tools, for planners.

A plan "has prefix P" when its steps begin with exactly the tools of P; its continuation
is its next tool, or none when it ended right after P. Counting works on each plan's
first steps as an integer matrix (one row per plan, one column per step index, ``-1``
past its end) and builds the prefix trie depth by depth with dense ids, as the n-gram
ids of :mod:`metalearn._patterns`: a node at depth d+1 is the dense id of (its parent,
the tool at column d). A (node, next tool) pair is one hint row; plans, successes and
the node totals come from ``bincount``. A prefix can only reach ``min_support`` plans if
its parent does, so plans under a rare node are dropped before the next depth. The root
of each group (agent) is its own node, so a batch of agents is one pass too. Statistics
for all rows are computed at once (:mod:`metalearn._stats`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from metalearn import _queries as q
from metalearn._analysis import tool_names, with_rates
from metalearn._arrays import dense_codes
from metalearn._queries import HintOptions, Window
from metalearn._results import HINT_COLUMNS, HINT_TABLE_COLUMNS, HintTable, prefix_text
from metalearn._stats import benjamini_hochberg_by, fisher_exact_two_sided, low_n
from metalearn._warehouse import Snapshot

__all__ = ["hint_tables", "next_step_hints"]

Ints = NDArray[np.int64]
_ENDED = -1  # the "next tool" of a plan that ended right after its prefix


@dataclass(frozen=True)
class _FirstSteps:
    """Each plan's first tools (``-1`` past its end), outcome and group, as arrays."""

    tools: Ints  # (plans, depth + 1)
    succeeded: NDArray[np.bool_]
    group: Ints  # index into groups
    groups: list[str | None]

    @classmethod
    def read(cls, steps: pa.Table, totals: pd.DataFrame, window: Window, depth: int) -> _FirstSteps:
        """From the step rows (any order) and the plan totals of every group.

        Plans without steps are not among the step rows; they come back as rows of ``-1``
        (they ended before a first step) from the group totals.
        """
        plan, seqs = dense_codes(steps.column("seq").to_numpy().astype(np.int64))
        first = np.zeros(len(seqs), dtype=np.int64)
        first[plan] = np.arange(len(plan))  # some step row of each plan: all carry its outcome
        tools = np.full((len(seqs), depth + 1), _ENDED, dtype=np.int64)
        offset = steps.column("step_index").to_numpy().astype(np.int64)
        tools[plan, offset] = steps.column("tool_id").to_numpy().astype(np.int64)
        succeeded = steps.column("succeeded").to_numpy(zero_copy_only=False).astype(bool)[first]
        groups = window.groups
        group = np.zeros(len(seqs), dtype=np.int64)
        if window.per_agent:
            keys = pc.index_in(steps.column("group_key"), pa.array(groups, pa.string()))
            group = keys.to_numpy(zero_copy_only=False).astype(np.int64)[first]
        return _with_stepless(cls(tools, succeeded, group, groups), totals, window)


def _with_stepless(steps: _FirstSteps, totals: pd.DataFrame, window: Window) -> _FirstSteps:
    """Add a row of ``-1`` for every plan of the totals that has no step rows."""
    keys = totals["group_key"] if window.per_agent else pd.Series([None] * len(totals))
    index = {key: i for i, key in enumerate(steps.groups)}
    code = np.array([index.get(k, -1) for k in keys], dtype=np.int64)
    plans, successes = totals["plans"].to_numpy(np.int64), totals["successes"].to_numpy(np.int64)
    known = code >= 0
    code, plans, successes = code[known], plans[known], successes[known]
    with_steps = np.bincount(steps.group, minlength=len(steps.groups))[code]
    won = np.bincount(steps.group, weights=steps.succeeded, minlength=len(steps.groups))[code]
    missing, missing_won = plans - with_steps, successes - won.astype(np.int64)
    if not missing.any():
        return steps
    group = np.repeat(code, missing)
    ranks = np.arange(len(group)) - np.repeat(np.cumsum(missing) - missing, missing)
    extra = np.full((len(group), steps.tools.shape[1]), _ENDED, dtype=np.int64)
    return _FirstSteps(
        tools=np.vstack([steps.tools, extra]),
        succeeded=np.r_[steps.succeeded, ranks < np.repeat(missing_won, missing)],
        group=np.r_[steps.group, group],
        groups=steps.groups,
    )


@dataclass(frozen=True)
class _Rows:
    """Hint rows: (node, next tool) pairs with their counts and their node's totals."""

    node: Ints  # prefix id (global: unique across depths and groups)
    tool: Ints  # next tool id, or _ENDED
    plans: Ints
    successes: Ints
    node_plans: Ints
    node_successes: Ints

    def where(self, keep: NDArray[np.bool_]) -> _Rows:
        return _Rows(*(getattr(self, f.name)[keep] for f in fields(self)))


def _level_rows(
    node: Ints, next_tool: Ints, succeeded: NDArray[np.bool_], n_nodes: int, n_tools: int
) -> _Rows:
    """Every (node, next tool) pair of one depth, counted: one dense-id pass."""
    codes, uniques = dense_codes(node * (n_tools + 1) + (next_tool + 1))
    plans = np.bincount(codes).astype(np.int64)
    successes = np.bincount(codes, weights=succeeded).astype(np.int64)
    node_plans = np.bincount(node, minlength=n_nodes).astype(np.int64)
    node_successes = np.bincount(node, weights=succeeded, minlength=n_nodes).astype(np.int64)
    row_node = uniques // (n_tools + 1)
    return _Rows(row_node, uniques % (n_tools + 1) - 1, plans, successes,
                 node_plans[row_node], node_successes[row_node])  # fmt: skip


@dataclass
class _Trie:
    """The frequent part of the prefix trie: hint rows and, per node, its prefix and group."""

    rows: list[_Rows]
    prefix: list[Ints]  # per depth: (nodes, depth) tool ids
    group: list[Ints]  # per depth: each node's group
    n_nodes: int = 0  # nodes of the depths before the last one added

    def add(self, rows: _Rows) -> None:
        shifted = replace(rows, node=rows.node + self.n_nodes)
        self.rows.append(shifted)
        self.n_nodes += len(self.group[len(self.rows) - 1])

    def node_prefix(self, node: Ints) -> tuple[Ints, Ints]:
        """The depth and tool-id row (padded with -1) of global node ids."""
        sizes = np.array([len(g) for g in self.group[: len(self.rows)]])
        bases = np.cumsum(sizes) - sizes
        depth = np.searchsorted(bases, node, side="right") - 1
        width = len(self.prefix) - 1
        padded = np.full((len(node), max(width, 0)), -1, dtype=np.int64)
        for d in np.unique(depth).tolist():
            at = depth == d
            padded[at, :d] = self.prefix[d][node[at] - bases[d]]
        return depth, padded

    def node_group(self, node: Ints) -> Ints:
        groups = np.concatenate(self.group[: len(self.rows)])
        found: Ints = groups[node]
        return found


def _grow(steps: _FirstSteps, options: HintOptions, n_tools: int) -> _Trie:
    """Count the hint rows of every prefix of up to ``max_prefix`` tools, depth by depth."""
    node, tools, succeeded = steps.group, steps.tools, steps.succeeded
    n_nodes = len(steps.groups)
    trie = _Trie([], [np.zeros((n_nodes, 0), np.int64)], [np.arange(n_nodes, dtype=np.int64)])
    for depth in range(options.max_prefix + 1):
        # A prefix in fewer than min_support plans has only rarer extensions: drop its plans.
        keep = (np.bincount(node, minlength=n_nodes) >= options.min_support)[node]
        node, tools, succeeded = node[keep], tools[keep], succeeded[keep]
        trie.add(_level_rows(node, tools[:, depth], succeeded, n_nodes, n_tools))
        if depth == options.max_prefix or not len(node):
            break
        going_on = tools[:, depth] != _ENDED
        child, uniques = dense_codes(node[going_on] * n_tools + tools[going_on, depth])
        parent = uniques // n_tools
        trie.prefix.append(np.hstack([trie.prefix[-1][parent], (uniques % n_tools)[:, None]]))
        trie.group.append(trie.group[-1][parent])
        node, tools, succeeded, n_nodes = child, tools[going_on], succeeded[going_on], len(uniques)
    return trie


def _tested(rows: _Rows, names: NDArray[np.object_], fdr: float) -> pd.DataFrame:
    """The hint columns of ``rows`` (cut to ``min_support``), tested within each prefix."""
    next_tool = names[np.maximum(rows.tool, 0)]
    next_tool[rows.tool == _ENDED] = None
    frame = with_rates(pd.DataFrame({
        "next_tool": pd.Series(next_tool, dtype="str"),
        "plans": rows.plans,
        "successes": rows.successes,
    }))  # fmt: skip
    with np.errstate(invalid="ignore", divide="ignore"):
        lift = frame["success_rate"].to_numpy() * rows.node_plans / rows.node_successes
    p_values = fisher_exact_two_sided(rows.successes, rows.plans, rows.node_successes,
                                      rows.node_plans)  # fmt: skip
    q_values = benjamini_hochberg_by(p_values, rows.node)
    flagged = low_n(frame["plans"], frame["ci_low"], frame["ci_high"])
    return frame.assign(lift=lift, p_value=p_values, q_value=q_values,
                        significant=q_values <= fdr, low_n=flagged)  # fmt: skip


def _ranked(frame: pd.DataFrame, *keys: str) -> pd.DataFrame:
    """Best lower bound first (then more plans, then by name), after the ``keys``."""
    order = frame.sort_values(
        [*keys, "ci_low", "plans", "next_tool"],
        ascending=[True] * len(keys) + [False, False, True],
        na_position="last",
        kind="stable",
    )
    return order.reset_index(drop=True)


def _read(snapshot: Snapshot, window: Window, goal_type: str | None, depth: int) -> _FirstSteps:
    params = {**window.params, "goal_type": goal_type}
    totals = snapshot.frame(window.sql(q.HINT_PLANS), params)
    steps = snapshot.arrow(window.sql(q.HINT_STEPS), {**params, "depth": depth})
    return _FirstSteps.read(steps, totals, window, depth)


def _table_frame(trie: _Trie, names: NDArray[np.object_], options: HintOptions) -> pd.DataFrame:
    rows = _concat(trie.rows) if trie.rows else _Rows(*[np.empty(0, np.int64)] * 6)
    rows = rows.where(rows.plans >= options.min_support)
    frame = _tested(rows, names, options.fdr)
    depth, padded = trie.node_prefix(rows.node)
    nodes, first = np.unique(rows.node, return_index=True)
    text = {int(n): tuple(names[t] for t in padded[i, : depth[i]]) for n, i in
            zip(nodes.tolist(), first.tolist(), strict=True)}  # fmt: skip
    prefixes = [text[n] for n in rows.node.tolist()]
    frame.insert(0, "prefix", pd.Series(prefixes, dtype=object))
    frame.insert(1, "prefix_text", pd.Series([prefix_text(p) for p in prefixes], dtype="str"))
    return frame.assign(_depth=depth, _group=trie.node_group(rows.node))


def _concat(parts: list[_Rows]) -> _Rows:
    return _Rows(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(_Rows)))


def hint_tables(
    snapshot: Snapshot, window: Window, options: HintOptions, goal_type: str | None = None
) -> dict[str | None, HintTable]:
    """The :class:`HintTable` of each group of ``window``: one query, one trie for all."""
    steps = _read(snapshot, window, goal_type, options.max_prefix)
    names = tool_names(snapshot)
    frame = _table_frame(_grow(steps, options, len(names)), names, options)
    tables = {}
    for index, key in enumerate(steps.groups):
        rows = _ranked(frame[frame["_group"] == index], "_depth", "prefix_text")
        in_group = steps.group == index
        tables[key] = HintTable(
            hints=rows[HINT_TABLE_COLUMNS],
            n_plans=int(in_group.sum()),
            n_successes=int(steps.succeeded[in_group].sum()),
            options=options,
            **window.described(snapshot.through_seq, key),
        )
    return tables


def next_step_hints(
    snapshot: Snapshot,
    window: Window,
    prefix: tuple[str, ...],
    options: HintOptions,
    goal_type: str | None = None,
) -> pd.DataFrame:
    """The hint rows of one prefix in a one-group window (columns :data:`HINT_COLUMNS`)."""
    names = tool_names(snapshot)
    lookup = {name: code for code, name in enumerate(names.tolist())}
    if any(tool not in lookup for tool in prefix):  # no plan can have this prefix
        return _tested(_Rows(*[np.empty(0, np.int64)] * 6), names, options.fdr)[HINT_COLUMNS]
    steps = _read(snapshot, window, goal_type, len(prefix))
    codes = np.array([lookup[t] for t in prefix], dtype=np.int64)
    matching = np.all(steps.tools[:, : len(prefix)] == codes, axis=1)
    node = np.zeros(int(matching.sum()), dtype=np.int64)
    rows = _level_rows(node, steps.tools[matching, len(prefix)], steps.succeeded[matching],
                       1, len(names))  # fmt: skip
    rows = rows.where(rows.plans >= options.min_support)
    return _ranked(_tested(rows, names, options.fdr))[HINT_COLUMNS]
