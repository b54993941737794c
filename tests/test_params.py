"""Typed parameters: strict checks, parsing, JSON and msgpack round trips, clear errors."""

from __future__ import annotations

import datetime as dt
import enum
import json
from typing import Any, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plankton.authoring.params import MISSING, Param
from plankton.codec import check_value, dumps, loads
from plankton.errors import ParamError

UTC = dt.timezone.utc
PLUS_2 = dt.timezone(dt.timedelta(hours=2))
NOON = dt.datetime(2024, 1, 31, 12, 0, tzinfo=UTC)
DAY = dt.date(2024, 1, 31)


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


def param(declared: Any, name: str = "p", **kwargs: Any) -> Param:
    made = Param(declared, **kwargs)
    made.set_name(name)
    return made


def same(a: Any, b: Any) -> bool:
    """Equal in value and in type, recursively (an aware datetime compares as an instant)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


# --- validate ------------------------------------------------------------------------------

VALID = [
    (int, 3, 3),
    (int, -(2**63), -(2**63)),
    (int, 2**64 - 1, 2**64 - 1),
    (int, Level.LOW, 1),
    (float, 2.5, 2.5),
    (float, 2, 2.0),
    (float, float("inf"), float("inf")),
    (str, "hi", "hi"),
    (str, "", ""),
    (bool, True, True),
    (bool, False, False),
    (bytes, b"\x00\xff", b"\x00\xff"),
    (dt.date, DAY, DAY),
    (dt.datetime, NOON, NOON),
    (dt.datetime, NOON.astimezone(PLUS_2), NOON),
    (Color, Color.RED, Color.RED),
    (Level, Level.HIGH, Level.HIGH),
    (list, [1, "a", None, [b"x"], {"k": NOON}], None),
    (list, (1, 2), [1, 2]),
    (dict, {"a": [1, 2.5], "b": {"c": None}}, None),
    (list[int], (1, 2), [1, 2]),
    (list[float], [1, 2.5], [1.0, 2.5]),
    (list[dt.date], [DAY], [DAY]),
    (dict[str, float], {"a": 1}, {"a": 1.0}),
    (dict[str, list[Color]], {"a": [Color.RED]}, None),
    (list[list[int]], [[1], []], None),
    (int | None, None, None),
    (int | None, 4, 4),
    (Optional[str], "x", "x"),
    (list[int | None], [1, None], None),
]


@pytest.mark.parametrize("declared, value, expected", VALID, ids=repr)
def test_a_valid_value_is_accepted(declared, value, expected):
    result = param(declared).validate(value, "Task")
    assert same(result, value if expected is None else expected)


INVALID = [
    (int, True, "expected int, got bool"),
    (int, 2.0, "expected int, got float"),
    (int, "3", "expected int, got str"),
    (int, 2**64, "out of range"),
    (int, None, "T | None"),
    (float, False, "expected float, got bool"),
    (float, "2.5", "expected float, got str"),
    (float, 10**400, "too large"),
    (str, b"x", "expected str, got bytes"),
    (str, 3, "expected str"),
    (str, "\ud800", "surrogate"),
    (bool, 1, "expected bool, got int"),
    (bool, "true", "expected bool"),
    (bytes, "x", "expected bytes, got str"),
    (bytes, bytearray(b"x"), "expected bytes"),
    (dt.date, NOON, "expected date, got datetime"),
    (dt.date, "2024-01-31", "expected date, got str"),
    (dt.datetime, dt.datetime(2024, 1, 1), "naive"),
    (dt.datetime, DAY, "expected datetime"),
    (dt.datetime, dt.datetime(1, 1, 1, tzinfo=PLUS_2), "out of range"),
    (Color, "RED", "expected Color (one of RED, GREEN)"),
    (Color, Level.LOW, "expected Color"),
    (Level, 1, "expected Level"),
    (list, "ab", "expected list, got str"),
    (list, [{1, 2}], "item [0]"),
    (list, [DAY], "list[T]"),
    (list, [Color.RED], "list[T]"),
    (dict, {1: "a"}, "keys must be str"),
    (dict, [("a", 1)], "expected dict"),
    (list[int], [1, "2"], "item [1] = '2': expected int, got str"),
    (list[int], {1}, "expected list[int], got set"),
    (dict[str, int], {"a": True}, "item ['a'] = True: expected int, got bool"),
    (dict[str, list[int]], {"a": [1, None]}, "item ['a'][1]"),
    (int | None, "x", "expected int"),
    (list[int | None], [1.5], "expected int, got float"),
]


@pytest.mark.parametrize("declared, value, reason", INVALID, ids=repr)
def test_an_invalid_value_is_refused_naming_the_expected_type(declared, value, reason):
    with pytest.raises(ParamError) as caught:
        param(declared, "count").validate(value, "Producer")
    assert reason in caught.value.reason


def test_param_error_names_the_task_the_parameter_and_the_value():
    with pytest.raises(ParamError) as caught:
        param(int, "interval").validate("fifteen", "Producer")
    err = caught.value
    assert (err.task, err.param, err.value) == ("Producer", "interval", "fifteen")
    assert str(err) == "Producer: parameter 'interval' = 'fifteen': expected int, got str"


def test_a_self_referencing_list_is_refused_not_recursed_forever():
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ParamError, match="nested deeper"):
        param(list).validate(loop, "Task")


# --- declaration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "declared, named",
    [
        (set, "set"),
        (object, "object"),
        (tuple, "tuple"),
        (int | str, "int | str"),
        (dict[int, str], "dict keys must be str"),
        (list[set], "set"),
        (type(None), "NoneType"),
        ("int", "get_type_hints"),
    ],
    ids=repr,
)
def test_an_unsupported_type_is_a_type_error_naming_it(declared, named):
    with pytest.raises(TypeError, match="unsupported parameter type") as caught:
        Param(declared)
    assert named in str(caught.value)


def test_a_bad_default_is_a_param_error():
    with pytest.raises(ParamError) as caught:
        Param(int, default="15")
    assert (caught.value.param, caught.value.value) == ("default", "15")
    assert "expected int, got str" in str(caught.value)
    with pytest.raises(ParamError, match="T | None"):
        Param(int, default=None)


def test_required_and_default():
    assert Param(int).required and Param(int).default is MISSING and repr(MISSING) == "MISSING"
    optional = Param(float, default=1)
    assert not optional.required and same(optional.default, 1.0)
    assert Param(int | None, default=None).default is None


def test_mutable_defaults_and_values_are_copied_per_use():
    tags = Param(list[list[int]], default=[[1]])
    first = tags.default
    first[0].append(2)
    assert tags.default == [[1]]
    given_value = [[1]]
    checked = tags.validate(given_value, "Task")
    assert checked == given_value and checked is not given_value
    assert checked[0] is not given_value[0]


def test_a_class_attribute_param_takes_its_name():
    class Producer:
        payload = Param(str)

    assert Producer.payload.name == "payload"
    assert Param(int, doc="how many").doc == "how many"


@pytest.mark.parametrize(
    "declared, name",
    [
        (int, "int"),
        (float, "float"),
        (str, "str"),
        (bool, "bool"),
        (bytes, "bytes"),
        (dt.date, "date"),
        (dt.datetime, "datetime"),
        (Color, "Color"),
        (list, "list"),
        (dict, "dict"),
        (list[int], "list[int]"),
        (dict[str, float], "dict[str, float]"),
        (int | None, "int | None"),
        (Optional[list[Color]], "list[Color] | None"),
    ],
    ids=repr,
)
def test_type_name_reads_like_the_declaration(declared, name):
    assert Param(declared).type_name() == name


# --- parse ---------------------------------------------------------------------------------

PARSED = [
    (int, "3", 3),
    (int, " -12 ", -12),
    (float, "2.5", 2.5),
    (float, "3", 3.0),
    (str, "a=b c", "a=b c"),
    (bool, "true", True),
    (bool, "FALSE", False),
    (bool, "1", True),
    (bool, "0", False),
    (bool, "yes", True),
    (bool, "No", False),
    (bytes, "héllo", "héllo".encode()),
    (bytes, "base64:AP8=", b"\x00\xff"),
    (dt.date, "2024-01-31", DAY),
    (dt.datetime, "2024-01-31T12:00:00Z", NOON),
    (dt.datetime, "2024-01-31T14:00:00+02:00", NOON),
    (Color, "RED", Color.RED),
    (Color, "green", Color.GREEN),
    (Level, "HIGH", Level.HIGH),
    (Level, "1", Level.LOW),
    (list, '[1, "a", null]', [1, "a", None]),
    (dict, '{"a": {"b": [true]}}', {"a": {"b": [True]}}),
    (list[int], "[1, 2]", [1, 2]),
    (list[dt.date], '["2024-01-31"]', [DAY]),
    (dict[str, Color], '{"x": "RED"}', {"x": Color.RED}),
    (dict[str, float], '{"x": 1}', {"x": 1.0}),
    (int | None, "null", None),
    (int | None, "", None),
    (int | None, "7", 7),
    (str | None, "", ""),
    (str | None, "null", None),
]


@pytest.mark.parametrize("declared, text, expected", PARSED, ids=repr)
def test_text_is_parsed_into_the_declared_type(declared, text, expected):
    assert same(param(declared).parse(text, "Task"), expected)


UNPARSABLE = [
    (int, "3.0", "an integer"),
    (int, "", "an integer"),
    (int, "true", "an integer"),
    (float, "two", "a number"),
    (bool, "maybe", "true/false"),
    (bytes, "base64:!!", "base64"),
    (dt.date, "2024-13-01", "ISO date"),
    (dt.date, "yesterday", "ISO date"),
    (dt.datetime, "2024-01-31T12:00:00", "naive"),
    (dt.datetime, "2024-01-31", "naive"),
    (dt.datetime, "noon", "ISO datetime"),
    (Color, "BLUE", "one of RED, GREEN"),
    (list[int], "1,2", "JSON array"),
    (list[int], "[1, 2.5]", "item [1]"),
    (list[dt.date], '["2024-01-32"]', "item [0] = '2024-01-32'"),
    (dict[str, int], "[1]", "expected dict"),
    (list, "[1, 2", "JSON array"),
    (int | None, "none", "an integer"),
]


@pytest.mark.parametrize("declared, text, reason", UNPARSABLE, ids=repr)
def test_bad_text_is_a_param_error_naming_what_would_be_right(declared, text, reason):
    with pytest.raises(ParamError) as caught:
        param(declared, "x").parse(text, "Task")
    assert (caught.value.task, caught.value.param, caught.value.value) == ("Task", "x", text)
    assert reason in caught.value.reason


def test_parse_wants_text():
    with pytest.raises(ParamError, match="expected text"):
        param(int).parse(3, "Task")  # type: ignore[arg-type]


# --- JSON (HTTP API) -----------------------------------------------------------------------

FROM_JSON = [
    (int, 3, 3),
    (float, 3, 3.0),
    (str, "x", "x"),
    (bool, True, True),
    (bytes, "hi", b"hi"),
    (bytes, "base64:AP8=", b"\x00\xff"),
    (dt.date, "2024-01-31", DAY),
    (dt.datetime, "2024-01-31T12:00:00+00:00", NOON),
    (Color, "RED", Color.RED),
    (Color, "red", Color.RED),
    (Level, 2, Level.HIGH),
    (list, [1, [2]], [1, [2]]),
    (dict[str, list[dt.date]], {"a": ["2024-01-31"]}, {"a": [DAY]}),
    (int | None, None, None),
]


@pytest.mark.parametrize("declared, value, expected", FROM_JSON, ids=repr)
def test_decoded_json_is_coerced(declared, value, expected):
    assert same(param(declared).coerce_json(value, "Dag"), expected)


@pytest.mark.parametrize(
    "declared, value",
    [
        (int, "3"),
        (int, 3.0),
        (int, True),
        (float, "2.5"),
        (bool, "true"),
        (dt.date, 20240131),
        (dt.datetime, "2024-01-31T12:00:00"),
        (Color, "BLUE"),
        (Level, 3),
        (Level, True),
        (list[int], [1, "2"]),
        (dict[str, int], [1]),
    ],
    ids=repr,
)
def test_json_of_the_wrong_type_is_refused(declared, value):
    with pytest.raises(ParamError) as caught:
        param(declared, "n").coerce_json(value, "Dag")
    assert (caught.value.task, caught.value.param) == ("Dag", "n")


# --- wire (msgpack metadata) and JSON round trips ------------------------------------------

SAMPLES = [
    (int, -(2**63)),
    (int, 2**64 - 1),
    (float, -0.0),
    (float, 1e300),
    (str, "héllo ✓"),
    (bool, False),
    (bytes, b"\x00\xff"),
    (bytes, b"base64:not really"),
    (dt.date, DAY),
    (dt.date, dt.date(1, 1, 1)),
    (dt.datetime, NOON.astimezone(PLUS_2)),
    (dt.datetime, dt.datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC)),
    (dt.datetime, dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    (Color, Color.GREEN),
    (Level, Level.LOW),
    (list, [1, "a", None, b"x", [NOON], {"k": 2.5}]),
    (dict, {"a": {"b": [True, None]}}),
    (list[dt.date], [DAY, DAY]),
    (dict[str, Color], {"x": Color.RED}),
    (dict[str, list[dt.datetime | None]], {"a": [NOON, None]}),
    (list[list[Level]], [[Level.HIGH], []]),
    (Color | None, None),
    (Color | None, Color.RED),
]


@pytest.mark.parametrize("declared, value", SAMPLES, ids=repr)
def test_wire_form_round_trips_through_msgpack(declared, value):
    made = param(declared)
    wire = made.to_wire(value)
    check_value(wire, "metadata")  # msgpack data the codec accepts as is
    assert same(made.from_wire(loads(dumps(wire)), "Task"), value)


@pytest.mark.parametrize("declared, value", [s for s in SAMPLES if s[0] is not list], ids=repr)
def test_json_form_round_trips_through_json_text(declared, value):
    made = param(declared)
    text = json.dumps(made.to_json(value))
    assert same(made.coerce_json(json.loads(text), "Dag"), value)


def test_wire_forms_are_plain_data():
    assert param(dt.date).to_wire(DAY) == "2024-01-31"
    assert param(Color).to_wire(Color.RED) == "RED"
    assert param(dt.datetime).to_wire(NOON) is NOON
    assert param(dict[str, list[Level]]).to_wire({"a": [Level.LOW]}) == {"a": ["LOW"]}


def test_from_wire_refuses_an_unknown_enum_member():
    with pytest.raises(ParamError, match="no member named 'BLUE'"):
        param(Color).from_wire("BLUE", "Task")


offsets = st.timedeltas(min_value=dt.timedelta(hours=-23), max_value=dt.timedelta(hours=23))
aware = st.datetimes(
    min_value=dt.datetime(1, 1, 2),
    max_value=dt.datetime(9999, 12, 30),
    timezones=offsets.map(dt.timezone),
)


@settings(max_examples=200, deadline=None)
@given(aware)
def test_any_aware_datetime_round_trips_through_msgpack(value):
    made = param(dt.datetime)
    assert same(made.from_wire(loads(dumps(made.to_wire(value))), "Task"), value)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(2**63), 2**64 - 1) | st.none()))
def test_any_list_of_optional_ints_round_trips_through_text_and_msgpack(value):
    made = param(list[int | None])
    assert same(made.parse(json.dumps(value), "Task"), value)
    assert same(made.from_wire(loads(dumps(made.to_wire(value))), "Task"), value)


# --- JSON schema and assignments -----------------------------------------------------------


def test_json_schema_describes_the_json_form():
    assert Param(int).json_schema() == {"type": "integer"}
    assert Param(dt.datetime).json_schema() == {"type": "string", "format": "date-time"}
    assert Param(Color).json_schema()["enum"] == ["RED", "GREEN"]
    assert Param(list[int]).json_schema() == {"type": "array", "items": {"type": "integer"}}
    assert Param(dict[str, float]).json_schema() == {
        "type": "object",
        "additionalProperties": {"type": "number"},
    }
    assert Param(int | None).json_schema() == {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    with_default = Param(dt.date, default=DAY, doc="the day").json_schema()
    assert with_default["default"] == "2024-01-31" and with_default["description"] == "the day"
    json.dumps(Param(dict[str, list[Color | None]], default={"a": [None]}).json_schema())
