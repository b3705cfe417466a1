"""The interchange format as files: ``plans.csv`` and ``steps.csv``, out of and into a store.

Writing turns the store's batches into interchange frames (UTC timestamps as ISO-8601 text
with a ``Z``) and appends them with RFC 4180 line ends.

Reading streams. Each file is read in blocks of whole records; a vectorised scan of a block
finds its records, the line each starts on and its number of fields, and checks that the
block is UTF-8 and that its quotes follow RFC 4180 (a field holding a comma, quote or line
end is enclosed in double quotes, a quote inside it doubled). pyarrow's CSV parser then
turns the block into text columns (blank is missing, nothing else is) for
:func:`~metalearn._interchange.validate_frames`. Rows go to temporary Arrow files, one per
partition of the plan ids (a hash of ``plan_id``), so every row of a plan, in either file,
lands in the same partition: a partition is checked on its own and memory holds one
partition at a time, whatever the size of the files. The valid rows then wait in a second
set of files, by range of rows (:class:`RowRanges`), to be written in the order of the
file, so that the store inserts its seqs in order.

A file that cannot be read as records raises :class:`~metalearn.InvalidRecordError` naming
file and line: not UTF-8, a malformed quote, no header, a header without a required
column. A record with more or fewer fields than the header is a flaw of that row only,
which rejects its plan.
"""

from __future__ import annotations

import codecs
import functools
import itertools
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from metalearn._errors import InvalidRecordError
from metalearn._interchange import (
    PLAN_COLUMNS,
    STEP_COLUMNS,
    Problem,
    RowLabel,
    default_row_label,
    format_timestamps,
    validate_frames,
)
from metalearn._readers import PlanBatch

__all__ = [
    "LINE_COLUMN",
    "RowBatch",
    "RowRanges",
    "StagedFiles",
    "interchange_frames",
    "stage_csv",
    "write_csv",
]

_COLUMNS = {"plans": PLAN_COLUMNS, "steps": STEP_COLUMNS}
_QUOTE, _COMMA, _LF, _CR = b'"'[0], b","[0], b"\n"[0], b"\r"[0]
_BLOCK_BYTES = 2 << 20
_MAX_RECORD_BYTES = 64 << 20  # one record may not hold more: it would all be in memory
# Row bookkeeping carried through the partition files next to the text columns.
_ROW, _LINE, _FLAW, _FLAW_FIELD = "_row", "_line", "_flaw", "_flaw_field"
LINE_COLUMN = _LINE
"""The column of valid plans that gives their file line (see :class:`RowRanges`)."""


# -- writing ---------------------------------------------------------------------------


def interchange_frames(batch: PlanBatch) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A batch's plans and steps in the interchange columns, timestamps as text."""
    plan_frame, step_frame = batch.to_pandas()
    for name in ("started_at", "finished_at"):
        plan_frame[name] = format_timestamps(plan_frame[name])
    return plan_frame[list(PLAN_COLUMNS)], step_frame[list(STEP_COLUMNS)]


def write_csv(batches: Iterable[PlanBatch], directory: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``plans.csv`` and ``steps.csv`` into ``directory`` (created, files replaced):
    the headers, then each batch in order."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "plans.csv", out / "steps.csv"
    for path, columns in zip(paths, (PLAN_COLUMNS, STEP_COLUMNS), strict=True):
        path.unlink(missing_ok=True)
        _append(pd.DataFrame(columns=list(columns)), path, header=True)
    for batch in batches:
        for frame, path in zip(interchange_frames(batch), paths, strict=True):
            _append(frame, path, header=False)
    return paths


def _append(frame: pd.DataFrame, path: Path, *, header: bool) -> None:
    # RFC 4180 line ends: a CR inside a text field then gets quoted too
    frame.to_csv(path, mode="a", header=header, index=False, lineterminator="\r\n")


# -- batches of rows -------------------------------------------------------------------


@dataclass(frozen=True)
class RowBatch:
    """Rows of both tables to validate together: every row of each plan id among them.

    ``plan_rows`` / ``step_rows`` give each row's position in its whole table; ``flaws``
    are rows that were not records of the header's shape (their cells as far as they go
    are in the frames); ``label`` names a row by table and position.
    """

    plans: pd.DataFrame
    steps: pd.DataFrame
    plan_rows: np.ndarray
    step_rows: np.ndarray
    flaws: list[Problem]
    label: RowLabel
    plan_lines: np.ndarray | None = None  # the file line of each plans row

    @classmethod
    def of_frames(cls, plans: pd.DataFrame, steps: pd.DataFrame) -> RowBatch:
        """Whole in-memory tables as one batch, rows named by position."""
        rows = [np.arange(len(frame), dtype="int64") for frame in (plans, steps)]
        return cls(plans, steps, rows[0], rows[1], [], default_row_label)


# -- reading one file ------------------------------------------------------------------


def _outside(quotes: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Which positions lie outside quoted fields (an even number of quotes before them)."""
    outside: np.ndarray = (np.searchsorted(quotes, positions) & 1) == 0
    return outside


def _decoded(data: bytes | memoryview) -> str:
    return codecs.utf_8_decode(data, "strict", True)[0]


@dataclass
class _Part:
    """The scan of a block of whole records: where its records, fields and line ends are."""

    data: np.ndarray
    newlines: np.ndarray  # every LF, inside quotes too: physical lines
    quotes: np.ndarray
    commas: np.ndarray  # separators outside quotes
    starts: np.ndarray  # first byte of each record
    stops: np.ndarray  # end of its content (before CR LF or LF)
    ends: np.ndarray  # end of the record with its line end

    @classmethod
    def scan(cls, buffer: bytes, *, final: bool) -> _Part | None:
        """The records of ``buffer`` up to its last line end outside quotes (all of it when
        ``final``); None when it does not hold one whole record yet."""
        data = np.frombuffer(buffer, np.uint8)
        newlines = np.flatnonzero(data == _LF)
        quotes = np.flatnonzero(data == _QUOTE)
        breaks = newlines[_outside(quotes, newlines)] if quotes.size else newlines
        if not final and not breaks.size:
            return None
        cut = len(data) if final else int(breaks[-1]) + 1
        data = data[:cut]
        newlines, quotes = newlines[newlines < cut], quotes[quotes < cut]
        commas = np.flatnonzero(data == _COMMA)
        if quotes.size:
            commas = commas[_outside(quotes, commas)]
        ends = breaks + 1
        if final and cut and (not breaks.size or breaks[-1] != cut - 1):
            ends = np.append(ends, cut)  # a last record without a line end
        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
        stops = ends - (data[np.maximum(ends - 1, 0)] == _LF)
        crlf = (stops > starts) & (data[np.maximum(stops - 1, 0)] == _CR)
        stops = stops - crlf
        return cls(data, newlines, quotes, commas, starts, stops, ends)

    @property
    def size(self) -> int:
        return len(self.data)

    def record_of(self, position: int) -> int:
        return int(np.searchsorted(self.starts, position, side="right")) - 1

    def field_of(self, position: int) -> int:
        """0-based field of the byte at ``position`` within its record."""
        start = self.starts[self.record_of(position)]
        return int(np.searchsorted(self.commas, position) - np.searchsorted(self.commas, start))

    def field_start(self, position: int) -> int:
        """First byte of the field that holds ``position``."""
        start = int(self.starts[self.record_of(position)])
        before = self.commas[: np.searchsorted(self.commas, position)]
        return max(start, int(before[-1]) + 1) if before.size else start

    def cells(self, record: int) -> list[str]:
        """The fields of one record as text, unquoted (the part is valid UTF-8 by then)."""
        start, stop = int(self.starts[record]), int(self.stops[record])
        low, high = np.searchsorted(self.commas, [start, stop])
        bounds = [start, *(self.commas[low:high] + 1).tolist(), stop + 1]
        raw = self.data[start:stop].tobytes()
        fields = [raw[a - start : b - start - 1] for a, b in itertools.pairwise(bounds)]
        return [_decoded(f[1:-1].replace(b'""', b'"') if f[:1] == b'"' else f) for f in fields]

    def field_counts(self) -> np.ndarray:
        commas = np.searchsorted(self.commas, self.stops) - np.searchsorted(
            self.commas, self.starts
        )
        return commas + 1

    def quote_fault(self) -> tuple[int, str] | None:
        """The first quote out of place, and what is wrong with it."""
        q, data = self.quotes, self.data
        if not q.size:
            return None
        opening = np.arange(q.size) % 2 == 0
        before = np.where(q > 0, data[np.maximum(q - 1, 0)], _LF)
        starts_field = np.isin(before, [_COMMA, _LF, _QUOTE])
        after = np.where(q + 1 < self.size, data[np.minimum(q + 1, self.size - 1)], _LF)
        after2 = np.where(q + 2 < self.size, data[np.minimum(q + 2, self.size - 1)], _LF)
        ends_field = np.isin(after, [_COMMA, _LF, _QUOTE]) | ((after == _CR) & (after2 == _LF))
        stray = opening & ~starts_field
        trailing = ~opening & ~ends_field
        faults = np.flatnonzero(stray | trailing)
        if faults.size:
            k = int(faults[0])
            return int(q[k]), "stray" if stray[k] else "trailing"
        if q.size % 2:
            return int(q[-1]), "unclosed"
        return None

    def bare_cr(self) -> int | None:
        """The first carriage return outside quotes that does not end a line."""
        crs = np.flatnonzero(self.data == _CR)
        if self.quotes.size:
            crs = crs[_outside(self.quotes, crs)]
        nxt = np.where(crs + 1 < self.size, self.data[np.minimum(crs + 1, self.size - 1)], _LF)
        bad = crs[nxt != _LF]
        return int(bad[0]) if bad.size else None


@dataclass(frozen=True)
class _Spot:
    """Where a byte of a file is: its line, its row of the table and its column (if known)."""

    line: int
    row: int | None
    field: str | None

    def in_field(self) -> str:
        return f" in field {self.field!r}" if self.field else ""

    def named(self) -> str:
        return f" {self.field!r}" if self.field else ""


class _CsvFile:
    """One CSV file read as Arrow tables of whole records: the header's known columns as
    text, each row's position in the table, its line and its flaw (if any)."""

    def __init__(self, path: Path, table: str, stream: BinaryIO) -> None:
        self.path, self.table, self.stream = path, table, stream
        self.names: list[str] = []
        self.known: list[int] = []  # header positions of the interchange columns
        self.offset = 0  # of the next unread part, in the file
        self.line = 1
        self.rows = 0
        self.head: int | None = None  # the header's record in the part being read

    @property
    def columns(self) -> list[str]:
        return [self.names[i] for i in self.known]

    def schema(self) -> pa.Schema:
        return pa.schema(
            [pa.field(name, pa.string()) for name in self.columns]
            + [pa.field(_ROW, pa.int64()), pa.field(_LINE, pa.int64())]
            + [pa.field(_FLAW, pa.string()), pa.field(_FLAW_FIELD, pa.string())]
        )

    def tables(self) -> Iterator[pa.Table]:
        """The file's records, a block at a time (the header is read on the way)."""
        carry = b""
        while True:
            chunk = self.stream.read(_BLOCK_BYTES)
            buffer = carry + chunk if carry else chunk
            if self.offset == 0 and not carry:
                buffer = self._without_bom(buffer)
            part = _Part.scan(buffer, final=not chunk)
            if part is None:
                if len(buffer) > _MAX_RECORD_BYTES:
                    self._too_long(buffer)
                carry = buffer
                continue
            table = self._read(part, buffer)
            self.head = None
            self.offset += part.size
            self.line += part.newlines.size
            carry = buffer[part.size :]
            if table is not None and table.num_rows:
                yield table
            if not chunk:
                break
        if not self.names:
            self._check_header([], where=f"{self.path.name} is empty (no header line)")

    def _without_bom(self, buffer: bytes) -> bytes:
        if buffer.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise self._error(
                f"{self.path.name} is UTF-16 (it starts with a UTF-16 byte-order mark); re-save "
                "the file as UTF-8",
                _Spot(1, None, None),
            )
        if buffer.startswith(codecs.BOM_UTF8):
            self.offset = len(codecs.BOM_UTF8)  # accepted: spreadsheets write one
            return buffer[len(codecs.BOM_UTF8) :]
        return buffer

    def _read(self, part: _Part, buffer: bytes) -> pa.Table | None:
        blank = part.stops == part.starts
        self.head = None
        if not self.names:
            heads = np.flatnonzero(~blank)
            if heads.size:
                self.head = int(heads[0])
                self._header(part, self.head)
        self._check(part, buffer)
        if not self.names:
            return None
        first = 0 if self.head is None else self.head + 1
        records = first + np.flatnonzero(~blank[first:])
        rows = self.rows + np.arange(records.size, dtype=np.int64)
        lines = self.line + np.searchsorted(part.newlines, part.starts[records]).astype(np.int64)
        self.rows += records.size
        good = part.field_counts()[records] == len(self.names)
        tables = [self._parsed(part, buffer, records[good], rows[good], lines[good])]
        if not good.all():
            bad = ~good
            tables.append(self._flawed(part, records[bad], rows[bad], lines[bad]))
        return pa.concat_tables(tables)

    # -- what fails the whole file -------------------------------------------------------

    def _spot(self, part: _Part, position: int) -> _Spot:
        line = self.line + int(np.searchsorted(part.newlines, position))
        record = part.record_of(position)
        before = int((part.stops[:record] != part.starts[:record]).sum())
        row: int | None = self.rows + before
        if self.head is not None:  # the header is in this part
            row = None if record <= self.head else before - 1
        field = None
        if row is not None and self.names:
            index = part.field_of(position)
            field = self.names[index] if index < len(self.names) else None
        return _Spot(line, row, field)

    def _error(self, message: str, spot: _Spot) -> InvalidRecordError:
        return InvalidRecordError(message, table=self.table, row=spot.row, field=spot.field)

    def _not_utf8(self, part: _Part, position: int) -> InvalidRecordError:
        spot = self._spot(part, position)
        return self._error(
            f"{self.path.name} line {spot.line}: not UTF-8 (byte 0x{part.data[position]:02x}"
            f"{spot.in_field()}, byte {self.offset + position} of the file); re-save the file "
            "as UTF-8 (it may be Latin-1 or Windows-1252)",
            spot,
        )

    def _check(self, part: _Part, buffer: bytes) -> None:
        name = self.path.name
        if part.size and part.data.max() >= 0x80:
            try:
                _decoded(memoryview(buffer)[: part.size])
            except UnicodeDecodeError as err:
                raise self._not_utf8(part, err.start) from None
        fault = part.quote_fault()
        if fault is not None:
            self._quote_fault(part, *fault)
        cr = part.bare_cr()
        if cr is not None:
            spot = self._spot(part, cr)
            raise self._error(
                f"{name} line {spot.line}: a carriage return (\\r) outside quotes"
                f"{spot.in_field()}; end lines with \\n or \\r\\n, and enclose a field that "
                "holds a line break in double quotes",
                spot,
            )

    def _quote_fault(self, part: _Part, position: int, kind: str) -> None:
        spot = self._spot(part, position)
        where = f"{self.path.name} line {spot.line}"
        if kind == "stray":
            message = (
                f"{where}: a double quote inside the unquoted field{spot.named()}; enclose a "
                'field that holds quotes in double quotes and double each quote inside it ("")'
            )
        elif kind == "trailing":
            opened = self._spot(part, part.field_start(position)).line
            message = (
                f"{where}: the quoted field{spot.named()} (opened on line {opened}) goes on "
                'after its closing quote; double each quote inside a quoted field ("")'
            )
        else:
            message = (
                f"{where}: the quoted field{spot.named()} that opens here never closes; add its "
                "closing double quote"
            )
        raise self._error(message, spot)

    def _too_long(self, buffer: bytes) -> None:
        """A record runs on for more than the limit: name its line, and the quote that
        opened a field over its line ends, if one did."""
        part = _Part.scan(buffer, final=True)
        assert part is not None  # a final scan always has a part
        opening = int(part.quotes[0]) if part.quotes.size else 0
        spot = self._spot(part, opening)
        where, limit = f"{self.path.name} line {spot.line}", f"{_MAX_RECORD_BYTES >> 20} MiB"
        if part.quotes.size:
            raise self._error(
                f"{where}: the quoted field{spot.named()} that opens here runs on for {limit} "
                "without the end of its record; check its closing double quote",
                spot,
            )
        raise self._error(f"{where}: a record longer than {limit}", spot)

    # -- the header ----------------------------------------------------------------------

    def _header(self, part: _Part, record: int) -> None:
        start, stop = int(part.starts[record]), int(part.stops[record])
        try:
            _decoded(part.data[start:stop].tobytes())
        except UnicodeDecodeError as err:
            raise self._not_utf8(part, start + err.start) from None
        fault = part.quote_fault()
        if fault is not None and fault[0] < stop:
            self._quote_fault(part, *fault)
        names = part.cells(record)
        spot = self._spot(part, int(part.starts[record]))
        where = f"{self.path.name} line {spot.line}"
        if any("\x00" in name for name in names):
            raise self._error(
                f"{where}: the header holds NUL bytes, as UTF-16 text does; re-save the file "
                "as UTF-8",
                spot,
            )
        for name in _COLUMNS[self.table]:
            if names.count(name) > 1:
                raise InvalidRecordError(
                    f"{where}: the header names column {name!r} {names.count(name)} times; "
                    "name each column once",
                    table=self.table,
                    field=name,
                )
        self._check_header(names, where=where)
        self.names = names
        self.known = [i for i, name in enumerate(names) if name in _COLUMNS[self.table]]

    def _check_header(self, names: list[str], *, where: str) -> None:
        fault = _header_fault(self.table, tuple(names))
        if fault is not None:
            raise InvalidRecordError(f"{where}: {fault}", table=self.table, field=fault.field)

    # -- records -------------------------------------------------------------------------

    def _parsed(
        self, part: _Part, buffer: bytes, records: np.ndarray, rows: np.ndarray, lines: np.ndarray
    ) -> pa.Table:
        """Records of the header's shape, parsed by pyarrow (the scan vouched for their quotes)."""
        if not records.size:
            return self.schema().empty_table()
        view = memoryview(buffer)
        # runs of consecutive records: flawed ones in between are left out
        runs = np.split(records, np.flatnonzero(np.diff(records) != 1) + 1)
        spans = [view[part.starts[run[0]] : part.ends[run[-1]]] for run in runs]
        data = spans[0] if len(spans) == 1 else b"".join(spans)
        if bytes(data[:3]) == codecs.BOM_UTF8:
            data = b"\n" + data  # pyarrow drops a BOM that starts its input: not ours to drop
        names = [f"f{i}" for i in range(len(self.names))]
        table = pa_csv.read_csv(
            pa.py_buffer(data),
            read_options=pa_csv.ReadOptions(column_names=names, block_size=1 << 20),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(
                include_columns=[names[i] for i in self.known],
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        if table.num_rows != records.size:
            raise RuntimeError(
                f"{self.path.name}: pyarrow read {table.num_rows} records where the scan found "
                f"{records.size} (lines {lines[0]}-{lines[-1]}); please report this"
            )
        nothing = pa.nulls(records.size, pa.string())
        return _with_meta(table.rename_columns(self.columns), rows, lines, nothing, nothing)

    def _flawed(
        self, part: _Part, records: np.ndarray, rows: np.ndarray, lines: np.ndarray
    ) -> pa.Table:
        """Records with more or fewer fields than the header: their cells as far as they go."""
        width = len(self.names)
        cells: list[list[str | None]] = []
        flaws, fields = [], []
        for record in records.tolist():
            values = part.cells(record)
            cells.append([values[i] if i < len(values) else None for i in self.known])
            fewer = len(values) < width
            flaws.append(
                f"{len(values)} fields where the header has {width}; "
                + ("a field is missing" if fewer else "quote a field that holds a comma")
            )
            fields.append(self.names[len(values)] if fewer else "")
        table = pa.table(
            {
                name: pa.array([c[i] for c in cells], pa.string())
                for i, name in enumerate(self.columns)
            }
        )
        return _with_meta(
            table, rows, lines, pa.array(flaws, pa.string()), pa.array(fields, pa.string())
        )


@functools.cache
def _header_fault(table: str, names: tuple[str, ...]) -> InvalidRecordError | None:
    """What the validation's own rule for columns says of a header (the same few headers
    come again and again, and an empty validation costs tens of milliseconds)."""
    frames = {t: pd.DataFrame(columns=list(columns)) for t, columns in _COLUMNS.items()}
    frames[table] = pd.DataFrame(columns=list(names))
    try:
        validate_frames(frames["plans"], frames["steps"])
    except InvalidRecordError as err:
        return err
    return None


def _with_meta(
    table: pa.Table, rows: np.ndarray, lines: np.ndarray, flaws: pa.Array, fields: pa.Array
) -> pa.Table:
    for name, values in ((_ROW, pa.array(rows)), (_LINE, pa.array(lines)), (_FLAW, flaws),
                         (_FLAW_FIELD, fields)):  # fmt: skip
        table = table.append_column(name, values)
    return table


# -- staging: both files, partitioned by plan id ----------------------------------------

_PENDING_BYTES = 8 << 20  # rows held back before they are appended to partition files
_STEP_BYTES_PER_PLAN = 400  # the steps of a typical plan in steps.csv: 10 of 40 bytes


def _partition_count(
    csv_file: _CsvFile, first: pa.Table | None, steps_bytes: int, batch_size: int
) -> int:
    """Partitions of about ``batch_size`` plans (judged by the first block), or of the
    steps of that many typical plans, whichever makes more: plans with many steps each
    would otherwise make big partitions."""
    by_steps = math.ceil(steps_bytes / (batch_size * _STEP_BYTES_PER_PLAN))
    if first is None or csv_file.offset == 0:
        return max(1, by_steps)
    size = os.fstat(csv_file.stream.fileno()).st_size
    plans: int = first.num_rows * size // csv_file.offset
    return max(1, math.ceil(plans / batch_size), by_steps)


def _buckets(table: pa.Table, count: int) -> np.ndarray:
    """Each row's partition: a hash of its plan_id (rows without one are spread by row)."""
    rows = table.column(_ROW).to_numpy()
    if count == 1:
        return np.zeros(len(rows), dtype=np.int64)
    codes, uniques = pd.factorize(table.column("plan_id").to_pandas())
    ids = np.asarray(uniques, dtype=object)
    by_id = (pd.util.hash_array(ids) % np.uint64(count)).astype(np.int64)
    by_id[ids == ""] = -1
    buckets = np.append(by_id, -1)[codes]  # a missing id (code -1) takes the last: -1
    return np.where(buckets >= 0, buckets, rows % count)


def _release_memory() -> None:
    """Hand the memory pyarrow's allocator keeps for reuse back to the system between
    phases, so that one phase's blocks do not sit under the next phase's peak."""
    pa.default_memory_pool().release_unused()


class _Spill:
    """Tables kept in numbered Arrow IPC files: appended a stream per flush, read back whole."""

    def __init__(self, directory: Path, name: str, count: int) -> None:
        self.paths = [directory / f"{name}-{k}.arrow" for k in range(count)]
        self.pending: list[list[pa.Table]] = [[] for _ in self.paths]
        self.pending_bytes = 0

    def add(self, table: pa.Table, buckets: np.ndarray) -> None:
        """Each row of ``table`` to the file its bucket names."""
        if buckets.size > 1 and (np.diff(buckets) < 0).any():
            order = np.argsort(buckets, kind="stable")
            buckets, table = buckets[order], table.take(order)
        bounds = np.searchsorted(buckets, np.arange(len(self.paths) + 1))
        ordered = table  # rows grouped by bucket, in their order within each
        for k, (low, high) in enumerate(itertools.pairwise(bounds)):
            if high > low:
                self.pending[k].append(ordered.slice(low, high - low))
        self.pending_bytes += ordered.nbytes
        if self.pending_bytes > _PENDING_BYTES:
            self.flush()

    def flush(self) -> None:
        options = pa.ipc.IpcWriteOptions(compression="lz4")
        for path, parts in zip(self.paths, self.pending, strict=True):
            if parts:
                table = pa.concat_tables(parts, promote_options="permissive")
                with (
                    open(path, "ab") as sink,
                    pa.ipc.new_stream(sink, table.schema, options=options) as out,
                ):
                    out.write_table(table)
                parts.clear()
        self.pending_bytes = 0

    def read(self, k: int) -> pa.Table | None:
        """File ``k`` (then removed), or None when nothing went to it."""
        if not self.paths[k].exists():
            return None
        tables = []
        with pa.OSFile(str(self.paths[k])) as source:
            while source.tell() < source.size():
                tables.append(pa.ipc.open_stream(source).read_all())
        self.paths[k].unlink()
        return pa.concat_tables(tables, promote_options="permissive")


class RowRanges:
    """Valid plans (indexed by row) and their steps, held until they are written in the
    order of their rows, ``size`` rows at a time, so that seqs are inserted in order: on
    disk in ``directory``, or in memory without one. Plans that carry their file line
    (``_line``) are labelled with it, in ``file``."""

    def __init__(
        self, rows: int, size: int, directory: Path | None = None, file: str | None = None
    ) -> None:
        self.file = file
        self.size = max(size, 1)
        count = max(1, math.ceil(rows / self.size))
        self.spills = None if directory is None else (
            _Spill(directory, "valid-plans", count), _Spill(directory, "valid-steps", count)
        )  # fmt: skip
        self.held: list[tuple[pd.DataFrame, pd.DataFrame]] = []
        self.no_steps: pd.DataFrame | None = None  # the steps' columns, without a row

    def add(self, plans: pd.DataFrame, steps: pd.DataFrame) -> None:
        if self.spills is None:
            self.held.append((plans, steps))
            return
        if self.no_steps is None:
            self.no_steps = steps.iloc[:0]
        plan_of = pd.Index(plans["plan_id"]).get_indexer(steps["plan_id"])
        steps = steps.assign(**{_ROW: plans.index.to_numpy()[plan_of]})
        plans = plans.rename_axis(_ROW).reset_index()
        for spill, frame in zip(self.spills, (plans, steps), strict=True):
            table = pa.Table.from_pandas(frame, preserve_index=False)
            spill.add(table, table.column(_ROW).to_numpy() // self.size)

    def __iter__(self) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
        """Each range's plans (by row) and their steps (by plan, then step index)."""
        if self.spills is None:
            yield from self.held
            return
        for spill in self.spills:
            spill.flush()
        _release_memory()
        for k in range(len(self.spills[0].paths)):
            plans, steps = (spill.read(k) for spill in self.spills)
            if plans is None:
                continue  # a range of rejected plans: steps go only with valid plans
            plan_frame = plans.to_pandas().set_index(_ROW).sort_index().rename_axis(None)
            yield plan_frame, self._steps(steps)

    def label(self, plans: pd.DataFrame) -> RowLabel:
        """Names a row of ``plans`` (a range) by its file line, or by its position."""
        if self.file is None or _LINE not in plans:
            return default_row_label
        lines = plans[_LINE]
        return lambda table, row: f"{self.file} line {lines.loc[row]}"

    def _steps(self, steps: pa.Table | None) -> pd.DataFrame:
        if steps is None:
            assert self.no_steps is not None  # a plan was added, so steps were too
            return self.no_steps
        frame: pd.DataFrame = steps.to_pandas().sort_values([_ROW, "step_index"], kind="stable")
        return frame.drop(columns=_ROW).reset_index(drop=True)


@dataclass
class StagedFiles:
    """Both files read and checked, their rows partitioned by plan id on disk."""

    directory: Path
    names: dict[str, str]  # file name of each table
    spills: dict[str, _Spill]
    schemas: dict[str, pa.Schema]
    plan_rows: int

    def batches(self) -> Iterator[RowBatch]:
        """One batch per partition: all the rows of its plan ids, in both tables."""
        for k in range(len(self.spills["plans"].paths)):
            plans, steps = (self._read(t, k) for t in ("plans", "steps"))
            if len(plans) or len(steps):
                yield self._batch(plans, steps)

    def row_ranges(self, batch_size: int) -> RowRanges:
        """Where the valid rows wait to be written in order (next to the partitions), in
        ranges of half a batch: rows being written, with their driver tuples, take more
        memory per plan than text rows being validated."""
        size = max(1, batch_size // 2)
        return RowRanges(self.plan_rows, size, self.directory, self.names["plans"])

    def _read(self, table: str, k: int) -> pd.DataFrame:
        rows = self.spills[table].read(k)
        frame: pd.DataFrame = (rows or self.schemas[table].empty_table()).to_pandas()
        return frame.sort_values(_ROW, kind="stable").reset_index(drop=True)

    def _batch(self, plans: pd.DataFrame, steps: pd.DataFrame) -> RowBatch:
        frames = {"plans": plans, "steps": steps}
        keys = {t: (f[_ROW].to_numpy(), f[_LINE].to_numpy()) for t, f in frames.items()}

        def label(table: str, row: int) -> str:
            rows, lines = keys[table]
            return f"{self.names[table]} line {lines[np.searchsorted(rows, row)]}"

        flaws = _flaws("plans", plans) + _flaws("steps", steps)
        meta = [_ROW, _LINE, _FLAW, _FLAW_FIELD]
        return RowBatch(
            plans.drop(columns=meta), steps.drop(columns=meta), keys["plans"][0],
            keys["steps"][0], flaws, label, keys["plans"][1],
        )  # fmt: skip


def _flaws(table: str, frame: pd.DataFrame) -> list[Problem]:
    bad = frame[frame[_FLAW].notna()]
    columns = (bad[_ROW], bad["plan_id"].fillna(""), bad[_FLAW_FIELD], bad[_FLAW])
    return [
        Problem(table, int(row), str(plan_id), str(field), str(reason))
        for row, plan_id, field, reason in zip(*columns, strict=True)
    ]


def _stage(
    csv_file: _CsvFile, directory: Path, count: Callable[[_CsvFile, pa.Table | None], int]
) -> _Spill:
    """The file's rows in partition files by plan id; ``count`` says how many partitions,
    from the first block."""
    tables = csv_file.tables()
    first = next(tables, None)  # reads the header too, so the columns are known
    partitions = _Spill(directory, csv_file.table, count(csv_file, first))
    for table in itertools.chain([] if first is None else [first], tables):
        partitions.add(table, _buckets(table, len(partitions.paths)))
    partitions.flush()
    return partitions


@contextmanager
def stage_csv(
    plans_path: str | os.PathLike[str], steps_path: str | os.PathLike[str], *, batch_size: int
) -> Iterator[StagedFiles]:
    """Read and check both files into partitions of about ``batch_size`` plans each, in a
    temporary directory removed afterwards."""
    paths = {"plans": Path(plans_path), "steps": Path(steps_path)}
    with (
        open(paths["plans"], "rb") as plans_in,
        open(paths["steps"], "rb") as steps_in,
        tempfile.TemporaryDirectory(prefix="metalearn-import-") as tmp,
    ):
        steps_bytes = os.fstat(steps_in.fileno()).st_size
        files = {"plans": _CsvFile(paths["plans"], "plans", plans_in)}
        plans = _stage(
            files["plans"], Path(tmp), lambda f, t: _partition_count(f, t, steps_bytes, batch_size)
        )
        files["steps"] = _CsvFile(paths["steps"], "steps", steps_in)
        steps = _stage(files["steps"], Path(tmp), lambda f, t: len(plans.paths))
        _release_memory()
        yield StagedFiles(
            Path(tmp),
            {table: path.name for table, path in paths.items()},
            {"plans": plans, "steps": steps},
            {table: f.schema() for table, f in files.items()},
            files["plans"].rows,
        )
