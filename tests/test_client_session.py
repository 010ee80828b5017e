"""Explicit sessions: ``session=`` on every operation, cluster time gossip, snapshot reads.

What the driver sends is observed with a command listener; what it means is
checked on the server (a transaction that is aborted leaves nothing).
"""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import monitoring
from pymongo.errors import ConfigurationError, InvalidOperation
from pymongo.operations import InsertOne, UpdateOne

from helpers import unique_app

pytestmark = pytest.mark.usefixtures("watchdog")


class _Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_sessions_on_a_standalone(make_client, mode):
    listener = _Commands()
    client = make_client(event_listeners=[listener])
    other = make_client()
    coll = client[unique_app("sess")].c
    coll.insert_one({"_id": 1})
    coll.find_one({"_id": 1})
    # Without a session a standalone sees no session field at all.
    assert not any("lsid" in c or "$clusterTime" in c for c in listener.commands)
    with client.start_session() as s:
        lsid = s.session_id
        listener.commands.clear()
        assert coll.find_one({"_id": 1}, session=s) == {"_id": 1}
        coll.update_one({"_id": 1}, {"$set": {"x": 1}}, session=s)
        assert [c.get("lsid") for c in listener.commands] == [lsid, lsid]
        # No cluster time on a standalone, and no session for w=0 writes.
        assert not any("$clusterTime" in c for c in listener.commands)
        with pytest.raises(ConfigurationError, match="unacknowledged"):
            coll.insert_one({"_id": 2}, session=s, w=0)
        with pytest.raises(InvalidOperation, match="MongoClient that started it"):
            other[coll.database.name].c.find_one({}, session=s)
        with pytest.raises(TypeError):
            coll.find_one({}, session="not a session")
        # A cursor names its explicit session, as PyMongo's does; None without one.
        assert coll.find(session=s).session is s
        assert coll.aggregate([], session=s).session is s
        assert coll.find().session is None and coll.aggregate([]).session is None
        # PyMongo 2's methods never took a session: refused, saying what to use.
        with pytest.raises(ConfigurationError, match="take no session"):
            coll.insert({"_id": 3}, session=s)
    assert s.has_ended
    with pytest.raises(InvalidOperation, match="ended session"):
        coll.find_one({}, session=s)
    client.drop_database(coll.database.name)


def test_every_operation_takes_the_session(replica_set, make_rs_client):
    """Each operation in a transaction that is then aborted: had one ignored session=, its effect would stay."""
    listener = _Commands()
    client = make_rs_client(event_listeners=[listener])
    name = unique_app("every")
    db = client[name]
    db.c.insert_many([{"_id": i, "n": i} for i in range(10)])
    db.create_collection("d")
    with client.start_session() as s:
        lsid = s.session_id
        with s.start_transaction():
            listener.commands.clear()
            db.c.insert_one({"_id": 100}, session=s)
            db.c.insert_many([{"_id": 101}, {"_id": 102}], session=s)
            db.c.update_one({"_id": 0}, {"$set": {"u": 1}}, session=s)
            db.c.update_many({"_id": {"$lt": 3}}, {"$set": {"m": 1}}, session=s)
            db.c.replace_one({"_id": 3}, {"r": 1}, session=s)
            db.c.delete_one({"_id": 4}, session=s)
            db.c.delete_many({"_id": {"$in": [5, 6]}}, session=s)
            db.c.bulk_write([InsertOne({"_id": 103}), UpdateOne({"_id": 7}, {"$set": {"b": 1}})], session=s)
            db.c.find_one_and_update({"_id": 8}, {"$set": {"f": 1}}, session=s)
            db.c.find_one_and_replace({"_id": 9}, {"fr": 1}, session=s)
            db.c.find_one_and_delete({"_id": 1}, session=s)
            db.d.insert_one({"_id": 1}, session=s)
            # Reads in the transaction see its writes; a cursor's getMores too.
            remaining = [0, 2, 3, 7, 8, 9, 100, 101, 102, 103]
            assert sorted(d["_id"] for d in db.c.find({}, session=s).batch_size(2)) == remaining
            assert db.c.count_documents({}, session=s) == 10
            assert sorted(db.c.distinct("_id", session=s)) == remaining
            assert len(list(db.c.aggregate([{"$match": {}}], batchSize=2, session=s))) == 10
            assert db.command("find", "c", filter={"_id": 100}, session=s)["cursor"]["firstBatch"] == [{"_id": 100}]
            sent = [c for c in listener.commands if next(iter(c)) not in ("commitTransaction", "abortTransaction")]
            assert sent and all(c.get("lsid") == lsid and c.get("autocommit") is False for c in sent), sent
            assert sum(1 for c in sent if c.get("startTransaction")) == 1
            s.abort_transaction()
        # Nothing of it stayed.
        assert sorted(d["_id"] for d in db.c.find()) == list(range(10))
        assert db.d.count_documents({}) == 0
        # Helpers outside a transaction carry the session too.
        listener.commands.clear()
        db.c.create_index("n", session=s)
        assert "n_1" in db.c.index_information(session=s)
        db.c.drop_index("n_1", session=s)
        assert "d" in db.list_collection_names(session=s)
        db.drop_collection("d", session=s)
        assert db.c.estimated_document_count(session=s) == 10
        assert all(c.get("lsid") == lsid for c in listener.commands), listener.commands
    client.drop_database(name)


def test_cluster_time_is_gossiped_and_tracked(replica_set, make_rs_client):
    listener = _Commands()
    client = make_rs_client(event_listeners=[listener])
    name = unique_app("gossip")
    coll = client[name].c
    # The client gossips from its first command after it has found the set.
    client.admin.command("ping")
    coll.insert_one({"_id": 1})
    first = client.cluster_time
    assert first is not None and "clusterTime" in first and "signature" in first
    coll.insert_one({"_id": 2})
    assert client.cluster_time["clusterTime"] >= first["clusterTime"]
    assert listener.commands[-1]["$clusterTime"]["clusterTime"] >= first["clusterTime"]
    with client.start_session() as s:
        assert s.cluster_time is None and s.operation_time is None
        coll.insert_one({"_id": 3}, session=s)
        assert s.operation_time is not None
        assert s.cluster_time["clusterTime"] >= s.operation_time
        # Another session catches up with it: its first read waits for that time.
        with client.start_session() as t:
            t.advance_cluster_time(s.cluster_time)
            t.advance_operation_time(s.operation_time)
            listener.commands.clear()
            assert coll.find_one({"_id": 3}, session=t) == {"_id": 3}
            assert listener.commands[0]["readConcern"] == {"afterClusterTime": s.operation_time}
            with pytest.raises(TypeError):
                t.advance_operation_time(5)
    client.drop_database(name)


def test_snapshot_session_reads_one_point_in_time(replica_set, make_rs_client):
    client = make_rs_client()
    name = unique_app("snap")
    coll = client[name].c
    coll.insert_one({"_id": 1}, w="majority")
    with pytest.raises(ConfigurationError):
        client.start_session(snapshot=True, causal_consistency=True)
    with client.start_session(snapshot=True) as s:
        assert coll.find_one({"_id": 1}, session=s) == {"_id": 1}
        coll.insert_one({"_id": 2}, w="majority")
        # The snapshot was taken at the first read: the later write is not in it.
        assert [d["_id"] for d in coll.find({}, session=s)] == [1]
        assert coll.count_documents({}) == 2
        with pytest.raises(InvalidOperation, match="snapshot"):
            s.start_transaction()
    client.drop_database(name)


def _idle_cursor(client, cursor_id: int) -> list[dict]:
    return list(
        client.admin.aggregate(
            [
                {"$currentOp": {"idleCursors": True, "allUsers": True}},
                {"$match": {"type": "idleCursor", "cursor.cursorId": cursor_id}},
            ]
        )
    )


def test_cursors_get_an_implicit_session_on_a_replica_set(replica_set, make_rs_client):
    listener = _Commands()
    client = make_rs_client(event_listeners=[listener])
    name = unique_app("implicit")
    coll = client[name].c
    coll.insert_many([{"_id": i} for i in range(7)])
    listener.commands.clear()
    assert len(list(coll.find().batch_size(2))) == 7
    assert len(list(coll.aggregate([], batchSize=3))) == 7
    cursor_commands = [c for c in listener.commands if next(iter(c)) in ("find", "aggregate", "getMore")]
    find_lsid = cursor_commands[0]["lsid"]
    by_kind = [(next(iter(c)), c["lsid"] == find_lsid) for c in cursor_commands]
    # find + 3 getMores in one session; aggregate + 2 getMores in one (the pooled one again).
    assert [k for k, _ in by_kind] == ["find"] + ["getMore"] * 3 + ["aggregate"] + ["getMore"] * 2
    assert all(c.get("lsid") == cursor_commands[4]["lsid"] for c in cursor_commands[4:])
    assert client._cursor_sessions == {}  # exhausted cursors gave their sessions back
    # find_one (a single batch) needs no session.
    listener.commands.clear()
    coll.find_one({"_id": 1})
    assert "lsid" not in listener.commands[-1]
    # A cursor closed early: killCursors in its session; one dropped: killed with the next operation.
    for drop in (False, True):
        cursor = coll.find().batch_size(2)
        next(cursor)
        cursor_id = cursor.cursor_id
        assert len(_idle_cursor(client, cursor_id)) == 1
        if drop:
            del cursor
            import gc

            gc.collect()
            coll.find_one({"_id": 1})
        else:
            cursor.close()
        assert _idle_cursor(client, cursor_id) == []
        assert client._cursor_sessions == {}
    client.drop_database(name)
