"""Do metalearn and the pandas baseline give the same numbers on the same history?

Compared exactly: the number of plans; plans, successes and success rate overall and per
agent, goal type and day; and, for every pattern either side finds in at least
``min_support`` plans, the plans containing it and how many of those succeeded. Compared
to a relative 1e-9 (floating-point sums in another order): the stratified figures of every
pattern, its Mantel-Haenszel odds ratio and CMH p-value within goal types. A speed
comparison means nothing if the answers differ, so the suite runs this on the very results
it timed and fails loudly when anything disagrees.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from benchmarks import baselines

RATE_TABLES = ("all", "agent_id", "goal_type", "day")
RATE_COLUMNS = ("plans", "successes", "success_rate")
PATTERN_COLUMNS = ("length", "plans", "successes")
STRATIFIED_COLUMNS = ("mh_odds_ratio", "cmh_p_value")
RELATIVE = 1e-9
MIN_SUPPORT = 20
MAX_LENGTH = 4
_SHOWN = 5  # differences listed per table before "... and N more"

Rates = dict[str, pd.DataFrame]


def metalearn_rates(analysis: Any) -> Rates:
    """The rate tables of an ``ExecutionAnalysis``, keyed like :func:`baselines.success_rates`."""
    return {
        "all": analysis.overall.assign(all="all").set_index("all"),
        "agent_id": analysis.by_agent.set_index("agent_id"),
        "goal_type": analysis.by_goal_type.set_index("goal_type"),
        "day": analysis.by_day.set_index("day"),
    }


def metalearn_patterns(report: Any) -> pd.DataFrame:
    """The counts of a ``PatternReport``'s patterns (every tested one, not only significant)."""
    columns = ["pattern_text", *PATTERN_COLUMNS, "success_rate", "lift"]
    return report.patterns[columns].reset_index(drop=True)


def metalearn_stratified(report: Any) -> pd.DataFrame:
    """The stratified figures of a ``PatternReport`` (stratified by goal type), every row."""
    columns = ["pattern_text", *PATTERN_COLUMNS, *STRATIFIED_COLUMNS]
    return report.patterns[columns].reset_index(drop=True)


def _close(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Equal to a relative RELATIVE (NaN equals NaN, infinities equal themselves)."""
    with np.errstate(invalid="ignore"):
        near = np.isclose(a, b, rtol=RELATIVE, atol=0.0)
    same: np.ndarray = near | (np.isnan(a) & np.isnan(b)) | (a == b)
    return same


def compare_stratified(ml_stratified: pd.DataFrame, pd_stratified: pd.DataFrame) -> list[str]:
    """Every disagreement in the stratified figures (none: ``[]``)."""
    ours = _normal(ml_stratified.set_index("pattern_text"), "patterns", PATTERN_COLUMNS)
    theirs = _normal(pd_stratified.set_index("pattern_text"), "patterns", PATTERN_COLUMNS)
    problems = _differences("stratified pattern", ours, theirs)
    ours = ml_stratified.set_index("pattern_text")[list(STRATIFIED_COLUMNS)]
    theirs = pd_stratified.set_index("pattern_text")[list(STRATIFIED_COLUMNS)]
    common = ours.index.intersection(theirs.index)
    for column in STRATIFIED_COLUMNS:
        a = ours.loc[common, column].to_numpy(dtype="float64")
        b = theirs.loc[common, column].to_numpy(dtype="float64")
        differ = common[~_close(a, b)]
        problems += [
            f"stratified pattern {key!r}: {column} = {ours.at[key, column]!r} (metalearn) "
            f"!= {theirs.at[key, column]!r} (pandas)"
            for key in differ[:_SHOWN]
        ]
        if len(differ) > _SHOWN:
            problems.append(f"stratified pattern: {column} differs for {len(differ) - _SHOWN} more")
    return problems


def _normal(frame: pd.DataFrame, table: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """One row per group, string keys (days as ``YYYY-MM-DD``), integer counts, sorted."""
    index = pd.Series(frame.index)
    keys = pd.to_datetime(index).dt.strftime("%Y-%m-%d") if table == "day" else index.astype(str)
    normal = frame[list(columns)].set_axis(pd.Index(keys.to_numpy(), dtype="str"), axis=0)
    counts = [c for c in columns if c in ("length", "plans", "successes")]
    return normal.astype(dict.fromkeys(counts, "int64")).sort_index()


def _differences(name: str, ours: pd.DataFrame, theirs: pd.DataFrame) -> list[str]:
    problems = []
    for side, missing in (
        ("pandas", ours.index.difference(theirs.index)),
        ("metalearn", theirs.index.difference(ours.index)),
    ):
        if len(missing):
            shown = ", ".join(repr(k) for k in missing[:_SHOWN])
            more = f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else ""
            problems.append(f"{name}: {shown}{more} missing from {side}")
    common = ours.index.intersection(theirs.index)
    for column in ours.columns:
        a, b = ours.loc[common, column].to_numpy(), theirs.loc[common, column].to_numpy()
        differ = common[a != b]
        for key in differ[:_SHOWN]:
            problems.append(
                f"{name} {key!r}: {column} = {ours.at[key, column]!r} (metalearn) "
                f"!= {theirs.at[key, column]!r} (pandas)"
            )
        if len(differ) > _SHOWN:
            problems.append(f"{name}: {column} differs for {len(differ) - _SHOWN} more")
    return problems


def compare(
    ml_rates: Rates, ml_patterns: pd.DataFrame, pd_rates: Rates, pd_ngrams: pd.DataFrame
) -> list[str]:
    """Every disagreement between metalearn's results and the pandas baseline's (none: ``[]``)."""
    problems = []
    for table in RATE_TABLES:
        ours = _normal(ml_rates[table], table, RATE_COLUMNS)
        theirs = _normal(pd_rates[table], table, RATE_COLUMNS)
        problems += _differences(f"success rates by {table}", ours, theirs)
    ours = _normal(ml_patterns.set_index("pattern_text"), "patterns", PATTERN_COLUMNS)
    theirs = _normal(pd_ngrams.set_index("pattern_text"), "patterns", PATTERN_COLUMNS)
    problems += _differences("pattern", ours, theirs)
    return problems


def results(url: str) -> tuple[Rates, pd.DataFrame, Rates, pd.DataFrame]:
    """Metalearn's and the pandas baseline's rates and patterns for the store at ``url``.

    In one process, for tests and small stores; the suite compares the results of its timed
    runs instead (see :mod:`benchmarks.cli`). Arguments for :func:`compare`, in order.
    """
    from metalearn import MetaLearningService

    with MetaLearningService(url) as service:
        analysis = service.analyze_execution_patterns_sync(time_range_days=None)
        report = service.extract_successful_patterns_sync(
            time_range_days=None,
            min_length=1,
            max_length=MAX_LENGTH,
            min_support=MIN_SUPPORT,
            stratify_by=None,
        )
    plans, steps = baselines.load_frames(url)
    return (
        metalearn_rates(analysis),
        metalearn_patterns(report),
        baselines.success_rates(plans),
        baselines.ngrams(plans, steps, max_length=MAX_LENGTH, min_support=MIN_SUPPORT),
    )


def stratified_results(url: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Metalearn's and the pandas baseline's stratified figures (for :func:`compare_stratified`)."""
    from metalearn import MetaLearningService

    with MetaLearningService(url) as service:
        report = service.extract_successful_patterns_sync(
            time_range_days=None, min_length=1, max_length=MAX_LENGTH, min_support=MIN_SUPPORT
        )
    plans, steps = baselines.load_frames(url)
    return metalearn_stratified(report), baselines.stratified_ngrams(
        plans, steps, max_length=MAX_LENGTH, min_support=MIN_SUPPORT
    )


def check(url: str) -> list[str]:
    """Every disagreement between metalearn and the pandas baseline on one store."""
    return compare(*results(url)) + compare_stratified(*stratified_results(url))
