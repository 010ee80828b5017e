"""bulk_write, the one write path, and PyMongo 2's bulk builders, checked against PyMongo 4 on the same server.

Each comparison runs the same operations with mongo_requests and with
``pymongo.MongoClient`` on twin collections of one database, then compares
result attributes, error classes and error details, and what is stored.
"""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.errors import BulkWriteError, DuplicateKeyError, InvalidOperation, WriteError
from pymongo.operations import DeleteMany, DeleteOne, InsertOne, ReplaceOne, UpdateMany, UpdateOne
from pymongo.results import BulkWriteResult
from pymongo.write_concern import WriteConcern


@pytest.fixture
def twins(db, pm):
    """(ours, pymongo's): twin collections in the test's database."""
    return db.ours, pm[db.name].theirs


def _requests() -> list[Any]:
    return [
        InsertOne({"_id": 1, "n": 1}),
        InsertOne({"_id": 2, "n": 2}),
        UpdateOne({"_id": 1}, {"$inc": {"n": 10}}),
        UpdateMany({"n": {"$gte": 0}}, {"$set": {"seen": True}}),
        UpdateOne({"_id": 7}, {"$set": {"n": 7}}, upsert=True),
        ReplaceOne({"_id": 2}, {"n": 20}),
        ReplaceOne({"_id": 8}, {"n": 8}, upsert=True),
        InsertOne({"_id": 3, "n": 3}),
        DeleteOne({"_id": 3}),
        DeleteMany({"n": {"$lt": 0}}),
        UpdateOne({"_id": 1}, {"$set": {"tags": [1, 2, 3]}}),
        UpdateOne({"_id": 1}, {"$set": {"tags.$[t]": 0}}, array_filters=[{"t": {"$gt": 1}}]),
    ]


def _result_attrs(result: BulkWriteResult) -> dict[str, Any]:
    return {
        "acknowledged": result.acknowledged,
        "inserted_count": result.inserted_count,
        "matched_count": result.matched_count,
        "modified_count": result.modified_count,
        "deleted_count": result.deleted_count,
        "upserted_count": result.upserted_count,
        "upserted_ids": result.upserted_ids,
        "bulk_api_result": result.bulk_api_result,
    }


@pytest.mark.parametrize("ordered", [True, False])
def test_bulk_write_matches_pymongo(twins, ordered):
    ours, theirs = twins
    mine = ours.bulk_write(_requests(), ordered=ordered)
    ref = theirs.bulk_write(_requests(), ordered=ordered)
    assert type(mine) is BulkWriteResult
    assert _result_attrs(mine) == _result_attrs(ref)
    assert list(ours.find().sort("_id")) == list(theirs.find().sort("_id"))


def _error_details(exc: BulkWriteError) -> dict[str, Any]:
    details = dict(exc.details)
    for err in details["writeErrors"]:
        err["errmsg"] = err["errmsg"].split(" collection: ")[0]  # the namespaces differ
    return details


@pytest.mark.parametrize("ordered", [True, False])
def test_bulk_write_error_matches_pymongo(twins, ordered):
    requests = [
        InsertOne({"_id": 1}),
        InsertOne({"_id": 1}),  # duplicate
        UpdateOne({"_id": 5}, {"$set": {"a": 1}}, upsert=True),
        UpdateOne({"_id": 1}, {"$set": {"_id": 2}}),  # immutable _id: a write error
        DeleteOne({"_id": 99}),
    ]
    ours, theirs = twins
    with pytest.raises(BulkWriteError) as mine:
        ours.bulk_write(requests, ordered=ordered)
    with pytest.raises(BulkWriteError) as ref:
        theirs.bulk_write(requests, ordered=ordered)
    assert mine.value.code == ref.value.code
    assert _error_details(mine.value) == _error_details(ref.value)
    assert [e["index"] for e in mine.value.details["writeErrors"]] == ([1] if ordered else [1, 3])
    assert mine.value.details["writeErrors"][0]["op"] == {"_id": 1}
    assert list(ours.find().sort("_id")) == list(theirs.find().sort("_id"))


def test_single_write_errors_match_pymongo(twins):
    ours, theirs = twins
    for coll in (ours, theirs):
        coll.insert_one({"_id": 1})
    for call in (
        lambda c: c.insert_one({"_id": 1}),
        lambda c: c.update_one({"_id": 1}, {"$set": {"_id": 2}}),
        lambda c: c.replace_one({"_id": 1}, {"_id": 3}),
        lambda c: c.update_many({}, {"$set": {"a.b": 1, "a": 1}}),
    ):
        with pytest.raises(WriteError) as mine:
            call(ours)
        with pytest.raises(WriteError) as ref:
            call(theirs)
        assert type(mine.value) is type(ref.value)
        assert mine.value.code == ref.value.code
        assert set(mine.value.details) == set(ref.value.details)
    assert DuplicateKeyError  # the first call above raised it, in both drivers


def test_single_write_results_match_pymongo(twins):
    ours, theirs = twins
    for call in (
        lambda c: c.update_one({"_id": 1}, {"$set": {"a": 1}}, upsert=True).raw_result,
        lambda c: c.update_one({"_id": 1}, {"$set": {"a": 1}}).raw_result,
        lambda c: c.update_one({"_id": 1}, {"$set": {"a": 2}}).raw_result,
        lambda c: c.update_many({}, {"$inc": {"a": 1}}).raw_result,
        lambda c: c.replace_one({"_id": 2}, {"b": 1}, upsert=True).raw_result,
        lambda c: c.delete_one({"_id": 2}).raw_result,
        lambda c: c.delete_many({}).raw_result,
        lambda c: c.insert_many([{"_id": 5}, {"_id": 6}]).inserted_ids,
        lambda c: c.insert_one({"_id": 7}).inserted_id,
        lambda c: c.with_options(write_concern=WriteConcern(w=0)).update_one({}, {"$set": {"z": 1}}).raw_result,
    ):
        assert call(ours) == call(theirs)


def test_w0_bulk_inside_a_request_is_seen_by_the_next_read(make_client, db):
    client = make_client(w=0)
    coll = client[db.name].w0
    with client.start_request():
        for round_ in range(20):
            result = coll.bulk_write(
                [
                    InsertOne({"_id": round_, "n": 0}),
                    UpdateOne({"_id": round_}, {"$inc": {"n": 1}}),
                    UpdateMany({}, {"$inc": {"all": 1}}),
                ],
                ordered=bool(round_ % 2),
            )
            assert result.acknowledged is False
            with pytest.raises(InvalidOperation):
                result.inserted_count  # noqa: B018 - PyMongo raises for w=0 results
            assert coll.find_one({"_id": round_}) == {"_id": round_, "n": 1, "all": 1}
    assert coll.count_documents({}) == 20


def test_ordered_w0_bulk_stops_at_the_first_error(client, db):
    # PyMongo acknowledges the inner commands of an ordered w=0 bulk so that a
    # write error still stops the rest; so do we (one command per kind run).
    coll = db.stop
    reqs = [InsertOne({"_id": 1}), InsertOne({"_id": 1}), DeleteMany({}), InsertOne({"_id": 2})]
    with client.start_request():
        assert coll.bulk_write(reqs, write_concern=WriteConcern(w=0)).acknowledged is False
        assert list(coll.find()) == [{"_id": 1}]


def test_bulk_write_bad_input_is_refused_before_sending(client, db):
    coll = db.bad
    with pytest.raises(TypeError):
        coll.bulk_write({"not": "a list"})
    with pytest.raises(TypeError):
        coll.bulk_write([InsertOne({"_id": 1}), {"insertOne": {}}])
    with pytest.raises(InvalidOperation):
        coll.bulk_write([])
    with pytest.raises(ValueError):
        coll.bulk_write([InsertOne({"_id": 1}), UpdateOne({}, {"a": 1})])
    with pytest.raises(ValueError):
        coll.bulk_write([InsertOne({"_id": 1}), ReplaceOne({}, {"$set": {"a": 1}})])
    with pytest.raises(TypeError):
        coll.bulk_write([InsertOne({"_id": 1})], ordered="yes")
    assert coll.count_documents({}) == 0


def test_pymongo2_bulk_builders(twins):
    ours, _ = twins
    bulk = ours.initialize_ordered_bulk_op()
    bulk.insert({"_id": 1, "n": 1})
    bulk.insert({"_id": 2, "n": 2})
    bulk.find({"_id": 1}).update_one({"$inc": {"n": 1}})
    bulk.find({"_id": 3}).upsert().replace_one({"n": 3})
    bulk.find({"n": {"$gt": 0}}).update({"$set": {"x": 1}})
    bulk.find({"_id": 2}).remove_one()
    result = bulk.execute()
    assert {k: result[k] for k in ("nInserted", "nMatched", "nModified", "nUpserted", "nRemoved")} == {
        "nInserted": 2,
        "nMatched": 4,
        "nModified": 4,
        "nUpserted": 1,
        "nRemoved": 1,
    }
    assert result["upserted"] == [{"index": 3, "_id": 3}]
    assert list(ours.find().sort("_id")) == [{"_id": 1, "n": 2, "x": 1}, {"_id": 3, "n": 3, "x": 1}]
    with pytest.raises(InvalidOperation):
        bulk.execute()
    unordered = ours.initialize_unordered_bulk_op()
    unordered.insert({"_id": 1})
    unordered.insert({"_id": 9})
    unordered.find({}).remove()
    with pytest.raises(BulkWriteError) as info:
        unordered.execute()
    # Unordered: inserts, then deletes; the duplicate does not stop the rest.
    assert info.value.details["nInserted"] == 1
    assert info.value.details["nRemoved"] == 3
    assert ours.count_documents({}) == 0


def test_one_kind_bulks_skip_the_walk_and_cut_batches_exactly_as_it_does(db):
    # Bulk._batches answers "one command" without walking the statements when they are all of
    # one kind and fit; otherwise it walks them.  Both must cut the same batches, whatever the
    # kinds, sizes and limits, and each batch's document sequence must be its statements' BSON.
    import random

    from bson.objectid import ObjectId

    from mongo_requests.bulk import DELETE, INSERT, UPDATE, Bulk

    rng = random.Random(13)
    shortcuts = 0
    for _ in range(300):
        bulk = Bulk(db.batches, ordered=rng.random() < 0.5)
        kinds = rng.choice([[INSERT], [UPDATE], [DELETE], [INSERT, UPDATE, DELETE]])
        many = [{"p": "x" * rng.randint(0, 300)} for _ in range(rng.randint(0, 30))]
        if many and kinds == [INSERT]:
            bulk.add_inserts(many)
        for i in range(rng.randint(0 if many else 1, 30)):
            kind = rng.choice(kinds)
            pad = "x" * rng.randint(0, 300)
            if kind == INSERT:
                bulk.add_insert({"p": pad} if rng.random() < 0.5 else {"_id": ObjectId(), "p": pad})
            elif kind == UPDATE:
                bulk.add_update({"_id": i}, {"$set": {"p": pad}}, False, None)
            else:
                bulk.add_delete({"_id": i, "p": pad}, 1)
        assert bulk._bytes == sum(len(op[2]) for op in bulk.ops)
        max_bytes, max_count = rng.choice([300, 2000, 10**6]), rng.choice([1, 7, 1000])
        fast = bulk._batches(max_bytes, max_count)
        mask, bulk._kinds = bulk._kinds, 0  # no kind known: always the walk
        walked = bulk._batches(max_bytes, max_count)
        bulk._kinds = mask
        assert fast == walked
        shortcuts += len(fast) == 1 and len(bulk.ops) > 1 and len(set(op[0] for op in bulk.ops)) == 1
        for kind, indexes in fast:
            assert all(bulk.ops[i][0] == kind for i in indexes)
            assert list(bulk._sequence(indexes)) == [bulk.ops[i][2] for i in indexes]
    assert shortcuts > 20  # the shortcut itself was exercised


@pytest.mark.parametrize("encoder", ["private", "public"])
def test_insert_many_encodes_the_same_documents_with_either_bson_encoder(db, monkeypatch, encoder):
    # bulk encodes with bson's C encoder called directly (precoded.encode); the public
    # bson.encode is its fallback.  Both must store the same documents.
    from mongo_requests import bulk, precoded

    if encoder == "public":
        monkeypatch.setattr(bulk, "_encode", precoded._public_encode)
    else:
        assert bulk._encode is precoded._private_encode is not None
    docs = [{"i": i, "s": "é" * (i % 5), "f": i / 3, "l": [i, {"n": None}]} for i in range(300)]
    expected = [dict(d) for d in docs]
    db.enc.insert_many(docs)
    db.enc.insert_one({"i": 300})
    stored = list(db.enc.find({"i": {"$lt": 300}}, sort=[("i", 1)]))
    assert [{k: v for k, v in d.items() if k != "_id"} for d in stored] == expected
    assert [d["_id"] for d in stored] == [d["_id"] for d in docs]
