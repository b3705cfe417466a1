"""Jupyter helpers. metalearn itself needs none of them: cells can ``await`` its analyses.

A Jupyter kernel already runs an asyncio event loop, so code written for scripts that
calls ``asyncio.run(...)`` or ``loop.run_until_complete(...)`` fails inside a cell with
``RuntimeError: asyncio.run() cannot be called from a running event loop``. The fix is to
``await`` the coroutine in the cell instead. For legacy code you cannot change,
:func:`allow_nested_loops` is an explicit opt-in.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

from metalearn._errors import MissingDependencyError

__all__ = ["allow_nested_loops"]

_applied = False
_lock = threading.Lock()


def allow_nested_loops() -> None:
    """Let ``asyncio.run()`` and ``loop.run_until_complete()`` work inside a running loop.

    Applies ``nest-asyncio2`` (the maintained fork of the archived ``nest-asyncio``, which
    breaks on Python 3.12+): it patches asyncio's ``run``, event-loop policy and the
    running loop's ``run_until_complete`` so that they re-enter a loop that is already
    running. That changes asyncio for the whole process (the patch cannot be undone, and
    re-entrancy can reorder callbacks), so it is for notebooks running legacy code only:
    metalearn never calls it. Prefer ``await service.analyze_execution_patterns(...)``.

    Warns once, on the first call; later calls do nothing. Needs the optional extra:
    ``pip install 'metalearn[notebook]'``.

    In a notebook cell (not run here: the patch would stay in the doctest process; the
    test suite runs it in a real kernel)::

        from metalearn.notebook import allow_nested_loops
        allow_nested_loops()           # RuntimeWarning: ... applied nest-asyncio2 ...
        analysis = asyncio.run(service.analyze_execution_patterns())   # legacy code
    """
    global _applied
    with _lock:
        if _applied:
            return
        _import_nest_asyncio2().apply()
        _applied = True
    warnings.warn(
        "metalearn.notebook.allow_nested_loops() applied nest-asyncio2: asyncio.run() and "
        "loop.run_until_complete() now re-enter running event loops in this process. "
        "Prefer awaiting coroutines directly in notebook cells.",
        RuntimeWarning,
        stacklevel=2,
    )


def _import_nest_asyncio2() -> Any:
    try:
        import nest_asyncio2  # type: ignore[import-untyped]
    except ImportError as err:
        raise MissingDependencyError(
            "allow_nested_loops() needs nest-asyncio2: pip install 'metalearn[notebook]'"
        ) from err
    return nest_asyncio2
