"""New ObjectIds for inserted documents, at a third of what ``ObjectId()`` costs.

An inserted document without an ``_id`` gets a new
:class:`~bson.objectid.ObjectId`, as in PyMongo.  ``ObjectId()`` takes a lock,
asks ``os.getpid()`` (to notice a fork), reads the clock and packs three
fields, in Python: about 12,000 instructions, more than bson's C encoder
spends on the small document it goes into.  An ``insert_many`` of small
documents spent nearly half its client time there.  An id made here costs
about 4,000, most of it creating and freeing the object and its bytes.

The ObjectId specification asks for four bytes of seconds since the epoch,
five random bytes unique to the process, and a three-byte counter that
starts at a random value.  This module keeps its own random value and
counter.  They are not bson's, which are private: bson's random value with
our own counter could repeat an id that ``ObjectId()`` made.  The counter is
an ``itertools.count``, whose ``next`` is atomic, so threads never share a
value.  Both are drawn again when the pid changes, checked once per
:func:`stamp` and :func:`new`, as bson checks it on every id:
``os.register_at_fork`` alone would miss a child forked from C without
Python's fork hooks (uWSGI's workers, by default).

:func:`stamp` reads the clock once for many ids (``Bulk.add_inserts``), with
the counter's value then.  A stamp serves at most :data:`STAMP_SPAN` counter
values, then the clock is read again.  Ids repeat only when two of them have
the same second and the same counter value modulo 2**24; a stamp read within
one second of another, each serving fewer than 2**23 values from where the
counter stood at its reading, cannot, unless the process draws 2**23 ids in
that second (``ObjectId()`` repeats at 2**24 in one second).  So a long
``insert_many``, or one fed slowly by a generator while other threads
insert, never repeats an id.

An id is made without ``__init__``, its one slot set directly (:func:`make`,
and inline in ``Bulk.add_inserts``).  That slot is private to bson, so
:data:`PRIVATE` checks at import that an id made so equals
``ObjectId(its bytes)``; without it, ids come from ``ObjectId()`` (tests run
both).
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

from bson.objectid import ObjectId

__all__ = ["PRIVATE", "COUNTER_MASK", "STAMP_SPAN", "stamp", "counter", "make", "new"]

COUNTER_MASK = 0xFFFFFF  # the counter's three bytes
STAMP_SPAN = 1 << 23  # counter values one clock reading may serve (see the module's docstring)
_TIME_MASK = 0xFFFFFFFF  # the clock's four bytes (they wrap in 2106, as bson's do)
_new = object.__new__

_random = 0  # the five random bytes, shifted past the counter
_counter: itertools.count[int] = itertools.count()
_pid = -1  # the process they were drawn for


def _seed() -> None:
    """Draw the process's random value and the counter's start (at import, and in a forked child)."""
    global _random, _counter, _pid
    _random = int.from_bytes(os.urandom(5), "big") << 24
    _counter = itertools.count(int.from_bytes(os.urandom(3), "big"))
    _pid = os.getpid()


_seed()


def stamp() -> tuple[int, int]:
    """``(value, at)``: an id's value with the clock read now and a counter of 0, and the counter then.

    Add ``next(counter()) & COUNTER_MASK`` to the value, for counter values up
    to ``at + STAMP_SPAN``; then take a new stamp.
    """
    if os.getpid() != _pid:
        _seed()
    at = next(_counter)  # spent: a counter value need only never repeat
    return (int(time.time()) & _TIME_MASK) << 64 | _random, at


def counter() -> itertools.count[int]:
    """The process's counter (a new one after a fork: fetch it again with each stamp)."""
    return _counter


def make(value: int) -> Any:
    """The ObjectId of a 12-byte value from :func:`stamp` and the counter, made without ``__init__``."""
    oid: Any = _new(ObjectId)
    oid._ObjectId__id = value.to_bytes(12, "big")
    return oid


def _private_ok() -> bool:
    """True when ObjectId's one slot is the one :func:`make` sets, and an id made so equals the class's own."""
    if getattr(ObjectId, "__slots__", None) != ("__id",):
        return False
    try:
        value = stamp()[0] | 0x123456
        mine, theirs = make(value), ObjectId(value.to_bytes(12, "big"))
        return bool(
            mine == theirs
            and hash(mine) == hash(theirs)
            and mine.binary == theirs.binary
            and str(mine) == str(theirs)
            and mine.generation_time == theirs.generation_time
        )
    except Exception:
        return False


# Ids made without __init__ (tests turn it off to run the fallback, ObjectId()).
PRIVATE = _private_ok()


def new() -> Any:
    """A new ObjectId (``ObjectId()`` without the private path)."""
    if not PRIVATE:
        return ObjectId()
    if os.getpid() != _pid:
        _seed()
    oid: Any = _new(ObjectId)
    oid._ObjectId__id = ((int(time.time()) & _TIME_MASK) << 64 | _random | next(_counter) & COUNTER_MASK).to_bytes(
        12, "big"
    )
    return oid
