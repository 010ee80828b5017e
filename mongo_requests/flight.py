"""One errand in flight: callers that arrive while it runs wait for how it ended instead of running their own.

The topology checks a lone seed through a pool checkout (its handshake's
``hello`` describes the server).  Callers that start together on a new
client all find the seed undescribed; without a flight each ran a check of
its own: one extra checkout per caller, and a wait in the pool's queue
(10,000 new greenlets, 10,000 extra checkouts).  With a :class:`Flight`
the first caller *takes off* and runs the check; the others *board*: they
wait, cooperatively and each bounded by its own deadline, for it to
*land*, and get the outcome the leader landed with.  What an outcome means
is the user's business (the topology's ``_check_seed``); the flight only
guarantees:

* at most one caller leads at a time, and it lands exactly once (in a
  ``finally``: a leader that is killed lands :data:`ABORTED`);
* a landing wakes every caller that boarded before it; none is lost (a
  boarder queues under the same hold of the lock that found the flight
  aloft, and the landing settles every queued waiter under that lock);
* a boarder whose deadline passes, or that is killed (``GreenletExit``,
  ``gevent.Timeout``) while waiting, leaves the queue before it returns or
  raises: the flight keeps no reference to it.  This matters because a
  greenlet reuses one waiter for all its waits (:func:`~mongo_requests.waiters.greenlet_waiter`):
  a waiter left behind could be settled by a late landing while it waits
  for a pool slot;
* in a forked child, a flight whose leader was another thread (which does
  not exist there) is grounded, and the boarders that live on (greenlets of
  the forking thread) are woken with :data:`ABORTED`; a leader that lives on
  (a greenlet of the forking thread) keeps its flight and lands it.

The waiters are the pool's (:mod:`mongo_requests.waiters`, made by the
caller's identity): a lock for a thread, a switch to the hub for a
greenlet, with the flight's lock as their settle lock, so a landing and a
boarder giving up are settled exactly as a slot hand-off and a timeout are
in the pool's queue.
"""

from __future__ import annotations

import collections
import os
import time
import weakref
from collections.abc import Callable
from typing import Any

from .originals import _get_ident, real_lock

__all__ = ["ABORTED", "TAKE_OFF", "TIMED_OUT", "Flight", "TryLock"]

#: :meth:`Flight.board`: nothing was in flight; the caller runs the errand and must :meth:`Flight.land`.
TAKE_OFF = "take-off"
#: :meth:`Flight.board`: the caller's deadline passed before the flight landed.
TIMED_OUT = "timed out"
#: A landing without an outcome: the leader was killed, or it was lost to a fork.
ABORTED = "aborted"


class Flight:
    """At most one errand in flight; callers that arrive meanwhile wait for its outcome."""

    __slots__ = ("_lock", "_aloft", "_leader_thread", "_boarded", "__weakref__")

    def __init__(self) -> None:
        self._lock = real_lock()  # held for a few attribute updates only, never while waiting
        self._aloft = False
        self._leader_thread = 0  # the OS thread of the leader (a greenlet's thread): see _after_fork
        self._boarded: collections.deque[Any] = collections.deque()
        _all_flights.add(self)

    @property
    def waiting(self) -> int:
        """How many callers wait for the flight in the air (0 when none is)."""
        return len(self._boarded)

    @property
    def aloft(self) -> bool:
        """True while a leader runs the errand."""
        return self._aloft

    def board(self, waiter: Callable[[Any], Any], deadline: float) -> Any:
        """Take off, or wait until the flight in the air lands, at most until ``deadline`` (monotonic).

        ``waiter`` is the caller's identity's ``waiter`` (it gets the
        flight's lock as its settle lock).  Returns :data:`TAKE_OFF` when
        nothing was in flight: the caller is the leader, runs the errand and
        calls :meth:`land` in a ``finally``.  Otherwise the outcome the
        leader landed with (or :data:`ABORTED`), or :data:`TIMED_OUT`.
        """
        lock = self._lock
        lock.acquire()
        try:
            if not self._aloft:
                self._aloft = True
                self._leader_thread = _get_ident()
                return TAKE_OFF
            w = waiter(lock)
            self._boarded.append(w)
        finally:
            lock.release()
        try:
            landed, outcome = w.wait(max(deadline - time.monotonic(), 0.0))
        except BaseException:
            # Killed while waiting (or a gevent.Timeout): leave the queue, landed or not.
            w.abandon()
            self._leave(w)
            raise
        if not landed:
            self._leave(w)
            return TIMED_OUT
        return outcome

    def land(self, outcome: Any) -> None:
        """End the flight (the leader, once): every boarder wakes with ``outcome``; the next caller takes off."""
        lock = self._lock
        lock.acquire()
        try:
            self._aloft = False
            boarded, self._boarded = self._boarded, collections.deque()
            # Settled under the hold that empties the queue (a waiter's settle lock is this lock);
            # one that gave up meanwhile is skipped.  Woken after the release.
            woken = [w for w in boarded if w.take(outcome)]
        finally:
            lock.release()
        for w in woken:
            w._wake()

    def _leave(self, w: Any) -> None:
        """A boarder that gave up leaves the queue (a landing may have emptied it already)."""
        with self._lock:
            try:
                self._boarded.remove(w)
            except ValueError:
                pass

    def _after_fork(self) -> None:
        """In a forked child: only the forking thread lives on; ground a flight led by any other."""
        self._lock = lock = real_lock()  # the parent's may have been held by a thread that is gone
        here = _get_ident()
        boarded = [w for w in self._boarded if w.survives_fork()]
        self._boarded = collections.deque()
        for w in boarded:
            w._settle = lock
        if self._aloft and self._leader_thread == here:
            self._boarded.extend(boarded)  # its leader is a greenlet of this thread: it will land
            return
        self._aloft = False
        for w in boarded:
            if w.take(ABORTED):
                w._wake()


class TryLock:
    """A lock only ever tried (``acquire(False)``) that knows the OS thread holding it, for a forked child to judge."""

    __slots__ = ("_lock", "owner")

    def __init__(self) -> None:
        self._lock = real_lock()
        self.owner = 0  # the holder's OS thread (a greenlet's thread), or 0

    def acquire(self, blocking: bool = True) -> bool:
        got: bool = self._lock.acquire(blocking)
        if got:
            self.owner = _get_ident()
        return got

    def release(self) -> None:
        self.owner = 0
        self._lock.release()


# Every flight, so a forked child can ground those whose leader did not survive.
_all_flights: weakref.WeakSet[Flight] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for flight in list(_all_flights):
        flight._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
