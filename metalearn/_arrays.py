"""Vectorised helpers over integer-coded arrays (numpy only, no Python loop per element)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["dense_codes", "first_occurrences"]

_SLICED_DISTANCES = 32  # beyond this, only entries of longer runs are compared


def first_occurrences(
    values: NDArray[np.int64] | NDArray[np.int32],
    offset: NDArray[np.int64] | NDArray[np.int32],
    valid: NDArray[np.bool_] | None = None,
    candidates: NDArray[np.bool_] | None = None,
) -> NDArray[np.bool_]:
    """Whether each entry is the first of its value within its run.

    Entries come in contiguous runs (the steps of one plan); ``offset`` is each entry's
    position within its run (0 for the first). Every entry is compared with the ones 1, 2,
    ... places earlier in the same run: whole-array slice comparisons for short distances
    (contiguous, SIMD-fast), then only the few entries of longer runs. No hashing, no
    Python loop per element. Entries where ``valid`` is False are never first. When
    only some entries can repeat at all (``candidates``), only those are compared.

    >>> first_occurrences(np.array([3, 5, 3, 5, 7, 3]), np.array([0, 1, 2, 3, 0, 1])).tolist()
    [True, True, False, False, True, True]
    """
    first = np.ones(len(values), dtype=bool) if valid is None else valid.copy()
    if candidates is not None:
        return _first_among(values, offset, first, np.flatnonzero(first & candidates), 1)
    longest = int(offset.max()) if len(offset) else 0
    for distance in range(1, min(longest, _SLICED_DISTANCES) + 1):
        earlier = (values[distance:] == values[:-distance]) & (offset[distance:] >= distance)
        first[distance:] &= ~earlier
    distance = _SLICED_DISTANCES + 1
    return _first_among(values, offset, first, np.flatnonzero(first), distance)


def _first_among(
    values: NDArray[np.int64] | NDArray[np.int32],
    offset: NDArray[np.int64] | NDArray[np.int32],
    first: NDArray[np.bool_],
    active: NDArray[np.int64],
    distance: int,
) -> NDArray[np.bool_]:
    """Compare only the ``active`` entries, from ``distance`` places back onwards."""
    active = active[offset[active] >= distance]
    while active.size:
        repeated = values[active - distance] == values[active]
        first[active[repeated]] = False
        distance += 1
        active = active[~repeated & (offset[active] >= distance)]
    return first


def dense_codes(values: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """``(codes, uniques)`` with ``uniques[codes] == values`` and uniques ascending.

    Small non-negative values are remapped through a lookup table (no hashing, no sort);
    a wide range falls back to ``np.unique``.

    >>> codes, uniques = dense_codes(np.array([40, 7, 40, 9]))
    >>> codes.tolist(), uniques.tolist()
    ([2, 0, 2, 1], [7, 9, 40])
    """
    if len(values) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    top = int(values.max())
    if top > max(8 * len(values), 1 << 20):
        uniques, codes = np.unique(values, return_inverse=True)
        return codes.astype(np.int64), uniques.astype(np.int64)
    present = np.zeros(top + 1, dtype=bool)
    present[values] = True
    remap = np.cumsum(present) - 1
    return remap[values].astype(np.int64, copy=False), np.flatnonzero(present).astype(np.int64)
