"""Events to and from plain ``(type, version, payload)`` triples, with upcasting.

An upcaster turns the payload of ``(type, v)`` into the shape of ``(type, v + 1)``; decoding
chains them up to the class's current version, so old ledgers load without being rewritten.
"""

from __future__ import annotations

import dataclasses
import types
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


def _field_types(cls: type[Event]) -> dict[str, tuple[tuple[type, ...], str]]:
    """For each field whose annotation is a plain type (``int``, ``float | None``, ``dict``,
    ``tuple[...]``): the Python types a decoded value may have, and the annotation's text.
    Fields with any other annotation are left out, and not checked."""
    plain = {str: (str,), int: (int,), float: (int, float), bool: (bool,), dict: (dict,)}
    plain |= {tuple: (tuple,), type(None): (type(None),)}
    found = {}
    for name, hint in typing.get_type_hints(cls).items():
        parts = typing.get_args(hint) if typing.get_origin(hint) in (types.UnionType,) else ()
        accepted: list[type] = []
        for part in parts or (hint,):
            base = typing.get_origin(part) or part
            if base not in plain:
                break
            accepted.extend(plain[base])
        else:
            text = hint.__name__ if isinstance(hint, type) else str(hint)
            found[name] = (tuple(accepted), text.replace("typing.", ""))
    return found


_FIELDS = {
    name: tuple(f.name for f in dataclasses.fields(cls)) for name, cls in EVENT_TYPES.items()
}
_TUPLES = {name: _tuple_fields(cls) for name, cls in EVENT_TYPES.items()}
_TYPES = {name: _field_types(cls) for name, cls in EVENT_TYPES.items()}


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
    _check_types(type_name, version, payload)
    try:
        return cls(**payload)
    except TypeError as exc:
        raise InvalidEvent(f"{type_name} v{version}: payload does not fit ({exc})") from exc


def _check_types(type_name: str, version: int, payload: Payload) -> None:
    """Refuse a payload value of the wrong JSON type (a score stored as text): the fold and
    every view trust an event's fields to be what its class says. Only what JSON cannot
    tell apart is let through: an integral number where an int belongs, any number where a
    float does."""
    for key, (accepted, annotation) in _TYPES[type_name].items():
        if key not in payload:
            continue  # a missing field is the dataclass's to report
        value = payload[key]
        if isinstance(value, bool):
            ok = bool in accepted
        elif isinstance(value, float) and int in accepted and float not in accepted:
            ok = value.is_integer()
        else:
            ok = isinstance(value, accepted)
        if not ok:
            raise InvalidEvent(f"{type_name} v{version}: {key} must be {annotation}, got {value!r}")
