"""The store's database: which URL, the engine and its SQLite settings, locks, the schema.

Every part of the store (appending, the readers, snapshots) borrows its connections from
one :class:`Database`, so a connection is always taken the same way: schema created first,
an in-memory SQLite database serialised, this process's SQLite writers queued on a lock.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import (
    Connection,
    Engine,
    Table,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import StaticPool

from metalearn._errors import InvalidArgumentError
from metalearn._schema import ADDED_COLUMNS, PLAN_COUNTER, STORE_ID, counters, metadata, plans

__all__ = ["DEFAULT_URL", "URL_VARIABLE", "Database", "default_url", "frame_rows", "insert_rows"]

DEFAULT_URL = "sqlite:///data/metalearn.db"
"""The embedded default: a SQLite file under the current directory."""
URL_VARIABLE = "METALEARN_DB_URL"
"""The environment variable that names the database when no URL is given."""

_SQLITE_BUSY_TIMEOUT_MS = 30_000
# Any constant: PostgreSQL's transaction-level advisory lock that serialises schema creation.
_SCHEMA_LOCK_KEY = 0x6D65_7461_6C65_6172  # "metalear"
_INSERT_CHUNK_ROWS = 50_000


def default_url() -> str:
    """The URL a store opens without one: ``$METALEARN_DB_URL``, else :data:`DEFAULT_URL`.

    >>> import os
    >>> default_url() == (os.environ.get("METALEARN_DB_URL") or "sqlite:///data/metalearn.db")
    True
    """
    return os.environ.get(URL_VARIABLE) or DEFAULT_URL


def _resolve_url(url: str | URL | None) -> URL:
    resolved = make_url(url if url is not None else default_url())
    if resolved.get_backend_name() == "sqlite" and resolved.database not in (None, "", ":memory:"):
        Path(resolved.database).parent.mkdir(parents=True, exist_ok=True)
    return resolved


def _is_memory_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
    _wal_mode(cursor)
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _wal_mode(cursor: Any) -> None:
    """Switch the file to WAL, waiting out other processes doing the same.

    Changing the journal mode needs the file to itself, and SQLite answers "database is
    locked" at once instead of calling the busy handler, so a crowd opening a new file
    would fail; retry for up to the busy timeout (a file already in WAL costs one query).
    """
    deadline = time.monotonic() + _SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _take_write_lock(conn: Connection) -> None:
    """Begin a SQLite write transaction holding the write lock, polling for it every
    millisecond while another process writes.

    SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms
    between tries, so a writer that meets the lock held for 4 ms can wait 8 ms, and one
    that meets a few short transactions in a row (an analysis worker's snapshots) falls
    into its 25-100 ms sleeps. Taking the lock first (``BEGIN IMMEDIATE``) with a zero
    busy timeout and a 1 ms poll keeps a write's wait within a millisecond of the other
    writer's commit, up to the usual busy timeout; the rest of the transaction then never
    waits.
    """
    deadline = time.monotonic() + _SQLITE_BUSY_TIMEOUT_MS / 1000
    conn.exec_driver_sql("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.001)
    finally:
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")


def _make_engine(url: URL) -> Engine:
    if _is_memory_sqlite(url):
        return create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    if url.get_backend_name() == "sqlite":
        return create_engine(url, connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_MS / 1000})
    return create_engine(url, pool_pre_ping=True)


class Database:
    """A SQLAlchemy engine with the store's tables, and the one way to borrow connections.

    ``url`` is a SQLAlchemy URL, an :class:`~sqlalchemy.Engine` to share (not disposed by
    :meth:`close`) or ``None`` for :func:`default_url`. Tables are created on first use.

    >>> database = Database("sqlite://")
    >>> with database.connect() as conn:
    ...     conn.execute(select(func.count()).select_from(plans)).scalar_one()
    0
    >>> database.sqlite_file is None       # in memory: no file another process could open
    True
    >>> database.close()
    """

    def __init__(self, url: str | URL | Engine | None = None) -> None:
        if isinstance(url, Engine):
            self.engine, self._owns_engine = url, False
        else:
            self.engine, self._owns_engine = _make_engine(_resolve_url(url)), True
        sqlite = self.engine.dialect.name == "sqlite"
        if sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        # An in-memory SQLite database is one shared connection: serialise its users.
        memory = _is_memory_sqlite(self.engine.url)
        self._serial: AbstractContextManager[Any] = threading.RLock() if memory else nullcontext()
        # SQLite has one writer at a time. Queueing this process's writers on a lock wakes
        # the next one the moment a commit ends, where SQLite's busy handler would poll
        # with sleeps of up to 100 ms; other processes still meet the busy timeout.
        self._write_lock: AbstractContextManager[Any] = (
            threading.Lock() if sqlite and not memory else nullcontext()
        )
        self._sqlite = sqlite
        self.in_memory = memory
        """Whether this is a SQLite database in memory (no other process can open it)."""
        self._schema_lock = threading.Lock()
        self._schema_ready = False
        self._store_id = 0
        self._pause_after_write_s = 0.0

    @property
    def sqlite_file(self) -> str | None:
        """The SQLite database file, or None (another backend, or SQLite in memory)."""
        url = self.engine.url
        if url.get_backend_name() != "sqlite" or _is_memory_sqlite(url):
            return None
        return str(url.database)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection for reading (the schema exists by then)."""
        self.ensure_schema()
        with self._serial, self.engine.connect() as conn:
            yield conn

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A write transaction, committed when the block ends without an error.

        On SQLite it holds the write lock from its start (see :func:`_take_write_lock`),
        so what it reads stays true until it commits.
        """
        self.ensure_schema()
        with self._serial, self._write_lock, self.engine.begin() as conn:
            if self._sqlite:
                _take_write_lock(conn)
            yield conn
        if self._pause_after_write_s:
            self._give_way()

    @property
    def pause_after_write_s(self) -> float:
        """How long this writer gives way after each write (see :meth:`write_in_background`)."""
        return self._pause_after_write_s

    def write_in_background(self, pause_s: float) -> None:
        """Make this a background writer of a SQLite file (as an analysis worker is).

        After each write transaction it checkpoints the WAL (passively: that takes no
        lock the app's writers wait for), so the app's own commits seldom reach the
        auto-checkpoint threshold and pay for copying the worker's pages; then it sleeps
        ``pause_s`` outside every lock, because SQLite's busy handler makes a writer of
        another process poll with growing sleeps, and writes back to back would starve it.
        """
        if self.sqlite_file is None:
            raise InvalidArgumentError("only a SQLite file store has a background writer mode")
        self._pause_after_write_s = float(pause_s)

    def _give_way(self) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
        time.sleep(self._pause_after_write_s)

    def ensure_schema(self) -> None:
        """Create the tables, the seq counter and the store's identity unless this process
        already did.

        Safe when many processes open a fresh store at once: creation runs in one
        transaction that first takes a lock every creator waits for (SQLite: the database
        write lock, by ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-level advisory lock),
        so the first creates everything and the others find it there. A store created by
        an older version gains the columns added since (:data:`ADDED_COLUMNS`) in the same
        transaction.
        """
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            with self._serial, self.engine.connect() as conn:
                self._lock_for_creation(conn)
                metadata.create_all(conn, checkfirst=True)
                _add_missing_columns(conn)
                self._store_id = _ensure_counters(conn)
                conn.commit()
            self._schema_ready = True

    def _lock_for_creation(self, conn: Connection) -> None:
        if self.engine.dialect.name == "sqlite":
            # pysqlite starts no transaction before DDL by itself; this one holds the
            # write lock (waiting out the busy timeout) until the commit.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif self.engine.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))

    @property
    def store_id(self) -> str:
        """The store's identity: drawn at random when its tables were created (hex text).

        A store deleted and created again gets a new one, so a cache of its history (a
        persisted warehouse) can tell it is looking at another store.
        """
        self.ensure_schema()
        return f"{self._store_id:016x}"

    def close(self) -> None:
        """Release the pool, when this database created the engine."""
        if self._owns_engine:
            self.engine.dispose()


def _column_values(column: pd.Series) -> list[Any]:
    """Python values with every missing cell as None (what DB-API drivers expect)."""
    if column.dtype.kind in "iub" and not column.hasnans:
        return column.tolist()
    values = column.astype(object)
    return values.where(column.notna(), None).tolist()


def frame_rows(frame: pd.DataFrame, columns: Sequence[str]) -> list[tuple[Any, ...]]:
    """The frame's ``columns`` as row tuples for :func:`insert_rows` (missing -> None)."""
    return list(zip(*(_column_values(frame[c]) for c in columns), strict=True))


def insert_rows(
    conn: Connection, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    """Insert row tuples in chunks, as plain driver ``executemany`` calls where possible."""
    if not rows:
        return
    marker = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(conn.dialect.paramstyle)
    for start in range(0, len(rows), _INSERT_CHUNK_ROWS):
        chunk = rows[start : start + _INSERT_CHUNK_ROWS]
        if marker is None:
            conn.execute(insert(table), [dict(zip(columns, r, strict=True)) for r in chunk])
        else:
            sql = (
                f"INSERT INTO {table.name} ({', '.join(columns)}) "
                f"VALUES ({', '.join([marker] * len(columns))})"
            )
            conn.exec_driver_sql(sql, chunk)


def _add_missing_columns(conn: Connection) -> None:
    """``ALTER TABLE ... ADD COLUMN`` each added column an older store's table lacks.

    The added columns are nullable, so the rows written before read back as NULL.
    """
    inspector = inspect(conn)
    for name, columns in ADDED_COLUMNS.items():
        present = {c["name"] for c in inspector.get_columns(name)}
        table = metadata.tables[name]
        for column in (table.c[c] for c in columns if c not in present):
            kind = column.type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN {column.name} {kind}")


def _ensure_counters(conn: Connection) -> int:
    """Create the seq counter and the identity rows if missing; return the identity.

    The counter of a store written before it existed starts at its highest seq.
    """
    value = select(counters.c.name, counters.c.value).where(
        counters.c.name.in_([PLAN_COUNTER, STORE_ID])
    )
    found = {str(name): int(number) for name, number in conn.execute(value).all()}
    if PLAN_COUNTER not in found:
        start = conn.execute(select(func.coalesce(func.max(plans.c.seq), 0))).scalar_one()
        conn.execute(insert(counters).values(name=PLAN_COUNTER, value=start))
    if STORE_ID not in found:
        found[STORE_ID] = secrets.randbits(62) + 1  # positive and fits a BIGINT
        conn.execute(insert(counters).values(name=STORE_ID, value=found[STORE_ID]))
    return int(found[STORE_ID])
