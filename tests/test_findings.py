"""The findings rule (metalearn._findings) on hand-made plan sets."""

from __future__ import annotations

import numpy as np

from metalearn._findings import Presence, findings


def _presence(members: list[np.ndarray], succeeded: np.ndarray, strata: np.ndarray) -> Presence:
    """The Presence of patterns given as boolean plan masks."""
    rows = np.concatenate([np.full(m.sum(), i) for i, m in enumerate(members)])
    plans = np.concatenate([np.flatnonzero(m) for m in members])
    k = int(strata.max()) + 1
    return Presence(
        row=rows.astype(np.int64), plan=plans.astype(np.int64), plan_stratum=strata,
        plan_succeeded=succeeded,
        stratum_plans=np.bincount(strata, minlength=k),
        stratum_successes=np.bincount(strata[succeeded], minlength=k),
    )  # fmt: skip


def _plans(groups: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Plan group labels and outcomes: (plans, of which succeeded) per group."""
    label = np.concatenate([np.full(n, g) for g, (n, _) in enumerate(groups)])
    won = np.concatenate([np.arange(n) < w for n, w in groups])
    return label, won


def test_the_true_pattern_stays_when_its_sub_sequence_ranks_first() -> None:
    """``x → y`` lowers success; ``x`` alone does not. When ``x`` ranks as the stronger
    (by chance, or by being tied), the finding is still ``x → y``, and it explains ``x``."""
    label, won = _plans([(300, 60), (400, 240), (1_200, 720)])  # x→y, x only, neither
    x, xy = label <= 1, label == 0
    presence = _presence([x, xy], won, np.zeros(len(label), np.int64))
    explained, found = findings([("x",), ("x", "y")], np.array([1e-30, 1e-20]),
                                np.array([True, True]), presence, 0.001, 0.05)  # fmt: skip
    assert found.tolist() == [False, True]
    assert explained.tolist() == ["x → y", ""]


def test_a_ride_along_sharing_a_tool_is_explained() -> None:
    """``w → x`` occurs only where ``x → y`` does (a shared tool): explained by it."""
    label, won = _plans([(150, 30), (150, 30), (1_200, 720)])  # x→y with w first, x→y, neither
    xy, wx = label <= 1, label == 0
    presence = _presence([xy, wx], won, np.zeros(len(label), np.int64))
    explained, found = findings([("x", "y"), ("w", "x")], np.array([1e-30, 1e-15]),
                                np.array([True, True]), presence, 0.001, 0.05)  # fmt: skip
    assert found.tolist() == [True, False] and explained.tolist() == ["", "x → y"]


def test_independent_effects_both_stay() -> None:
    label, won = _plans([(300, 60), (300, 280), (1_200, 720)])  # x→y bad, z good, neither
    presence = _presence([label == 0, label == 1], won, np.zeros(len(label), np.int64))
    explained, found = findings([("x", "y"), ("z",)], np.array([1e-30, 1e-25]),
                                np.array([True, True]), presence, 0.001, 0.05)  # fmt: skip
    assert found.tolist() == [True, True] and explained.tolist() == ["", ""]


def test_a_weak_lone_candidate_is_not_a_finding() -> None:
    """Significant only because BH counted many copies of strong effects: over the findings
    alone (fdr * 1 / tested) its p-value is too large."""
    label, won = _plans([(60, 20), (1_200, 720)])
    rest = [np.zeros(len(label), bool)] * 99  # 99 more rows tested, none significant
    presence = _presence([label == 0, *rest], won, np.zeros(len(label), np.int64))
    significant = np.arange(100) == 0
    p_values = np.where(significant, 0.004, 0.9)
    explained, found = findings([("q",), *[(f"t{i}",) for i in range(99)]], p_values,
                                significant, presence, 0.01, 0.05)  # fmt: skip
    assert not found.any() and (explained == "").all()
    explained, found = findings([("q",), *[(f"t{i}",) for i in range(99)]], p_values / 10,
                                significant, presence, 0.01, 0.05)  # fmt: skip
    assert found.tolist() == significant.tolist()  # 0.0004 <= 0.05 * 1 / 100


def test_conditioning_uses_the_strata() -> None:
    """Within each stratum ``b`` follows ``a`` exactly: explained by it although, pooled,
    the strata make ``b`` look different."""
    strata = np.repeat([0, 1], [800, 800])
    won = np.concatenate([np.arange(800) < 600, np.arange(800) < 200])
    a = np.zeros(1_600, bool)
    a[[*range(0, 200), *range(600, 800), *range(800, 900), *range(1_200, 1_300)]] = True
    b = a & (np.arange(1_600) % 2 == 0)
    presence = _presence([a, b], won, strata)
    explained, found = findings([("a",), ("a", "b")], np.array([1e-8, 1e-3]),
                                np.array([True, True]), presence, 0.01, 0.05)  # fmt: skip
    assert explained.tolist() == ["", "a"] and found.tolist() == [True, False]
