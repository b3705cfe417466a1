"""Helper process that bulk-reads a SQLite history store into Arrow through ADBC.

Run as a script (``python -P _sqlite_worker.py``), never imported by the package: the ADBC
SQLite driver embeds its own copy of SQLite, and two copies in one process break each
other's POSIX file locks. In a process of its own it is safe, reads several times faster
than DB-API rows, and its reader threads decode in parallel (the driver releases the GIL).

Protocol: a JSON request on stdin ``{"database": path, "threads": n, "queries": [[plans
SQL, steps SQL], ...]}``; for each query pair, in order, two Arrow IPC streams on stdout
(the plans, then the steps). Errors end the process with a non-zero status and a
traceback on stderr. It imports only pyarrow and the ADBC driver, to start quickly.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import adbc_driver_manager as adbc
import adbc_driver_sqlite
import pyarrow as pa

_BUSY_TIMEOUT_MS = 30_000
# One batch per query: the driver infers each column's type from its first batch, and a
# column that is NULL there and text later would fail (all-NULL reads as int64, cast later).
_BATCH_ROWS = str(2**30 - 1)


class _Reader:
    """One read-only ADBC connection per thread (connections are not thread-safe)."""

    def __init__(self, database: str) -> None:
        # A file: URI (spaces, '#' and '%' percent-encoded), opened read-only.
        self._uri = f"{Path(database).resolve().as_uri()}?mode=ro"
        self._local = threading.local()
        self._opened: list[tuple[Any, Any]] = []
        self._lock = threading.Lock()

    def _connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            database = adbc_driver_sqlite.connect(self._uri)
            connection = self._local.connection = adbc.AdbcConnection(database)
            with self._lock:
                self._opened.append((database, connection))
            self._run(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        return connection

    def _run(self, sql: str) -> pa.Table:
        statement = adbc.AdbcStatement(self._connection())
        try:
            statement.set_options(**{"adbc.sqlite.query.batch_rows": _BATCH_ROWS})
            statement.set_sql_query(sql)
            stream, _ = statement.execute_query()
            return pa.RecordBatchReader.from_stream(stream).read_all()
        finally:
            statement.close()

    def read(self, plans_sql: str, steps_sql: str) -> tuple[pa.Table, pa.Table]:
        return self._run(plans_sql), self._run(steps_sql)

    def close(self) -> None:
        for database, connection in self._opened:
            connection.close()
            database.close()


def _in_order(
    reader: _Reader, queries: list[list[str]], threads: int
) -> Iterator[tuple[pa.Table, pa.Table]]:
    """Results in query order, with at most ``threads + 1`` reads ahead (bounded memory)."""
    pending: deque[Future[tuple[pa.Table, pa.Table]]] = deque()
    remaining = iter(queries)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for plans_sql, steps_sql in remaining:
            pending.append(pool.submit(reader.read, plans_sql, steps_sql))
            if len(pending) > threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _write(out: BinaryIO, table: pa.Table) -> None:
    with pa.ipc.new_stream(out, table.schema) as writer:
        writer.write_table(table)


def main() -> None:
    request = json.load(sys.stdin)
    reader = _Reader(request["database"])
    out = sys.stdout.buffer
    try:
        for plans, steps in _in_order(reader, request["queries"], int(request["threads"])):
            _write(out, plans)
            _write(out, steps)
            out.flush()
    finally:
        reader.close()


if __name__ == "__main__":
    main()
