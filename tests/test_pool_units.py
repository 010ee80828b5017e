"""The pool's bookkeeping, without a server: the races reached directly.

This is the one place a fake is allowed: the unit under test is the pool's
slot accounting, not server behaviour.  ``Pool._connect`` is overridden to
return a :class:`SocketInfo` over one end of a local ``socketpair`` (no
handshake), as httpcore tests its pool with a mock backend.  Everything about
real sockets and servers is tested in test_pool.py and test_requests.py.

After every scenario the slot invariant is checked: every slot is either
free, checked out or pinned, and idle sockets sit only in free slots.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
from pymongo.errors import InvalidOperation

from helpers import MIXED, PATCHED, UNPATCHED, gc_disabled, wait_until
from mongo_requests import Pool, PoolOptions, PoolTimeoutError, RequestState
from mongo_requests.socket_info import SocketInfo

USE_GREENLETS = True if os.environ.get("MONGO_REQUESTS_TEST_MODE") == "gevent-unpatched" else None


class FakeConnectPool(Pool):
    """A pool whose connect makes a socketpair instead of dialling a server."""

    def __init__(
        self, max_size: int = 1, wait_queue_timeout: float | None = None, use_greenlets: bool | None = USE_GREENLETS
    ) -> None:
        super().__init__(
            ("fake", 1),
            PoolOptions(max_size=max_size, wait_queue_timeout=wait_queue_timeout),
            use_greenlets=use_greenlets,
        )
        self.peers: list = []
        self.connects = 0

    def _connect(self, deadline: float | None = None) -> SocketInfo:
        ours, theirs = self.identity.socket.socketpair()
        self.peers.append(theirs)
        self.connects += 1
        self._counters["created"] += 1
        return SocketInfo(ours, self.address, self.generation)


def check_slots(pool: Pool) -> dict:
    """Assert the slot invariant; return the stats."""
    with pool._guard:
        available, in_use, pinned, idle = pool._available, pool._in_use, len(pool._pinned), len(pool._idle)
    assert available + in_use + pinned == pool.opts.max_size, (available, in_use, pinned)
    assert 0 <= idle <= available, (idle, available)
    return pool.get_stats()


@pytest.fixture
def pools():
    made: list[FakeConnectPool] = []

    def make(**kwargs) -> FakeConnectPool:
        pool = FakeConnectPool(**kwargs)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.close()
        for peer in pool.peers:
            peer.close()


def test_checkout_checkin_reuses_one_socket(pools):
    pool = pools(max_size=2)
    a = pool.checkout()
    pool.checkin(a)
    assert pool.checkout() is a
    pool.checkin(a)
    assert pool.connects == 1
    assert check_slots(pool)["idle"] == 1


def test_a_waiter_that_gave_up_is_skipped_by_the_hand_off(pools):
    # The window: a waiter's timeout expired (it gave up, under its own lock)
    # but it has not left the queue yet.  A releaser that pops it must not
    # lose the slot: set() says no, and the slot goes to the next waiter.
    pool = pools(max_size=1)
    holder = pool.checkout()
    gave_up = pool.identity.waiter()
    assert gave_up.abandon() == (False, None)
    assert gave_up.set(holder) is False
    got: list = []
    t = threading.Thread(target=lambda: got.append(pool.checkout()), daemon=True)
    t.start()
    assert wait_until(lambda: pool.get_stats()["waiting"] == 1, 5)
    with pool._guard:
        pool._waiters.appendleft(gave_up)  # ahead of the live waiter
    pool.checkin(holder)
    t.join(5)
    assert got == [holder]
    stats = check_slots(pool)
    assert stats["in_use"] == 1 and stats["waiting"] == 0
    pool.checkin(holder)
    assert check_slots(pool)["idle"] == 1


def test_waiter_outcomes_are_settled_once():
    pool = FakeConnectPool()
    try:
        w = pool.identity.waiter()
        assert w.set("sock") is True
        assert w.fail(InvalidOperation("x")) is False
        assert w.wait(0) == (True, "sock")  # handed over before the timeout was seen
        w = pool.identity.waiter()
        assert w.set("sock") is True
        assert w.abandon() == (True, "sock")  # killed after the hand-off: must pass it on
        w = pool.identity.waiter()
        assert w.wait(0) == (False, None)  # timed out: gave up
        assert w.set("sock") is False and w.fail(InvalidOperation("x")) is False
        w = pool.identity.waiter()
        err = InvalidOperation("closed")
        assert w.fail(err) is True
        with pytest.raises(InvalidOperation) as info:
            w.wait(0)
        assert info.value is err
    finally:
        pool.close()


@pytest.mark.modes(PATCHED, UNPATCHED)
def test_greenlet_waiter_drops_a_wake_up_that_comes_too_late(pools, mode):
    # A greenlet's wake-up is a callback in its hub.  Handed a slot before it
    # ever slept, the waiter returns at once; the callback still runs later,
    # while the greenlet is busy elsewhere, and must not switch into it.
    pool = pools(max_size=1)
    w = pool.identity.waiter()
    assert w.set("sock") is True
    assert w.wait(None) == (True, "sock")
    t0 = time.monotonic()
    mode.gevent.sleep(0.05)  # the hub runs the stale callback during this sleep
    assert time.monotonic() - t0 >= 0.045  # not cut short by a stray switch


@pytest.mark.modes(PATCHED, UNPATCHED)
def test_a_greenlet_keeps_one_waiter_and_a_late_wake_up_cannot_end_its_next_wait(pools, mode):
    # A greenlet's waiter is reset for each of its waits.  The first wait here
    # ends before its wake-up callback runs; that callback must not end the
    # second wait, which has to run to its timeout.
    pool = pools(max_size=1)
    w = pool.identity.waiter()
    assert w.set("sock") is True
    assert w.wait(None) == (True, "sock")
    again = pool.identity.waiter()
    assert again is w
    t0 = time.monotonic()
    assert again.wait(0.05) == (False, None)  # the stale callback ran in between, and was dropped
    assert time.monotonic() - t0 >= 0.045


@pytest.mark.modes(PATCHED, UNPATCHED)
def test_a_greenlet_that_waited_is_freed_without_the_garbage_collector(pools, mode):
    # The waiter a greenlet keeps must not refer back to it: a cycle would
    # keep every greenlet that ever waited alive until a collection.
    import weakref

    pool = pools(max_size=1)
    holder = pool.checkout()
    got: list = []
    glet = mode.gevent.spawn(lambda: got.append(pool.checkout()))
    assert wait_until(lambda: pool.get_stats()["waiting"] == 1, 5, sleep=mode.gevent.sleep)
    pool.checkin(holder)
    glet.join(5)
    assert got == [holder]
    pool.checkin(holder)
    ref = weakref.ref(glet)
    with gc_disabled():
        del glet
        mode.gevent.sleep(0)  # let the hub drop its own references
        assert ref() is None


@pytest.mark.modes(UNPATCHED, MIXED)
def test_a_greenlet_alone_in_its_thread_is_woken_by_another_thread(pools):
    # A real thread's main greenlet waits for the slot another thread holds.
    # Nothing else runs in its hub, so only the hub's wake-up watcher keeps
    # its loop alive (else: LoopExit), and the release, made in the other
    # thread, must reach it through that watcher.  Twice: the watcher is
    # stopped when its last sleeper wakes, and must start again.
    pool = pools(max_size=1, use_greenlets=True)
    for _ in range(2):
        holder = pool.checkout()
        got: list = []

        def wait_in_another_thread(got: list) -> None:
            try:
                got.append(pool.checkout())
            except BaseException as exc:  # LoopExit is a BaseException subclass in some gevent versions
                got.append(exc)

        t = threading.Thread(target=wait_in_another_thread, args=(got,), daemon=True)
        t.start()
        assert wait_until(lambda: pool.get_stats()["waiting"] == 1, 5)
        assert got == []  # still waiting, not failed
        pool.checkin(holder)
        t.join(5)
        assert got == [holder]
        pool.checkin(holder)
    assert check_slots(pool)["idle"] == 1


class _Killed(BaseException):
    """Stands in for GreenletExit / gevent.Timeout / KeyboardInterrupt."""


def waiter_factory(pool: Pool, wait_hook):
    """The identity's waiters, with ``wait_hook(real_wait, timeout)`` in place of their wait."""
    real_waiter = pool.identity.waiter

    def make(*args):
        w = real_waiter(*args)
        base = type(w)

        class Hooked(base):  # same slots, so the instance can switch class
            __slots__ = ()

            def wait(self, timeout):
                try:
                    return wait_hook(super().wait, timeout)
                finally:
                    # A greenlet keeps its waiter for its next waits: give it back unhooked.
                    self.__class__ = base

        w.__class__ = Hooked
        return w

    return make


def test_kill_racing_the_hand_off_passes_the_slot_on(pools):
    # The waiter is handed the slot, then killed before it returns: it must
    # give the slot (and the socket) back, or the pool shrinks for good.
    pool = pools(max_size=1)
    holder = pool.checkout()

    def hand_off_then_die(wait, timeout):
        threading.Thread(target=pool.checkin, args=(holder,)).start()
        assert wait(5) == (True, holder)  # woken by the hand-off...
        raise _Killed  # ...and killed before returning

    doomed_waiter = waiter_factory(pool, hand_off_then_die)
    pool.identity.waiter = doomed_waiter
    try:
        with pytest.raises(_Killed):
            pool.checkout()
    finally:
        del pool.identity.waiter
    stats = check_slots(pool)
    assert stats["in_use"] == 0 and stats["waiting"] == 0 and stats["idle"] == 1, stats
    assert pool.checkout() is holder and pool.connects == 1


def test_kill_while_queued_leaves_the_queue(pools):
    pool = pools(max_size=1)
    holder = pool.checkout()

    def die(wait, timeout):
        raise _Killed

    killed_waiter = waiter_factory(pool, die)
    pool.identity.waiter = killed_waiter
    try:
        with pytest.raises(_Killed):
            pool.checkout()
    finally:
        del pool.identity.waiter
    stats = check_slots(pool)
    assert stats["waiting"] == 0 and stats["in_use"] == 1, stats
    pool.checkin(holder)
    assert check_slots(pool)["idle"] == 1


def test_wait_queue_timeout(pools):
    pool = pools(max_size=1, wait_queue_timeout=0.1)
    holder = pool.checkout()
    t0 = time.monotonic()
    with pytest.raises(PoolTimeoutError):
        pool.checkout()
    assert 0.09 <= time.monotonic() - t0 < 1.0
    stats = check_slots(pool)
    assert stats["wait_timeouts"] == 1 and stats["waiting"] == 0
    pool.checkin(holder)


def test_wait_queue_timeout_counts_from_the_wait_not_from_the_last_loop_turn(pools):
    # Under gevent a timer counts from the loop's cached time, stale when the
    # caller kept the CPU since the hub last ran: the wait then expired early.
    pool = pools(max_size=1, wait_queue_timeout=0.1)
    holder = pool.checkout()
    shortest = 1.0
    for _ in range(3):
        busy_until = time.monotonic() + 0.05
        while time.monotonic() < busy_until:
            pass
        t0 = time.monotonic()
        with pytest.raises(PoolTimeoutError):
            pool.checkout()
        shortest = min(shortest, time.monotonic() - t0)
    assert shortest >= 0.095, shortest
    pool.checkin(holder)


def test_close_fails_waiters_and_frees_slots_as_users_finish(pools):
    pool = pools(max_size=1)
    holder = pool.checkout()
    outcomes: list = []

    def wait(i):
        try:
            pool.checkout()
        except InvalidOperation as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=wait, args=(i,), daemon=True) for i in range(3)]
    for t in threads:
        t.start()
    assert wait_until(lambda: pool.get_stats()["waiting"] == 3, 5)
    pool.close()
    for t in threads:
        t.join(5)
    assert len(outcomes) == 3 and all("after close" in str(e) for e in outcomes)
    stats = check_slots(pool)
    assert stats["waiting"] == 0 and stats["in_use"] == 1  # the holder's op is still in flight
    assert not holder.closed
    pool.checkin(holder)  # ...and its socket closes when given back
    assert holder.closed
    stats = check_slots(pool)
    assert stats["open"] == 0 and stats["in_use"] == 0


def test_pinned_socket_survives_reset_and_closes_at_request_end(pools):
    pool = pools(max_size=2)
    pool.start_request()
    pinned = pool.checkout()
    pool.checkin(pinned)
    pool.reset()
    assert pool.checkout() is pinned  # kept: the request guarantee
    pool.checkin(pinned)
    assert pool.request_state() is RequestState.PINNED
    pool.end_request()
    assert pinned.closed  # an old generation: closed, not returned to idle
    stats = check_slots(pool)
    assert stats["idle"] == 0 and stats["pinned"] == 0 and stats["open"] == 0


def test_pinned_socket_after_close_goes_with_the_owners_next_call(pools):
    pool = pools(max_size=2)
    pool.start_request()
    pinned = pool.checkout()
    pool.close()
    assert not pinned.closed
    with pytest.raises(InvalidOperation):
        pool.checkout()
    assert pinned.closed and pool.request_state() is RequestState.REQUEST_NO_SOCKET
    check_slots(pool)
    pool.end_request()


def test_dead_caller_reaped_by_the_next_lock_holder(pools):
    # The death callback finds the lock busy and only queues the record; the
    # next section that takes the lock (here get_stats) reaps it.
    pool = pools(max_size=1)
    pinned, go = threading.Event(), threading.Event()

    def dies_pinned():
        pool.start_request()
        pool.checkout()
        pinned.set()
        go.wait(10)  # ...then exits without end_request

    t = threading.Thread(target=dies_pinned, daemon=True)
    t.start()
    assert pinned.wait(5)
    pool._lock.acquire()
    try:
        go.set()
        t.join(10)
        assert not t.is_alive()
        assert wait_until(lambda: len(pool._dead) == 1, 5)
    finally:
        pool._lock.release()
    pool.get_stats()  # its guard's exit reaps (after reading the gauges)
    assert not pool._dead
    stats = pool.get_stats()
    assert stats["reclaimed"] == 1 and stats["pinned"] == 0, stats
    assert check_slots(pool)["idle"] == 1


def test_pool_options_are_frozen_and_validated():
    opts = PoolOptions(max_size=3, metadata={"x": 1})
    with pytest.raises(AttributeError):
        opts.max_size = 4  # type: ignore[misc]
    assert not hasattr(opts, "__dict__")  # slotted
    assert "metadata" not in repr(opts) and "max_size=3" in repr(opts)
    with pytest.raises(ValueError):
        PoolOptions(max_size=0)
    with pytest.raises(ValueError):
        PoolOptions(connect_timeout=-1)
