"""Change points: when did a group's success rate change, and is the change real?

The engine counts each group's plans in :data:`BINS` equal slices of its time span (first
to last finish), with hash aggregates only (ordering millions of tool calls per group
would cost seconds), so at most :data:`BINS` rows per group reach Python. The slices are
consecutive runs of plans in finish order, which is all the test needs: a change can lie
between any two non-empty slices. Each group is then tested
by :func:`~metalearn._stats.change_point_test` (a permutation test of the maximum
standardized split statistic, valid for "a change anywhere"), with a random generator
seeded by the group's name: the same history always gives the same p-values, whatever
else is in the report. q-values are Benjamini-Hochberg across the groups.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from metalearn import _queries as q
from metalearn._analysis import tool_names
from metalearn._queries import ChangeOptions, Window
from metalearn._results import CHANGE_BIN_COLUMNS, CHANGE_COLUMNS, ChangeReport
from metalearn._stats import ChangePoint, benjamini_hochberg, change_point_test
from metalearn._warehouse import Snapshot

__all__ = ["BINS", "MIN_SEGMENT", "detect_changes", "min_segment"]

BINS = 500
"""Time slices per group: the resolution of a change point (1/500 of the group's time
span, under 3 hours over 60 days) and what one permutation costs."""
MIN_SEGMENT = 10
"""A change leaves at least this many plans (and 2% of the group's) on each side."""
_SEED = 20260315


def min_segment(plans: int) -> int:
    """The fewest plans a change may leave on either side of it.

    Splits in the first or last 2% (at least :data:`MIN_SEGMENT` plans) compare a handful
    of plans with the rest: their statistic is mostly noise, and searching them would
    only cost power. They are left out of the observed maximum and of every permuted one
    alike, so the test stays exact.

    >>> min_segment(200), min_segment(10_000)
    (10, 200)
    """
    return max(MIN_SEGMENT, plans // 50)


def _utc(column: pd.Series) -> pd.Series:
    return pd.to_datetime(column).dt.tz_localize("UTC")


def _group_row(by: str, group: str, bins: pd.DataFrame, found: ChangePoint) -> dict[str, object]:
    plans = bins["plans"].to_numpy(np.int64)
    successes = bins["successes"].to_numpy(np.int64)
    split = found.split if found.split is not None else len(plans)
    before, after = int(plans[:split].sum()), int(plans[split:].sum())
    won_before, won_after = int(successes[:split].sum()), int(successes[split:].sum())
    return {
        "by": by,
        "group": group,
        "changed_at": bins["first_at"].iloc[split] if found.split is not None else pd.NaT,
        "plans_before": before,
        "plans_after": after,
        "rate_before": won_before / before if before else np.nan,
        "rate_after": won_after / after if after else np.nan,
        "p_value": found.p_value,
    }


def _test(group: str, bins: pd.DataFrame, permutations: int) -> ChangePoint:
    plans = bins["plans"].to_numpy(np.int64)
    rng = np.random.default_rng([_SEED, zlib.crc32(group.encode("utf-8"))])
    return change_point_test(plans, bins["successes"].to_numpy(np.int64),
                             min_segment=min_segment(int(plans.sum())), rng=rng,
                             permutations=permutations)  # fmt: skip


def _changes_frame(rows: list[dict[str, object]], fdr: float) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=CHANGE_COLUMNS[:-2])
    frame = frame.astype({"by": "str", "group": "str", "plans_before": "int64",
                          "plans_after": "int64", "rate_before": "float64",
                          "rate_after": "float64", "p_value": "float64"})  # fmt: skip
    frame["changed_at"] = pd.to_datetime(frame["changed_at"], utc=True).astype(
        "datetime64[us, UTC]"
    )
    q_values = benjamini_hochberg(frame["p_value"].to_numpy())
    frame = frame.assign(q_value=q_values, significant=q_values <= fdr)
    frame = frame.sort_values(["p_value", "group"], kind="stable")
    return frame[CHANGE_COLUMNS].reset_index(drop=True)


def detect_changes(snapshot: Snapshot, window: Window, options: ChangeOptions) -> ChangeReport:
    """The :class:`ChangeReport` of the groups of ``options.by`` in ``window``."""
    params = {**window.params, "bins": BINS, "min_plans": options.min_plans}
    bins = snapshot.frame(window.sql(q.CHANGE_BINS[options.by]), params)
    group = bins["group"]
    if options.by == "tool":  # counted by tool id: names are looked up once, here
        names = tool_names(snapshot)
        group = pd.Series(names[group.to_numpy(np.int64)], index=bins.index)
    bins = bins.assign(group=group.astype("str"), first_at=_utc(bins["first_at"]),
                       last_at=_utc(bins["last_at"]))  # fmt: skip
    bins = bins.astype({"bin": "int64", "plans": "int64", "successes": "int64"})
    rows = [
        _group_row(options.by, str(group), part, _test(str(group), part, options.permutations))
        for group, part in bins.groupby("group", sort=True)
    ]
    return ChangeReport(
        changes=_changes_frame(rows, options.fdr),
        bins=bins[CHANGE_BIN_COLUMNS].reset_index(drop=True),
        time_range_days=window.time_range_days,
        as_of=window.as_of,
        options=options,
        through_seq=snapshot.through_seq,
    )
