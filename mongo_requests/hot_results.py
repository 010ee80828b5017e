"""``pymongo.results`` objects for the hot path, made without their Python constructors.

``UpdateResult(reply, True)`` runs two Python ``__init__`` methods (its own,
then ``_WriteResult``'s through ``super()``), called from C: about 3,000
client instructions, 5% of an ``update_one``.  The object is only three
slots, so :func:`new_update_result` makes it and fills them directly.

Those slots are private to PyMongo (``_UpdateResult__raw_result`` and
friends), so this path is taken only if, at import, every slot of the class
is one we know how to fill and an object made this way reads back exactly
like one from the public constructor.  Otherwise (another PyMongo) the
public constructor is used; the tests run both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pymongo.results import UpdateResult

__all__ = ["new_update_result", "public_update_result", "private_update_result"]


def public_update_result(raw_result: dict[str, Any]) -> UpdateResult:
    """An acknowledged ``UpdateResult``, through PyMongo's constructor."""
    return UpdateResult(raw_result, True)


def _slot_setters() -> dict[str, Any] | None:
    """The ``__set__`` of each slot of UpdateResult and its bases, by unmangled name; None if not all slots."""
    setters: dict[str, Any] = {}
    for cls in UpdateResult.__mro__:
        slots = cls.__dict__.get("__slots__", ())
        if cls is object:
            continue
        if "__slots__" not in cls.__dict__ or isinstance(slots, str):
            return None  # a class with a __dict__, or one slot spelled as a string: not the layout we know
        for slot in slots:
            name = slot.lstrip("_")
            descriptor = cls.__dict__.get("_%s%s" % (cls.__name__.lstrip("_"), slot) if slot.startswith("__") else slot)
            if descriptor is None or not hasattr(descriptor, "__set__"):
                return None
            setters[name] = descriptor.__set__
    return setters


def _make_private() -> Callable[[dict[str, Any]], UpdateResult] | None:
    """The slot-filling maker, if this PyMongo's UpdateResult has the layout it expects (checked), else None."""
    setters = _slot_setters()
    if setters is None or set(setters) - {"raw_result", "acknowledged", "in_client_bulk"}:
        return None
    if "raw_result" not in setters or "acknowledged" not in setters:
        return None
    new = UpdateResult.__new__
    set_raw = setters["raw_result"]
    set_ack = setters["acknowledged"]
    set_bulk = setters.get("in_client_bulk")

    def private_update_result(raw_result: dict[str, Any]) -> UpdateResult:
        result = new(UpdateResult)
        set_raw(result, raw_result)
        set_ack(result, True)
        if set_bulk is not None:
            set_bulk(result, False)
        return result

    samples = (
        {"n": 1, "nModified": 1, "ok": 1.0, "updatedExisting": True},
        {"n": 1, "nModified": 0, "upserted": 7, "ok": 1.0, "updatedExisting": False},
        {"n": 0, "nModified": 0, "ok": 1.0, "updatedExisting": False},
    )
    for raw in samples:
        a, b = private_update_result(dict(raw)), public_update_result(dict(raw))
        try:
            same = _reading(a) == _reading(b)
        except Exception:
            same = False
        if not same:
            return None
    return private_update_result


def _reading(result: UpdateResult) -> tuple[Any, ...]:
    """What a caller can read from an UpdateResult."""
    return (
        result.raw_result,
        result.acknowledged,
        result.matched_count,
        result.modified_count,
        result.upserted_id,
        repr(result),
    )


private_update_result = _make_private()

#: ``UpdateResult(raw_result, True)``, the cheapest way this PyMongo allows.
new_update_result: Callable[[dict[str, Any]], UpdateResult] = private_update_result or public_update_result
