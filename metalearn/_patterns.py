"""Successful patterns: tool sequences whose presence raises or lowers success.

Contiguous by default; with ``max_gap`` other steps may come between consecutive tools
(:func:`count_gapped_patterns`).

Counting works on integer-coded arrays (a plan index and a tool id per step, in plan and
step order) and is vectorised per length: an n-gram's id is the dense id of its
(n-1)-prefix combined with its last tool, distinct (plan, n-gram) pairs are found by
hashing, and supports come from ``bincount``. Apriori pruning keeps it fast: a sequence
can only reach ``min_support`` plans if its prefix and suffix do, so positions whose
prefix or suffix is rare are dropped before the next length. Statistics for all patterns
are computed at once (:mod:`metalearn._stats`).

Stratified (``stratify_by``, goal type by default), every first occurrence is counted
under an ``n-gram * strata + stratum`` code, so one ``bincount`` per length gives the
patterns x strata tables the Mantel-Haenszel, CMH and Breslow-Day figures reduce over.
The (n-gram, plan) pairs of the n-grams that can still be significant are kept (int32)
for the findings rule (:mod:`metalearn._findings`); ``plans_needed`` comes last.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from metalearn import _queries as q
from metalearn._analysis import tool_names, with_rates
from metalearn._arrays import dense_codes, first_occurrences
from metalearn._findings import Presence, PresenceCounts, findings
from metalearn._queries import PatternOptions, Window
from metalearn._results import PATTERN_COLUMNS, PatternReport, pattern_text
from metalearn._stats import (
    StratifiedTests,
    benjamini_hochberg,
    bh_threshold,
    cmh_p_values,
    fisher_exact_two_sided,
    plans_needed,
    stratified_tests,
)
from metalearn._warehouse import Snapshot

__all__ = ["count_gapped_patterns", "count_patterns", "extract", "extract_groups"]

Ints = NDArray[np.int64]


@dataclass(frozen=True)
class _Counts:
    """Supports of the frequent patterns of one length, in total and per stratum."""

    tools: Ints  # (patterns, length) tool ids
    plans: Ints
    successes: Ints
    strata_plans: Ints  # (patterns, strata)
    strata_successes: Ints
    pair_row: NDArray[np.int32]  # each (pattern, plan) pair: the pattern's row in `tools`
    pair_plan: NDArray[np.int32]  # ... and the plan
    p_value: NDArray[np.float64] | None = None  # Fisher's, when a _Screen computed it


@dataclass(frozen=True)
class _Screen:
    """Which n-grams could turn out significant, so only their plans are kept as pairs.

    A significant row has q <= fdr, so its p-value is at most ``fdr``: the CMH p-value
    within the strata of ``plans``/``successes`` when stratified, else Fisher's pooled p.
    Fisher's p-values computed here (pooled) are handed on to the report, so screening
    costs only its extra calls (one per length instead of one in all).
    """

    fdr: float
    plans: Ints  # per stratum (one stratum: pooled)
    successes: Ints
    stratified: bool

    def apply(
        self, by_stratum: Ints, wins: Ints
    ) -> tuple[NDArray[np.float64] | None, NDArray[np.bool_]]:
        """Fisher's p-values of these n-grams (pooled only), and which may be significant."""
        if self.stratified:
            p = cmh_p_values(wins, by_stratum, self.successes[None, :], self.plans[None, :])
            return None, np.nan_to_num(p, nan=1.0) <= self.fdr
        x, k = by_stratum.sum(axis=1), wins.sum(axis=1)
        fisher = fisher_exact_two_sided(k, x, int(self.successes.sum()), int(self.plans.sum()))
        return fisher, fisher <= self.fdr


@dataclass(frozen=True)
class _Firsts:
    """The first occurrence of each n-gram in each plan: one entry per (n-gram, plan)."""

    gram: Ints
    plan: NDArray[np.int32]

    @classmethod
    def of(cls, gram: Ints, first: NDArray[np.bool_], plan: NDArray[np.int32]) -> _Firsts:
        at = np.flatnonzero(first[: len(gram)])
        return cls(gram[at], plan[at])

    def counts(self, outcome: Ints, n_grams: int, n_strata: int) -> tuple[Ints, Ints]:
        """Per n-gram and stratum: plans containing it, and how many of those succeeded.

        ``outcome`` is each plan's ``stratum * 2 + succeeded``. Counting first occurrences
        only needs no hashing of (plan, n-gram) pairs; one ``bincount`` over
        ``n-gram * 2 * n_strata + outcome`` codes gives both (n_grams, n_strata) matrices.
        """
        code = self.gram * (2 * n_strata) + outcome[self.plan]
        counted = np.bincount(code, minlength=n_grams * n_strata * 2)
        cells = counted.astype(np.int64, copy=False).reshape(n_grams, n_strata, 2)
        return cells.sum(axis=2), np.ascontiguousarray(cells[:, :, 1])


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
    stratum: Ints | None = None,
    n_strata: int = 1,
    screen: _Screen | None = None,
) -> list[_Counts]:
    """Frequent contiguous n-grams of tool ids, lengths ``min_length..max_length``.

    One entry per step, grouped by plan in step order: ``plan`` (index into
    ``succeeded``), ``tool`` (id) and ``offset`` (position within the plan).
    ``first_call`` (each tool's first call in its plan), when known, saves a pass.
    ``stratum`` (per plan, ``0..n_strata-1``) splits every count by stratum.
    ``screen`` keeps the (n-gram, plan) pairs only of the n-grams that may turn out
    significant (at a million plans the others' pairs are most of the memory).
    """
    ids, valid = tool.astype(np.int64), np.ones(len(tool), dtype=bool)
    decode: Ints = np.arange(n_tools, dtype=np.int64)[:, None]
    found: list[_Counts] = []
    first = first_occurrences(ids, offset) if first_call is None else first_call
    strata = max(n_strata, 1) if stratum is not None else 1
    outcome = _outcomes(succeeded, stratum)
    plan32 = plan.astype(np.int32)  # half the memory traffic of the per-length passes
    for length in range(1, max_length + 1):
        if length > 1:
            ids, valid, decode = _extend(plan32, tool, ids, valid, decode, length, n_tools)
            # A sequence can only repeat in a plan where its prefix (one shorter) repeats.
            first = first_occurrences(ids, offset[: len(ids)], valid, ~first[: len(ids)])
        if not valid.any():
            break
        firsts = _Firsts.of(ids, first, plan32)
        frequent = _count_length(found, firsts, decode, outcome, strata, min_support,
                                 screen if length >= min_length else None,
                                 keep=length >= min_length)  # fmt: skip
        # Past the last real id: the code of positions that do not extend (never frequent).
        valid = np.append(frequent, False)[ids]
    return found


def _count_length(
    found: list[_Counts],
    firsts: _Firsts,
    decode: Ints,
    outcome: Ints,
    strata: int,
    min_support: int,
    screen: _Screen | None,
    *,
    keep: bool,
) -> NDArray[np.bool_]:
    """Count one length's patterns; append the frequent ones (when ``keep``) to ``found``
    and return which are frequent (what the next length may extend)."""
    by_stratum, wins = firsts.counts(outcome, len(decode), strata)
    frequent: NDArray[np.bool_] = by_stratum.sum(axis=1) >= min_support
    if keep:
        paired, fisher = frequent, None
        if screen is not None:
            fisher, may = screen.apply(by_stratum[frequent], wins[frequent])
            paired = np.zeros_like(frequent)
            paired[frequent] = may
        found.append(_frequent(decode, by_stratum, wins, frequent, paired, firsts, fisher))
    return frequent


def _outcomes(succeeded: NDArray[np.bool_], stratum: Ints | None) -> Ints:
    """Each plan's ``stratum * 2 + succeeded`` (stratum 0 when unstratified)."""
    won = succeeded.astype(np.int64)
    return won if stratum is None else stratum.astype(np.int64) * 2 + won


def count_gapped_patterns(
    plan: Ints,
    tool: Ints,
    succeeded: NDArray[np.bool_],
    n_tools: int,
    *,
    min_length: int,
    max_length: int,
    min_support: int,
    max_gap: int,
    stratum: Ints | None = None,
    n_strata: int = 1,
    screen: _Screen | None = None,
) -> list[_Counts]:
    """Frequent tool sequences with at most ``max_gap`` other steps between consecutive
    tools, lengths ``min_length..max_length`` (arguments as for :func:`count_patterns`).

    An *occurrence* is a pattern and the step where one of its embeddings ends. Length 1:
    every step. Each occurrence of a frequent pattern is extended by each of the next
    ``max_gap + 1`` steps of its plan; occurrences ending at the same step with the same
    pattern are one (however they began), so they number at most steps x patterns. One
    sort per length by (pattern, end step) drops those repeats and gives, per pattern,
    the plans holding it (its first occurrence in each plan), which is presence counted
    once per plan.

    Pruning stays valid with gaps: a plan holding ``A → … → B → … → C`` (gaps of at most
    ``max_gap``) holds ``A → … → B`` in the same places, with the same gaps, so a pattern
    is never in more plans than its prefix, and only occurrences of frequent patterns are
    extended. (Dropping a *middle* tool would not be valid: the two gaps around it add
    up, and can exceed ``max_gap``; that is why only prefixes are pruned.)
    """
    n = len(tool)
    ends, ids = np.arange(n, dtype=np.int64), tool.astype(np.int64)
    decode: Ints = np.arange(n_tools, dtype=np.int64)[:, None]
    found: list[_Counts] = []
    strata = max(n_strata, 1) if stratum is not None else 1
    outcome = _outcomes(succeeded, stratum)
    plan32 = plan.astype(np.int32)
    for length in range(1, max_length + 1):
        if length > 1:
            ends, ids, decode = _extend_gapped(plan32, tool, ends, ids, decode, n_tools, max_gap)
        if len(ends) == 0:
            break
        ends, ids, firsts = _occurrences(ends, ids, plan32)
        frequent = _count_length(found, firsts, decode, outcome, strata, min_support,
                                 screen if length >= min_length else None,
                                 keep=length >= min_length)  # fmt: skip
        kept = frequent[ids]
        ends, ids = ends[kept], ids[kept]
    return found


def _extend_gapped(
    plan: NDArray[np.int32],
    tool: Ints,
    ends: Ints,
    ids: Ints,
    decode: Ints,
    n_tools: int,
    max_gap: int,
) -> tuple[Ints, Ints, Ints]:
    """Occurrences one tool longer: each followed by any of the next ``max_gap + 1`` steps
    of its plan. Returns their end steps, dense pattern ids and the ids' tools."""
    new_ends, codes = [], []
    for gap in range(max_gap + 1):
        after = ends + 1 + gap
        inside = after < len(tool)
        inside[inside] = plan[after[inside]] == plan[ends[inside]]
        new_ends.append(after[inside])
        codes.append(ids[inside] * n_tools + tool[after[inside]])
    new_ids, uniques = dense_codes(np.concatenate(codes))
    new_decode = np.hstack([decode[uniques // n_tools], (uniques % n_tools)[:, None]])
    return np.concatenate(new_ends), new_ids, new_decode


def _occurrences(ends: Ints, ids: Ints, plan: NDArray[np.int32]) -> tuple[Ints, Ints, _Firsts]:
    """The distinct (pattern, end step) occurrences, sorted, and the first per plan."""
    n = len(plan)
    key = np.sort(ids * n + ends)
    distinct = np.empty(len(key), dtype=bool)
    distinct[:1] = True
    np.not_equal(key[1:], key[:-1], out=distinct[1:])
    key = key[distinct]
    ids, ends = key // n, key % n
    owner = plan[ends]
    first = np.empty(len(key), dtype=bool)
    first[:1] = True
    first[1:] = (ids[1:] != ids[:-1]) | (owner[1:] != owner[:-1])
    return ends, ids, _Firsts(ids[first], owner[first])


def _frequent(
    decode: Ints,
    by_stratum: Ints,
    wins: Ints,
    frequent: NDArray[np.bool_],
    paired: NDArray[np.bool_],
    firsts: _Firsts,
    fisher: NDArray[np.float64] | None,
) -> _Counts:
    """The counts of the frequent n-grams, and which plans hold each of the ``paired``
    ones (for findings)."""
    row = (np.cumsum(frequent) - 1).astype(np.int32)
    keep = paired[firsts.gram]
    strata_plans, strata_successes = by_stratum[frequent], wins[frequent]
    return _Counts(
        decode[frequent], strata_plans.sum(axis=1), strata_successes.sum(axis=1),
        strata_plans, strata_successes,
        row[firsts.gram[keep]], firsts.plan[keep], fisher,
    )  # fmt: skip


def _extend(
    plan: NDArray[np.int32],
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
    # Positions that do not extend get one code past every real one; their ids are never
    # read (``extendable`` is False there), and no mask or scatter pass is needed.
    past = len(decode) * n_tools
    np.putmask(combined, ~extendable, past)
    new_ids, uniques = dense_codes(combined)
    if uniques.size and uniques[-1] == past:
        uniques = uniques[:-1]
    new_decode = np.hstack([decode[uniques // n_tools], (uniques % n_tools)[:, None]])
    return new_ids, extendable, new_decode


@dataclass(frozen=True)
class _Strata:
    """The strata of one group's plans: per stratum totals, and per plan its stratum."""

    plans: Ints  # per stratum: every plan of the group (with steps or not)
    successes: Ints
    plan_stratum: Ints  # per plan with steps (the index of _Steps), its stratum


def _concat(counts: list[_Counts], field: str, width: int = 0) -> NDArray[np.int64]:
    if counts:
        joined: NDArray[np.int64] = np.concatenate([getattr(c, field) for c in counts])
        return joined
    return np.empty((0, width) if width else 0, np.int64)


def _stratified(
    frame: pd.DataFrame, counts: list[_Counts], strata: _Strata, n_plans: int, n_successes: int
) -> StratifiedTests:
    """The MH/CMH figures of every row (one stratum of all plans when unstratified)."""
    width = strata.plans.size
    x, k = _concat(counts, "strata_plans", width), _concat(counts, "strata_successes", width)
    if width == 1:  # pooled: the plans without steps count too
        return stratified_tests(k, x, [[n_successes]], [[n_plans]])
    return stratified_tests(k, x, strata.successes[None, :], strata.plans[None, :])


def _pattern_rows(
    counts: list[_Counts],
    names: NDArray[np.object_],
    n_plans: int,
    n_successes: int,
    options: PatternOptions,
    strata: _Strata,
) -> tuple[pd.DataFrame, NDArray[np.int64]]:
    """The pattern table, most significant first, and its order (rows of ``counts``)."""
    patterns = [tuple(row) for c in counts for row in names[c.tools].tolist()]
    frame = pd.DataFrame(
        {
            "pattern": pd.Series(patterns, dtype=object),
            "pattern_text": pd.Series(
                [pattern_text(p, options.max_gap) for p in patterns], dtype="str"
            ),
            "length": np.array([len(p) for p in patterns], dtype=np.int64),
            "plans": _concat(counts, "plans"),
            "successes": _concat(counts, "successes"),
        }
    )
    frame = with_rates(frame)
    baseline = n_successes / n_plans if n_plans else np.nan
    if counts and all(c.p_value is not None for c in counts):  # computed while counting
        p_values = np.concatenate([c.p_value for c in counts if c.p_value is not None])
    else:
        p_values = fisher_exact_two_sided(frame["successes"], frame["plans"], n_successes, n_plans)
    tests = _stratified(frame, counts, strata, n_plans, n_successes)
    stratified = options.stratify_by is not None
    with np.errstate(invalid="ignore", divide="ignore"):  # a baseline of 0: lift NaN or inf
        lift = frame["success_rate"].to_numpy() / baseline
    # Unstratified, the MH figures are the pooled table's; q-values stay Fisher's.
    cmh_p = np.where(tests.strata > 0, tests.p_value, np.nan)
    q_values = benjamini_hochberg(np.nan_to_num(cmh_p, nan=1.0) if stratified else p_values)
    odds = tests.odds_ratio
    effect = np.where(np.isnan(odds), lift, odds) if stratified else lift
    direction = np.where(effect > 1, "success", "failure")
    significant = q_values <= options.fdr
    pooled = np.where(lift > 1, "success", "failure")
    frame = frame.assign(
        lift=lift, p_value=p_values, mh_odds_ratio=odds, mh_ci_low=tests.ci_low,
        mh_ci_high=tests.ci_high, cmh_p_value=cmh_p,
        homogeneity_p_value=tests.homogeneity_p_value,
        simpson=significant & (pooled != direction) & stratified,
        strata=tests.strata, q_value=q_values, significant=significant,
        direction=pd.Series(direction, dtype="str"),
    )  # fmt: skip
    strength = -np.nan_to_num(tests.log_p, nan=0.0) if stratified else -p_values
    order = np.lexsort((frame["pattern_text"].to_numpy(), -frame["plans"].to_numpy(), -strength))
    return frame.iloc[order].reset_index(drop=True), order.astype(np.int64)


def _significant_pairs(
    order: NDArray[np.int64], counts: list[_Counts], significant: NDArray[np.bool_]
) -> tuple[Ints, Ints]:
    """The (row in the sorted table, plan) pairs of the significant patterns only.

    Only those take part in the findings rule; filtering per length first keeps the pairs
    of the other patterns (most of them, at a million plans tens of millions) from ever
    being copied.
    """
    position = np.empty(len(order), np.int64)
    position[order] = np.arange(len(order))
    start, rows, plans = 0, [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for c in counts:
        local = position[start : start + len(c.tools)]
        keep = significant[local][c.pair_row]
        rows.append(local[c.pair_row[keep]])
        plans.append(c.pair_plan[keep].astype(np.int64))
        start += len(c.tools)
    return np.concatenate(rows), np.concatenate(plans)


def _with_findings(
    frame: pd.DataFrame,
    order: NDArray[np.int64],
    counts: list[_Counts],
    strata: _Strata,
    options: PatternOptions,
    n_plans: int,
    n_successes: int,
    presence: Callable[[NDArray[np.bool_]], Presence | PresenceCounts],
) -> pd.DataFrame:
    """Add ``plans_needed``, ``explained_by`` and ``finding`` to the sorted pattern table.

    ``presence(significant)`` gives which plans hold each significant row (see
    :func:`~metalearn._findings.findings`).
    """
    alpha = bh_threshold(int(frame["significant"].sum()), len(frame), options.fdr)
    needed = plans_needed(frame["plans"], frame["successes"], n_plans, n_successes,
                          frame["mh_odds_ratio"], alpha)  # fmt: skip
    needed = np.where(frame["significant"], 0.0, needed)
    significant = frame["significant"].to_numpy()
    tested = frame["cmh_p_value"] if options.stratify_by is not None else frame["p_value"]
    explained, found = findings(list(frame["pattern"]), tested.fillna(1.0).to_numpy(),
                                significant, presence(significant), alpha, options.fdr,
                                texts=list(frame["pattern_text"]))  # fmt: skip
    frame = frame.assign(plans_needed=pd.Series(needed, dtype="Int64"),
                         explained_by=pd.Series(explained, dtype="str"), finding=found)  # fmt: skip
    return frame[PATTERN_COLUMNS]


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
    plan_seq: Ints  # per plan: its seq

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
            plan_seq=seq[starts].astype(np.int64),
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


def _sorted_codes(values: pa.ChunkedArray) -> Ints:
    """Each value's rank among the distinct values, missing first, then in UTF-8 order.

    Strata are numbered this way on every engine (``_pattern_sql`` sorts alike), so the
    sums over strata run in the same order and the figures agree to the last bit.
    """
    encoded = pc.dictionary_encode(values, null_encoding="encode").combine_chunks()
    order = pc.array_sort_indices(encoded.dictionary, null_placement="at_start")
    rank = np.empty(len(order), np.int64)
    rank[order.to_numpy()] = np.arange(len(order))
    codes: Ints = rank[encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)]
    return codes


@dataclass(frozen=True)
class _PlanStrata:
    """Every plan of the window (by seq): its group, stratum and outcome."""

    seq: Ints
    group: Ints  # index into groups
    groups: list[str | None]
    stratum: Ints
    n_strata: int
    succeeded: NDArray[np.bool_]

    @classmethod
    def read(cls, table: pa.Table) -> _PlanStrata:
        seq = table.column("seq").to_numpy()
        if len(seq) > 1 and not bool(np.all(seq[1:] > seq[:-1])):  # never trust the order
            table = table.take(np.argsort(seq, kind="stable"))
        stratum = _sorted_codes(table.column("stratum"))
        groups = pc.dictionary_encode(table.column("group_key"), null_encoding="encode")
        groups = groups.combine_chunks()
        return cls(
            seq=table.column("seq").to_numpy().astype(np.int64),
            group=groups.indices.to_numpy(zero_copy_only=False).astype(np.int64),
            groups=groups.dictionary.to_pylist(),
            stratum=stratum,
            n_strata=max(int(stratum.max()) + 1, 1) if stratum.size else 1,
            succeeded=table.column("succeeded").to_numpy(zero_copy_only=False).astype(bool),
        )

    def of(self, key: str | None, per_agent: bool, steps: _Steps) -> _Strata:
        """The strata of group ``key``, with each of the steps' plans' stratum."""
        code = self.groups.index(key) if key in self.groups else -1
        chosen = (self.group == code) if per_agent else slice(None)
        size = self.n_strata
        plans = np.bincount(self.stratum[chosen], minlength=size).astype(np.int64)
        wins = np.bincount(self.stratum[chosen][self.succeeded[chosen]], minlength=size)
        at = np.searchsorted(self.seq, steps.plan_seq)
        return _Strata(plans, wins.astype(np.int64), self.stratum[np.minimum(at, len(self.seq) - 1)]
                       if len(self.seq) else np.zeros(len(at), np.int64))  # fmt: skip


def _count(
    steps: _Steps,
    rows: NDArray[np.bool_] | slice,
    n_tools: int,
    options: PatternOptions,
    strata: _Strata,
    stratified: bool,
) -> list[_Counts]:
    """The frequent patterns of the selected steps: contiguous, or with gaps."""
    stratum = strata.plan_stratum if stratified else None
    screen = _Screen(options.fdr, strata.plans, strata.successes, stratified)
    if options.max_gap:
        return count_gapped_patterns(
            steps.plan[rows], steps.tool[rows], steps.succeeded, n_tools,
            min_length=options.min_length, max_length=options.max_length,
            min_support=options.min_support, max_gap=options.max_gap, stratum=stratum,
            n_strata=strata.plans.size, screen=screen,
        )  # fmt: skip
    return count_patterns(
        steps.plan[rows], steps.tool[rows], steps.offset[rows], steps.succeeded, n_tools,
        min_length=options.min_length, max_length=options.max_length,
        min_support=options.min_support, first_call=steps.first_call[rows], stratum=stratum,
        n_strata=strata.plans.size, screen=screen,
    )  # fmt: skip


def _report(
    steps: _Steps,
    names: NDArray[np.object_],
    rows: NDArray[np.bool_] | slice,
    options: PatternOptions,
    n_plans: int,
    n_successes: int,
    strata: _Strata,
) -> pd.DataFrame:
    """The pattern table of the steps selected by ``rows`` (plan indexes stay global)."""
    stratified = options.stratify_by is not None
    if not stratified:  # one stratum: every plan
        strata = _Strata(np.array([n_plans]), np.array([n_successes]),
                         np.zeros(len(steps.plan_seq), np.int64))  # fmt: skip
    counts = _count(steps, rows, len(names), options, strata, stratified)
    frame, order = _pattern_rows(counts, names, n_plans, n_successes, options, strata)

    def presence(significant: NDArray[np.bool_]) -> Presence:
        row, plan = _significant_pairs(order, counts, significant)
        return Presence(
            row=row,
            plan=plan,
            plan_stratum=strata.plan_stratum,
            plan_succeeded=steps.succeeded,
            stratum_plans=strata.plans,
            stratum_successes=strata.successes,
        )

    return _with_findings(frame, order, counts, strata, options, n_plans, n_successes,
                          presence)  # fmt: skip


def extract_groups(
    snapshot: Snapshot, window: Window, options: PatternOptions
) -> dict[str | None, PatternReport]:
    """Mine and test the patterns of each group of ``window`` (one query per table)."""
    plans = _PlanStrata.read(
        snapshot.arrow(window.sql(q.pattern_strata(options.stratify_by)), window.params)
    )
    steps = _Steps.read(snapshot.arrow(window.sql(q.PATTERN_STEPS), window.params),
                        window.per_agent)  # fmt: skip
    names = tool_names(snapshot)
    reports = {}
    for key in window.groups:
        strata = plans.of(key, window.per_agent, steps)
        n_plans, n_successes = int(strata.plans.sum()), int(strata.successes.sum())
        # An ungrouped window takes every step: a slice, so no array is copied.
        rows = steps.of_group(key) if window.per_agent else slice(None)
        reports[key] = PatternReport(
            patterns=_report(steps, names, rows, options, n_plans, n_successes, strata),
            baseline_rate=n_successes / n_plans if n_plans else float("nan"),
            n_plans=n_plans,
            n_successes=n_successes,
            options=options,
            **window.described(snapshot.through_seq, key),
        )
    return reports


def extract(snapshot: Snapshot, window: Window, options: PatternOptions) -> PatternReport:
    """The :class:`PatternReport` of a one-group window."""
    return extract_groups(snapshot, window, options)[None]
