"""The pool: its cap, wait queue, stats, generations, fork safety and close.

Against the session's real mongod.  Socket counts are checked where they
matter, on the server (``serverStatus().connections.current`` through the
separate ``admin_client``, whose own single connection is in the baseline),
and which socket served a call is asked of the server too (``hello`` returns
the ``connectionId`` of the connection it arrived on).

Faults and slow operations come from the ``failCommand`` fail point
(mongod runs with ``enableTestCommands=1``), scoped to the client under test
by ``appName`` and always switched off in a ``finally``.
"""

from __future__ import annotations

import os
import re
import threading
import time

import pytest
from pymongo.errors import (
    AutoReconnect,
    ConfigurationError,
    ConnectionFailure,
    InvalidOperation,
    NetworkTimeout,
    WaitQueueTimeoutError,
)

import mongo_requests
from helpers import (
    PATCHED,
    UNPATCHED,
    ConnMonitor,
    app_connections,
    conn_id,
    fail_point,
    in_forked_child,
    run_threads,
    server_connections,
    settled_connections,
    unique_app,
    wait_until,
)
from mongo_requests import PoolOptions, PoolTimeoutError

COUNTERS = (
    "checkouts",
    "created",
    "closed",
    "pins",
    "requests_started",
    "requests_ended",
    "waits",
    "wait_timeouts",
    "reclaimed",
    "resets",
)


# -- helpers ----------------------------------------------------------------
def server_delta_is(admin_client, baseline: int, expected: int, timeout: float = 3.0) -> bool:
    return wait_until(lambda: server_connections(admin_client) - baseline == expected, timeout, 0.02)


def make_idle_sockets(client, count: int) -> list[int]:
    """Have ``count`` threads pin a socket each at the same time, then end
    their requests: the pool is left with ``count`` idle sockets."""
    barrier = threading.Barrier(count, timeout=10)
    ids: list[int] = []

    def work(i):
        with client.start_request():
            ids.append(conn_id(client))
            barrier.wait()

    errors = run_threads(work, count)
    assert not errors, errors
    assert len(set(ids)) == count
    stats = client.pool.get_stats()
    assert stats["idle"] == count and stats["pinned"] == 0 and stats["in_use"] == 0
    return ids


# -- the cap ------------------------------------------------------------------
def test_pool_never_opens_more_than_max_pool_size(make_client, admin_client, db):
    cap, threads, ops = 5, 20, 3
    app = unique_app()
    baseline = settled_connections(admin_client)
    c = make_client(appname=app, max_pool_size=cap)
    coll = c[db.name].cap
    coll.insert_one({"x": 1})
    start = threading.Barrier(threads, timeout=10)
    done: list[int] = []

    def work(i):
        start.wait()
        for _ in range(ops):
            assert coll.find_one({"x": 1})["x"] == 1
        done.append(i)

    # The server holds each find of this client for 50 ms, so 20 threads
    # really compete for the 5 sockets (60 finds take >= 0.6 s in all).
    with fail_point(admin_client, "alwaysOn", failCommands=["find"], blockConnection=True, blockTimeMS=50, appName=app):
        monitor = ConnMonitor(admin_client, baseline, pool=c.pool)
        monitor.start()
        try:
            errors = run_threads(work, threads)
        finally:
            peak = monitor.stop()
    assert not errors, errors[:3]
    assert sorted(done) == list(range(threads))
    assert peak <= cap, monitor.samples
    assert max(monitor.pool_open) == cap  # the cap was reached, never passed
    stats = c.pool.get_stats()
    assert stats["waits"] > 0
    assert stats["created"] == cap
    assert stats["in_use"] == 0 and stats["pinned"] == 0 and stats["waiting"] == 0
    assert stats["open"] == stats["idle"] == cap
    # Counted by appName: the global count also moves when an earlier
    # test's sockets finish closing.
    assert app_connections(admin_client, app) == cap


# -- the wait queue ---------------------------------------------------------------
def test_wait_queue_timeout_names_pinned_sockets(make_client):
    c = make_client(max_pool_size=2, waitQueueTimeoutMS=200)
    c.admin.command("ping")
    ready = threading.Barrier(3, timeout=10)
    release = threading.Event()
    holder_ids: list[int] = []
    holder_errors: list = []

    def holder():
        try:
            c.start_request()
            holder_ids.append(conn_id(c))
            ready.wait()
            release.wait(10)
            c.end_request()
        except BaseException as exc:  # noqa: BLE001
            holder_errors.append(exc)
            ready.abort()

    holders = [threading.Thread(target=holder, daemon=True) for _ in range(2)]
    outcome: dict = {}

    def third():
        t0 = time.monotonic()
        try:
            c.admin.command("ping")
        except BaseException as exc:  # noqa: BLE001
            outcome["error"] = exc
        outcome["elapsed"] = time.monotonic() - t0

    try:
        for t in holders:
            t.start()
        ready.wait()
        assert len(set(holder_ids)) == 2
        assert c.pool.get_stats()["pinned"] == 2
        t = threading.Thread(target=third, daemon=True)
        t.start()
        t.join(10)
        assert not t.is_alive()
    finally:
        release.set()
        for h in holders:
            h.join(10)
    assert not holder_errors, holder_errors
    err = outcome.get("error")
    assert isinstance(err, PoolTimeoutError), outcome
    assert isinstance(err, ConnectionFailure) and isinstance(err, WaitQueueTimeoutError)
    assert 0.19 <= outcome["elapsed"] < 1.0, outcome["elapsed"]
    msg = str(err)
    assert "2 pinned" in msg, msg
    assert "auto_start_request=False" in msg and "end_request" in msg, msg
    assert err.pinned == 2 and err.max_size == 2
    # After the holders let go, everything works and no slot leaked.
    assert c.admin.command("ping")["ok"] == 1
    errors = run_threads(lambda i: c.admin.command("ping"), 4)
    assert not errors, errors
    stats = c.pool.get_stats()
    assert stats["wait_timeouts"] == 1
    assert stats["in_use"] == 0 and stats["pinned"] == 0 and stats["waiting"] == 0
    assert stats["open"] == stats["idle"] <= 2


# -- stats and repr ------------------------------------------------------------------
def test_get_stats_and_pop_stats(make_client):
    c = make_client(max_pool_size=7)
    pool = c.pool
    c.admin.command("ping")
    first = pool.pop_stats()
    assert first["created"] == 1 and first["checkouts"] >= 1
    stats = pool.get_stats()
    assert all(stats.get(k, 0) == 0 for k in COUNTERS), stats
    # The gauges survive pop_stats.
    assert stats["idle"] == 1 and stats["open"] == 1
    assert stats["in_use"] == 0 and stats["pinned"] == 0 and stats["waiting"] == 0
    assert stats["max_size"] == 7 and stats["generation"] == 0

    for _ in range(3):
        c.admin.command("ping")
    stats = pool.get_stats()
    assert stats["checkouts"] == 3
    assert stats.get("created", 0) == 0 and stats.get("pins", 0) == 0

    with c.start_request():
        for _ in range(3):
            c.admin.command("ping")
        during = pool.get_stats()
        assert during["pinned"] == 1 and during["idle"] == 0 and during["open"] == 1
    # A request takes one slot for its first operation and none after that
    # (PINNED --checkout--> PINNED takes no slot).
    popped = pool.pop_stats()
    assert popped["checkouts"] == 4
    assert popped["pins"] == 1
    assert popped["requests_started"] == 1 and popped["requests_ended"] == 1
    assert popped.get("created", 0) == 0
    assert popped["idle"] == 1 and popped["pinned"] == 0 and popped["open"] == 1
    stats = pool.get_stats()
    assert all(stats.get(k, 0) == 0 for k in COUNTERS), stats
    assert stats["idle"] == 1 and stats["open"] == 1


REPR = re.compile(r"^<Pool 127\.0\.0\.1:(\d+) idle=(\d+) in_use=(\d+) pinned=(\d+) waiting=(\d+)>$")


def _repr_fields(pool) -> dict[str, int]:
    m = REPR.match(repr(pool))
    assert m, repr(pool)
    return dict(zip(("port", "idle", "in_use", "pinned", "waiting"), map(int, m.groups()), strict=True))


def test_repr(make_client):
    c = make_client(max_pool_size=1, waitQueueTimeoutMS=5000)
    port = c.address[1]
    fields = _repr_fields(c.pool)
    assert fields == {"port": port, "idle": 0, "in_use": 0, "pinned": 0, "waiting": 0}
    c.admin.command("ping")
    assert _repr_fields(c.pool) == {"port": port, "idle": 1, "in_use": 0, "pinned": 0, "waiting": 0}
    c.start_request()
    mine = conn_id(c)
    assert _repr_fields(c.pool) == {"port": port, "idle": 0, "in_use": 0, "pinned": 1, "waiting": 0}
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(conn_id(c)), daemon=True)
    waiter.start()
    try:
        assert wait_until(lambda: _repr_fields(c.pool)["waiting"] == 1, 5), repr(c.pool)
        assert _repr_fields(c.pool) == {"port": port, "idle": 0, "in_use": 0, "pinned": 1, "waiting": 1}
    finally:
        c.end_request()  # hands the socket to the waiter
        waiter.join(10)
    assert not waiter.is_alive()
    assert got == [mine]
    assert _repr_fields(c.pool) == {"port": port, "idle": 1, "in_use": 0, "pinned": 0, "waiting": 0}


# -- generations -----------------------------------------------------------------------
def test_network_error_bumps_generation_and_closes_idle_sockets(make_client, admin_client, db):
    app = unique_app()
    baseline = settled_connections(admin_client)
    c = make_client(appname=app, retryReads=False)  # the failed find must surface, not be retried
    coll = c[db.name].gen
    old_ids = make_idle_sockets(c, 4)
    assert server_delta_is(admin_client, baseline, 4)
    gen0 = c.pool.generation
    with fail_point(admin_client, {"times": 1}, failCommands=["find"], closeConnection=True, appName=app):
        with pytest.raises(AutoReconnect) as info:
            coll.find_one()
    assert not isinstance(info.value, NetworkTimeout)
    assert c.pool.generation == gen0 + 1
    stats = c.pool.get_stats()
    assert stats["generation"] == gen0 + 1 and stats["resets"] == 1
    assert stats["idle"] == 0 and stats["open"] == 0 and stats["in_use"] == 0
    # The server sees all four go: one it closed, three the reset closed.
    assert server_delta_is(admin_client, baseline, 0), server_connections(admin_client) - baseline
    # The pool recovers with a new socket of the new generation.
    assert coll.find_one() is None
    new = conn_id(c)
    assert new not in old_ids
    stats = c.pool.get_stats()
    assert stats["idle"] == 1 and stats["open"] == 1
    assert server_delta_is(admin_client, baseline, 1)


def test_timeout_does_not_reset_the_pool(make_client, admin_client, db):
    app = unique_app()
    c = make_client(appname=app, socketTimeoutMS=100, retryReads=False)
    coll = c[db.name].gen
    make_idle_sockets(c, 3)
    gen0 = c.pool.generation
    with fail_point(
        admin_client, {"times": 1}, failCommands=["find"], blockConnection=True, blockTimeMS=400, appName=app
    ):
        with pytest.raises(NetworkTimeout):
            coll.find_one()
    stats = c.pool.get_stats()
    assert c.pool.generation == gen0 and stats.get("resets", 0) == 0
    assert stats["idle"] == 2 and stats["in_use"] == 0  # the timed-out one is gone, the rest stay
    assert coll.find_one() is None


# -- fork ----------------------------------------------------------------------------------
def test_fork_child_never_uses_the_parents_sockets(make_client):
    c = make_client()
    c.start_request()
    pinned_id = conn_id(c)
    other: list[int] = []
    t = threading.Thread(target=lambda: other.append(conn_id(c)), daemon=True)
    t.start()
    t.join(10)
    assert len(other) == 1
    idle_id = other[0]
    assert idle_id != pinned_id
    stats = c.pool.get_stats()
    assert stats["pinned"] == 1 and stats["idle"] == 1

    report = in_forked_child(lambda: {"id": conn_id(c), "pid": os.getpid()})
    assert "error" not in report and "id" in report, report
    assert report["id"] != pinned_id
    assert report["id"] != idle_id

    # The parent's sockets survived the child: same pinned socket, and the
    # idle one still serves another thread.
    assert c.in_request()
    assert conn_id(c) == pinned_id
    other.clear()
    t = threading.Thread(target=lambda: other.append(conn_id(c)), daemon=True)
    t.start()
    t.join(10)
    assert other == [idle_id]
    stats = c.pool.get_stats()
    assert stats["generation"] == 0 and stats["pinned"] == 1 and stats["idle"] == 1
    c.end_request()


@pytest.mark.modes(PATCHED, UNPATCHED)
def test_greenlets_queued_at_a_fork_get_the_childs_slots(make_client, mode):
    # Greenlets queued for a slot when the process forks live on in the child,
    # but the slots they wait for are the parent's: nothing comes back to wake
    # them.  The child's fresh slot must go to them, first in, first served.
    c = make_client(maxPoolSize=1)
    conn_id(c)  # connected: the holder below takes the idle socket
    holder = c.pool.checkout()
    order: list[int] = []
    ids: list[int] = []

    def queued(i: int) -> None:
        ids.append(conn_id(c))
        order.append(i)

    greenlets = [mode.gevent.spawn(queued, i) for i in range(3)]
    assert wait_until(lambda: c.pool.get_stats()["waiting"] == 3, 5, sleep=mode.gevent.sleep)

    def child() -> dict:
        done = mode.gevent.joinall(greenlets, timeout=15)
        return {"done": len(done), "order": order, "ids": ids, "stats": c.pool.get_stats()}

    report = in_forked_child(child)
    assert "error" not in report, report
    assert report["done"] == 3 and report["order"] == [0, 1, 2], report
    # One fresh socket of the child's, not the parent's held one, served all three in turn.
    assert len(set(report["ids"])) == 1 and report["ids"][0] != holder.server_connection_id, report
    stats = report["stats"]
    assert stats["waiting"] == 0 and stats["in_use"] == 0 and stats["idle"] == 1, stats

    # The parent's queue is untouched by the child: its greenlets are served as the holder comes back.
    c.pool.checkin(holder)
    assert len(mode.gevent.joinall(greenlets, timeout=15)) == 3
    assert order == [0, 1, 2] and ids == [holder.server_connection_id] * 3


# -- close -----------------------------------------------------------------------------------
def test_close_disconnects_everything_and_refuses_use(make_client, admin_client):
    baseline = settled_connections(admin_client)
    c = make_client()
    make_idle_sockets(c, 3)
    c.start_request()
    conn_id(c)  # pins one of the three; two stay idle
    assert c.pool.get_stats()["pinned"] == 1
    assert server_delta_is(admin_client, baseline, 3)
    c.close()
    # Idle sockets are closed; the pinned one is left to its owner (another
    # thread's operation in flight must complete: see test_lifecycle.py)...
    assert server_delta_is(admin_client, baseline, 1), server_connections(admin_client) - baseline
    assert c.in_request() and c.pool.get_stats()["pinned"] == 1
    # ...and goes with the owner's next call, which is refused.
    with pytest.raises(InvalidOperation):
        c.admin.command("ping")
    assert server_delta_is(admin_client, baseline, 0), server_connections(admin_client) - baseline
    with pytest.raises(InvalidOperation):
        c.test_close.things.find_one()
    errors = run_threads(lambda i: c.admin.command("ping"), 2)
    assert len(errors) == 2 and all(isinstance(e, InvalidOperation) for _, e in errors), errors
    c.end_request()  # ending a request after close is harmless
    stats = c.pool.get_stats()
    assert stats["pinned"] == 0 and stats["idle"] == 0 and stats["in_use"] == 0
    with pytest.raises(InvalidOperation):
        c.admin.command("ping")


# -- options ----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [0, -1, "x", 2.5])
def test_max_pool_size_must_be_a_positive_integer(mongodb_uri, bad):
    with pytest.raises((ValueError, ConfigurationError)):
        mongo_requests.MongoClient(mongodb_uri, max_pool_size=bad)
    with pytest.raises((ValueError, ConfigurationError)):
        mongo_requests.Connection(mongodb_uri, max_pool_size=bad)
    with pytest.raises((ValueError, ConfigurationError)):
        PoolOptions(max_size=bad)


@pytest.mark.parametrize("bad", ["0", "-1", "x"])
def test_max_pool_size_in_uri_must_be_a_positive_integer(mongodb_uri, bad):
    uri = mongodb_uri.rstrip("/") + "/?maxPoolSize=" + bad
    with pytest.raises((ValueError, ConfigurationError)):
        mongo_requests.MongoClient(uri)


# -- a dead caller whose death callback found the lock busy ----------------------------------
def test_dead_threads_socket_reaches_a_waiter_even_if_the_lock_was_busy(make_client):
    # The pool's documented promise: a death callback that cannot take the
    # lock at once queues its record, and "whoever holds the lock reaps the
    # queue after releasing it, so no record waits for long".  Here the lock
    # is held (by this test, standing in for any other thread that happens
    # to be inside get_stats(), a checkout or a wait-queue entry at that
    # instant) while a thread pinned to the only socket dies.  The next
    # caller must get the dead thread's socket, not a PoolTimeoutError.
    c = make_client(max_pool_size=1, waitQueueTimeoutMS=500)
    pool = c.pool
    go = threading.Event()
    pinned: list[int] = []

    def dies_pinned():
        c.start_request()
        pinned.append(conn_id(c))
        go.wait(10)
        # exits without end_request

    t = threading.Thread(target=dies_pinned, daemon=True)
    t.start()
    assert wait_until(lambda: len(pinned) == 1, 5)
    assert pool.get_stats()["pinned"] == 1
    pool._lock.acquire()
    try:
        go.set()
        t.join(10)
    finally:
        pool._lock.release()
    assert not t.is_alive()
    assert conn_id(c) == pinned[0]  # the dead thread's socket, reused
    assert wait_until(lambda: pool.get_stats()["pinned"] == 0)
    stats = pool.get_stats()
    assert stats["reclaimed"] == 1 and stats["in_use"] == 0
