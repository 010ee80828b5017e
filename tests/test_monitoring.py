"""Command monitoring through pymongo.monitoring: events, their fields, and what the server says it received."""

from __future__ import annotations

import datetime
from typing import Any

import pymongo
import pytest
from pymongo import monitoring
from pymongo.errors import OperationFailure
from pymongo.operations import InsertOne, UpdateOne
from pymongo.write_concern import WriteConcern

import mongo_requests
from mongo_requests import monitoring as mr_monitoring


class Recorder(monitoring.CommandListener):
    """Keeps every event."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.events.append(event)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self.events.append(event)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.events.append(event)

    def of(self, cls: type, name: str | None = None) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls) and (name is None or e.command_name == name)]


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def mon_client(make_client, rec):
    return make_client(event_listeners=[rec])


def test_events_carry_pymongos_fields_and_agree_with_the_server(mon_client, rec, db):
    coll = mon_client[db.name].things
    with mon_client.start_request():
        # hello's connectionId is the server's id for the socket it came on:
        # the one pinned by this request, which carries every command below.
        server_conn_id = mon_client.admin.command("hello")["connectionId"]
        coll.insert_one({"_id": 1, "x": 1}, comment="mark-insert")
        assert coll.find_one({"_id": 1}) == {"_id": 1, "x": 1}
    started = rec.of(monitoring.CommandStartedEvent, "insert")
    succeeded = rec.of(monitoring.CommandSucceededEvent, "insert")
    assert len(started) == len(succeeded) == 1
    s, ok = started[0], succeeded[0]
    assert s.database_name == db.name == ok.database_name
    assert s.command["insert"] == "things"
    assert s.command["documents"] == [{"_id": 1, "x": 1}]
    assert s.command["comment"] == "mark-insert"
    assert s.command["$db"] == db.name
    assert s.request_id == ok.request_id and s.operation_id == s.request_id
    assert s.connection_id == ok.connection_id == mon_client.address
    assert s.server_connection_id == ok.server_connection_id == server_conn_id
    assert isinstance(ok.duration_micros, int) and ok.duration_micros >= 0
    assert ok.reply["n"] == 1 and ok.reply["ok"] == 1
    # Every started event is closed by exactly one succeeded event with its request id.
    starts = [e.request_id for e in rec.of(monitoring.CommandStartedEvent)]
    ends = [e.request_id for e in rec.of(monitoring.CommandSucceededEvent)]
    assert starts == ends and len(set(starts)) == len(starts)


def test_the_profiler_saw_what_the_event_said(mon_client, rec, db):
    mdb = mon_client[db.name]
    mdb.command("profile", 2)
    try:
        mdb.things.update_one({"_id": 7}, {"$set": {"a": 1}}, upsert=True, comment="mark-update")
        mdb.things.find_one({"_id": 7}, comment="mark-find")
    finally:
        mdb.command("profile", 0)
    events = {e.command_name: e for e in rec.of(monitoring.CommandStartedEvent)}
    for name, mark in (("update", "mark-update"), ("find", "mark-find")):
        event = events[name]
        assert event.command["comment"] == mark
        profiled = mdb["system.profile"].find_one({"command.comment": mark})
        assert profiled is not None, "the server did not profile %s" % name
        assert profiled["ns"] == "%s.things" % db.name
        server_cmd = profiled["command"]
        if name == "find":
            assert server_cmd["filter"] == event.command["filter"]
        else:
            assert server_cmd["u"] == event.command["updates"][0]["u"] == {"$set": {"a": 1}}


def test_w0_write_in_a_request_publishes_ok_and_is_visible(mon_client, rec, db):
    coll = mon_client[db.name].get_collection("w0", write_concern=WriteConcern(w=0))
    with mon_client.start_request():
        coll.insert_one({"_id": 1})
        coll.bulk_write([InsertOne({"_id": 2}), UpdateOne({"_id": 2}, {"$set": {"b": 1}})], ordered=False)
        assert coll.find_one({"_id": 2}) == {"_id": 2, "b": 1}
    for name, count in (("insert", 2), ("update", 1)):
        assert [e.reply for e in rec.of(monitoring.CommandSucceededEvent, name)] == [{"ok": 1}] * count
        assert [e.command["writeConcern"] for e in rec.of(monitoring.CommandStartedEvent, name)] == [{"w": 0}] * count


def test_failed_command_publishes_the_servers_reply(mon_client, rec, db):
    with pytest.raises(OperationFailure) as info:
        mon_client[db.name].command("noSuchCommandHere")
    failed = rec.of(monitoring.CommandFailedEvent, "noSuchCommandHere")
    assert len(failed) == 1
    assert failed[0].failure["code"] == info.value.code == 59
    assert failed[0].database_name == db.name
    assert not rec.of(monitoring.CommandSucceededEvent, "noSuchCommandHere")


def test_sensitive_commands_are_redacted(mon_client, rec, db, admin_client):
    mdb = mon_client[db.name]
    mdb.command("createUser", "mon_user", pwd="s3cret-pwd", roles=[])
    try:
        assert admin_client[db.name].command("usersInfo", "mon_user")["users"], "the server created no user"
        started = rec.of(monitoring.CommandStartedEvent, "createUser")
        succeeded = rec.of(monitoring.CommandSucceededEvent, "createUser")
        assert started[0].command == {} and succeeded[0].reply == {}
        shown = []
        for e in rec.events:
            for attr in ("command", "reply", "failure"):
                if hasattr(type(e), attr):
                    shown.append(getattr(e, attr))
        assert "s3cret-pwd" not in repr(shown) + repr(rec.events)
    finally:
        mdb.command("dropUser", "mon_user")


def test_a_failing_listener_does_not_break_operations(make_client, db, capsys):
    class Broken(monitoring.CommandListener):
        def started(self, event: Any) -> None:
            raise RuntimeError("listener bug")

        def succeeded(self, event: Any) -> None:
            raise RuntimeError("listener bug")

        def failed(self, event: Any) -> None:
            raise RuntimeError("listener bug")

    client = make_client(event_listeners=[Broken()])
    client[db.name].things.insert_one({"_id": 1})
    assert client[db.name].things.find_one() == {"_id": 1}
    assert "listener bug" in capsys.readouterr().err


def test_batches_are_published_one_event_each(mon_client, rec, db, admin_client):
    def inserts() -> int:
        return int(admin_client.admin.command("serverStatus")["metrics"]["commands"]["insert"]["total"])

    big = "x" * (1024 * 1024)
    before = inserts()
    mon_client[db.name].big.insert_many([{"_id": i, "s": big} for i in range(60)])
    sent = inserts() - before
    started = rec.of(monitoring.CommandStartedEvent, "insert")
    assert sent == len(started) >= 2
    assert sum(len(e.command["documents"]) for e in started) == 60


def test_global_listeners_are_seen_by_new_clients(make_client, db):
    rec = Recorder()
    monitoring.register(rec)
    try:
        client = make_client()
        client[db.name].things.insert_one({"_id": 1})
    finally:
        # pymongo.monitoring has register() but no unregister().
        monitoring._LISTENERS.command_listeners.remove(rec)
    assert rec.of(monitoring.CommandSucceededEvent, "insert")


def test_without_pymongos_private_registry_explicit_listeners_still_work(make_client, db, monkeypatch):
    # The fallback path of global_command_listeners: no pymongo.monitoring._LISTENERS.
    monkeypatch.delattr(monitoring, "_LISTENERS")
    assert mr_monitoring.global_command_listeners() == []
    rec = Recorder()
    client = make_client(event_listeners=[rec])
    client[db.name].things.insert_one({"_id": 1})
    assert rec.of(monitoring.CommandSucceededEvent, "insert")
    assert make_client()._listeners is None


def test_no_listener_means_no_monitored_path(make_client):
    assert make_client()._listeners is None
    assert make_client(event_listeners=[])._listeners is None


def test_bad_listeners_are_refused():
    # Every kind of pymongo.monitoring listener is accepted (tests/test_events.py); anything else is a TypeError.
    mongo_requests.MongoClient("127.0.0.1:1", event_listeners=[monitoring.ConnectionPoolListener()]).close()
    with pytest.raises(TypeError, match="pymongo.monitoring listeners"):
        mongo_requests.MongoClient("127.0.0.1:1", event_listeners=[object()])
    with pytest.raises(TypeError):
        mongo_requests.MongoClient("127.0.0.1:1", event_listeners=Recorder())


def test_events_match_pymongos_for_the_same_operations(mongodb_uri, make_client, db):
    ours, theirs = Recorder(), Recorder()
    pm = pymongo.MongoClient(mongodb_uri, directConnection=True, event_listeners=[theirs])
    try:
        for client, coll_name in ((make_client(event_listeners=[ours]), "a"), (pm, "b")):
            coll = client[db.name][coll_name]
            coll.insert_one({"_id": 1, "x": 1})
            coll.update_one({"_id": 1}, {"$inc": {"x": 1}})
            coll.find_one({"_id": 1})
            coll.delete_one({"_id": 1})
    finally:
        pm.close()

    def shape(rec: Recorder) -> list[tuple[str, str, str]]:
        return [
            (type(e).__name__, e.command_name, e.database_name)
            for e in rec.events
            if e.command_name in ("insert", "update", "find", "delete")
        ]

    assert shape(ours) == shape(theirs)

    def crud(rec: Recorder) -> list[Any]:
        # PyMongo also sends commands of its own (endSessions on close): compare the operations only.
        crud_names = ("insert", "update", "find", "delete")
        return [e for e in rec.of(monitoring.CommandStartedEvent) if e.command_name in crud_names]

    session_keys = {"lsid", "$clusterTime", "$readPreference", "txnNumber"}
    for mine, ref in zip(crud(ours), crud(theirs), strict=True):
        assert set(mine.command) == set(ref.command) - session_keys
        assert {k: v for k, v in mine.command.items() if k != "$db"} == {
            k: v for k, v in ref.command.items() if k not in session_keys | {"$db"}
        } | {mine.command_name: "a"}


def test_opentelemetry_pymongo_instrumentation_sees_our_commands(make_client, db):
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    # Not shut down at exit: that atexit entry would keep the provider alive for the rest of the session, and
    # with it the at-fork hook it registers, which starts a thread in every forked child (under gevent that
    # runs the parent's greenlets in gevent's Popen child before it execs).  Unreferenced, the hook is inert.
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = PymongoInstrumentor()
    before = list(monitoring._LISTENERS.command_listeners)
    instrumentor.instrument(tracer_provider=provider)
    try:
        client = make_client()  # created after instrument(): it picks up the global listener
        client[db.name].otel.insert_one({"_id": 1})
        assert client[db.name].otel.find_one({"_id": 1}) == {"_id": 1}
    finally:
        instrumentor.uninstrument()
        # uninstrument() only silences its listener: pymongo.monitoring has no unregister, so the
        # listener would stay registered and every later client of this process would carry it.
        monitoring._LISTENERS.command_listeners[:] = before
    spans = exporter.get_finished_spans()
    provider.shutdown()
    names = [s.name for s in spans]
    assert any("insert" in n for n in names) and any("find" in n for n in names), names
    insert_span = next(s for s in spans if "insert" in s.name)
    attrs = dict(insert_span.attributes or {})
    assert db.name in attrs.values()
    assert client.address[1] in attrs.values()
    assert insert_span.end_time is not None and insert_span.status.is_ok


def test_durations_are_timedeltas(mon_client, rec, db):
    mon_client[db.name].command("ping")
    ok = rec.of(monitoring.CommandSucceededEvent, "ping")[0]
    assert isinstance(ok.duration_micros, int)
    assert datetime.timedelta(microseconds=ok.duration_micros) < datetime.timedelta(seconds=30)
