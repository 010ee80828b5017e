"""Requests: one socket pinned to the calling thread, PyMongo 2 style.

Everything here runs against the session's real mongod.  To learn which
server connection served a call we ask the server (``hello`` returns the
``connectionId`` of the connection it arrived on); to learn how many sockets
are open we ask it too (``serverStatus().connections.current``, through the
separate ``admin_client`` whose single connection is part of the baseline).

Faults come from the server's ``failCommand`` fail point (mongod runs with
``enableTestCommands=1``), always scoped to one client with ``appName`` so
that the admin client is never affected, and always switched off in a
``finally``.
"""

from __future__ import annotations

import threading
import uuid

import pytest
from pymongo.errors import AutoReconnect, OperationFailure

import mongo_requests
from helpers import (
    ConnMonitor,
    conn_id,
    fail_point,
    run_threads,
    server_connections,
    settled_connections,
    unique_app,
    wait_until,
)
from mongo_requests import Connection, RequestState

# -- helpers ----------------------------------------------------------------
# -- the seed document's example, with the legacy API ---------------------------
REGION, BROWSER, OS = "US", "Firefox", "Mac OS X"


def _count_page_view(counts, **kwargs):
    return counts.update(
        {"region": REGION, "browser": BROWSER, "os": OS},
        {"$inc": {"n": 1}},
        upsert=True,
        **kwargs,
    )


def test_seed_example_explicit_request_try_finally(make_client, db):
    connection = make_client(cls=Connection, auto_start_request=False)
    assert not connection.auto_start_request
    counts = connection[db.name].counts
    counts.drop()
    request = connection.start_request()
    try:
        assert connection.in_request()
        assert _count_page_view(counts, safe=False) is None  # unacknowledged
        # always runs after update has completed
        count = sum(p["n"] for p in counts.find({"region": REGION}))
    finally:
        request.end()
    assert count == 1
    assert not connection.in_request()
    assert connection.pool.get_stats()["pinned"] == 0


def test_seed_example_request_as_with_block(make_client, db):
    connection = make_client(cls=Connection, auto_start_request=False)
    counts = connection[db.name].counts
    assert not connection.in_request()
    with connection.start_request() as request:
        assert isinstance(request, mongo_requests.Request)
        assert connection.in_request()
        _count_page_view(counts, safe=False)
        count = sum(p["n"] for p in counts.find({"region": REGION}))
        assert connection.in_request()
    assert count == 1
    assert not connection.in_request()
    assert connection.pool.request_state() is RequestState.NO_REQUEST
    assert connection.pool.get_stats()["pinned"] == 0


def test_seed_way_1_safe_writes_without_a_request(make_client, db):
    connection = make_client(cls=Connection, auto_start_request=False)
    counts = connection[db.name].counts
    result = _count_page_view(counts, safe=True)
    assert result["n"] == 1 and result["updatedExisting"] is False and result["upserted"] is not None
    assert not connection.in_request()
    count = sum(p["n"] for p in counts.find({"region": REGION}))
    assert count == 1
    assert not connection.in_request()
    assert connection.pool.get_stats()["pinned"] == 0


def test_seed_way_2_auto_start_request(make_client, db):
    connection = make_client(cls=Connection)  # PyMongo 2's defaults
    assert connection.auto_start_request is True
    assert connection.write_concern.acknowledged is False
    counts = connection[db.name].counts
    assert not connection.in_request()  # nothing has run yet
    assert _count_page_view(counts) is None  # w=0 by default
    assert connection.in_request()  # the first operation started one
    count = sum(p["n"] for p in counts.find({"region": REGION}))
    assert count == 1
    assert connection.pool.get_stats()["pinned"] == 1
    connection.end_request()
    assert not connection.in_request()
    assert connection.pool.get_stats()["pinned"] == 0


# -- pinning is real ------------------------------------------------------------
def test_request_runs_every_kind_of_operation_on_one_connection(make_client, db):
    c = make_client()
    coll = c[db.name].pinning
    coll.insert_one({"seed": True})
    tag = uuid.uuid4().hex
    with c.start_request():
        first = conn_id(c)
        sock = c.pool.pinned_socket()
        assert sock is not None and sock.server_connection_id == first
        ids = [first]
        for i in range(5):
            assert coll.find_one({"seed": True}) is not None
            ids.append(conn_id(c))
            coll.insert_one({"i": i}, w=0)
            ids.append(conn_id(c))
            # Read-your-writes: the unacknowledged insert is already visible.
            assert coll.count_documents({"i": {"$exists": True}}) == i + 1
            ids.append(conn_id(c))
            assert c.pool.pinned_socket() is sock
        # A non-hello operation reporting its own connection: $currentOp
        # lists the running aggregate itself, tagged with our comment.
        reply = c.admin.command(
            {
                "aggregate": 1,
                "pipeline": [{"$currentOp": {}}, {"$match": {"command.comment": tag}}],
                "cursor": {},
                "comment": tag,
            }
        )
        ops = reply["cursor"]["firstBatch"]
        assert len(ops) == 1
        ids.append(ops[0]["connectionId"])
        ids.append(conn_id(c))
        stats = c.pool.get_stats()
        assert stats["pinned"] == 1 and stats["pins"] == 1
    assert set(ids) == {first}, ids
    assert c.pool.get_stats()["pinned"] == 0


def test_concurrent_threads_without_requests_use_several_connections(make_client, admin_client):
    # Without requests, nothing ties a thread to a socket, and a busy socket
    # is never shared: so threads whose operations overlap on the server must
    # be served by different connections.  To make the overlap certain rather
    # than likely, the server holds every ``hello`` from this client (and only
    # this client: the fail point is scoped by appName) for 300 ms, and the
    # threads leave a barrier together.  One socket could serve the 8 calls
    # only one after the other, 2.4 s in all; in practice the pool opens ~8.
    app = unique_app()
    c = make_client(appname=app)
    c.admin.command("ping")  # warm up: server known, one idle socket
    threads = 8
    barrier = threading.Barrier(threads, timeout=10)
    ids: list[int] = []

    def work(i):
        barrier.wait()
        assert not c.in_request()
        ids.append(conn_id(c))

    with fail_point(
        admin_client,
        "alwaysOn",
        failCommands=["hello"],
        blockConnection=True,
        blockTimeMS=300,
        appName=app,
    ):
        errors = run_threads(work, threads)
    assert not errors, errors
    assert len(ids) == threads
    assert len(set(ids)) > 1, ids
    stats = c.pool.get_stats()
    assert stats["pinned"] == 0 and stats["in_use"] == 0 and stats.get("pins", 0) == 0


# -- nesting ----------------------------------------------------------------------
def test_nested_requests_only_outermost_end_unpins(make_client):
    c = make_client()
    c.admin.command("ping")
    idle_before = c.pool.get_stats()["idle"]
    outer = c.start_request()
    first = conn_id(c)
    stats = c.pool.get_stats()
    assert stats["pinned"] == 1 and stats["idle"] == idle_before - 1
    inner = c.start_request()
    assert c.in_request()
    assert conn_id(c) == first
    inner.end()
    assert c.in_request()
    assert c.pool.request_state() is RequestState.PINNED
    assert conn_id(c) == first
    inner.end()  # a second end of the same Request does nothing...
    assert c.in_request()  # ...in particular it does not end the outer one
    assert conn_id(c) == first
    assert c.pool.get_stats()["pinned"] == 1
    outer.end()
    assert not c.in_request()
    stats = c.pool.get_stats()
    assert stats["pinned"] == 0
    assert stats["idle"] == idle_before
    assert stats["in_use"] == 0
    outer.end()  # harmless
    c.end_request()  # no request at all: harmless too
    stats = c.pool.get_stats()
    assert stats["pinned"] == 0 and stats["idle"] == idle_before and stats["in_use"] == 0
    assert stats["requests_started"] == 1 and stats["requests_ended"] == 1
    assert not c.in_request()


def test_nested_with_blocks(make_client):
    c = make_client()
    with c.start_request():
        first = conn_id(c)
        with c.start_request():
            assert conn_id(c) == first
            with c.start_request():
                assert conn_id(c) == first
            assert c.in_request() and conn_id(c) == first
        assert c.in_request() and conn_id(c) == first
        assert c.pool.get_stats()["pinned"] == 1
    assert not c.in_request()
    stats = c.pool.get_stats()
    assert stats["pinned"] == 0 and stats["idle"] == 1 and stats["in_use"] == 0


# -- auto_start_request -------------------------------------------------------------
def test_auto_start_request_pins_each_thread(make_client):
    c = make_client(cls=Connection)
    assert c.auto_start_request
    threads = 4
    # Every thread stays alive (and pinned) until all have finished their
    # operations, so their sockets are pinned at the same time.
    barrier = threading.Barrier(threads, timeout=10)
    per_thread: dict[int, list[int]] = {}

    def work(i):
        ids = per_thread.setdefault(i, [])
        coll = c.test_auto_start.things
        for _ in range(5):
            ids.append(conn_id(c))
            coll.find_one()
            assert c.in_request()
        barrier.wait()

    errors = run_threads(work, threads)
    assert not errors, errors
    firsts = []
    for i, ids in per_thread.items():
        assert len(ids) == 5 and len(set(ids)) == 1, (i, ids)
        firsts.append(ids[0])
    assert len(set(firsts)) == threads, per_thread

    # In this thread: the first operation pins, end_request unpins, and the
    # next operation starts a new request and pins again.
    before = c.pool.get_stats()
    first = conn_id(c)
    assert c.in_request() and conn_id(c) == first
    assert c.pool.pinned_socket().server_connection_id == first
    c.end_request()
    assert not c.in_request()
    assert c.pool.pinned_socket() is None
    assert c.pool.get_stats()["pinned"] == before["pinned"]
    second = conn_id(c)
    assert c.in_request()
    assert c.pool.pinned_socket().server_connection_id == second
    assert conn_id(c) == second
    after = c.pool.get_stats()
    assert after["pinned"] == before["pinned"] + 1
    assert after["requests_started"] == before["requests_started"] + 2
    assert after["requests_ended"] == before.get("requests_ended", 0) + 1
    c.end_request()


# -- read your own writes under load ----------------------------------------------------
@pytest.mark.parametrize("style", ["start_request", "auto_start_request"])
def test_read_your_writes_stress(make_client, db, style):
    threads, rounds, docs_per_round = 50, 3, 150
    if style == "start_request":
        c = make_client()  # acknowledged by default: w=0 asked per call
    else:
        c = make_client(cls=Connection)  # auto requests, w=0 by default
    coll = c[db.name].ryw
    pinned_at_barrier: list[int] = []
    # The barrier makes the rounds overlap across all threads; its action
    # records how many sockets are pinned while every thread waits.
    barrier = threading.Barrier(
        threads, action=lambda: pinned_at_barrier.append(c.pool.get_stats()["pinned"]), timeout=30
    )
    violations: list = []

    def work(i):
        request = c.start_request() if style == "start_request" else None
        try:
            for r in range(1, rounds + 1):
                docs = [{"k": i, "r": r, "j": j} for j in range(docs_per_round)]
                if style == "start_request":
                    result = coll.insert_many(docs, w=0)
                    assert result.acknowledged is False
                else:
                    coll.insert(docs)  # PyMongo 2's insert, safe=False
                n = coll.count_documents({"k": i})
                if n != r * docs_per_round:
                    violations.append((i, r, n))
                barrier.wait()
        except BaseException:
            barrier.abort()
            raise
        finally:
            if request is not None:
                request.end()

    errors = run_threads(work, threads)
    assert not errors, errors[:3]
    assert violations == []
    assert pinned_at_barrier == [threads] * rounds
    assert c.pool.get_stats()["in_use"] == 0
    total = threads * rounds * docs_per_round
    assert c[db.name].ryw.count_documents({}) == total


# -- threads that die in a request ---------------------------------------------------
@pytest.mark.parametrize("style", ["start_request", "auto_start_request"])
def test_dead_threads_give_back_pinned_sockets(make_client, admin_client, style):
    # 200 threads, each pins a socket and dies without end_request, through a
    # pool of 10 that waits up to 5 s for a free socket.  The 11th thread can
    # only succeed if a dead thread's socket came back.
    threads, cap = 200, 10
    baseline = settled_connections(admin_client)
    if style == "start_request":
        c = make_client(max_pool_size=cap, waitQueueTimeoutMS=5000)
    else:
        c = make_client(cls=Connection, max_pool_size=cap, waitQueueTimeoutMS=5000)
    assert c.auto_start_request == (style == "auto_start_request")
    ids: list[int] = []

    def work(i):
        if style == "start_request":
            c.start_request()
        ids.append(conn_id(c))
        assert c.in_request()
        assert c.pool.request_state() is RequestState.PINNED
        # ...and exit without end_request.

    monitor = ConnMonitor(admin_client, baseline, interval=0.01)
    monitor.start()
    try:
        errors = run_threads(work, threads)
    finally:
        peak = monitor.stop()
    assert not errors, errors[:3]
    assert len(ids) == threads
    assert len(set(ids)) <= cap
    assert wait_until(lambda: c.pool.get_stats()["pinned"] == 0), c.pool.get_stats()
    stats = c.pool.get_stats()
    assert stats["in_use"] == 0 and stats["waiting"] == 0
    assert stats["open"] == stats["idle"] <= cap
    assert stats["reclaimed"] == threads
    assert peak <= cap, monitor.samples
    assert server_connections(admin_client) - baseline <= cap
    # The main thread was never in a request and can still work.
    assert not c.in_request()
    c.admin.command("ping")


def test_dead_thread_in_nested_request_gives_back_its_socket(make_client):
    c = make_client()
    seen: list[int] = []

    def work(i):
        c.start_request()
        c.start_request()
        seen.append(conn_id(c))

    errors = run_threads(work, 3)
    assert not errors, errors
    assert wait_until(lambda: c.pool.get_stats()["pinned"] == 0), c.pool.get_stats()
    stats = c.pool.get_stats()
    assert stats["in_use"] == 0 and stats["open"] == stats["idle"] >= 1
    # The returned sockets are reused: a new request pins one of them.
    created = stats["created"]
    with c.start_request():
        assert conn_id(c) in seen
        assert c.pool.get_stats()["pinned"] == 1
    assert c.pool.get_stats()["created"] == created


# -- errors on a pinned socket -----------------------------------------------------------
def test_network_error_on_pinned_socket_keeps_request_and_repins(make_client, admin_client, db):
    app = unique_app()
    c = make_client(appname=app, retryReads=False)  # the error must reach the request's owner
    coll = c[db.name].things
    coll.insert_one({"x": 1})
    with c.start_request():
        first = conn_id(c)
        assert c.pool.get_stats()["pinned"] == 1
        with fail_point(admin_client, {"times": 1}, failCommands=["find"], closeConnection=True, appName=app):
            with pytest.raises(AutoReconnect):
                coll.find_one({"x": 1})
        assert c.in_request()
        assert c.pool.request_state() is RequestState.REQUEST_NO_SOCKET
        assert c.pool.get_stats()["pinned"] == 0
        assert coll.find_one({"x": 1})["x"] == 1
        second = conn_id(c)
        assert second != first
        assert c.pool.pinned_socket().server_connection_id == second
        assert c.pool.request_state() is RequestState.PINNED
        assert c.pool.get_stats()["pinned"] == 1
        # Still one socket for the rest of the request, with read-your-writes.
        coll.insert_one({"x": 2}, w=0)
        assert coll.count_documents({}) == 2
        assert conn_id(c) == second
    assert not c.in_request()
    assert c.pool.get_stats()["pinned"] == 0


def test_command_error_keeps_the_pinned_socket(make_client, admin_client, db):
    app = unique_app()
    c = make_client(appname=app)
    coll = c[db.name].things
    coll.insert_one({"x": 1})
    with c.start_request():
        first = conn_id(c)
        sock = c.pool.pinned_socket()
        with fail_point(admin_client, {"times": 1}, failCommands=["find"], errorCode=2, appName=app):
            with pytest.raises(OperationFailure) as info:
                coll.find_one({"x": 1})
        assert info.value.code == 2
        assert not isinstance(info.value, AutoReconnect)
        assert c.in_request()
        assert c.pool.pinned_socket() is sock and not sock.closed
        assert conn_id(c) == first
        assert coll.find_one({"x": 1})["x"] == 1
        assert conn_id(c) == first
        stats = c.pool.get_stats()
        assert stats["pinned"] == 1 and stats["pins"] == 1
        assert stats.get("resets", 0) == 0


def test_failed_repin_after_an_error_reports_no_socket(make_client, admin_client):
    """A pin lost to an error, and no new socket to be had: the state must say so.

    The owner sees the error that closes its pinned socket; the request
    stays open without a socket.  If the next checkout's wait times out, the
    request is still open but holds no socket: REQUEST_NO_SOCKET, never PINNED.
    """
    app = unique_app()
    client = make_client(max_pool_size=1, waitQueueTimeoutMS=300, appname=app)
    client.start_request()
    try:
        client.admin.command("ping")
        assert client.pool.request_state() is RequestState.PINNED
        with fail_point(admin_client, {"times": 1}, failCommands=["ping"], closeConnection=True, appName=app):
            with pytest.raises(AutoReconnect):
                client.admin.command("ping")
        assert client.pool.request_state() is RequestState.REQUEST_NO_SOCKET
        release, pinned = threading.Event(), threading.Event()

        def other():
            with client.start_request():
                client.admin.command("ping")  # takes the only slot
                pinned.set()
                release.wait(10)

        thread = threading.Thread(target=other, daemon=True)
        thread.start()
        try:
            assert pinned.wait(5)
            with pytest.raises(mongo_requests.PoolTimeoutError):
                client.admin.command("ping")
            assert client.in_request()
            assert client.pool.pinned_socket() is None
            assert client.pool.request_state() is RequestState.REQUEST_NO_SOCKET
        finally:
            release.set()
            thread.join(10)
        # Once the other request ends, ours pins again and works.
        assert client.admin.command("ping")["ok"] == 1
        assert client.pool.request_state() is RequestState.PINNED
    finally:
        client.end_request()
