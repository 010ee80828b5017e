"""The pool's wait queue: a FIFO of callers waiting for a slot, and how a slot reaches them.

:class:`~mongo_requests.pool.Pool` inherits :class:`PoolQueue`; the invariants in
:mod:`mongo_requests.pool`'s docstring hold here too.  ``Pool._acquire``
queues a waiter (:mod:`mongo_requests.waiters`) under the same hold of the
lock that found no slot free, and ``Pool.checkin`` (inline) or
:meth:`PoolQueue._release` hands a freed slot to the longest waiter.

Every waiter's settle lock is its pool's lock.  So the releaser settles the
hand-off (``waiter.set()``, inline) under the same hold of the lock that
popped the waiter, and wakes it after releasing the lock; a waiter that gave
up first (its timeout, a kill) is skipped, and the slot moves to the next.
"""

from __future__ import annotations

import collections
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .events import PoolEvents
    from .socket_info import SocketInfo

__all__ = ["PoolQueue"]


class PoolQueue:
    """The wait queue's hand-off, leaving, and its state after a fork, for :class:`~mongo_requests.pool.Pool`."""

    # Set by Pool.__init__; declared here for the type checker only.
    generation: int
    closed: bool
    _lock: Any
    _guard: Any
    _idle: collections.deque[SocketInfo]
    _waiters: collections.deque[Any]
    _in_use: int
    _available: int
    _dead: collections.deque[Any]
    _counters: collections.Counter[str]
    _events: PoolEvents | None

    if TYPE_CHECKING:  # the pool's own, in mongo_requests.pool and pool_lifecycle

        def _close_socket(self, sock: SocketInfo) -> None: ...
        def _reap(self) -> None: ...

    def _interrupted(self, waiter: Any, exc: BaseException) -> None:
        """A wait in the queue ended by ``exc``: leave the queue, passing on a slot handed over meanwhile."""
        if exc is waiter.error:
            return  # failed by close(): the waiter holds no slot
        # Killed (GreenletExit, gevent.Timeout, KeyboardInterrupt) while
        # queued.  If we were handed a slot in the meantime, pass it on.
        held, sock = waiter.abandon()
        self._leave_queue(waiter)
        if held:
            self._release(sock)

    def _leave_queue(self, waiter: Any) -> None:
        """A waiter that gave up leaves the queue (a releaser may have popped it already)."""
        with self._guard:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass

    def _release(self, sock: SocketInfo | None) -> None:
        """Give back one checked-out slot, with the socket it held (None: none to keep).

        A socket that closed itself (an error, an interrupted message) is
        counted here; a stale one, or any after close, is closed.  A waiter,
        if any, gets the slot and the socket directly (FIFO), so a socket
        freed by one caller cannot be snatched by a newcomer while others
        have been waiting.
        """
        if sock is not None:
            if sock.closed:
                self._counters["closed"] += 1
                if self._events is not None:
                    self._events.closing(self, sock, "error")  # type: ignore[arg-type]  # closed by its own error
                sock = None
            elif sock.generation != self.generation or self.closed:
                self._close_socket(sock)
                sock = None
            else:
                sock.last_checkin = time.monotonic()
        lock = self._lock
        while True:
            # The guard by hand, as in _acquire (the hot path).
            lock.acquire()
            if self._waiters:
                waiter = self._waiters.popleft()
                if waiter.take(sock):  # settled under this hold of the lock, woken outside it
                    lock.release()
                    waiter._wake()
                    if self._dead:
                        self._reap()
                    return
                lock.release()  # it gave up: try the next
            else:
                self._in_use -= 1
                if sock is not None:
                    self._idle.append(sock)
                self._available += 1
                lock.release()
                if self._dead:
                    self._reap()
                return

    def _requeue_after_fork(self) -> None:
        """In a forked child, once the slots are reset: the queue keeps only waiters that still exist, served first.

        Only the thread that forked lives on in the child, and only its
        greenlets can still be waiting (a thread that waits cannot fork).
        Nothing of the parent's comes back to wake them, so the child's fresh
        slots go to them, in their order, before any newcomer; the rest wait
        on.  Each keeps the pool's new lock as its settle lock: the parent's
        may have been held by a thread that no longer exists.
        """
        lock = self._lock
        waiters = [w for w in self._waiters if w.survives_fork()]
        self._waiters.clear()
        for waiter in waiters:
            waiter._settle = lock
            if self._available > 0:
                if waiter.take(None):  # with no socket: it connects (one that gave up gets no slot)
                    self._available -= 1
                    self._in_use += 1
                    waiter._wake()
            elif waiter._outcome == waiter._PENDING:
                self._waiters.append(waiter)
