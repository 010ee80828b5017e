"""The CRUD options: each call sends what PyMongo 4 sends for it, seen through command monitoring on both drivers.

Every call below runs on a mongo_requests collection and on a PyMongo one
of the same database; the command documents the two drivers' listeners saw
must be equal (PyMongo's session fields aside), and so must the outcome: the
result, or the error class and code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pymongo
import pytest
from pymongo import monitoring
from pymongo.collation import Collation
from pymongo.collection import ReturnDocument

_SESSION_FIELDS = {"lsid", "$clusterTime", "$readPreference", "txnNumber", "$db"}


class Recorder(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands.append(dict(event.command))

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass


def _normalised(commands: list[dict[str, Any]], coll_name: str) -> list[dict[str, Any]]:
    out = []
    for cmd in commands:
        cmd = {k: v for k, v in cmd.items() if k not in _SESSION_FIELDS}
        first = next(iter(cmd))
        if cmd[first] == coll_name:
            cmd[first] = "COLL"
        if first in ("getMore", "killCursors"):  # cursor ids differ; the namespace is the collection's
            cmd["collection"] = "COLL"
            cmd.pop("cursors", None)
            cmd[first] = "ID"
        out.append(cmd)
    return out


def _outcome(call: Callable[[Any], Any], coll: Any) -> Any:
    try:
        result = call(coll)
    except pymongo.errors.PyMongoError as exc:
        return ("error", type(exc).__name__, getattr(exc, "code", None))
    if hasattr(result, "raw_result"):
        return ("result", type(result).__name__, result.raw_result)
    if hasattr(result, "inserted_ids"):
        return ("result", type(result).__name__, result.inserted_ids)
    if hasattr(result, "inserted_id"):
        return ("result", type(result).__name__, result.inserted_id)
    if hasattr(result, "__next__"):
        return ("cursor", list(result))
    return ("value", result)


CALLS: dict[str, Callable[[Any], Any]] = {
    "insert_one comment bypass=False": lambda c: c.insert_one(
        {"_id": 10}, comment="c1", bypass_document_validation=False
    ),
    "insert_one bypass not a bool": lambda c: c.insert_one({"_id": 13}, bypass_document_validation="no"),
    "insert_many unordered comment bypass=True": lambda c: c.insert_many(
        [{"_id": 11}, {"_id": 12}], ordered=False, comment={"k": 1}, bypass_document_validation=True
    ),
    "update_one upsert let hint collation comment": lambda c: c.update_one(
        {"_id": 1},
        {"$set": {"v": "$$x"}},
        upsert=True,
        let={"x": 5},
        hint="_id_",
        collation=Collation(locale="en"),
        comment="c2",
    ),
    "update_one pipeline": lambda c: c.update_one({"_id": 1}, [{"$set": {"p": {"$add": ["$n", 1]}}}]),
    "update_one sort (server 8.0+)": lambda c: c.update_one({}, {"$set": {"s": 1}}, sort={"_id": -1}),
    "update_many array_filters": lambda c: c.update_many(
        {}, {"$set": {"arr.$[e]": 0}}, array_filters=[{"e": {"$gt": 1}}], bypass_document_validation=False
    ),
    "replace_one let comment hint": lambda c: c.replace_one(
        {"_id": 2}, {"r": 1}, upsert=True, let={"y": 1}, comment="c3", hint={"_id": 1}
    ),
    "replace_one sort (server 8.0+)": lambda c: c.replace_one({}, {"r": 2}, sort={"_id": 1}),
    "delete_one hint let comment": lambda c: c.delete_one({"_id": 12}, hint=[("_id", 1)], let={"z": 1}, comment="c4"),
    "delete_many collation": lambda c: c.delete_many({"name": "ZED"}, collation={"locale": "en", "strength": 2}),
    "find_one_and_update all options": lambda c: c.find_one_and_update(
        {"_id": 1},
        {"$set": {"arr.$[e]": 7}},
        projection={"arr": 1},
        sort=[("_id", 1)],
        upsert=True,
        return_document=ReturnDocument.AFTER,
        array_filters=[{"e": {"$gte": 0}}],
        hint="_id_",
        let={"q": 1},
        comment="c5",
    ),
    "find_one_and_replace": lambda c: c.find_one_and_replace({"_id": 2}, {"rr": 1}, projection=["rr"], comment="c6"),
    "find_one_and_delete maxTimeMS": lambda c: c.find_one_and_delete({"_id": 11}, maxTimeMS=5000, let={"w": 1}),
    "aggregate batchSize comment let maxTimeMS": lambda c: c.aggregate(
        [{"$match": {"$expr": {"$gte": ["$_id", "$$lo"]}}}],
        batchSize=5,
        comment="c7",
        let={"lo": 0},
        maxTimeMS=5000,
        allowDiskUse=True,
    ),
    "aggregate hint collation": lambda c: c.aggregate(
        [{"$sort": {"_id": 1}}], hint={"_id": 1}, collation={"locale": "en"}
    ),
    "distinct empty query comment": lambda c: c.distinct("name", {}, comment="c8"),
    "distinct no query": lambda c: c.distinct("name"),
    "count_documents skip limit hint": lambda c: c.count_documents(
        {}, skip=1, limit=2, hint="_id_", maxTimeMS=5000, comment="c9"
    ),
    "estimated_document_count": lambda c: c.estimated_document_count(comment="c10", maxTimeMS=5000),
    "find_one projection sort skip": lambda c: c.find_one({}, {"name": 1}, sort=[("_id", -1)], skip=1),
    "find options": lambda c: c.find(
        {"_id": {"$gte": 0}},
        projection={"_id": 1},
        skip=1,
        limit=3,
        batch_size=2,
        hint=[("_id", 1)],
        max_time_ms=5000,
        comment="c11",
        allow_disk_use=True,
        sort=[("_id", 1)],
    ),
    "find collation let min max": lambda c: (
        c.find({}, collation={"locale": "en"}, let={"a": 1}, comment="c12", return_key=True, show_record_id=False)
        .hint([("_id", 1)])
        .min([("_id", 0)])
        .max([("_id", 100)])
    ),
}


@pytest.fixture
def pair(make_client, mongodb_uri, db):
    ours_rec, theirs_rec = Recorder(), Recorder()
    ours = make_client(event_listeners=[ours_rec])[db.name].ours
    pm = pymongo.MongoClient(mongodb_uri, directConnection=True, event_listeners=[theirs_rec])
    theirs = pm[db.name].theirs
    for coll in (db.ours, pm[db.name].theirs):
        coll.insert_many(
            [{"_id": 1, "n": 1, "arr": [1, 2, 3], "name": "zed"}, {"_id": 2, "name": "amy"}, {"_id": 3, "name": "Zed"}]
        )
    yield ours, ours_rec, theirs, theirs_rec
    pm.close()


@pytest.mark.parametrize("name", list(CALLS))
def test_sends_what_pymongo_sends(pair, name):
    ours, ours_rec, theirs, theirs_rec = pair
    ours_rec.commands.clear()
    theirs_rec.commands.clear()
    mine = _outcome(CALLS[name], ours)
    ref = _outcome(CALLS[name], theirs)
    assert _normalised(ours_rec.commands, "ours") == _normalised(theirs_rec.commands, "theirs")
    assert mine == ref


def test_unknown_keywords_are_type_errors_before_sending(pair):
    ours, ours_rec, _, _ = pair
    ours_rec.commands.clear()
    for call in (
        lambda: ours.update_one({}, {"$set": {"a": 1}}, upsrt=True),
        lambda: ours.delete_many({}, colation={}),
        lambda: ours.replace_one({}, {}, array_filters=[]),
    ):
        with pytest.raises(TypeError):
            call()
    assert ours_rec.commands == []


def test_options_are_validated_as_pymongo_validates_them(pair):
    ours, ours_rec, theirs, _ = pair
    ours_rec.commands.clear()
    bad: list[Callable[[Any], Any]] = [
        lambda c: c.update_one({}, {"$set": {"a": 1}}, upsert="yes"),
        lambda c: c.update_one({}, {"$set": {"a": 1}}, let="x"),
        lambda c: c.update_one({}, {"$set": {"a": 1}}, array_filters={"e": 1}),
        lambda c: c.aggregate([], let=1),
        lambda c: c.update_one({}, {"a": 1}),
        lambda c: c.replace_one({}, {"$set": {"a": 1}}),
    ]
    for call in bad:
        with pytest.raises((TypeError, ValueError)) as ref:
            call(theirs)
        with pytest.raises((TypeError, ValueError)) as mine:
            call(ours)
        assert type(mine.value) is type(ref.value), (mine.value, ref.value)
    assert ours_rec.commands == []
