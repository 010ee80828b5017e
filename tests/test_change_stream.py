"""Change streams on the 3-member replica set: resuming across a stepdown and a dropped socket.

Resumes are counted from the command listener (each resume is a new
``aggregate``); the faults are real (``replSetStepDown``, a ``failCommand``
fail point that closes the connection).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from pymongo import monitoring

from helpers import report, short, unique_app
from mongo_requests.testing import raw_command

pytestmark = pytest.mark.usefixtures("watchdog")


class _Aggregates(monitoring.CommandListener):
    """Counts the change stream's aggregate commands (the first open, then one per resume)."""

    def __init__(self) -> None:
        self.aggregates = 0
        self.failed_get_mores: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "aggregate" and "$changeStream" in event.command["pipeline"][0]:
            self.aggregates += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        if event.command_name == "getMore":
            self.failed_get_mores.append(str(event.failure)[:80])


def test_a_hundred_inserts_across_a_stepdown_and_a_dropped_socket(replica_set, make_rs_client, mode, request):
    rs = replica_set
    listener = _Aggregates()
    app = unique_app("cs")
    client = make_rs_client(appname=app, event_listeners=[listener])
    writer_client = make_rs_client()
    name = unique_app("cs")
    coll = client[name].c
    coll.insert_one({"_id": "create"})
    seen: list[Any] = []
    errors: list[str] = []
    half = mode.event()
    go_on = mode.event()

    def writer() -> None:
        wc = writer_client[name].c
        try:
            for i in range(100):
                if i == 50:
                    half.set()
                    go_on.wait(60)
                wc.insert_one({"_id": i})
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(short(exc))

    started = time.monotonic()
    with coll.watch(max_await_time_ms=300) as stream:
        handle = mode.spawn(writer)
        while len(seen) < 50:
            seen.append(stream.next()["documentKey"]["_id"])
        assert half.wait(30)
        # A dropped socket: the next getMore fails with a network error.
        holder = stream._address
        fp = {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["getMore"], "closeConnection": True, "appName": app},
        }
        assert raw_command(holder, fp)["ok"] == 1
        assert stream.try_next() is None  # resumed, and nothing new yet
        resumes_after_drop = listener.aggregates - 1
        # A stepdown of the primary, with the writer stopped at 50.
        stall = time.monotonic()
        rs.stepdown(seconds=5)
        # The old primary keeps the cursor (a secondary can serve it); make
        # it answer the next getMore as a stepped-down primary does.
        fp = {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {
                "failCommands": ["getMore"],
                "errorCode": 10107,
                "appName": app,
                "errorLabels": ["ResumableChangeStreamError"],
            },
        }
        assert raw_command(holder, fp)["ok"] == 1
        go_on.set()
        while len(seen) < 100:
            seen.append(stream.next()["documentKey"]["_id"])
        stall = time.monotonic() - stall
        # Nothing more arrives: no duplicate was waiting.
        assert stream.try_next() is None
    assert mode.join([handle], 30) == 0
    raw_command(holder, {"configureFailPoint": "failCommand", "mode": "off"})
    assert errors == []
    assert seen == list(range(100))
    assert resumes_after_drop == 1
    assert listener.aggregates - 1 == 2  # one resume per fault
    assert len(listener.failed_get_mores) == 2, listener.failed_get_mores
    # The stream resumed on the new primary.
    assert stream._address != holder and stream._address == client.primary
    report(
        request,
        events=len(seen),
        resumes=listener.aggregates - 1,
        seconds=round(time.monotonic() - started, 2),
        stepdown_s=round(stall, 2),
        failed_get_mores=listener.failed_get_mores,
    )
    # The writer's client has seen the new primary (dropDatabase is not retried).
    writer_client.drop_database(name)


def test_watch_options_on_collection_database_and_client(replica_set, make_rs_client):
    client = make_rs_client()
    name = unique_app("csopts")
    db = client[name]
    db.c.insert_one({"_id": "create"})
    with (
        db.c.watch(full_document="updateLookup", max_await_time_ms=200) as stream,
        db.watch(max_await_time_ms=200) as db_stream,
        client.watch(max_await_time_ms=200) as all_stream,
    ):
        assert stream.try_next() is None
        db.c.insert_one({"_id": 1, "n": 0})
        db.c.update_one({"_id": 1}, {"$inc": {"n": 1}})
        insert = stream.next()
        update = stream.next()
        assert insert["operationType"] == "insert" and insert["fullDocument"] == {"_id": 1, "n": 0}
        assert update["operationType"] == "update" and update["fullDocument"] == {"_id": 1, "n": 1}
        token = stream.resume_token
        assert token == update["_id"]
        assert db_stream.next()["documentKey"] == {"_id": 1}
        change = all_stream.next()
        while change["ns"]["db"] != name:  # other tests' databases
            change = all_stream.next()
        assert change["documentKey"] == {"_id": 1}
        first_time = insert["clusterTime"]
    db.c.insert_one({"_id": 2})
    # resume_after the update: only the later insert.
    with db.c.watch(resume_after=token, max_await_time_ms=200) as again:
        assert again.next()["documentKey"] == {"_id": 2}
        assert again.try_next() is None
    # start_after, and start_at_operation_time from the first insert.
    with db.c.watch(start_after=token, max_await_time_ms=200) as after:
        assert after.next()["documentKey"] == {"_id": 2}
    with db.c.watch(start_at_operation_time=first_time, max_await_time_ms=200) as at:
        ids = [at.next()["documentKey"]["_id"] for _ in range(3)]
        assert ids == [1, 1, 2]
    with pytest.raises(TypeError):
        db.c.watch(fullDocument="updateLookup")
    with pytest.raises(ValueError):
        db.c.watch(full_document="sometimes")
    client.drop_database(name)


def test_iteration_cooperates_with_other_workers(replica_set, make_rs_client, mode):
    client = make_rs_client()
    name = unique_app("cscoop")
    coll = client[name].c
    coll.insert_one({"_id": "create"})
    ticks = [0]
    stop = mode.event()

    def ticker() -> None:
        while not stop.is_set():
            ticks[0] += 1
            mode.sleep(0.01)

    with coll.watch(max_await_time_ms=1000) as stream, client.start_session() as s:
        handle = mode.spawn(ticker)
        started = time.monotonic()
        assert stream.try_next() is None  # the server held the getMore for max_await_time_ms
        waited = time.monotonic() - started
        stop.set()
        assert mode.join([handle], 5) == 0
        assert waited >= 0.5
        assert ticks[0] >= 10  # the ticker ran while the stream waited
        # A stream in a session: its getMores carry the session's lsid.
        with coll.watch(session=s, max_await_time_ms=100) as in_session:
            coll.insert_one({"_id": 1})
            assert in_session.next()["documentKey"] == {"_id": 1}
    client.drop_database(name)
