"""Parsing helpers the readers share: sources, JSON documents, timestamps, ids, statuses.

Nothing here knows a trace format; each reader module knows exactly one.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metalearn.importers._errors import TraceFormatError, TraceImportError

__all__ = [
    "PathLike",
    "documents",
    "exception_message",
    "flatten",
    "is_path",
    "json_object",
    "present",
    "read_table",
    "records",
    "span_id",
    "status_of",
    "table_from",
    "text",
    "to_ns",
]

PathLike = str | os.PathLike[str]
_HEX = re.compile(r"^(?:0[xX])?[0-9a-fA-F]+$")
_ERROR = frozenset({"2", "error", "status_code_error", "statuscode.error"})
_OK = frozenset({"1", "ok", "status_code_ok", "statuscode.ok"})
_LINES = frozenset({".jsonl", ".ndjson"})


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


def _suffixes(path: Path) -> list[str]:
    suffixes = [s.lower() for s in path.suffixes]
    return suffixes[:-1] if suffixes[-1:] == [".gz"] else suffixes


def _read_text(path: Path) -> str:
    if path.suffix.lower() == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            return handle.read()
    return path.read_text(encoding="utf-8")


def _json_lines(path: Path, content: str) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"{path.name} line {number}", json.loads(line)
        except json.JSONDecodeError as err:
            raise TraceFormatError(
                f"{path.name} line {number}: not valid JSON ({err.msg}); expected one JSON "
                "document per line (JSON Lines) or a single JSON document",
                source=f"{path.name} line {number}",
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
        document = json.loads(content)
    except json.JSONDecodeError:
        yield from _json_lines(path, content)
        return
    yield path.name, document


def documents(source: Any) -> Iterator[tuple[str, Any]]:
    """``(where, document)`` pairs from a path, a parsed object, or a sequence of either."""
    if is_path(source):
        yield from file_documents(Path(source))
    elif isinstance(source, Mapping):
        yield "input", source
    elif isinstance(source, Sequence) and not isinstance(source, bytes | bytearray):
        for position, item in enumerate(source):
            if is_path(item):
                yield from file_documents(Path(item))
            else:
                yield f"input item {position}", item
    else:
        raise TraceFormatError(
            f"cannot read traces from a {type(source).__name__}; pass a path, a parsed "
            "JSON object, or a list of either"
        )


def read_table(path: Path) -> pd.DataFrame:
    """A Parquet, CSV, JSON or JSON Lines file as a DataFrame (``.gz`` allowed for text)."""
    suffixes = _suffixes(path)
    if ".parquet" in suffixes:
        return pd.read_parquet(path)
    if ".csv" in suffixes:
        return pd.read_csv(path, dtype="str", keep_default_na=False, na_values=[])
    rows: list[Any] = []
    for where, document in file_documents(path):
        if isinstance(document, list):
            rows.extend(document)
        elif isinstance(document, Mapping):
            rows.append(document)
        else:
            raise TraceFormatError(
                f"{where}: expected a JSON object or a list of objects, "
                f"not {type(document).__name__}",
                source=where,
            )
    return pd.DataFrame.from_records(rows)


def table_from(source: Any, accepts: str) -> pd.DataFrame:
    """A DataFrame, a table file (see :func:`read_table`) or a list of those, as one frame.

    ``accepts`` starts the error message for anything else, e.g. "read_mlflow() takes ...".
    """
    if isinstance(source, pd.DataFrame):
        return source
    if is_path(source):
        return read_table(Path(source))
    if isinstance(source, list | tuple) and all(
        is_path(p) or isinstance(p, pd.DataFrame) for p in source
    ):
        return pd.concat([table_from(item, accepts) for item in source], ignore_index=True)
    raise TraceImportError(f"{accepts}, not {type(source).__name__}")


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts, with a named index (e.g. ``context.span_id``) turned into a column."""
    if any(name is not None for name in frame.index.names):
        frame = frame.reset_index()
    return frame.to_dict("records")  # type: ignore[return-value]


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
        if isinstance(event, Mapping) and event.get("name") == "exception":
            attrs = attributes(event.get("attributes"))
            return text(attrs.get("exception.message")) or text(attrs.get("exception.type")) or ""
    return None


def json_object(value: Any) -> dict[str, Any]:
    """A mapping, or a JSON-encoded object (as CSV exports write them); else empty."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def span_id(value: Any, width: int = 16) -> str | None:
    """An id as text: integers as zero-padded hex, hex (``0x`` or not) in lower case.

    Other strings (UUIDs, base64) are kept as they are; an empty or all-zero id is ``None``.
    """
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


def _digits_ns(value: str) -> int | None:
    number = int(value)
    return number if number > 0 else None


def to_ns(value: Any, where: str, field: str) -> int | None:
    """Nanoseconds since the epoch from integer nanoseconds, ISO text or datetimes.

    Integers (and digit strings) are nanoseconds, as OTLP writes them; 0 means unset.
    Timestamps without an offset are read as UTC (Langfuse and Phoenix exports are UTC).
    """
    if not present(value) or isinstance(value, bool):
        return None
    if isinstance(value, int | np.integer):
        return int(value) if value > 0 else None
    if isinstance(value, float | np.floating):
        return int(value) if value > 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return _digits_ns(value.strip())
    if isinstance(value, str | datetime | np.datetime64):
        return _timestamp_ns(value, where, field)
    raise TraceFormatError(
        f"{where}: field {field!r} = {value!r} is not a timestamp; expected integer "
        "nanoseconds or ISO-8601 text",
        source=where,
        field=field,
    )


def _timestamp_ns(value: str | datetime | np.datetime64, where: str, field: str) -> int | None:
    try:
        stamp = pd.Timestamp(value)
    except ValueError:
        raise TraceFormatError(
            f"{where}: field {field!r} = {value!r} is not an ISO-8601 timestamp",
            source=where,
            field=field,
        ) from None
    if pd.isna(stamp):
        return None
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return int(stamp.value)


def status_of(value: Any) -> str:
    """``"ERROR"``, ``"OK"`` or ``"UNSET"`` from any status encoding.

    Accepts OTLP codes (``2``, ``"2"``), enum names (``"STATUS_CODE_ERROR"``,
    ``"StatusCode.ERROR"``) and plain words in any case (``"ERROR"``, ``"error"``).
    """
    if not present(value) or isinstance(value, bool):
        return "UNSET"
    if isinstance(value, int | float | np.integer | np.floating):
        value = int(value)
    word = str(value).strip().lower()
    if word in _ERROR:
        return "ERROR"
    if word in _OK:
        return "OK"
    return "UNSET"
