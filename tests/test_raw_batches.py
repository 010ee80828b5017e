"""Raw documents and raw batches read straight from the reply's BSON array (``mongo_requests.raw_arrays``).

Every server test runs on three paths: bson's private helpers (the default:
``_RawArrayBSONDocument``, ``_array_of_documents_to_buffer`` and setting a
RawBSONDocument's slots), the public API alone (replies decoded with the
cursor's own codec options, documents made by the class), and the private
decoding with the Python re-framing and the public constructor.  What a cursor
returns must not depend on the path; what the server did (getMores, open
cursors, sessions) is asked of the server.
"""

from __future__ import annotations

import datetime
import struct

import bson
import pytest
from bson.codec_options import CodecOptions
from bson.int64 import Int64
from bson.raw_bson import DEFAULT_RAW_BSON_OPTIONS, RawBSONDocument
from bson.regex import Regex
from pymongo import CursorType, monitoring
from pymongo.errors import OperationFailure, ProtocolError

from helpers import fail_point
from mongo_requests import raw_arrays

RAW = CodecOptions(document_class=RawBSONDocument)


def raw_array(docs: list[dict]) -> bytes:
    """The bytes of a BSON array of ``docs``, as a reply holds its batch."""
    return bson.encode({"a": docs})[7:-1]  # after the length, the type byte and "a\0"; before the final NUL


def open_cursors(admin_client) -> int:
    return admin_client.admin.command("serverStatus")["metrics"]["cursor"]["open"]["total"]


def get_more_total(admin_client) -> int:
    return admin_client.admin.command("serverStatus")["metrics"]["commands"]["getMore"]["total"]


@pytest.fixture(params=["private", "public", "decoded"])
def path(request, monkeypatch) -> str:
    """How raw cursors read their batches: bson's private helpers, the public API alone, or decoded replies."""
    if request.param == "public":
        monkeypatch.setattr(raw_arrays, "_to_buffer", raw_arrays._py_to_buffer)
        monkeypatch.setattr(raw_arrays, "_buffered", raw_arrays._wrap_public)
    elif request.param == "decoded":  # as with command listeners: the whole reply decoded
        monkeypatch.setattr(raw_arrays, "SPLIT_REPLIES", False)
    return str(request.param)


@pytest.fixture
def things(db):
    """25 documents of several types, _id 0..24."""
    docs = [
        {"_id": i, "s": "x" * i, "f": i / 4, "d": {"n": i, "l": [i, str(i)]}, "t": datetime.datetime(2020, 1, 1 + i)}
        for i in range(25)
    ]
    db.things.insert_many(docs)
    return db.things


# -- pure functions -------------------------------------------------------------------


def test_private_helpers_are_present_and_agree_with_the_public_api():
    # The default path must really be the fast one on the bson this suite runs with.
    assert raw_arrays._to_buffer is bson._array_of_documents_to_buffer
    assert raw_arrays.PRIVATE and raw_arrays._buffered is raw_arrays._split_private


@pytest.mark.parametrize("n", [0, 1, 9, 10, 11, 99, 100, 101, 1000, 1234])
def test_stream_and_count_of_arrays_of_every_size(n):
    docs = [{"i": i, "s": "v" * (i % 7)} for i in range(n)]
    array = raw_array(docs)
    expected = b"".join(bson.encode(d) for d in docs)
    assert raw_arrays.to_stream(array) == (expected, n)
    assert raw_arrays._py_to_buffer(array) == expected
    assert raw_arrays._count(len(array), len(expected)) == n
    assert raw_arrays.to_stream(memoryview(array)) == (expected, n)
    # The public path hands over decoded documents: the same answer.
    decoded = bson.decode(bson.encode({"a": docs}), RAW)["a"]
    assert raw_arrays.to_stream(decoded) == (expected, n)


def test_count_falls_back_to_a_walk_when_the_keys_are_not_0_1_2():
    docs = [bson.encode({"i": i}) for i in range(3)]
    # Keys "a", "bb", "c": a legal document, not a legal array; the arithmetic cannot hold.
    body = b"".join(b"\x03" + key + b"\x00" + doc for key, doc in zip((b"a", b"bb", b"c"), docs, strict=True))
    array = struct.pack("<i", len(body) + 5) + body + b"\x00"
    assert raw_arrays._count(len(array), sum(map(len, docs))) is None
    assert raw_arrays.to_stream(array) == (b"".join(docs), 3)


def test_first_documents_cuts_a_stream():
    docs = [bson.encode({"i": i}) for i in range(5)]
    stream = b"".join(docs)
    assert raw_arrays.first_documents(stream, 2) == (docs[0] + docs[1], 2)
    assert raw_arrays.first_documents(stream, 0) == (b"", 0)
    assert raw_arrays.first_documents(stream, 9) == (stream, 5)


@pytest.mark.parametrize("wrap", ["_split_private", "_wrap_public"])
def test_documents_are_raw_documents_equal_to_the_class_made_ones(wrap, monkeypatch):
    monkeypatch.setattr(raw_arrays, "_buffered", getattr(raw_arrays, wrap))
    docs = [{"_id": i, "a": [1, {"b": "c" * i}], "t": datetime.datetime(2021, 5, 1 + i)} for i in range(12)]
    array = raw_array(docs)
    made = raw_arrays.documents(array, DEFAULT_RAW_BSON_OPTIONS)
    assert [type(d) for d in made] == [RawBSONDocument] * 12
    assert [bytes(d.raw) for d in made] == [bson.encode(d) for d in docs]
    assert [dict(d) for d in made] == [dict(RawBSONDocument(bson.encode(d))) for d in docs]
    assert [d["a"][1]["b"] for d in made] == ["c" * i for i in range(12)]
    # Other codec options reach each document: tz-aware datetimes.
    aware = CodecOptions(document_class=RawBSONDocument, tz_aware=True)
    assert raw_arrays.documents(array, aware)[3]["t"].tzinfo is not None
    assert repr(made[0]) == repr(RawBSONDocument(bson.encode(docs[0])))
    # A list (the public path's decoded batch) is handed back as it is.
    assert raw_arrays.buffered(made, DEFAULT_RAW_BSON_OPTIONS) is made
    assert raw_arrays.documents(made, DEFAULT_RAW_BSON_OPTIONS) == made


@pytest.mark.parametrize("to_buffer", ["private", "python"])
@pytest.mark.parametrize("wrap", ["_split_private", "_wrap_public"])
def test_malformed_arrays_are_protocol_errors(to_buffer, wrap, monkeypatch):
    if to_buffer == "python":
        monkeypatch.setattr(raw_arrays, "_to_buffer", raw_arrays._py_to_buffer)
    monkeypatch.setattr(raw_arrays, "_buffered", getattr(raw_arrays, wrap))
    good = raw_array([{"x": 1}, {"y": 2}])
    doc_at = 7  # the int32 length of the first document, after its type byte and key "0\0"
    bad = [
        good[:doc_at] + struct.pack("<i", 3) + good[doc_at + 4 :],  # a document shorter than 5 bytes
        good[:doc_at] + struct.pack("<i", 300) + good[doc_at + 4 :],  # past the array's end
        good[:doc_at] + struct.pack("<i", -5) + good[doc_at + 4 :],
        good[:-1],  # the array's own terminator missing
        b"\x05\x00",  # shorter than any array
    ]
    for array in bad:
        with pytest.raises(ProtocolError):
            raw_arrays.to_stream(array)
        with pytest.raises(ProtocolError):
            raw_arrays.documents(array, DEFAULT_RAW_BSON_OPTIONS)
    # A document without its final NUL: the C re-framing lets it through, the document check does not.
    no_nul = good[: doc_at + 11] + b"\x01" + good[doc_at + 12 :]
    with pytest.raises(ProtocolError):
        raw_arrays.documents(no_nul, DEFAULT_RAW_BSON_OPTIONS)


def test_unpack_reply_leaves_the_batch_undecoded_and_decodes_the_rest():
    docs = [{"_id": i, "v": "x" * i} for i in range(30)]
    stream = b"".join(bson.encode(d) for d in docs)
    for key in ("firstBatch", "nextBatch"):
        # Elements before and after the batch, of the types a reply's envelope holds.
        cursor = {"pbrt": {"t": 1}, key: docs, "id": Int64(77), "ns": "db.c", "partial": False}
        body = bson.encode({"n": 1.5, "cursor": cursor, "ok": 1.0, "ts": bson.Timestamp(5, 1), "b": b"\x01\x02"})
        for batches in (False, True):
            reply = raw_arrays.unpack_reply(memoryview(bytearray(body)), raw_arrays.reply_codec(RAW, batches))
            assert type(reply) is dict and reply["ok"] == 1.0 and reply["n"] == 1.5 and reply["b"] == b"\x01\x02"
            assert reply["cursor"]["id"] == 77 and reply["cursor"]["ns"] == "db.c"
            assert reply["cursor"]["pbrt"] == {"t": 1}
            if batches:  # a raw batch cursor's: one stream
                assert reply["cursor"][key] == raw_arrays.Batch(stream, 30)
            else:  # raw documents: each one's bytes, cut from the receive buffer
                assert reply["cursor"][key] == [bson.encode(d) for d in docs]
                assert type(reply["cursor"][key]) is raw_arrays.Chunks
    # An array whose keys are not 0, 1, 2... still gives its documents.
    odd_keys = bson.encode({"cursor": {"firstBatch": {"aa": docs[0], "b": docs[1]}, "id": 0}, "ok": 1})
    odd_keys = odd_keys.replace(b"\x03firstBatch", b"\x04firstBatch")
    reply = raw_arrays.unpack_reply(odd_keys, raw_arrays.reply_codec(RAW))
    assert reply["cursor"]["firstBatch"] == [bson.encode(docs[0]), bson.encode(docs[1])]
    # An error reply, or anything but a cursor batch, is decoded as before: errorLabels is a list.
    error = bson.encode({"ok": 0.0, "errmsg": "boom", "code": 2, "errorLabels": ["A", "B"]})
    reply = raw_arrays.unpack_reply(error, raw_arrays.reply_codec(RAW))
    assert type(reply) is RawBSONDocument and reply["errorLabels"] == ["A", "B"]
    odd = bson.encode({"cursor": {"id": 0, "r": Regex("a"), "firstBatch": docs}, "ok": 1})
    assert (
        type(raw_arrays.unpack_reply(odd, raw_arrays.reply_codec(RAW))) is RawBSONDocument
    )  # a type the walk does not skip
    # A batch whose documents do not fit their array is a ProtocolError.
    bad = bytearray(bson.encode({"cursor": {"firstBatch": docs, "id": 0}, "ok": 1}))
    struct.pack_into("<i", bad, bad.index(bson.encode(docs[0])), 500)
    for batches in (False, True):
        with pytest.raises(ProtocolError):
            raw_arrays.unpack_reply(bad, raw_arrays.reply_codec(RAW, batches))


# -- against the server ---------------------------------------------------------------


def test_raw_batches_are_the_servers_documents_in_its_batches(path, things, pm, admin_client):
    theirs = pm[things.database.name].things
    before = get_more_total(admin_client)
    cursor = things.find_raw_batches({}, batch_size=7, sort=[("_id", 1)])
    mine = list(cursor)
    assert get_more_total(admin_client) - before == 3  # 7 + 7 + 7 + 4
    ref = list(theirs.find_raw_batches({}, batch_size=7, sort=[("_id", 1)]))
    assert mine == ref and all(type(b) is bytes for b in mine)
    assert [len(bson.decode_all(b)) for b in mine] == [7, 7, 7, 4]
    assert bson.decode_all(b"".join(mine)) == list(theirs.find({}, sort=[("_id", 1)]))
    assert cursor.retrieved == 25 and cursor.cursor_id == 0 and not cursor.alive


def test_raw_batches_limit_skip_and_the_servers_limit(path, things, admin_client):
    before = get_more_total(admin_client)
    batches = list(things.find_raw_batches({}, batch_size=4, limit=10, skip=3, sort=[("_id", 1)]))
    assert [d["_id"] for b in batches for d in bson.decode_all(b)] == list(range(3, 13))
    assert [len(bson.decode_all(b)) for b in batches] == [4, 4, 2]  # the last getMore asked for 2
    assert get_more_total(admin_client) - before == 2
    assert list(things.find_raw_batches({"_id": -1})) == []
    single = list(things.find_raw_batches({}, sort=[("_id", 1)]).limit(-3))
    assert [[d["_id"] for d in bson.decode_all(b)] for b in single] == [[0, 1, 2]]


def test_a_clone_of_a_raw_batch_cursor_gives_raw_batches_too(path, things):
    cursor = things.find_raw_batches({"_id": {"$gte": 5}}, batch_size=4, sort=[("_id", 1)]).limit(9)
    first = list(cursor)
    clone = cursor.clone()
    assert type(clone) is type(cursor)
    again = list(clone)
    assert again == first and all(type(b) is bytes for b in again)
    assert [d["_id"] for b in again for d in bson.decode_all(b)] == list(range(5, 14))
    assert [len(bson.decode_all(b)) for b in again] == [4, 4, 1]


def test_raw_documents_match_decoded_ones(path, things):
    raw = things.with_options(codec_options=RAW)
    plain = list(things.find({}, sort=[("_id", 1)]))
    cursor = raw.find({}, sort=[("_id", 1)], batch_size=6)
    docs = list(cursor)
    assert [type(d) for d in docs] == [RawBSONDocument] * 25
    assert [bson.decode(bytes(d.raw)) for d in docs] == plain
    assert [repr(d) for d in docs] == [repr(RawBSONDocument(bytes(d.raw), RAW)) for d in docs]
    assert [d["d"]["l"] for d in docs] == [[i, str(i)] for i in range(25)]
    assert cursor.retrieved == 25
    assert list(raw.find({"_id": -1})) == [] and raw.find_one({"_id": -1}) is None
    assert raw_arrays.documents(raw_array([]), RAW) == []
    # limit and skip run through the slow path, one document at a time.
    assert [d["_id"] for d in raw.find({}, sort=[("_id", 1)], skip=5, limit=8, batch_size=3)] == list(range(5, 13))
    assert raw.find_one({"_id": 4})["s"] == "xxxx"
    # Codec options other than the defaults reach every document.
    aware = things.with_options(codec_options=CodecOptions(document_class=RawBSONDocument, tz_aware=True))
    assert all(d["t"].tzinfo is not None for d in aware.find(batch_size=10))

    class MyRaw(RawBSONDocument):
        pass

    mine = things.with_options(codec_options=CodecOptions(document_class=MyRaw))
    assert [type(d) for d in mine.find(batch_size=10)] == [MyRaw] * 25


def test_the_fast_path_is_taken_only_on_the_private_path(path, things, make_client):
    cursor = things.with_options(codec_options=RAW).find()
    reply_class = cursor._reply_codec.document_class
    assert reply_class is (RawBSONDocument if path == "decoded" else raw_arrays.RawReply)
    batches = things.find_raw_batches()._reply_codec.document_class
    assert batches is (RawBSONDocument if path == "decoded" else raw_arrays.RawBatchReply)
    first = next(cursor)
    # On the private path the batch waits as bytes, and each document is made as it is handed out.
    buffered = {type(d) for d in cursor._batch}
    assert buffered == ({bytes} if path == "private" else {RawBSONDocument})
    assert type(first) is RawBSONDocument and type(next(cursor)) is RawBSONDocument
    assert things.find()._reply_codec is things.codec_options  # dict documents: untouched
    # With command listeners, replies decode as before (the events carry the same documents).
    listened = make_client(event_listeners=[monitoring.CommandListener()])
    coll = listened[things.database.name].get_collection("things", codec_options=RAW)
    assert coll.find()._reply_codec.document_class is RawBSONDocument


def test_aggregate_raw_batches_over_getmores(path, things, pm):
    pipeline = [{"$sort": {"_id": -1}}, {"$project": {"s": 0}}]
    mine = list(things.aggregate_raw_batches(pipeline, batchSize=4))
    ref = list(pm[things.database.name].things.aggregate_raw_batches(pipeline, batchSize=4))
    assert mine == ref and len(mine) == 7
    raw = things.with_options(codec_options=RAW)
    assert [d["_id"] for d in raw.aggregate(pipeline, batchSize=4)] == list(range(24, -1, -1))


def test_a_getmore_error_keeps_its_labels(path, things, admin_client):
    cursor = things.find_raw_batches({}, batch_size=5)
    next(cursor)
    docs = things.with_options(codec_options=RAW).find({}, batch_size=5)
    next(docs)
    for it in (cursor, docs):
        with fail_point(admin_client, {"times": 1}, failCommands=["getMore"], errorCode=2, errorLabels=["Odd"]):
            with pytest.raises(OperationFailure) as info:
                for _ in range(10):
                    next(it)
        assert info.value.code == 2 and info.value.has_error_label("Odd")
        assert list(info.value.details["errorLabels"]) == ["Odd"]


def test_raw_cursors_run_their_getmores_in_their_session(path, things, client):
    raw = things.with_options(codec_options=RAW)
    with client.start_session() as session:
        batches = things.find_raw_batches({}, batch_size=4, session=session)
        docs = raw.find({}, batch_size=4, session=session)
        for cursor in (batches, docs):
            next(cursor)
            # The server refuses a getMore outside the session that opened the cursor...
            with pytest.raises(OperationFailure):
                things.database.command({"getMore": cursor.cursor_id, "collection": "things", "batchSize": 1})
        # ... and the cursors' own getMores carry it.
        assert sum(len(bson.decode_all(b)) for b in batches) == 21
        assert len(list(docs)) == 24


def test_close_kills_the_server_cursor(path, things, admin_client):
    before = open_cursors(admin_client)
    cursor = things.find_raw_batches({}, batch_size=3)
    assert len(bson.decode_all(next(cursor))) == 3
    cursor_id = cursor.cursor_id
    assert cursor_id and open_cursors(admin_client) == before + 1
    cursor.close()
    assert open_cursors(admin_client) == before
    with pytest.raises(OperationFailure):
        things.database.command({"getMore": cursor_id, "collection": "things"})
    with pytest.raises(StopIteration):
        next(cursor)


def test_a_pipelining_request_syncs_before_a_raw_cursor(path, client, db):
    coll = db.piped
    with client.start_request(pipeline=True):
        for i in range(50):
            coll.insert_one({"_id": i})
        batches = list(coll.find_raw_batches({}, batch_size=20, sort=[("_id", 1)]))
        assert [d["_id"] for b in batches for d in bson.decode_all(b)] == list(range(50))
        coll.insert_one({"_id": 50})
        raw = coll.with_options(codec_options=RAW)
        assert [d["_id"] for d in raw.find({}, sort=[("_id", 1)])][-1] == 50


def test_tailable_raw_batches_stop_when_nothing_is_new_and_resume(path, db):
    db.create_collection("capped", capped=True, size=64 * 1024)
    db.capped.insert_many([{"_id": i} for i in range(5)])
    cursor = db.capped.find_raw_batches({}, cursor_type=CursorType.TAILABLE, batch_size=2)
    assert [d["_id"] for b in cursor for d in bson.decode_all(b)] == [0, 1, 2, 3, 4]
    assert cursor.alive  # an empty getMore ends this iteration, not the cursor
    db.capped.insert_many([{"_id": 5}, {"_id": 6}])
    assert [d["_id"] for b in cursor for d in bson.decode_all(b)] == [5, 6]
    cursor.close()
    assert not cursor.alive
