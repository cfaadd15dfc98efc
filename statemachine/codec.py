"""Events to and from plain ``(type, version, payload)`` triples, with upcasting.

An upcaster turns the payload of ``(type, v)`` into the shape of ``(type, v + 1)``; decoding
chains them up to the class's current version, so old ledgers load without being rewritten.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any

from statemachine.errors import InvalidEvent
from statemachine.events import EVENT_TYPES, Event

__all__ = ["UPCASTERS", "decode", "encode"]

Payload = dict[str, Any]

#: ``(type name, from version) -> function(payload) -> payload of version + 1``.
UPCASTERS: dict[tuple[str, int], Callable[[Payload], Payload]] = {}


def _tuple_fields(cls: type[Event]) -> frozenset[str]:
    hints = typing.get_type_hints(cls)
    return frozenset(
        f.name for f in dataclasses.fields(cls) if typing.get_origin(hints[f.name]) is tuple
    )


_FIELDS = {
    name: tuple(f.name for f in dataclasses.fields(cls)) for name, cls in EVENT_TYPES.items()
}
_TUPLES = {name: _tuple_fields(cls) for name, cls in EVENT_TYPES.items()}


def encode(event: Event) -> tuple[str, int, Payload]:
    name = type(event).__name__
    if EVENT_TYPES.get(name) is not type(event):
        raise InvalidEvent(f"{name} is not a registered event type")
    payload = {}
    for key in _FIELDS[name]:
        value = getattr(event, key)
        payload[key] = list(value) if key in _TUPLES[name] else value
    return name, type(event).version, payload


def decode(type_name: str, version: int, payload: Payload) -> Event:
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        raise InvalidEvent(f"unknown event type {type_name!r}")
    if version > cls.version:
        raise InvalidEvent(
            f"{type_name} v{version} is newer than this SIA understands (v{cls.version})"
        )
    while version < cls.version:
        upcast = UPCASTERS.get((type_name, version))
        if upcast is None:
            raise InvalidEvent(f"no upcaster for {type_name} v{version}")
        payload = upcast(payload)
        version += 1
    tuples = _TUPLES[type_name]
    if tuples:
        payload = {k: tuple(v) if k in tuples else v for k, v in payload.items()}
    try:
        return cls(**payload)
    except TypeError as exc:
        raise InvalidEvent(f"{type_name} v{version}: payload does not fit ({exc})") from exc
