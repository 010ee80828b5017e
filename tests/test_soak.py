"""Soak and fault tests against a real mongod (every test is ``slow``).

    python -m pytest tests/test_soak.py -q -m slow

* fail points: ``failCommand`` closing, failing and blocking a connection;
* bad input at volume: 10,000 inserts, valid and invalid, from 10 threads.

They run in the threads mode, with threads; the greenlet soaks (churn,
restart under load) are in tests/test_soak_greenlets.py.  Every loop is
bounded in count and in time, and everything talks to 127.0.0.1 only.
Figures (throughput, error latencies) are printed; ``-s`` or ``-rA`` shows
them.
"""

from __future__ import annotations

import contextlib
import threading
import time

import bson
import pytest
from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    DocumentTooLarge,
    InvalidDocument,
    NetworkTimeout,
    OperationFailure,
)

from helpers import THREADS, conn_id, fail_point, settled_connections, unique_app, wait_until
from mongo_requests import RequestState

pytestmark = [pytest.mark.slow, pytest.mark.modes(THREADS)]


# -- helpers ----------------------------------------------------------------------
def report(title: str, **figures) -> None:
    """Print the figures a soak measured (shown with -s / -rA)."""
    print("\n[soak] %s: %s" % (title, ", ".join("%s=%s" % kv for kv in figures.items())))


def app_connection_ids(admin_client, app: str) -> list:
    """Server-side connection ids of every connection (idle too) of ``app``."""
    reply = admin_client.admin.command(
        {
            "aggregate": 1,
            "pipeline": [
                {"$currentOp": {"allUsers": True, "idleConnections": True}},
                {"$match": {"appName": app}},
            ],
            "cursor": {},
        }
    )
    return sorted(op["connectionId"] for op in reply["cursor"]["firstBatch"] if "connectionId" in op)


# -- 1. fail points --------------------------------------------------------------------
def test_fail_point_close_connection_on_pinned_socket(make_client, admin_client):
    app = unique_app("fp_close")
    c = make_client(appname=app, retryReads=False)  # the failure must reach the caller, not be retried
    coll = c[unique_app("soak_fp")].things
    try:
        coll.insert_one({"x": 1})
        with c.start_request():
            first = conn_id(c)
            sock = c.pool.pinned_socket()
            assert sock is not None and sock.server_connection_id == first
            assert app_connection_ids(admin_client, app) == [first]
            before = c.pool.get_stats()
            with fail_point(admin_client, {"times": 1}, failCommands=["find"], closeConnection=True, appName=app):
                with pytest.raises(AutoReconnect) as info:
                    coll.find_one({"x": 1})
            assert not isinstance(info.value, NetworkTimeout)
            after = c.pool.get_stats()
            # The socket is dropped (closed +1) and unpinned; the request stays.
            assert sock.closed
            assert after.get("closed", 0) == before.get("closed", 0) + 1, (before, after)
            assert after["pinned"] == 0 and after["in_use"] == 0 and after["open"] == before["open"] - 1, after
            assert c.in_request()
            assert c.pool.request_state() is RequestState.REQUEST_NO_SOCKET
            assert c.pool.pinned_socket() is None
            # ...and the server's side of it is gone.
            assert wait_until(lambda: first not in app_connection_ids(admin_client, app), timeout=5.0), (
                app_connection_ids(admin_client, app)
            )
            # The next operation, same request, works on a new connection.
            assert coll.find_one({"x": 1})["x"] == 1
            second = conn_id(c)
            assert second != first
            assert c.in_request()
            assert c.pool.request_state() is RequestState.PINNED
            assert c.pool.pinned_socket() is not sock
            assert c.pool.pinned_socket().server_connection_id == second
            assert app_connection_ids(admin_client, app) == [second]
            # Read-your-writes on the new socket.
            coll.insert_one({"x": 2}, w=0)
            assert coll.count_documents({}) == 2
            assert conn_id(c) == second
        assert not c.in_request()
        final = c.pool.get_stats()
        assert final["pinned"] == 0 and final["in_use"] == 0, final
    finally:
        c.drop_database(coll.database.name)


@pytest.mark.parametrize("code", [2, 96])
def test_fail_point_error_code_keeps_pinned_socket(make_client, admin_client, code):
    app = unique_app("fp_code")
    c = make_client(appname=app)
    coll = c[unique_app("soak_fp")].things
    try:
        coll.insert_one({"x": 1})
        with c.start_request():
            first = conn_id(c)
            sock = c.pool.pinned_socket()
            before = c.pool.get_stats()
            with fail_point(admin_client, {"times": 1}, failCommands=["find"], errorCode=code, appName=app):
                with pytest.raises(OperationFailure) as info:
                    coll.find_one({"x": 1})
            assert info.value.code == code
            assert not isinstance(info.value, ConnectionFailure)
            after = c.pool.get_stats()
            assert c.in_request()
            assert c.pool.request_state() is RequestState.PINNED
            assert c.pool.pinned_socket() is sock and not sock.closed
            assert after.get("closed", 0) == before.get("closed", 0), after
            assert after.get("resets", 0) == before.get("resets", 0), after
            assert after["pinned"] == 1 and after["open"] == before["open"], after
            # Usable, same connection, read-your-writes intact.
            assert coll.find_one({"x": 1})["x"] == 1
            coll.insert_one({"x": 2}, w=0)
            assert coll.count_documents({}) == 2
            assert conn_id(c) == first
            assert app_connection_ids(admin_client, app) == [first]
    finally:
        c.drop_database(coll.database.name)


@pytest.mark.parametrize("in_request", [False, True], ids=["no_request", "in_request"])
def test_fail_point_block_connection_times_out_and_frees_the_slot(make_client, admin_client, in_request):
    app = unique_app("fp_block")
    wait_queue_s = 5.0
    c = make_client(
        appname=app, socketTimeoutMS=300, max_pool_size=1, waitQueueTimeoutMS=wait_queue_s * 1000, retryReads=False
    )  # the timeout must reach the caller, not be retried
    dbname = unique_app("soak_fp")
    coll = c[dbname].things
    try:
        coll.insert_one({"x": 1})
        with contextlib.ExitStack() as stack:
            if in_request:
                stack.enter_context(c.start_request())
                coll.find_one({"x": 1})
                assert c.pool.request_state() is RequestState.PINNED
            before = c.pool.get_stats()
            with fail_point(
                admin_client, {"times": 1}, failCommands=["find"], blockConnection=True, blockTimeMS=1500, appName=app
            ):
                t0 = time.monotonic()
                with pytest.raises(NetworkTimeout) as info:
                    coll.find_one({"x": 1})
                took = time.monotonic() - t0
            assert isinstance(info.value, AutoReconnect)
            assert 0.25 <= took < 1.0, took
            after = c.pool.get_stats()
            # The slot came back: the timed-out socket is closed, nothing is busy.
            assert after["in_use"] == 0 and after["pinned"] == 0 and after["waiting"] == 0, after
            assert after["open"] == 0, after
            assert after.get("closed", 0) == before.get("closed", 0) + 1, (before, after)
            # A timeout says "slow", not "gone": no reset.
            assert after.get("resets", 0) == before.get("resets", 0), after
            assert c.in_request() is in_request
            if in_request:
                assert c.pool.request_state() is RequestState.REQUEST_NO_SOCKET
            # max_pool_size=1: the next operation gets the slot at once, not
            # after waitQueueTimeoutMS.
            t1 = time.monotonic()
            assert coll.find_one({"x": 1})["x"] == 1
            took2 = time.monotonic() - t1
            assert took2 < 1.0, took2
            final = c.pool.get_stats()
            assert final.get("wait_timeouts", 0) == 0, final
            if in_request:
                assert c.pool.request_state() is RequestState.PINNED
                assert final["pinned"] == 1, final
        report("block_connection", in_request=in_request, timeout_after_s="%.3f" % took, next_op_s="%.3f" % took2)
        final = c.pool.get_stats()
        assert final["in_use"] == 0 and final["pinned"] == 0 and final["open"] <= 1, final
    finally:
        c.drop_database(dbname)


# -- 2. bad input at volume ----------------------------------------------------------------
BAD_THREADS = 10
BAD_OPS_PER_THREAD = 1000
BAD_POOL = 8  # fewer sockets than threads: some wait for one
BAD_SEGMENT = 50  # ops per stretch in a request / out of one, alternately
BAD_DEADLINE_S = 120.0
MAX_BSON = 16 * 1024 * 1024


class _NotAMapping:
    pass


def _bad_input_plan(t: int, j: int, big: str):
    """(kind, document, expected exception or None, api) for op j of thread t."""
    _id = "%d-%d" % (t, j)
    if j == 500 + t % 3:  # one oversized document per thread (they are expensive), w=0 or w=1
        return "oversized", {"_id": _id, "big": big}, DocumentTooLarge, "insert_one"
    r = (t * 7 + j * 13) % 21
    if r < 8:
        return "valid", {"_id": _id, "t": t, "j": j, "sub": {"a": [1, 2, {"b": "c"}]}}, None, "insert_one"
    if r < 10:
        return "valid_legacy", {"_id": _id, "t": t, "j": j}, None, "insert"
    if r == 10:
        return "list", [("_id", _id)], TypeError, "insert_one"
    if r == 11:
        return "str", "not a document", TypeError, "insert_one"
    if r == 12:
        return "object", _NotAMapping(), TypeError, "insert_one"
    if r == 13:
        # A top-level $ field reaches the server (as in PyMongo 4), but a key that is not a str never does.
        return "tuple_key", {(1, 2): 1, "t": t}, InvalidDocument, "insert_one"
    if r == 14:
        return "dollar_key_legacy", {"$where": "1", "t": t}, InvalidDocument, "insert"
    if r == 15:
        return "dotted_key_legacy", {"a.b": 1, "t": t}, InvalidDocument, "insert"
    if r == 16:
        return "int_key", {1: "one", "t": t}, InvalidDocument, "insert_one"
    if r == 17:
        return "unencodable_value", {"t": t, "v": object()}, InvalidDocument, "insert_one"
    if r == 18:
        return "none", None, TypeError, "insert_one"
    if r == 19:
        return "valid_late", {"_id": _id, "t": t, "j": j}, None, "insert_one"
    # A batch whose second document is bad: nothing is sent, so its valid
    # first document must not be stored either (its _id is not recorded).
    return "batch_with_bad", [{"_id": _id + "-batch", "t": t}, {2: {"n": 1}}], InvalidDocument, "insert_many"


def test_bad_input_at_volume(make_client, admin_client):
    assert InvalidDocument is bson.errors.InvalidDocument
    baseline = settled_connections(admin_client, timeout=5.0)
    c = make_client(max_pool_size=BAD_POOL, waitQueueTimeoutMS=30000)
    dbname = unique_app("soak_bad")
    coll = c[dbname].docs
    big = "x" * MAX_BSON  # one string for every oversized document
    deadline = time.monotonic() + BAD_DEADLINE_S
    valid_ids: list = [[] for _ in range(BAD_THREADS)]
    outcomes: list = [{} for _ in range(BAD_THREADS)]
    wrong: list = []
    done = [0] * BAD_THREADS
    in_request_ops = [0] * BAD_THREADS

    def work(t: int) -> None:
        try:
            for j in range(BAD_OPS_PER_THREAD):
                if time.monotonic() > deadline:
                    return
                segment_in_request = (j // BAD_SEGMENT + t) % 2 == 0
                if j % BAD_SEGMENT == 0 and segment_in_request:
                    c.start_request()
                kind, doc, expected, api = _bad_input_plan(t, j, big)
                w = 0 if j % 3 == 0 else 1
                sock_before = c.pool.pinned_socket()
                try:
                    if api == "insert":
                        coll.insert(doc, w=w)
                    elif api == "insert_many":
                        coll.insert_many(doc, w=w)
                    else:
                        coll.insert_one(doc, w=w)
                except Exception as exc:  # noqa: BLE001 - checked below
                    if expected is None or not isinstance(exc, expected):
                        wrong.append((t, j, kind, w, repr(exc)[:200]))
                    key = "%s/%s" % (kind, type(exc).__name__)
                else:
                    if expected is not None:
                        wrong.append((t, j, kind, w, "no exception"))
                    else:
                        valid_ids[t].append(doc["_id"])
                    key = "%s/ok" % kind
                outcomes[t][key] = outcomes[t].get(key, 0) + 1
                if c.in_request():
                    in_request_ops[t] += 1
                    sock = c.pool.pinned_socket()
                    # Bad input never costs a request its socket.
                    if sock_before is not None and (sock is not sock_before or sock.closed):
                        wrong.append((t, j, kind, w, "the pinned socket changed: %r -> %r" % (sock_before, sock)))
                if j % BAD_SEGMENT == BAD_SEGMENT - 1 and segment_in_request:
                    c.end_request()
                done[t] += 1
        except BaseException as exc:  # noqa: BLE001
            wrong.append((t, None, "thread", None, repr(exc)[:300]))
        finally:
            while c.in_request():
                c.end_request()

    t0 = time.monotonic()
    threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(BAD_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(max(0.0, deadline + 10 - time.monotonic()))
    elapsed = time.monotonic() - t0
    try:
        assert not any(th.is_alive() for th in threads), "threads still running after %ss" % BAD_DEADLINE_S
        assert sum(done) == BAD_THREADS * BAD_OPS_PER_THREAD, done
        assert not wrong, wrong[:10]
        totals: dict = {}
        for per_thread in outcomes:
            for key, n in per_thread.items():
                totals[key] = totals.get(key, 0) + n
        expected_ids = {i for ids in valid_ids for i in ids}
        n_invalid = sum(n for key, n in totals.items() if not key.endswith("/ok"))
        assert len(expected_ids) == sum(len(ids) for ids in valid_ids)
        assert totals.get("oversized/DocumentTooLarge") == BAD_THREADS, totals
        assert n_invalid >= 3000, totals
        assert sum(in_request_ops) >= 4000, in_request_ops

        # No socket lost, none dropped, nothing pinned or busy.
        stats = c.pool.get_stats()
        assert stats["in_use"] == 0 and stats["pinned"] == 0 and stats["waiting"] == 0, stats
        assert stats.get("closed", 0) == 0, stats
        assert stats.get("resets", 0) == 0, stats
        assert stats["open"] == stats["idle"] <= BAD_POOL, stats
        connections = settled_connections(admin_client, timeout=5.0) - baseline
        assert connections <= BAD_POOL, (connections, stats)

        # Every valid document is stored (w=0 ones may land a little later).
        assert wait_until(lambda: coll.count_documents({}) == len(expected_ids), timeout=15), (
            coll.count_documents({}),
            len(expected_ids),
        )
        stored = {d["_id"] for d in coll.find({}, {"_id": 1})}
        assert stored == expected_ids, (len(stored ^ expected_ids), sorted(stored ^ expected_ids)[:5])
        report(
            "bad_input",
            ops=sum(done),
            valid=len(expected_ids),
            invalid=n_invalid,
            in_request_ops=sum(in_request_ops),
            elapsed_s="%.1f" % elapsed,
            ops_per_s="%.0f" % (sum(done) / elapsed),
            server_connections_over_baseline=connections,
            stats=stats,
            outcomes=totals,
        )
    finally:
        c.drop_database(dbname)
