"""``client.close()`` ends the pooled server sessions (``endSessions``), as the Driver Sessions spec asks.

Checked on the servers: ``config.system.sessions`` on the primary holds the
client's sessions before close and none after (while another client's stay);
``serverStatus``'s command counters show the batches of at most 10,000; fail
points prove that a frozen or failing ``endSessions`` neither hangs nor fails
``close()``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from pymongo import monitoring

from helpers import THREADS, report, run_child, unique_app
from mongo_requests.testing import raw_command


def _stored_session_ids(member: Any) -> set[bytes]:
    """The ids of the sessions the member's cache holds, once it flushed them to ``config.system.sessions``.

    ``endSessions`` marks sessions ended; the cache's refresh (forced here
    with the test command ``refreshLogicalSessionCacheNow``, every 5 minutes
    otherwise) then deletes them from the collection, while it writes the
    sessions still in use into it.
    """
    assert raw_command(member.address, {"refreshLogicalSessionCacheNow": 1})["ok"] == 1
    reply = raw_command(
        member.address, {"find": "system.sessions", "projection": {"_id.id": 1}, "batchSize": 100000}, db="config"
    )
    assert reply["ok"] == 1 and reply["cursor"]["id"] == 0, reply
    return {bytes(d["_id"]["id"]) for d in reply["cursor"]["firstBatch"]}


def _end_sessions_commands(member: Any) -> int:
    status = raw_command(member.address, {"serverStatus": 1})
    return int(status["metrics"]["commands"]["endSessions"]["total"])


def _pooled_ids(client: Any) -> set[bytes]:
    return {bytes(s.lsid["id"]) for s in client._sessions._sessions}


def _make_sessions(client: Any, mode: Any, name: str, n: int) -> None:
    """Retryable writes from ``n`` workers at once: each needs a session of its own."""
    client.admin.command("ping")  # discovery first: writes are retryable (with a session) once it is done
    coll = client[name].c
    gate = mode.event()
    errors: list[BaseException] = []

    def worker(i: int, _: Any) -> None:
        gate.wait(10)
        try:
            for k in range(5):
                coll.insert_one({"x": (i, k)})
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    handles = [mode.spawn(worker, i, None) for i in range(n)]
    gate.set()
    assert mode.join(handles, 30) == 0 and errors == [], errors


def test_close_ends_the_pooled_sessions_on_the_primary(replica_set, make_rs_client, mode, request):
    client = make_rs_client()
    control = make_rs_client()  # stays open: its sessions must stay too
    name = "es_" + unique_app()
    primary = replica_set.primary()
    _make_sessions(client, mode, name, 8)
    _make_sessions(control, mode, name + "_control", 2)
    control.drop_database(name + "_control")
    ids, kept = _pooled_ids(client), _pooled_ids(control)
    assert len(ids) >= 2, "the writers shared one session: nothing to prove"
    assert ids | kept <= _stored_session_ids(primary)  # the server holds every session the clients pooled
    commands = _end_sessions_commands(primary)
    t0 = time.monotonic()
    client.close()
    took = time.monotonic() - t0
    after = _stored_session_ids(primary)
    report(request, sessions=len(ids), close_s=round(took, 3), left_on_server=len(ids & after))
    assert ids & after == set()  # ended: the server forgot them
    assert kept <= after
    assert _end_sessions_commands(primary) == commands + 1
    assert len(client._sessions) == 0


def test_end_sessions_is_sent_in_batches_of_10000(replica_set, make_rs_client):
    client = make_rs_client()
    client.admin.command("ping")  # discover the set (sessions are supported)
    # Sessions the server has never seen: endSessions accepts them.
    taken = [client._sessions.checkout(None) for _ in range(10001)]
    for session in taken:
        client._sessions.checkin(session, None)
    primary = replica_set.primary()
    commands = _end_sessions_commands(primary)
    client.close()
    assert _end_sessions_commands(primary) == commands + 2


def _fail_end_sessions(member: Any, app: str, **data: Any) -> None:
    reply = raw_command(
        member.address,
        {
            "configureFailPoint": "failCommand",
            "mode": "alwaysOn",
            "data": {"failCommands": ["endSessions"], "appName": app, **data},
        },
    )
    assert reply["ok"] == 1, reply


def _fail_point_off(member: Any) -> int:
    """Turn ``failCommand`` off; return how many times it was entered."""
    return int(raw_command(member.address, {"configureFailPoint": "failCommand", "mode": "off"})["count"])


class _EndSessions(monitoring.CommandListener):
    """The endSessions commands the client started, and the failures it saw."""

    def __init__(self) -> None:
        self.sent = 0
        self.failures: list[Any] = []

    def started(self, event: Any) -> None:
        if event.command_name == "endSessions":
            self.sent += 1

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        if event.command_name == "endSessions":
            self.failures.append(event.failure)


def test_close_ignores_a_failing_end_sessions(replica_set, make_rs_client, mode):
    app = unique_app("esfail")
    listener = _EndSessions()
    client = make_rs_client(appname=app, event_listeners=[listener])
    name = "esf_" + unique_app()
    _make_sessions(client, mode, name, 2)
    client.drop_database(name)
    primary = replica_set.primary()
    _fail_end_sessions(primary, app, errorCode=8000)
    try:
        client.close()  # no error
    finally:
        entered = _fail_point_off(primary)
    # One endSessions was sent, and failed with the fail point's error.  (The
    # server's own count is at least 1: in a long run it has read 3 for this
    # one command, so it is not asked to be exact.)
    assert listener.sent == 1
    assert [f.get("code") for f in listener.failures] == [8000]
    assert entered >= 1


def test_close_does_not_hang_on_a_frozen_end_sessions(replica_set, make_rs_client, mode, request):
    app = unique_app("esblock")
    client = make_rs_client(appname=app)
    name = "esb_" + unique_app()
    _make_sessions(client, mode, name, 2)
    client.drop_database(name)
    primary = replica_set.primary()
    _fail_end_sessions(primary, app, blockConnection=True, blockTimeMS=5000)
    try:
        t0 = time.monotonic()
        client.close()
        took = time.monotonic() - t0
    finally:
        entered = _fail_point_off(primary)
    report(request, close_s=round(took, 3))
    # (A blocking failCommand counts two entries for one command.)
    assert entered >= 1 and took < 1.5, (entered, took)


_FORK_SCRIPT = """
import os, sys
import mongo_requests
client = mongo_requests.MongoClient(sys.argv[1])
client.admin.command("ping")  # discovery: the next write is retryable, with a session
client.fork_test.c.insert_one({"_id": 1})
ids = [s.lsid["id"].hex() for s in client._sessions._sessions]
pid = os.fork()
if pid == 0:
    client.close()  # the child: must not end the parent's sessions
    os._exit(0)
os.waitpid(pid, 0)
print(ids[0])
client.drop_database("fork_test")
"""


@pytest.mark.modes(THREADS)  # a child process of its own: the same in every mode
def test_a_forked_child_does_not_end_its_parents_sessions(replica_set):
    if not hasattr(os, "fork"):  # never skipped: the suite runs on Linux
        raise AssertionError("this platform has no fork")
    proc = run_child(["-c", _FORK_SCRIPT, replica_set.uri], timeout=60)
    lsid = bytes.fromhex(proc.stdout.strip().splitlines()[-1])
    assert lsid in _stored_session_ids(replica_set.primary())
