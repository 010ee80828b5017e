"""The second round of hot-path shortcuts: each gives exactly what the general path gives.

- encoding with :func:`precoded.encoding_options` (bson's C encoder without
  its failed ``_type_marker`` lookup) gives the same bytes as the caller's
  options;
- ``find_one``'s reply decoded from its document only (``FindOne.first_batch``)
  gives what decoding the whole reply gives, and any other reply falls back;
- ``UpdateResult`` made by filling its slots (:mod:`mongo_requests.hot_results`)
  reads back exactly like one from PyMongo's constructor, and both run;
- a lone server's selection is read from ``Topology.lone_writable``;
- ``update_one`` on a collection with an acknowledged write concern other
  than ``{}`` (``w=1``, ``"majority"``, ``j``...) takes the hot path with the
  ``writeConcern`` element pre-encoded: the bytes sent, the command the other
  paths get, the results and the errors are the general path's;
- ``insert_one`` of a dict takes the hot path (``precoded.InsertOne``): the
  same body, the same ``documents`` sequence with the ``_id`` first, the same
  command dict (more in tests/test_hot_insert.py).
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
from bson.objectid import ObjectId
from bson.son import SON
from pymongo.errors import (
    InvalidOperation,
    OperationFailure,
    ProtocolError,
    WriteConcernError,
    WriteError,
    WTimeoutError,
)
from pymongo.results import InsertOneResult, UpdateResult
from pymongo.write_concern import WriteConcern

from helpers import StartedCommands, failure, spy_commands, spy_precoded_encodes, unique_app, write_concern_failure
from mongo_requests import bulk, hot_results, precoded, wire, writes


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


# -- update_one with a collection's write concern --------------------------------
CONCERNS = [
    WriteConcern(),
    WriteConcern(w=1),
    WriteConcern(w="majority"),
    WriteConcern(j=True),
    WriteConcern(w=1, wtimeout=500),
    WriteConcern(w="majority", wtimeout=1000, j=True),
    WriteConcern(w=1, fsync=True),
]
CONCERN_IDS = ["default", "w1", "majority", "j", "w1-wtimeout", "majority-wtimeout-j", "fsync"]


@pytest.mark.parametrize("options", OPTIONS[:2], ids=["default", "tz-uuid"])
@pytest.mark.parametrize("concern", CONCERNS + [WriteConcern(w=2, wtimeout=100)], ids=CONCERN_IDS + ["w2"])
def test_writers_encode_the_general_command_with_the_collections_write_concern(db, concern, options):
    """A writer's body is the general path's command for the collection's concern, encoded (bson.encode)."""
    coll = db.get_collection("wc", write_concern=concern, codec_options=options)
    statements = {
        bulk.UPDATE: bulk.update_statement({"_id": 1}, {"$inc": {"n": 1}}, False, True),
        bulk.DELETE: bulk.delete_statement({"_id": 1}, 1),
    }
    writers = {
        bulk.UPDATE: precoded.UpdateOne(None, db.name, "wc", options, coll._concern.document),
        bulk.DELETE: precoded.WriteOne(db.name, "wc", "delete", "deletes", coll._concern.document),
    }
    for kind, stmt in statements.items():
        cmd, sequences = bulk.one_statement(coll, kind, stmt, coll._concern)  # what the general path sends
        assert sequences == ()
        assert ("writeConcern" in cmd) is bool(concern.document)
        assert writers[kind].body(stmt, options) == bson.encode({**cmd, "$db": db.name}, False, options)


@pytest.fixture
def sent(monkeypatch):
    """The update and delete commands sockets were given: (the command, the body given, else its encoding)."""

    def record(dbname, cmd, codec_options, sequences, body):
        encoded = bson.encode({**cmd, "$db": dbname}, False, codec_options) if body is None else None
        return dict(cmd), body, encoded

    return spy_commands(monkeypatch, ("update", "delete"), record)


@pytest.mark.parametrize("concern", CONCERNS, ids=CONCERN_IDS)
def test_update_one_with_a_collection_write_concern_sends_the_general_bytes(db, sent, concern):
    """The hot path's update (a pre-encoded body) is byte for byte the general path's, with the same result."""
    coll = db.get_collection("wc", write_concern=concern)
    coll.insert_one({"_id": 1, "n": 0})
    hot = coll.update_one({"_id": 1}, {"$inc": {"n": 1}})
    # The same concern given to the call: the general path (it encodes the command dict).
    general = coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, write_concern=concern)
    assert len(sent) == 2
    (hot_cmd, hot_body, _), (general_cmd, general_body, general_bytes) = sent
    assert hot_body is not None, "update_one did not take the hot path"
    assert general_body is None
    assert hot_body == general_bytes
    # The command dict the other paths (listeners, sessions, retries) encode instead: the same, in the same order.
    assert list(hot_cmd.items()) == list(general_cmd.items())
    assert general_cmd.get("writeConcern", {}) == concern.document
    assert type(hot) is type(general) is UpdateResult
    assert hot_results._reading(hot) == hot_results._reading(general)
    assert hot.raw_result == {"n": 1, "nModified": 1, "ok": 1.0, "updatedExisting": True}
    assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 2}


def test_update_one_upserts_with_a_collection_write_concern_as_the_general_path(db, sent):
    coll = db.get_collection("wc", write_concern=WriteConcern(w=1, j=True))
    hot = coll.update_one({"_id": 10}, {"$set": {"s": "x"}}, upsert=True)
    general = coll.update_one({"_id": 11}, {"$set": {"s": "x"}}, upsert=True, w=1, j=True)
    assert [body is not None for _, body, _ in sent] == [True, False]
    assert (hot.upserted_id, general.upserted_id) == (10, 11)
    assert {**hot.raw_result, "upserted": None} == {**general.raw_result, "upserted": None}
    assert (hot.matched_count, hot.modified_count, hot.acknowledged) == (0, 0, True)
    assert coll.find_one({"_id": 10}) == {"_id": 10, "s": "x"}


@pytest.mark.parametrize("case", ["write error", "w2 on a standalone", "write concern error", "write concern timeout"])
def test_update_one_errors_with_a_collection_write_concern_match_the_general_path(
    make_client, admin_client, sent, case
):
    app = unique_app("wc")
    client = make_client(appname=app)
    name = unique_app("t")
    concern = WriteConcern(w=2, wtimeout=100) if case == "w2 on a standalone" else WriteConcern(w=1)
    coll = client[name].get_collection("wc", write_concern=concern)
    try:
        client[name].wc.insert_one({"_id": 1, "n": 0})
        update = {"$set": {"_id": 5}} if case == "write error" else {"$inc": {"n": 1}}
        # The server applies each update, then answers with the write concern error (both calls).
        failing, wce = write_concern_failure(admin_client, case, "update", app)
        with failing:
            hot = failure(lambda: coll.update_one({"_id": 1}, update))
            general = failure(lambda: coll.update_one({"_id": 1}, update, write_concern=concern))
        assert [body is not None for _, body, _ in sent] == [True, False]
        assert hot == general
        expected = {
            "write error": WriteError,
            "w2 on a standalone": OperationFailure,  # a standalone refuses w > 1 as a command error
            "write concern error": WriteConcernError,
            "write concern timeout": WTimeoutError,
        }[case]
        assert hot[0] is expected
        # The write ran (or not) as the general path's did: twice with a write concern error, never otherwise.
        n = 2 if wce else 0
        assert client[name].wc.find_one({"_id": 1}) == {"_id": 1, "n": n}
    finally:
        client.drop_database(name)


def test_single_writes_use_the_collections_writers_only_with_its_own_write_concern(db, sent):
    """update_many/delete_one (bulk.run_one) send the writer's body for the collection's concern, not another's."""
    coll = db.get_collection("wc", write_concern=WriteConcern(w=1))
    coll.insert_many([{"_id": i} for i in range(4)])
    coll.update_one({"_id": 0}, {"$set": {"a": 1}})
    coll.update_many({"_id": 1}, {"$set": {"a": 1}})
    coll.delete_one({"_id": 2})
    # Per-call concerns, {} among them: the general path, each with its own writeConcern (or none).
    coll.update_many({"_id": 3}, {"$set": {"a": 1}}, write_concern=WriteConcern())
    coll.delete_one({"_id": 3}, w=1, j=True)
    assert [body is not None for _, body, _ in sent] == [True, True, True, False, False]
    concerns = []
    for cmd, body, encoded in sent:
        sent_doc = bson.decode(body if body is not None else encoded)
        assert list(sent_doc.items()) == list({**cmd, "$db": db.name}.items())
        concerns.append(sent_doc.get("writeConcern"))
    assert concerns == [{"w": 1}, {"w": 1}, {"w": 1}, None, {"w": 1, "j": True}]
    assert list(coll.find({}, sort=[("_id", 1)])) == [{"_id": 0, "a": 1}, {"_id": 1, "a": 1}]


def test_update_one_with_an_unacknowledged_collection_takes_the_general_path(db, sent):
    coll = db.get_collection("wc", write_concern=WriteConcern(w=0))
    result = coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, upsert=True)
    assert result.acknowledged is False
    assert sent == []  # sent with moreToCome (send_command), no reply awaited
    with pytest.raises(InvalidOperation):
        result.matched_count  # noqa: B018


@pytest.fixture
def encoded(monkeypatch):
    """The documents the hot path's writers and finders encoded (precoded.encode's calls)."""
    return spy_precoded_encodes(monkeypatch)


@pytest.mark.parametrize("concern", [WriteConcern(), WriteConcern(w="majority", j=True)], ids=["default", "majority-j"])
def test_update_one_shows_listeners_the_general_command_and_encodes_no_body_for_them(make_client, encoded, concern):
    """With a command listener the command dict is what gets encoded (by the listener's path): no body is made."""
    listener = StartedCommands("update")
    client = make_client(event_listeners=[listener])
    name = unique_app("t")
    try:
        coll = client[name].get_collection("wc", write_concern=concern)
        coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, upsert=True)
        assert encoded == []  # the hot path's statement was not encoded for nothing
        coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, upsert=True, write_concern=concern)
        hot, general = listener.commands
        assert list(hot.items()) == list(general.items())
        assert hot.get("writeConcern", {}) == concern.document
        assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 2}
    finally:
        client.drop_database(name)


@pytest.mark.parametrize("concern", [WriteConcern(), WriteConcern(w=1)], ids=["default", "w1"])
def test_update_one_encodes_no_body_for_the_session_path(make_client, sent, encoded, concern):
    """Once the application has started a session, commands take the session path, which encodes the dict."""
    client = make_client()
    name = unique_app("t")
    coll = client[name].get_collection("wc", write_concern=concern)
    try:
        coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, upsert=True)
        assert len(encoded) == 1 and sent[-1][1] is not None  # no session yet: the pre-encoded body
        with client.start_session():
            coll.update_one({"_id": 1}, {"$inc": {"n": 1}})
        assert len(encoded) == 1 and sent[-1][1] is None
        assert sent[-1][0].get("writeConcern", {}) == concern.document
        assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 2}
    finally:
        client.drop_database(name)


# -- insert_one ------------------------------------------------------------------
@pytest.fixture
def sent_inserts(monkeypatch):
    """The insert commands sockets were given: (the command, the body given, else its encoding, the sequences)."""

    def record(dbname, cmd, codec_options, sequences, body):
        encoded = bson.encode({**cmd, "$db": dbname}, False, codec_options) if body is None else None
        return dict(cmd), body, encoded, tuple(sequences)

    return spy_commands(monkeypatch, ("insert",), record)


@pytest.mark.parametrize("options", OPTIONS[:2], ids=["default", "tz-uuid"])
@pytest.mark.parametrize("concern", CONCERNS, ids=CONCERN_IDS)
def test_insert_one_sends_the_general_bytes(db, sent_inserts, concern, options):
    """The hot path's insert is the general path's to the byte: body, sequence, the _id generated and placed first."""
    coll = db.get_collection("ins", write_concern=concern, codec_options=options)
    fields = {"a": datetime.datetime(2020, 1, 2, 3, 4, 5), "l": [1, {"x": "é"}], "s": SON([("b", 1), ("a", 2)])}
    if options.uuid_representation == UuidRepresentation.STANDARD:
        fields["u"] = uuid.UUID(int=7)
    hot_doc, general_doc = dict(fields), dict(fields)
    hot = coll.insert_one(hot_doc)
    # The same concern given to the call: the general path (encode_insert, run_one, the command dict encoded).
    general = coll.insert_one(general_doc, write_concern=concern)
    assert len(sent_inserts) == 2
    (hot_cmd, hot_body, _, hot_seq), (general_cmd, general_body, general_bytes, general_seq) = sent_inserts
    assert hot_body is not None, "insert_one did not take the hot path"
    assert general_body is None
    assert hot_body == general_bytes
    # The command dict the other paths (listeners, sessions, retries) encode instead: the same, in the same order.
    assert list(hot_cmd.items()) == list(general_cmd.items())
    assert general_cmd.get("writeConcern", {}) == concern.document
    # Each caller's dict got a fresh ObjectId, added last as the general path adds it...
    hot_id, general_id = hot_doc["_id"], general_doc["_id"]
    assert type(hot_id) is type(general_id) is ObjectId and hot_id != general_id
    assert list(hot_doc) == list(general_doc) == [*fields, "_id"]
    # ... and encoded first, in the same documents sequence, byte for byte but for the ids.
    assert len(hot_seq) == len(general_seq) == 1
    assert hot_seq[0].replace(hot_id.binary, general_id.binary) == general_seq[0]
    assert hot_seq[0] == wire.encode_section("documents", [bson.encode({"_id": hot_id, **fields}, False, options)])
    assert type(hot) is type(general) is InsertOneResult
    assert (hot.inserted_id, hot.acknowledged) == (hot_id, True)
    assert (general.inserted_id, general.acknowledged) == (general_id, True)
    assert coll.count_documents({"_id": {"$in": [hot_id, general_id]}}) == 2
