"""Connection pool (CMAP), server, topology and heartbeat events through pymongo.monitoring, checked with the server."""

from __future__ import annotations

import threading
from typing import Any

import pymongo
import pytest
from pymongo import monitoring
from pymongo.errors import AutoReconnect, InvalidOperation, ServerSelectionTimeoutError, WaitQueueTimeoutError

import mongo_requests
from helpers import app_connections, fail_point, unique_app, wait_until
from mongo_requests.events import MonitoredPool
from mongo_requests.pool import Pool


class Rec(
    monitoring.ConnectionPoolListener,
    monitoring.ServerListener,
    monitoring.TopologyListener,
    monitoring.ServerHeartbeatListener,
):
    """Keeps every event of every kind (each listener method just records)."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self._lock = threading.Lock()

    def _add(self, event: Any) -> None:
        with self._lock:
            self.events.append(event)

    pool_created = pool_ready = pool_cleared = pool_closed = _add
    connection_created = connection_ready = connection_closed = _add
    connection_check_out_started = connection_check_out_failed = _add
    connection_checked_out = connection_checked_in = _add
    opened = closed = description_changed = _add
    started = succeeded = failed = _add

    def of(self, *classes: type) -> list[Any]:
        with self._lock:
            return [e for e in self.events if isinstance(e, classes)]

    def names(self, *classes: type) -> list[str]:
        return [type(e).__name__ for e in self.of(*classes)]


class PoolOnly(monitoring.ConnectionPoolListener):
    """A pool listener that records the event class names."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def _add(self, event: Any) -> None:
        self.names.append(type(event).__name__)

    pool_created = pool_ready = pool_cleared = pool_closed = _add
    connection_created = connection_ready = connection_closed = _add
    connection_check_out_started = connection_check_out_failed = _add
    connection_checked_out = connection_checked_in = _add


CMAP = (
    monitoring.PoolCreatedEvent,
    monitoring.PoolReadyEvent,
    monitoring.PoolClearedEvent,
    monitoring.PoolClosedEvent,
    monitoring.ConnectionCreatedEvent,
    monitoring.ConnectionReadyEvent,
    monitoring.ConnectionClosedEvent,
    monitoring.ConnectionCheckOutStartedEvent,
    monitoring.ConnectionCheckOutFailedEvent,
    monitoring.ConnectionCheckedOutEvent,
    monitoring.ConnectionCheckedInEvent,
)


def _pool(client: mongo_requests.MongoClient) -> Any:
    return client._topology.servers[0].pool


# -- CMAP ----------------------------------------------------------------------
def test_pool_events_agree_with_the_servers_connections(make_client, admin_client, mode):
    app = unique_app("cmap")
    rec = Rec()
    client = make_client(appname=app, event_listeners=[rec], maxPoolSize=7)
    coll = client[app].things
    coll.insert_one({"_id": 1})
    # Two sockets at once: one pinned by a request in another worker, one used here.
    pinned, release = mode.event(), mode.event()

    def holder() -> None:
        with client.start_request():
            coll.find_one()
            pinned.set()
            release.wait(10)

    worker = mode.spawn(holder)
    assert pinned.wait(10)
    assert coll.find_one({"_id": 1}) == {"_id": 1}
    release.set()
    assert mode.join([worker], 10) == 0
    assert wait_until(
        lambda: len(rec.of(monitoring.ConnectionCheckedInEvent)) == len(rec.of(monitoring.ConnectionCheckedOutEvent)), 5
    )

    created = rec.of(monitoring.ConnectionCreatedEvent)
    assert len(created) >= 2
    # Every connection the pool says it made is one the server has open for this appName, and no other.
    assert app_connections(admin_client, app) == len(created) - len(rec.of(monitoring.ConnectionClosedEvent))
    first = rec.of(*CMAP)[:2]
    assert [type(e) for e in first] == [monitoring.PoolCreatedEvent, monitoring.PoolReadyEvent]
    assert first[0].address == client.address and first[0].options["maxPoolSize"] == 7
    ids = [e.connection_id for e in created]
    assert ids == sorted(set(ids))
    ready = rec.of(monitoring.ConnectionReadyEvent)
    assert [e.connection_id for e in ready] == ids and all(e.duration >= 0 for e in ready)
    starts, outs = rec.of(monitoring.ConnectionCheckOutStartedEvent), rec.of(monitoring.ConnectionCheckedOutEvent)
    assert len(starts) == len(outs) and {e.connection_id for e in outs} <= set(ids)

    client.close()
    closed = rec.of(monitoring.ConnectionClosedEvent)
    assert sorted(e.connection_id for e in closed) == ids
    assert {e.reason for e in closed} == {monitoring.ConnectionClosedReason.POOL_CLOSED}
    assert type(rec.of(*CMAP)[-1]) is monitoring.PoolClosedEvent
    assert wait_until(lambda: app_connections(admin_client, app) == 0, 5), "the server still has connections"


def test_a_request_checks_out_once_and_in_when_it_ends(make_client, admin_client):
    app = unique_app("cmapreq")
    rec = Rec()
    client = make_client(appname=app, event_listeners=[rec])
    client.admin.command("ping")
    before = len(rec.of(monitoring.ConnectionCheckedOutEvent))
    with client.start_request():
        conn_ids = {client.admin.command("hello")["connectionId"] for _ in range(5)}
        # Reusing the pinned socket touches no pool: one checkout, no checkin yet.
        assert len(rec.of(monitoring.ConnectionCheckedOutEvent)) == before + 1
        assert len(rec.of(monitoring.ConnectionCheckOutStartedEvent)) == before + 1
        checked_in = len(rec.of(monitoring.ConnectionCheckedInEvent))
        assert checked_in == before
    assert len(conn_ids) == 1, "the server saw the request's commands on several connections"
    assert len(rec.of(monitoring.ConnectionCheckedInEvent)) == checked_in + 1
    pinned = rec.of(monitoring.ConnectionCheckedOutEvent)[-1].connection_id
    assert rec.of(monitoring.ConnectionCheckedInEvent)[-1].connection_id == pinned
    assert app_connections(admin_client, app) == len(rec.of(monitoring.ConnectionCreatedEvent))


def test_wait_queue_timeout_and_closed_pool_publish_checkout_failed(make_client):
    rec = Rec()
    client = make_client(event_listeners=[rec], maxPoolSize=1, waitQueueTimeoutMS=50)
    client.admin.command("ping")
    pool = _pool(client)
    held = pool.checkout()
    try:
        with pytest.raises(WaitQueueTimeoutError):
            pool.checkout()
    finally:
        pool.checkin(held)
    failed = rec.of(monitoring.ConnectionCheckOutFailedEvent)
    assert [e.reason for e in failed] == [monitoring.ConnectionCheckOutFailedReason.TIMEOUT]
    assert failed[0].duration >= 0.04
    client.close()
    with pytest.raises(InvalidOperation):
        pool.checkout()
    failed = rec.of(monitoring.ConnectionCheckOutFailedEvent)
    assert failed[-1].reason == monitoring.ConnectionCheckOutFailedReason.POOL_CLOSED


def test_refused_connection_publishes_closed_and_checkout_failed(mode):
    rec = Rec()
    client = mode.client("127.0.0.1:1", event_listeners=[rec], serverSelectionTimeoutMS=200, connectTimeoutMS=200)
    try:
        with pytest.raises(ServerSelectionTimeoutError):
            client.admin.command("ping")
    finally:
        client.close()
    created = rec.of(monitoring.ConnectionCreatedEvent)
    closed = rec.of(monitoring.ConnectionClosedEvent)
    assert created and [e.connection_id for e in closed] == [e.connection_id for e in created]
    assert {e.reason for e in closed} == {monitoring.ConnectionClosedReason.ERROR}
    failed = rec.of(monitoring.ConnectionCheckOutFailedEvent)
    assert failed and {e.reason for e in failed} == {monitoring.ConnectionCheckOutFailedReason.CONN_ERROR}
    assert not rec.of(monitoring.ConnectionReadyEvent, monitoring.ConnectionCheckedOutEvent)
    beats = rec.of(monitoring.ServerHeartbeatFailedEvent)
    assert beats and all(isinstance(e.reply, AutoReconnect) and e.awaited is False for e in beats)


def test_network_error_clears_the_pool_and_closes_stale_sockets(make_client, admin_client):
    app = unique_app("cmapclr")
    rec = Rec()
    client = make_client(appname=app, event_listeners=[rec], retryReads=False)
    coll = client[app].things
    coll.insert_one({"_id": 1})
    pool = _pool(client)
    first = pool.checkout()
    second = pool.checkout()  # two idle sockets once given back
    pool.checkin(first)
    pool.checkin(second)
    assert len(rec.of(monitoring.ConnectionCreatedEvent)) == 2
    with fail_point(admin_client, {"times": 1}, failCommands=["find"], closeConnection=True, appName=app):
        with pytest.raises(AutoReconnect):
            coll.find_one()
    assert rec.of(monitoring.PoolClearedEvent)
    reasons = [e.reason for e in rec.of(monitoring.ConnectionClosedEvent)]
    assert monitoring.ConnectionClosedReason.ERROR in reasons  # the socket the server closed
    assert monitoring.ConnectionClosedReason.STALE in reasons  # the idle one, from before the clear
    open_ = len(rec.of(monitoring.ConnectionCreatedEvent)) - len(reasons)
    assert wait_until(lambda: app_connections(admin_client, app) == open_, 5)
    assert coll.find_one() == {"_id": 1}


def test_no_pool_listener_means_no_pool_events_object(make_client):
    class Cmd(monitoring.CommandListener):
        def started(self, event: Any) -> None: ...
        def succeeded(self, event: Any) -> None: ...
        def failed(self, event: Any) -> None: ...

    for client in (make_client(), make_client(event_listeners=[Cmd()])):
        client.admin.command("ping")
        # A plain Pool: its checkout and checkin carry no event code at all.
        assert type(_pool(client)) is Pool and _pool(client)._events is None and client._topology._sdam is None
    client = make_client(event_listeners=[PoolOnly()])
    assert type(_pool(client)) is MonitoredPool and client._topology._sdam is None


def test_steady_state_pool_events_match_pymongos(mongodb_uri, make_client):
    ours, theirs = PoolOnly(), PoolOnly()
    pm = pymongo.MongoClient(mongodb_uri, directConnection=True, event_listeners=[theirs])
    got = []
    try:
        for client, rec in ((make_client(event_listeners=[ours]), ours), (pm, theirs)):
            client.admin.command("ping")
            start = len(rec.names)
            for _ in range(3):
                client.admin.command("ping")
            got.append(rec.names[start:])  # before close (PyMongo's close checks out once more, for endSessions)
    finally:
        pm.close()
    assert (
        got[0]
        == got[1]
        == ["ConnectionCheckOutStartedEvent", "ConnectionCheckedOutEvent", "ConnectionCheckedInEvent"] * 3
    )


def test_global_pool_listener_is_seen_by_new_clients(make_client):
    rec = PoolOnly()
    monitoring.register(rec)
    try:
        client = make_client()
        client.admin.command("ping")
    finally:
        monitoring._LISTENERS.cmap_listeners.remove(rec)
    assert rec.names[:2] == ["PoolCreatedEvent", "PoolReadyEvent"]
    assert "ConnectionCheckedInEvent" in rec.names


# -- SDAM on a standalone ----------------------------------------------------------
def test_standalone_topology_server_and_heartbeat_events(make_client, admin_client):
    rec = Rec()
    client = make_client(event_listeners=[rec])
    sdam = (
        monitoring.TopologyOpenedEvent,
        monitoring.TopologyDescriptionChangedEvent,
        monitoring.ServerOpeningEvent,
        monitoring.ServerDescriptionChangedEvent,
        monitoring.ServerClosedEvent,
        monitoring.TopologyClosedEvent,
    )
    assert rec.names(*sdam) == ["TopologyOpenedEvent", "TopologyDescriptionChangedEvent", "ServerOpeningEvent"]
    client.admin.command("ping")
    client.admin.command("ping")
    direct = admin_client.admin.command("hello")
    changed = rec.of(monitoring.ServerDescriptionChangedEvent)
    assert len(changed) == 1  # Unknown -> Standalone once, not at every operation
    assert changed[0].previous_description.server_type_name == "Unknown"
    assert changed[0].new_description.server_type_name == "Standalone"
    assert changed[0].server_address == client.address
    topo = rec.of(monitoring.TopologyDescriptionChangedEvent)[-1]
    assert topo.new_description.topology_type_name == "Single"
    assert topo.new_description.has_writable_server()
    beats = rec.of(monitoring.ServerHeartbeatSucceededEvent)
    assert len(beats) == 1 and beats[0].awaited is False and beats[0].connection_id == client.address
    reply = beats[0].reply.document
    assert bool(reply.get("isWritablePrimary", reply.get("ismaster"))) is direct["isWritablePrimary"] is True
    for field in ("maxWireVersion", "maxBsonObjectSize", "topologyVersion"):
        if field == "topologyVersion":
            assert reply[field]["processId"] == direct[field]["processId"]
        else:
            assert reply[field] == direct[field], field
    client.close()
    assert rec.names(monitoring.ServerClosedEvent, monitoring.TopologyClosedEvent) == [
        "ServerClosedEvent",
        "TopologyClosedEvent",
    ]
    ids = {e.topology_id for e in rec.of(*sdam)}
    assert len(ids) == 1


# -- SDAM on the replica set ----------------------------------------------------------
def test_replica_set_heartbeats_agree_with_each_member(replica_set, make_rs_client):
    rec = Rec()
    client = make_rs_client(event_listeners=[rec])
    client.admin.command("ping")
    beats = rec.of(monitoring.ServerHeartbeatSucceededEvent)
    seen = {e.connection_id for e in beats}
    assert seen == {m.address for m in replica_set.members}
    assert len(rec.of(monitoring.ServerHeartbeatStartedEvent)) >= len(beats)
    for event in beats:
        assert event.awaited is False and event.duration >= 0
        direct = pymongo.MongoClient("%s:%d" % event.connection_id, directConnection=True)
        try:
            hello = direct.admin.command("hello")
        finally:
            direct.close()
        doc = event.reply.document
        assert doc["setName"] == hello["setName"] == replica_set.name
        assert doc["me"] == hello["me"] and sorted(doc["hosts"]) == sorted(hello["hosts"])
        assert doc["topologyVersion"]["processId"] == hello["topologyVersion"]["processId"]
    topo = rec.of(monitoring.TopologyDescriptionChangedEvent)[-1].new_description
    assert topo.topology_type_name == "ReplicaSetWithPrimary"
    assert {sd.server_type_name for sd in topo.server_descriptions().values()} == {"RSPrimary", "RSSecondary"}
    assert len(rec.of(monitoring.ServerOpeningEvent)) == 3


def test_replica_set_stepdown_shows_in_the_description_changes(replica_set, make_rs_client):
    rec = Rec()
    client = make_rs_client(event_listeners=[rec], heartbeatFrequencyMS=500)
    client.admin.command("ping")
    old = client.primary
    mark = len(rec.events)
    replica_set.stepdown()
    # The next write finds out (not writable primary, or the next scan) and follows the new primary.
    coll = client[unique_app("sd")].things
    coll.insert_one({"_id": 1})
    new = client.primary
    assert new is not None and new != old
    changes = [e for e in rec.events[mark:] if isinstance(e, monitoring.ServerDescriptionChangedEvent)]
    old_after = [e.new_description.server_type_name for e in changes if e.server_address == old]
    new_after = [e.new_description.server_type_name for e in changes if e.server_address == new]
    assert old_after and old_after[-1] in ("RSSecondary", "Unknown") and "RSPrimary" not in old_after
    assert new_after and new_after[-1] == "RSPrimary"
    for e in changes:
        assert (
            e.previous_description.server_type_name != e.new_description.server_type_name
            or e.previous_description != e.new_description
        )
    # The server agrees: the member the last event calls primary says so itself.
    direct = pymongo.MongoClient("%s:%d" % new, directConnection=True)
    try:
        assert direct.admin.command("hello")["isWritablePrimary"] is True
    finally:
        direct.close()
    topo = [e for e in rec.events[mark:] if isinstance(e, monitoring.TopologyDescriptionChangedEvent)]
    assert topo and topo[-1].new_description.topology_type_name == "ReplicaSetWithPrimary"
