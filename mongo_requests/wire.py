"""OP_MSG framing: the bytes on the wire, and nothing else.

This module knows the MongoDB wire protocol (the ``OP_MSG`` opcode, plus the
legacy ``OP_QUERY``/``OP_REPLY`` pair that is only used for the very first
handshake) but knows nothing about sockets.  Every function here is pure:
bytes in, bytes or documents out, so it can be tested without a server.

Message layout (all integers little-endian)::

    header   int32 messageLength, int32 requestID, int32 responseTo, int32 opCode
    OP_MSG   uint32 flagBits, then sections:
               kind 0: byte 0, one BSON document (the command body)
               kind 1: byte 1, int32 size, cstring identifier, BSON documents...
             (optional uint32 CRC-32C checksum when flagBits has checksumPresent)

Writes with ``w=0`` set ``moreToCome`` and the server sends no reply: the
socket stays usable and the server still processes that socket's messages in
order, which is what makes a *request* give read-your-own-writes.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import bson
from bson.codec_options import DEFAULT_CODEC_OPTIONS, CodecOptions
from pymongo.errors import ProtocolError

from . import raw_arrays

__all__ = [
    "OP_MSG",
    "OP_QUERY",
    "OP_REPLY",
    "CHECKSUM_PRESENT",
    "MORE_TO_COME",
    "EXHAUST_ALLOWED",
    "HEADER",
    "next_request_id",
    "pack_msg",
    "pack_query",
    "encode_section",
    "unpack_header",
    "unpack_msg",
    "unpack_msg_reply",
    "crc32c",
    "add_checksum",
    "unpack_op_reply",
]

OP_REPLY = 1
OP_QUERY = 2004
OP_MSG = 2013

# flagBits of OP_MSG.
CHECKSUM_PRESENT = 1 << 0
MORE_TO_COME = 1 << 1
EXHAUST_ALLOWED = 1 << 16

HEADER = struct.Struct("<iiii")
# The fixed prefix of an OP_MSG: header, flagBits, and the kind byte of the body
# section.  Packing these 21 bytes with one precompiled Struct is cheaper than
# concatenating separate pieces on the hot path.
_MSG_PREFIX = struct.Struct("<iiiiIB")
_SEQ_PREFIX = struct.Struct("<Bi")
_INT32 = struct.Struct("<i")
_UINT32 = struct.Struct("<I")
_REPLY_PREFIX = struct.Struct("<iqii")

# Request ids only need to be unique per socket while a reply is outstanding.
# itertools.count is atomic under the GIL, so threads and greenlets can share it
# without a lock.  Ids wrap before they overflow int32.
_ids = itertools.count(1)
# bson's C decoder without bson.decode's argument checks (run once per reply).
_decode = getattr(bson, "_bson_to_dict", None) or bson.decode
_MAX_ID = 0x7FFFFFFF
# The document class of a raw cursor's codec options: its replies leave their batch undecoded
# (mongo_requests.raw_arrays.unpack_reply).
_RAW_REPLY = raw_arrays.RawReply
_RAW_BATCH_REPLY = raw_arrays.RawBatchReply

# Most replies on the hot path repeat byte for byte: ``{ok: 1.0}`` to a ping,
# ``{n: 1, nModified: 1, ok: 1.0}`` to an update.  Decoding one costs ~7,000
# instructions in bson (its fixed cost per call); a dict lookup and a copy
# cost a fifth of that.  Only small replies whose values are all immutable
# scalars are kept (a copy of one is a deep copy), decoded with the default
# codec options (others can map types differently), at most 32 at a time.
_SMALL_REPLY = 64
_MAX_SMALL_REPLIES = 32
_FLAT = frozenset((int, float, str, bool))
_small_replies: dict[bytes, dict[str, Any]] = {}


def next_request_id() -> int:
    """Return a fresh request id (positive int32)."""
    rid = next(_ids)
    if rid < _MAX_ID:
        return rid
    return rid % _MAX_ID + 1


def encode_section(identifier: str, docs: Iterable[bytes]) -> bytes:
    """Encode a kind-1 document sequence from already encoded BSON documents."""
    ident = identifier.encode("utf-8") + b"\x00"
    payload = b"".join(docs)
    return _SEQ_PREFIX.pack(1, 4 + len(ident) + len(payload)) + ident + payload


def pack_msg(
    request_id: int,
    body: bytes,
    flags: int = 0,
    sequences: Sequence[bytes] = (),
) -> bytes:
    """Frame an OP_MSG from an encoded body and encoded kind-1 sections.

    :param request_id: the id the reply will carry in ``responseTo``.
    :param body: the command document, already BSON-encoded (with ``$db``).
    :param flags: ``MORE_TO_COME`` for an unacknowledged write.
    :param sequences: outputs of :func:`encode_section`.
    """
    if sequences:
        tail = b"".join(sequences)
        length = 21 + len(body) + len(tail)
        return _MSG_PREFIX.pack(length, request_id, 0, OP_MSG, flags, 0) + body + tail
    return _MSG_PREFIX.pack(21 + len(body), request_id, 0, OP_MSG, flags, 0) + body


def add_checksum(msg: bytes) -> bytes:
    """``msg`` (a framed OP_MSG) with ``checksumPresent`` set and its CRC-32C appended."""
    length, rid, response_to, op, flags = struct.unpack_from("<iiiiI", msg, 0)
    framed = struct.pack("<iiiiI", length + 4, rid, response_to, op, flags | CHECKSUM_PRESENT) + msg[20:]
    return framed + _UINT32.pack(crc32c(framed))


def pack_query(request_id: int, collection: str, query: bytes) -> bytes:
    """Frame a legacy OP_QUERY, used only for the first ``hello`` of a socket.

    A server too old for OP_MSG still understands OP_QUERY, so the handshake
    can tell the user clearly that the server is unsupported instead of having
    the connection dropped on an unknown opcode.
    """
    name = collection.encode("utf-8") + b"\x00"
    # flags=0, fullCollectionName, numberToSkip=0, numberToReturn=-1
    length = 16 + 4 + len(name) + 8 + len(query)
    return HEADER.pack(length, request_id, 0, OP_QUERY) + _INT32.pack(0) + name + struct.pack("<ii", 0, -1) + query


def unpack_header(data: bytes | bytearray | memoryview) -> tuple[int, int, int, int]:
    """Return ``(length, request_id, response_to, op_code)`` from 16 bytes."""
    return HEADER.unpack_from(data, 0)


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``, as OP_MSG checksums use it.

    Pure Python, table-driven: we never ask for checksums, and a server adds
    one to a reply only when the request carried one, so this runs only for
    unusual (or hostile) replies.  It is not on the hot path.
    """
    crc ^= 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def unpack_msg(
    message: bytes | bytearray | memoryview,
    codec_options: CodecOptions[Any] = DEFAULT_CODEC_OPTIONS,
) -> dict[str, Any]:
    """Decode a whole OP_MSG reply (header included), verifying its checksum if it has one.

    Servers answer commands with a single kind-0 section; anything else is a
    protocol violation, raised as :class:`~pymongo.errors.ProtocolError`.
    """
    # The hot path of every acknowledged command: the same checks as _unpack,
    # with the offsets written out (a call and the offset arithmetic cost more
    # than the checks themselves).
    end = len(message)
    if end < 26:
        raise ProtocolError("OP_MSG reply too short: %d bytes" % (end - 16))
    flags = _UINT32.unpack_from(message, 16)[0]
    if flags:
        return _unpack(message, 16, codec_options)  # a checksum, or flags we refuse
    if message[20] != 0:
        raise ProtocolError("OP_MSG reply does not start with a body section")
    doc_len = _INT32.unpack_from(message, 21)[0]
    if 21 + doc_len != end:
        raise ProtocolError("OP_MSG reply has %d unexpected trailing bytes" % (end - 21 - doc_len))
    if doc_len <= _SMALL_REPLY and codec_options is DEFAULT_CODEC_OPTIONS:
        data = bytes(message[21:end])
        doc = _small_replies.get(data)  # _small_reply()'s common case inline: one call less per write
        if doc is not None:
            return doc.copy()
        return _small_reply(data)
    cls = codec_options.document_class
    if cls is _RAW_REPLY or cls is _RAW_BATCH_REPLY:
        return raw_arrays.unpack_reply(message[21:end], codec_options)  # a raw cursor's: its batch left undecoded
    try:
        return _decode(message[21:end], codec_options)
    except Exception as exc:  # bson raises InvalidBSON, which is not a ProtocolError
        raise ProtocolError("could not decode OP_MSG reply: %s" % exc) from exc


def _small_reply(data: bytes) -> dict[str, Any]:
    """Decode a small reply (default codec options), remembering flat ones that may come again byte for byte."""
    doc = _small_replies.get(data)
    if doc is not None:
        return doc.copy()  # callers add fields to replies: each gets its own dict
    try:
        doc = _decode(data, DEFAULT_CODEC_OPTIONS)
    except Exception as exc:  # bson raises InvalidBSON, which is not a ProtocolError
        raise ProtocolError("could not decode OP_MSG reply: %s" % exc) from exc
    for value in doc.values():
        if value.__class__ not in _FLAT:
            return doc
    if len(_small_replies) >= _MAX_SMALL_REPLIES:
        _small_replies.clear()  # replies that vary (counts) must not pin memory; the common ones come back
    _small_replies[data] = doc.copy()
    return doc


def unpack_msg_reply(
    data: bytes | bytearray | memoryview,
    codec_options: CodecOptions[Any] = DEFAULT_CODEC_OPTIONS,
) -> dict[str, Any]:
    """Decode the body of an OP_MSG reply (the bytes after the 16-byte header).

    A checksum covers the header too, so a body that claims one is refused
    here: use :func:`unpack_msg` with the whole message to verify it.
    """
    return _unpack(data, 0, codec_options)


def _unpack(data: bytes | bytearray | memoryview, start: int, codec_options: CodecOptions[Any]) -> dict[str, Any]:
    """Decode the OP_MSG body that begins at ``start`` (16 with a header, 0 without)."""
    size = len(data) - start
    # flagBits (4) + section kind (1) + the smallest BSON document (5)
    if size < 10:
        raise ProtocolError("OP_MSG reply too short: %d bytes" % size)
    flags = _UINT32.unpack_from(data, start)[0]
    # moreToCome in a reply means exhaust mode, which we never ask for: another
    # reply would follow unasked, and come back as the answer to a later request.
    if flags & ~CHECKSUM_PRESENT:
        raise ProtocolError("unsupported OP_MSG flag bits in reply: 0x%x" % flags)
    if data[start + 4] != 0:
        raise ProtocolError("OP_MSG reply does not start with a body section")
    end = len(data)
    if flags & CHECKSUM_PRESENT:
        end -= 4
        if end - start < 10:
            raise ProtocolError("OP_MSG reply too short for its checksum: %d bytes" % size)
        if not start:
            raise ProtocolError("cannot verify an OP_MSG checksum without the message header")
        expected = _UINT32.unpack_from(data, end)[0]
        actual = crc32c(memoryview(data)[:end])
        if actual != expected:
            raise ProtocolError("OP_MSG reply checksum mismatch: got 0x%08x, computed 0x%08x" % (expected, actual))
    body = start + 5
    doc_len = _INT32.unpack_from(data, body)[0]
    if body + doc_len != end:
        raise ProtocolError("OP_MSG reply has %d unexpected trailing bytes" % (end - body - doc_len))
    cls = codec_options.document_class
    if cls is _RAW_REPLY or cls is _RAW_BATCH_REPLY:
        return raw_arrays.unpack_reply(data[body:end], codec_options)
    try:
        return _decode(data[body:end], codec_options)
    except Exception as exc:  # bson raises InvalidBSON, which is not a ProtocolError
        raise ProtocolError("could not decode OP_MSG reply: %s" % exc) from exc


def unpack_op_reply(data: bytes | bytearray | memoryview) -> dict[str, Any]:
    """Decode the first document of a legacy OP_REPLY body (handshake only)."""
    if len(data) < 25:
        raise ProtocolError("OP_REPLY too short: %d bytes" % len(data))
    _flags, _cursor_id, _start, number = _REPLY_PREFIX.unpack_from(data, 0)
    if number < 1:
        raise ProtocolError("OP_REPLY to the handshake returned no document")
    doc_len = _INT32.unpack_from(data, 20)[0]
    if doc_len < 5 or 20 + doc_len > len(data):
        raise ProtocolError("OP_REPLY document length %d does not fit the %d-byte reply" % (doc_len, len(data)))
    try:
        return bson.decode(data[20 : 20 + doc_len])
    except Exception as exc:  # InvalidBSON is not a ProtocolError
        raise ProtocolError("could not decode OP_REPLY: %s" % exc) from exc


def encode_docs(
    docs: Iterable[Mapping[str, Any]], codec_options: CodecOptions[Any] = DEFAULT_CODEC_OPTIONS
) -> list[bytes]:
    """BSON-encode each document (a convenience for tests and tools)."""
    return [bson.encode(d, False, codec_options) for d in docs]
