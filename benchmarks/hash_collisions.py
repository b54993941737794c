"""Hash many random tasks and count identity-hash collisions (expected: 0), and time it.

Why: ``plankton.authoring.hashing`` promises that different (family, params) never share a
``param_hash``; the old project's FNV ids did collide. This script is the large-scale
evidence: random families and params of every supported type, nested, drawn from small
alphabets so that near-misses (shifted separators, 1 vs 1.0 vs True vs "1", the same instant
in two time zones) are common. A *collision* is two tasks with the same hash that are not
equal under type-strict equality (:func:`strict_key`, written apart from the encoding); a
task that comes up twice is a *duplicate*, not a collision.

    python -m benchmarks.hash_collisions --count 1000000
    python benchmarks/hash_collisions.py --count 1000000 --seed 7
"""

from __future__ import annotations

import argparse
import datetime as dt
import enum
import math
import random
import struct
import sys
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plankton.authoring.hashing import param_hash

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
ZONES = [UTC] + [dt.timezone(dt.timedelta(minutes=m)) for m in (-330, -60, 60, 345, 840)]
FAMILIES = ["Producer", "Multiplier", "Aggregator", "Extract", "Load", "A", "AB", "B"]
ALPHABET = "ab_:Y1 é"


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


def strict_key(value: Any) -> Any:
    """Hashable key equal for two values iff they are equal in type and value."""
    if value is None or isinstance(value, bool):
        return ("const", value)
    if isinstance(value, enum.Enum):
        return ("enum", type(value).__qualname__, value.name)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", "nan" if math.isnan(value) else struct.pack(">d", value))
    if isinstance(value, (str, bytes)):
        return (type(value).__name__, value)
    if isinstance(value, dt.datetime):
        return ("datetime", value - EPOCH)
    if isinstance(value, dt.date):
        return ("date", value.toordinal())
    if isinstance(value, (list, tuple)):
        return ("list", tuple(strict_key(item) for item in value))
    return ("dict", frozenset((strict_key(k), strict_key(v)) for k, v in value.items()))


class RandomTasks:
    """Random (family, params) pairs of every supported type; reproducible from a seed."""

    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)

    def text(self, max_len: int = 6) -> str:
        return "".join(self.rnd.choices(ALPHABET, k=self.rnd.randrange(max_len + 1)))

    def number(self) -> Any:
        rnd = self.rnd
        small = rnd.randint(-3, 3)
        return rnd.choice(
            [
                small,
                float(small),
                small / 2,
                -0.0,
                math.nan,
                math.inf,
                rnd.getrandbits(64) - 2**63,
                rnd.getrandbits(200),
                rnd.random(),
                str(small),
            ]
        )

    def scalar(self) -> Any:
        rnd = self.rnd
        kind = rnd.randrange(9)
        if kind == 0:
            return rnd.choice([None, True, False, Color.RED, Color.GREEN, Level.LOW, Level.HIGH])
        if kind <= 2:
            return self.number()
        if kind <= 4:
            return self.text()
        if kind == 5:
            return self.text().encode()
        if kind == 6:
            return dt.date(2024, 1, 1) + dt.timedelta(days=rnd.randrange(-3, 3))
        instant = EPOCH + dt.timedelta(microseconds=rnd.choice([0, 1, rnd.getrandbits(50)]))
        return instant.astimezone(rnd.choice(ZONES))

    def value(self, depth: int = 0) -> Any:
        kind = self.rnd.randrange(10 if depth < 3 else 8)
        if kind == 8:
            return [self.value(depth + 1) for _ in range(self.rnd.randrange(4))]
        if kind == 9:
            size = self.rnd.randrange(4)
            return {self.key(): self.value(depth + 1) for _ in range(size)}
        return self.scalar()

    def key(self) -> Any:
        return self.text(3) if self.rnd.random() < 0.8 else self.rnd.randint(-2, 2)

    def task(self) -> tuple[str, dict[str, Any]]:
        family = self.rnd.choice(FAMILIES) if self.rnd.random() < 0.9 else self.text(8)
        size = self.rnd.randrange(6)
        return family, {self.text(3): self.value() for _ in range(size)}


def run(count: int, seed: int) -> dict[str, Any]:
    """Hash ``count`` random tasks; return counts and timings."""
    tasks = RandomTasks(seed)
    seen: dict[str, int] = {}  # param hash -> Python hash of the task's strict key
    duplicates = collisions = 0
    hashing = 0.0
    started = time.perf_counter()
    for _ in range(count):
        family, params = tasks.task()
        before = time.perf_counter()
        digest = param_hash(family, params)
        hashing += time.perf_counter() - before
        identity = hash((family, strict_key(params)))
        if digest not in seen:
            seen[digest] = identity
        elif seen[digest] == identity:
            duplicates += 1
        else:
            collisions += 1
    total = time.perf_counter() - started
    return {
        "count": count,
        "distinct": len(seen),
        "duplicates": duplicates,
        "collisions": collisions,
        "hash_seconds": hashing,
        "total_seconds": total,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="tasks to hash")
    parser.add_argument("--seed", type=int, default=0, help="random seed (reproducible)")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    report = run(args.count, args.seed)
    rate = report["count"] / report["hash_seconds"]
    print(
        f"hashed {report['count']:,} random tasks ({report['distinct']:,} distinct, "
        f"{report['duplicates']:,} exact duplicates): {report['collisions']} collisions\n"
        f"hashing {report['hash_seconds']:.2f} s ({rate:,.0f} tasks/s, "
        f"{1e6 / rate:.1f} us each); total with generation {report['total_seconds']:.2f} s"
    )
    return 1 if report["collisions"] else 0


if __name__ == "__main__":
    sys.exit(main())
