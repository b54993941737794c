"""Write CSV files for the csv_to_postgres example, its tests and its benchmark.

    python examples/make_csvs.py DIR --files N --rows M [--shape ratings|users|events] [--seed S]

writes ``DIR/<shape>_1.csv`` ... ``DIR/<shape>_N.csv`` of M rows each, all loading one table.
Three shapes cover what a loader meets in practice:

- ``ratings``: MovieLens-like ``userId,movieId,rating,timestamp`` (integers, a float, a Unix
  time): narrow, numeric, the fast path and the benchmark's data;
- ``users``: text with commas and quotes, empty ages (NULLs), booleans, ISO timestamps;
- ``wide``: 20 columns of every type with ~5% missing values (empty, NA, NaN, NULL), as
  open-data exports are: the benchmark's real-shaped table;
- ``events``: JSON-ish text that sometimes holds newlines, tabs, backslashes and non-ASCII,
  floats present only on purchases, timestamps with fractions and offsets.

Output is a pure function of (shape, rows, seed, file number), so tests can regenerate it.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

Row = list[object]


@dataclass(frozen=True)
class Shape:
    """A kind of file: its header and a row maker ``make(rng, row_number)``."""

    header: tuple[str, ...]
    make: Callable[[random.Random, int], Row]


_EPOCH_2015 = 1_420_070_400
_FIRST = ["Ann", "Bob", "Chloé", "Dmitri", "Eve", "Fatima", "Günter", "Hiro", "Ines", "Jo"]
_LAST = ["Smith", "O'Neil", "Smith, Jr.", 'Lee "Junior"', "Nguyễn", "García", "Kowalski"]
_COUNTRIES = ["FR", "DE", "US", "JP", "BR", "IN", "NG", ""]
_KINDS = ["view", "click", "add to cart", "purchase"]
_NOTES = [
    "",
    "plain",
    "comma, inside",
    'quote "inside"',
    "line one\nline two",
    "tab\there",
    "back\\slash",
    "ünïcødé ✓",
    "crlf\r\nend",
]


def _iso(seconds: int, fraction: bool = False, zone: str = "+00:00") -> str:
    moment = dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    return text + (f".{seconds % 1000:03d}" if fraction else "") + zone


def rating_row(rng: random.Random, n: int) -> Row:
    """user, movie, rating in half stars, Unix time (as in MovieLens ratings.csv)."""
    r = rng.random
    return [
        int(r() * 200_000) + 1,
        int(r() * 90_000) + 1,
        (int(r() * 10) + 1) / 2,
        _EPOCH_2015 + int(r() * 300_000_000),
    ]


def user_row(rng: random.Random, n: int) -> Row:
    """A user: ``n`` is a unique id; about 1 in 20 ages is missing (NULL)."""
    name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
    age = "" if rng.random() < 0.05 else rng.randint(16, 90)
    signup = _iso(_EPOCH_2015 + rng.randint(0, 300_000_000), zone="Z").replace(" ", "T")
    return [
        n,
        name,
        f"user{n}@example.com",
        age,
        rng.choice(["true", "false"]),
        signup,
        rng.choice(_COUNTRIES),
    ]


def event_row(rng: random.Random, n: int) -> Row:
    """An event: JSON-ish payload text with awkward characters, amount only on purchases."""
    kind = rng.choice(_KINDS)
    amount = round(rng.uniform(1, 500), 2) if kind == "purchase" else ""
    note = rng.choice(_NOTES) if rng.random() < 0.1 else ""
    payload = '{"path": "/item/%d", "note": "%s"}' % (rng.randint(1, 5000), note)
    when = _iso(
        _EPOCH_2015 + rng.randint(0, 300_000_000),
        fraction=True,
        zone=rng.choice(["+00:00", "+05:30", "-08:00"]),
    )
    return [n, rng.randint(1, 100_000), kind, when, amount, payload]


_MISSING = ["", "NA", "NaN", "NULL"]


def _maybe(rng: random.Random, value: object, share: float = 0.05) -> object:
    """``value``, or (``share`` of the time) a missing-value marker as real exports write."""
    return rng.choice(_MISSING) if rng.random() < share else value


def wide_row(rng: random.Random, n: int) -> Row:
    """20 columns as in a public open-data export: ids, counts, amounts, rates, dates,
    timestamps with Z, TRUE/FALSE, codes and free text, about 5% of each missing."""
    r = rng.random
    day = dt.date(2015, 1, 1) + dt.timedelta(days=int(r() * 3650))
    when = _iso(_EPOCH_2015 + int(r() * 300_000_000), zone="Z").replace(" ", "T")
    return [
        n,
        rng.randint(1, 5_000_000_000),
        _maybe(rng, rng.randint(0, 1000)),
        _maybe(rng, round(r() * 10_000, 2)),
        _maybe(rng, round(r(), 6)),
        _maybe(rng, round(r() * 100 - 50, 3)),
        day.isoformat(),
        _maybe(rng, when),
        _maybe(rng, rng.choice(["TRUE", "FALSE"])),
        rng.choice(_COUNTRIES[:-1]),
        _maybe(rng, rng.choice(_KINDS)),
        f"code-{rng.randint(1, 999):03d}",
        _maybe(rng, rng.randint(-100, 100)),
        _maybe(rng, round(r() * 1e6, 1)),
        rng.randint(1, 12),
        rng.randint(2015, 2025),
        _maybe(rng, rng.choice(_FIRST)),
        _maybe(rng, round(r() * 5, 1)),
        _maybe(rng, rng.randint(0, 1)),
        rng.choice(["plain", "comma, inside", "Smith, Jr.", "ünïcødé"]),
    ]


SHAPES: dict[str, Shape] = {
    "ratings": Shape(("userId", "movieId", "rating", "timestamp"), rating_row),
    "users": Shape(
        ("user_id", "name", "email", "age", "is_active", "signup_at", "country"), user_row
    ),
    "wide": Shape(
        (
            "id",
            "account",
            "quantity",
            "amount",
            "rate",
            "delta",
            "day",
            "updated_at",
            "active",
            "country",
            "kind",
            "code",
            "score",
            "population",
            "month",
            "year",
            "first_name",
            "stars",
            "flag",
            "comment",
        ),
        wide_row,
    ),
    "events": Shape(("event_id", "user_id", "kind", "occurred_at", "amount", "payload"), event_row),
}


def rows_of(shape: Shape, rows: int, seed: int, first_id: int = 1) -> Iterator[Row]:
    """``rows`` rows of ``shape``, numbered from ``first_id``, deterministic for ``seed``."""
    rng = random.Random(seed)
    return (shape.make(rng, first_id + i) for i in range(rows))


def write_csv(path: Path, shape: Shape, rows: int, seed: int, first_id: int = 1) -> Path:
    """Write one file: the header, then ``rows`` rows."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")  # Unix line ends, as MovieLens
        writer.writerow(shape.header)
        writer.writerows(rows_of(shape, rows, seed, first_id))
    return path


def write_files(
    directory: Path, files: int, rows: int, shape: str = "ratings", seed: int = 1
) -> list[Path]:
    """Write ``files`` files of ``rows`` rows: ``<shape>_1.csv`` ... (ids unique across)."""
    directory.mkdir(parents=True, exist_ok=True)
    return [
        write_csv(
            directory / f"{shape}_{i}.csv",
            SHAPES[shape],
            rows,
            seed * 1000 + i,
            first_id=(i - 1) * rows + 1,
        )
        for i in range(1, files + 1)
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--files", type=int, default=1, help="number of files (default 1)")
    parser.add_argument("--rows", type=int, default=1000, help="rows per file (default 1000)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="ratings")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.files < 1 or args.rows < 0:
        parser.error("--files must be at least 1 and --rows at least 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for path in write_files(args.directory, args.files, args.rows, args.shape, args.seed):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
