"""Identity hashes: injective on type-strict values, stable across releases (golden vectors)."""

from __future__ import annotations

import copy
import datetime as dt
import enum
import json
import math
import random
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from benchmarks.hash_collisions import strict_key as _strict_key
from plankton.authoring.hashing import canonical, param_hash, tree_hash

GOLDEN = Path(__file__).with_name("golden_hashes.json")
UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
ZONES = [UTC, dt.timezone(dt.timedelta(hours=1)), dt.timezone(dt.timedelta(hours=-5, minutes=-30))]


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


ENUMS = {"Color": Color, "Level": Level}


# --- type-strict equality, written independently of the encoding ---------------------------


# (shared with benchmarks/hash_collisions.py, which hashes a million random tasks)
strict_key = _strict_key


def strictly_equal(a: Any, b: Any) -> bool:
    return strict_key(a) == strict_key(b)


def test_the_strict_equality_helper_separates_look_alikes():
    assert not strictly_equal(1, 1.0) and not strictly_equal(1, True)
    assert not strictly_equal(0.0, -0.0)
    assert strictly_equal(float("nan"), float("nan")) and strictly_equal((1, [2]), [1, (2,)])
    assert strictly_equal({"a": 1, "b": 2}, {"b": 2, "a": 1}) and not strictly_equal(Level.LOW, 1)


# --- the encoding --------------------------------------------------------------------------


def test_canonical_bytes_match_the_documented_format():
    assert canonical(None) == b"N" and canonical(True) == b"T" and canonical(False) == b"F"
    assert canonical(1) == b"I" + (1).to_bytes(8, "big") + b"\x01"
    assert canonical(128) == b"I" + (2).to_bytes(8, "big") + b"\x00\x80"
    assert canonical(-1) == b"I" + (1).to_bytes(8, "big") + b"\xff"
    assert canonical(1.5) == b"D" + struct.pack(">d", 1.5)
    assert canonical("hé") == b"S" + (3).to_bytes(8, "big") + "hé".encode()
    assert canonical(b"\x00") == b"B" + (1).to_bytes(8, "big") + b"\x00"
    assert canonical(dt.date(2024, 1, 31)) == b"d\x07\xe8\x01\x1f"
    assert canonical(EPOCH + dt.timedelta(microseconds=5)) == b"t" + (5).to_bytes(8, "big")
    assert canonical(Color.RED) == b"E" + canonical("Color") + canonical("RED")
    assert canonical([1, None]) == b"L" + (2).to_bytes(8, "big") + canonical(1) + b"N"
    entries = sorted([canonical("b") + canonical(1), canonical("a") + canonical(2)])
    assert canonical({"b": 1, "a": 2}) == b"M" + (2).to_bytes(8, "big") + b"".join(entries)


def test_look_alike_values_all_hash_differently():
    values = [1, 1.0, True, "1", b"1", [1], {"1": 1}, Level.LOW, None, 0, 0.0, -0.0, False, ""]
    values += [dt.date(2024, 1, 1), dt.datetime(2024, 1, 1, tzinfo=UTC), "2024-01-01"]
    assert len({param_hash("T", {"v": v}) for v in values}) == len(values)


def test_the_old_fnv_collision_pair_no_longer_collides():
    first = param_hash("Task", {"x": "a_Y:STR:b", "y": "c"})
    second = param_hash("Task", {"x": "a", "y": "b_Y:STR:c"})
    assert first != second


def test_family_and_params_are_separate_fields():
    assert param_hash("ab", {"c": 1}) != param_hash("a", {"bc": 1})
    assert param_hash("T", {}) != param_hash("T", {"": None})


def test_equal_values_hash_equal_whatever_their_spelling():
    instant = dt.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    same_instant = instant.astimezone(ZONES[2])
    assert param_hash("T", {"t": instant}) == param_hash("T", {"t": same_instant})
    assert param_hash("T", {"a": 1, "b": [1, 2]}) == param_hash("T", {"b": (1, 2), "a": 1})
    other_nan = struct.unpack(">d", bytes.fromhex("fff8000000000001"))[0]
    assert canonical(float("nan")) == canonical(other_nan)


def test_int_subclasses_hash_as_int_but_enum_members_do_not():
    class Count(int):
        pass

    assert canonical(Count(7)) == canonical(7)
    assert canonical(Level.LOW) != canonical(1)


def test_datetimes_hash_at_microsecond_precision_across_the_whole_range():
    lowest = dt.datetime(1, 1, 1, tzinfo=UTC)
    highest = dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=ZONES[2])
    assert canonical(lowest) != canonical(lowest + dt.timedelta(microseconds=1))
    assert canonical(highest)[:1] == b"t"


def test_bad_input_is_refused_clearly():
    with pytest.raises(TypeError, match="set"):
        canonical({1, 2})
    with pytest.raises(ValueError, match="naive"):
        canonical(dt.datetime(2024, 1, 1))
    with pytest.raises(TypeError, match="family"):
        param_hash(1, {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="64-digit"):
        tree_hash("abc", [])


# --- golden vectors ------------------------------------------------------------------------


def decode_tagged(node: Any) -> Any:
    """Decode the tagged JSON of tests/golden_hashes.json into Python values."""
    kind = node["type"]
    simple = {
        "none": lambda: None,
        "bool": lambda: node["value"],
        "int": lambda: int(node["value"]),
        "float": lambda: float.fromhex(node["hex"]),
        "str": lambda: node["value"],
        "bytes": lambda: bytes.fromhex(node["hex"]),
        "date": lambda: dt.date.fromisoformat(node["value"]),
        "datetime": lambda: dt.datetime.fromisoformat(node["value"]),
        "enum": lambda: ENUMS[node["class"]][node["member"]],
        "list": lambda: [decode_tagged(item) for item in node["items"]],
        "dict": lambda: {decode_tagged(k): decode_tagged(v) for k, v in node["entries"]},
    }
    return simple[kind]()


def golden() -> dict[str, Any]:
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", golden()["param_hashes"], ids=lambda case: case["name"])
def test_param_hash_matches_its_golden_vector(case):
    params = decode_tagged(case["params"])
    assert canonical(params).hex() == case["canonical_params"]
    assert param_hash(case["family"], params) == case["param_hash"]


@pytest.mark.parametrize("case", golden()["tree_hashes"], ids=lambda case: case["name"])
def test_tree_hash_matches_its_golden_vector(case):
    assert tree_hash(case["param_hash"], case["children"]) == case["tree_hash"]


def test_there_are_enough_golden_vectors_and_they_are_distinct():
    cases = golden()["param_hashes"]
    assert len(cases) >= 20
    types = {node["type"] for case in cases for node in _walk(case["params"])}
    assert types >= {"none", "bool", "int", "float", "str", "bytes", "date", "datetime"}
    assert types >= {"enum", "list", "dict"}


def _walk(node: dict[str, Any]):
    yield node
    for child in node.get("items", []):
        yield from _walk(child)
    for key, value in node.get("entries", []):
        yield from _walk(key)
        yield from _walk(value)


# --- property tests ------------------------------------------------------------------------

aware_datetimes = st.datetimes(
    min_value=dt.datetime(2, 1, 1),
    max_value=dt.datetime(9998, 12, 31),
    timezones=st.sampled_from(ZONES),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**90), max_value=2**90),
    st.floats(),
    st.text(max_size=12),
    st.binary(max_size=12),
    st.dates(),
    aware_datetimes,
    st.sampled_from(list(Color) + list(Level)),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.text(max_size=4), st.integers(-3, 3)), inner, max_size=4),
    ),
    max_leaves=12,
)
param_dicts = st.dictionaries(st.text(max_size=6), values, max_size=5)
families = st.one_of(st.sampled_from(["Producer", "Multiplier"]), st.text(max_size=8))


def look_alikes(value: Any) -> list[Any]:
    """Values that are, or print like, or hold the same data as ``value``."""
    out: list[Any] = [copy.deepcopy(value), str(value), [value], (value,), {"": value}]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        out += [-value, value + 1]
        if math.isfinite(value) and abs(value) < 2**53:
            out += [float(value), int(value)]
    if isinstance(value, str):
        out += [value.encode(), value + "\x00", value[:-1]]
    if isinstance(value, dt.datetime):
        out += [value.astimezone(zone) for zone in ZONES]
        out += [value.date(), value + dt.timedelta(microseconds=1)]
    elif isinstance(value, dt.date):
        out += [dt.datetime.combine(value, dt.time(), UTC), value.isoformat()]
    if isinstance(value, enum.Enum):
        out += [value.name, value.value]
    if isinstance(value, (list, tuple)):
        out += [tuple(value), list(value)[::-1], list(value) + [None]]
    if isinstance(value, dict):
        out += [dict(reversed(list(value.items()))), list(value.items())]
    return out


@st.composite
def near_variants(draw: st.DrawFn, params: dict[str, Any]) -> dict[str, Any]:
    """A params dict close to ``params``: sometimes equal, often only subtly different."""
    variant = copy.deepcopy(params)
    keys = sorted(variant)
    move = draw(st.sampled_from(["same", "retype", "shift", "rename"]))
    if move == "retype" and keys:
        key = draw(st.sampled_from(keys))
        variant[key] = draw(st.sampled_from(look_alikes(variant[key])))
    elif move == "shift" and len(keys) >= 2:
        left, right = keys[0], keys[1]
        text = str(variant[left])
        cut = draw(st.integers(0, len(text)))
        variant[left], variant[right] = text[:cut], text[cut:] + str(variant[right])
    elif move == "rename" and keys:
        variant[keys[0] + "_"] = variant.pop(keys[0])
    return variant


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_hashes_are_equal_iff_family_and_params_are_strictly_equal(data):
    family_a, params_a = data.draw(families), data.draw(param_dicts)
    family_b = data.draw(st.one_of(st.just(family_a), families))
    params_b = data.draw(st.one_of(near_variants(params_a), param_dicts))
    same_hash = param_hash(family_a, params_a) == param_hash(family_b, params_b)
    event("equal tasks" if same_hash else "different tasks")
    assert same_hash == (family_a == family_b and strictly_equal(params_a, params_b))


@settings(max_examples=300, deadline=None)
@given(values, values)
def test_canonical_is_injective_on_strict_values(a, b):
    assert (canonical(a) == canonical(b)) == strictly_equal(a, b)


def random_value(rnd: random.Random, depth: int = 0) -> Any:
    """A random value from deliberately small spaces, so that equal tasks do recur."""
    pick = rnd.randrange(12 if depth < 2 else 10)
    makers = [
        lambda: None,
        lambda: rnd.random() < 0.5,
        lambda: rnd.randint(-5, 5),
        lambda: rnd.choice([0.0, -0.0, 1.0, 0.5, math.inf, math.nan, rnd.randint(-5, 5) / 2]),
        lambda: rnd.choice(["", "a", "b", "ab", "a_Y:STR:b", "1"]),
        lambda: rnd.choice([b"", b"a", b"1"]),
        lambda: dt.date(2024, 1, rnd.randint(1, 3)),
        lambda: dt.datetime(2024, 1, 1, rnd.randint(0, 2), tzinfo=rnd.choice(ZONES)),
        lambda: rnd.choice(list(Color) + list(Level)),
        lambda: rnd.randint(-(2**70), 2**70),
        lambda: [random_value(rnd, depth + 1) for _ in range(rnd.randrange(3))],
        lambda: {rnd.choice("xyz"): random_value(rnd, depth + 1) for _ in range(rnd.randrange(3))},
    ]
    return makers[pick]()


def random_task(rnd: random.Random) -> tuple[str, dict[str, Any]]:
    family = rnd.choice(["Producer", "Multiplier", "Aggregator", "P"])
    params = {rnd.choice("abcd"): random_value(rnd) for _ in range(rnd.randrange(4))}
    return family, params


def test_twenty_thousand_random_tasks_have_no_collision():
    rnd = random.Random(20240131)
    hash_of: dict[Any, str] = {}
    for _ in range(20_000):
        family, params = random_task(rnd)
        key = (family, strict_key(params))
        digest = param_hash(family, params)
        assert hash_of.setdefault(key, digest) == digest  # equal tasks, equal hashes
    assert len(set(hash_of.values())) == len(hash_of)  # different tasks, different hashes
    assert 1_000 < len(hash_of) < 20_000  # the inputs did repeat, and did vary


# --- tree hashes ---------------------------------------------------------------------------

digests = st.binary(min_size=32, max_size=32).map(bytes.hex)


@settings(max_examples=200, deadline=None)
@given(digests, st.lists(digests, max_size=6), st.randoms())
def test_tree_hash_ignores_child_order(parent, children, rnd):
    shuffled = list(children)
    rnd.shuffle(shuffled)
    assert tree_hash(parent, children) == tree_hash(parent, shuffled)


@settings(max_examples=200, deadline=None)
@given(digests, st.lists(digests, min_size=1, max_size=6), st.data())
def test_tree_hash_changes_when_any_child_changes(parent, children, data):
    index = data.draw(st.integers(0, len(children) - 1))
    other = data.draw(digests.filter(lambda d: d != children[index]))
    changed = children[:index] + [other] + children[index + 1 :]
    assert tree_hash(parent, children) != tree_hash(parent, changed)


def test_tree_hash_counts_children_and_depends_on_the_parent():
    parent, child = "ab" * 32, "cd" * 32
    assert tree_hash(parent, [child]) != tree_hash(parent, [child, child])
    assert tree_hash(parent, []) != tree_hash("ef" * 32, [])
    assert tree_hash(parent, []) != parent  # a leaf's tree hash is its own domain
    assert tree_hash(parent.upper(), [child]) == tree_hash(parent, [child])


def test_tree_hashes_compose_into_a_merkle_tree():
    leaf = param_hash("Producer", {"payload": "hi"})
    middle = tree_hash(param_hash("Multiplier", {"n": 2}), [tree_hash(leaf, [])])
    renamed = tree_hash(param_hash("Multiplier", {"n": 2}), [tree_hash(leaf[::-1], [])])
    assert middle != renamed
