"""Cached synthetic histories: SQLite stores of 10k / 100k / 1M plans, built once.

``make_history(n, n_agents=20, seed=0, end=END)`` imported with ``HistoryStore.import_frames``
into ``benchmarks/cache/suite-<n>-<key>.db``. The key is a hash of the store's table layout
(as an empty store creates it) and of the generator's output on a small history, so a
change of either builds new files instead of reusing stale ones. Next to each store lie the
same tables as Parquet (read back from the store with the pandas baseline's own loader),
so baselines that only compute do not pay ``read_sql`` every run.

Measurements never open these files: they work on :func:`working_copy`.

Build ahead of a run: ``python -m benchmarks.histories 10000 100000 1000000``.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

CACHE = Path(__file__).parent / "cache"
END = datetime(2026, 11, 1, tzinfo=UTC)
"""The latest ``finished_at`` of every benchmark history (fixed: results stay comparable)."""
N_AGENTS = 20
SEED = 0
APPENDED_SEED = 1
"""Seed of the plans that refresh measurements append (their plan ids differ from SEED's)."""


def make(n: int, *, seed: int = SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The benchmark history of ``n`` plans (interchange frames)."""
    from metalearn.synthetic import make_history

    return make_history(n, n_agents=N_AGENTS, seed=seed, end=END)


def _layout() -> str:
    """The SQL that creates an empty store: changes when the store's tables change."""
    from metalearn import HistoryStore

    with HistoryStore("sqlite://") as store:
        store.count()  # creates the tables
        with store.engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT type, name, sql FROM sqlite_master ORDER BY name")
            return "\n".join(str(row) for row in rows)


def cache_key() -> str:
    """A short hash of the store layout and of what the generator draws."""
    plans, steps = make(500)
    digest = hashlib.sha256(_layout().encode())
    for frame in (plans, steps):
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    digest.update(f"{N_AGENTS}-{SEED}-{END.isoformat()}".encode())
    return digest.hexdigest()[:10]


@dataclass(frozen=True)
class History:
    """The cached files of one benchmark history."""

    n: int
    store: Path
    plans: Path
    steps: Path

    def files(self) -> list[Path]:
        return [self.store, self.plans, self.steps]

    def stamp(self) -> list[tuple[str, int, int]]:
        """Name, size and modification time of each file: a cheap check for mutation."""
        return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in self.files()]


def cached(n: int, key: str) -> History:
    base = CACHE / f"suite-{n}-{key}"
    return History(
        n, base.with_suffix(".db"), Path(f"{base}.plans.parquet"), Path(f"{base}.steps.parquet")
    )


def ensure(n: int, key: str | None = None, *, log: bool = True) -> History:
    """The cached history of ``n`` plans, built first if missing (a few minutes at 1M)."""
    history = cached(n, key or cache_key())
    if all(p.exists() for p in history.files()):
        return history
    CACHE.mkdir(exist_ok=True)
    started = time.perf_counter()
    if log:
        print(f"building the {n:,}-plan history in {history.store} ...", flush=True)
    if not history.store.exists():
        _build_store(n, history.store)
    _build_frames(history)
    if log:
        print(f"  built in {time.perf_counter() - started:.0f} s", flush=True)
    return history


def _build_store(n: int, target: Path) -> None:
    from metalearn import HistoryStore

    partial = target.with_suffix(".partial.db")
    for leftover in _with_sidecars(partial):
        leftover.unlink(missing_ok=True)
    plans, steps = make(n)
    with HistoryStore(f"sqlite:///{partial}") as store:
        store.import_frames(plans, steps)
        with store.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    for sidecar in _with_sidecars(partial)[1:]:
        sidecar.unlink(missing_ok=True)
    partial.rename(target)  # only complete stores ever carry the final name


def _build_frames(history: History) -> None:
    from benchmarks.baselines import load_frames

    with working_copy(history, history.store.parent) as url:
        plans, steps = load_frames(url)
    for frame, path in ((plans, history.plans), (steps, history.steps)):
        partial = path.with_suffix(".partial")
        frame.to_parquet(partial, index=False)
        partial.rename(path)


def _with_sidecars(path: Path) -> list[Path]:
    return [path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")]


class working_copy:
    """A private copy of a cached store for one measurement, deleted afterwards.

    Yields its SQLAlchemy URL. Measurements may read and append freely: the cached file
    is never opened.
    """

    def __init__(self, history: History, directory: Path) -> None:
        self._source = history.store
        self._target = directory / f"work-{history.n}-{time.time_ns()}.db"

    def __enter__(self) -> str:
        shutil.copyfile(self._source, self._target)
        return f"sqlite:///{self._target}"

    def __exit__(self, *exc: object) -> None:
        for path in _with_sidecars(self._target):
            path.unlink(missing_ok=True)


def main(argv: list[str]) -> None:
    key = cache_key()
    for n in [int(s) for s in argv] or [10_000, 100_000, 1_000_000]:
        history = ensure(n, key)
        print(f"{n:>9,} plans: {history.store} ({history.store.stat().st_size / 2**20:,.0f} MiB)")


if __name__ == "__main__":
    main(sys.argv[1:])
