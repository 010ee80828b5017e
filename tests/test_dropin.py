"""The silent surprises of issue 9, each by name, checked against PyMongo 4 on the same server."""

from __future__ import annotations

import time
from typing import Any

import pymongo
import pytest
from pymongo import monitoring
from pymongo.errors import ConfigurationError, InvalidOperation
from pymongo.operations import IndexModel
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference
from pymongo.write_concern import WriteConcern

import mongo_requests
from helpers import unique_app, wait_until
from mongo_requests.database import Database


class Recorder(monitoring.CommandListener):
    def __init__(self) -> None:
        self.started_events: list[monitoring.CommandStartedEvent] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.started_events.append(event)

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass

    def last(self, name: str) -> dict[str, Any]:
        return [e for e in self.started_events if e.command_name == name][-1].command


def test_client_read_preference_is_not_a_database(client, pm):
    assert client.read_preference == ReadPreference.PRIMARY == pm.read_preference
    assert client.read_preference.mode == 0


def test_client_is_primary_is_not_a_database(client, pm):
    assert client.is_primary is True and pm.is_primary is True
    assert client.is_mongos is False
    # As in PyMongo: a standalone is no replica set, so it has no primary, nor secondaries.
    assert client.primary is None and pm.primary is None
    assert client.secondaries == set() == pm.secondaries


def test_client_nodes(client, pm):
    pm.admin.command("ping")
    assert client.nodes == frozenset([client.address]) == pm.nodes


def test_read_concern_is_a_read_concern(client, db, pm):
    assert db.things.read_concern == ReadConcern() == pm[db.name].things.read_concern
    assert db.read_concern == ReadConcern() and client.read_concern == ReadConcern()


def test_connection_host_port_alive_and_is_locked(mongodb_uri, mode, admin_client):
    conn = mongo_requests.Connection(mongodb_uri, **mode.client_options)
    try:
        assert (conn.host, conn.port) == conn.address
        assert conn.alive() is True
        assert conn.is_locked is False
        # PyMongo 2's fsync and unlock, checked by the server's own currentOp (is_locked).
        assert conn.fsync()["ok"] == 1
        assert conn.is_locked is False
        conn.fsync(lock=True)
        try:
            assert conn.is_locked is True
            assert conn.unlock()["ok"] == 1
        finally:
            if conn.is_locked:
                admin_client.admin.command("fsyncUnlock")
        assert conn.is_locked is False
        # PyMongo 2's limits are the server's hello, not a database of that name.
        hello = admin_client.admin.command("hello")
        assert conn.max_bson_size == hello["maxBsonObjectSize"]
        assert conn.max_message_size == hello["maxMessageSizeBytes"]
        assert conn.max_write_batch_size == hello["maxWriteBatchSize"]
        assert (conn.min_wire_version, conn.max_wire_version) == (hello["minWireVersion"], hello["maxWireVersion"])
        assert conn.document_class is dict and conn.tz_aware is False
        for name in ("copy_database", "close_cursor", "kill_cursors", "set_cursor_manager"):
            with pytest.raises(NotImplementedError, match=name):
                getattr(conn, name)
    finally:
        conn.close()
    assert mongo_requests.MongoClient("127.0.0.1:1", serverSelectionTimeoutMS=100).alive() is False


def test_count_honours_skip_and_limit(db):
    db.things.insert_many([{"_id": i} for i in range(10)])
    assert db.things.count() == 10
    assert db.things.count({}, skip=3, limit=4) == 4
    assert db.things.count({"_id": {"$gte": 5}}, skip=3) == 2
    assert db.things.count({}, limit=4) == db.things.count_documents({}, limit=4) == 4
    with pytest.raises(TypeError):
        db.things.count({}, skip="3")


def test_find_one_and_update_honours_the_collections_w0(make_client, db, pm):
    rec = Recorder()
    client = make_client(event_listeners=[rec])
    ours = client[db.name].get_collection("fam", write_concern=WriteConcern(w=0))
    theirs = pm[db.name].get_collection("fam_pm", write_concern=WriteConcern(w=0))
    for coll in (ours, theirs):
        coll.with_options(write_concern=WriteConcern(w=1)).insert_one({"_id": 1, "n": 0})
    with client.start_request():
        assert ours.find_one_and_update({"_id": 1}, {"$inc": {"n": 1}}) is None
        assert rec.last("findAndModify")["writeConcern"] == {"w": 0}
        # Same socket, applied in order: the next read sees it.
        assert ours.find_one({"_id": 1}) == {"_id": 1, "n": 1}
        # A per-call write concern wins: acknowledged, so the document comes back.
        assert ours.find_one_and_update({"_id": 1}, {"$inc": {"n": 1}}, write_concern=WriteConcern(w=1)) == {
            "_id": 1,
            "n": 1,
        }
    assert theirs.find_one_and_update({"_id": 1}, {"$inc": {"n": 1}}) is None


def test_bypass_document_validation_false_is_sent(make_client, db):
    rec = Recorder()
    coll = make_client(event_listeners=[rec])[db.name].things
    coll.insert_one({"_id": 1}, bypass_document_validation=False)
    assert rec.last("insert")["bypassDocumentValidation"] is False
    coll.update_one({"_id": 1}, {"$set": {"a": 1}}, bypass_document_validation=False)
    assert rec.last("update")["bypassDocumentValidation"] is False
    coll.insert_one({"_id": 2})
    assert "bypassDocumentValidation" not in rec.last("insert")


def test_distinct_sends_its_empty_query(make_client, db):
    rec = Recorder()
    coll = make_client(event_listeners=[rec])[db.name].things
    coll.insert_many([{"a": 1}, {"a": 2}])
    assert sorted(coll.distinct("a", {})) == [1, 2]
    assert rec.last("distinct")["query"] == {}
    coll.distinct("a")
    assert "query" not in rec.last("distinct")


def test_bool_of_a_collection_or_database_raises_as_in_pymongo(db, pm):
    for ours, theirs in ((db.things, pm[db.name].things), (db, pm[db.name])):
        with pytest.raises(NotImplementedError):
            bool(theirs)
        with pytest.raises(NotImplementedError, match="compare with None"):
            bool(ours)
        assert ours is not None


def test_unsupported_pymongo_attributes_raise_clearly(client, db):
    for name in ("create_search_index", "update_search_index", "list_search_indexes"):
        with pytest.raises(AttributeError, match="not supported"):
            getattr(db.things, name)
        with pytest.raises(NotImplementedError):
            getattr(db.things, name)
        assert not hasattr(db.things, name)
    for obj, name in ((client, "topology_description"), (client, "options"), (db, "cursor_command")):
        with pytest.raises(NotImplementedError, match="not supported"):
            getattr(obj, name)
    # Not iterators, as in PyMongo.
    with pytest.raises(TypeError):
        db.things.next()
    with pytest.raises(TypeError):
        client.next()
    with pytest.raises(TypeError):
        iter(client)
    with pytest.raises(TypeError):
        iter(db)


def test_removed_server_commands_raise_instead_of_answering(db):
    for call in (
        lambda: db.eval("1"),
        db.error,
        db.last_status,
        db.previous_error,
        db.reset_error_history,
        lambda: db.things.group({"a": 1}, {}, {}, "function(){}"),
    ):
        with pytest.raises(InvalidOperation, match="removed in MongoDB"):
            call()


def test_read_options_are_honoured_or_refused(db, pm):
    assert db.with_options(read_preference=ReadPreference.PRIMARY).read_preference == ReadPreference.PRIMARY
    assert db.get_collection("x", read_concern=ReadConcern()).read_concern == ReadConcern()
    # Every read preference is honoured (replica sets); a standalone serves any of them.
    secondary = db.with_options(read_preference=ReadPreference.SECONDARY)
    assert secondary.things.read_preference == ReadPreference.SECONDARY
    db.things.insert_one({"_id": "rp"})
    assert secondary.things.find_one({"_id": "rp"}) == {"_id": "rp"}
    nearest = db.client.get_database(db.name, read_preference=ReadPreference.NEAREST)
    assert nearest.read_preference == ReadPreference.NEAREST == nearest.things.read_preference
    with pytest.raises(TypeError, match="read preference"):
        db.with_options(read_preference="secondary")
    with pytest.raises(ConfigurationError, match="read concern"):
        db.things.with_options(read_concern=ReadConcern("majority"))
    assert isinstance(db.client.get_database(db.name, read_concern=ReadConcern()), Database)
    wc = WriteConcern(w=0)
    assert db.things.with_options(write_concern=wc).write_concern == wc


def test_database_aggregate_list_collections_validate(db, pm):
    db.things.insert_one({"_id": 1})
    docs = list(db.aggregate([{"$documents": [{"x": 1}, {"x": 2}]}, {"$match": {"x": 2}}]))
    assert docs == list(pm[db.name].aggregate([{"$documents": [{"x": 1}, {"x": 2}]}, {"$match": {"x": 2}}]))
    names = {c["name"] for c in db.list_collections()}
    assert names == {c["name"] for c in pm[db.name].list_collections()} == {"things"}
    assert db.validate_collection("things")["valid"] is True
    dbs = {d["name"] for d in db.client.list_databases()}
    assert db.name in dbs and dbs == {d["name"] for d in pm.list_databases()}


def test_create_indexes_rename_options_and_drop_indexes_on_a_missing_collection(db, pm):
    names = db.things.create_indexes([IndexModel([("a", 1)]), IndexModel([("b", -1)], name="b_desc", unique=True)])
    assert names == ["a_1", "b_desc"]
    info = db.things.index_information()
    assert info["b_desc"]["unique"] is True and info["a_1"]["key"] == [("a", 1)]
    db.missing.drop_indexes()  # no error, as in PyMongo
    pm[db.name].missing.drop_indexes()
    db.create_collection("capped", capped=True, size=4096)
    assert db.capped.options() == pm[db.name].capped.options() == {"capped": True, "size": 4096}
    assert db.nothing_here.options() == {}
    db.things.rename("renamed")
    assert set(db.list_collection_names()) == {"renamed", "capped"}
    assert db.renamed.index_information().keys() == {"_id_", "a_1", "b_desc"}
    db.capped.insert_one({"x": 1})
    with pytest.raises(pymongo.errors.OperationFailure):
        db.renamed.rename("capped")
    db.renamed.rename("capped", dropTarget=True)
    assert db.list_collection_names() == ["capped"]


def test_pymongo2_ensure_index_spellings(db):
    assert db.things.ensure_index("a", cache_for=60) == "a_1"
    assert db.things.ensure_index([("b", 1)], ttl=60, expireAfterSeconds=3600) == "b_1"
    assert db.things.index_information()["b_1"]["expireAfterSeconds"] == 3600


def test_cursor_slicing_and_indexing_match_pymongo(db, pm):
    docs = [{"_id": i} for i in range(10)]
    db.things.insert_many([dict(d) for d in docs])
    theirs = pm[db.name].things
    assert db.things.find().sort("_id")[3] == theirs.find().sort("_id")[3] == {"_id": 3}
    assert list(db.things.find().sort("_id")[2:5]) == list(theirs.find().sort("_id")[2:5])
    assert list(db.things.find().sort("_id").skip(1)[2:]) == list(theirs.find().sort("_id").skip(1)[2:])
    with pytest.raises(IndexError):
        db.things.find()[50]
    with pytest.raises(IndexError):
        db.things.find()[-1]
    with pytest.raises(IndexError):
        db.things.find()[1:5:2]
    assert list(db.things.find()[3:3]) == list(theirs.find()[3:3]) == []


def test_cursor_address_retrieved_try_next_alive(db, pm):
    db.things.insert_many([{"_id": i} for i in range(5)])
    cursor = db.things.find(batch_size=2)
    assert cursor.address is None and cursor.retrieved == 0
    assert next(cursor) == {"_id": 0}
    assert cursor.address == db.client.address and cursor.retrieved == 2 and cursor.alive
    assert [cursor.try_next() for _ in range(5)] == [{"_id": i} for i in range(1, 5)] + [None]
    assert cursor.retrieved == 5 and not cursor.alive
    agg = db.things.aggregate([{"$sort": {"_id": 1}}], batchSize=1).batch_size(3)
    assert agg.try_next() == {"_id": 0}


def test_tailable_cursor_waits_for_new_documents(db):
    import pymongo as _pm

    db.create_collection("capped", capped=True, size=4096)
    db.capped.insert_one({"_id": 1})
    cursor = db.capped.find(cursor_type=_pm.CursorType.TAILABLE_AWAIT, max_await_time_ms=50)
    assert list(cursor) == [{"_id": 1}]
    assert cursor.alive  # a tailable cursor outlives an empty batch
    db.capped.insert_one({"_id": 2})
    assert list(cursor) == [{"_id": 2}]
    cursor.close()
    with pytest.raises(ValueError):
        db.capped.find(cursor_type=_pm.CursorType.EXHAUST)


def test_map_reduce_and_inline_map_reduce(db):
    db.things.insert_many([{"k": "a", "v": 1}, {"k": "a", "v": 2}, {"k": "b", "v": 5}])
    mapper = "function () { emit(this.k, this.v); }"
    reducer = "function (key, values) { return Array.sum(values); }"
    out = db.things.map_reduce(mapper, reducer, "totals")
    assert sorted((d["_id"], d["value"]) for d in out.find()) == [("a", 3), ("b", 5)]
    inline = db.things.inline_map_reduce(mapper, reducer, query={"k": "a"})
    assert inline == [{"_id": "a", "value": 3}]


def test_pymongo2_find_and_collection_names_spellings(db):
    db.things.insert_many([{"_id": 1, "a": 1, "b": 2}, {"_id": 2, "a": 2}])
    with db.things.find(spec={"a": 1}, fields=["a"], timeout=False) as cursor:
        assert list(cursor) == [{"_id": 1, "a": 1}]
    db.command("profile", 1)  # creates system.profile
    try:
        assert "system.profile" in db.collection_names()
        assert db.collection_names(include_system_collections=False) == ["things"]
    finally:
        db.command("profile", 0)


def test_raw_batches_match_pymongos(db, pm):
    import bson

    db.things.insert_many([{"_id": i, "s": "x" * i} for i in range(7)])
    theirs = pm[db.name].things
    mine = [bson.decode_all(b) for b in db.things.find_raw_batches({}, batch_size=3, sort=[("_id", 1)])]
    ref = [bson.decode_all(b) for b in theirs.find_raw_batches({}, batch_size=3, sort=[("_id", 1)])]
    assert mine == ref and [len(b) for b in mine] == [3, 3, 1]
    limited = [bson.decode_all(b) for b in db.things.find_raw_batches({}, batch_size=3, limit=4)]
    assert sum(len(b) for b in limited) == 4
    pipeline = [{"$sort": {"_id": -1}}, {"$project": {"s": 0}}]
    mine = [bson.decode_all(b) for b in db.things.aggregate_raw_batches(pipeline, batchSize=2)]
    ref = [bson.decode_all(b) for b in theirs.aggregate_raw_batches(pipeline, batchSize=2)]
    assert mine == ref


def test_is_primary_on_a_set_without_primary_answers_at_once(replica_set, make_rs_client):
    client = make_rs_client(serverSelectionTimeoutMS=20000, heartbeatFrequencyMS=500)
    assert client.is_primary is True and client.is_mongos is False
    old = replica_set.wait_for_primary()
    others = [m for m in replica_set.members if m is not old]
    # No member may be elected for a few seconds: the secondaries are frozen, the primary steps down.
    for member in others:
        member.command({"replSetFreeze": 8}, timeout=10)
    try:
        try:
            old.command({"replSetStepDown": 8, "force": True}, timeout=30)
        except OSError:
            pass  # older servers closed every connection on stepdown
        assert wait_until(lambda: replica_set.primary() is None, 10), "a member is still primary"
        assert wait_until(lambda: client.primary is None, 5)
        start = time.monotonic()
        assert client.is_primary is False and client.is_mongos is False
        assert time.monotonic() - start < 3, "is_primary waited for a primary"
        # The server agrees: no member says it is the writable primary.
        assert not any((replica_set.hello(m) or {}).get("isWritablePrimary") for m in replica_set.members)
    finally:
        for member in others:
            member.command({"replSetFreeze": 0}, timeout=10)
        replica_set.wait_for_primary()
    assert wait_until(lambda: client.is_primary, 15)


def test_uri_read_preference_and_retry_writes_are_honoured(replica_set, make_rs_client):
    # Once accepted and ignored: now the URI's readPreference routes reads and retryWrites=false sends no txnNumber.
    name = "uri_" + unique_app()
    for retry in ("true", "false"):
        rec = Recorder()
        client = make_rs_client(
            "%s&readPreference=secondary&retryWrites=%s" % (replica_set.uri, retry), event_listeners=[rec]
        )
        coll = client[name].c
        # Discover the set first: a fresh client's very first write is never retryable (reported, not fixed here).
        client.admin.command("ping")
        coll.insert_one({"_id": retry})
        inserts = [e for e in rec.started_events if e.command_name == "insert"]
        assert ("txnNumber" in inserts[0].command) is (retry == "true")
        assert client.read_preference.mongos_mode == "secondary"
        hello = client[name].command("hello")  # a command: primary, as in PyMongo
        assert hello["isWritablePrimary"] is True
        coll.find_one({"_id": retry})
        find = [e for e in rec.started_events if e.command_name == "find"][-1]
        direct = pymongo.MongoClient("%s:%d" % find.connection_id, directConnection=True)
        try:
            assert direct.admin.command("hello")["secondary"] is True  # the server that answered says so
        finally:
            direct.close()
    make_rs_client().drop_database(name)


def test_pymongo2_profiling_helpers_and_what_is_not_provided(db):
    assert db.profiling_level() == 0
    db.set_profiling_level(2)
    try:
        assert db.profiling_level() == 2
        db.things.find_one({"profiled": True})
        # The profiler's own record of that find, read back through profiling_info().
        finds = [p for p in db.profiling_info() if p.get("op") == "query" and p.get("ns") == db.things.full_name]
        assert any(p["command"].get("filter") == {"profiled": True} for p in finds), finds
        db.set_profiling_level(1, slow_ms=250)
        assert db.command("profile", -1)["slowms"] == 250
    finally:
        db.set_profiling_level(0, slow_ms=100)
    assert db.profiling_level() == 0
    with pytest.raises(ValueError):
        db.set_profiling_level(3)
    with pytest.raises(TypeError):
        db.set_profiling_level(1, slow_ms="250")
    with pytest.raises(InvalidOperation, match="createUser"):
        db.add_user("u", "p")
    # A name that is no method is a collection, and calling it says so, as in PyMongo.
    with pytest.raises(TypeError, match="'create_userx' method on a 'Database'"):
        db.create_userx("u")
    with pytest.raises(TypeError, match="'find_onee' method on a 'Collection'"):
        db.things.find_onee({})


def test_pymongo2_option_names_read_todays_options(mongodb_uri, mode):
    from bson.binary import UuidRepresentation
    from pymongo.read_preferences import Secondary

    conn = mongo_requests.Connection(mongodb_uri, **mode.client_options)  # PyMongo 2 defaults: w=0
    client = mongo_requests.MongoClient(mongodb_uri, localThresholdMS=40, **mode.client_options)
    try:
        assert conn.safe is False and conn.test.safe is False and conn.test.c.safe is False
        assert client.safe is True and client.test.c.safe is True
        assert client.test.c.get_lasterror_options() == {}
        w2 = client.test.c.with_options(write_concern=WriteConcern(w=2, wtimeout=10))
        assert w2.get_lasterror_options() == {"w": 2, "wtimeout": 10}
        assert client.slave_okay is False and client.test.c.tag_sets == [{}]
        tagged = client.test.c.with_options(read_preference=Secondary([{"dc": "ny"}]))
        assert tagged.slave_okay is True and tagged.tag_sets == [{"dc": "ny"}]
        assert client.secondary_acceptable_latency_ms == client.test.c.secondary_acceptable_latency_ms == 40.0
        assert client.test.c.uuid_subtype == UuidRepresentation.UNSPECIFIED
        # Options are immutable: PyMongo 2's setters are refused, loudly.
        with pytest.raises(AttributeError, match="with_options"):
            client.test.c.safe = False
        with pytest.raises(AttributeError, match="with_options"):
            client.test.slave_okay = True
        with pytest.raises(AttributeError, match="with_options"):
            client.test.c.set_lasterror_options(w=2)
    finally:
        conn.close()
        client.close()
