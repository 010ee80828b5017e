"""CRUD against the real server: the modern API, PyMongo 2's, write concerns,
error mapping and the server's size limits.

Every test talks to the session's mongod through the ``client``/``db``
fixtures; expected values come from what the test wrote, or from asking the
server, never from a mock.
"""

from __future__ import annotations

import math
import socket
import time

import pytest
from bson.codec_options import CodecOptions
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument
from bson.son import SON
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConfigurationError,
    DocumentTooLarge,
    DuplicateKeyError,
    InvalidOperation,
    OperationFailure,
    WriteError,
)
from pymongo.results import DeleteResult, InsertManyResult, InsertOneResult, UpdateResult
from pymongo.write_concern import WriteConcern

import mongo_requests
from mongo_requests import Connection, MongoClient, ReturnDocument


@pytest.fixture
def coll(db):
    return db.things


def _command_total(admin_client, name: str) -> int:
    """How many ``name`` commands the server has run (serverStatus metrics)."""
    return admin_client.admin.command("serverStatus")["metrics"]["commands"][name]["total"]


# ---------------------------------------------------------------------------
# The modern API
# ---------------------------------------------------------------------------


def test_insert_one_sets_id_on_the_callers_document(coll):
    doc = {"a": 1}
    result = coll.insert_one(doc)
    assert isinstance(result, InsertOneResult)
    assert result.acknowledged
    assert isinstance(doc["_id"], ObjectId)
    assert result.inserted_id == doc["_id"]
    assert coll.find_one({"_id": doc["_id"]}) == {"_id": doc["_id"], "a": 1}


def test_insert_one_keeps_a_given_id(coll):
    result = coll.insert_one({"_id": "mine", "a": 2})
    assert result.inserted_id == "mine"
    assert coll.find_one("mine") == {"_id": "mine", "a": 2}


def test_insert_many_sets_ids_in_order(coll):
    docs = [{"i": i} for i in range(5)] + [{"_id": 99, "i": 5}]
    result = coll.insert_many(docs)
    assert isinstance(result, InsertManyResult)
    assert result.acknowledged
    assert result.inserted_ids == [d["_id"] for d in docs]
    assert result.inserted_ids[-1] == 99
    assert all(isinstance(d["_id"], ObjectId) for d in docs[:5])
    stored = {d["_id"]: d["i"] for d in coll.find()}
    assert stored == {d["_id"]: d["i"] for d in docs}


def test_insert_many_accepts_a_generator(coll):
    result = coll.insert_many({"i": i} for i in range(7))
    assert len(result.inserted_ids) == 7
    assert coll.count_documents({}) == 7


def test_update_one_matched_and_modified(coll):
    coll.insert_many([{"k": 1, "v": 0}, {"k": 1, "v": 0}, {"k": 2, "v": 0}])
    result = coll.update_one({"k": 1}, {"$set": {"v": 1}})
    assert isinstance(result, UpdateResult)
    assert result.acknowledged
    assert (result.matched_count, result.modified_count, result.upserted_id) == (1, 1, None)
    assert coll.count_documents({"v": 1}) == 1
    # Setting the value it already has matches without modifying.
    same = coll.update_one({"v": 1}, {"$set": {"v": 1}})
    assert (same.matched_count, same.modified_count) == (1, 0)
    none = coll.update_one({"k": 42}, {"$set": {"v": 5}})
    assert (none.matched_count, none.modified_count, none.upserted_id) == (0, 0, None)


def test_update_one_upsert(coll):
    result = coll.update_one({"k": 7}, {"$set": {"v": "new"}}, upsert=True)
    assert result.matched_count == 0
    assert result.modified_count == 0
    assert isinstance(result.upserted_id, ObjectId)
    assert coll.find_one(result.upserted_id) == {"_id": result.upserted_id, "k": 7, "v": "new"}
    # A second upsert matches the document instead of inserting.
    again = coll.update_one({"k": 7}, {"$set": {"v": "newer"}}, upsert=True)
    assert (again.matched_count, again.modified_count, again.upserted_id) == (1, 1, None)
    assert coll.count_documents({}) == 1


def test_update_many(coll):
    coll.insert_many([{"g": "a", "n": i} for i in range(4)] + [{"g": "b", "n": 0}])
    result = coll.update_many({"g": "a"}, {"$inc": {"n": 10}})
    assert (result.matched_count, result.modified_count, result.upserted_id) == (4, 4, None)
    assert sorted(d["n"] for d in coll.find({"g": "a"})) == [10, 11, 12, 13]
    assert coll.find_one({"g": "b"})["n"] == 0
    up = coll.update_many({"g": "c"}, {"$set": {"n": -1}}, upsert=True)
    assert up.matched_count == 0 and up.upserted_id is not None
    assert coll.find_one({"g": "c"})["_id"] == up.upserted_id


def test_update_with_a_pipeline(coll):
    coll.insert_one({"_id": 1, "a": 2})
    result = coll.update_one({"_id": 1}, [{"$set": {"b": {"$multiply": ["$a", 3]}}}])
    assert result.modified_count == 1
    assert coll.find_one(1) == {"_id": 1, "a": 2, "b": 6}


def test_update_with_array_filters(coll):
    coll.insert_one({"_id": 1, "xs": [1, 5, 9]})
    coll.update_one({"_id": 1}, {"$set": {"xs.$[big]": 0}}, array_filters=[{"big": {"$gt": 4}}])
    assert coll.find_one(1)["xs"] == [1, 0, 0]


def test_replace_one(coll):
    coll.insert_one({"_id": 1, "a": 1, "b": 2})
    result = coll.replace_one({"_id": 1}, {"c": 3})
    assert (result.matched_count, result.modified_count, result.upserted_id) == (1, 1, None)
    assert coll.find_one(1) == {"_id": 1, "c": 3}
    up = coll.replace_one({"_id": 2}, {"d": 4}, upsert=True)
    assert up.upserted_id == 2
    assert up.matched_count == 0
    assert coll.find_one(2) == {"_id": 2, "d": 4}
    missing = coll.replace_one({"_id": 3}, {"e": 5})
    assert (missing.matched_count, missing.upserted_id) == (0, None)
    assert coll.find_one(3) is None


def test_delete_one_and_many(coll):
    coll.insert_many([{"k": i % 2} for i in range(6)])
    one = coll.delete_one({"k": 0})
    assert isinstance(one, DeleteResult)
    assert one.acknowledged and one.deleted_count == 1
    assert coll.count_documents({"k": 0}) == 2
    many = coll.delete_many({"k": 1})
    assert many.deleted_count == 3
    assert coll.count_documents({}) == 2
    nothing = coll.delete_many({"k": 42})
    assert nothing.deleted_count == 0
    everything = coll.delete_many({})
    assert everything.deleted_count == 2
    assert coll.count_documents({}) == 0


def test_find_and_find_one(coll):
    docs = [{"_id": i, "sq": i * i, "odd": bool(i % 2)} for i in range(10)]
    coll.insert_many(docs)
    assert list(coll.find({"odd": True}, sort=[("_id", 1)])) == [d for d in docs if d["odd"]]
    assert coll.find_one({"sq": 49}) == docs[7]
    assert coll.find_one({"sq": 50}) is None
    # find_one with a projection goes through a Cursor.
    assert coll.find_one({"sq": 16}, {"_id": 0, "sq": 1}) == {"sq": 16}
    assert coll.find_one({"sq": 16}, projection=["odd"]) == {"_id": 4, "odd": False}
    # A filter that is not a mapping is an _id.
    assert coll.find_one(3) == docs[3]
    assert coll.find_one(1000) is None
    assert coll.find_one() in docs
    assert coll.find_one({}, sort=[("_id", -1)]) == docs[-1]


def test_find_one_by_a_non_mapping_id(coll):
    oid = coll.insert_one({"kind": "oid"}).inserted_id
    coll.insert_one({"_id": "text", "kind": "str"})
    coll.insert_one({"_id": 5.5, "kind": "float"})
    assert coll.find_one(oid)["kind"] == "oid"
    assert coll.find_one("text")["kind"] == "str"
    assert coll.find_one(5.5)["kind"] == "float"
    assert coll.find_one(ObjectId()) is None


def _last_find(db, coll_name: str) -> dict:
    """The last find on ``coll_name`` that the server's profiler recorded."""
    # $natural: the capped profile collection keeps insertion order; two finds may share a millisecond ts.
    query = {"op": "query", "ns": "%s.%s" % (db.name, coll_name)}
    entry = db["system.profile"].find_one(query, sort=[("$natural", -1)])
    assert entry is not None, "the profiler recorded no find on %s" % coll_name
    return entry["command"]


def test_find_one_takes_find_arguments_positionally(db, coll):
    # find_one(filter, projection, skip, limit, sort) as find takes them: a
    # limit given positionally (it used to be passed twice, a TypeError) or
    # by keyword gives way to the one document find_one asks for.
    coll.insert_many([{"_id": i, "v": i} for i in range(6)])
    db.command("profile", 2)
    try:
        assert coll.find_one({}, {"v": 0}, 2, 10, [("_id", -1)]) == {"_id": 3}
        sent = _last_find(db, coll.name)
        assert (sent["skip"], sent["limit"], sent["singleBatch"]) == (2, 1, True)
        assert sent["sort"] == {"_id": -1}
        assert coll.find_one({"v": {"$gt": 0}}, None, 1, limit=4) == {"_id": 2, "v": 2}
        sent = _last_find(db, coll.name)
        assert (sent["skip"], sent["limit"], sent["singleBatch"]) == (1, 1, True)
    finally:
        db.command("profile", 0)
    with pytest.raises(TypeError):
        coll.find_one({}, None, 0, "ten")  # still validated, as in PyMongo


def test_count_documents_with_skip_and_limit(coll):
    coll.insert_many([{"i": i, "even": i % 2 == 0} for i in range(20)])
    assert coll.count_documents({}) == 20
    assert coll.count_documents({"even": True}) == 10
    assert coll.count_documents({}, skip=5) == 15
    assert coll.count_documents({}, limit=7) == 7
    assert coll.count_documents({}, skip=15, limit=10) == 5
    assert coll.count_documents({"even": True}, skip=8, limit=5) == 2
    assert coll.count_documents({}, skip=25) == 0
    assert coll.count_documents({"i": {"$gt": 100}}) == 0
    assert coll.count_documents({}, skip=0, limit=0) == 20


def test_count_documents_on_a_missing_collection(db):
    assert db.never_created.count_documents({}) == 0


def test_estimated_document_count(coll):
    assert coll.estimated_document_count() == 0
    coll.insert_many([{} for _ in range(13)])
    assert coll.estimated_document_count() == 13


def test_distinct(coll):
    coll.insert_many([{"c": c, "n": n} for c, n in [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5)]])
    assert sorted(coll.distinct("c")) == ["a", "b", "c"]
    assert sorted(coll.distinct("c", {"n": {"$gt": 2}})) == ["a", "b", "c"]
    assert sorted(coll.distinct("c", {"n": {"$lt": 3}})) == ["a", "b"]
    assert coll.distinct("missing") == []
    assert sorted(coll.find({"n": {"$gte": 4}}).distinct("c")) == ["b", "c"]


def test_aggregate(coll):
    coll.insert_many([{"g": i % 3, "v": i} for i in range(30)])
    out = list(coll.aggregate([{"$group": {"_id": "$g", "total": {"$sum": "$v"}}}, {"$sort": {"_id": 1}}]))
    expected = [{"_id": g, "total": sum(v for v in range(30) if v % 3 == g)} for g in range(3)]
    assert out == expected


def test_aggregate_with_getmore(coll):
    coll.insert_many([{"i": i} for i in range(250)])
    cursor = coll.aggregate([{"$sort": {"i": 1}}, {"$project": {"_id": 0, "i": 1}}], batch_size=20)
    assert [d["i"] for d in cursor] == list(range(250))
    assert cursor.cursor_id == 0
    assert not cursor.alive


def test_find_one_and_update(coll):
    coll.insert_many([{"_id": 1, "n": 1}, {"_id": 2, "n": 1}])
    before = coll.find_one_and_update({"_id": 1}, {"$inc": {"n": 1}})
    assert before == {"_id": 1, "n": 1}
    after = coll.find_one_and_update({"_id": 1}, {"$inc": {"n": 1}}, return_document=ReturnDocument.AFTER)
    assert after == {"_id": 1, "n": 3}
    projected = coll.find_one_and_update(
        {"_id": 2}, {"$set": {"x": 1}}, projection={"_id": 0, "x": 1}, return_document=ReturnDocument.AFTER
    )
    assert projected == {"x": 1}
    # sort picks which of several matches is modified.
    last = coll.find_one_and_update({}, {"$set": {"last": True}}, sort=[("_id", -1)])
    assert last["_id"] == 2 and coll.find_one(2)["last"] is True
    assert coll.find_one_and_update({"_id": 3}, {"$set": {"n": 0}}) is None
    assert coll.find_one(3) is None
    upserted = coll.find_one_and_update(
        {"_id": 3}, {"$set": {"n": 0}}, upsert=True, return_document=ReturnDocument.AFTER
    )
    assert upserted == {"_id": 3, "n": 0}


def test_find_one_and_replace(coll):
    coll.insert_one({"_id": 1, "a": 1})
    before = coll.find_one_and_replace({"_id": 1}, {"b": 2})
    assert before == {"_id": 1, "a": 1}
    assert coll.find_one(1) == {"_id": 1, "b": 2}
    after = coll.find_one_and_replace({"_id": 1}, {"c": 3}, return_document=ReturnDocument.AFTER)
    assert after == {"_id": 1, "c": 3}
    assert coll.find_one_and_replace({"_id": 9}, {"z": 1}) is None
    assert coll.find_one_and_replace({"_id": 9}, {"z": 1}, upsert=True, return_document=True) == {"_id": 9, "z": 1}


def test_find_one_and_delete(coll):
    coll.insert_many([{"_id": i} for i in range(3)])
    assert coll.find_one_and_delete({"_id": 1}) == {"_id": 1}
    assert coll.find_one(1) is None
    assert coll.find_one_and_delete({}, sort=[("_id", -1)]) == {"_id": 2}
    assert coll.find_one_and_delete({"_id": 42}) is None
    assert [d["_id"] for d in coll.find()] == [0]


def test_indexes(coll):
    coll.insert_one({"a": 1, "b": 2})
    name = coll.create_index("a")
    assert name == "a_1"
    compound = coll.create_index([("a", 1), ("b", -1)])
    assert compound == "a_1_b_-1"
    unique = coll.create_index([("b", mongo_requests.DESCENDING)], unique=True, name="b_unique")
    assert unique == "b_unique"
    info = coll.index_information()
    assert set(info) == {"_id_", "a_1", "a_1_b_-1", "b_unique"}
    assert info["a_1_b_-1"]["key"] == [("a", 1), ("b", -1)]
    assert info["b_unique"]["unique"] is True
    # The server itself lists the same indexes.
    names = {ix["name"] for ix in coll.list_indexes()}
    assert names == set(info)
    # The unique index is enforced.
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"a": 5, "b": 2})
    coll.drop_index("a_1")
    coll.drop_index([("a", 1), ("b", -1)])
    assert set(coll.index_information()) == {"_id_", "b_unique"}
    coll.drop_indexes()
    assert set(coll.index_information()) == {"_id_"}
    with pytest.raises(OperationFailure):
        coll.drop_index("no_such_index")


def test_index_information_of_a_missing_collection(db):
    assert db.never_created.index_information() == {}


def test_drop_and_drop_missing_collection(db):
    db.gone.insert_one({})
    assert "gone" in db.list_collection_names()
    db.gone.drop()
    assert "gone" not in db.list_collection_names()
    db.gone.drop()  # dropping a missing collection is fine
    db.never_created.drop()
    db.drop_collection("never_created_either")


def test_db_command_forms(db, coll):
    assert db.command("ping")["ok"] == 1
    coll.insert_many([{"x": i} for i in range(4)])
    assert db.command({"count": coll.name, "query": {"x": {"$gte": 2}}})["n"] == 2
    assert db.command("count", coll.name)["n"] == 4
    assert db.command(SON([("count", coll.name), ("query", {"x": 0})]))["n"] == 1
    assert db.command("count", coll.name, query={"x": 3})["n"] == 1
    # check=False returns the failure instead of raising it.
    reply = db.command({"$bogus": 1}, check=False)
    assert reply["ok"] == 0 and reply["code"] == 59


def test_subcollection_and_names(db):
    sub = db.things.sub
    assert sub.name == "things.sub"
    assert sub.full_name == "%s.things.sub" % db.name
    assert db.things["sub"] == sub
    sub.insert_one({"x": 1})
    assert db["things.sub"].find_one()["x"] == 1


def test_subcollection_by_item_allows_any_name(db):
    # Attribute access refuses private-looking names; item access does not.
    with pytest.raises(AttributeError):
        db.things._archive
    archive = db.things["_archive"]
    assert archive.name == "things._archive"
    archive.insert_one({"old": True})
    assert db["things._archive"].find_one()["old"] is True


def test_a_collection_is_not_iterable(coll):
    with pytest.raises(TypeError):
        iter(coll)
    with pytest.raises(TypeError):
        list(coll)


def test_list_collection_names_reads_every_batch(db, admin_client):
    # The listCollections cursor is a CommandCursor: a first batch of two
    # makes it run getMore on the server (counted in serverStatus) for the rest.
    names = {"c%d" % i for i in range(5)}
    for name in names:
        db.create_collection(name)
    before = _command_total(admin_client, "getMore")
    assert sorted(db.list_collection_names(cursor={"batchSize": 2})) == sorted(names)
    assert _command_total(admin_client, "getMore") - before >= 1
    assert sorted(db.list_collection_names({"name": {"$in": ["c1", "c3", "nope"]}})) == ["c1", "c3"]
    assert db.client.never_used_database.list_collection_names() == []


def test_raw_documents_read_back_insert_as_they_are(db):
    # Raw documents of 4 KB and more come back as memoryview slices of the
    # reply (pymongo >= 4.18); inserting them must copy exactly those bytes.
    db.src.insert_many([{"_id": i, "pad": "x" * 5000} for i in range(3)])
    raw = db.get_collection("src", codec_options=CodecOptions(document_class=RawBSONDocument))
    docs = list(raw.find(sort=[("_id", 1)]))
    db.dst.insert_one(docs[0])
    db.dst.insert_many(docs[1:])
    assert list(db.dst.find(sort=[("_id", 1)])) == list(db.src.find(sort=[("_id", 1)]))


def test_too_large_document_is_refused_without_waiting_for_a_server():
    # The size check reads the server's last known limit; it never selects a
    # server, so bad input fails at once even when none answers (port 1).
    client = MongoClient("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=5000")
    try:
        started = time.monotonic()
        with pytest.raises(DocumentTooLarge):
            client.db.things.insert_one({"x": "a" * (16 * 1024 * 1024)})
        with pytest.raises(DocumentTooLarge):
            client.db.things.insert_many([{"x": 1}, {"x": "a" * (16 * 1024 * 1024)}])
        assert time.monotonic() - started < 2
    finally:
        client.close()


# ---------------------------------------------------------------------------
# The PyMongo 2 API
# ---------------------------------------------------------------------------


def test_legacy_insert_single_and_list(coll):
    doc = {"a": 1}
    _id = coll.insert(doc)
    assert isinstance(_id, ObjectId) and doc["_id"] == _id
    docs = [{"b": i} for i in range(3)]
    ids = coll.insert(docs)
    assert isinstance(ids, list) and ids == [d["_id"] for d in docs]
    assert coll.count() == 4
    assert coll.find_one(_id) == {"_id": _id, "a": 1}
    assert coll.insert({"_id": "given"}) == "given"


def test_legacy_update(coll):
    coll.insert([{"k": 1, "v": 0}, {"k": 1, "v": 0}, {"k": 2, "v": 0}])
    one = coll.update({"k": 1}, {"$set": {"v": 1}})
    assert one["n"] == 1 and one["updatedExisting"] is True and one["ok"] == 1
    assert coll.count({"v": 1}) == 1
    multi = coll.update({"k": 1}, {"$set": {"v": 2}}, multi=True)
    assert multi["n"] == 2 and multi["updatedExisting"] is True
    assert coll.count({"v": 2}) == 2
    none = coll.update({"k": 3}, {"$set": {"v": 3}})
    assert none["n"] == 0 and none["updatedExisting"] is False and "upserted" not in none
    up = coll.update({"k": 3}, {"$set": {"v": 3}}, upsert=True)
    assert up["updatedExisting"] is False and up["n"] == 1
    assert coll.find_one({"k": 3})["_id"] == up["upserted"]
    # A whole-document replacement keeps the _id.
    target = coll.find_one({"k": 2})
    coll.update({"_id": target["_id"]}, {"replaced": True})
    assert coll.find_one(target["_id"]) == {"_id": target["_id"], "replaced": True}
    safe = coll.update({"k": 1}, {"$set": {"v": 9}}, safe=True, multi=True)
    assert safe["n"] == 2


def test_legacy_update_multi_needs_operators(coll):
    coll.insert({"k": 1})
    with pytest.raises(InvalidOperation):
        coll.update({"k": 1}, {"k": 2}, multi=True)
    assert coll.find_one()["k"] == 1


def test_legacy_remove(coll):
    ids = coll.insert([{"k": 1}, {"k": 1}, {"k": 1}, {"k": 2}])
    result = coll.remove({"k": 1}, multi=False)
    assert result["n"] == 1
    assert coll.count({"k": 1}) == 2
    by_id = coll.remove(ids[3])
    assert by_id["n"] == 1
    assert coll.find_one(ids[3]) is None
    everything = coll.remove()
    assert everything["n"] == 2
    assert coll.count() == 0


def test_legacy_save_inserts_then_replaces(coll):
    doc = {"a": 1}
    _id = coll.save(doc)
    assert doc["_id"] == _id
    assert coll.find_one(_id) == {"_id": _id, "a": 1}
    doc2 = {"_id": _id, "b": 2}
    assert coll.save(doc2) == _id
    assert coll.find_one(_id) == {"_id": _id, "b": 2}
    assert coll.count() == 1
    # save with a new _id inserts (upsert).
    assert coll.save({"_id": "fresh", "c": 3}) == "fresh"
    assert coll.count() == 2


def test_legacy_find_and_modify(coll):
    coll.insert([{"_id": 1, "n": 0}, {"_id": 2, "n": 0}])
    old = coll.find_and_modify({"_id": 1}, {"$inc": {"n": 1}})
    assert old == {"_id": 1, "n": 0}
    new = coll.find_and_modify({"_id": 1}, {"$inc": {"n": 1}}, new=True)
    assert new == {"_id": 1, "n": 2}
    fields = coll.find_and_modify({"_id": 1}, {"$set": {"x": "y"}}, new=True, fields=["x"])
    assert fields == {"_id": 1, "x": "y"}
    fields = coll.find_and_modify({"_id": 1}, {"$set": {"x": "z"}}, new=True, fields={"_id": 0, "n": 1})
    assert fields == {"n": 2}
    removed = coll.find_and_modify({"_id": 2}, remove=True)
    assert removed == {"_id": 2, "n": 0}
    assert coll.find_one(2) is None
    assert coll.find_and_modify({"_id": 3}, {"$set": {"n": 3}}) is None
    upserted = coll.find_and_modify({"_id": 3}, {"$set": {"n": 3}}, upsert=True, new=True)
    assert upserted == {"_id": 3, "n": 3}
    full = coll.find_and_modify({"_id": 3}, {"$inc": {"n": 1}}, full_response=True, new=True)
    assert full["ok"] == 1 and full["value"] == {"_id": 3, "n": 4}
    first = coll.find_and_modify({}, {"$set": {"first": True}}, sort=[("_id", 1)], new=True)
    assert first["_id"] == 1
    with pytest.raises(ValueError):
        coll.find_and_modify({"_id": 1})
    with pytest.raises(ValueError):
        coll.find_and_modify({"_id": 1}, {"$set": {"a": 1}}, remove=True)


def test_legacy_count_and_cursor_count(coll):
    coll.insert([{"i": i} for i in range(30)])
    assert coll.count() == 30
    assert coll.count({"i": {"$lt": 10}}) == 10
    cursor = coll.find({"i": {"$gte": 5}})
    assert cursor.count() == 25
    limited = coll.find({"i": {"$gte": 5}}).skip(3).limit(10)
    assert limited.count() == 25  # PyMongo 2: limit and skip are ignored by default
    assert limited.count(with_limit_and_skip=True) == 10
    assert coll.find().skip(25).count(with_limit_and_skip=True) == 5
    assert coll.find().limit(-4).count(with_limit_and_skip=True) == 4
    # count() does not start the cursor.
    assert len(list(limited)) == 10


def test_connection_defaults(db, make_client):
    conn = make_client(cls=Connection)
    assert conn.write_concern == WriteConcern(w=0)
    assert not conn.write_concern.acknowledged
    assert conn.auto_start_request is True
    coll = conn[db.name].legacy
    # PyMongo 2's default: unacknowledged writes, read back on the same socket.
    _id = coll.insert({"a": 1})
    assert conn.in_request()
    assert coll.update({"_id": _id}, {"$set": {"a": 2}}) is None
    assert coll.find_one(_id) == {"_id": _id, "a": 2}
    result = coll.insert_one({"b": 1})
    assert result.acknowledged is False
    assert coll.count() == 2
    # Every operation of this thread ran on the one pinned connection.
    first = conn.admin.command("hello")["connectionId"]
    coll.insert({"c": 1})
    assert conn.admin.command("hello")["connectionId"] == first
    assert coll.remove({"c": 1}) is None
    assert coll.count() == 2


def test_connection_safe_option(make_client, db):
    conn = make_client(cls=Connection, safe=True)
    assert conn.write_concern.acknowledged
    conn[db.name].legacy.insert({"_id": 1})
    with pytest.raises(DuplicateKeyError):
        conn[db.name].legacy.insert({"_id": 1})


def test_mongoclient_defaults(client):
    assert client.auto_start_request is False
    assert client.write_concern.acknowledged
    assert not client.in_request()


# ---------------------------------------------------------------------------
# Write concerns
# ---------------------------------------------------------------------------


def test_w0_results_are_unacknowledged_and_the_writes_land(client, coll):
    with client.start_request():
        one = coll.insert_one({"_id": 1, "v": 0}, w=0)
        assert isinstance(one, InsertOneResult)
        assert one.acknowledged is False and one.inserted_id == 1
        many = coll.insert_many([{"_id": i, "v": 0} for i in range(2, 6)], w=0)
        assert many.acknowledged is False and many.inserted_ids == [2, 3, 4, 5]
        upd = coll.update_one({"_id": 1}, {"$set": {"v": 1}}, w=0)
        assert upd.acknowledged is False
        with pytest.raises(InvalidOperation):
            upd.matched_count
        upd_many = coll.update_many({"_id": {"$gte": 4}}, {"$set": {"v": 2}}, w=0)
        assert upd_many.acknowledged is False
        rep = coll.replace_one({"_id": 2}, {"v": 3}, w=0)
        assert rep.acknowledged is False
        dele = coll.delete_one({"_id": 3}, w=0)
        assert dele.acknowledged is False
        assert dele.raw_result == {"ok": 1}  # what PyMongo 4 gives for w=0
        with pytest.raises(InvalidOperation):
            dele.deleted_count
        # Same socket, so the server has applied all of the above by now.
        assert {d["_id"]: d["v"] for d in coll.find()} == {1: 1, 2: 3, 4: 2, 5: 2}
        coll.delete_many({"v": 2}, w=0)
        assert coll.count_documents({}) == 2


def test_w0_write_on_a_broken_socket_raises_and_the_request_goes_on(client, coll):
    # A w=0 write reads nothing, so a dead connection shows on the send: the
    # caller gets AutoReconnect (the client's error handling ran), the request
    # stays open, and the next operation pins a fresh socket.
    with client.start_request():
        coll.insert_one({"_id": 1})
        first = client.admin.command("hello")["connectionId"]
        # Shut the connection down under the driver, as a dying peer would.
        client.pool.pinned_socket().sock.shutdown(socket.SHUT_RDWR)
        with pytest.raises(AutoReconnect):
            coll.insert_one({"_id": 2}, w=0)
        assert client.in_request()
        coll.insert_one({"_id": 3}, w=0)
        assert client.admin.command("hello")["connectionId"] != first
        assert sorted(d["_id"] for d in coll.find()) == [1, 3]


def test_safe_false_is_w0(client, coll):
    with client.start_request():
        result = coll.insert_one({"_id": 1}, safe=False)
        assert result.acknowledged is False
        # A duplicate is not reported without acknowledgement...
        coll.insert_one({"_id": 1}, safe=False)
        assert coll.update_one({"_id": 1}, {"$set": {"a": 1}}, safe=False).acknowledged is False
        assert coll.insert({"_id": 2}, safe=False) == 2
        assert coll.update({"_id": 2}, {"$set": {"b": 1}}, safe=False) is None
        assert coll.remove({"_id": 99}, safe=False) is None
        assert coll.find_one(1) == {"_id": 1, "a": 1}
        assert coll.find_one(2) == {"_id": 2, "b": 1}
        # ...but is with safe=True.
        with pytest.raises(DuplicateKeyError):
            coll.insert_one({"_id": 1}, safe=True)


def test_write_concern_object_with_journal(coll):
    wc = WriteConcern(w=1, j=True)
    result = coll.insert_one({"j": 1}, write_concern=wc)
    assert result.acknowledged
    assert coll.update_one({"j": 1}, {"$set": {"k": 1}}, write_concern=wc).modified_count == 1
    assert coll.insert_many([{"j": 2}, {"j": 3}], write_concern=wc).acknowledged
    assert coll.delete_one({"j": 3}, write_concern=wc).deleted_count == 1
    assert coll.with_options(write_concern=wc).insert_one({"j": 4}).acknowledged
    assert coll.count_documents({}) == 3


def test_write_concern_object_w0(client, coll):
    with client.start_request():
        assert coll.insert_one({"x": 1}, write_concern=WriteConcern(w=0)).acknowledged is False
        unack = coll.with_options(write_concern=WriteConcern(w=0))
        assert unack.insert_one({"x": 2}).acknowledged is False
        assert coll.count_documents({}) == 2


def test_j_true_implies_acknowledged_on_a_w0_client(make_client, db):
    c = make_client(w=0)
    coll = c[db.name].things
    assert coll.write_concern.acknowledged is False
    coll.insert_one({"_id": 1}, j=True)
    # Acknowledged, so the duplicate is reported.
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"_id": 1}, j=True)
    result = coll.update_one({"_id": 1}, {"$set": {"a": 1}}, j=True)
    assert result.acknowledged and result.modified_count == 1
    with pytest.raises(DuplicateKeyError):
        coll.insert({"_id": 1}, safe=True)
    with pytest.raises(DuplicateKeyError):
        coll.insert({"_id": 1}, w=1)


def test_w0_client_writes_land_in_a_request(make_client, db):
    c = make_client(w=0)
    coll = c[db.name].things
    with c.start_request():
        assert coll.insert_one({"_id": 1}).acknowledged is False
        assert coll.insert_one({"_id": 1}).acknowledged is False  # duplicate, unreported
        assert coll.count_documents({}) == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"safe": False, "w": 1},
        {"safe": False, "w": 2},
        {"w": 0, "j": True},
        {"w": -1},
        {"wtimeout": "soon"},
    ],
)
def test_bad_write_concern_combinations(coll, kwargs):
    with pytest.raises(ConfigurationError):
        coll.insert_one({"a": 1}, **kwargs)
    with pytest.raises(ConfigurationError):
        coll.insert({"a": 1}, **kwargs)
    with pytest.raises(ConfigurationError):
        coll.update_one({}, {"$set": {"a": 1}}, upsert=True, **kwargs)
    with pytest.raises(ConfigurationError):
        coll.delete_many({}, **kwargs)
    # Nothing was sent.
    assert coll.count_documents({}) == 0


def test_unknown_keyword_is_a_type_error_as_in_pymongo(coll):
    # PyMongo 4's methods have no **kwargs: an unknown keyword is a TypeError.
    # PyMongo 2's took **kwargs as write options and refused unknown ones.
    for call in (
        lambda: coll.insert_one({"a": 1}, bogus=1),
        lambda: coll.insert_many([{"a": 1}], bogus=1),
        lambda: coll.update_one({}, {"$set": {"a": 1}}, upsert=True, bogus=1),
        lambda: coll.replace_one({}, {"a": 1}, upsert=True, bogus=1),
        lambda: coll.delete_many({}, bogus=1),
        lambda: coll.bulk_write([], bogus=1),
    ):
        with pytest.raises(TypeError, match="bogus"):
            call()
    with pytest.raises(ConfigurationError, match="bogus"):
        coll.insert({"a": 1}, bogus=1)
    assert coll.count_documents({}) == 0


def test_write_concern_must_be_a_write_concern(coll):
    with pytest.raises(TypeError):
        coll.insert_one({}, write_concern={"w": 1})
    assert coll.count_documents({}) == 0


def test_bad_client_write_concern(mongodb_uri):
    with pytest.raises(ConfigurationError):
        MongoClient(mongodb_uri, w=0, j=True)
    with pytest.raises(ConfigurationError):
        MongoClient(mongodb_uri, w=-3)


def test_unsatisfiable_write_concern_is_reported(coll):
    # A standalone cannot satisfy w=2: the server answers with an error.
    with pytest.raises(OperationFailure):
        coll.insert_one({"a": 1}, w=2)


# ---------------------------------------------------------------------------
# Error mapping
# ---------------------------------------------------------------------------


def test_duplicate_key_from_insert_one(coll):
    coll.insert_one({"_id": 1})
    with pytest.raises(DuplicateKeyError) as info:
        coll.insert_one({"_id": 1})
    assert info.value.code == 11000
    assert isinstance(info.value, WriteError) and isinstance(info.value, OperationFailure)
    assert coll.count_documents({}) == 1


def test_duplicate_key_from_legacy_insert_and_update(coll):
    coll.create_index("u", unique=True)
    coll.insert({"_id": 1, "u": 1})
    coll.insert({"_id": 2, "u": 2})
    with pytest.raises(DuplicateKeyError) as info:
        coll.insert({"_id": 1, "u": 3})
    assert info.value.code == 11000
    with pytest.raises(DuplicateKeyError):
        coll.insert([{"_id": 3, "u": 3}, {"_id": 4, "u": 1}])
    assert coll.find_one(3) is not None and coll.find_one(4) is None
    with pytest.raises(DuplicateKeyError):
        coll.update({"_id": 2}, {"$set": {"u": 1}})
    assert coll.find_one(2)["u"] == 2
    with pytest.raises(DuplicateKeyError):
        coll.update_one({"_id": 2}, {"$set": {"u": 1}})
    with pytest.raises(DuplicateKeyError):
        coll.save({"_id": 2, "u": 1})


def test_legacy_insert_continue_on_error(coll):
    docs = [{"_id": 1}, {"_id": 1}, {"_id": 2}]
    with pytest.raises(DuplicateKeyError):
        coll.insert(docs)
    assert coll.count() == 1
    coll.drop()
    with pytest.raises(DuplicateKeyError):
        coll.insert([{"_id": 1}, {"_id": 1}, {"_id": 2}], continue_on_error=True)
    assert sorted(d["_id"] for d in coll.find()) == [1, 2]


def test_bulk_write_error_ordered(coll):
    docs = [{"_id": 1}, {"_id": 2}, {"_id": 1}, {"_id": 3}, {"_id": 2}]
    with pytest.raises(BulkWriteError) as info:
        coll.insert_many(docs)
    details = info.value.details
    assert details["nInserted"] == 2
    assert [e["index"] for e in details["writeErrors"]] == [2]
    assert details["writeErrors"][0]["code"] == 11000
    assert sorted(d["_id"] for d in coll.find()) == [1, 2]


def test_bulk_write_error_unordered_continues(coll):
    docs = [{"_id": 1}, {"_id": 2}, {"_id": 1}, {"_id": 3}, {"_id": 2}]
    with pytest.raises(BulkWriteError) as info:
        coll.insert_many(docs, ordered=False)
    details = info.value.details
    assert details["nInserted"] == 3
    assert [e["index"] for e in details["writeErrors"]] == [2, 4]
    assert all(e["code"] == 11000 for e in details["writeErrors"])
    assert sorted(d["_id"] for d in coll.find()) == [1, 2, 3]


def test_bulk_write_error_indexes_span_batches(client, db, admin_client):
    # A duplicate in the second batch: its index counts from the first document.
    max_batch = client.admin.command("hello")["maxWriteBatchSize"]
    n = max_batch + 10
    dup_at = max_batch + 5
    docs = [{"_id": i} for i in range(n)]
    docs[dup_at] = {"_id": 3}
    ordered = db.ordered
    before = _command_total(admin_client, "insert")
    with pytest.raises(BulkWriteError) as info:
        ordered.insert_many([dict(d) for d in docs])
    assert _command_total(admin_client, "insert") - before == 2
    details = info.value.details
    assert details["nInserted"] == dup_at
    assert [e["index"] for e in details["writeErrors"]] == [dup_at]
    assert ordered.count_documents({}) == dup_at
    unordered = db.unordered
    with pytest.raises(BulkWriteError) as info:
        unordered.insert_many([dict(d) for d in docs], ordered=False)
    details = info.value.details
    assert details["nInserted"] == n - 1
    assert [e["index"] for e in details["writeErrors"]] == [dup_at]
    assert unordered.count_documents({}) == n - 1


def test_operation_failure_for_a_bad_command(db):
    with pytest.raises(OperationFailure) as info:
        db.command({"$bogus": 1})
    assert info.value.code == 59
    assert info.value.details["ok"] == 0
    with pytest.raises(OperationFailure) as info:
        db.command("bogusCommandName")
    assert info.value.code == 59


def test_operation_failure_for_a_bad_update_operator(coll):
    coll.insert_one({"_id": 1})
    with pytest.raises(OperationFailure) as info:
        coll.update_one({"_id": 1}, {"$bogus": {"a": 1}})
    assert info.value.code == 9
    with pytest.raises(OperationFailure) as legacy:
        coll.update({"_id": 1}, {"$bogus": {"a": 1}})
    assert legacy.value.code == 9
    assert coll.find_one(1) == {"_id": 1}


def test_operation_failure_for_a_bad_query(coll):
    coll.insert_one({"a": 1})
    with pytest.raises(OperationFailure) as info:
        coll.find_one({"a": {"$bogusOp": 1}})
    assert info.value.code == 2
    with pytest.raises(OperationFailure):
        list(coll.find({"a": {"$bogusOp": 1}}))
    with pytest.raises(OperationFailure):
        coll.count_documents({"a": {"$bogusOp": 1}})
    with pytest.raises(OperationFailure):
        list(coll.aggregate([{"$bogusStage": {}}]))


def test_server_info(client, db):
    info = client.server_info()
    assert info["ok"] == 1
    assert info["version"] == db.command("buildInfo")["version"]
    assert info["versionArray"][:2] == [int(p) for p in info["version"].split(".")[:2]]


def test_list_and_drop_databases(client, db):
    db.things.insert_one({})
    assert db.name in client.list_database_names()
    assert db.name in client.database_names()
    assert "admin" in client.list_database_names()
    client.drop_database(db.name)
    assert db.name not in client.list_database_names()
    db.things.insert_one({})
    assert db.name in client.list_database_names()
    client.drop_database(db)  # a Database works too
    assert db.name not in client.database_names()
    client.drop_database(db.name)  # dropping a missing database is fine


# ---------------------------------------------------------------------------
# Size limits
# ---------------------------------------------------------------------------


def test_insert_many_over_max_write_batch_size(client, db, admin_client):
    hello = client.admin.command("hello")
    max_batch = hello["maxWriteBatchSize"]
    n = 2 * max_batch + 1  # three batches, the last of one document
    docs = [{"i": i} for i in range(n)]
    before = _command_total(admin_client, "insert")
    result = db.big.insert_many(docs)
    assert _command_total(admin_client, "insert") - before == math.ceil(n / max_batch)
    assert len(result.inserted_ids) == n
    assert len(set(result.inserted_ids)) == n
    assert db.big.count_documents({}) == n
    assert db.big.find_one({"i": n - 1})["_id"] == docs[-1]["_id"]


def test_insert_many_over_max_message_size(client, db, admin_client):
    hello = client.admin.command("hello")
    max_message = hello["maxMessageSizeBytes"]
    one_mb = 1024 * 1024
    count = max_message // one_mb + 12  # comfortably more than one message
    docs = [{"i": i, "pad": "x" * one_mb} for i in range(count)]
    before = _command_total(admin_client, "insert")
    result = db.fat.insert_many(docs)
    batches = _command_total(admin_client, "insert") - before
    assert batches >= math.ceil(count * one_mb / max_message)
    assert batches < count
    assert len(result.inserted_ids) == count
    assert db.fat.count_documents({}) == count
    stored = list(db.fat.find({}, {"i": 1, "_id": 0}).sort("i", 1))
    assert [d["i"] for d in stored] == list(range(count))
    assert db.fat.count_documents({"pad": "x" * one_mb}) == count


def test_legacy_insert_over_max_message_size(client, db):
    max_message = client.admin.command("hello")["maxMessageSizeBytes"]
    one_mb = 1024 * 1024
    count = max_message // one_mb + 3
    ids = db.fat.insert([{"pad": "y" * one_mb} for _ in range(count)])
    assert len(ids) == count
    assert db.fat.count() == count


def test_attribute_access_reuses_databases_and_collections(client):
    """client.db.coll in a loop (PyMongo 2 style) builds each object once.

    Databases and collections are immutable, so attribute access keeps the
    one it made; item access (dynamic names) makes a fresh, equal object.
    """
    db = client.attr_cache_db
    assert client.attr_cache_db is db
    assert db.things is db.things
    assert db.things.sub is db.things.sub
    assert client["attr_cache_db"] is not db and client["attr_cache_db"] == db
    assert db["things"] == db.things
    # The cache never shadows real attributes, and private names still fail.
    assert callable(client.close) and callable(db.command)
    with pytest.raises(AttributeError):
        client._no_such_private
