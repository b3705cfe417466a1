"""Successful patterns: contiguous tool sequences whose presence raises or lowers success.

Counting works on integer-coded arrays (a plan index and a tool id per step, in plan and
step order) and is vectorised per length: an n-gram's id is the dense id of its
(n-1)-prefix combined with its last tool, distinct (plan, n-gram) pairs are found by
hashing, and supports come from ``bincount``. Apriori pruning keeps it fast: a sequence
can only reach ``min_support`` plans if its prefix and suffix do, so positions whose
prefix or suffix is rare are dropped before the next length. Statistics for all patterns
are computed at once (:mod:`metalearn._stats`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from metalearn import _queries as q
from metalearn._analysis import with_rates
from metalearn._arrays import dense_codes, first_occurrences
from metalearn._queries import PatternOptions, Window
from metalearn._results import PATTERN_COLUMNS, PatternReport
from metalearn._stats import benjamini_hochberg, fisher_exact_two_sided
from metalearn._warehouse import Snapshot

__all__ = ["count_patterns", "extract", "extract_groups"]

Ints = NDArray[np.int64]


@dataclass(frozen=True)
class _Counts:
    """Supports of the frequent patterns of one length."""

    tools: Ints  # (patterns, length) tool ids
    plans: Ints
    successes: Ints


def _distinct_plan_counts(
    gram: Ints, first: NDArray[np.bool_], in_success: NDArray[np.bool_], n_grams: int
) -> tuple[Ints, Ints]:
    """Per n-gram id: plans containing it at least once, and how many of those succeeded.

    Counts only each n-gram's first occurrence in its plan (no hashing of pairs);
    ``in_success`` flags the n-grams (by start step) of plans that succeeded.
    """
    support = np.bincount(gram[first], minlength=n_grams)
    successes = np.bincount(gram[first & in_success], minlength=n_grams)
    return support.astype(np.int64, copy=False), successes.astype(np.int64, copy=False)


def count_patterns(
    plan: Ints,
    tool: Ints,
    offset: Ints,
    succeeded: NDArray[np.bool_],
    n_tools: int,
    *,
    min_length: int,
    max_length: int,
    min_support: int,
    first_call: NDArray[np.bool_] | None = None,
) -> list[_Counts]:
    """Frequent contiguous n-grams of tool ids, lengths ``min_length..max_length``.

    One entry per step, grouped by plan in step order: ``plan`` (index into
    ``succeeded``), ``tool`` (id) and ``offset`` (position within the plan).
    ``first_call`` (each tool's first call in its plan), when known, saves a pass.
    """
    ids, valid = tool.astype(np.int64), np.ones(len(tool), dtype=bool)
    decode: Ints = np.arange(n_tools, dtype=np.int64)[:, None]
    found = []
    first = first_occurrences(ids, offset) if first_call is None else first_call
    in_success = succeeded[plan]  # per step: its plan succeeded
    for length in range(1, max_length + 1):
        if length > 1:
            ids, valid, decode = _extend(plan, tool, ids, valid, decode, length, n_tools)
            # A sequence can only repeat in a plan where its prefix (one shorter) repeats.
            first = first_occurrences(ids, offset[: len(ids)], valid, ~first[: len(ids)])
        if not valid.any():
            break
        n_grams = len(decode)
        support, successes = _distinct_plan_counts(ids, first, in_success[: len(ids)], n_grams)
        frequent = support >= min_support
        if length >= min_length:
            found.append(_Counts(decode[frequent], support[frequent], successes[frequent]))
        valid &= frequent[np.where(valid, ids, 0)]
    return found


def _extend(
    plan: Ints,
    tool: Ints,
    ids: Ints,
    valid: NDArray[np.bool_],
    decode: Ints,
    length: int,
    n_tools: int,
) -> tuple[Ints, NDArray[np.bool_], Ints]:
    """From frequent (length-1)-grams at each start position to length-grams."""
    starts = len(tool) - length + 1
    if starts <= 0:
        return np.empty(0, np.int64), np.empty(0, bool), np.empty((0, length), np.int64)
    extendable = valid[:starts] & valid[1 : starts + 1] & (plan[:starts] == plan[length - 1 :])
    combined = ids[:starts] * n_tools + tool[length - 1 :]
    codes, uniques = dense_codes(combined[extendable])
    new_ids = np.full(starts, -1, dtype=np.int64)
    new_ids[extendable] = codes
    new_decode = np.hstack([decode[uniques // n_tools], (uniques % n_tools)[:, None]])
    return new_ids, extendable, new_decode


def _pattern_rows(
    counts: list[_Counts], names: NDArray[np.object_], n_plans: int, n_successes: int, fdr: float
) -> pd.DataFrame:
    patterns = [tuple(row) for c in counts for row in names[c.tools].tolist()]
    frame = pd.DataFrame(
        {
            "pattern": pd.Series(patterns, dtype=object),
            "pattern_text": pd.Series([" → ".join(p) for p in patterns], dtype="str"),
            "length": np.array([len(p) for p in patterns], dtype=np.int64),
            "plans": np.concatenate([c.plans for c in counts]) if counts else np.empty(0, np.int64),
            "successes": (
                np.concatenate([c.successes for c in counts]) if counts else np.empty(0, np.int64)
            ),
        }
    )
    frame = with_rates(frame)
    baseline = n_successes / n_plans if n_plans else np.nan
    p_values = fisher_exact_two_sided(frame["successes"], frame["plans"], n_successes, n_plans)
    q_values = benjamini_hochberg(p_values)
    frame = frame.assign(
        lift=frame["success_rate"] / baseline,
        p_value=p_values,
        q_value=q_values,
        significant=q_values <= fdr,
    )
    frame["direction"] = pd.Series(
        np.where(frame["lift"] > 1, "success", "failure"), index=frame.index, dtype="str"
    )
    frame = frame.sort_values(["p_value", "plans", "pattern_text"], ascending=[True, False, True])
    return frame[PATTERN_COLUMNS].reset_index(drop=True)


@dataclass(frozen=True)
class _Steps:
    """A window's steps as integer arrays, in plan and step order."""

    plan: Ints  # plan index of each step (0..plans-1 among plans with steps)
    tool: Ints
    offset: Ints  # position within the plan (step_index)
    first_call: NDArray[np.bool_]  # the tool's first call in its plan (from the warehouse)
    succeeded: NDArray[np.bool_]  # per plan
    plan_group: Ints  # per plan: index into groups (or all 0 when ungrouped)
    groups: list[str | None]

    @classmethod
    def read(cls, steps: pa.Table, per_agent: bool) -> _Steps:
        seq = steps.column("seq").to_numpy()
        offset = steps.column("step_index").to_numpy().astype(np.int64)
        if not _in_plan_order(seq, offset):  # stored order is kept by DuckDB; never trust
            order = np.lexsort((offset, seq))
            steps, seq, offset = steps.take(order), seq[order], offset[order]
        change = np.empty(len(seq), dtype=bool)
        change[:1] = True
        np.not_equal(seq[1:], seq[:-1], out=change[1:])
        starts = np.flatnonzero(change)
        succeeded = steps.column("succeeded").to_numpy(zero_copy_only=False).astype(bool)
        plan_group = np.zeros(len(starts), np.int64)
        groups: list[str | None] = [None]
        if per_agent:
            keys = pc.dictionary_encode(steps.column("group_key").take(starts)).combine_chunks()
            plan_group = keys.indices.to_numpy(zero_copy_only=False).astype(np.int64)
            groups = keys.dictionary.to_pylist()
        return cls(
            plan=np.cumsum(change) - 1,
            tool=steps.column("tool_id").to_numpy().astype(np.int64),
            offset=offset,
            first_call=steps.column("first_in_plan").to_numpy(zero_copy_only=False).astype(bool),
            succeeded=succeeded[starts],
            plan_group=plan_group,
            groups=groups,
        )

    def of_group(self, key: str | None) -> NDArray[np.bool_]:
        """Which steps belong to plans of the group ``key``."""
        if key not in self.groups:
            return np.zeros(len(self.plan), dtype=bool)
        in_group: NDArray[np.bool_] = (self.plan_group == self.groups.index(key))[self.plan]
        return in_group


def _in_plan_order(seq: Ints, offset: Ints) -> bool:
    same_plan = seq[1:] == seq[:-1]
    return bool(np.all(np.where(same_plan, offset[1:] == offset[:-1] + 1, seq[1:] > seq[:-1])))


def _report(
    steps: _Steps,
    names: NDArray[np.object_],
    rows: NDArray[np.bool_] | slice,
    options: PatternOptions,
    n_plans: int,
    n_successes: int,
) -> pd.DataFrame:
    """The pattern table of the steps selected by ``rows`` (plan indexes stay global)."""
    counts = count_patterns(
        steps.plan[rows], steps.tool[rows], steps.offset[rows], steps.succeeded,
        len(names), min_length=options.min_length, max_length=options.max_length,
        min_support=options.min_support, first_call=steps.first_call[rows],
    )  # fmt: skip
    return _pattern_rows(counts, names, n_plans, n_successes, options.fdr)


def extract_groups(
    snapshot: Snapshot, window: Window, options: PatternOptions
) -> dict[str | None, PatternReport]:
    """Mine and test the patterns of each group of ``window`` (one query for all groups)."""
    totals = snapshot.frame(window.sql(q.PATTERN_PLANS), window.params)
    steps = _Steps.read(snapshot.arrow(window.sql(q.PATTERN_STEPS), window.params),
                        window.per_agent)  # fmt: skip
    names = np.array(snapshot.arrow(q.TOOLS).column("tool").to_pylist(), dtype=object)
    reports = {}
    for key in window.groups:
        row = totals[totals["group_key"] == key] if window.per_agent else totals
        n_plans = int(row["plans"].sum())
        n_successes = int(row["successes"].sum())
        # An ungrouped window takes every step: a slice, so no array is copied.
        rows = steps.of_group(key) if window.per_agent else slice(None)
        reports[key] = PatternReport(
            patterns=_report(steps, names, rows, options, n_plans, n_successes),
            baseline_rate=n_successes / n_plans if n_plans else float("nan"),
            n_plans=n_plans,
            n_successes=n_successes,
            agent_id=key if window.per_agent else window.agent_id,
            time_range_days=window.time_range_days,
            as_of=window.as_of,
            options=options,
            through_seq=snapshot.through_seq,
        )
    return reports


def extract(snapshot: Snapshot, window: Window, options: PatternOptions) -> PatternReport:
    """The :class:`PatternReport` of a one-group window."""
    return extract_groups(snapshot, window, options)[None]
