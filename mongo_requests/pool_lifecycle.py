"""A pool's lifecycle: sockets of dead callers, resets (generations), close.

:class:`~mongo_requests.pool.Pool` inherits :class:`PoolLifecycle`; the invariants in
:mod:`mongo_requests.pool`'s docstring hold here too.  A fork is :mod:`mongo_requests.pool`'s own
(``Pool._after_fork``): it rebuilds the lock and the slot counts, and refreshes the pid that checkout reads.

Death of a caller is reported by the identity's ``watch`` callback, which may
run at awkward moments (a thread's teardown, a weakref callback during garbage
collection).  So it never blocks on the lock: it queues the record in
``_dead`` and reaps only if it can take the lock at once.  Whoever holds the
lock reaps the queue after releasing it, so no record waits for long.
"""

from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING, Any

from .errors import InvalidOperation

if TYPE_CHECKING:
    from .events import PoolEvents
    from .pool_state import _Request
    from .socket_info import SocketInfo

__all__ = ["PoolLifecycle"]

log = logging.getLogger("mongo_requests")


def _closed_error() -> InvalidOperation:
    return InvalidOperation("Cannot use MongoClient after close")


class PoolLifecycle:
    """Reaping, :meth:`reset` and :meth:`close` for :class:`~mongo_requests.pool.Pool`."""

    # Set by Pool.__init__; declared here for the type checker only.
    address: tuple[str, int]
    generation: int
    closed: bool
    _lock: Any
    _guard: Any
    _idle: collections.deque[SocketInfo]
    _waiters: collections.deque[Any]
    _pinned: set[SocketInfo]
    _in_use: int
    _dead: collections.deque[_Request]
    _counters: collections.Counter[str]
    _events: PoolEvents | None

    if TYPE_CHECKING:  # Pool's slot rules, in mongo_requests.pool

        def _release(self, sock: SocketInfo | None) -> None: ...
        def _close_socket(self, sock: SocketInfo) -> None: ...

    # -- dead callers -------------------------------------------------------
    def _caller_died(self, req: _Request) -> None:
        """Death callback: queue the record, reap now if the lock is free."""
        if req.depth == 0 and req.sock is None:
            return
        self._dead.append(req)
        self._reap()

    def _reap(self) -> None:
        """Return the sockets of dead callers (never blocks on the lock)."""
        while self._dead:
            if not self._lock.acquire(False):
                return  # the holder reaps when it releases (see _Guard)
            socks = []
            pipelines = []
            try:
                while self._dead:
                    req = self._dead.popleft()
                    sock, req.sock, req.depth = req.sock, None, 0
                    if sock is not None and sock in self._pinned:
                        self._pinned.discard(sock)
                        sock.request = None
                        socks.append(sock)
                    if req.pipeline is not None:
                        pipelines.append(req.pipeline)
                        req.pipeline = None
                self._in_use += len(socks)  # pinned -> checked out, for _release
            finally:
                self._lock.release()
            for pipeline in pipelines:
                # Unread replies must not reach the socket's next owner: abandon()
                # closes the socket then (no I/O; outside the lock, as it may
                # call command listeners), before _release sees it.
                pipeline.abandon()
            self._counters["reclaimed"] += len(socks)
            for sock in socks:
                if self._events is not None:
                    self._events.checked_in(sock)
                self._release(sock)
            # Loop: a record queued while we held the lock found it busy.

    # -- generation, close --------------------------------------------------
    def _reset(self, why: str) -> None:
        """Bump the generation and close idle sockets: they are suspect now."""
        with self._guard:
            self.generation += 1
            idle = list(self._idle)
            self._idle.clear()
            self._counters["resets"] += 1
        log.info("pool %s:%d reset (%s)", self.address[0], self.address[1], why)
        if self._events is not None:
            self._events.pool_cleared(self.address)
        for sock in idle:
            self._close_socket(sock)

    def reset(self, why: str = "reset requested") -> None:
        """Discard every socket: idle ones now, checked-out ones when given back.

        A socket pinned by a request stays with it while it is healthy (a
        ``w=0`` write may still be queued on it), and is closed when the
        request ends.  The topology's error handler calls this.
        """
        self._reset(why)

    def close(self) -> None:
        """Close the pool: idle sockets now, others when their users are done.

        An operation in flight on another caller's socket completes; the
        socket is closed when it is given back, or, if pinned, when its
        request ends, its owner dies, or its owner calls again (and gets
        :class:`~pymongo.errors.InvalidOperation`).  Callers queued for a
        slot are woken with InvalidOperation.
        """
        with self._guard:
            self.closed = True
            self.generation += 1
            idle = list(self._idle)
            self._idle.clear()
            waiters = list(self._waiters)
            self._waiters.clear()
        for sock in idle:
            self._close_socket(sock)
        for waiter in waiters:
            waiter.fail(_closed_error())
        if self._events is not None:
            self._events.pool_closed(self.address)
