"""A hostile server: malformed replies and absurd hello limits.

The only fake in the suite: a small TCP server on 127.0.0.1 that speaks just enough of the protocol
(the OP_QUERY handshake, then OP_MSG) to send one malformed message.  For each case the client must
raise the right :mod:`pymongo.errors` class, close the socket (the server sees EOF), and never hand a
stale reply to a later operation.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import bson
import pytest
from pymongo.errors import AutoReconnect, ConfigurationError, OperationFailure, ProtocolError, PyMongoError

from mongo_requests import MongoClient, wire

# The clients here talk to the fake server, not the session's mongod, so they take the test mode's option
# themselves: greenlet identity without monkey-patching in the gevent-unpatched (and mixed) modes.
_MODE_OPTIONS: dict[str, Any] = (
    {"use_greenlets": True}
    if os.environ.get("MONGO_REQUESTS_TEST_MODE", "threads") in ("gevent-unpatched", "mixed")
    else {}
)

HEADER = struct.Struct("<iiii")
GOOD_HELLO = {
    "ismaster": True,
    "helloOk": True,
    "maxBsonObjectSize": 16 * 1024 * 1024,
    "maxMessageSizeBytes": 48000000,
    "maxWriteBatchSize": 100000,
    "maxWireVersion": 17,
    "minWireVersion": 0,
    "ok": 1.0,
}


def op_msg(response_to: int, doc: dict[str, Any] | bytes, flags: int = 0) -> bytes:
    body = doc if isinstance(doc, bytes) else bson.encode(doc)
    return HEADER.pack(21 + len(body), 7, response_to, wire.OP_MSG) + struct.pack("<IB", flags, 0) + body


def op_reply(response_to: int, doc: dict[str, Any]) -> bytes:
    body = struct.pack("<iqii", 0, 0, 0, 1) + bson.encode(doc)
    return HEADER.pack(16 + len(body), 7, response_to, wire.OP_REPLY) + body


# handler(conn_no, req_no, request_id) -> bytes to send, or None to hang up
Handler = Callable[[int, int, int], "bytes | None"]


def good(conn_no: int, req_no: int, rid: int) -> bytes:
    """A fresh reply that says which connection and request it answers."""
    return op_msg(rid, {"ok": 1.0, "conn": conn_no, "req": req_no})


class FakeServer:
    """Accepts connections on 127.0.0.1; answers the handshake with ``hello``, then OP_MSGs with ``handler``."""

    def __init__(self, handler: Handler, hello: dict[str, Any] | None = None) -> None:
        self.handler = handler
        self.hello = GOOD_HELLO if hello is None else hello
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.eof: set[int] = set()  # connections the client closed
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            number = self.connections
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _read(self, conn: socket.socket, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def _serve(self, conn: socket.socket, number: int) -> None:
        requests = 0
        try:
            while True:
                header = self._read(conn, 16)
                if header is None:
                    self.eof.add(number)
                    return
                length, rid, _, op = HEADER.unpack(header)
                if self._read(conn, length - 16) is None:
                    self.eof.add(number)
                    return
                if op == wire.OP_QUERY:
                    out: bytes | None = op_reply(
                        rid,
                        {**self.hello, "connectionId": number + 1} if "connectionId" not in self.hello else self.hello,
                    )
                else:
                    out = self.handler(number, requests, rid)
                    requests += 1
                if out is None:
                    return
                conn.sendall(out)
        except OSError:
            self.eof.add(number)
        finally:
            conn.close()

    def saw_eof(self, number: int, timeout: float = 1.0) -> bool:
        deadline = time.monotonic() + timeout
        while number not in self.eof and time.monotonic() < deadline:
            time.sleep(0.005)
        return number in self.eof

    def client(self) -> MongoClient:
        return MongoClient(
            "127.0.0.1",
            self.port,
            serverSelectionTimeoutMS=1000,
            connectTimeoutMS=1000,
            socketTimeoutMS=1000,
            **_MODE_OPTIONS,
        )

    def close(self) -> None:
        self.stopped = True
        self.listener.close()


@pytest.fixture
def serve():
    servers: list[FakeServer] = []
    clients: list[MongoClient] = []

    def make(handler: Handler = good, hello: dict[str, Any] | None = None) -> tuple[FakeServer, MongoClient]:
        server = FakeServer(handler, hello)
        servers.append(server)
        clients.append(server.client())
        return server, clients[-1]

    yield make
    for c in clients:
        c.close()
    for s in servers:
        s.close()


def hostile_second_reply(bad: Callable[[int], bytes]) -> Handler:
    """Connection 0 answers its first request well and its second with ``bad(request_id)``."""

    def handler(conn_no: int, req_no: int, rid: int) -> bytes:
        if conn_no == 0 and req_no == 1:
            return bad(rid)
        return good(conn_no, req_no, rid)

    return handler


def _bad_checksum(rid: int) -> bytes:
    msg = bytearray(wire.add_checksum(op_msg(rid, {"ok": 1.0, "conn": 0, "req": 1})))
    msg[-1] ^= 0xFF
    return bytes(msg)


def _invalid_bson(rid: int) -> bytes:
    raw = bytearray(bson.encode({"ok": 1.0, "conn": 0, "req": 1}))
    raw[4] = 0x20  # not a BSON type
    return op_msg(rid, bytes(raw))


def _overrun(rid: int) -> bytes:
    # The reply, then the start of another one: bytes past messageLength.
    return good(0, 1, rid) + good(0, 99, rid)


def _length(value: int) -> Callable[[int], bytes]:
    def bad(rid: int) -> bytes:
        msg = bytearray(good(0, 1, rid))
        struct.pack_into("<i", msg, 0, value)
        return bytes(msg)

    return bad


REPLY_CASES = {
    "negative length": (_length(-1), ProtocolError),
    "length under the header": (_length(10), ProtocolError),
    "length too short for its body": (_length(20), ProtocolError),
    "length of a gigabyte": (_length(1 << 30), ProtocolError),
    "bytes past messageLength": (_overrun, ProtocolError),
    "wrong responseTo": (lambda rid: good(0, 1, rid + 1), ProtocolError),
    "bad checksum": (_bad_checksum, ProtocolError),
    "moreToCome in a reply": (lambda rid: op_msg(rid, {"ok": 1.0}, flags=wire.MORE_TO_COME), ProtocolError),
    "invalid BSON": (_invalid_bson, ProtocolError),
    "document shorter than the message": (lambda rid: good(0, 1, rid)[:-1] + b"\x00\x00", ProtocolError),
    "an OP_REPLY for an OP_MSG": (lambda rid: op_reply(rid, {"ok": 1.0}), ProtocolError),
    "hang up mid-reply": (lambda rid: good(0, 1, rid)[:30], AutoReconnect),
}


@pytest.mark.parametrize("case", sorted(REPLY_CASES))
def test_malformed_reply_closes_the_socket_and_never_returns_stale_data(serve, case):
    bad, error = REPLY_CASES[case]
    server, client = serve(hostile_second_reply(bad))
    start = time.monotonic()
    with client.start_request():  # one socket for both operations, so the second one meets the bad reply
        assert client.admin.command("ping") == {"ok": 1.0, "conn": 0, "req": 0}
        with pytest.raises(error):
            client.admin.command("ping")
    assert server.saw_eof(0), "the client kept the socket that sent %s" % case
    # The next operation runs on a new connection and gets its own, fresh reply.
    reply = client.admin.command("ping")
    assert reply["conn"] == 1 and reply["req"] == 0, reply
    assert client.pool.get_stats()["open"] <= 1
    assert time.monotonic() - start < 2.0


def test_a_good_checksum_is_accepted(serve):
    def handler(conn_no: int, req_no: int, rid: int) -> bytes:
        return wire.add_checksum(good(conn_no, req_no, rid))

    server, client = serve(handler)
    for i in range(3):
        assert client.admin.command("ping") == {"ok": 1.0, "conn": 0, "req": i}


def test_a_server_error_with_strange_fields_is_an_operation_failure(serve):
    # Defect 9: a non-string errmsg gave AttributeError; an unhashable code a TypeError.
    replies = [
        {"ok": 0.0, "errmsg": 5, "code": 2},
        {"ok": 0.0, "errmsg": {"a": 1}},
        {"ok": 0.0, "code": [1, 2]},
        {"ok": 0.0, "errmsg": None, "code": "11000"},
    ]

    def handler(conn_no: int, req_no: int, rid: int) -> bytes:
        return op_msg(rid, replies[req_no] if req_no < len(replies) else {"ok": 1.0, "conn": conn_no})

    server, client = serve(handler)
    with client.start_request():
        for _ in replies:
            with pytest.raises(OperationFailure) as info:
                client.admin.command("ping")
            assert isinstance(str(info.value), str)
        # A well-formed error leaves the socket usable.
        assert client.admin.command("ping") == {"ok": 1.0, "conn": 0}


@pytest.mark.parametrize(
    "reply",
    [
        {"ok": 1.0, "n": 0, "writeErrors": "boom"},
        {"ok": 1.0, "n": 0, "writeErrors": [5]},
        {"ok": 1.0, "n": 1, "writeConcernError": "late"},
        {"ok": 1.0, "n": 1, "writeConcernError": {"errInfo": 5}},
        {"ok": 1.0, "n": 0, "writeErrors": [{"code": "x", "errmsg": 7}]},
    ],
)
def test_malformed_write_errors_are_pymongo_errors(serve, reply):
    def handler(conn_no: int, req_no: int, rid: int) -> bytes:
        return op_msg(rid, reply)

    server, client = serve(handler)
    with pytest.raises(PyMongoError):
        client.db.things.insert_one({"a": 1})


HELLO_CASES = {
    "maxWriteBatchSize 0": ({"maxWriteBatchSize": 0}, ProtocolError),
    "maxWriteBatchSize -5": ({"maxWriteBatchSize": -5}, ProtocolError),
    "maxWriteBatchSize as a string": ({"maxWriteBatchSize": "1000"}, ProtocolError),
    "maxMessageSizeBytes of 2 GB": ({"maxMessageSizeBytes": 2**31 - 1}, ProtocolError),
    "maxMessageSizeBytes under maxBsonObjectSize": ({"maxMessageSizeBytes": 1024}, ProtocolError),
    "maxBsonObjectSize 0": ({"maxBsonObjectSize": 0}, ProtocolError),
    "maxBsonObjectSize as a float": ({"maxBsonObjectSize": 16777216.0}, ProtocolError),
    "maxWireVersion as a string": ({"maxWireVersion": "17"}, ProtocolError),
    "maxWireVersion as a bool": ({"maxWireVersion": True}, ProtocolError),
    "maxWireVersion too old": ({"maxWireVersion": 2}, ConfigurationError),
    "connectionId as a string": ({"connectionId": "one"}, ProtocolError),
    "hello fails with a non-string errmsg": ({"ok": 0.0, "errmsg": ["no"]}, OperationFailure),
}


@pytest.mark.parametrize("case", sorted(HELLO_CASES))
def test_a_hostile_hello_is_refused_and_its_socket_closed(serve, case):
    # Defect 8: a hello with maxWriteBatchSize <= 0 made insert_many loop for ever.
    change, error = HELLO_CASES[case]
    server, client = serve(hello={**GOOD_HELLO, **change})
    start = time.monotonic()
    with pytest.raises(error):
        client.db.things.insert_many([{"i": i} for i in range(10)])
    assert server.saw_eof(0)
    assert time.monotonic() - start < 2.0
    assert client.pool.get_stats()["open"] == 0
