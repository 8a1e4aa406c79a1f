"""Unit tests for fanout._core.expr (pure CEL wrapper)."""

from __future__ import annotations

import builtins
import dataclasses
import sys
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanout._core.expr import (
    MAX_SOURCE_LENGTH,
    Expression,
    ExpressionError,
    compile_expression,
)

EVENT: dict[str, Any] = {
    "name": "shop/order.created",
    "id": "01H",
    "ts": 1700000000000,
    "v": "1",
    "user": {},
    "data": {
        "amount": 150,
        "price": 9.5,
        "plan": "pro",
        "email": "ada@example.com",
        "tags": ["vip", "beta"],
        "customer": {"id": "c-1", "address": {"country": "FR"}},
        "items": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 3}],
        "nothing": None,
        "flag": True,
    },
}


def ev(source: str, **extra: Any) -> Any:
    variables = ("event", *extra)
    return compile_expression(source, variables=variables).evaluate({"event": EVENT, **extra})


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("event.data.amount > 100", True),
        ("event.data.amount > 1000", False),
        ("event.data.customer.address.country == 'FR'", True),
        ("event.data['customer']['id']", "c-1"),
        ("event.name == 'shop/order.created' && event.data.flag", True),
        ("event.data.items[1].qty * 2 + 1", 7),
        ("event.data.price * 2.0", 19.0),
        ("event.data.amount / 4", 37),
        ("event.data.amount % 7", 3),
        ("-event.data.amount", -150),
        ("'vip' in event.data.tags", True),
        ("'customer' in event.data", True),
        ("size(event.data.tags)", 2),
        ("event.data.tags.size()", 2),
        ("event.data.items.map(i, i.qty)", [2, 3]),
        ("event.data.items.exists(i, i.sku == 'b')", True),
        ("event.data.items.all(i, i.qty > 2)", False),
        ("event.data.items.filter(i, i.qty > 2).map(i, i.sku)", ["b"]),
        ("event.data.tags.exists_one(t, t.startsWith('v'))", True),
        ("event.data.nothing == null", True),
        ("event.data.nothing", None),
        ("event.data.customer.address", {"country": "FR"}),
        ("[1, 'a', true, null, 2.5]", [1, "a", True, None, 2.5]),
        ("{'b': 1, 'a': [2]}", {"b": 1, "a": [2]}),
        ("type(event.data.amount) == int", True),
        ("int(event.data.price)", 9),
        ("string(event.data.amount)", "150"),
        ("event.ts > 0 && event.v == '1'", True),
        ("timestamp('2024-01-02T03:04:05Z')", "2024-01-02T03:04:05Z"),
        ("b'hi'", "aGk="),
        ("3u", 3),
        ("// a comment\nevent.data.flag", True),
    ],
)
def test_evaluate_nested_data(source: str, expected: Any) -> None:
    result = ev(source)
    assert result == expected
    assert type(result) is type(expected)


def test_results_are_plain_python() -> None:
    result = ev("{'x': [event.data.amount, event.data.price, event.data.plan, true]}")
    assert type(result) is dict
    (key,) = result
    assert type(key) is str
    assert [type(v) for v in result["x"]] == [int, float, str, bool]
    assert type(result["x"]) is list


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("has(event.data.amount)", True),
        ("has(event.data.missing)", False),
        ("has(event.data.customer.address.country)", True),
        ("has(event.data.customer.phone)", False),
        ("has(event.data.missing) && event.data.missing > 1", False),
        ("!has(event.data.missing) || event.data.missing > 1", True),
    ],
)
def test_has(source: str, expected: bool) -> None:
    assert ev(source) is expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("event.data.email.startsWith('ada@')", True),
        ("event.data.email.endsWith('.com')", True),
        ("event.data.email.contains('example')", True),
        ("event.data.email.matches('^[a-z]+@example\\\\.com$')", True),
        ("event.data.email.matches('^bob')", False),
        ("size(event.data.email)", 15),
        ("event.data.plan + '-' + event.data.customer.id", "pro-c-1"),
    ],
)
def test_string_functions(source: str, expected: object) -> None:
    assert ev(source) == expected


def test_async_variable() -> None:
    expr = compile_expression(
        "async.data.user_id == event.data.user_id && has(async.data.ok)",
        variables=("event", "async"),
    )
    assert expr.variables == ("event", "async")
    event = {"data": {"user_id": "u1"}}
    assert expr.matches({"event": event, "async": {"data": {"user_id": "u1", "ok": 1}}})
    assert not expr.matches({"event": event, "async": {"data": {"user_id": "u2"}}})
    assert expr.evaluate({"event": event, "async": {"data": {"user_id": "u1"}}}) is False
    # Also in other positions: bare, inside lists, macros, root-scoped.
    asy = {"data": {"items": [1, 2]}}
    both = ("event", "async")
    assert (
        compile_expression("[async][0]", variables=both).evaluate({"event": {}, "async": asy})
        == asy
    )
    assert compile_expression(
        "async.data.items.exists(x, x == 2) && .async.data.items[0] == 1",
        variables=both,
    ).evaluate({"event": {}, "async": asy})
    assert compile_expression("'async' + 'x'", variables=both).evaluate({}) == "asyncx"


def test_async_undeclared_without_variable() -> None:
    with pytest.raises(ExpressionError, match="undeclared variable 'async'"):
        compile_expression("async.data.x == 1")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("event.data.plan == 'pro' ? 120 : 0", 120.0),
        ("event.data.plan == 'free' ? 120 : -30", -30.0),
        ("event.data.price * 2.0", 19.0),
        ("event.data.amount", 150.0),
        ("event.data.plan", None),  # not a number
        ("event.data.flag", None),  # bools are not numbers
        ("event.data.missing", None),
        ("1.0 / 0.0", None),  # inf
        ("event.data.amount / 0", None),  # division by zero
    ],
)
def test_number(source: str, expected: float | None) -> None:
    result = compile_expression(source).number({"event": EVENT})
    assert result == expected
    assert result is None or type(result) is float


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("event.data.customer.id", "c-1"),
        ("event.data.amount", "150"),
        ("event.data.price", "9.5"),
        ("event.data.flag", "true"),
        ("event.data.nothing", "null"),
        ("event.data.tags", '["vip","beta"]'),
        ("{'b': 1, 'a': {'d': 2, 'c': 'é'}}", '{"a":{"c":"é","d":2},"b":1}'),
        ("{2: 'x', 1: 'y'}", '{"1":"y","2":"x"}'),
        ("event.data.customer.id + ':' + event.data.plan", "c-1:pro"),
        ("event.data.missing", None),
        ("event.data.amount.foo", None),
    ],
)
def test_key(source: str, expected: str | None) -> None:
    assert compile_expression(source).key({"event": EVENT}) == expected


def test_key_is_stable_across_dict_order() -> None:
    expr = compile_expression("event.data")
    a = expr.key({"event": {"data": {"x": 1, "y": [1, {"q": 1, "p": 2}]}}})
    b = expr.key({"event": {"data": {"y": [1, {"p": 2, "q": 1}], "x": 1}}})
    assert a is not None
    assert a == b == '{"x":1,"y":[1,{"p":2,"q":1}]}'


@pytest.mark.parametrize(
    "source",
    [
        "event.data.missing > 100",
        "event.data.missing.deeper == 'x'",
        "event.missing.x == 1",
        "event.data.nothing > 1",
        "event.data.plan > 1",
        "event.data.tags[10] == 'x'",
        "event.data.amount / 0 == 1",
        "event.data.email.matches('[')",
    ],
)
def test_filter_that_cannot_be_evaluated_does_not_match(source: str) -> None:
    expr = compile_expression(source)
    assert expr.matches({"event": EVENT}) is False
    assert expr.key({"event": EVENT}) is None
    assert expr.number({"event": EVENT}) is None


@pytest.mark.parametrize("source", ["event.data.amount", "1", "'true'", "[true]"])
def test_filter_needs_exactly_boolean_true(source: str) -> None:
    assert compile_expression(source).matches({"event": EVENT}) is False


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("event.data.missing > 1", "no such member"),
        ("event.data.amount / 0", "divide by zero"),
        ("event.data.plan + 1", "column"),
        ("event.data.tags[9]", "cannot evaluate expression 'event.data.tags[9]'"),
    ],
)
def test_evaluation_errors_are_expression_errors(source: str, fragment: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(source).evaluate({"event": EVENT})
    assert fragment in str(info.value)
    assert "Activation(" not in str(info.value)


def test_missing_variable_and_bad_activation() -> None:
    expr = compile_expression("async.x == 1", variables=("event", "async"))
    with pytest.raises(ExpressionError, match="variable 'async' was not provided"):
        expr.evaluate({"event": {}})
    assert expr.matches({"event": {}}) is False
    with pytest.raises(ExpressionError, match="must be a mapping"):
        expr.evaluate(["event"])  # type: ignore[arg-type]
    # Unused variables need not be provided.
    assert compile_expression("1 + 1", variables=("event", "async")).evaluate({}) == 2


def test_syntax_error_names_expression_and_position() -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression("event.data.x >", what="trigger")
    message = str(info.value)
    assert message.startswith("invalid expression for trigger 'event.data.x >': ")
    assert "syntax error at column 14" in message
    assert "end of expression" in message
    with pytest.raises(ExpressionError, match=r"column 12: unexpected character '\$'"):
        compile_expression("event.data $ 1")
    with pytest.raises(ExpressionError, match="line 2, column"):
        compile_expression("event.data.x ==\n == 1")
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("foo.bar == 1", "undeclared variable 'foo' at column 1 (available: event)"),
        ("event.data.x == user.id", "undeclared variable 'user'"),
        ("has(data.x)", "undeclared variable 'data'"),
        ("[1].map(x, y)", "undeclared variable 'y'"),
        ("[1].map(x, x) == x", "undeclared variable 'x'"),  # x only bound inside
        ("sizee(event.data)", "unknown function 'sizee'"),
        ("event.data.s.startswith('a')", "unknown method 'startswith'"),
        ("[1].map(1, 2)", "needs 1 variable name(s)"),
        (".foo(1)", "unsupported syntax"),
    ],
)
def test_static_checks(source: str, fragment: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(source)
    assert fragment in str(info.value)
    assert repr(source) in str(info.value)


def test_comprehension_variables_and_type_names_are_allowed() -> None:
    for source in [
        "[[1]].map(x, x.map(y, x[0] + y))",
        "[1, 2, 3].reduce(r, i, 0, r + i)",
        "type(event) == map && type('') == string",
        "event.data.tags.exists(event, event == 'vip')",  # shadowing
    ]:
        compile_expression(source)


@pytest.mark.parametrize("bad", [None, 42, b"event", ["event"]])
def test_non_string_source(bad: Any) -> None:
    with pytest.raises(ExpressionError, match="expected a string"):
        compile_expression(bad)


@pytest.mark.parametrize("bad", ["", "   ", "\n\t"])
def test_empty_source(bad: str) -> None:
    with pytest.raises(ExpressionError, match="empty"):
        compile_expression(bad, what="if_exp")


def test_too_long_source() -> None:
    ok = "1 + " * ((MAX_SOURCE_LENGTH - 1) // 4 - 1) + "1"
    assert len(ok) <= MAX_SOURCE_LENGTH
    with pytest.raises(ExpressionError, match="too long"):
        compile_expression("event.data.x == 1" + " " * MAX_SOURCE_LENGTH)


def test_nesting_limit() -> None:
    limit = sys.getrecursionlimit()
    assert limit >= 2500  # the floor celpy (and this module) sets
    with pytest.raises(ExpressionError, match="nested too deeply"):
        compile_expression("(" * 100 + "1" + ")" * 100)
    shapes: dict[str, Callable[[int], str]] = {
        "parens": lambda n: "(" * n + "event.data.amount" + ")" * n + " > 1",
        "calls": lambda n: "string(" * n + "event.data.amount" + ")" * n + " != ''",
        "nots": lambda n: "!" * (2 * n) + "(event.data.amount > 1)",
        "ors": lambda n: " || ".join(["event.data.amount == 150"] * n),
        "macros": lambda n: "size(" + "[1].map(x, " * n + "x" + ")" * n + ") == 1",
    }
    for name, make in shapes.items():
        deepest = None
        for n in range(1, 300):
            try:
                deepest = compile_expression(make(n))
            except ExpressionError:
                break
        assert deepest is not None, name
        # The deepest accepted expression of each shape still evaluates.
        assert deepest.matches({"event": EVENT}), name
    assert sys.getrecursionlimit() == limit


def test_invalid_variable_names() -> None:
    for bad in ["", "1x", "in", "true", "a-b"]:
        with pytest.raises(ExpressionError, match="invalid variable name"):
            compile_expression("1", variables=("event", bad))


def test_expression_is_frozen_value() -> None:
    a = compile_expression("event.data.x == 1")
    b = Expression("event.data.x == 1", ("event",))
    assert a == b
    assert hash(a) == hash(b)
    assert a.source == "event.data.x == 1"
    assert a.variables == ("event",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.source = "x"  # type: ignore[misc]
    assert "_program" not in repr(a)
    assert compile_expression("1", variables=["event", "async"]).variables == (
        "event",
        "async",
    )


def test_big_ints_are_errors_only_when_used() -> None:
    event = {"data": {"big": 2**64, "neg": -(2**70), "small": 5, "ok": 2**63 - 1}}
    assert compile_expression("event.data.small > 1").matches({"event": event})
    assert compile_expression("event.data.ok").evaluate({"event": event}) == 2**63 - 1
    with pytest.raises(ExpressionError, match="out of the 64-bit range"):
        compile_expression("event.data.big > 1").evaluate({"event": event})
    assert compile_expression("event.data.big").key({"event": event}) is None
    assert compile_expression("event.data").key({"event": event}) is None
    assert compile_expression("event.data.ok + 1").number({"event": event}) is None
    with pytest.raises(ExpressionError, match="unsupported map key"):
        compile_expression("event").evaluate({"event": {2**64: 1}})


def test_unsupported_values() -> None:
    data = {"obj": object(), "x": 1}
    assert compile_expression("event.data.x == 1").matches({"event": {"data": data}})
    with pytest.raises(ExpressionError, match="unsupported value of type object"):
        compile_expression("event.data.obj == 1").evaluate({"event": {"data": data}})
    with pytest.raises(ExpressionError, match="unsupported map key 1.5"):
        compile_expression("event.data.x").evaluate({"event": {"data": data, 1.5: "k"}})
    with pytest.raises(ExpressionError, match="unsupported result"):
        compile_expression("int").evaluate({})


def test_never_calls_eval_or_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("eval/exec must not be called")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    sources = [
        "event.data.amount > 100",
        "event.data.plan == 'pro' ? 120 : 0",
        "has(event.data.x) || event.data.items.exists(i, i.qty > 2)",
        "event.data.email.matches('^a') && size(event.data.tags) == 2",
        "event.data.customer",
        "event.data.missing",
    ]
    for source in sources:
        expr = compile_expression(source, what="trigger")
        expr.matches({"event": EVENT})
        expr.key({"event": EVENT})
        expr.number({"event": EVENT})


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.one_of(
        st.text(max_size=80),
        st.text(
            alphabet="event.data()[]'\"!?:<>=&|+-*/%0123456789 ,{}async_has",
            max_size=60,
        ),
    )
)
def test_arbitrary_source_compiles_or_raises_expression_error(source: str) -> None:
    try:
        expr = compile_expression(source, variables=("event", "async"))
    except ExpressionError:
        return
    assert expr.source == source
    expr.matches({"event": EVENT, "async": EVENT})
    expr.key({"event": EVENT, "async": EVENT})
    expr.number({"event": EVENT, "async": EVENT})
    try:
        expr.evaluate({"event": EVENT, "async": EVENT})
    except ExpressionError:
        pass


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)

HYPO_SOURCES = [
    compile_expression(s)
    for s in [
        "event.data.amount > 100",
        "event.data.x == event.data.y",
        "has(event.data.x) && event.data.x.y == 'a'",
        "event.data.plan == 'pro' ? 120 : event.data.amount",
        "event.data",
        "event.data.x",
        "event.data.x + event.data.y",
        "size(event.data) > 1",
        "event.data.x.startsWith('a')",
        "event.data.x[0]",
        "'x' in event.data",
        "event.data.x * 2.5",
    ]
]


@settings(max_examples=300, deadline=None)
@given(st.one_of(JSON, st.dictionaries(st.sampled_from(["x", "y", "amount", "plan"]), JSON)))
def test_arbitrary_event_data_never_raises(data: Any) -> None:
    for expr in HYPO_SOURCES:
        for event in ({"data": data}, data):
            assert isinstance(expr.matches({"event": event}), bool)
            key = expr.key({"event": event})
            assert key is None or isinstance(key, str)
            number = expr.number({"event": event})
            assert number is None or isinstance(number, float)
            try:
                expr.evaluate({"event": event})
            except ExpressionError:
                pass
