"""The request guarantee: a request's socket is never replaced behind its owner's back.

Thread (or greenlet) A, in a request, sends a ``w=0`` update that the server
takes 400 ms to apply (a ``$where`` that sleeps), then reads the document.
The read is ordered after the write only if it goes over the same socket.
Meanwhile B, on the same client, makes the pool reset: its own connection is
closed by the server (``failCommand closeConnection``, scoped by appName),
on a command or on a cursor's ``getMore``, or it calls ``pool.reset()``.  A
must read its own write, on the connection the server saw it use before.

A forked child's request survives too, on a fresh socket (the child has
sent nothing on the inherited one).
"""

from __future__ import annotations

import threading

import pytest
from pymongo.errors import AutoReconnect

from helpers import conn_id, fail_point, in_forked_child, run_threads, unique_app
from mongo_requests import RequestState

# The server evaluates this once per matching document: it holds A's w=0
# update (and, on A's socket, everything A sends after it) for 400 ms.
SLOW_MATCH = "sleep(400) || true"


def _b_ping_closed_by_server(c, coll, admin_client, app):
    with fail_point(admin_client, {"times": 1}, failCommands=["ping"], closeConnection=True, appName=app):
        with pytest.raises(AutoReconnect):
            c.admin.command("ping")


def _b_pool_reset(c, coll, admin_client, app):
    c.pool.reset()


def _b_getmore_closed_by_server(c, coll, admin_client, app):
    cursor = coll.find({"bulk": True}, batch_size=2)
    assert next(cursor)["bulk"] is True
    with fail_point(admin_client, {"times": 1}, failCommands=["getMore"], closeConnection=True, appName=app):
        with pytest.raises(AutoReconnect):
            for _ in cursor:
                pass


@pytest.mark.parametrize(
    "disturb", [_b_ping_closed_by_server, _b_pool_reset, _b_getmore_closed_by_server], ids=["ping", "reset", "getMore"]
)
def test_request_reads_its_w0_write_across_a_pool_reset(make_client, admin_client, db, disturb):
    app = unique_app()
    c = make_client(appname=app)
    coll = c[db.name].guarantee
    coll.insert_many([{"_id": 1, "v": 0}] + [{"bulk": True, "n": n} for n in range(6)])
    wrote, disturbed = threading.Event(), threading.Event()
    out: dict = {}

    def a():
        with c.start_request():
            out["before"] = conn_id(c)
            out["pinned"] = c.pool.pinned_socket()
            out["gen_before"] = c.pool.generation
            coll.update_one({"_id": 1, "$where": SLOW_MATCH}, {"$set": {"v": 1}}, w=0)
            wrote.set()
            assert disturbed.wait(10)
            out["gen_after"] = c.pool.generation
            out["doc"] = coll.find_one({"_id": 1})
            out["after"] = conn_id(c)
            out["state"] = c.pool.request_state()
            out["still_pinned"] = c.pool.pinned_socket()

    def b():
        assert wrote.wait(10)
        try:
            disturb(c, coll, admin_client, app)
        finally:
            disturbed.set()

    errors = run_threads(lambda i: (a, b)[i](), 2)
    assert not errors, errors
    # The disturbance really reset the pool while A's socket was pinned...
    assert out["gen_after"] > out["gen_before"], out
    # ...and A kept its socket: the server saw the same connection, and A read
    # the write still queued on it.
    assert out["doc"] == {"_id": 1, "v": 1}, out
    assert out["after"] == out["before"], out
    assert out["still_pinned"] is out["pinned"] and out["state"] is RequestState.PINNED
    # The request has ended: its socket, of an old generation, was closed
    # rather than returned to the idle sockets.
    assert out["pinned"].closed
    stats = c.pool.get_stats()
    assert stats["pinned"] == 0 and stats["in_use"] == 0
    assert c.admin.command("ping")["ok"] == 1
    assert conn_id(c) != out["before"]


def test_owner_sees_the_error_before_its_socket_is_replaced(make_client, admin_client, db):
    # The other half of the rule: once the pinned socket fails, its owner gets
    # the error, and only then does the request pin a new socket.
    app = unique_app()
    c = make_client(appname=app)
    with c.start_request():
        first = conn_id(c)
        with fail_point(admin_client, {"times": 1}, failCommands=["ping"], closeConnection=True, appName=app):
            with pytest.raises(AutoReconnect):
                c.admin.command("ping")
        assert c.in_request() and c.pool.request_state() is RequestState.REQUEST_NO_SOCKET
        second = conn_id(c)
        assert second != first
        assert conn_id(c) == second


# -- fork ----------------------------------------------------------------------------
def test_request_survives_a_fork(make_client, db):
    # PyMongo 2.8's test_request_with_fork: the child is still in its
    # request, and its first operation pins a fresh socket of its own.
    c = make_client()
    coll = c[db.name].forked
    c.start_request()
    try:
        parent_id = conn_id(c)

        def child() -> dict:
            report = {
                "in_request": c.in_request(),
                "state_before": c.pool.request_state().name,
            }
            coll.insert_one({"child": True}, w=0)
            report["read_own_write"] = coll.count_documents({"child": True})
            report["ids"] = [conn_id(c), conn_id(c)]
            report["pinned_id"] = c.pool.pinned_socket().server_connection_id
            report["state_after"] = c.pool.request_state().name
            return report

        report = in_forked_child(child)
        assert "error" not in report, report
        assert report["in_request"] is True, report
        assert report["state_before"] == "REQUEST_NO_SOCKET", report
        assert report["read_own_write"] == 1, report
        a, b = report["ids"]
        assert a == b == report["pinned_id"] and a != parent_id, report
        assert report["state_after"] == "PINNED", report
        # The parent's request still has its own socket.
        assert c.in_request() and conn_id(c) == parent_id
    finally:
        c.end_request()
