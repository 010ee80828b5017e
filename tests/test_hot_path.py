"""The second round of hot-path shortcuts: each gives exactly what the general path gives.

- encoding with :func:`precoded.encoding_options` (bson's C encoder without
  its failed ``_type_marker`` lookup) gives the same bytes as the caller's
  options;
- ``find_one``'s reply decoded from its document only (``FindOne.first_batch``)
  gives what decoding the whole reply gives, and any other reply falls back;
- ``UpdateResult`` made by filling its slots (:mod:`mongo_requests.hot_results`)
  reads back exactly like one from PyMongo's constructor, and both run;
- a lone server's selection is read from ``Topology.lone_writable``.
"""

from __future__ import annotations

import datetime
import decimal
import uuid

import bson
import pytest
from bson.binary import UuidRepresentation
from bson.codec_options import DEFAULT_CODEC_OPTIONS, CodecOptions, TypeEncoder, TypeRegistry
from bson.json_util import JSONOptions
from bson.son import SON
from pymongo.errors import OperationFailure, ProtocolError
from pymongo.results import UpdateResult

from mongo_requests import hot_results, precoded, wire, writes


class _DecimalEncoder(TypeEncoder):
    python_type = decimal.Decimal

    def transform_python(self, value):
        return bson.Decimal128(value)


OPTIONS = [
    DEFAULT_CODEC_OPTIONS,
    CodecOptions(tz_aware=True, uuid_representation=UuidRepresentation.STANDARD),
    CodecOptions(type_registry=TypeRegistry([_DecimalEncoder()])),
    CodecOptions(document_class=SON),
]

DOCS = [
    {"_id": 1},
    {"a": datetime.datetime(2020, 1, 2, 3, 4, 5), "n": None, "l": [1, {"x": "é"}], "s": SON([("b", 1), ("a", 2)])},
    {"u": uuid.UUID(int=7), "d": decimal.Decimal("1.5")},
]


@pytest.mark.parametrize("options", OPTIONS, ids=["default", "tz-uuid", "registry", "son"])
@pytest.mark.parametrize("doc", DOCS, ids=["small", "nested", "uuid-decimal"])
def test_encoding_options_give_the_same_bytes(options, doc):
    """Encoding with the twin options gives the bytes (or the error) the caller's options give."""
    twin = precoded.encoding_options(options)
    assert precoded.encoding_options(options) is twin  # remembered
    try:
        expected = bson.encode(doc, False, options)
    except Exception as exc:
        with pytest.raises(type(exc)):
            precoded.encode(doc, False, twin)
        return
    assert precoded.encode(doc, False, twin) == expected
    assert precoded._public_encode(doc, False, twin) == expected
    if options.document_class is dict:
        assert twin is not options and twin.document_class is precoded._EncodingDocument
    else:
        assert twin is options  # another document class: used as given


def test_encoding_options_leave_subclasses_alone():
    options = JSONOptions()
    assert precoded.encoding_options(options) is options


def test_encoding_options_switch_between_callers():
    """Two callers alternating options each get their own twin, never the other's."""
    a, b = OPTIONS[0], OPTIONS[1]
    for _ in range(3):
        assert precoded.encoding_options(a).tz_aware is False
        assert precoded.encoding_options(b).tz_aware is True
        assert precoded.encoding_options(b).uuid_representation == UuidRepresentation.STANDARD


@pytest.fixture
def first_batch_spy(monkeypatch):
    """Counts find_one replies decoded from their document only (hits) and in full (misses)."""
    seen = {"hit": 0, "miss": 0}
    original = precoded.FindOne.first_batch

    def spy(self, message):
        result = original(self, message)
        seen["hit" if result is not None else "miss"] += 1
        return result

    monkeypatch.setattr(precoded.FindOne, "first_batch", spy)
    return seen


DOCUMENTS = [
    {"_id": 1, "key": "key-00001", "name": "document", "value": 3.25},
    {"_id": "é" * 50, "nested": {"a": [1, 2, {"b": None}]}, "when": datetime.datetime(2021, 5, 6, 7, 8, 9)},
    {"_id": 3, "big": "x" * 100_000},  # a reply over the socket's first read
]


@pytest.mark.parametrize("decoder", ["private", "public"])
def test_find_one_document_only_matches_the_general_path(db, first_batch_spy, monkeypatch, decoder):
    if decoder == "public":
        monkeypatch.setattr(precoded, "_decode", bson.decode)
    coll = db["hot.path"]  # a dotted name, in the reply's namespace
    coll.insert_many(DOCUMENTS)
    for doc in DOCUMENTS:
        fast = coll.find_one({"_id": doc["_id"]})
        general = coll.find_one({"_id": doc["_id"]}, max_time_ms=5000)  # options: the cursor path
        assert fast == general == doc
    assert first_batch_spy["hit"] == len(DOCUMENTS)
    # Replies of another shape take the full decoding: no document, an error.
    assert coll.find_one({"_id": "missing"}) is None
    with pytest.raises(OperationFailure) as info:
        coll.find_one({"$bogus": 1})
    assert info.value.code == 2
    assert first_batch_spy["miss"] == 2


def test_find_one_document_only_with_other_codec_options(db, first_batch_spy):
    coll = db.get_collection("c", codec_options=CodecOptions(document_class=SON, tz_aware=True))
    coll.insert_one({"_id": 1, "b": 1, "a": datetime.datetime(2020, 1, 1)})
    doc = coll.find_one({"_id": 1})
    assert isinstance(doc, SON) and list(doc) == ["_id", "b", "a"]
    assert doc["a"].tzinfo is not None
    assert doc == coll.find_one({"_id": 1}, max_time_ms=5000)
    assert first_batch_spy["hit"] == 1


def _find_reply(ns, docs, ok=1.0):
    return wire.pack_msg(7, bson.encode({"cursor": {"firstBatch": docs, "id": bson.Int64(0), "ns": ns}, "ok": ok}))


def test_first_batch_recognises_only_its_own_shape():
    finder = precoded.FindOne("db", "coll")
    doc = {"_id": 1, "s": "x"}
    assert finder.first_batch(memoryview(_find_reply("db.coll", [doc]))) == [doc]
    # Anything else is left to the full decoding.
    for other in (
        _find_reply("db.other", [doc]),  # another namespace
        _find_reply("db.coll", []),  # no document
        _find_reply("db.coll", [doc, doc]),  # two (their bytes fit the frame: bson refuses them as one)
        _find_reply("db.coll", [doc], ok=1),  # ok as an int
        wire.pack_msg(
            7, bson.encode({"cursor": {"firstBatch": [doc], "id": bson.Int64(5), "ns": "db.coll"}, "ok": 1.0})
        ),
        wire.pack_msg(7, bson.encode({"ok": 0.0, "errmsg": "no", "code": 2})),
    ):
        assert finder.first_batch(memoryview(other)) is None
    # Flag bits (a checksum) are not the usual shape either.
    msg = bytearray(_find_reply("db.coll", [doc]))
    msg[16] = 1
    assert finder.first_batch(memoryview(bytes(msg))) is None


def test_first_batch_refuses_a_bad_document():
    finder = precoded.FindOne("db", "coll")
    msg = bytearray(_find_reply("db.coll", [{"_id": 1, "s": "x"}]))
    msg[56 + 4] = 0x7F  # the document's first element: an unknown type
    assert finder.first_batch(memoryview(bytes(msg))) is None  # the full decoding judges
    with pytest.raises(ProtocolError):
        wire.unpack_msg(memoryview(bytes(msg)))


def test_update_result_private_path_reads_like_the_public_one():
    assert hot_results.private_update_result is not None, (
        "this PyMongo's UpdateResult layout is not the one checked: the private path is off"
    )
    for raw in ({"n": 1, "nModified": 1, "ok": 1.0, "updatedExisting": True}, {"n": 1, "upserted": 5, "ok": 1.0}):
        fast, public = hot_results.private_update_result(dict(raw)), hot_results.public_update_result(dict(raw))
        assert type(fast) is UpdateResult
        assert hot_results._reading(fast) == hot_results._reading(public)


@pytest.mark.parametrize("maker", ["private", "public"])
def test_update_one_results_through_either_maker(db, monkeypatch, maker):
    monkeypatch.setattr(writes, "new_update_result", getattr(hot_results, "%s_update_result" % maker))
    coll = db.counters
    r = coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, upsert=True)
    assert (r.acknowledged, r.matched_count, r.modified_count, r.upserted_id) == (True, 0, 0, 1)
    r = coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, upsert=True)
    assert (r.matched_count, r.modified_count, r.upserted_id) == (1, 1, None)
    assert r.raw_result == {"n": 1, "nModified": 1, "ok": 1.0, "updatedExisting": True}
    assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 2}


def test_update_one_inline_checks_match_check_update(db):
    coll = db.counters
    for bad in ({}, {"n": 1}, {1: {"n": 1}}):
        with pytest.raises(ValueError):
            coll.update_one({"_id": 1}, bad)
    with pytest.raises(TypeError):
        coll.update_one({"_id": 1}, "not a document")
    assert coll.find_one({"_id": 1}) is None


def test_lone_server_selection_is_remembered(make_client):
    client = make_client()
    assert client.admin.command("ping") == {"ok": 1.0}
    topology = client._topology
    assert topology.lone_writable is topology.select_server()
    client.close()
    assert topology.lone_writable is None


# CPython 3.11 keeps an instance's attributes in its class's shared-key table
# only up to about 30 names; an instance with more keeps a plain dict, and every
# attribute read of the hot path (LOAD_ATTR_INSTANCE_VALUE) loses its
# specialization: 31 pool attributes cost a find_one ~1,200 instructions.
SHARED_KEYS_LIMIT = 29


def test_hot_objects_keep_their_attributes_in_the_shared_key_table(make_client):
    client = make_client(maxPoolSize=2)
    coll = client.mongo_requests_test.hot_attrs
    # Touch every path that sets attributes: connect, a wait, a request, a pin, stats.
    with client.start_request():
        coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, upsert=True)
        assert coll.find_one({"_id": 1})["n"] >= 1
    pool = client._topology.select_server().pool
    held = [pool.checkout(), pool.checkout()]
    for sock in held:
        pool.checkin(sock)
    pool.get_stats()
    for obj in (pool, client._topology, client, coll, coll.database):
        names = sorted(vars(obj))
        assert len(names) <= SHARED_KEYS_LIMIT, (type(obj).__name__, len(names), names)
