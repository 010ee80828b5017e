"""The hot path's shortcuts: pre-encoded command bodies and remembered small replies.

Each shortcut must give exactly what the general path gives: the bodies are
compared byte for byte with bson's encoding of the whole command, through
bson's private C entry point and through the public ``bson.encode`` fallback
alike, and the operations run against the real server with both.
"""

from __future__ import annotations

import bson
import pytest
from bson.codec_options import DEFAULT_CODEC_OPTIONS, CodecOptions
from bson.son import SON
from pymongo.errors import DocumentTooLarge, OperationFailure

from mongo_requests import precoded, socket_info, wire

ENCODERS = {"private": precoded._private_encode, "public": precoded._public_encode}


@pytest.fixture(params=sorted(ENCODERS))
def encoder(request, monkeypatch):
    """Run the test with bson's private encoder, then with the public fallback."""
    fn = ENCODERS[request.param]
    assert fn is not None, "bson has no _dict_to_bson: the private path cannot be tested"
    monkeypatch.setattr(precoded, "encode", fn)
    return request.param


@pytest.mark.parametrize(
    "filter",
    [None, {}, {"_id": 500}, SON([("a", 1), ("b", {"c": [1, "x"]})]), {"k": "é" * 40, "n": None, "f": 2.5}],
)
def test_find_one_body_is_the_encoded_command(encoder, filter):
    body = precoded.FindOne("db1", "coll.sub").body(filter, DEFAULT_CODEC_OPTIONS)
    cmd = {"find": "coll.sub", "filter": filter or {}, "limit": 1, "singleBatch": True, "$db": "db1"}
    assert body == bson.encode(cmd)


@pytest.mark.parametrize("kind", [("update", "updates"), ("delete", "deletes")])
def test_write_one_body_is_the_encoded_command(encoder, kind):
    stmt = {"q": {"_id": 1}, "u": {"$inc": {"n": 1}}, "upsert": True} if kind[0] == "update" else {"q": {}, "limit": 1}
    body = precoded.WriteOne("db1", "things", *kind).body(stmt, DEFAULT_CODEC_OPTIONS)
    assert body == bson.encode({kind[0]: "things", "ordered": True, kind[1]: [stmt], "$db": "db1"})


def test_ping_body_is_the_encoded_command():
    assert precoded.ping_body("ping", "admin") == bson.encode({"ping": 1, "$db": "admin"})


def test_hot_path_operations_against_the_server(encoder, db):
    coll = db.precoded
    coll.drop()
    assert coll.find_one({"_id": 1}) is None
    r = coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, upsert=True)
    assert (r.matched_count, r.upserted_id) == (0, 1)
    for _ in range(3):
        r = coll.update_one({"_id": 1}, {"$inc": {"n": 1}}, upsert=True)
        assert (r.matched_count, r.modified_count, r.upserted_id) == (1, 1, None)
    assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 4}
    assert coll.find_one() == {"_id": 1, "n": 4}
    assert coll.find_one(1) == {"_id": 1, "n": 4}
    assert coll.delete_one({"_id": 1}).deleted_count == 1
    assert coll.find_one({"_id": 1}) is None
    # An invalid query fails as the server says, through the encoded body too.
    with pytest.raises(OperationFailure) as info:
        coll.find_one({"$bogus": 1})
    assert info.value.code == 2
    assert db.command("ping") == {"ok": 1.0}
    assert db.client.admin.command("ping") == {"ok": 1.0}


def test_encoded_bodies_keep_the_size_check(db):
    # An update whose statement exceeds maxBsonObjectSize + 16 KiB is refused
    # before anything is sent, as the general path refuses it.
    big = "x" * (db.client._max_bson_size() + 17 * 1024)
    with pytest.raises(DocumentTooLarge):
        db.precoded.update_one({"_id": 1}, {"$set": {"s": big}})
    assert db.command("ping") == {"ok": 1.0}


def test_socket_info_encoder_fallback(monkeypatch, db):
    """socket_info encodes through bson's private entry point, or bson.encode without it."""
    for fn in (socket_info._encode, lambda doc, check_keys, opts: bson.encode(doc, check_keys, opts)):
        monkeypatch.setattr(socket_info, "_encode", fn)
        db.precoded.drop()
        db.precoded.insert_one({"_id": 2, "v": "x"})
        assert db.command({"count": "precoded"})["n"] == 1


def test_wire_decoder_fallback(monkeypatch, db):
    """wire decodes through bson's private entry point, or bson.decode without it."""
    db.precoded.drop()
    db.precoded.insert_one({"_id": 3, "v": [1, 2]})
    for fn in (wire._decode, bson.decode):
        monkeypatch.setattr(wire, "_decode", fn)
        wire._small_replies.clear()
        assert db.precoded.find_one({"_id": 3}) == {"_id": 3, "v": [1, 2]}
        assert db.command("ping") == {"ok": 1.0}


def _msg(doc):
    return wire.pack_msg(1, bson.encode(doc))


def test_small_replies_are_copies():
    wire._small_replies.clear()
    first = wire.unpack_msg(_msg({"n": 1, "ok": 1.0}))
    first["updatedExisting"] = True  # callers add fields to replies
    second = wire.unpack_msg(_msg({"n": 1, "ok": 1.0}))
    assert second == {"n": 1, "ok": 1.0}
    assert second is not first


def test_only_flat_small_replies_are_remembered():
    wire._small_replies.clear()
    nested = wire.unpack_msg(_msg({"a": {"b": 1}, "ok": 1.0}))
    nested["a"]["b"] = 2
    assert wire.unpack_msg(_msg({"a": {"b": 1}, "ok": 1.0})) == {"a": {"b": 1}, "ok": 1.0}
    assert not wire._small_replies
    big = {"s": "x" * 100, "ok": 1.0}
    assert wire.unpack_msg(_msg(big)) == big
    assert not wire._small_replies
    # Replies that vary (counts) do not grow the cache without bound.
    for n in range(200):
        assert wire.unpack_msg(_msg({"n": n, "ok": 1.0})) == {"n": n, "ok": 1.0}
        assert len(wire._small_replies) <= wire._MAX_SMALL_REPLIES


def test_other_codec_options_decode_afresh(make_client):
    client = make_client(document_class=SON)
    reply = client.admin.command("ping")
    assert isinstance(reply, SON) and reply == {"ok": 1.0}
    assert type(wire.unpack_msg(_msg({"ok": 1.0}), CodecOptions(document_class=SON))) is SON


def test_a_bad_small_reply_is_a_protocol_error():
    from pymongo.errors import ProtocolError

    wire._small_replies.clear()
    body = bytearray(bson.encode({"ok": 1.0}))
    body[4] = 0x7F  # an unknown element type
    with pytest.raises(ProtocolError):
        wire.unpack_msg(wire.pack_msg(1, bytes(body)))


def test_update_one_fast_and_general_paths_agree(db):
    """update_one without options (the fast path) and with one (the general path) give the same results."""
    from pymongo.errors import WriteError

    coll = db.precoded
    coll.drop()
    fast = [coll.update_one({"_id": i}, {"$inc": {"n": 1}}, upsert=True).raw_result for i in (1, 1)]
    general = [coll.update_one({"_id": i}, {"$inc": {"n": 1}}, upsert=True, comment="c").raw_result for i in (2, 2)]
    for f, g in zip(fast, general, strict=True):
        f.pop("upserted", None), g.pop("upserted", None)
        assert f == g
    assert coll.update_one({"_id": 99}, {"$inc": {"n": 1}}).raw_result == {
        "n": 0,
        "nModified": 0,
        "ok": 1.0,
        "updatedExisting": False,
    }
    # A write error surfaces from the fast path as from the general one.
    for kwargs in ({}, {"comment": "c"}):
        with pytest.raises(WriteError) as info:
            coll.update_one({"_id": 1}, {"$set": {"_id": 5}}, **kwargs)
        assert info.value.code == 66
    assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 2}
