"""A hostile SCRAM server: one that does not know the password, or asks for a weak proof.

A small fake server on 127.0.0.1 (the suite's rule allows fakes only for
hostile servers) plays SCRAM-SHA-256 through speculative authentication: it
answers the hello's ``speculativeAuthenticate`` with a server-first message,
then the client's proof with a server signature of its choosing.  The client
must refuse with ``OperationFailure`` code 18, at once, and never send the
operation it was connecting for.
"""

from __future__ import annotations

import base64
import socket
import threading
from typing import Any

import bson
import pytest
from bson.binary import Binary
from pymongo.errors import OperationFailure

from mongo_requests import MongoClient, wire
from security_fixtures import MODE_OPTIONS, elapsed
from test_hostile_server import GOOD_HELLO, HEADER, op_msg, op_reply


def _query_doc(body: bytes) -> dict[str, Any]:
    """The command document of an OP_QUERY body (flags, collection name, skip, limit, doc)."""
    end = body.index(b"\x00", 4)
    return bson.decode(body[end + 1 + 8 :])


class ScramServer:
    """Plays SCRAM-SHA-256 with the ``iterations``, nonce and ``signature`` the test chose."""

    def __init__(self, iterations: int = 4096, foreign_nonce: bool = False, signature: bytes = b"\x00" * 32) -> None:
        self.iterations = iterations
        self.foreign_nonce = foreign_nonce
        self.signature = signature
        self.commands: list[str] = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                while True:
                    header = conn.recv(16, socket.MSG_WAITALL)
                    if len(header) < 16:
                        return
                    length, rid, _, op = HEADER.unpack(header)
                    body = conn.recv(length - 16, socket.MSG_WAITALL)
                    if op == wire.OP_QUERY:
                        conn.sendall(op_reply(rid, self._hello(_query_doc(body))))
                        continue
                    cmd = bson.decode(body[5:])
                    self.commands.append(next(iter(cmd)))
                    # The proof: answer with the signature the test chose.
                    payload = b"v=" + base64.b64encode(self.signature)
                    conn.sendall(
                        op_msg(rid, {"conversationId": 1, "done": True, "payload": Binary(payload), "ok": 1.0})
                    )
            except OSError:
                return

    def _hello(self, hello: dict[str, Any]) -> dict[str, Any]:
        self.commands.append("hello")
        spec = hello.get("speculativeAuthenticate")
        reply = dict(GOOD_HELLO)
        if spec is not None:
            client_first = bytes(spec["payload"]).decode()
            nonce = client_first.split("r=", 1)[1]
            if self.foreign_nonce:
                nonce = "A" * len(nonce)
            first = "r=%sSERVER,s=%s,i=%d" % (nonce, base64.b64encode(b"salt" * 4).decode(), self.iterations)
            reply["speculativeAuthenticate"] = {"conversationId": 1, "done": False, "payload": Binary(first.encode())}
        return reply


@pytest.mark.parametrize(
    "server_kwargs, cause",
    [
        ({}, "signature did not verify"),  # it does not know the password
        ({"iterations": 1000}, "4096"),  # asks for a cheap-to-crack proof (scramp refuses it first)
        ({"foreign_nonce": True}, "SCRAM message was invalid"),  # replays another conversation
    ],
)
def test_hostile_scram_server_is_refused(server_kwargs, cause):
    server = ScramServer(**server_kwargs)
    secret = "pw-hostile-scram"
    c = MongoClient(
        "127.0.0.1",
        server.port,
        username="alice",
        password=secret,
        authMechanism="SCRAM-SHA-256",
        serverSelectionTimeoutMS=30000,
        **MODE_OPTIONS,
    )
    try:
        exc, seconds = elapsed(lambda: c.admin.command("ping"))
        assert isinstance(exc, OperationFailure) and exc.code == 18, repr(exc)
        assert cause in str(exc), str(exc)
        assert seconds < 2.0
        assert secret not in str(exc) and secret not in repr(exc.args)
        # The ping never went to a server that failed to prove itself.
        assert "ping" not in server.commands, server.commands
        assert c.pool.get_stats()["in_use"] == 0
    finally:
        c.close()
        server.close()
