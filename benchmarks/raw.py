"""A bare OP_MSG connection: the physical limit for a Python client.

Messages are encoded once, up front (``encode_msg``), with a fixed request id;
each operation is then one ``sendall`` of those bytes and a ``recv_into`` loop
into one reused buffer until ``messageLength`` bytes have arrived.  Nothing is
decoded on the hot path, so a driver's speed relative to this client is the
share of time it spends outside the kernel and the server.

The same class serves the gevent subprocess's connection monitor (after
monkey-patching, ``socket`` here is gevent's), through :meth:`command`, which
does decode.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import bson
from bson.int64 import Int64

from mongo_requests import wire

# The server echoes it in responseTo; one request is in flight at a time, so a
# fixed id is enough.
REQUEST_ID = 1

_INT32 = struct.Struct("<i")
_INT64 = struct.Struct("<q")
# Offset of the reply's body document: 16-byte header, 4 flag bytes, kind byte.
_BODY = 21
# Fixed sizes of the BSON element types a find reply can hold.
_FIXED = {0x01: 8, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8, 0x13: 16, 0x7F: 0, 0xFF: 0}


def encode_msg(
    cmd: Mapping[str, Any],
    db: str,
    more_to_come: bool = False,
    sequences: Sequence[bytes] = (),
) -> bytes:
    """Encode ``cmd`` (plus ``$db``) as a complete OP_MSG, once."""
    body = bson.encode(dict(cmd, **{"$db": db}))
    return wire.pack_msg(REQUEST_ID, body, wire.MORE_TO_COME if more_to_come else 0, sequences)


class RawConnection:
    """One blocking TCP connection (TCP_NODELAY) speaking pre-encoded OP_MSG."""

    def __init__(self, address: tuple[str, int], timeout: float | None = 60.0) -> None:
        sock = socket.create_connection(address, timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        # Bound methods cached: attribute lookups show at 20k+ round trips/s.
        self._sendall = sock.sendall
        self._recv_into = sock.recv_into
        self._unpack_len = _INT32.unpack_from
        self._buf = bytearray(64 * 1024)
        self._view = memoryview(self._buf)
        self.last_length = 0

    def roundtrip(self, msg: bytes | bytearray) -> int:
        """Send ``msg`` and read its whole reply into the buffer; returns its length."""
        self._sendall(msg)
        view = self._view
        recv_into = self._recv_into
        got = recv_into(view)
        while got < 4:  # rare: the length prefix split across segments (or EOF)
            n = recv_into(view[got:])
            if not n:
                raise ConnectionError("mongod closed the connection")
            got += n
        length = self._unpack_len(view)[0]
        if length > len(view):
            view = self._grow(length, got)
        while got < length:
            n = recv_into(view[got:length])
            if not n:
                raise ConnectionError("mongod closed the connection")
            got += n
        self.last_length = length
        return length

    def _grow(self, length: int, got: int) -> memoryview:
        # A reply bigger than the buffer (a large cursor batch): grow and keep
        # the bigger buffer, since the next reply will likely be as big.
        buf = bytearray(length)
        buf[:got] = self._view[:got]
        self._buf = buf
        self._view = memoryview(buf)
        return self._view

    def send(self, msg: bytes | bytearray) -> None:
        """Send a ``moreToCome`` message: the server sends no reply."""
        self._sendall(msg)

    # -- decoding, off the hot path ------------------------------------------
    def reply(self) -> dict[str, Any]:
        """Decode the last reply (for checks and setup, never while timing)."""
        return wire.unpack_msg_reply(self._view[16 : self.last_length])

    def command(self, cmd: Mapping[str, Any], db: str = "admin") -> dict[str, Any]:
        """Encode, run and decode one command (setup and monitoring)."""
        self.roundtrip(encode_msg(cmd, db))
        return self.reply()

    def cursor_id(self) -> int:
        """``cursor.id`` of the last reply, found without decoding any document.

        Walks the reply's top level to ``cursor``, then ``cursor``'s elements
        to ``id``, skipping ``firstBatch``/``nextBatch`` by their length prefix.
        """
        buf = self._buf
        pos, end = _BODY + 4, _BODY + self._unpack_len(buf, _BODY)[0] - 1
        while pos < end:
            etype, name, pos = _element(buf, pos)
            if etype == 0x03 and name == b"cursor":
                sub_end = pos + self._unpack_len(buf, pos)[0] - 1
                pos += 4
                while pos < sub_end:
                    etype, name, pos = _element(buf, pos)
                    if etype == 0x12 and name == b"id":
                        return _INT64.unpack_from(buf, pos)[0]
                    pos = _skip(buf, etype, pos)
                break
            pos = _skip(buf, etype, pos)
        raise ValueError("reply has no cursor.id: %r" % (self.reply(),))

    def close(self) -> None:
        self._sock.close()


def _element(buf: bytearray, pos: int) -> tuple[int, bytes, int]:
    """(type, name, offset of the value) of the BSON element at ``pos``."""
    name_end = buf.index(0, pos + 1)
    return buf[pos], bytes(buf[pos + 1 : name_end]), name_end + 1


def _skip(buf: bytearray, etype: int, pos: int) -> int:
    """Offset just past the value of type ``etype`` at ``pos``."""
    size = _FIXED.get(etype)
    if size is not None:
        return pos + size
    if etype in (0x02, 0x0D, 0x0E):  # string, code, symbol: int32 length + bytes
        return pos + 4 + _INT32.unpack_from(buf, pos)[0]
    if etype in (0x03, 0x04):  # document, array: the int32 counts itself
        return pos + _INT32.unpack_from(buf, pos)[0]
    if etype == 0x05:  # binary: int32 length, subtype byte, bytes
        return pos + 5 + _INT32.unpack_from(buf, pos)[0]
    raise ValueError("unexpected BSON type 0x%02x in a cursor reply" % etype)


class GetMore:
    """A pre-encoded ``getMore`` whose cursor id is patched in place (8 bytes)."""

    _MARK = b"\x12getMore\x00"

    def __init__(self, collection: str, db: str) -> None:
        # Int64 forces the 8-byte type whatever the placeholder's value.
        self.msg = bytearray(encode_msg({"getMore": Int64(0), "collection": collection}, db))
        self._offset = self.msg.index(self._MARK) + len(self._MARK)

    def set_cursor(self, cursor_id: int) -> bytearray:
        _INT64.pack_into(self.msg, self._offset, cursor_id)
        return self.msg
