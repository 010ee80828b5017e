"""The sockets to one server: cap, wait queue, checkout/checkin, request pins.

:class:`Pool` is assembled from this module's slot rules (checkout, checkin,
connect, fork) and mixins: the wait queue's hand-off in
:mod:`mongo_requests.pool_queue`, a caller's request record in
:mod:`mongo_requests.pool_requests`, dead callers, resets and close in
:mod:`mongo_requests.pool_lifecycle`, and the statistics in
:mod:`mongo_requests.pool_report`.

Invariants (every method of the three keeps them; the tests check them
against the server's own connection count):

* open sockets = idle + checked out + pinned, and never more than
  ``max_size``.  Each open socket holds one *slot*; ``_available`` counts the
  slots nobody holds.
* A pinned socket is never in the idle deque.
* Every slot taken is released exactly once, kills and timeouts included:
  every path that takes one gives it back in a ``finally`` or an
  ``except BaseException``.  A waiter either gets a slot (``set``), is failed
  holding none (``fail``, on close), or gives up; the pool's lock settles
  which (:mod:`mongo_requests.waiters`), so a slot handed to a waiter that
  gave up moves on.
* Connect and close happen outside the lock; the lock guards only a few
  attribute updates, so it is a real ``_thread`` lock even under gevent
  (nothing ever waits on it for long, and it never yields to the hub).
* Stale sockets (an older ``generation``, or one opened before a fork) are
  never handed out to a new owner, and never go back to the idle deque.
* The request guarantee: a request's pinned socket is never replaced behind
  its owner's back.  A pool reset (a network error elsewhere, ``reset()``)
  leaves a healthy pinned socket with its request, which closes it when it
  ends; ``close()`` leaves it to finish its operation in flight.  It is
  replaced only after its owner has seen an error from it, or after a fork
  (the child has sent nothing on it, so nothing of the child's is lost).
* A socket with unread pipelined replies (:mod:`mongo_requests.pipeline`)
  never reaches another owner: the request's end reads them first, and a
  dead or killed caller's socket is closed (``Pipeline.abandon``, no I/O).
* The pool never decides what an error means: the topology's
  ``handle_error`` does, and calls :meth:`Pool.reset`.

The request state machine is drawn in :class:`~mongo_requests.pool_state.RequestState`.
How the death of a caller is reported, without blocking on the lock, is in
:mod:`mongo_requests.pool_lifecycle`.
"""

from __future__ import annotations

import collections
import os
import time
import weakref
from typing import TYPE_CHECKING, Any

from .identity import (
    CALLS,
    GreenletIdentity,
    ThreadIdentity,
    choose_identity,
    gevent_patched,
    notify_when_threading_patched,
    real_lock,
    real_poll,
)
from .pipeline import Pipeline, w0_acknowledged
from .pool_lifecycle import PoolLifecycle, _closed_error
from .pool_queue import PoolQueue
from .pool_report import PoolReport
from .pool_requests import PoolRequests
from .pool_state import PoolOptions, RequestState, _Request
from .socket_info import SocketInfo

if TYPE_CHECKING:
    from .events import PoolEvents

__all__ = ["Pool", "PoolOptions", "RequestState"]

# Idle sockets older than this get an aliveness check before reuse.  A
# fresh one is almost never dead, and the check costs a system call.
_CHECK_IDLE_AFTER = 1.0
_monotonic = time.monotonic  # for the hot path: one global read, not a module attribute
_NO_HUB = object()  # Pool._home_hub before any socket was made


class _Guard:
    """``with pool._guard:`` — the pool lock, reaping dead callers on the way out.

    A death callback that finds the lock busy only queues its record; this
    exit is where the holder keeps the promise to reap it.  Every section
    that takes the lock goes through a guard (or, on the hot path of
    _acquire/_release, does the same by hand), so no queued record waits for
    a later operation.
    """

    __slots__ = ("lock", "pool")

    def __init__(self, lock: Any, pool: Pool) -> None:
        self.lock = lock
        self.pool = pool

    def __enter__(self) -> None:
        self.lock.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.lock.release()
        if self.pool._dead:
            self.pool._reap()


# Every pool, so a forked child can reset them all (see _after_fork).
_all_pools: weakref.WeakSet[Pool] = weakref.WeakSet()
# This process's pid, refreshed in a forked child by the at-fork hook, so the
# per-checkout pid check costs a global read instead of a getpid() syscall.
_pid = os.getpid()


class Pool(PoolQueue, PoolRequests, PoolLifecycle, PoolReport):
    """A capped pool of :class:`SocketInfo` to one server, request-aware.

    :param address: ``(host, port)``.
    :param options: a :class:`PoolOptions`.
    :param use_greenlets: True or False fixes the caller identity; None (auto)
        uses greenlets when gevent has patched ``threading``, and decides
        again when it patches later or the process forks.
    :param events: the client's pool listeners (:mod:`mongo_requests.events`),
        or None.  With listeners the topology makes an
        :class:`~mongo_requests.events.MonitoredPool`, which publishes around
        :meth:`_acquire` and :meth:`checkin`; so without them the hot path
        has no event code at all, and the rarer transitions below check
        ``_events``.
    """

    # Class-level, not per pool: the unpatched select.poll for the liveness check.  CPython 3.11
    # keeps an instance's attributes in its class's shared-key table only up to about 30 names (29
    # here do, 30 do not); past that every attribute read in checkout and checkin loses its
    # specialization (~1,200 instructions per find_one).  tests/test_hot_path.py counts them.
    _poll = real_poll()

    def __init__(
        self,
        address: tuple[str, int],
        options: PoolOptions | None = None,
        use_greenlets: bool | None = None,
        events: PoolEvents | None = None,
    ) -> None:
        self.address = address
        self.opts = options or PoolOptions()
        self._auto_identity = use_greenlets is None
        self._set_identity(choose_identity(use_greenlets))
        if self._auto_identity:
            notify_when_threading_patched(self)
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
        self._counters: collections.Counter[str] = collections.Counter()
        # The hot paths' counters are int attributes, not Counter items (~1,400 instructions
        # less per increment); get_stats() reports them (_INT_COUNTERS in pool_report).
        self._checkouts = 0
        self._requests_started = self._requests_ended = self._pins = self._waits = 0
        # Set (never cleared) before any caller's first request record (at once with auto_start_request):
        # until then checkout skips looking for the caller's record.
        self._requests_seen = self.opts.auto_start_request
        _all_pools.add(self)
        self._events = events
        if events is not None:
            events.pool_created(address, self.opts)

    # -- identity -----------------------------------------------------------
    def _set_identity(self, identity: ThreadIdentity | GreenletIdentity) -> None:
        """Adopt a caller identity: its storage, socket module and re-homing."""
        self.identity = identity
        self._rehome = identity.rehome
        # Greenlets: the hub whose thread made (or re-homed) every socket of
        # this pool, so checkout may skip rehome() while it is the caller's
        # hub; _NO_HUB until the first connect, None once a second hub has.
        self._current_hub: Any = identity.current_hub  # None for threads: read only when _rehome is set
        self._home_hub: Any = _NO_HUB
        # What carries the caller's request records (the greenlet, or a
        # thread-local): see identity.calls().  A C callable, read in checkout.
        self._caller = identity.current

    def _threading_patched(self) -> None:
        """gevent just patched ``threading``: auto mode switches to greenlets.

        Sockets made so far are blocking stdlib sockets that would stall the
        hub, and request state belongs to threads that are now greenlets, so
        both are dropped: a reset closes the idle sockets and makes the rest
        stale, and the greenlets' own record stores start with no record of this pool.
        """
        if self.identity.kind == "thread":
            self._set_identity(choose_identity(None))
            self._reset("gevent patched threading")

    # -- checkout / checkin -------------------------------------------------
    def checkout(self) -> SocketInfo:
        """Return a socket for one operation; give it back with :meth:`checkin`.

        Inside a request this is the caller's pinned socket (pinned now if
        the request has none yet).  Otherwise it is an idle socket, or a new
        one, waiting up to ``wait_queue_timeout`` for a free slot.
        """
        if not self._requests_seen:
            # No caller has had a request on this pool (and auto_start_request is off): nothing
            # caller-local to read.  _acquire()'s common case, inline (one call less per operation,
            # ~1,000 instructions): the newest idle socket, fresh enough to skip the liveness poll,
            # nobody queued before us, and (greenlets) made in the caller's hub.  Anything else (a
            # stale socket, a wait, sockets of several hubs) takes _acquire().  Not checked here, as
            # they cannot fail with an idle socket at hand: a free slot (each idle socket is counted
            # in _available), and a fork (the at-fork hook has emptied every pool in the child).
            lock = self._lock
            lock.acquire()
            idle = self._idle
            if (
                idle
                and not self._waiters
                and not self.closed
                and self._events is None  # a MonitoredPool publishes each checkout from _acquire
                and (self._rehome is None or self._home_hub is self._current_hub())
            ):
                sock = idle[-1]
                if (
                    sock.generation == self.generation
                    and not sock.closed
                    and _monotonic() - sock.last_checkin < _CHECK_IDLE_AFTER
                ):
                    idle.pop()
                    self._available -= 1
                    self._in_use += 1
                    lock.release()
                    if self._dead:
                        self._reap()
                    self._checkouts += 1
                    return sock
            lock.release()
            return self._acquire()
        # self._own_record(), inline: the caller's record, one attribute of the greenlet (or thread-local).
        calls = getattr(self._caller(), CALLS, None)
        req = None if calls is None else calls.get(self._self_ref)
        if req is None:
            if not self.opts.auto_start_request:
                return self._acquire()
            req = self._record()
        if req.depth == 0:
            if not self.opts.auto_start_request:
                return self._acquire()
            req.depth = 1
            self._requests_started += 1
        pinned: SocketInfo | None = req.sock
        if pinned is not None:
            # The hot path of a request: no lock, no slot.  An older
            # generation does not matter here (the request guarantee).
            if not pinned.closed and not self.closed:
                return pinned
            # Closed under us: by a fork (the child closed the parent's
            # sockets) or by an error whose checkin never came.  Or the pool
            # is closed: free the socket now; _acquire raises.
            self._drop_pin(req, pinned)
        sock = self._acquire()
        sock.request = req
        req.sock = sock
        # The guard by hand, as in _acquire (once per request: two calls less).
        lock = self._lock
        lock.acquire()
        self._in_use -= 1
        self._pinned.add(sock)
        lock.release()
        if self._dead:
            self._reap()
        self._pins += 1
        if req.pipeline is not None or w0_acknowledged(sock):
            # A pipelining request, or any request on a mongos (its w=0 writes
            # go acknowledged): the pipeline owns the socket's unread replies.
            if req.pipeline is None:
                req.pipeline = Pipeline(False)
            req.pipeline.attach(sock)
        return sock

    def checkout_within(self, timeout: float) -> SocketInfo:
        """A socket for a bounded errand, never pinned: the wait and the connect end within ``timeout``.

        For the topology's reachability check and ``close()``'s killCursors,
        which must not outlast their own deadline.  Give it back with :meth:`checkin`.
        """
        return self._acquire(time.monotonic() + timeout)

    def checkin(self, sock: SocketInfo) -> None:
        """Give back a socket from :meth:`checkout` (pinned ones stay pinned)."""
        if sock.request is None:
            if not sock.closed and sock.generation == self.generation and not self.closed:
                # _release()'s two common cases, inline (one call less per
                # operation): a healthy socket back to the idle list, or, on a
                # saturated pool, to the longest waiter (FIFO).
                sock.last_checkin = _monotonic()
                lock = self._lock
                lock.acquire()
                waiters = self._waiters
                if not waiters:
                    self._in_use -= 1
                    self._idle.append(sock)
                    self._available += 1
                    lock.release()
                    if self._dead:
                        self._reap()
                    return
                waiter = waiters.popleft()
                if waiter._outcome == 0:  # pending
                    # The slot moves to the waiter (in_use unchanged): settled here, under the pool's lock
                    # (every waiter's settle lock), and woken outside it.  waiter.take(sock) inline: one
                    # call less per hand-off of a saturated pool.
                    waiter._outcome = 1  # set
                    waiter.sock = sock
                    lock.release()
                    waiter._wake()
                    if self._dead:
                        self._reap()
                    return
                lock.release()  # it gave up just now: _release passes the socket on
            self._release(sock)
        elif sock.closed:
            # The owner has just seen the error that closed its pinned socket
            # (a network error or an interrupted message): unpin it, but keep
            # the request open, so the next operation pins a fresh socket.
            req = sock.request
            if req.sock is sock:
                req.sock = None
            if sock.pipeline is not None:
                sock.pipeline.abandon()
            if self._unpin(sock):
                if self._events is not None:
                    self._events.checked_in(sock)
                self._release(sock)

    def _drop_pin(self, req: _Request, sock: SocketInfo) -> None:
        """Unpin ``sock`` from ``req`` and close it (the slot, if it still holds one, is freed)."""
        req.sock = None
        if sock.pipeline is not None:
            sock.pipeline.abandon()
        if self._unpin(sock):
            if self._events is not None:
                self._events.checked_in(sock)
            if sock.closed:
                self._release(sock)  # counts it as closed
            else:
                self._close_socket(sock)
                self._release(None)
        else:
            self._close_socket(sock)

    def _acquire(self, deadline: float | None = None) -> SocketInfo:
        """Take a slot (waiting if needed) and return a usable socket in it."""
        if self.closed:
            raise _closed_error()
        if self.pid != _pid:
            self._after_fork()
        # The guard's protocol copied by hand (lock, then reap after
        # release): the two ``with self._guard`` calls cost ~2,000
        # instructions per operation, 7% of a ping (benchmarks.instructions).
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
            # Queue under the same hold of the lock that found no slot free,
            # so no slot can come free unseen in between (and nothing to re-check).
            try:
                # Its outcome is settled under this lock (never held while settling).
                waiter = self.identity.waiter(lock)
                self._waiters.append(waiter)
                self._waits += 1
            finally:
                lock.release()
            if self._dead:
                self._reap()
            # The wait, inline (it was a method of its own): one call less per wait of a saturated pool.
            timeout = self.opts.wait_queue_timeout
            if deadline is not None:
                left = max(deadline - _monotonic(), 0.0)
                timeout = left if timeout is None else min(timeout, left)
            try:
                handed, sock = waiter.wait(timeout)
            except BaseException as exc:
                self._interrupted(waiter, exc)
                raise
            if not handed:
                self._leave_queue(waiter)
                self._counters["wait_timeouts"] += 1
                raise self._timeout_error(timeout)
        # We hold a slot from here on: any failure must give it back.
        try:
            if self.closed:
                raise _closed_error()
            while sock is not None:
                if (
                    sock.generation == self.generation
                    and not sock.closed
                    and (_monotonic() - sock.last_checkin < _CHECK_IDLE_AFTER or sock.is_alive(self._poll))
                ):
                    if self._rehome is not None and self._home_hub is not self._current_hub():
                        raw = self._rehome(sock.sock)
                        if raw is None:  # a TLS socket of another thread's hub cannot move here
                            self._close_socket(sock)
                            sock = self._pop_idle()
                            continue
                        if raw is not sock.sock:
                            sock.rebind(raw)
                            self._note_hub()
                    self._checkouts += 1
                    return sock
                self._close_socket(sock)
                sock = self._pop_idle()
            sock = self._connect(deadline)
            self._checkouts += 1
            return sock
        except BaseException:
            self._release(sock)
            raise

    def _pop_idle(self) -> SocketInfo | None:
        with self._guard:
            return self._idle.pop() if self._idle else None

    def _unpin(self, sock: SocketInfo) -> bool:
        """Move a pinned socket's slot back to "checked out", ready for _release.

        Returns False when the socket no longer holds a slot (the pool was
        reset by a fork since it was pinned): then there is nothing to release.
        """
        sock.request = None
        # The guard by hand, as in _acquire (once per request: two calls less).
        lock = self._lock
        lock.acquire()
        pinned = sock in self._pinned
        if pinned:
            self._pinned.discard(sock)
            self._in_use += 1
        lock.release()
        if self._dead:
            self._reap()
        return pinned

    def _connect(self, deadline: float | None = None) -> SocketInfo:
        """Open a new socket (outside the lock; the caller holds a slot)."""
        opts = self.opts
        timeout = opts.connect_timeout
        if deadline is not None:
            left = max(deadline - time.monotonic(), 0.001)
            timeout = left if timeout is None else min(timeout, left)
        args = (
            self.address,
            self.identity.socket,
            timeout,
            opts.socket_timeout,
            self.generation,
            opts.metadata,
            opts.setup,
            self.identity.ssl,
        )
        sock = SocketInfo.connect(*args) if self._events is None else self._events.connect(*args)
        if self._rehome is not None:
            self._note_hub()
        self.hello = sock.hello
        self._counters["created"] += 1
        return sock

    def _note_hub(self) -> None:
        """A socket was made or re-homed in the caller's hub (greenlets): keep ``_home_hub`` true.

        Called before the socket can reach the idle list, so a caller that
        reads ``_home_hub`` and then pops a socket never misses its hub.
        """
        hub = self._current_hub()
        with self._guard:
            if self._home_hub is _NO_HUB:
                self._home_hub = hub
            elif self._home_hub is not hub:
                self._home_hub = None  # several hubs: rehome() judges every checkout

    def _close_socket(self, sock: SocketInfo) -> None:
        if not sock.closed:  # count each socket once (a fork closes them early)
            sock.close()
            self._counters["closed"] += 1
            if self._events is not None:
                self._events.closing(self, sock)

    # -- fork ---------------------------------------------------------------
    def _after_fork(self) -> None:
        """In a forked child: forget every socket the parent opened.

        The child closes its copies of the descriptors (that does not
        disturb the parent's connections) and starts a new generation.  A
        request survives: it loses its socket (REQUEST_NO_SOCKET) and pins a
        fresh one on its next operation; that is safe, because the child has
        sent nothing on the inherited one.
        """
        self._lock = real_lock()
        self._guard = _Guard(self._lock, self)
        self.pid = _pid
        self.generation += 1
        self._counters.clear()  # the parent's counts are not the child's
        self._clear_int_counters()
        self.identity.after_fork()
        if self._auto_identity and self.identity.kind != ("greenlet" if gevent_patched("threading") else "thread"):
            # gunicorn patches in the worker, after the fork: decide afresh
            # when the kind of caller changed (and again when the patch event
            # comes).  Otherwise keep the caller-local store, and with it the
            # forking caller's request.
            self._set_identity(choose_identity(None))
        idle, pinned = list(self._idle), list(self._pinned)
        self._idle.clear()
        self._pinned.clear()
        self._dead.clear()
        self._available = self.opts.max_size
        self._in_use = 0
        self._requeue_after_fork()  # the forking thread's queued greenlets get the fresh slots
        for sock in idle + pinned:
            req = sock.request
            if req is not None and req.sock is sock:
                req.sock = None
            sock.request = None
            sock.close()


def _after_fork_in_child() -> None:
    global _pid
    _pid = os.getpid()
    for pool in list(_all_pools):
        pool._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
