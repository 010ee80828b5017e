"""How a caller waits for a pool slot: the waiters of the pool's FIFO queue.

A waiter carries the wait-queue hand-off protocol (``set``, ``fail``,
``wait``, ``abandon``: see :class:`_Waiter`), so the pool's queue has one
place that settles who gets a slot.  :class:`_ThreadWaiter` sleeps on a
lock; :class:`_GreenletWaiter` switches to its hub, and its hub's
:class:`_HubWakeups` carries wake-ups from other threads.  The identities
(:mod:`mongo_requests.identity`) make them: ``identity.waiter()``.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from .originals import _allocate_lock, _get_ident, _original


class _Waiter:
    """One caller queued for a pool slot: ``set()``, ``fail()`` and ``wait()`` settle the race.

    Exactly one outcome wins, under the settle lock (the pool's lock): a
    releaser hands over a slot (``set``), the pool fails the waiter
    (``fail``, on close), or the waiter gives up (its timeout expires, or it
    is killed).  ``set`` and ``fail`` return False when the waiter already
    gave up, so the releaser passes the slot to the next waiter instead; a
    waiter killed just after being handed a slot learns so from ``wait`` and
    passes it on.  This is psycopg_pool's ``WaitingClient`` protocol.
    Subclasses supply the wake-up primitive that suits the caller
    (``_sleep``/``_wake``).

    The pool's releasers settle a hand-off with :meth:`take` under the hold
    of the pool's lock that popped the waiter, and call ``_wake()`` after
    releasing it (:mod:`mongo_requests.pool_queue`).
    """

    __slots__ = ("_settle", "_outcome", "sock", "error")

    _PENDING, _SET, _FAILED, _GAVE_UP = 0, 1, 2, 3

    def __init__(self, settle_lock: Any) -> None:
        self._settle = settle_lock
        self._outcome = self._PENDING
        self.sock: Any = None
        self.error: BaseException | None = None

    def _settle_as(self, outcome: int) -> bool:
        """Move from pending to ``outcome``; False if something else won first."""
        with self._settle:
            if self._outcome != self._PENDING:
                return False
            self._outcome = outcome
            return True

    def set(self, sock: Any) -> bool:
        """Hand the waiter a slot (and ``sock``, or None to connect); False if it gave up."""
        with self._settle:
            if not self.take(sock):
                return False
        self._wake()
        return True

    def take(self, sock: Any) -> bool:
        """:meth:`set` with the settle lock already held (the pool's releasers hold it); no wake-up.

        False if the waiter gave up.  The caller wakes it with ``_wake()``
        once the lock is released (``Pool.checkin`` inlines this).
        """
        if self._outcome != self._PENDING:
            return False
        self._outcome = self._SET
        self.sock = sock
        return True

    def fail(self, error: BaseException) -> bool:
        """Wake the waiter with ``error`` (it holds no slot); False if it gave up."""
        with self._settle:
            if self._outcome != self._PENDING:
                return False
            self._outcome = self._FAILED
            self.error = error
        self._wake()
        return True

    def wait(self, timeout: float | None) -> tuple[bool, Any]:
        """Wait for the outcome: ``(True, sock)`` with a slot, ``(False, None)`` on timeout.

        Raises the ``fail()`` error.  If the wait itself is interrupted (a
        kill, a ``gevent.Timeout``), the caller must call :meth:`abandon`.
        """
        woken = self._sleep(timeout)
        if not woken and self._settle_as(self._GAVE_UP):
            return False, None
        # Woken, or lost the race to set()/fail() just as the timeout expired.
        if self._outcome == self._FAILED:
            raise self.error  # type: ignore[misc]
        return True, self.sock

    def abandon(self) -> tuple[bool, Any]:
        """The waiter was interrupted: give up, or report the slot it was handed.

        Returns ``(True, sock)`` when a slot had already been handed over (the
        caller must pass it on), else ``(False, None)``.
        """
        if self._settle_as(self._GAVE_UP):
            return False, None
        return (self._outcome == self._SET), self.sock

    def survives_fork(self) -> bool:
        """In a forked child: is the waiting caller still there?  Only the forking thread lives on."""
        return False  # a thread that waits cannot be the one that forks

    def _sleep(self, timeout: float | None) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def _wake(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class _ThreadWaiter(_Waiter):
    """A waiter for threads: a lock taken at birth, released by the wake-up.

    ``_sleep`` acquires it again (blocking until ``_wake`` releases it, or
    the timeout).  Plain locks may be released by another thread, which is
    all a hand-off needs.
    """

    __slots__ = ("_lock",)

    def __init__(self, lock_factory: Callable[[], Any], settle_lock: Any) -> None:
        super().__init__(settle_lock)
        self._lock = lock_factory()
        self._lock.acquire()

    def _sleep(self, timeout: float | None) -> bool:
        if timeout is None:
            return bool(self._lock.acquire())
        return bool(self._lock.acquire(True, max(timeout, 0.0)))

    def _wake(self) -> None:
        self._lock.release()


class _HubWakeups:
    """A hub's one async watcher for its sleeping waiters, shared by all of them.

    It is started while any waiter of the hub sleeps (``sleepers`` counts
    them; ``_GreenletWaiter._sleep`` starts and stops it), and stopped, not
    closed, after: a waker in another thread may still call ``send()``,
    which is harmless on a stopped watcher.  It does two jobs:

    - it keeps the hub's loop running, so a greenlet alone in its thread
      (mixed mode, or real threads with ``use_greenlets=True``) waits for a
      wake-up from another thread instead of getting ``LoopExit``;
    - another thread wakes a waiter by queueing it in ``pending`` and calling
      ``send()`` (the one loop call that is safe from any thread); the
      callback then resumes every queued waiter in the hub.

    One watcher per hub instead of one per wait: making, starting and
    stopping a watcher cost ~2,600 instructions, paid on every checkout of a
    saturated pool, while a hub with thousands of waiters keeps this one
    started throughout.
    """

    __slots__ = ("hub", "watcher", "sleepers", "pending")

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.watcher = hub.loop.async_()
        self.sleepers = 0
        self.pending: collections.deque[_GreenletWaiter] = collections.deque()

    def _drain(self) -> None:
        """Watcher callback, in the hub: resume the waiters other threads woke."""
        pending = self.pending
        while pending:
            pending.popleft()._resume()


# Each thread's hub's _HubWakeups (one hub per thread), in a real thread-local.
_wakeups = _original("_thread", "_local")()

# gevent's get_hub and greenlet's getcurrent, set by use_gevent() (from the
# greenlet identity): importing this module must not import gevent.
_get_hub: Callable[[], Any] | None = None
_getcurrent: Callable[[], Any] | None = None


def use_gevent(get_hub: Callable[[], Any], getcurrent: Callable[[], Any]) -> None:
    """Give :class:`_GreenletWaiter` gevent's ``get_hub`` and greenlet's ``getcurrent``."""
    global _get_hub, _getcurrent
    _get_hub, _getcurrent = get_hub, getcurrent


def _hub_wakeups(hub: Any) -> _HubWakeups:
    """The calling thread's hub's :class:`_HubWakeups` (a new one for a new hub, as after a fork)."""
    wakeups: _HubWakeups | None = getattr(_wakeups, "current", None)
    if wakeups is None or wakeups.hub is not hub:
        wakeups = _wakeups.current = _HubWakeups(hub)
    return wakeups


class _GreenletWaiter(_Waiter):
    """A waiter for greenlets: the waiting greenlet switches to its hub, and the wake-up switches back.

    The identity hands out :func:`greenlet_waiter` as ``waiter``: each
    greenlet keeps one waiter, made on its first wait in its hub and reset
    for every wait after (a greenlet waits for one slot at a time).  The
    bare hub protocol that ``gevent.queue`` uses, rather than a
    ``gevent.lock.Semaphore``: a wait is one switch out and one back, with
    no link list to build and walk (benchmarks/README.md's scaling section
    measures what that saves per wait).  A releaser in the waiter's thread
    schedules a plain callback, which runs before the loop next polls; one
    in another thread goes through the hub's :class:`_HubWakeups`.

    ``_resume`` switches only while the waiter is still sleeping, and the
    sleep loops until the outcome is settled or the timer expired, so a
    wake-up that arrives late (after a timeout, a kill, or even in a later
    wait of the same waiter) is dropped, and never switches into the
    greenlet while it is busy elsewhere.

    Every saturated checkout sleeps on and wakes one of these, so the base
    class's ``_sleep`` is inlined into ``wait``.
    """

    __slots__ = ("_hub", "_thread", "_glet", "_wakeups", "_expired")

    def __init__(self) -> None:
        """Wait in the calling greenlet's hub.  Made by :func:`greenlet_waiter`, which sets the per-wait state."""
        hub = self._hub = _get_hub()  # type: ignore[misc]  # the waiting greenlet's hub: its thread's
        self._thread = _get_ident()
        # The waiting greenlet while it sleeps, else None.  Not kept otherwise: the greenlet keeps
        # its waiter (greenlet_waiter), and a reference back would make a cycle.
        self._glet: Any = None
        # _hub_wakeups(hub), inline.
        wakeups: _HubWakeups | None = getattr(_wakeups, "current", None)
        if wakeups is None or wakeups.hub is not hub:
            wakeups = _hub_wakeups(hub)
        self._wakeups = wakeups

    def wait(self, timeout: float | None) -> tuple[bool, Any]:
        """:meth:`_Waiter.wait`, with the sleep inline."""
        hub = self._hub
        wakeups = self._wakeups
        # wakeups.enter(), inline.
        if not wakeups.sleepers:
            wakeups.watcher.start(wakeups._drain)
        wakeups.sleepers += 1
        timer = None
        if timeout is not None:
            timer = hub.loop.timer(max(timeout, 0.0))
            # update=True: count from now, not from the loop's cached time,
            # which is stale when this greenlet ran a while (gevent.Timeout does the same).
            timer.start(self._expire, update=True)
        # Published before the outcome is read: a waker in another thread
        # settles the outcome and then queues us, so one of us sees the other.
        self._glet = _getcurrent()  # type: ignore[misc]
        try:
            # Only _resume switches back here; the loop guards against
            # anything else that might switch into a sleeping greenlet.
            while self._outcome == 0 and not self._expired:  # _PENDING
                hub.switch()
        finally:
            self._glet = None
            # wakeups.leave(), inline.
            wakeups.sleepers -= 1
            if not wakeups.sleepers:
                wakeups.watcher.stop()  # stopped, not closed: see _HubWakeups
            if timer is not None:
                timer.close()
        outcome = self._outcome
        if outcome == 1:  # _SET: the common case
            return True, self.sock
        if outcome == 0 and self._settle_as(self._GAVE_UP):
            return False, None
        # Failed, or lost the race to set()/fail() just as the timeout expired.
        if self._outcome == 2:  # _FAILED
            raise self.error  # type: ignore[misc]
        return True, self.sock

    def survives_fork(self) -> bool:
        """A greenlet of the forking thread lives on in the child (its thread keeps its ident there)."""
        return self._thread == _get_ident()

    def _expire(self) -> None:
        """Timer callback, in the waiter's hub: the timeout is up."""
        self._expired = True
        self._resume()

    def _resume(self) -> None:
        """Callback in the waiter's hub: switch to the waiter if it is still sleeping."""
        glet = self._glet
        if glet is not None:
            glet.switch()

    def _wake(self) -> None:
        if _get_ident() == self._thread:
            self._hub.loop.run_callback(self._resume)
            return
        # Another thread: queue the waiter for its hub's watcher.  If it has
        # not slept yet it sees its outcome first, and the queued entry is a no-op.
        wakeups = self._wakeups
        wakeups.pending.append(self)
        wakeups.watcher.send()


# The attribute of a greenlet that keeps its waiter (see greenlet_waiter).
_WAITER = "_mongo_requests_waiter"


def greenlet_waiter(settle_lock: Any = None) -> _GreenletWaiter:
    """The calling greenlet's waiter, reset for one more wait (made on its first, or in a new hub).

    Making and freeing a waiter per wait cost ~5,000 instructions, on every
    checkout of a saturated pool; resetting one costs a fifth of that, and a
    parked greenlet holds one object fewer for the garbage collector.  Safe
    because a greenlet waits for one slot at a time, and a waiter is out of
    every pool's queue once its wait returns: a wake-up from an earlier wait
    that comes late is dropped by ``wait``'s loop (see :class:`_GreenletWaiter`).
    """
    glet = _getcurrent()  # type: ignore[misc]
    waiter: _GreenletWaiter | None = getattr(glet, _WAITER, None)
    if waiter is None or waiter._hub is not _get_hub():  # type: ignore[misc]
        waiter = _GreenletWaiter()
        setattr(glet, _WAITER, waiter)
    # The per-wait state (_Waiter.__init__'s, and the timer's flag), for a new waiter or a reused one.
    waiter._settle = _allocate_lock() if settle_lock is None else settle_lock
    waiter._outcome = 0  # _PENDING
    waiter.sock = None
    waiter.error = None
    waiter._expired = False
    return waiter
