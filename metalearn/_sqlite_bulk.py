"""Bulk reads of a SQLite store file in a helper process (see ``_sqlite_worker.py``).

The in-process path turns every row into Python objects; for a whole history that is most
of a cold warehouse build. The helper reads through the ADBC SQLite driver (Arrow-native,
with two reader threads) and streams Arrow IPC back while the caller loads earlier chunks.
Callers read in-process instead where the helper cannot run (no driver, or an embedding
interpreter whose ``sys.executable`` is not Python) or when it fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from metalearn._errors import MetalearnError

__all__ = ["WORKER", "BulkReadError", "StartProcess", "available", "default_command", "read_chunks"]

WORKER = Path(__file__).with_name("_sqlite_worker.py")
"""The helper script (run as a script, never imported: see its docstring)."""
_STDERR_TAIL = 2_000

StartProcess = Callable[..., "subprocess.Popen[Any]"]
"""Starts the helper: called like :class:`subprocess.Popen` (which is the default)."""


class BulkReadError(MetalearnError):
    """The helper process could not read the store (the caller falls back in-process)."""


def available(python: str | None = None) -> bool:
    """Whether the helper can run: ``python`` (default: ``sys.executable``) is a Python to
    start it with, and the ADBC SQLite driver is installed.

    >>> available("/usr/bin/uwsgi")     # an embedding server's own binary: not a Python
    False
    """
    name = Path(sys.executable if python is None else python).name.lower()
    if not name.startswith(("python", "pypy")):  # e.g. uWSGI's own binary
        return False
    return importlib.util.find_spec("adbc_driver_sqlite") is not None


def default_command(python: str | None = None) -> tuple[str, ...]:
    """How the helper is started: ``python`` (default: ``sys.executable``) running
    :data:`WORKER`, with ``-P`` so that the script's folder (this package) cannot shadow
    modules such as ``_queue``."""
    return (sys.executable if python is None else python, "-P", str(WORKER))


def read_chunks(
    database: str,
    queries: Sequence[tuple[str, str]],
    *,
    threads: int = 2,
    command: Sequence[str] | None = None,
    start: StartProcess = subprocess.Popen,
) -> Generator[tuple[pa.Table, pa.Table]]:
    """(plans, steps) Arrow tables for each (plans SQL, steps SQL) pair, in order.

    The helper (``command``, default :func:`default_command`, started by ``start``) runs
    ahead of the caller by a few chunks at most. Closing the generator early (or an error)
    stops the helper. Raises :class:`BulkReadError` when the helper fails.
    """
    request = json.dumps(
        {"database": os.path.abspath(database), "threads": threads, "queries": queries}
    ).encode()
    with tempfile.TemporaryFile() as stderr:
        process = start(
            list(default_command() if command is None else command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        assert process.stdin is not None and process.stdout is not None
        try:
            try:
                process.stdin.write(request)
                process.stdin.close()
                for _ in queries:
                    plans = pa.ipc.open_stream(process.stdout).read_all()
                    steps = pa.ipc.open_stream(process.stdout).read_all()
                    yield plans, steps
            except (OSError, pa.ArrowInvalid) as error:
                process.wait()
                raise BulkReadError(_failure(process.returncode, stderr, error)) from error
            if process.wait() != 0:
                raise BulkReadError(_failure(process.returncode, stderr, None))
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            process.stdout.close()


def _failure(status: int | None, stderr: IO[bytes], error: Exception | None) -> str:
    stderr.seek(0)
    text = stderr.read().decode(errors="replace").strip()[-_STDERR_TAIL:]
    reason = f"{type(error).__name__}: {error}" if error is not None else "no error reported"
    return (
        f"the SQLite reader process ended with status {status} ({reason}); "
        f"its output: {text or '(none)'}"
    )
