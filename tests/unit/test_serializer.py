"""Fanout(serializer=...): typed outputs stored through the client's serializer."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

import fanout
from fanout.testing import embedded_celery, run_function


@dataclasses.dataclass
class Money:
    cents: int
    currency: str


class TaggedSerializer:
    """Stores a dataclass as its fields plus a tag, and reads it back."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def serialize(self, value: Any, typ: Any) -> Any:
        self.calls.append(f"serialize {typ.__name__}")
        return {"tag": typ.__name__, **dataclasses.asdict(value)}

    def deserialize(self, data: Any, typ: Any) -> Any:
        self.calls.append(f"deserialize {typ.__name__}")
        assert data.pop("tag") == typ.__name__
        return typ(**data)


def test_a_custom_serializer_stores_and_reads_typed_outputs() -> None:
    ser = TaggedSerializer()
    client = fanout.Fanout("ser", celery=embedded_celery(), redis_url="memory://ser",
                           serializer=ser)

    @client.create_function(fn_id="price", trigger=fanout.TriggerEvent(event="ser/price"),
                            output_type=Money)
    def price(ctx: fanout.ContextSync) -> Money:
        m = ctx.step.run("quote", lambda: Money(1250, "EUR"), output_type=Money)
        assert isinstance(m, Money)
        ctx.step.sleep("later", "1m")  # the next pass reads the quote from the memo
        extra = ctx.step.run("fee", lambda: Money(50, "EUR"), output_type=Money)
        return Money(m.cents + extra.cents, m.currency)

    result = run_function(price, fanout.Event(name="ser/price"))
    assert result.status == "completed", result.error
    assert result.step("quote").output == {"tag": "Money", "cents": 1250, "currency": "EUR"}
    assert result.output == {"tag": "Money", "cents": 1300, "currency": "EUR"}
    assert "deserialize Money" in ser.calls and "serialize Money" in ser.calls


def test_a_serializer_without_its_methods_is_refused() -> None:
    with pytest.raises(fanout.ConfigError, match=r"serialize\(value, type\).*PydanticSerializer"):
        fanout.Fanout("ser2", celery=embedded_celery(), redis_url="memory://ser2",
                      serializer=object())


def test_the_default_is_pydantic() -> None:
    s = fanout.PydanticSerializer()
    assert s.deserialize(s.serialize(Money(5, "USD"), Money), Money) == Money(5, "USD")
