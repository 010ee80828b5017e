"""SocketInfo against the real server: checksums, and the memory kept after a large reply."""

from __future__ import annotations

import gc
import struct
import tracemalloc

import bson
import pytest
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo.errors import AutoReconnect

from mongo_requests import socket_info, wire
from mongo_requests.socket_info import _DEFAULT_BUF, SocketInfo


def _flags(message: memoryview) -> int:
    return struct.unpack_from("<I", message, 16)[0]


def test_the_server_verifies_our_checksum_and_checksums_its_reply(client):
    # mongod checks a request's CRC-32C and, only then, checksums its reply: both ends of wire.crc32c
    # are checked against the server's own implementation.
    client.admin.command("ping")
    sock = client.pool.checkout()
    try:
        rid = wire.next_request_id()
        msg = wire.add_checksum(wire.pack_msg(rid, bson.encode({"ping": 1, "$db": "admin"})))
        op, message = sock._roundtrip_raw(msg, rid)
        assert op == wire.OP_MSG and _flags(message) == wire.CHECKSUM_PRESENT
        assert wire.unpack_msg(message) == {"ok": 1.0}
        assert sock.roundtrip(msg, rid) == {"ok": 1.0}
        # A plain request gets a plain reply: checksums never cost anything on the hot path.
        rid = wire.next_request_id()
        op, message = sock._roundtrip_raw(wire.pack_msg(rid, bson.encode({"ping": 1, "$db": "admin"})), rid)
        assert _flags(message) == 0
        # A wrong checksum: the server hangs up.
        rid = wire.next_request_id()
        bad = bytearray(wire.add_checksum(wire.pack_msg(rid, bson.encode({"ping": 1, "$db": "admin"}))))
        bad[-1] ^= 0x01
        with pytest.raises(AutoReconnect):
            sock.roundtrip(bytes(bad), rid)
        assert sock.closed
    finally:
        client.pool.checkin(sock)
    assert client.admin.command("ping")["ok"] == 1


def test_socket_info_has_no_pid():
    # The pool tracks forks; a per-socket pid was never read (issue 8).
    assert "pid" not in SocketInfo.__slots__


BATCH_DOCS = 14
DOC_SIZE = 1024 * 1024


@pytest.fixture
def big_collection(db):
    coll = db.big
    coll.insert_many([{"_id": i, "pad": "x" * DOC_SIZE} for i in range(BATCH_DOCS)])
    return coll


def _kept_after_big_replies(c, coll, socks):
    """Bytes still allocated after each socket read one reply of BATCH_DOCS big documents and dropped it."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for sock in socks:
        reply = sock.command(coll.database.name, {"find": "big", "batchSize": BATCH_DOCS})
        assert len(reply["cursor"]["firstBatch"]) == BATCH_DOCS  # about 14 MB in one reply
        del reply
    gc.collect()
    kept: int = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return kept


def test_a_large_reply_does_not_stay_in_the_socket(make_client, big_collection, monkeypatch):
    # Defect 10: each socket kept a receive buffer as big as the largest reply it ever read
    # (20 sockets that each read one 15 MB batch kept 549 MB).  Now the sockets keep their
    # 64 KiB, and the process keeps one spare big buffer for the next big reply: at most one
    # reply's size (up to _SPARE_MAX), whatever the number of sockets.
    monkeypatch.setattr(socket_info, "_SPARE", [])
    c = make_client(max_pool_size=4)
    coll = c[big_collection.database.name].big
    socks = [c.pool.checkout() for _ in range(4)]
    try:
        kept = _kept_after_big_replies(c, coll, socks)
        for sock in socks:
            assert len(sock._buf) == _DEFAULT_BUF
        assert len(socket_info._SPARE) == 1
        spare = len(socket_info._SPARE[0])
        assert 13 * DOC_SIZE < spare <= socket_info._SPARE_MAX
        assert kept < spare + 2 * 1024 * 1024, "kept %d bytes after the replies were dropped" % kept
        # Over the cap, nothing is kept.
        monkeypatch.setattr(socket_info, "_SPARE", [])
        monkeypatch.setattr(socket_info, "_SPARE_MAX", DOC_SIZE)
        kept = _kept_after_big_replies(c, coll, socks)
        assert socket_info._SPARE == []
        assert kept < 2 * 1024 * 1024, "kept %d bytes after the replies were dropped" % kept
    finally:
        for sock in socks:
            c.pool.checkin(sock)


@pytest.mark.parametrize("codec,pad", [("dict", 40), ("raw", 40), ("raw", 5000)])
def test_the_spare_buffer_is_reused_and_nothing_handed_out_reads_from_it(client, db, codec, pad, monkeypatch):
    # A big reply is read into the spare buffer that the one before it left: documents, raw
    # documents and raw batches of the first reply must not change when the second overwrites it.
    # Raw documents of 4 KB or more are the ones bson may hand out as views of their buffer.
    monkeypatch.setattr(socket_info, "_SPARE", [])
    n = 3000 if pad < 1000 else 300  # about 150 KB or 1.5 MB in one getMore
    first, second = db.spare_first, db.spare_second
    first.insert_many([{"_id": i, "v": "a" * pad} for i in range(n)])
    second.insert_many([{"_id": i, "v": "b" * pad} for i in range(n)])
    if codec == "raw":
        opts = CodecOptions(document_class=RawBSONDocument)
        first, second = first.with_options(codec_options=opts), second.with_options(codec_options=opts)
    kept = list(first.find())
    batches = list(first.find_raw_batches())
    assert len(socket_info._SPARE) == 1
    buf = socket_info._SPARE[0]
    assert len(buf) > _DEFAULT_BUF
    assert [d["v"] for d in second.find()] == ["b" * pad] * n
    assert len(socket_info._SPARE) == 1 and socket_info._SPARE[0] is buf  # taken for the reply, then given back
    assert buf.count(b"b" * pad) > n // 2  # ... and the second reply was read into it
    assert [d["v"] for d in kept] == ["a" * pad] * n
    assert [d["_id"] for d in kept] == list(range(n))
    assert sum(len(bson.decode_all(b)) for b in batches) == n
    assert all(d["v"] == "a" * pad for b in batches for d in bson.decode_all(b))


def test_a_reply_decoded_whole_as_raw_documents_does_not_read_from_the_spare_buffer(client, db, monkeypatch):
    # A command run with RawBSONDocument codec options (not a cursor's marker class) is decoded
    # by bson in one piece: its documents, big ones included, must be copies too.
    monkeypatch.setattr(socket_info, "_SPARE", [])
    db.whole.insert_many([{"_id": i, "v": "c" * 6000} for i in range(40)])
    raw = CodecOptions(document_class=RawBSONDocument)
    sock = client.pool.checkout()
    try:
        reply = sock.command(db.name, {"find": "whole", "batchSize": 40}, raw)
        docs = list(reply["cursor"]["firstBatch"])
        assert len(socket_info._SPARE) == 1
        buf = socket_info._SPARE[0]
        buf[:] = b"\xff" * len(buf)  # what a next big reply would do to it, and worse
        assert [d["v"] for d in docs] == ["c" * 6000] * 40
        assert [bson.decode(bytes(d.raw))["_id"] for d in docs] == list(range(40))
    finally:
        client.pool.checkin(sock)
