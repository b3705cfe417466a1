"""Next-step hints as SQL aggregations, for engines that keep the steps (Spark).

:mod:`metalearn._hints` reads each plan's first steps into a matrix and grows the prefix
trie in numpy. Here the engine grows it, depth by depth, and the driver receives only the
(prefix node, next tool) counts of the prefixes in at least ``min_support`` plans:

* ``ml_nodes_0`` is every plan of the window (of the goal type, if given) under the root;
* at depth d, each plan's next tool is its step ``d`` (none: it ended), and the rows are
  the (node, next tool) counts of the nodes holding ``min_support`` plans (a window count
  on the engine prunes the rest: a prefix is never in more plans than its parent);
* the plans going on move to their child node: the children of the kept nodes get dense
  ids on the driver (a small table) and go back as a dictionary.

The rows then become the trie :func:`metalearn._hints._table_frame` reads, so the tests,
q-values and ranking are the numpy path's own code; ``tests/test_pattern_sql.py`` pins the
two paths to each other on DuckDB.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
from numpy.typing import NDArray

from metalearn import _queries as q
from metalearn._analysis import tool_names
from metalearn._hints import _ENDED, _ranked, _Rows, _table_frame, _tested, _Trie
from metalearn._pattern_sql import EngineJob, QueryEngine, int_table
from metalearn._queries import HintOptions, Window
from metalearn._results import HINT_COLUMNS, HINT_TABLE_COLUMNS, HintTable

__all__ = ["hint_table_on_engine", "next_step_hints_on_engine"]

Ints = NDArray[np.int64]

_ROOT = f"SELECT seq, succeeded, 0::BIGINT AS node FROM window_plans WHERE {q.HINT_GOAL}"

_TOTALS = (
    "SELECT count(*) AS plans, count(*) FILTER (WHERE succeeded) AS successes "
    f"FROM window_plans WHERE {q.HINT_GOAL}"
)

_ROWS = """
, counted AS (SELECT *, count(*) OVER (PARTITION BY node) AS node_plans FROM {nodes})
SELECT n.node, coalesce(s.tool_id, -1) AS next_tool,
       count(*) AS plans, count(*) FILTER (WHERE n.succeeded) AS successes
FROM counted AS n LEFT JOIN window_steps AS s ON s.seq = n.seq AND s.step_index = $depth
WHERE n.node_plans >= $min_support
GROUP BY ALL
"""

_CHILDREN = """
SELECT n.seq, n.succeeded, d.id AS node
FROM {nodes} AS n JOIN window_steps AS s ON s.seq = n.seq AND s.step_index = $depth
JOIN ml_hint_dict AS d ON d.key = n.node * $n_tools + s.tool_id
"""


class _Grower(EngineJob):
    """Grows the frequent part of the prefix trie of one window on a query engine."""

    def __init__(
        self,
        engine: QueryEngine,
        window: Window,
        options: HintOptions,
        goal_type: str | None,
        n_tools: int,
    ) -> None:
        super().__init__(engine, window, goal_type=goal_type, min_support=options.min_support,
                         n_tools=n_tools)  # fmt: skip
        self.options, self.n_tools = options, n_tools

    def totals(self) -> tuple[int, int]:
        """The window's plans (of the goal type) and their successes."""
        totals = self.arrow(_TOTALS).to_pylist()[0]
        return int(totals["plans"]), int(totals["successes"] or 0)

    def grow(self, depth: int, path: tuple[int, ...] | None = None) -> _Trie:
        """Rows of every depth up to ``depth`` (only along ``path``'s tools, when given)."""
        trie = _Trie([], [np.zeros((1, 0), np.int64)], [np.zeros(1, np.int64)])
        nodes = self.materialize("ml_hint_nodes_0", _ROOT)
        for level in range(depth + 1):
            table = self.arrow(_ROWS.format(nodes=nodes), {"depth": level})
            rows = _level(table, len(trie.group[-1]))
            trie.add(rows)
            children = _children(rows, self.n_tools, None if path is None else path[level:])
            if level == depth or children.size == 0:
                break
            self.upload("ml_hint_dict", int_table(key=children, id=np.arange(children.size)))
            parent = children // self.n_tools
            trie.prefix.append(
                np.hstack([trie.prefix[-1][parent], (children % self.n_tools)[:, None]])
            )
            trie.group.append(trie.group[-1][parent])
            child = self.materialize(f"ml_hint_nodes_{level + 1}",
                                     _CHILDREN.format(nodes=nodes), {"depth": level})  # fmt: skip
            self.drop("ml_hint_dict")
            self.drop(nodes)
            nodes = child
        return trie


def _level(table: pa.Table, n_nodes: int) -> _Rows:
    """One depth's rows, with their node's totals (the sums over the node's rows)."""
    node = table.column("node").to_numpy().astype(np.int64)
    tool = table.column("next_tool").to_numpy().astype(np.int64)
    plans = table.column("plans").to_numpy().astype(np.int64)
    successes = table.column("successes").to_numpy().astype(np.int64)
    node_plans = np.bincount(node, weights=plans, minlength=n_nodes).astype(np.int64)
    node_wins = np.bincount(node, weights=successes, minlength=n_nodes).astype(np.int64)
    return _Rows(node, tool, plans, successes, node_plans[node], node_wins[node])


def _children(rows: _Rows, n_tools: int, path: tuple[int, ...] | None) -> Ints:
    """The sorted keys (node * tools + tool) of the kept nodes' children."""
    going_on = rows.tool != _ENDED
    if path is not None:
        going_on &= (rows.tool == path[0]) if path else np.zeros_like(going_on)
    keys: Ints = np.unique(rows.node[going_on] * n_tools + rows.tool[going_on])
    return keys


def hint_table_on_engine(
    engine: QueryEngine, window: Window, options: HintOptions, goal_type: str | None = None
) -> HintTable:
    """The :class:`HintTable` of a one-group window, counted by the engine."""
    names = tool_names(engine)
    grower = _Grower(engine, window, options, goal_type, len(names))
    try:
        n_plans, n_successes = grower.totals()
        frame = _table_frame(grower.grow(options.max_prefix), names, options)
    finally:
        grower.close()
    rows = _ranked(frame, "_depth", "prefix_text")
    return HintTable(
        hints=rows[HINT_TABLE_COLUMNS],
        n_plans=n_plans,
        n_successes=n_successes,
        options=options,
        **window.described(engine.through_seq),
    )


def next_step_hints_on_engine(
    engine: QueryEngine,
    window: Window,
    prefix: tuple[str, ...],
    options: HintOptions,
    goal_type: str | None = None,
) -> pd.DataFrame:
    """The hint rows of one prefix (columns :data:`HINT_COLUMNS`), counted by the engine.

    Only the prefix's path is grown; a rare ancestor leaves every row of the prefix under
    ``min_support``, so pruning it changes nothing.
    """
    names = tool_names(engine)
    lookup = {name: code for code, name in enumerate(names.tolist())}
    empty = _Rows(*[np.empty(0, np.int64)] * 6)
    if any(tool not in lookup for tool in prefix):  # no plan can have this prefix
        return _tested(empty, names, options.fdr)[HINT_COLUMNS]
    path = tuple(lookup[tool] for tool in prefix)
    grower = _Grower(engine, window, options, goal_type, len(names))
    try:
        trie = grower.grow(len(prefix), path)
    finally:
        grower.close()
    rows = trie.rows[len(prefix)] if len(trie.rows) > len(prefix) else empty
    rows = rows.where(rows.plans >= options.min_support)
    return _ranked(_tested(rows, names, options.fdr))[HINT_COLUMNS]
