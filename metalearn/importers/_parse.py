"""Parsing helpers the readers share: sources, JSON documents, timestamps, ids, statuses.

Nothing here knows a trace format; each reader module knows exactly one. This is also the
boundary where malformed input becomes a :class:`TraceFormatError` naming the source, the
record and the field: a file that is not UTF-8 (or not gzip, JSON, CSV, Parquet), JSON
nested deeper than :data:`MAX_DEPTH` levels, a number too long to print, a field that must
hold an object or a list and holds something else, an id that is an object or a list, a
timestamp outside ``EARLIEST``..``LATEST``.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import reprlib
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from metalearn.importers._errors import TraceFormatError, TraceImportError

__all__ = [
    "EARLIEST",
    "LATEST",
    "MAX_DEPTH",
    "PathLike",
    "bounded",
    "documents",
    "exception_message",
    "flatten",
    "is_path",
    "json_object",
    "loads",
    "mapping",
    "present",
    "read_table",
    "records",
    "rows",
    "sequence",
    "shown",
    "span_id",
    "status_of",
    "text",
    "to_ns",
]

PathLike = str | os.PathLike[str]
_HEX = re.compile(r"^(?:0[xX])?[0-9a-fA-F]+$")
_ERROR = frozenset({"2", "error", "status_code_error", "statuscode.error"})
_OK = frozenset({"1", "ok", "status_code_ok", "statuscode.ok"})
_LINES = frozenset({".jsonl", ".ndjson"})

MAX_DEPTH = 100
"""How deeply a document may nest objects and lists (the real samples need 12).

Deeper documents are refused up front, so that no reader walks into a RecursionError; a
self-referencing object counts as too deep.
"""
_MAX_INT_BITS = 4096  # about 1,233 digits; Python will not print ints beyond 4,300 digits
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},:]')

EARLIEST = pd.Timestamp.min.tz_localize("UTC")
"""The first timestamp the readers accept, 1677-09-21T00:12:43.145224193Z.

Plans hold their times as nanoseconds since the epoch in 64 bits (pandas' ``datetime64[ns]``),
so the readers accept exactly that range; earlier or later times raise TraceFormatError.
"""
LATEST = pd.Timestamp.max.tz_localize("UTC")
"""The last timestamp the readers accept, 2262-04-11T23:47:16.854775807Z (see EARLIEST)."""

_shown = reprlib.Repr()
_shown.maxstring = _shown.maxother = 60
_shown.maxlevel = 3


def present(value: Any) -> bool:
    """Whether a cell holds something: not None, NaN, NA, NaT or a blank string."""
    if value is None or value is pd.NA or value is pd.NaT:
        return False
    if isinstance(value, float | np.floating):
        return not math.isnan(value)
    if isinstance(value, str):
        return value.strip() != ""
    return True


def text(value: Any) -> str | None:
    """The value as a string, or ``None`` when it is not :func:`present`."""
    return str(value).strip() if present(value) else None


def is_path(value: Any) -> bool:
    return isinstance(value, str | os.PathLike)


def shown(value: Any) -> str:
    """A short repr for messages: long text, deep nesting and huge numbers are cut."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"<a {value.bit_length()}-bit integer>"
    return _shown.repr(value)


def _kind_of(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return f"a boolean ({value})"
    if isinstance(value, int | float | np.integer | np.floating):
        return f"a number ({shown(value)})"
    if isinstance(value, str):
        return f"text ({shown(value)})"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple | np.ndarray):
        return "a list"
    return f"a {type(value).__name__}"


def _wrong_type(value: Any, where: str, field: str | None, expected: str) -> TraceFormatError:
    subject = f"field {field!r}" if field else "the record"
    return TraceFormatError(
        f"{where}: {subject} is {_kind_of(value)}; expected {expected}",
        source=where,
        field=field,
    )


def mapping(value: Any, where: str, field: str | None) -> Mapping[str, Any]:
    """``value`` when it is an object, ``{}`` when it is missing; anything else is an error.

    ``field`` names the field holding the value (``None``: the value is the record itself).
    """
    if isinstance(value, Mapping):
        return value
    if present(value):
        raise _wrong_type(value, where, field, "an object (a mapping of names to values)")
    return {}


def sequence(value: Any, where: str, field: str | None) -> list[Any]:
    """``value`` as a list when it is a list, ``[]`` when it is missing; else an error."""
    if isinstance(value, list | tuple | np.ndarray):
        return list(value)
    if present(value):
        raise _wrong_type(value, where, field, "a list")
    return []


def _suffixes(path: Path) -> list[str]:
    suffixes = [s.lower() for s in path.suffixes]
    return suffixes[:-1] if suffixes[-1:] == [".gz"] else suffixes


def _read_bytes(path: Path) -> bytes:
    if path.suffix.lower() != ".gz":
        return path.read_bytes()
    try:
        return gzip.decompress(path.read_bytes())
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise TraceFormatError(
            f"{path.name}: not a complete gzip file ({err}); decompress it to check, or "
            "export it again",
            source=path.name,
        ) from None


def _read_text(path: Path) -> str:
    data = _read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise TraceFormatError(
            f"{path.name}: not UTF-8 text (byte {err.start} is {data[err.start]:#04x}); "
            "trace exports are UTF-8 JSON, so re-encode the file as UTF-8",
            source=path.name,
        ) from None


def _deep_path(content: str) -> list[str | int] | None:
    """Where JSON text first nests deeper than MAX_DEPTH: keys and list positions."""
    path: list[str | int] = []
    last = '""'
    for match in _JSON_TOKEN.finditer(content):
        token = match.group()
        if token[0] == '"':
            last = token
        elif token in "[{":
            if len(path) == MAX_DEPTH:
                return path
            path.append(0 if token == "[" else "")
        elif token in "]}" and path:
            path.pop()
        elif token == ":" and path:
            path[-1] = json.loads(last)
        elif token == "," and path and isinstance(path[-1], int):
            path[-1] += 1
    return None


def _dotted(path: Sequence[str | int]) -> str:
    shown_path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path[:6])
    return shown_path.lstrip(".") + ("..." if len(path) > 6 else "")


def _too_deep(where: str, path: Sequence[str | int] | None) -> TraceFormatError:
    field = _dotted(path) if path else None
    at = f"field {field!r}" if field else "the document"
    return TraceFormatError(
        f"{where}: {at} nests objects or lists more than {MAX_DEPTH} levels deep; traces "
        "need far fewer, so the data is likely corrupt (or self-referencing): remove or "
        "flatten that field",
        source=where,
        field=field,
    )


def loads(content: str, where: str, field: str | None = None) -> Any:
    """``json.loads`` that turns what it cannot take into a TraceFormatError.

    Invalid JSON still raises :class:`json.JSONDecodeError`, for the caller to judge; JSON
    nested too deeply for :mod:`json` (or for :func:`bounded`) and numbers too long to
    convert raise TraceFormatError. ``field`` names the field the text came from.
    """
    try:
        document = json.loads(content)
    except RecursionError:
        path, prefix = _deep_path(content), [field] if field else []
        raise _too_deep(where, prefix if path is None else [*prefix, *path]) from None
    except json.JSONDecodeError:
        raise
    except ValueError as err:  # an integer beyond Python's digit limit for conversion
        raise TraceFormatError(
            f"{where}: {'field ' + repr(field) if field else 'the document'} is not JSON a "
            f"reader can convert ({err})",
            source=where,
            field=field,
        ) from None
    return bounded(document, where, [field] if field else [])


def bounded(document: Any, where: str, prefix: Sequence[str | int] = ()) -> Any:
    """``document``, once checked to nest at most MAX_DEPTH levels and to hold no number
    too long to print (both only reach a reader as Python objects or through :func:`loads`).
    """
    stack: list[tuple[tuple[str | int, ...], Any]] = [(tuple(prefix), document)]
    base = len(prefix)
    while stack:
        path, node = stack.pop()
        if isinstance(node, Mapping | list | tuple) or (
            isinstance(node, np.ndarray) and node.dtype == object
        ):
            if len(path) - base >= MAX_DEPTH:
                raise _too_deep(where, path)
            items = node.items() if isinstance(node, Mapping) else enumerate(node)
            stack.extend(((*path, key), value) for key, value in items)
        elif isinstance(node, int) and node.bit_length() > _MAX_INT_BITS:
            field = _dotted(path) or None
            raise TraceFormatError(
                f"{where}: {'field ' + repr(field) if field else 'the document'} holds a "
                f"{node.bit_length()}-bit integer; no trace field needs more than 64 bits",
                source=where,
                field=field,
            )
    return document


def _json_lines(path: Path, content: str) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            yield where, loads(line, where)
        except json.JSONDecodeError as err:
            raise TraceFormatError(
                f"{where}: not valid JSON ({err.msg}); expected one JSON "
                "document per line (JSON Lines) or a single JSON document",
                source=where,
            ) from None


def file_documents(path: Path) -> Iterator[tuple[str, Any]]:
    """The JSON documents of a file: one per line for JSON Lines, else the whole file.

    A ``.json`` file that is really JSON Lines (as the OpenTelemetry Collector writes) is
    read line by line.
    """
    content = _read_text(path)
    if _LINES.intersection(_suffixes(path)):
        yield from _json_lines(path, content)
        return
    try:
        document = loads(content, path.name)
    except json.JSONDecodeError:
        yield from _json_lines(path, content)
        return
    yield path.name, document


def documents(source: Any) -> Iterator[tuple[str, Any]]:
    """``(where, document)`` pairs from a path, a parsed object, or a sequence of either."""
    if is_path(source):
        yield from file_documents(Path(source))
    elif isinstance(source, Mapping):
        yield "input", bounded(source, "input")
    elif isinstance(source, Sequence) and not isinstance(source, bytes | bytearray):
        for position, item in enumerate(source):
            if is_path(item):
                yield from file_documents(Path(item))
            else:
                yield f"input item {position}", bounded(item, f"input item {position}")
    else:
        raise TraceFormatError(
            f"cannot read traces from a {type(source).__name__}; pass a path, a parsed "
            "JSON object, or a list of either"
        )


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (pa.ArrowException, UnicodeDecodeError) as err:
        raise TraceFormatError(
            f"{path.name}: not a readable Parquet file ({err}); export it again",
            source=path.name,
        ) from None


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype="str", keep_default_na=False, na_values=[])
    except (UnicodeDecodeError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise TraceFormatError(f"{path.name}: not UTF-8 CSV ({err})", source=path.name) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise TraceFormatError(f"{path.name}: not a CSV table ({err})", source=path.name) from None


def read_table(path: Path) -> pd.DataFrame:
    """A Parquet, CSV, JSON or JSON Lines file as a DataFrame (``.gz`` allowed for text)."""
    suffixes = _suffixes(path)
    if ".parquet" in suffixes:
        return _read_parquet(path)
    if ".csv" in suffixes:
        return _read_csv(path)
    table: list[Mapping[str, Any]] = []
    for where, document in file_documents(path):
        listed = isinstance(document, list)
        for position, item in enumerate(document if listed else [document]):
            if not isinstance(item, Mapping):
                name = f"{where}, item {position}" if listed else where
                raise _wrong_type(item, name, None, "an object (one row of the table)")
            table.append(item)
    return pd.DataFrame.from_records(table)


def _frames(source: Any, accepts: str, name: str) -> Iterator[tuple[str, pd.DataFrame]]:
    if isinstance(source, pd.DataFrame):
        yield name, source
    elif is_path(source):
        yield Path(source).name, read_table(Path(source))
    elif isinstance(source, list | tuple) and all(
        is_path(p) or isinstance(p, pd.DataFrame) for p in source
    ):
        for position, item in enumerate(source):
            yield from _frames(item, accepts, f"{name} frame {position}".strip())
    else:
        raise TraceImportError(f"{accepts}, not {type(source).__name__}")


def rows(source: Any, accepts: str, name: str = "") -> list[tuple[str, dict[str, Any]]]:
    """``(where, row)`` for the rows of a DataFrame, a table file or a list of those.

    ``where`` is ``"row 3"`` in a lone frame called ``name`` (``"annotations row 3"``),
    ``"spans.parquet row 3"`` in a file, ``"frame 1 row 3"`` in a list. ``accepts`` starts
    the error message for anything else, e.g. "read_mlflow() takes ...".
    """
    return [
        found for where, frame in _frames(source, accepts, name) for found in records(frame, where)
    ]


def _unique_columns(frame: pd.DataFrame, where: str) -> None:
    seen: set[Any] = set()
    for repeated in [*(n for n in frame.index.names if n is not None), *frame.columns]:
        if repeated not in seen:
            seen.add(repeated)
            continue
        raise TraceFormatError(
            f"{where or 'the frame'}: two columns (or a column and the index) are named "
            f"{repeated!r}; rename one, so that each row has one value for it",
            source=where or None,
            field=str(repeated),
        )


def records(frame: pd.DataFrame, where: str = "") -> list[tuple[str, dict[str, Any]]]:
    """``(where, row)`` per row, with a named index (e.g. ``context.span_id``) as a column.

    Rows are named ``f"{where} row {n}"``; cells are checked by :func:`bounded`.
    """
    _unique_columns(frame, where)
    if any(name is not None for name in frame.index.names):
        frame = frame.reset_index()
    prefix = f"{where} row" if where else "row"
    try:
        table = frame.to_dict("records")
    except UnicodeDecodeError as err:  # Arrow-backed text is only decoded here
        raise TraceFormatError(
            f"{where or 'the frame'}: a text column holds bytes that are not UTF-8 ({err}); "
            "export the table again",
            source=where or None,
        ) from None
    found = [(f"{prefix} {n}", row) for n, row in enumerate(table)]
    nested = [c for c, dtype in frame.dtypes.items() if pd.api.types.is_object_dtype(dtype)]
    for name, row in found:
        for column in nested:
            bounded(row[column], name, [str(column)])
    return found  # type: ignore[return-value]


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys: ``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def exception_message(events: Any, attributes: Callable[[Any], Mapping[str, Any]]) -> str | None:
    """The message of a span's first ``exception`` event ("" without one), or ``None``.

    ``attributes`` turns an event's raw attributes into a flat mapping: each format
    stores them its own way (OTLP key/value lists, JSON-encoded values, nesting).
    """
    if not isinstance(events, list | tuple | np.ndarray):
        return None
    for event in events:
        if isinstance(event, Mapping) and text(event.get("name")) == "exception":
            attrs = attributes(event.get("attributes"))
            return text(attrs.get("exception.message")) or text(attrs.get("exception.type")) or ""
    return None


def json_object(value: Any, where: str, field: str) -> dict[str, Any]:
    """A mapping, or a JSON-encoded object (as CSV exports write them); else empty."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            parsed = loads(value, where, field)
        except json.JSONDecodeError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def span_id(value: Any, where: str, field: str, width: int = 16) -> str | None:
    """An id as text: integers as zero-padded hex, hex (``0x`` or not) in lower case.

    Other strings (UUIDs, base64) are kept as they are; an empty or all-zero id is ``None``.
    An object or a list is no id: TraceFormatError.
    """
    if isinstance(value, Mapping | list | tuple | set | np.ndarray):
        raise _wrong_type(value, where, field, "an id (text or an integer)")
    if not present(value) or isinstance(value, bool):
        return None
    if isinstance(value, int | np.integer):
        return f"{int(value):0{width}x}" if value else None
    if isinstance(value, bytes):
        return value.hex() if value.strip(b"\0") else None
    ident = str(value).strip()
    if _HEX.match(ident):
        ident = ident[2:] if ident[:2].lower() == "0x" else ident
        return ident.lower() if ident.strip("0") else None
    return ident


_DIGITS = re.compile(r"[0-9]+")
_ISO_START = re.compile(r"[0-9]")
_RANGE = (
    f"{EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d}, the range of the nanosecond times plans "
    "hold; check the field's unit (OTLP writes integer nanoseconds) or leave it empty"
)


def _out_of_range(value: Any, where: str, field: str) -> TraceFormatError:
    return TraceFormatError(
        f"{where}: field {field!r} = {shown(value)} is outside the timestamps the readers "
        f"accept ({_RANGE})",
        source=where,
        field=field,
    )


def _number_ns(number: int | float, value: Any, where: str, field: str) -> int | None:
    """Nanoseconds from a number: 0 (or less) means unset, as in OTLP."""
    # isinstance first: math.isfinite cannot take integers beyond a float's range
    if (isinstance(number, float) and not math.isfinite(number)) or number > LATEST.value:
        raise _out_of_range(value, where, field)
    return int(number) if number > 0 else None


def to_ns(value: Any, where: str, field: str) -> int | None:
    """Nanoseconds since the epoch from integer nanoseconds, ISO text or datetimes.

    Integers (and digit strings) are nanoseconds, as OTLP writes them; 0 (or less) means
    unset. Timestamps without an offset are read as UTC (Langfuse and Phoenix exports are
    UTC). Times outside :data:`EARLIEST`..:data:`LATEST` (1677-09-21 to 2262-04-11), an
    infinite number, or text that is not an ISO-8601 timestamp raise TraceFormatError.
    """
    if not present(value) or isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | np.integer):
        return _number_ns(int(value), value, where, field)
    if isinstance(value, float | np.floating):
        return _number_ns(float(value), value, where, field)
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        digits = value.strip()
        if len(digits.lstrip("0")) > len(str(LATEST.value)):
            raise _out_of_range(value, where, field)
        return _number_ns(int(digits), value, where, field)
    if isinstance(value, str | datetime | np.datetime64):
        return _timestamp_ns(value, where, field)
    raise TraceFormatError(
        f"{where}: field {field!r} = {shown(value)} is not a timestamp; expected integer "
        "nanoseconds or ISO-8601 text",
        source=where,
        field=field,
    )


def _timestamp_ns(value: str | datetime | np.datetime64, where: str, field: str) -> int | None:
    # pandas also reads "now", "today" and month names; ISO-8601 text starts with its year
    iso = not isinstance(value, str) or _ISO_START.match(value.strip()) is not None
    try:
        stamp = pd.Timestamp(value) if iso else None
    except pd.errors.OutOfBoundsDatetime:
        raise _out_of_range(value, where, field) from None
    except ValueError:
        stamp = None
    if stamp is None:
        raise TraceFormatError(
            f"{where}: field {field!r} = {shown(value)} is not an ISO-8601 timestamp",
            source=where,
            field=field,
        )
    if pd.isna(stamp):
        return None
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    if not EARLIEST <= stamp <= LATEST:
        raise _out_of_range(value, where, field)
    return int(stamp.as_unit("ns").value)


def status_of(value: Any) -> str:
    """``"ERROR"``, ``"OK"`` or ``"UNSET"`` from any status encoding.

    Accepts OTLP codes (``2``, ``"2"``), enum names (``"STATUS_CODE_ERROR"``,
    ``"StatusCode.ERROR"``) and plain words in any case (``"ERROR"``, ``"error"``).
    """
    if not present(value) or isinstance(value, bool):
        return "UNSET"
    if isinstance(value, float | np.floating) and not float(value).is_integer():
        return "UNSET"
    if isinstance(value, int | float | np.integer | np.floating):
        value = int(value)
    word = str(value).strip().lower()
    if word in _ERROR:
        return "ERROR"
    if word in _OK:
        return "OK"
    return "UNSET"
