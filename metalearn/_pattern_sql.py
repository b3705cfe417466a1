"""Pattern mining as SQL aggregations, for engines that hold the steps themselves (Spark).

The counting of :mod:`metalearn._patterns` and the rounds of :mod:`metalearn._findings`
read every step into numpy arrays; on Spark the steps stay on the cluster. Here the same
figures are aggregations run by the engine, written once in DuckDB's dialect (the engine
transpiles them), and only aggregated tables reach the driver:

* per stratum, the plans and successes (one row per stratum);
* per length, the (pattern, stratum, outcome) counts of the frequent patterns only
  (support pruning runs on the engine: a window sum per pattern);
* per findings round, the (candidate, context, holds A, outcome) counts of the candidates
  sharing a tool with A, and the distinct signatures when a finding is conditioned on.

An *occurrence* is a pattern and the step where it ends. Length 1: every step. Each
occurrence of a frequent pattern is extended by each of the next ``max_gap + 1`` steps of
its plan (the next step when contiguous); a pattern's support is the number of distinct
plans among its occurrences. Frequent patterns get dense ids on the driver (their table
is small) and go back as a dictionary, so a pattern's key at the next length is
``id * tools + tool``. Apriori pruning by prefix is exact (a pattern is never in more plans
than its prefix), so the frequent patterns and their counts are those the numpy path
finds. The statistics then run on the driver with the very code of the numpy path, and
``tests/test_pattern_sql.py`` pins the two paths to each other on DuckDB.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from metalearn import _queries as q
from metalearn._analysis import Queryable, tool_names
from metalearn._errors import InvalidArgumentError
from metalearn._findings import PresenceCounts
from metalearn._patterns import (
    _Counts,
    _pattern_rows,
    _Screen,
    _Strata,
    _with_findings,
)
from metalearn._queries import PatternOptions, Window
from metalearn._results import PatternReport

__all__ = ["EngineJob", "QueryEngine", "extract_on_engine", "int_table"]

Ints = NDArray[np.int64]


class QueryEngine(Queryable, Protocol):
    """What the shared aggregations need of a snapshot: queries and its own temp tables.

    SQL is DuckDB's dialect with ``$name`` parameters; table names are the job's own.
    """

    through_seq: int

    def materialize(self, name: str, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Store a query's result as this job's table ``name``."""

    def upload(self, name: str, table: pa.Table) -> None:
        """Make a small driver-side table this job's table ``name``."""

    def drop(self, name: str) -> None:
        """Forget this job's table ``name`` (materialized or uploaded)."""


_PLANS = """
, strata AS (SELECT {stratum} AS stratum, seq, succeeded FROM window_plans),
codes AS (  -- strata numbered as the numpy path does: missing first, then by name
    SELECT stratum, row_number() OVER (ORDER BY stratum NULLS FIRST) - 1 AS code
    FROM strata GROUP BY stratum
)
SELECT s.seq, s.succeeded, c.code AS stratum, 0 AS signature
FROM strata AS s JOIN codes AS c ON s.stratum IS NOT DISTINCT FROM c.stratum
"""

_STRATA = """
SELECT stratum, count(*) AS plans, count(*) FILTER (WHERE succeeded) AS successes
FROM ml_plans GROUP BY ALL ORDER BY stratum
"""

# Length 1: a tool's first call in each plan is the plan's one first occurrence.
_FIRSTS_1 = "SELECT seq, tool_id AS key FROM window_steps WHERE first_in_plan"

# Length L from the occurrences of length L - 1 whose pattern is frequent (ml_dict).
_OCCURRENCES = """
SELECT {distinct} o.seq, s.step_index AS e, d.id * $n_tools + s.tool_id AS key
FROM {previous} AS o JOIN ml_dict AS d ON o.key = d.key
JOIN window_steps AS s ON s.seq = o.seq AND {reach}
"""
_STEP_OCCURRENCES = "(SELECT seq, step_index AS e, tool_id AS key FROM window_steps)"

_FIRSTS = "SELECT DISTINCT seq, key FROM {occurrences}"

# The (pattern, stratum, outcome) cells of the frequent patterns only.
_CELLS = """
, cells AS (
    SELECT f.key, p.stratum, p.succeeded, count(*) AS n
    FROM {firsts} AS f JOIN ml_plans AS p ON f.seq = p.seq GROUP BY ALL
)
SELECT key, stratum, succeeded, n
FROM (SELECT *, sum(n) OVER (PARTITION BY key) AS support FROM cells)
WHERE support >= $min_support
"""

_KEPT = "SELECT f.seq, f.key FROM {firsts} AS f JOIN ml_paired AS k ON f.key = k.key"

_PAIRS = "SELECT m.row, k.seq FROM {kept} AS k JOIN {rows} AS m ON k.key = m.key"

_NO_PAIRS = "SELECT 0::BIGINT AS row, seq FROM ml_plans WHERE false"

_CONTEXTS = """
SELECT stratum * $signatures + signature AS context,
       count(*) AS plans, count(*) FILTER (WHERE succeeded) AS wins
FROM {state} GROUP BY ALL
"""

_HOLDS = "WITH holds AS (SELECT seq FROM ml_pairs WHERE row = $a)\n"
_HELD = "CASE WHEN h.seq IS NULL THEN 0 ELSE 1 END"

_CELLS_GIVEN = (
    _HOLDS
    + """
SELECT g.i, s.stratum * $signatures + s.signature AS context, h.seq IS NOT NULL AS with_a,
       s.succeeded, count(*) AS n
FROM ml_pairs AS p JOIN ml_given AS g ON p.row = g.row
JOIN {state} AS s ON s.seq = p.seq LEFT JOIN holds AS h ON h.seq = p.seq
GROUP BY ALL
"""
)

_SIGNATURES = (
    _HOLDS
    + f"SELECT DISTINCT s.signature * 2 + {_HELD} AS combined "
    + "FROM {state} AS s LEFT JOIN holds AS h ON h.seq = s.seq"
)

_CONDITIONED = (
    _HOLDS
    + "SELECT s.seq, s.succeeded, s.stratum, c.code AS signature "
    + "FROM {state} AS s LEFT JOIN holds AS h ON h.seq = s.seq "
    + f"JOIN ml_codes AS c ON c.combined = s.signature * 2 + {_HELD}"
)


def _used(sql: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters ``sql`` names (DuckDB refuses any other)."""
    return {name: value for name, value in params.items() if re.search(rf"\${name}\b", sql)}


def int_table(**columns: Any) -> pa.Table:
    return pa.table({name: pa.array(np.asarray(v, np.int64)) for name, v in columns.items()})


@dataclass
class _Level:
    """One length's frequent patterns as the driver knows them, and its engine tables."""

    counts: _Counts
    keys: Ints  # the patterns' keys, sorted (a pattern's row in counts is its index)
    kept: str | None  # the engine table of (seq, key) for the patterns that may be significant


class EngineJob:
    """One analysis on a query engine: its window, parameters and temporary tables."""

    def __init__(self, engine: QueryEngine, window: Window, **params: Any) -> None:
        if window.per_agent:
            raise InvalidArgumentError("an analysis on a query engine takes one group")
        self.engine, self.window = engine, window
        self.params = {**window.params, **params}
        self.temporary: list[str] = []

    def sql(self, text: str) -> str:
        """A query over the window's plans and steps (its CTEs first)."""
        return self.window.sql(q.PATTERN_WINDOW) + text

    def arrow(
        self, text: str, params: Mapping[str, Any] | None = None, *, window: bool = True
    ) -> pa.Table:
        """Run a query (``window``: after the window's CTEs); the result from the engine."""
        sql = self.sql(text) if window else text
        return self.engine.arrow(sql, _used(sql, {**self.params, **(params or {})}))

    def materialize(
        self, name: str, text: str, params: Mapping[str, Any] | None = None, *, window: bool = True
    ) -> str:
        """Store a query as the table ``name`` (``window``: after the window's CTEs)."""
        sql = self.sql(text) if window else text
        self.engine.materialize(name, sql, _used(sql, {**self.params, **(params or {})}))
        self.temporary.append(name)
        return name

    def upload(self, name: str, table: pa.Table) -> str:
        self.engine.upload(name, table)
        self.temporary.append(name)
        return name

    def drop(self, name: str) -> None:
        self.engine.drop(name)
        self.temporary.remove(name)

    def close(self) -> None:
        """Drop every table the job still has."""
        for name in reversed(self.temporary.copy()):
            self.drop(name)


class _Miner(EngineJob):
    """Counts the frequent patterns of one window on a query engine."""

    def __init__(
        self, engine: QueryEngine, window: Window, options: PatternOptions, n_tools: int
    ) -> None:
        super().__init__(engine, window, min_support=options.min_support)
        self.options, self.n_tools = options, n_tools

    def strata(self) -> _Strata:
        stratum = "NULL::VARCHAR" if self.options.stratify_by is None else self.options.stratify_by
        self.materialize("ml_plans", _PLANS.format(stratum=stratum))
        table = self.engine.arrow(_STRATA)
        codes = table.column("stratum").to_numpy()
        size = max(int(codes.max()) + 1, 1) if len(codes) else 1
        plans, wins = np.zeros(size, np.int64), np.zeros(size, np.int64)
        plans[codes] = table.column("plans").to_numpy()
        wins[codes] = table.column("successes").to_numpy()
        return _Strata(plans, wins, np.zeros(0, np.int64))

    def levels(self, strata: _Strata, screen: _Screen) -> list[_Level]:
        """The frequent patterns of every length (those below ``min_length`` only prune)."""
        options, found = self.options, []
        n_strata = strata.plans.size
        decode: Ints = np.arange(self.n_tools, dtype=np.int64)[:, None]
        firsts, occurrences = self.materialize("ml_firsts_1", _FIRSTS_1), _STEP_OCCURRENCES
        for length in range(1, options.max_length + 1):
            if length > 1:
                extended = self._extend(occurrences, length)
                if occurrences != _STEP_OCCURRENCES:
                    self.drop(occurrences)
                occurrences = extended
                firsts = self.materialize(f"ml_firsts_{length}", _FIRSTS.format(
                    occurrences=occurrences))  # fmt: skip
            cells = self.arrow(_CELLS.format(firsts=firsts))
            keys, by_stratum, wins = _cell_matrices(cells, n_strata)
            if keys.size == 0:
                self.drop(firsts)
                break
            decode = (
                np.hstack([decode[keys // self.n_tools], (keys % self.n_tools)[:, None]])
                if length > 1
                else keys[:, None]
            )
            if length >= options.min_length:
                fisher, may = screen.apply(by_stratum, wins)
                kept = self._kept(firsts, keys[may], length)
                no_pairs = np.zeros(0, np.int32)  # they stay on the engine (ml_kept_*)
                counts = _Counts(decode, by_stratum.sum(axis=1), wins.sum(axis=1),
                                 by_stratum, wins, no_pairs, no_pairs, fisher)  # fmt: skip
                found.append(_Level(counts, keys, kept))
            self.drop(firsts)
            if length < options.max_length:
                if "ml_dict" in self.temporary:
                    self.drop("ml_dict")
                self.upload("ml_dict", int_table(key=keys, id=np.arange(keys.size)))
        if occurrences != _STEP_OCCURRENCES:
            self.drop(occurrences)
        return found

    def _extend(self, previous: str, length: int) -> str:
        gap = self.options.max_gap
        reach = (
            "s.step_index = o.e + 1"
            if gap == 0
            else f"s.step_index > o.e AND s.step_index <= o.e + {gap + 1}"
        )
        # Contiguous, one pattern of each length ends at each step: no repeats to remove.
        text = _OCCURRENCES.format(distinct="DISTINCT" if gap else "", previous=previous,
                                   reach=reach)  # fmt: skip
        return self.materialize(f"ml_occurrences_{length}", text, {"n_tools": self.n_tools})

    def _kept(self, firsts: str, keys: Ints, length: int) -> str | None:
        if keys.size == 0:
            return None
        self.upload("ml_paired", int_table(key=keys))
        kept = self.materialize(f"ml_kept_{length}", _KEPT.format(firsts=firsts))
        self.drop("ml_paired")
        return kept

    def pairs(self, levels: list[_Level], order: Ints, significant: NDArray[np.bool_]) -> None:
        """``ml_pairs``: the (row of the sorted table, plan) pairs of the significant rows."""
        position = np.empty(len(order), np.int64)
        position[order] = np.arange(len(order))
        start, parts, uploaded = 0, list[str](), list[str]()
        for level in levels:
            rows = position[start : start + level.keys.size]
            start += level.keys.size
            chosen = significant[rows]
            if level.kept is None or not chosen.any():
                continue
            name = self.upload(f"ml_rows_{len(parts)}",
                               int_table(key=level.keys[chosen], row=rows[chosen]))  # fmt: skip
            uploaded.append(name)
            parts.append(_PAIRS.format(kept=level.kept, rows=name))
        union = "\nUNION ALL\n".join(parts) or _NO_PAIRS
        self.materialize("ml_pairs", union)
        # The rounds read ml_pairs only: what it was built from need not be kept.
        for name in [*(level.kept for level in levels if level.kept), *uploaded]:
            self.drop(name)


def _cell_matrices(cells: pa.Table, n_strata: int) -> tuple[Ints, Ints, Ints]:
    """Sorted pattern keys and their (patterns, strata) plan and success counts."""
    key = cells.column("key").to_numpy().astype(np.int64)
    keys, row = np.unique(key, return_inverse=True)
    stratum = cells.column("stratum").to_numpy().astype(np.int64)
    won = cells.column("succeeded").to_numpy(zero_copy_only=False).astype(bool)
    n = cells.column("n").to_numpy().astype(np.int64)
    plans = np.zeros((keys.size, n_strata), np.int64)
    wins = np.zeros((keys.size, n_strata), np.int64)
    np.add.at(plans, (row, stratum), n)
    np.add.at(wins, (row[won], stratum[won]), n[won])
    return keys, plans, wins


class _EngineCounts:
    """:class:`~metalearn._findings.PresenceCounts` on the engine (``ml_pairs``)."""

    def __init__(self, miner: _Miner, n_strata: int) -> None:
        self.miner, self.n_strata = miner, n_strata
        self.state, self.signatures, self._versions = "ml_plans", 1, itertools.count(1)

    def _arrow(self, text: str, **params: Any) -> pa.Table:
        return self.miner.arrow(text.format(state=self.state), params, window=False)

    def contexts(self) -> tuple[Ints, Ints]:
        table = self._arrow(_CONTEXTS, signatures=self.signatures)
        size = self.n_strata * self.signatures
        plans, wins = np.zeros(size, np.int64), np.zeros(size, np.int64)
        context = table.column("context").to_numpy().astype(np.int64)
        plans[context] = table.column("plans").to_numpy()
        wins[context] = table.column("wins").to_numpy()
        return plans, wins

    def cells(self, a: int, rows: Ints) -> tuple[Ints, Ints, Ints]:
        given = self.miner.upload("ml_given", int_table(row=np.append(rows, a),
                                                         i=np.arange(rows.size + 1)))  # fmt: skip
        try:
            table = self._arrow(_CELLS_GIVEN, a=a, signatures=self.signatures)
        finally:
            self.miner.drop(given)
        contexts = self.n_strata * self.signatures
        cells = np.zeros((rows.size + 1, contexts, 2, 2), np.int64)
        index = tuple(
            table.column(name).to_numpy(zero_copy_only=False).astype(np.int64)
            for name in ("i", "context", "with_a", "succeeded")
        )
        cells[index] = table.column("n").to_numpy()
        mine = cells[-1, :, 1, :]
        return mine.sum(axis=1), np.ascontiguousarray(mine[:, 1]), cells[:-1]

    def condition_on(self, a: int) -> None:
        combined = self._arrow(_SIGNATURES, a=a).column("combined").to_numpy()
        # Plans without steps keep signature 0, so 0 stays code 0 (as in the numpy path).
        uniques = np.union1d(combined.astype(np.int64), [0])
        codes = self.miner.upload("ml_codes", int_table(combined=uniques,
                                                         code=np.arange(uniques.size)))  # fmt: skip
        state = self.miner.materialize(f"ml_state_{next(self._versions)}",
                                       _CONDITIONED.format(state=self.state), {"a": a},
                                       window=False)  # fmt: skip
        self.miner.drop(codes)
        if self.state != "ml_plans":
            self.miner.drop(self.state)
        self.state, self.signatures = state, int(uniques.size)


def extract_on_engine(
    engine: QueryEngine, window: Window, options: PatternOptions
) -> PatternReport:
    """The :class:`PatternReport` of a one-group window, counted by the engine."""
    names = tool_names(engine)
    miner = _Miner(engine, window, options, len(names))
    try:
        strata = miner.strata()
        n_plans, n_successes = int(strata.plans.sum()), int(strata.successes.sum())
        stratified = options.stratify_by is not None
        if not stratified:
            strata = _Strata(np.array([n_plans]), np.array([n_successes]), strata.plan_stratum)
        screen = _Screen(options.fdr, strata.plans, strata.successes, stratified)
        levels = miner.levels(strata, screen)
        counts = [level.counts for level in levels]
        frame, order = _pattern_rows(counts, names, n_plans, n_successes, options, strata)

        def presence(significant: NDArray[np.bool_]) -> PresenceCounts:
            miner.pairs(levels, order, significant)
            return _EngineCounts(miner, strata.plans.size)

        patterns = _with_findings(frame, order, counts, strata, options, n_plans,
                                  n_successes, presence)  # fmt: skip
    finally:
        miner.close()
    return PatternReport(
        patterns=patterns,
        baseline_rate=n_successes / n_plans if n_plans else float("nan"),
        n_plans=n_plans,
        n_successes=n_successes,
        options=options,
        **window.described(engine.through_seq),
    )
