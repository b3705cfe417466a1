"""Run the benchmarks: ``python -m benchmarks [sizes...]``."""

from __future__ import annotations

import sys

from benchmarks import store

if __name__ == "__main__":
    sizes = [int(s) for s in sys.argv[1:]] or [10_000, 100_000, 1_000_000]
    table = store.main(sizes)
    store.RESULTS.mkdir(exist_ok=True)
    (store.RESULTS / "store.md").write_text(
        "# Store benchmark (SQLite file, 2 cores)\n\n" + table + "\n"
    )
    print(f"\nwritten to {store.RESULTS / 'store.md'}")
