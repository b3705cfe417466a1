"""Spreadsheet-safe CSV files of DataFrames: the writing rules of :mod:`metalearn.export`.

UTF-8 without a byte-order mark, a header row, CRLF line ends; timestamps as ISO-8601
UTC; tuples joined by ``", "``; a text cell a spreadsheet would run as a formula gets a
leading ``'``. This module knows no result type: results (and ``export`` for queue
metrics) hand it named tables, which is why the results can import it to write
themselves without importing :mod:`metalearn.export`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import pandas as pd

from metalearn._types import ISO_UTC_FORMAT

__all__ = ["neutralise_formulas", "stamp", "write_tables"]

_UNSAFE_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise_formulas(column: pd.Series) -> pd.Series:
    """Prefix ``'`` to the text cells a spreadsheet would run as a formula.

    Cells starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return; other cells and
    missing values are kept. Apply it to text columns only: numbers stay numbers.

    >>> neutralise_formulas(pd.Series(["=HYPERLINK(1)", "-2+3", "ok", None], dtype="str"))
    0    '=HYPERLINK(1)
    1             '-2+3
    2                ok
    3               NaN
    dtype: str
    """
    text = column.astype("str")
    unsafe = text.str.startswith(_UNSAFE_START).fillna(False).astype(bool)
    return text.mask(unsafe, "'" + text)


def stamp(value: datetime) -> str:
    """A moment as the ISO-8601 UTC text every metalearn file uses."""
    return pd.Timestamp(value).tz_convert("UTC").strftime(ISO_UTC_FORMAT)


def _is_text(column: pd.Series) -> bool:
    return pd.api.types.is_string_dtype(column) or column.dtype == object


def _iso(column: pd.Series) -> pd.Series:
    stamps = pd.to_datetime(column, utc=True)
    return stamps.dt.strftime(ISO_UTC_FORMAT)


def _for_csv(frame: pd.DataFrame) -> pd.DataFrame:
    """Timestamps as ISO-8601 UTC, tuples as text, text cells made safe."""
    columns = {}
    for name, column in frame.items():
        if isinstance(column.dtype, pd.DatetimeTZDtype):
            column = _iso(column)
        elif column.dtype == object and column.map(lambda v: isinstance(v, tuple)).any():
            column = column.map(lambda v: ", ".join(v) if isinstance(v, tuple) else v)
        if _is_text(column):
            column = neutralise_formulas(column)
        columns[str(name)] = column
    return pd.DataFrame(columns, index=frame.index)


def write_tables(
    tables: Mapping[str, pd.DataFrame], directory: str | os.PathLike[str]
) -> list[Path]:
    """Write each table as the CSV file of its name into ``directory``; return the paths.

    The directory is created if missing; files of the same names are replaced.
    """
    if not isinstance(directory, str | os.PathLike):
        raise TypeError(f"directory must be a path (str or os.PathLike), not {directory!r}")
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in tables.items():
        path = target / name
        _for_csv(frame).to_csv(path, index=False, encoding="utf-8", lineterminator="\r\n")
        written.append(path)
    return written
