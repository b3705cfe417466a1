"""Findings: the significant patterns that no stronger overlapping pattern explains.

A planted or real effect drags many near-copies into significance: its sub- and
super-sequences, and sequences that share a tool with it and occur mostly in its plans.
Each is "true" for its own test, but only one of them says which steps matter. The rule:

1. Candidates are the significant rows, strongest first (the report's order: largest CMH
   statistic, so p-values that underflow to 0 still rank).
2. Two patterns *overlap* when one contains the other (a contiguous run of it), or they
   share a tool and at least half of B's plans also hold A.
3. "B given A" is B's CMH test within the strata (stratum x plans with A / without A),
   each also split by which of the findings made so far a plan holds (so a sequence that
   combines two findings is explained once both are); it is *significant* when its
   p-value is at most the report's BH threshold (:func:`~metalearn._stats.bh_threshold`:
   the p-value the weakest significant row passed). "A given B" likewise.
4. The strongest open candidate A is taken. Before it becomes a finding, an overlapping
   B may *replace* it: when A given B is not significant (A says nothing beyond B) while
   B given A still is, or when neither is and B contains A (the same information, and B
   is the longer description); the longest such B is taken (ties: the strongest). This
   is how the true pattern stays when one of its sub-sequences is more significant than
   it is: the sub-sequence's association is the true pattern's, the reverse is not.
   Replacement repeats from the new A (never back to a pattern already tried).
5. The final A is a candidate finding; every overlapping B whose B-given-A test is not
   significant, and every pattern A replaced, is *explained by* it (``explained_by`` = its
   ``pattern_text``). The rest stay open; repeat from 4.
6. The false discovery rate is controlled over the findings themselves, each judged by
   its *residual* p-value: the largest of its own p-value (or, when it replaced others,
   the smallest among them and it: they carry one signal) and its p-values within the
   strata of every stronger finding it overlaps (what it shows beyond them). BH is
   applied again as if only the R candidate findings had been rejected (the i-th
   smallest residual p-value must be at most ``fdr * i / tested``). Without this step the redundant
   copies of a strong effect, a few hundred significant rows, would raise the BH
   threshold for everything else, and most unrelated findings would be false. The
   candidates that fail it stay significant rows with an empty ``explained_by``; they
   are not findings (``finding`` is False). Rounds stop as soon as no open candidate
   could pass this step any more; what is still open then stays significant, neither a
   finding nor explained.

Everything per round is vectorised over the open candidates (one ``bincount`` pass over
their (pattern, plan) pairs, or one aggregation on a query engine: the counts come from a
:class:`PresenceCounts`); the rounds are as many as there are findings and replacements,
a handful in practice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from metalearn._arrays import dense_codes
from metalearn._stats import cmh_p_values

__all__ = ["Presence", "PresenceCounts", "findings"]

Ints = NDArray[np.int64]
Floats = NDArray[np.float64]
_CO_OCCURRENCE = 0.5  # "most of B's plans": at least this share also hold A


@dataclass(frozen=True)
class Presence:
    """Which plans hold each pattern (as pairs), and the counts the conditional tests need.

    ``row``/``plan``: one pair per (pattern row, plan holding it); ``plan_stratum`` and
    ``plan_succeeded`` per plan (indexes of ``plan``); ``stratum_plans`` and
    ``stratum_successes`` per stratum (every plan of the window, with steps or not).
    """

    row: Ints
    plan: Ints
    plan_stratum: Ints
    plan_succeeded: NDArray[np.bool_]
    stratum_plans: Ints
    stratum_successes: Ints


def _contains(longer: tuple[str, ...], shorter: tuple[str, ...]) -> bool:
    size = len(shorter)
    return size < len(longer) and any(
        longer[i : i + size] == shorter for i in range(len(longer) - size + 1)
    )


@dataclass(frozen=True)
class _Given:
    """Conditional tests of one pattern A against the candidates B sharing a tool with it."""

    rows: Ints  # the candidates B
    b_given_a: Floats  # p-value of B within A's strata
    a_given_b: Floats
    shared_plans: Ints  # plans holding both
    overlap: NDArray[np.bool_]  # B and A overlap (step 2)
    longer: NDArray[np.bool_]  # B contains A


class PresenceCounts(Protocol):
    """Where the candidates' pairs live, and the counts a round reads from them.

    A *context* is a plan's stratum x which findings so far it holds (its *signature*):
    ``stratum * signatures + signature``. :class:`_ArrayCounts` keeps the pairs in numpy
    arrays; :mod:`metalearn._pattern_sql` keeps them in the query engine (Spark), so only
    these aggregated tables reach the driver.
    """

    def contexts(self) -> tuple[Ints, Ints]:
        """Per context: the plans of the window (with steps or not), and their successes."""

    def cells(self, a: int, rows: Ints) -> tuple[Ints, Ints, Ints]:
        """Per context, the plans holding ``a`` and their successes; and per row of
        ``rows`` x context x (holds ``a``) x (succeeded), the plans holding that row."""

    def condition_on(self, a: int) -> None:
        """From now on, signatures also say whether a plan holds ``a``."""


class _ArrayCounts:
    """:class:`PresenceCounts` over numpy arrays: the pairs grouped by candidate (CSR)."""

    def __init__(self, presence: Presence, candidates: Ints, n_rows: int) -> None:
        self.presence = presence
        self._index_pairs(presence, candidates, n_rows)
        self.signature = np.zeros(presence.plan_stratum.size, np.int64)  # findings held
        self._set_contexts(1)

    def _index_pairs(self, presence: Presence, candidates: Ints, n_rows: int) -> None:
        """Group the candidates' pairs by pattern (CSR), so a round reads only its own.

        A counting sort: pairs are ordered by a dense candidate code, which numpy sorts
        with a radix sort when it fits 16 bits.
        """
        dense = np.full(n_rows, -1, dtype=np.int64)
        dense[candidates] = np.arange(candidates.size)
        code = dense[presence.row]
        keep = code >= 0
        code, plan = code[keep], presence.plan[keep]
        narrow = code.astype(np.uint16) if candidates.size < 1 << 16 else code
        order = np.argsort(narrow, kind="stable")
        self.plan = plan[order]
        counts = np.bincount(code, minlength=candidates.size)
        self.start = np.zeros(n_rows, np.int64)
        self.size = np.zeros(n_rows, np.int64)
        self.start[candidates] = np.cumsum(counts) - counts
        self.size[candidates] = counts

    def _set_contexts(self, signatures: int) -> None:
        """Each plan's context and the contexts' totals.

        Plans without steps hold no pattern: they count in signature 0 of their stratum.
        """
        p = self.presence
        if signatures == 1:  # the first call: what plans without steps add, once
            strata = p.stratum_plans.size
            self.stepless = p.stratum_plans - np.bincount(p.plan_stratum, minlength=strata)
            self.stepless_wins = p.stratum_successes - np.bincount(
                p.plan_stratum[p.plan_succeeded], minlength=strata
            )
        self.n_contexts = p.stratum_plans.size * signatures
        self.context = p.plan_stratum * signatures + self.signature
        zero = np.arange(p.stratum_plans.size) * signatures
        self.context_plans = np.bincount(self.context, minlength=self.n_contexts)
        self.context_plans[zero] += self.stepless
        self.context_wins = np.bincount(self.context[p.plan_succeeded], minlength=self.n_contexts)
        self.context_wins[zero] += self.stepless_wins

    def contexts(self) -> tuple[Ints, Ints]:
        return self.context_plans, self.context_wins

    def condition_on(self, a: int) -> None:
        combined = self.signature * 2
        combined[self._mine(a)] += 1
        codes, uniques = dense_codes(combined)
        if uniques[0] != 0:  # plans without steps keep signature 0: it must stay code 0
            codes, uniques = codes + 1, np.concatenate([[0], uniques])
        self.signature = codes
        self._set_contexts(len(uniques))

    def _mine(self, a: int) -> Ints:
        """The plans holding candidate ``a``."""
        return self.plan[self.start[a] : self.start[a] + self.size[a]]

    def _pairs(self, rows: Ints) -> tuple[Ints, Ints]:
        """The pairs of ``rows``: each pair's index into ``rows``, and its plan."""
        sizes = self.size[rows]
        owner = np.repeat(np.arange(rows.size), sizes)
        offsets = np.cumsum(sizes) - sizes
        index = np.arange(int(sizes.sum())) - np.repeat(offsets - self.start[rows], sizes)
        return owner, self.plan[index]

    def cells(self, a: int, rows: Ints) -> tuple[Ints, Ints, Ints]:
        p, contexts = self.presence, self.n_contexts
        mine = self._mine(a)
        x_a = np.bincount(self.context[mine], minlength=contexts)
        s_a = np.bincount(self.context[mine[p.plan_succeeded[mine]]], minlength=contexts)
        # Per plan: (its context, whether it holds A, whether it succeeded) as one code,
        # so a single bincount over the candidates' pairs gives every table.
        cell = self.context * 4 + p.plan_succeeded
        cell[mine] += 2
        owner, plan = self._pairs(rows)
        code = cell[plan]
        code += owner * (contexts * 4)
        cells = np.bincount(code, minlength=rows.size * contexts * 4)
        return x_a, s_a, cells.reshape(rows.size, contexts, 2, 2)


class _Rounds:
    """The state of the rule: open candidates, findings, explanations (the counts of
    each round come from a :class:`PresenceCounts`)."""

    def __init__(
        self,
        patterns: list[tuple[str, ...]],
        p_values: Floats,
        candidates: Ints,
        counts: PresenceCounts,
        alpha: float,
    ) -> None:
        self.patterns, self.counts, self.alpha = patterns, counts, alpha
        # A candidate's evidence beyond the stronger findings it overlaps: the largest of
        # its own p-value and its p-values within each such finding's strata.
        self.p_values = p_values
        self.residual = p_values.astype(np.float64, copy=True)
        self.open = np.zeros(len(patterns), dtype=bool)
        self.open[candidates] = True
        self.explained: dict[int, int] = {}
        self.context_plans, self.context_wins = counts.contexts()
        vocabulary = {tool: i for i, tool in enumerate(sorted({t for p in patterns for t in p}))}
        self.length = np.array([len(p) for p in patterns], dtype=np.int64)
        self.uses = np.zeros((len(patterns), max(len(vocabulary), 1)), dtype=bool)
        for row in candidates.tolist():  # which tools each candidate uses
            self.uses[row, [vocabulary[t] for t in patterns[row]]] = True

    def _condition_on(self, a: int) -> None:
        """From now on, test within the plans with and without the finding ``a`` too."""
        self.counts.condition_on(a)
        self.context_plans, self.context_wins = self.counts.contexts()

    def _related(self, a: int, rows: Ints) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
        """Which ``rows`` contain ``a`` (longer), and which ``a`` contains (inside).

        Only rows using every tool of the shorter pattern can contain it; the others are
        ruled out at once, so few pairs of tuples are compared in Python.
        """
        uses, length, pattern = self.uses[rows], self.length[rows], self.patterns[a]
        longer = (length > self.length[a]) & uses[:, self.uses[a]].all(axis=1)
        inside = (length < self.length[a]) & ~(uses & ~self.uses[a]).any(axis=1)
        for i in np.flatnonzero(longer).tolist():
            longer[i] = _contains(self.patterns[rows[i]], pattern)
        for i in np.flatnonzero(inside).tolist():
            inside[i] = _contains(pattern, self.patterns[rows[i]])
        return longer, inside

    def given(self, a: int) -> _Given:
        """Test every open candidate sharing a tool with ``a``, and ``a`` within each."""
        sharing = self.open & self.uses[:, self.uses[a]].any(axis=1)
        sharing[a] = False
        rows = np.flatnonzero(sharing)
        if rows.size == 0:
            empty, no = np.zeros(0), np.zeros(0, dtype=bool)
            return _Given(rows, empty, empty, np.zeros(0, np.int64), no, no)
        x_a, s_a, cells = self.counts.cells(a, rows)
        plans, wins = cells.sum(axis=3), np.ascontiguousarray(cells[:, :, :, 1])
        b_given_a = self._b_given_a(x_a, s_a, plans, wins)
        a_given_b = self._a_given_b(x_a, s_a, plans, wins)
        shared = plans[:, :, 1].sum(axis=1)
        longer, inside = self._related(a, rows)
        co_occur = shared >= _CO_OCCURRENCE * plans.sum(axis=(1, 2))
        return _Given(rows, b_given_a, a_given_b, shared, longer | inside | co_occur, longer)

    def _p_value(self, a: Ints, x: Ints, s: Ints, n: Ints) -> Floats:
        """The CMH p-values (1 where no stratum contributes)."""
        p: Floats = np.nan_to_num(cmh_p_values(a, x, s, n), nan=1.0)
        return p

    def _b_given_a(self, x_a: Ints, s_a: Ints, plans: Ints, wins: Ints) -> Floats:
        """B within (context x plans with / without A)."""
        n = np.stack([self.context_plans - x_a, x_a], axis=-1).reshape(1, -1)
        s = np.stack([self.context_wins - s_a, s_a], axis=-1).reshape(1, -1)
        rows = plans.shape[0]
        return self._p_value(wins.reshape(rows, -1), plans.reshape(rows, -1), s, n)

    def _a_given_b(self, x_a: Ints, s_a: Ints, plans: Ints, wins: Ints) -> Floats:
        """A within (context x plans with / without B), for every B at once."""
        both, both_wins = plans[:, :, 1], wins[:, :, 1]
        x_b, s_b = plans.sum(axis=2), wins.sum(axis=2)
        x = np.concatenate([x_a - both, both], axis=1)
        k = np.concatenate([s_a - both_wins, both_wins], axis=1)
        n = np.concatenate([self.context_plans - x_b, x_b], axis=1)
        s = np.concatenate([self.context_wins - s_b, s_b], axis=1)
        return self._p_value(k, x, s, n)

    def replacement(self, given: _Given, tried: set[int]) -> int | None:
        """The overlapping candidate that explains A better than A explains it."""
        a_stays, b_stays = given.a_given_b <= self.alpha, given.b_given_a <= self.alpha
        better = given.overlap & ~a_stays & (b_stays | given.longer)
        # The longest first (ties: the strongest), so a chain of near-copies ends at once.
        choices = [b for b in given.rows[better].tolist() if b not in tried]
        return max(choices, key=lambda b: (len(self.patterns[b]), -b)) if choices else None

    def settle(self, fdr: float) -> list[int]:
        """Run the rounds; return the candidate findings (strongest first).

        Stops once no open candidate can pass step 6 any more. Residual p-values only grow
        (a replacement takes the smaller of two, one of them closed), so the j-th smallest
        residual of the open candidates bounds the j-th future finding's from below; with
        r candidates so far, a future one can pass only if, for some j, the j-th smallest is
        at most ``fdr * (r + j) / tested``. A finding that could pass as the last one is
        conditioned on in later rounds (the rest would only split the strata further).
        """
        findings: list[int] = []
        tested = len(self.patterns)
        while self.open.any():
            lowest = np.sort(self.residual[self.open])
            reach = fdr * (len(findings) + np.arange(1, lowest.size + 1)) / tested
            if not (lowest <= reach).any():
                break
            a = int(np.flatnonzero(self.open)[0])
            tried = {a}
            given = self.given(a)
            while (b := self.replacement(given, tried)) is not None:
                tried.add(b)
                # One signal: the group's evidence is its strongest member's.
                self.residual[b] = min(self.residual[b], self.residual[a])
                a, given = b, self.given(b)
            overlap = given.overlap
            stays = given.b_given_a <= self.alpha
            explained = given.rows[overlap & ~stays].tolist()
            survivors = given.rows[overlap & stays]
            self.residual[survivors] = np.maximum(
                self.residual[survivors], given.b_given_a[overlap & stays]
            )
            for row in [*explained, *(tried - {a})]:
                self.explained[int(row)] = a
                self.open[row] = False
            self.open[a] = False
            findings.append(a)
            if self.residual[a] <= fdr * len(findings) / tested:
                self._condition_on(a)
        return findings


def findings(
    patterns: list[tuple[str, ...]],
    p_values: Floats,
    significant: NDArray[np.bool_],
    presence: Presence | PresenceCounts,
    alpha: float,
    fdr: float,
    texts: list[str] | None = None,
) -> tuple[NDArray[np.object_], NDArray[np.bool_]]:
    """For each row (strongest first): the text of the pattern explaining it (or ``""``),
    and whether it is a finding. ``texts`` are the rows' ``pattern_text`` (default: the
    tools joined by ``" → "``).

    Rows that are not significant are never explained nor findings; see the module
    docstring for the rule. ``alpha`` is the report's BH threshold, ``p_values`` the
    p-values its q-values came from.

    >>> presence = Presence(
    ...     row=np.array([0, 0, 1, 1, 1]), plan=np.array([0, 1, 0, 1, 2]),
    ...     plan_stratum=np.zeros(4, np.int64), plan_succeeded=np.array([1, 1, 0, 0], bool),
    ...     stratum_plans=np.array([4]), stratum_successes=np.array([2]))
    >>> by, found = findings([("a", "b"), ("a",)], np.array([0.01, 0.02]),
    ...                      np.array([True, True]), presence, 0.5, 0.5)
    >>> by.tolist(), found.tolist()
    (['', 'a → b'], [True, False])
    """
    explained = np.full(len(patterns), "", dtype=object)
    found = np.zeros(len(patterns), dtype=bool)
    candidates = np.flatnonzero(significant)
    if candidates.size == 0:
        return explained, found
    counts = (
        _ArrayCounts(presence, candidates, len(patterns))
        if isinstance(presence, Presence)
        else presence
    )
    rounds = _Rounds(patterns, p_values, candidates, counts, alpha)
    chosen = np.array(rounds.settle(fdr), dtype=np.int64)
    for row, by in rounds.explained.items():
        explained[row] = " → ".join(patterns[by]) if texts is None else texts[by]
    residual = rounds.residual[chosen]
    order = np.argsort(residual, kind="stable")
    ranked, residual = chosen[order], residual[order]
    passes = residual <= fdr * np.arange(1, ranked.size + 1) / len(patterns)
    kept = int(np.flatnonzero(passes)[-1]) + 1 if passes.any() else 0
    found[ranked[:kept]] = True
    return explained, found
