"""Lifecycle under faults: slots that must come back, deadlines that must hold, close().

* A killCursors whose send fails must give its socket's slot back.
* serverSelectionTimeoutMS bounds the whole selection, connect and handshake
  included, against a frozen server (a real mongod stopped with SIGSTOP).
* close() with a killCursors queued must not hang on a frozen server.
* close() from one thread does not break another thread's operation in
  flight; every later call raises InvalidOperation.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time

import pytest
from pymongo.errors import AutoReconnect, InvalidOperation, ServerSelectionTimeoutError

import mongo_requests
from helpers import fail_point, run_threads, server_connections, settled_connections, unique_app, wait_until
from mongo_requests.testing import MongodServer

_MODE_OPTIONS = {"use_greenlets": True} if os.environ.get("MONGO_REQUESTS_TEST_MODE") == "gevent-unpatched" else {}


# -- a failed killCursors send ----------------------------------------------------------
def test_failed_killcursors_send_gives_the_slot_back(make_client, admin_client, db):
    # The server closes the connection on every killCursors from this client.
    # killCursors goes out w=0 before the next operation, so the w=0 insert
    # after it returns at once and the dead socket goes back to idle; the
    # next round's killCursors send on it fails (the server's RST has come
    # back by then).  Each such failure used to leak a slot for good: with
    # max_pool_size=2 the pool would be dead after two.
    app = unique_app()
    c = make_client(appname=app, max_pool_size=2, waitQueueTimeoutMS=2000)
    coll = c[db.name].kills
    coll.insert_many([{"n": n} for n in range(20)])
    rounds = 8
    cursors = []
    for _ in range(rounds):
        cursor = coll.find({}, batch_size=2)
        next(cursor)
        cursors.append(cursor)
    del cursor
    outcomes = []
    with fail_point(admin_client, "alwaysOn", failCommands=["killCursors"], closeConnection=True, appName=app):
        for r in range(rounds):
            cursors.pop()  # dropped while open: its finalizer queues the kill
            gc.collect()
            assert c._kill_queue, "no killCursors queued"
            try:
                coll.insert_one({"round": r}, w=0)
                outcomes.append("ok")
            except AutoReconnect:
                outcomes.append("AutoReconnect")
            time.sleep(0.1)  # let the server's reset arrive
    assert "AutoReconnect" in outcomes, outcomes  # the failing send really happened
    stats = c.pool.get_stats()
    assert stats["in_use"] == 0 and stats["pinned"] == 0 and stats["waiting"] == 0, stats
    assert stats["open"] == stats["idle"] <= 2, stats
    # Both slots are usable at once, against the healthy server.
    hold = threading.Barrier(2, timeout=10)

    def both(i):
        with c.start_request():
            c.admin.command("ping")
            hold.wait()

    errors = run_threads(both, 2)
    assert not errors, errors
    assert c.pool.get_stats()["in_use"] == 0


# -- a frozen server ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def own_mongod():
    """A mongod of this module's own, to freeze without disturbing the session's."""
    server = MongodServer()
    server.start()
    try:
        yield server
    finally:
        if server.running:
            os.kill(server.pid, signal.SIGCONT)
        server.stop()
        server.cleanup()


class _Frozen:
    """``with _Frozen(server):`` — SIGSTOP the server, SIGCONT it on the way out."""

    def __init__(self, server: MongodServer) -> None:
        self.pid = server.pid

    def __enter__(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def __exit__(self, *exc) -> None:
        os.kill(self.pid, signal.SIGCONT)


def test_server_selection_timeout_bounds_the_connect(own_mongod):
    # The frozen server's kernel still accepts TCP connections, but the
    # handshake is never answered: only the deadline can end the attempt.
    c = mongo_requests.MongoClient(own_mongod.uri, serverSelectionTimeoutMS=2000, **_MODE_OPTIONS)
    try:
        assert c.pool.opts.connect_timeout == 20.0  # the default; the deadline must win
        with _Frozen(own_mongod):
            t0 = time.monotonic()
            with pytest.raises(ServerSelectionTimeoutError) as info:
                c.admin.command("ping")
            elapsed = time.monotonic() - t0
        assert 1.9 <= elapsed < 2.5, elapsed
        msg = str(info.value)
        assert "serverSelectionTimeoutMS=2000" in msg and "timed out" in msg, msg
        assert "%s:%d" % own_mongod.address in msg, msg
        # Thawed, the same client works.
        assert c.admin.command("ping")["ok"] == 1
    finally:
        c.close()


def test_close_with_a_queued_kill_is_bounded_on_a_frozen_server(own_mongod):
    c = mongo_requests.MongoClient(own_mongod.uri, **_MODE_OPTIONS)
    coll = c.lifecycle.close_frozen
    coll.drop()
    coll.insert_many([{"n": n} for n in range(10)])
    cursor = coll.find({}, batch_size=2)
    next(cursor)
    done = threading.Event()
    with _Frozen(own_mongod):
        del cursor
        gc.collect()
        assert c._kill_queue, "no killCursors queued"
        t = threading.Thread(target=lambda: (c.close(), done.set()), daemon=True)
        t0 = time.monotonic()
        t.start()
        t.join(4)
        elapsed = time.monotonic() - t0
        returned = done.is_set()
    t.join(10)
    assert returned, "close() still blocked after %.1fs on a frozen server" % elapsed
    assert elapsed < 2.0, elapsed
    with pytest.raises(InvalidOperation):
        c.admin.command("ping")


# -- close() while other threads work -------------------------------------------------------
def test_close_does_not_break_operations_in_flight(make_client, admin_client, db):
    # 15 threads: 12 save and read (half of them inside requests), 3 close the
    # client while the server holds every operation of this client for 50 ms,
    # so operations are in flight at the moment of close.  In-flight
    # operations complete; every call after close raises InvalidOperation;
    # nothing raises AutoReconnect.
    app = unique_app()
    baseline = settled_connections(admin_client)
    c = make_client(appname=app)
    coll = c[db.name].closing
    coll.insert_one({"seed": True})
    workers, closers = 12, 3
    start = threading.Barrier(workers + closers, timeout=10)
    results: dict[int, dict] = {}

    def work(i):
        rec = results.setdefault(i, {"ok": 0, "ended_by": None})
        start.wait()
        if i >= workers:
            time.sleep(0.3)
            c.close()
            rec["ended_by"] = "closed"
            with pytest.raises(InvalidOperation):
                coll.find_one()
            return
        request = c.start_request() if i % 2 else None
        try:
            for n in range(200):  # bounded: close comes after ~0.3 s
                try:
                    if n % 2:
                        coll.insert_one({"i": i, "n": n})
                    else:
                        coll.find_one({"i": i})
                except InvalidOperation:
                    rec["ended_by"] = "InvalidOperation"
                    return
                rec["ok"] += 1
            rec["ended_by"] = "loop bound"
        finally:
            if request is not None:
                request.end()

    with fail_point(
        admin_client, "alwaysOn", failCommands=["find", "insert"], blockConnection=True, blockTimeMS=50, appName=app
    ):
        errors = run_threads(work, workers + closers)
    assert not errors, errors[:3]  # no AutoReconnect, no hang
    for i in range(workers):
        assert results[i]["ended_by"] == "InvalidOperation", (i, results[i])
        assert results[i]["ok"] >= 1, (i, results[i])
    stats = c.pool.get_stats()
    assert stats["pinned"] == 0 and stats["in_use"] == 0 and stats["idle"] == 0, stats
    # Every connection of the client is gone once its users are done.
    assert wait_until(lambda: server_connections(admin_client) - baseline == 0, 5), (
        server_connections(admin_client) - baseline
    )
