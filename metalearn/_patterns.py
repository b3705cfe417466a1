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

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from metalearn import _queries as q
from metalearn._analysis import with_rates
from metalearn._queries import Window
from metalearn._stats import benjamini_hochberg, fisher_exact_two_sided
from metalearn._warehouse import Snapshot

__all__ = ["PATTERN_COLUMNS", "PatternReport", "count_patterns", "extract", "extract_groups"]

PATTERN_COLUMNS = [
    "pattern", "pattern_text", "length", "plans", "successes", "success_rate", "ci_low",
    "ci_high", "lift", "p_value", "q_value", "significant", "direction",
]  # fmt: skip

Ints = NDArray[np.int64]


@dataclass(frozen=True, repr=False)
class PatternReport:
    """Tool sequences tested for an effect on success in one window of plans.

    ``patterns`` has one row per contiguous tool sequence contained in at least
    ``min_support`` plans: pattern (tuple of tools), pattern_text (``" → "``-joined),
    length, plans (containing it), successes, success_rate, ci_low, ci_high (95% Wilson),
    lift (success_rate / baseline_rate), p_value (two-sided Fisher exact test of with /
    without x succeeded / failed), q_value (Benjamini-Hochberg over all rows), significant
    (q_value <= fdr) and direction (``"success"`` if lift > 1 else ``"failure"``); most
    significant first.
    """

    patterns: pd.DataFrame
    baseline_rate: float
    n_plans: int
    n_successes: int
    agent_id: str | None
    time_range_days: float | None
    as_of: datetime
    min_length: int
    max_length: int
    min_support: int
    fdr: float
    through_seq: int
    computed_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def successful(self) -> pd.DataFrame:
        """Significant patterns that go with success, highest lift first.

        Ties (patterns found in exactly the same plans) put the longest pattern first.
        """
        return self._significant("success", lift_ascending=False)

    @property
    def failing(self) -> pd.DataFrame:
        """Significant patterns that go with failure, lowest lift first."""
        return self._significant("failure", lift_ascending=True)

    def _significant(self, direction: str, *, lift_ascending: bool) -> pd.DataFrame:
        rows = self.patterns[
            self.patterns["significant"] & (self.patterns["direction"] == direction)
        ]
        rows = rows.sort_values(
            ["lift", "plans", "length", "pattern_text"],
            ascending=[lift_ascending, False, False, True],
        )
        return rows.reset_index(drop=True)

    def __repr__(self) -> str:
        window = "all" if self.time_range_days is None else f"{self.time_range_days:g}d"
        significant = int(self.patterns["significant"].sum())
        return (
            f"<PatternReport agent={self.agent_id or 'all'} window={window} "
            f"plans={self.n_plans} patterns={len(self.patterns)} significant={significant} "
            f"baseline_rate={self.baseline_rate:.3f} through_seq={self.through_seq}>"
        )

    def plot(self, **options: object) -> object:
        """Draw the strongest significant patterns and return the matplotlib ``Axes``.

        Options are those of :func:`metalearn.plots.plot_patterns` (``top=``, ``fold=``,
        ``ax=``).
        """
        from metalearn import plots  # plots import this module, not the other way round

        return plots._plot(self, "patterns", options)

    def to_csv(self, directory: object) -> list[object]:
        """Write the report's tables as CSV files into ``directory``; return the paths.

        The files and their columns are listed in :mod:`metalearn.export`.
        """
        from metalearn import export

        return list(export._to_csv(self, directory))

    def _repr_html_(self) -> str:
        from metalearn import export

        return export.to_html(self)


@dataclass(frozen=True)
class _Counts:
    """Supports of the frequent patterns of one length."""

    tools: Ints  # (patterns, length) tool ids
    plans: Ints
    successes: Ints


def _distinct_plan_counts(
    plan: Ints, gram: Ints, n_grams: int, succeeded: NDArray[np.bool_]
) -> tuple[Ints, Ints]:
    """Per n-gram id: plans containing it at least once, and how many of those succeeded."""
    pairs = pd.unique(plan * n_grams + gram)
    gram_of, plan_of = pairs % n_grams, pairs // n_grams
    support = np.bincount(gram_of, minlength=n_grams)
    successes = np.bincount(gram_of, weights=succeeded[plan_of], minlength=n_grams)
    return support.astype(np.int64), successes.astype(np.int64)


def count_patterns(
    plan: Ints,
    tool: Ints,
    succeeded: NDArray[np.bool_],
    n_tools: int,
    *,
    min_length: int,
    max_length: int,
    min_support: int,
) -> list[_Counts]:
    """Frequent contiguous n-grams of tool ids, lengths ``min_length..max_length``.

    ``plan`` (index into ``succeeded``) and ``tool`` give one entry per step, grouped by
    plan in step order.
    """
    ids, valid = tool.astype(np.int64), np.ones(len(tool), dtype=bool)
    decode: Ints = np.arange(n_tools, dtype=np.int64)[:, None]
    found = []
    for length in range(1, max_length + 1):
        if length > 1:
            ids, valid, decode = _extend(plan, tool, ids, valid, decode, length, n_tools)
        if not valid.any():
            break
        n_grams = len(decode)
        support, successes = _distinct_plan_counts(plan[: len(ids)][valid], ids[valid], n_grams,
                                                    succeeded)  # fmt: skip
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
    codes, uniques = pd.factorize(combined[extendable])
    new_ids = np.full(starts, -1, dtype=np.int64)
    new_ids[extendable] = codes
    uniques = np.asarray(uniques, dtype=np.int64)
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
class _Options:
    min_length: int
    max_length: int
    min_support: int
    fdr: float


def _report(
    plan: Ints,
    tool: Ints,
    succeeded: NDArray[np.bool_],
    names: NDArray[np.object_],
    in_group: NDArray[np.bool_],
    options: _Options,
) -> tuple[pd.DataFrame, int, int]:
    """The pattern table of the plans flagged ``in_group`` (plan indexes stay global)."""
    steps = in_group[plan]
    counts = count_patterns(
        plan[steps], tool[steps], succeeded, len(names), min_length=options.min_length,
        max_length=options.max_length, min_support=options.min_support,
    )  # fmt: skip
    n_plans, n_successes = int(in_group.sum()), int(succeeded[in_group].sum())
    return _pattern_rows(counts, names, n_plans, n_successes, options.fdr), n_plans, n_successes


def extract_groups(
    snapshot: Snapshot,
    window: Window,
    *,
    min_length: int,
    max_length: int,
    min_support: int,
    fdr: float,
) -> dict[str | None, PatternReport]:
    """Mine and test the patterns of each group of ``window`` (one query for all groups)."""
    options = _Options(min_length, max_length, min_support, fdr)
    plans = snapshot.arrow(window.sql(q.PATTERN_PLANS), window.params)
    steps = snapshot.arrow(window.sql(q.PATTERN_STEPS), window.params)
    names = np.array(snapshot.arrow(q.TOOLS).column("tool").to_pylist(), dtype=object)
    plan_seq = plans.column("seq").to_numpy()
    succeeded = plans.column("succeeded").to_numpy(zero_copy_only=False).astype(bool)
    plan = np.searchsorted(plan_seq, steps.column("seq").to_numpy()).astype(np.int64)
    tool = steps.column("tool_id").to_numpy().astype(np.int64)
    keys = plans.column("group_key").to_numpy(zero_copy_only=False)
    reports = {}
    for key in window.groups:
        in_group = np.ones(len(plan_seq), dtype=bool) if key is None else keys == key
        table, n_plans, n_successes = _report(plan, tool, succeeded, names, in_group, options)
        reports[key] = PatternReport(
            patterns=table,
            baseline_rate=n_successes / n_plans if n_plans else float("nan"),
            n_plans=n_plans,
            n_successes=n_successes,
            agent_id=key if window.per_agent else window.agent_id,
            time_range_days=window.time_range_days,
            as_of=window.as_of,
            min_length=min_length,
            max_length=max_length,
            min_support=min_support,
            fdr=fdr,
            through_seq=snapshot.through_seq,
        )
    return reports


def extract(
    snapshot: Snapshot,
    window: Window,
    *,
    min_length: int,
    max_length: int,
    min_support: int,
    fdr: float,
) -> PatternReport:
    """The :class:`PatternReport` of a one-group window."""
    return extract_groups(
        snapshot, window, min_length=min_length, max_length=max_length,
        min_support=min_support, fdr=fdr,
    )[None]  # fmt: skip
