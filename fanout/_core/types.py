"""``output_type=``: typed step and function outputs (pydantic models in and out).

A step, an invoke or a function declared with ``output_type`` stores its output as
JSON through a pydantic ``TypeAdapter`` and hands it back as that type, fresh or
replayed from the memo.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .._errors import ConfigError, NonRetriableError

Codec = tuple[Callable[[Any], Any], Callable[[Any], Any]]


def _same(value: Any) -> Any:
    return value


IDENTITY: Codec = (_same, _same)


@functools.lru_cache(maxsize=256)
def _adapter(output_type: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(output_type)


class PydanticSerializer:
    """The default serializer of typed outputs: pydantic's ``TypeAdapter`` (models,
    dataclasses, typing annotations). Pass another object with the same two methods
    as ``Fanout(serializer=...)`` to store typed outputs your own way."""

    def serialize(self, value: Any, typ: Any) -> Any:
        """``value`` as JSON-ready data (dicts, lists, strings, numbers, None)."""
        return _adapter_for(typ).dump_python(value, mode="json")

    def deserialize(self, value: Any, typ: Any) -> Any:
        """JSON data back as ``typ``."""
        return _adapter_for(typ).validate_python(value)


def _adapter_for(typ: Any) -> Any:
    try:
        return _adapter(typ)
    except TypeError:  # an unhashable annotation
        from pydantic import TypeAdapter

        return TypeAdapter(typ)


def check_serializer(serializer: Any) -> Any:
    """``Fanout(serializer=)``: an object with ``serialize`` and ``deserialize``."""
    if serializer is None:
        return None
    if not (callable(getattr(serializer, "serialize", None))
            and callable(getattr(serializer, "deserialize", None))):
        raise ConfigError(
            f"serializer={serializer!r} needs serialize(value, type) and "
            "deserialize(data, type) methods, like fanout.PydanticSerializer()"
        )
    return serializer


def output_codec(output_type: Any, what: str, serializer: Any = None) -> Codec:
    """(dump, load) for ``output_type``: dump to JSON-ready data, load back to the type
    (through ``serializer`` when given, else pydantic)."""
    if output_type is None:
        return IDENTITY
    if serializer is not None and not isinstance(serializer, PydanticSerializer):
        return _custom_codec(serializer, output_type, what)
    try:
        adapter = _adapter(output_type)
    except TypeError:  # an unhashable annotation: build it each time
        from pydantic import TypeAdapter

        adapter = TypeAdapter(output_type)
    except Exception as exc:  # noqa: BLE001 - pydantic's schema errors
        raise ConfigError(
            f"{what}: output_type={output_type!r} is not a type pydantic can validate "
            f"({type(exc).__name__}: {exc}); pass a pydantic model, a dataclass or a typing "
            "annotation such as list[MyModel]"
        ) from None
    name = getattr(output_type, "__name__", repr(output_type))

    def dump(value: Any) -> Any:
        try:
            return adapter.dump_python(value, mode="json")
        except Exception as exc:  # noqa: BLE001
            raise NonRetriableError(
                f"{what} returned {type(value).__name__}, which does not fit "
                f"output_type={name}: {exc}"
            ) from None

    def load(value: Any) -> Any:
        try:
            return adapter.validate_python(value)
        except Exception as exc:  # noqa: BLE001
            raise NonRetriableError(
                f"{what}: the stored output does not validate as output_type={name} "
                f"(did the type change under a running run?): {exc}"
            ) from None

    return dump, load


def _custom_codec(serializer: Any, output_type: Any, what: str) -> Codec:
    name = getattr(output_type, "__name__", repr(output_type))

    def dump(value: Any) -> Any:
        try:
            return serializer.serialize(value, output_type)
        except Exception as exc:  # noqa: BLE001
            raise NonRetriableError(
                f"{what}: the serializer could not store {type(value).__name__} as "
                f"output_type={name}: {type(exc).__name__}: {exc}") from None

    def load(value: Any) -> Any:
        try:
            return serializer.deserialize(value, output_type)
        except Exception as exc:  # noqa: BLE001
            raise NonRetriableError(
                f"{what}: the serializer could not read the stored output as "
                f"output_type={name}: {type(exc).__name__}: {exc}") from None

    return dump, load


def dumping(handler: Callable[..., Any], dump: Callable[[Any], Any]) -> Callable[..., Any]:
    """``handler`` whose result (awaited, for a coroutine) goes through ``dump``."""
    if dump is _same:
        return handler
    import inspect

    from .engine import is_async_handler

    if is_async_handler(handler):

        async def run_async(*args: Any) -> Any:
            return dump(await handler(*args))

        return run_async

    def run(*args: Any) -> Any:
        value = handler(*args)
        if inspect.isawaitable(value):

            async def later() -> Any:
                return dump(await value)

            return later()
        return dump(value)

    return run
