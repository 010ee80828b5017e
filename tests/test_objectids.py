"""New ObjectIds for inserted documents (mongo_requests.objectids): the private path and the fallback.

Every test runs both paths: ids made without ``__init__`` from our own random
value and counter, and ``ObjectId()`` (objectids.PRIVATE off).
"""

from __future__ import annotations

import ctypes
import os
import time
from datetime import UTC, datetime

import bson
import pytest
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument

from mongo_requests import objectids


@pytest.fixture(params=["private", "public"])
def path(request, monkeypatch):
    if request.param == "public":
        monkeypatch.setattr(objectids, "PRIVATE", False)
    else:
        assert objectids.PRIVATE, "this bson's ObjectId no longer has the one slot objectids sets"
    return request.param


def _random_part(oid: ObjectId) -> bytes:
    return oid.binary[4:9]


def _counter(oid: ObjectId) -> int:
    return int.from_bytes(oid.binary[9:], "big")


def test_insert_many_and_insert_one_give_documents_new_ids(path, db):
    docs = [{"i": i} for i in range(2500)]
    before = int(time.time())
    result = db.oids.insert_many(docs)
    one = {"i": -1}
    one_id = db.oids.insert_one(one).inserted_id
    after = int(time.time())
    ids = [d["_id"] for d in docs]
    assert result.inserted_ids == ids
    assert all(type(i) is ObjectId for i in ids) and type(one_id) is ObjectId and one["_id"] == one_id
    assert len(set(ids) | {one_id}) == 2501
    # What the server stored is what the caller's documents hold.
    stored = {d["i"]: d["_id"] for d in db.oids.find()}
    assert stored == {**{d["i"]: d["_id"] for d in docs}, -1: one_id}
    for oid in [*ids, one_id]:
        assert before <= int(oid.generation_time.timestamp()) <= after
        assert oid.generation_time.tzinfo is not None
        assert ObjectId(str(oid)) == oid and hash(ObjectId(oid.binary)) == hash(oid)
    # One process, one random value; the counter counts up, one per id (mod 2**24).
    assert len({_random_part(oid) for oid in [*ids, one_id]}) == 1
    counters = [_counter(oid) for oid in ids]
    assert all((b - a) % (1 << 24) == 1 for a, b in zip(counters, counters[1:], strict=False))
    # The private path has its own random value, not bson's; the fallback is bson's ObjectId().
    assert (_random_part(ObjectId()) == _random_part(one_id)) == (path == "public")


def test_documents_that_have_an_id_keep_it(path, db):
    given = ObjectId.from_datetime(datetime(2020, 1, 1, tzinfo=UTC))
    docs = [{"_id": given, "k": 1}, {"_id": "text", "k": 2}, {"k": 3}]
    db.oids.insert_many(docs)
    raw = RawBSONDocument(bson.encode({"k": 4}))  # no _id
    db.oids.insert_many([raw])
    assert docs[0]["_id"] is given and docs[1]["_id"] == "text" and type(docs[2]["_id"]) is ObjectId
    assert {d["k"]: d["_id"] for d in db.oids.find({"k": {"$lt": 4}})} == {1: given, 2: "text", 3: docs[2]["_id"]}
    assert type(db.oids.find_one({"k": 4})["_id"]) is ObjectId  # the server gave the raw document one


def test_threads_and_greenlets_never_share_an_id(path, client, mode):
    coll = client.get_database("test_objectids").oids
    coll.drop()
    made: list[list[ObjectId]] = []

    def worker() -> None:
        for _ in range(5):
            docs = [{"n": n} for n in range(400)]
            coll.insert_many(docs)
            made.append([d["_id"] for d in docs])
            one = {"n": -1}
            coll.insert_one(one)
            made.append([one["_id"]])

    handles = [mode.spawn(worker) for _ in range(8)]
    assert mode.join(handles, 60) == 0
    ids = [oid for batch in made for oid in batch]
    assert len(ids) == 8 * 5 * 401 == len(set(ids))
    assert coll.count_documents({}) == len(ids)  # _id is unique: a repeat would have failed its insert
    coll.drop()


def _ids_from_a_child(fork, count: int) -> list[ObjectId]:
    """``count`` new ids made by a child process that ``fork`` starts (it exits without pytest's cleanup)."""
    read, write = os.pipe()
    pid = fork()
    if pid == 0:
        try:
            os.write(write, b"".join(objectids.new().binary for _ in range(count)))
        finally:
            os._exit(0)
    assert pid > 0
    os.close(write)
    data = b""
    while len(data) < 12 * count:
        chunk = os.read(read, 12 * count)
        if not chunk:
            break
        data += chunk
    os.close(read)
    assert os.waitpid(pid, 0)[1] == 0
    return [ObjectId(data[i : i + 12]) for i in range(0, len(data), 12)]


def test_a_forked_child_draws_its_own_random_value_and_counter(path):
    parent = objectids.new()
    first, second = _ids_from_a_child(os.fork, 2)
    assert _random_part(first) == _random_part(second) != _random_part(parent)
    assert _random_part(objectids.new()) == _random_part(parent)  # the parent's is unchanged


class _Clock:
    """A clock that moves one second on at every reading."""

    def __init__(self) -> None:
        self.now = 1_700_000_000

    def time(self) -> float:
        self.now += 1
        return float(self.now)


def test_one_insert_many_never_repeats_an_id_when_the_counter_wraps(db, monkeypatch):
    # An insert_many reads the clock once for many ids; with a 3-byte counter, 2**24 ids under
    # one clock reading would repeat.  Scaled down: a 4-bit counter, a stamp serving at most 8
    # counter values, and a clock that moves on at each reading.  Without reading the clock
    # again, ids 16 apart would be equal and the server would refuse them as duplicates.
    # (The private path only: ObjectId(), the fallback, reads the clock for every id.)
    assert objectids.PRIVATE
    monkeypatch.setattr(objectids, "COUNTER_MASK", 0xF)
    monkeypatch.setattr(objectids, "STAMP_SPAN", 8)
    monkeypatch.setattr(objectids, "time", _Clock())
    docs = [{"n": n} for n in range(100)]
    db.wrap.insert_many(docs)
    ids = [d["_id"] for d in docs]
    assert len(set(ids)) == 100 == db.wrap.count_documents({})
    seconds = [int(oid.generation_time.timestamp()) for oid in ids]
    # The clock was read again at least every 9 ids (8 values, and the one spent on the stamp).
    assert all(seconds.count(sec) <= 9 for sec in set(seconds))
    assert seconds == sorted(seconds) and len(set(seconds)) >= 100 // 9


def test_a_child_forked_without_pythons_fork_hooks_draws_its_own_random_value(path):
    # uWSGI forks its workers from C, without Python's fork hooks (os.register_at_fork's
    # callbacks never run): the pid check must notice the new process by itself.
    parent = objectids.new()
    (child,) = _ids_from_a_child(ctypes.PyDLL(None).fork, 1)  # libc's fork, holding the GIL, no hooks
    assert _random_part(child) != _random_part(parent)


def test_the_private_check_refuses_an_objectid_with_other_slots(monkeypatch):
    assert objectids._private_ok()
    monkeypatch.setattr(ObjectId, "__slots__", ("__id", "__other"), raising=False)
    assert not objectids._private_ok()
