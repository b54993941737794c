"""Stream a CSV file as validated batches of rows, already encoded for PostgreSQL's COPY.

Why batches of COPY text rather than lists of values: the loader of a table is one process
fed by every file of that table, so any per-row work it does caps the whole load. Each
extractor therefore does the per-row work (parse, check, escape) in parallel and hands over
one ``bytes`` value per block of the file, which crosses Redis as a single msgpack value and
goes to COPY unchanged. The file is read in blocks of whole lines; a block without quoting
is checked and converted whole (see ``copytext``), and only a block that needs the csv
module, or holds a bad row, is walked row by row to name the bad line and column.
"""

from __future__ import annotations

import csv
import io
import itertools
import operator
import os
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from examples.csvload.columns import DEFAULT_NULL_MARKERS
from examples.csvload.copytext import RowCodec, fill_nulls, plain_text
from examples.csvload.errors import BadRowError, SchemaError
from examples.csvload.schema import Column, column_names, open_csv, widen_columns

#: CSV characters per batch (one emitted value), in whole lines: 256 KiB is ~9,500 ratings
#: rows. It matches the worker's emit buffer (256 KiB: one value per EMIT call): measured on
#: 3 x 1M ratings rows through the DAG, 256 KiB used ~5% less CPU end to end than 128 KiB,
#: while 512 KiB and 1 MiB were no faster and make each channel read bigger.
DEFAULT_BATCH_BYTES = 256 * 1024


@dataclass(frozen=True)
class Batch:
    """Consecutive good rows of one file as COPY text (tab separated, one row per line).

    ``lines`` holds each row's file line when they are not simply ``first_line + index``
    (rows spanning several lines, or bad rows skipped), so that errors found later by
    PostgreSQL can still be traced to a line of the file. ``types`` is set once the file
    has widened a planned column type (a first ``NA``, decimal or wide id past the sample):
    the column types this batch and every later one of the file need, for the loader to
    widen the table's columns before it COPYs them.
    """

    source: str
    first_line: int
    rows: int
    data: bytes
    lines: tuple[int, ...] | None = None
    types: tuple[str, ...] | None = None

    def line_of(self, index: int) -> int:
        """File line of the row at ``index`` (0-based) in this batch."""
        return self.lines[index] if self.lines is not None else self.first_line + index

    def to_message(self) -> dict[str, Any]:
        """The batch as msgpack data, for ``task.emit``."""
        message = {
            "source": self.source,
            "first_line": self.first_line,
            "rows": self.rows,
            "data": self.data,
            "lines": list(self.lines) if self.lines else None,
        }
        if self.types is not None:
            message["types"] = list(self.types)
        return message

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Batch:
        """The inverse of :meth:`to_message`."""
        lines, types = message.get("lines"), message.get("types")
        return cls(
            message["source"],
            message["first_line"],
            message["rows"],
            message["data"],
            tuple(lines) if lines else None,
            tuple(types) if types else None,
        )


@dataclass(frozen=True)
class BadRow:
    """A row that cannot load: where, why, and its fields as read."""

    line: int
    column: str | None
    reason: str
    fields: list[str]


OnBadRow = Callable[[BadRow], None]


class BatchEncoder:
    """Turns blocks of one file's lines into Batches, reporting or raising on bad rows.

    Types are fitted as the file is read: a block whose values do not fit the planned types
    (which come from the first rows) widens the columns it breaks, unless they are ``fixed``
    (declared in schema.json), and every later batch carries the widened types. Only a
    value that fits no type of its column (or a row of the wrong width) is a bad row.
    """

    def __init__(
        self,
        path: Path,
        columns: Sequence[Column],
        on_bad_row: OnBadRow | None = None,
        markers: Sequence[str] = DEFAULT_NULL_MARKERS,
        markers_in_text: bool = False,
        fixed: Collection[str] = (),
    ) -> None:
        self.source = str(path)
        self.planned = tuple(columns)
        self.markers, self.markers_in_text = tuple(markers), markers_in_text
        self.fixed = frozenset(fixed)
        self.codec = RowCodec(columns, markers, markers_in_text)
        self.on_bad_row = on_bad_row
        self.types: tuple[str, ...] | None = None  # set once a column has widened

    def widen_to(self, rows: list[list[str]]) -> bool:
        """Widen the columns that ``rows`` (a block that did not fit) break; whether any did."""
        width = self.codec.width
        good = [row for row in rows if len(row) == width]
        if not good:
            return False
        columns = list(self.codec.columns)
        widened = widen_columns(columns, good, self.markers)
        widened = [old if old.name in self.fixed else new for old, new in zip(columns, widened)]
        if widened == columns:
            return False
        self.codec = RowCodec(widened, self.markers, self.markers_in_text, nulled_as=self.planned)
        self.types = tuple(c.type.value for c in widened)
        return True

    def encode_block(self, block: str, more: Iterator[str], first_line: int) -> tuple[Batch, int]:
        """A Batch from ``block`` (whole lines from ``first_line``) and the lines it used.

        CSV with no quote, backslash, tab, lone CR or NUL has no quoting, so turning its
        commas into tabs makes it COPY text: no csv parsing at all. Otherwise the csv
        module parses it, reading on from ``more`` if its last row continues there.
        """
        text = plain_text(block, self.codec.width)
        if text is not None:
            data = self.codec.encode_text(text.replace(",", "\t"))
            if data is not None:
                rows = text.count("\n")
                return Batch(self.source, first_line, rows, data, types=self.types), rows
        rows, starts, used = parse_rows(self.source, block, more, first_line)
        return self.encode(rows, starts), used

    def encode(self, rows: list[list[str]], starts: list[int]) -> Batch:
        """A Batch of the good rows among parsed ``rows``, which start on lines ``starts``."""
        if not rows:
            return Batch(self.source, 0, 0, b"")
        data = self.codec.encode_rows(rows)
        if data is None and self.widen_to(rows):
            data = self.codec.encode_rows(rows)
        if data is None:
            return self.encode_each(rows, starts)
        simple = starts[-1] - starts[0] == len(starts) - 1
        return Batch(
            self.source, starts[0], len(rows), data, None if simple else tuple(starts), self.types
        )

    def encode_each(self, rows: list[list[str]], lines: list[int]) -> Batch:
        """The slow path: one row at a time, skipping blank lines and bad rows."""
        out: list[str] = []
        kept: list[int] = []
        for row, line in zip(rows, lines):
            if not row:
                continue
            encoded = self.codec.encode_row(row)
            if isinstance(encoded, tuple):
                self.report(BadRow(line, encoded[0], encoded[1], row))
                continue
            out.append(encoded)
            kept.append(line)
        text = fill_nulls("\n".join(out) + "\n", self.codec.width) if out else ""
        simple = not kept or kept == list(range(kept[0], kept[0] + len(kept)))
        first = kept[0] if kept else lines[0]
        return Batch(
            self.source,
            first,
            len(out),
            text.encode("utf-8"),
            None if simple else tuple(kept),
            self.types,
        )

    def report(self, bad: BadRow) -> None:
        if self.on_bad_row is None:
            raise BadRowError(self.source, bad.line, bad.column, bad.reason)
        self.on_bad_row(bad)


def parse_rows(
    source: str, block: str, more: Iterator[str], first_line: int
) -> tuple[list[list[str]], list[int], int]:
    """Rows of ``block`` (plus continuation lines from ``more``), the line each starts on,
    and the number of lines consumed.

    The csv module's strict mode parses the block in one call; it fails when the block ends
    inside a quoted field (or quoting is odd), and then a row by row parse reads on exactly
    as far as the last row goes.
    """
    # Split lines as the file object does (LF, CR, CRLF only), not as str.splitlines.
    lines = list(io.StringIO(block, newline=""))
    try:
        rows = list(csv.reader(lines, strict=True))
    except csv.Error:
        return parse_rows_exactly(source, lines, more, first_line)
    if len(rows) == len(lines):
        return rows, list(range(first_line, first_line + len(rows))), len(lines)
    return rows, row_starts(rows, first_line), len(lines)


def row_starts(rows: list[list[str]], first_line: int) -> list[int]:
    """The line each row starts on, counting the line breaks inside its quoted fields."""
    # A row spans 1 + (LF + CR - CRLF) lines; built from C-level maps, no Python per row.
    texts = list(map("".join, rows))
    lf, cr, crlf = (map(str.count, texts, itertools.repeat(s)) for s in ("\n", "\r", "\r\n"))
    breaks = map(operator.sub, map(operator.add, lf, cr), crlf)
    spans = list(map(operator.add, breaks, itertools.repeat(1)))
    return list(itertools.accumulate(spans[:-1], initial=first_line))


def parse_rows_exactly(
    source: str, lines: list[str], more: Iterator[str], first_line: int
) -> tuple[list[list[str]], list[int], int]:
    """:func:`parse_rows` one row at a time, as the csv module's lenient mode reads it."""
    reader = csv.reader(itertools.chain(lines, more))
    rows: list[list[str]] = []
    starts: list[int] = []
    try:
        while reader.line_num < len(lines):
            start = first_line + reader.line_num
            rows.append(next(reader))
            starts.append(start)
    except StopIteration:
        pass
    except csv.Error as exc:
        line = first_line + max(reader.line_num - 1, 0)
        raise BadRowError(source, line, None, f"not valid CSV: {exc}") from exc
    return rows, starts, reader.line_num


def check_header(path: Path, header: list[str] | None, columns: Sequence[Column]) -> None:
    """SchemaError unless the file's header gives exactly the planned column names."""
    expected = [c.name for c in columns]
    found = column_names(header) if header else []
    if found != expected:
        raise SchemaError(
            f"{path}: header gives columns {found}, expected {expected} "
            "(did the file change after the DAG was built?)"
        )


def read_header(path: Path, handle: IO[str], columns: Sequence[Column]) -> int:
    """Read and check the header; return the line number of the first data line."""
    reader = csv.reader(iter(handle.readline, ""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise SchemaError(f"{path}: header is not valid CSV: {exc}") from exc
    check_header(path, header, columns)
    return reader.line_num + 1


def read_blocks(handle: IO[str], size: int) -> Iterator[str]:
    """About ``size`` characters of whole lines at a time (a line may make it longer)."""
    while block := handle.read(size):
        if not block.endswith("\n"):
            block += handle.readline()
        yield block


def read_batches(
    path: Path,
    columns: Sequence[Column],
    *,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    on_bad_row: OnBadRow | None = None,
    markers: Sequence[str] = DEFAULT_NULL_MARKERS,
    markers_in_text: bool = False,
    fixed: Collection[str] = (),
) -> Iterator[Batch]:
    """Stream ``path`` as Batches of the good rows of about ``batch_bytes`` of CSV each.

    A bad row raises BadRowError naming file, line and column, unless ``on_bad_row`` is
    given: it then receives the row and reading goes on. ``markers`` (missing values) load
    as NULL in the columns that are not text, and in text ones too if ``markers_in_text``.
    A file that is not valid CSV (say, a field over the csv module's size limit) always raises.
    Column types widen as the file needs (see BatchEncoder), except the ``fixed`` ones.
    """
    encoder = BatchEncoder(path, columns, on_bad_row, markers, markers_in_text, fixed)
    with open_csv(path) as handle:
        line = read_header(path, handle, columns)
        more = iter(handle.readline, "")
        for block in read_blocks(handle, batch_bytes):
            batch, used = encoder.encode_block(block, more, line)
            line += used
            if batch.rows:
                yield batch


class RejectFile:
    """Bad rows of one CSV file, kept in ``<dir>/rejects/<stem>.rejects.csv``.

    Columns: ``_line``, ``_column``, ``_reason``, then the row's fields as read. The file is
    written beside its final name and renamed on success, so that a retried extractor never
    leaves a partial or stale reject file; a file with no bad rows leaves no reject file.
    """

    def __init__(self, source: Path, columns: Sequence[Column]) -> None:
        self.path = source.parent / "rejects" / f"{source.stem}.rejects.csv"
        self.header = ["_line", "_column", "_reason", *(c.name for c in columns)]
        self.count = 0
        self._tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        self._handle: Any = None

    def __enter__(self) -> RejectFile:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self._tmp, "w", newline="", encoding="utf-8", errors="surrogateescape")
        self._writer = csv.writer(self._handle)
        self._writer.writerow(self.header)
        return self

    def write(self, bad: BadRow) -> None:
        """Record one bad row."""
        self._writer.writerow([bad.line, bad.column or "", bad.reason, *bad.fields])
        self.count += 1

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._handle.close()
        if kind is None and self.count:
            os.replace(self._tmp, self.path)
            return
        self._tmp.unlink(missing_ok=True)
        if kind is None:
            self.path.unlink(missing_ok=True)
