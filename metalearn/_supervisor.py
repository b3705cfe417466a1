"""WorkerProcess: one ``metalearn worker`` child process, started and kept running for an app.

The child gets the store's URL in its environment (``METALEARN_DB_URL``), never on its
command line, so a password does not show in ``ps``. Its stdin is a pipe from the app: when
the app closes it, or dies (even by SIGKILL, when the kernel closes it), the worker stops
claiming, finishes or releases its batch and exits. It runs in a session of its own, so a
Ctrl-C meant for the app reaches it only through the app's shutdown.

A thread of the app waits on the child and starts it again when it exits without being
asked to, after a backoff that doubles from ``restart_backoff_s[0]`` up to
``restart_backoff_s[1]`` and starts over once a child has run for a minute; every restart
is logged on ``metalearn.supervisor`` and counted in :attr:`WorkerProcess.restarts`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

__all__ = ["URL_VARIABLE", "WorkerProcess"]

logger = logging.getLogger("metalearn.supervisor")

URL_VARIABLE = "METALEARN_DB_URL"
"""The environment variable a worker reads its store's URL from."""

_STEADY_S = 60.0  # a child that ran this long resets the restart backoff


class WorkerProcess:
    """Starts ``python -m metalearn worker <args>`` on the store at ``url`` and supervises it.

    ``url`` is the full URL (password included: it travels in the environment only);
    ``shown_url`` the one to log. :meth:`start` is idempotent; :meth:`stop` asks the child
    to stop (closes its stdin), waits up to ``stop_timeout_s``, then sends SIGTERM and at
    last SIGKILL.
    """

    def __init__(
        self,
        url: str,
        args: Sequence[str],
        *,
        shown_url: str,
        restart_backoff_s: tuple[float, float] = (1.0, 30.0),
        stop_timeout_s: float = 20.0,
    ) -> None:
        self._url, self._shown_url = url, shown_url
        self.command = [sys.executable, "-m", "metalearn", "worker", *args, "--stop-on-eof"]
        self.restart_backoff_s = restart_backoff_s
        self.stop_timeout_s = stop_timeout_s
        self.restarts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        state = "stopped" if self._stopping.is_set() else f"pid={self.pid}"
        return f"<WorkerProcess {self._shown_url} {state} restarts={self.restarts}>"

    @property
    def pid(self) -> int | None:
        """The running child's process id (None before it starts and after it exits)."""
        process = self._process
        return None if process is None or process.poll() is not None else process.pid

    def start(self) -> None:
        """Start the child and the thread that keeps it running (once)."""
        with self._lock:
            if self._thread is not None or self._stopping.is_set():
                return
            self._process = self._spawn()
            self._thread = threading.Thread(
                target=self._supervise, name="metalearn-supervisor", daemon=True
            )
            self._thread.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, URL_VARIABLE: self._url}
        process = subprocess.Popen(
            self.command, env=env, stdin=subprocess.PIPE, start_new_session=True
        )
        logger.info("started analysis worker pid %d on %s", process.pid, self._shown_url)
        return process

    def _supervise(self) -> None:
        delay = self.restart_backoff_s[0]
        while True:
            process = self._process
            assert process is not None
            started = time.monotonic()
            code = process.wait()
            if self._stopping.is_set():
                return  # stop() closes its stdin
            _close_stdin(process)
            if time.monotonic() - started >= _STEADY_S:
                delay = self.restart_backoff_s[0]
            logger.warning(
                "analysis worker pid %d exited with %s; starting another in %.1f s",
                process.pid, _exit_text(code), delay,
            )  # fmt: skip
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self._process = self._spawn()
                self.restarts += 1
            delay = min(delay * 2, self.restart_backoff_s[1])

    def stop(self) -> int | None:
        """Stop the child and its supervision; returns its exit code (None if none ran)."""
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is None:
            return None
        code = _stop(process, self.stop_timeout_s)
        if self._thread is not None:
            self._thread.join()
        logger.info("analysis worker pid %d stopped (%s)", process.pid, _exit_text(code))
        return code


def _stop(process: subprocess.Popen[bytes], timeout_s: float) -> int:
    """Close stdin (the worker's stop), then SIGTERM, then SIGKILL, as each times out."""
    _close_stdin(process)
    for escalate in (process.terminate, process.kill):
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("analysis worker pid %d did not stop; %s", process.pid,
                           escalate.__name__)  # fmt: skip
            escalate()
    return process.wait()


def _close_stdin(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None:
        with contextlib.suppress(OSError):  # the child is gone already
            process.stdin.close()


def _exit_text(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"code {code}"
