"""Checks of option values shared by every public entry point (one rule, one message)."""

from __future__ import annotations

from metalearn._errors import InvalidArgumentError

__all__ = ["positive_int"]


def positive_int(name: str, value: object, *, what: str = "") -> int:
    """``value`` if it is an integer >= 1 (not a bool), else :class:`InvalidArgumentError`.

    ``what`` says what the number counts, for the message.

    >>> positive_int("chunk_size", 10)
    10
    >>> positive_int("chunk_size", 0, what="plans")
    Traceback (most recent call last):
    ...
    metalearn._errors.InvalidArgumentError: chunk_size must be an integer >= 1 (plans), not 0
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        counts = f" ({what})" if what else ""
        raise InvalidArgumentError(f"{name} must be an integer >= 1{counts}, not {value!r}")
    return value
