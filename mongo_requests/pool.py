"""The sockets to one server: cap, wait queue, checkout/checkin, request pins.

Invariants (every method below keeps them; the tests check them against the
server's own connection count):

* open sockets = idle + checked out + pinned, and never more than
  ``max_size``.  Each open socket holds one *slot*; ``_available`` counts the
  slots nobody holds.
* A pinned socket is never in the idle deque.
* Every slot taken is released exactly once, kills and timeouts included:
  every path that takes one gives it back in a ``finally`` or an
  ``except BaseException``.
* Connect and close happen outside the lock; the lock guards only a few
  attribute updates, so it is a real ``_thread`` lock even under gevent
  (nothing ever waits on it for long, and it never yields to the hub).
* Stale sockets (an older ``generation``, or one opened before a fork) are
  never handed out.

The request state machine, per caller and per pool (``_Request``)::

    NO_REQUEST --start_request / auto--> REQUEST_NO_SOCKET
    REQUEST_NO_SOCKET --checkout--> PINNED  (the socket keeps its slot)
    PINNED --checkout--> PINNED              (same socket; no lock, no slot)
    PINNED --network error--> REQUEST_NO_SOCKET (socket closed, slot freed)
    any --outermost end_request / caller dies--> NO_REQUEST (socket to idle)

Death of a caller is reported by the identity's ``watch`` callback, which may
run at awkward moments (a thread's teardown, a weakref callback during garbage
collection).  So it never blocks on the lock: it queues the record in
``_dead`` and reaps only if it can take the lock at once.  Whoever holds the
lock reaps the queue after releasing it, so no record waits for long.
"""
from __future__ import annotations

import collections
import enum
import logging
import os
import time
import weakref
from typing import Any, Callable, Mapping

from .errors import InvalidOperation, PoolTimeoutError
from .identity import choose_identity, notify_when_threading_patched, real_lock, real_poll
from .socket_info import CLOSED_ERROR, CLOSED_POOL, CLOSED_STALE, SocketInfo

__all__ = ["Pool", "PoolOptions", "RequestState"]

log = logging.getLogger("mongo_requests")

# Idle sockets older than this get an aliveness check before reuse.  A
# fresh one is almost never dead, and the check costs a system call.
_CHECK_IDLE_AFTER = 1.0


class RequestState(enum.Enum):
    """Where one caller stands with one pool."""

    NO_REQUEST = 0
    REQUEST_NO_SOCKET = 1
    PINNED = 2


_NO_REQUEST = RequestState.NO_REQUEST
_NO_SOCKET = RequestState.REQUEST_NO_SOCKET
_PINNED = RequestState.PINNED


class PoolOptions:
    """Immutable settings of a pool."""

    __slots__ = (
        "max_size",
        "connect_timeout",
        "socket_timeout",
        "wait_queue_timeout",
        "auto_start_request",
        "metadata",
        "setup",
    )

    def __init__(
        self,
        max_size: int = 100,
        connect_timeout: float | None = 20.0,
        socket_timeout: float | None = None,
        wait_queue_timeout: float | None = None,
        auto_start_request: bool = False,
        metadata: Mapping[str, Any] | None = None,
        setup: Any = None,
    ) -> None:
        if not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 1:
            raise ValueError("max_pool_size must be a positive integer, not %r" % (max_size,))
        for name, value in (
            ("connectTimeoutMS", connect_timeout),
            ("socketTimeoutMS", socket_timeout),
            ("waitQueueTimeoutMS", wait_queue_timeout),
        ):
            if value is not None and (not isinstance(value, (int, float)) or value < 0):
                raise ValueError("%s must be a non-negative number or None, not %r" % (name, value))
        set_ = object.__setattr__
        set_(self, "max_size", max_size)
        set_(self, "connect_timeout", connect_timeout)
        set_(self, "socket_timeout", socket_timeout)
        set_(self, "wait_queue_timeout", wait_queue_timeout)
        set_(self, "auto_start_request", bool(auto_start_request))
        set_(self, "metadata", metadata)
        # TLS, credentials, compressors: a mongo_requests.handshake.ConnectionSetup.
        set_(self, "setup", setup)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("PoolOptions is immutable")

    def __repr__(self) -> str:
        fields = ", ".join("%s=%r" % (n, getattr(self, n)) for n in self.__slots__ if n != "metadata")
        return "PoolOptions(%s)" % fields


class _Request:
    """One caller's request with one pool; only its caller mutates it while alive."""

    __slots__ = ("state", "depth", "sock", "__weakref__")

    def __init__(self) -> None:
        self.state = _NO_REQUEST
        self.depth = 0
        self.sock: SocketInfo | None = None


class _Guard:
    """``with pool._guard:`` — the pool lock, reaping dead callers on the way out.

    A death callback that finds the lock busy only queues its record; this
    exit is where the holder keeps the promise to reap it.  Every section
    that takes the lock goes through a guard (or, on the hot path, does the
    same by hand), so no queued record waits for a later operation.
    """

    __slots__ = ("lock", "pool")

    def __init__(self, lock: Any, pool: "Pool") -> None:
        self.lock = lock
        self.pool = pool

    def __enter__(self) -> None:
        self.lock.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.lock.release()
        if self.pool._dead:
            self.pool._reap()


def _reaper(pool_ref: "weakref.ref[Pool]", req: _Request) -> Callable[[], None]:
    """Build a death callback that holds the pool only weakly."""

    def on_death() -> None:
        pool = pool_ref()
        if pool is not None:
            pool._caller_died(req)

    return on_death


# Every pool, so a forked child can reset them all (see _after_fork).
_all_pools: "weakref.WeakSet[Pool]" = weakref.WeakSet()
# This process's pid, refreshed in a forked child by the at-fork hook, so the
# per-checkout pid check costs a global read instead of a getpid() syscall.
_pid = os.getpid()


class Pool:
    """A capped pool of :class:`SocketInfo` to one server, request-aware.

    :param address: ``(host, port)``.
    :param options: a :class:`PoolOptions`.
    :param use_greenlets: True or False fixes the caller identity; None (auto)
        uses greenlets when gevent has patched ``threading``, and decides
        again when it patches later or the process forks.
    """

    def __init__(self, address: tuple[str, int], options: PoolOptions | None = None, use_greenlets: bool | None = None) -> None:
        self.address = address
        self.opts = options or PoolOptions()
        self._auto_identity = use_greenlets is None
        self._set_identity(choose_identity(use_greenlets))
        if self._auto_identity:
            notify_when_threading_patched(self)
        self._poll = real_poll()
        self._lock = real_lock()
        self._guard = _Guard(self._lock, self)
        self._idle: collections.deque[SocketInfo] = collections.deque()
        self._available = self.opts.max_size
        self._waiters: collections.deque[Any] = collections.deque()
        self._pinned: set[SocketInfo] = set()
        self._in_use = 0  # checked out and not pinned
        self._dead: collections.deque[_Request] = collections.deque()
        self._self_ref = weakref.ref(self)
        self.generation = 0
        self.pid = _pid
        self.closed = False
        # The server's last hello, from the newest handshake: the topology
        # reads limits and roles from it.
        self.hello: dict[str, Any] | None = None
        self._counters = collections.Counter()
        _all_pools.add(self)

    # -- identity -----------------------------------------------------------
    def _set_identity(self, identity: Any) -> None:
        """Adopt a caller identity: its storage, socket module and re-homing."""
        self.identity = identity
        self._socket_module = identity.socket
        self._rehome = identity.rehome
        # Caller-private storage; the class attribute makes a missing record
        # cost a plain attribute miss instead of an AttributeError.
        self._local = type("_RequestLocal", (identity.local_base(),), {"req": None})()

    def _threading_patched(self) -> None:
        """gevent just patched ``threading``: auto mode switches to greenlets.

        Sockets made so far are blocking stdlib sockets that would stall the
        hub, and request state belongs to threads that are now greenlets, so
        both are dropped: a reset closes the idle sockets and makes the rest
        stale, and a fresh caller-local store starts empty.
        """
        if self.identity.kind == "thread":
            self._set_identity(choose_identity(None))
            self._reset("gevent patched threading")

    # -- requests -----------------------------------------------------------
    def _record(self) -> _Request:
        """The caller's request record, created (and watched) on first use."""
        req = self._local.req
        if req is None:
            req = _Request()
            self._local.req = req
            # Watched once per caller and pool, for the caller's whole life:
            # a caller that starts and ends many requests registers one vigil.
            self.identity.watch(_reaper(self._self_ref, req))
        return req

    def start_request(self) -> None:
        """Begin (or nest) a request for the calling thread or greenlet."""
        req = self._record()
        req.depth += 1
        if req.depth == 1:
            req.state = _NO_SOCKET
            self._counters["requests_started"] += 1

    def end_request(self) -> None:
        """End one level of request; the outermost end unpins the socket."""
        req = self._local.req
        if req is None or req.depth == 0:
            return
        req.depth -= 1
        if req.depth:
            return
        sock = req.sock
        req.sock = None
        req.state = _NO_REQUEST
        self._counters["requests_ended"] += 1
        if sock is not None and self._unpin(sock):
            self._release(sock)

    def in_request(self) -> bool:
        """True when the caller is inside a request with this pool."""
        req = self._local.req
        return req is not None and req.depth > 0

    def request_state(self) -> RequestState:
        """The caller's :class:`RequestState` with this pool."""
        req = self._local.req
        return _NO_REQUEST if req is None else req.state

    def pinned_socket(self) -> SocketInfo | None:
        """The socket pinned to the caller, if any (for diagnostics and tests)."""
        req = self._local.req
        return None if req is None else req.sock

    # -- checkout / checkin -------------------------------------------------
    def checkout(self) -> SocketInfo:
        """Return a socket for one operation; give it back with :meth:`checkin`.

        Inside a request this is the caller's pinned socket (pinned now if
        the request has none yet).  Otherwise it is an idle socket, or a new
        one, waiting up to ``wait_queue_timeout`` for a free slot.
        """
        req = self._local.req
        if req is None:
            if not self.opts.auto_start_request:
                return self._acquire()
            req = self._record()
        if req.depth == 0:
            if not self.opts.auto_start_request:
                return self._acquire()
            req.depth = 1
            req.state = _NO_SOCKET
            self._counters["requests_started"] += 1
        sock = req.sock
        if sock is not None:
            if sock.generation == self.generation and not sock.closed:
                return sock  # the hot path of a request: no lock, no slot
            # Stale (the pool was reset, or we forked): drop it and pin anew.
            # Until the new pin succeeds the request has no socket, and must
            # say so if _acquire below fails (wait-queue timeout, server down).
            req.sock = None
            req.state = _NO_SOCKET
            if self._unpin(sock):
                self._release(None)
            self._close_socket(sock, CLOSED_STALE)
        sock = self._acquire()
        sock.request = req
        req.sock = sock
        req.state = _PINNED
        with self._guard:
            self._in_use -= 1
            self._pinned.add(sock)
        self._counters["pins"] += 1
        return sock

    def checkin(self, sock: SocketInfo) -> None:
        """Give back a socket from :meth:`checkout` (pinned ones stay pinned)."""
        if sock.request is None:
            self._release(None if sock.closed else sock, sock)
        elif sock.closed:
            # A network error or an interrupted message on a pinned socket:
            # unpin it, but leave the request open, so the next operation
            # pins a fresh socket.
            req = sock.request
            if req.sock is sock:
                req.sock = None
                if req.depth:
                    req.state = _NO_SOCKET
            if self._unpin(sock):
                self._release(None, sock)

    def _acquire(self) -> SocketInfo:
        """Take a slot (waiting if needed) and return a usable socket in it."""
        if self.closed:
            raise InvalidOperation("Cannot use MongoClient after close")
        if self.pid != _pid:
            self._after_fork()
        lock = self._lock
        lock.acquire()
        if self._available > 0 and not self._waiters:
            self._available -= 1
            self._in_use += 1
            sock = self._idle.pop() if self._idle else None
            lock.release()
            if self._dead:
                self._reap()
        else:
            lock.release()
            sock = self._wait_for_slot()
        # We hold a slot from here on: any failure must give it back.
        try:
            if self.closed:
                raise InvalidOperation("Cannot use MongoClient after close")
            while sock is not None:
                if (
                    sock.generation == self.generation
                    and not sock.closed
                    and (time.monotonic() - sock.last_checkin < _CHECK_IDLE_AFTER or sock.is_alive(self._poll))
                ):
                    if self._rehome is not None:
                        raw = self._rehome(sock.sock)
                        if raw is not sock.sock:
                            sock.rebind(raw)
                    self._counters["checkouts"] += 1
                    return sock
                self._close_socket(sock, CLOSED_STALE)
                sock = self._pop_idle()
            sock = self._connect()
            self._counters["checkouts"] += 1
            return sock
        except BaseException:
            self._release(sock if sock is not None and not sock.closed else None)
            raise

    def _pop_idle(self) -> SocketInfo | None:
        with self._guard:
            return self._idle.pop() if self._idle else None

    def _wait_for_slot(self) -> SocketInfo | None:
        """Queue for a slot (FIFO); returns the handed-over idle socket or None."""
        waiter = self.identity.waiter()
        timeout = self.opts.wait_queue_timeout
        with self._guard:
            # Re-check: a slot may have come free since we looked.
            if self._available > 0 and not self._waiters:
                self._available -= 1
                self._in_use += 1
                return self._idle.pop() if self._idle else None
            self._waiters.append(waiter)
            self._counters["waits"] += 1
        try:
            woken = waiter.wait(timeout)
        except BaseException:
            # Killed (GreenletExit, gevent.Timeout, KeyboardInterrupt) while
            # queued.  If we were handed a slot in the meantime, pass it on.
            self._abandon(waiter)
            raise
        if not woken:
            with self._guard:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    woken = True  # handed a slot just as we timed out: keep it
                else:
                    self._counters["wait_timeouts"] += 1
            if not woken:
                raise self._timeout_error(timeout)
        return waiter.sock

    def _abandon(self, waiter: Any) -> None:
        """A waiter gave up: leave the queue, or pass on the slot it was handed."""
        with self._guard:
            try:
                self._waiters.remove(waiter)
                return
            except ValueError:
                pass
        self._release(waiter.sock)

    def _timeout_error(self, timeout: float | None) -> PoolTimeoutError:
        with self._guard:
            pinned, in_use, waiting = len(self._pinned), self._in_use, len(self._waiters)
        max_size = self.opts.max_size
        msg = (
            "Timed out after %.3fs waiting for a socket to %s:%d: all %d sockets are busy "
            "(%d checked out, %d pinned by requests, %d other callers waiting)."
            % (timeout or 0.0, self.address[0], self.address[1], max_size, in_use, pinned, waiting)
        )
        if pinned:
            msg += (
                " Each thread or greenlet in a request keeps its socket until end_request() or its "
                "death; use auto_start_request=False, end requests sooner, or raise max_pool_size."
            )
        return PoolTimeoutError(msg, pinned=pinned, in_use=in_use, max_size=max_size)

    def _release(self, sock: SocketInfo | None, closing: SocketInfo | None = None) -> None:
        """Give back one checked-out slot, with ``sock`` to reuse (or None).

        A waiter, if any, gets the slot and the socket directly (FIFO), so
        a socket freed by one caller cannot be snatched by a newcomer while
        others have been waiting.  ``closing`` is a dead socket to count; a
        non-timeout network error on it resets the pool.
        """
        if closing is not None and closing is not sock:
            if closing.close_reason == CLOSED_ERROR and closing.generation == self.generation:
                self._reset("network error on %r" % (closing,))
            self._counters["closed"] += 1
        if sock is not None:
            if sock.generation != self.generation or self.closed:
                self._close_socket(sock, CLOSED_STALE)
                sock = None
            else:
                sock.last_checkin = time.monotonic()
        lock = self._lock
        lock.acquire()
        if self._waiters:
            waiter = self._waiters.popleft()
            waiter.sock = sock  # the slot moves to the waiter: in_use unchanged
            lock.release()
            waiter.notify()
        else:
            self._in_use -= 1
            if sock is not None:
                self._idle.append(sock)
            self._available += 1
            lock.release()
        if self._dead:
            self._reap()

    def _unpin(self, sock: SocketInfo) -> bool:
        """Move a pinned socket's slot back to "checked out", ready for _release.

        Returns False when the socket no longer holds a slot (the pool was
        reset by a fork since it was pinned): then there is nothing to release.
        """
        sock.request = None
        with self._guard:
            if sock not in self._pinned:
                return False
            self._pinned.discard(sock)
            self._in_use += 1
            return True

    def _connect(self) -> SocketInfo:
        """Open a new socket (outside the lock; the caller holds a slot)."""
        opts = self.opts
        sock = SocketInfo.connect(
            self.address,
            self._socket_module,
            opts.connect_timeout,
            opts.socket_timeout,
            self.generation,
            opts.metadata,
            opts.setup,
            self.identity.ssl,
        )
        self.hello = sock.hello
        self._counters["created"] += 1
        return sock

    def _close_socket(self, sock: SocketInfo, reason: str) -> None:
        if not sock.closed:  # count each socket once (a fork closes them early)
            sock.close(reason)
            self._counters["closed"] += 1

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
            try:
                while self._dead:
                    req = self._dead.popleft()
                    sock, req.sock, req.depth, req.state = req.sock, None, 0, _NO_REQUEST
                    if sock is not None and sock in self._pinned:
                        self._pinned.discard(sock)
                        sock.request = None
                        socks.append(sock)
                self._in_use += len(socks)  # pinned -> checked out, for _release
            finally:
                self._lock.release()
            self._counters["reclaimed"] += len(socks)
            for sock in socks:
                self._release(None if sock.closed else sock, sock)
            # Loop: a record queued while we held the lock found it busy.

    # -- generation, fork, close --------------------------------------------
    def _reset(self, why: str) -> None:
        """Bump the generation and close idle sockets: they are suspect now."""
        with self._guard:
            self.generation += 1
            idle = list(self._idle)
            self._idle.clear()
            self._counters["resets"] += 1
        log.info("pool %s:%d reset (%s)", self.address[0], self.address[1], why)
        for sock in idle:
            self._close_socket(sock, CLOSED_STALE)

    def reset(self) -> None:
        """Discard every socket: idle ones now, busy and pinned ones on their next use."""
        self._reset("reset requested")

    def _after_fork(self) -> None:
        """In a forked child: forget every socket the parent opened.

        The child closes its copies of the descriptors (that does not
        disturb the parent's connections) and starts a new generation, so
        a socket pinned before the fork is replaced on its next use.
        """
        self._lock = real_lock()
        self._guard = _Guard(self._lock, self)
        self.pid = _pid
        self.generation += 1
        self._counters.clear()  # the parent's counts are not the child's
        self.identity.after_fork()
        if self._auto_identity:
            # gunicorn patches in the worker, after the fork: decide afresh
            # now, and again when the patch event comes.
            self._set_identity(choose_identity(None))
        idle, pinned = list(self._idle), list(self._pinned)
        self._idle.clear()
        self._pinned.clear()
        self._waiters.clear()
        self._dead.clear()
        self._available = self.opts.max_size
        self._in_use = 0
        for sock in idle + pinned:
            sock.request = None
            sock.close(CLOSED_STALE)

    def close(self) -> None:
        """Close the pool: idle sockets now, others when given back.

        Sockets pinned to other callers are shut down (their owner may be
        using the descriptor this instant) and closed on next use or death.
        """
        with self._guard:
            self.closed = True
            self.generation += 1
            idle = list(self._idle)
            self._idle.clear()
            pinned = list(self._pinned)
            # Wake every waiter as if handed a slot: each finds the pool
            # closed and gives the slot back through _release.
            waiters = list(self._waiters)
            self._waiters.clear()
            self._in_use += len(waiters)
            self._available -= len(waiters)
        for sock in idle:
            self._close_socket(sock, CLOSED_POOL)
        for sock in pinned:
            sock.shutdown()
        for waiter in waiters:
            waiter.notify()

    # -- observability ------------------------------------------------------
    def get_stats(self) -> dict[str, int]:
        """Counters since the last :meth:`pop_stats`, plus the current gauges."""
        with self._guard:
            stats = dict(self._counters)
            stats.update(
                idle=len(self._idle),
                in_use=self._in_use,
                pinned=len(self._pinned),
                waiting=len(self._waiters),
                open=len(self._idle) + self._in_use + len(self._pinned),
                max_size=self.opts.max_size,
                generation=self.generation,
            )
        return stats

    def pop_stats(self) -> dict[str, int]:
        """Return :meth:`get_stats` and reset the counters (gauges stay)."""
        stats = self.get_stats()
        with self._guard:
            self._counters.clear()
        return stats

    def __repr__(self) -> str:
        return "<Pool %s:%d idle=%d in_use=%d pinned=%d waiting=%d>" % (
            self.address[0],
            self.address[1],
            len(self._idle),
            self._in_use,
            len(self._pinned),
            len(self._waiters),
        )


def _after_fork_in_child() -> None:
    global _pid
    _pid = os.getpid()
    for pool in list(_all_pools):
        pool._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
