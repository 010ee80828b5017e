"""SocketInfo against the real server: checksums, and the memory a socket keeps after a large reply."""

from __future__ import annotations

import gc
import struct
import tracemalloc

import bson
import pytest
from pymongo.errors import AutoReconnect

from mongo_requests import wire
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


def test_a_large_reply_does_not_stay_in_the_socket(make_client, big_collection):
    # Defect 10: each socket kept a receive buffer as big as the largest reply it ever read
    # (20 sockets that each read one 15 MB batch kept 549 MB).
    c = make_client(max_pool_size=4)
    coll = c[big_collection.database.name].big
    socks = [c.pool.checkout() for _ in range(4)]
    try:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for sock in socks:
            reply = sock.command(coll.database.name, {"find": "big", "batchSize": BATCH_DOCS})
            assert len(reply["cursor"]["firstBatch"]) == BATCH_DOCS  # about 14 MB in one reply
            del reply
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        for sock in socks:
            assert len(sock._buf) == _DEFAULT_BUF
        assert kept < 2 * 1024 * 1024, "the sockets kept %d bytes after their replies were dropped" % kept
    finally:
        for sock in socks:
            c.pool.checkin(sock)
