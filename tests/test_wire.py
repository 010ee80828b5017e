"""Unit tests of :mod:`mongo_requests.wire`: OP_MSG framing, byte by byte.

wire.py is pure (bytes in, bytes or documents out), so these tests build the
bytes themselves with :mod:`struct` and :mod:`bson` and need no server.
"""

from __future__ import annotations

import itertools
import struct

import bson
import pytest
from bson.codec_options import CodecOptions
from bson.son import SON
from pymongo.errors import ProtocolError

from mongo_requests import wire

INT32 = struct.Struct("<i")
UINT32 = struct.Struct("<I")


def _body(doc) -> bytes:
    return bson.encode(doc)


def _reply(doc=None, flags=0, kind=0, extra=b"") -> bytes:
    """An OP_MSG reply body (everything after the 16-byte header)."""
    raw = _body({"ok": 1.0} if doc is None else doc)
    return UINT32.pack(flags) + bytes([kind]) + raw + extra


def _parse_sections(data: bytes, start: int):
    """Split the sections of an OP_MSG from ``start`` into [(kind, payload)]."""
    sections = []
    pos = start
    while pos < len(data):
        kind = data[pos]
        if kind == 0:
            size = INT32.unpack_from(data, pos + 1)[0]
            sections.append((0, bson.decode(data[pos + 1 : pos + 1 + size])))
            pos += 1 + size
        elif kind == 1:
            size = INT32.unpack_from(data, pos + 1)[0]
            section = data[pos + 1 : pos + 1 + size]
            nul = section.index(b"\x00", 4)
            ident = section[4:nul].decode("utf-8")
            docs = bson.decode_all(section[nul + 1 :])
            sections.append((1, (ident, docs)))
            pos += 1 + size
        else:
            raise AssertionError("unknown section kind %d" % kind)
    assert pos == len(data), "sections overran the message"
    return sections


# -- pack_msg ---------------------------------------------------------------


def test_pack_msg_header_and_body_layout():
    body = _body({"ping": 1, "$db": "admin"})
    msg = wire.pack_msg(1234, body)
    length, rid, response_to, op = struct.unpack_from("<iiii", msg, 0)
    assert length == len(msg) == 16 + 4 + 1 + len(body)
    assert rid == 1234
    assert response_to == 0
    assert op == wire.OP_MSG == 2013
    assert UINT32.unpack_from(msg, 16)[0] == 0  # flagBits
    assert msg[20] == 0  # kind-0 section
    assert msg[21:] == body
    assert _parse_sections(msg, 20) == [(0, {"ping": 1, "$db": "admin"})]


def test_pack_msg_more_to_come_sets_only_that_flag():
    body = _body({"insert": "c", "$db": "d"})
    msg = wire.pack_msg(7, body, wire.MORE_TO_COME)
    flags = UINT32.unpack_from(msg, 16)[0]
    assert flags == wire.MORE_TO_COME == 2
    assert not flags & wire.CHECKSUM_PRESENT
    # The rest of the frame is unchanged by the flag.
    plain = wire.pack_msg(7, body)
    assert msg[:16] == plain[:16] and msg[20:] == plain[20:]


def test_unpack_header_reads_what_pack_msg_wrote():
    body = _body({"x": 1})
    msg = wire.pack_msg(99, body, wire.MORE_TO_COME)
    assert wire.unpack_header(msg) == (len(msg), 99, 0, wire.OP_MSG)
    assert wire.unpack_header(memoryview(bytearray(msg))) == (len(msg), 99, 0, wire.OP_MSG)


def test_encode_section_framing():
    docs = [_body({"_id": i, "s": "x" * i}) for i in range(3)]
    section = wire.encode_section("documents", docs)
    assert section[0] == 1
    size = INT32.unpack_from(section, 1)[0]
    # The size counts itself, the identifier and the documents, not the kind byte.
    assert size == len(section) - 1 == 4 + len(b"documents\x00") + sum(map(len, docs))
    assert section[5:15] == b"documents\x00"
    assert section[15:] == b"".join(docs)


def test_encode_section_counts_identifier_bytes_not_characters():
    ident = "d\u00f6cs\u00e9"  # 5 characters, 7 bytes in UTF-8
    doc = _body({"a": 1})
    section = wire.encode_section(ident, [doc])
    assert INT32.unpack_from(section, 1)[0] == len(section) - 1 == 4 + len(ident.encode("utf-8")) + 1 + len(doc)
    assert _parse_sections(section, 0) == [(1, (ident, [{"a": 1}]))]


def test_encode_section_accepts_a_generator_and_no_documents():
    docs = (_body({"i": i}) for i in range(2))
    assert _parse_sections(wire.encode_section("updates", docs), 0) == [(1, ("updates", [{"i": 0}, {"i": 1}]))]
    empty = wire.encode_section("documents", [])
    assert INT32.unpack_from(empty, 1)[0] == len(empty) - 1 == 4 + len(b"documents\x00")


def test_pack_msg_with_sequences():
    body = _body({"insert": "things", "$db": "db"})
    first = wire.encode_section("documents", [_body({"_id": 1}), _body({"_id": 2})])
    second = wire.encode_section("more", [_body({"_id": 3})])
    msg = wire.pack_msg(42, body, 0, (first, second))
    length, rid, response_to, op = struct.unpack_from("<iiii", msg, 0)
    assert length == len(msg) == 21 + len(body) + len(first) + len(second)
    assert (rid, response_to, op) == (42, 0, wire.OP_MSG)
    assert UINT32.unpack_from(msg, 16)[0] == 0
    assert msg[21 : 21 + len(body)] == body
    assert msg[21 + len(body) :] == first + second
    assert _parse_sections(msg, 20) == [
        (0, {"insert": "things", "$db": "db"}),
        (1, ("documents", [{"_id": 1}, {"_id": 2}])),
        (1, ("more", [{"_id": 3}])),
    ]


def test_pack_msg_with_sequences_and_more_to_come():
    body = _body({"insert": "c", "$db": "d"})
    seq = wire.encode_section("documents", [_body({"a": 1})])
    msg = wire.pack_msg(5, body, wire.MORE_TO_COME, [seq])
    assert INT32.unpack_from(msg, 0)[0] == len(msg)
    assert UINT32.unpack_from(msg, 16)[0] == wire.MORE_TO_COME
    assert msg.endswith(seq)


def test_pack_msg_round_trips_through_unpack_msg_reply():
    doc = {"ok": 1.0, "n": 3, "nested": {"a": [1, 2, 3]}, "s": "\u00e9t\u00e9"}
    msg = wire.pack_msg(3, _body(doc))
    assert wire.unpack_msg_reply(msg[16:]) == doc


# -- pack_query -------------------------------------------------------------


def test_pack_query_layout():
    query = _body({"isMaster": 1, "helloOk": True})
    msg = wire.pack_query(77, "admin.$cmd", query)
    length, rid, response_to, op = struct.unpack_from("<iiii", msg, 0)
    assert length == len(msg)
    assert (rid, response_to, op) == (77, 0, wire.OP_QUERY)
    assert op == 2004
    assert INT32.unpack_from(msg, 16)[0] == 0  # flags
    name_end = msg.index(b"\x00", 20)
    assert msg[20:name_end] == b"admin.$cmd"
    skip, to_return = struct.unpack_from("<ii", msg, name_end + 1)
    assert (skip, to_return) == (0, -1)
    assert msg[name_end + 9 :] == query
    assert bson.decode(msg[name_end + 9 :]) == {"isMaster": 1, "helloOk": True}


def test_pack_query_length_counts_utf8_bytes_of_the_namespace():
    query = _body({"hello": 1})
    msg = wire.pack_query(1, "d\u00e9.$cmd", query)
    assert INT32.unpack_from(msg, 0)[0] == len(msg)
    assert msg.endswith(query)


# -- unpack_msg_reply -------------------------------------------------------


def test_unpack_msg_reply_good_bytes():
    doc = {"ok": 1.0, "cursor": {"id": 0, "firstBatch": [{"a": 1}], "ns": "d.c"}}
    assert wire.unpack_msg_reply(_reply(doc)) == doc


def test_unpack_msg_reply_accepts_bytearray_and_memoryview():
    data = _reply({"ok": 1.0, "x": "y"})
    assert wire.unpack_msg_reply(bytearray(data)) == {"ok": 1.0, "x": "y"}
    # The socket layer hands over a slice of its receive buffer.
    framed = b"\xff" * 16 + data + b"\xee" * 8
    view = memoryview(bytearray(framed))[16 : 16 + len(data)]
    assert wire.unpack_msg_reply(view) == {"ok": 1.0, "x": "y"}


def test_unpack_msg_reply_uses_codec_options():
    data = _reply(SON([("ok", 1.0), ("b", 2), ("a", 1)]))
    out = wire.unpack_msg_reply(data, CodecOptions(document_class=SON))
    assert isinstance(out, SON)
    assert list(out.items()) == [("ok", 1.0), ("b", 2), ("a", 1)]


def _message(doc=None, flags=0, response_to=7) -> bytes:
    """A whole OP_MSG reply, header included."""
    body = _reply(doc, flags=flags)
    return struct.pack("<iiii", 16 + len(body), 99, response_to, wire.OP_MSG) + body


@pytest.mark.parametrize(
    "data, crc",
    [
        (b"", 0),
        (b"123456789", 0xE3069283),
        (b"\x00" * 32, 0x8A9136AA),
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
    ],
)
def test_crc32c_known_values(data, crc):
    # The check value and the iSCSI test vectors of RFC 3720, appendix B.4.
    assert wire.crc32c(data) == crc


def test_unpack_msg_verifies_a_good_checksum():
    msg = wire.add_checksum(_message({"ok": 1.0, "n": 2}))
    assert UINT32.unpack_from(msg, 16)[0] == wire.CHECKSUM_PRESENT
    assert INT32.unpack_from(msg, 0)[0] == len(msg)
    assert wire.unpack_msg(msg) == {"ok": 1.0, "n": 2}
    assert wire.unpack_msg(memoryview(bytearray(msg))) == {"ok": 1.0, "n": 2}


@pytest.mark.parametrize("position", [0, 5, 16, 21, 30, -1, -4])
def test_unpack_msg_rejects_a_wrong_checksum(position):
    msg = bytearray(wire.add_checksum(_message({"ok": 1.0, "n": 2})))
    msg[position] ^= 0x01  # one flipped bit anywhere: header, flags, body, or the checksum itself
    with pytest.raises(ProtocolError):
        wire.unpack_msg(bytes(msg))


def test_unpack_msg_without_checksum():
    assert wire.unpack_msg(_message({"ok": 1.0})) == {"ok": 1.0}


def test_unpack_msg_reply_cannot_verify_a_checksum_without_the_header():
    # The checksum covers the header, so the body alone cannot be trusted: refuse it.
    data = _reply({"ok": 1.0}, flags=wire.CHECKSUM_PRESENT, extra=b"\x01\x02\x03\x04")
    with pytest.raises(ProtocolError):
        wire.unpack_msg_reply(data)


def test_unpack_msg_reply_checksum_flag_without_checksum_bytes_is_an_error():
    data = _reply({"ok": 1.0}, flags=wire.CHECKSUM_PRESENT)
    with pytest.raises(ProtocolError):
        wire.unpack_msg_reply(data)


def test_unpack_msg_reply_refuses_more_to_come():
    # moreToCome in a reply is exhaust mode, which we never ask for: the next
    # reply would arrive unasked and be read as the answer to a later request.
    with pytest.raises(ProtocolError):
        wire.unpack_msg_reply(_reply({"ok": 1.0, "n": 1}, flags=wire.MORE_TO_COME))


@pytest.mark.parametrize("flags", [wire.EXHAUST_ALLOWED, 1 << 2, 1 << 15, 1 << 31, wire.MORE_TO_COME | (1 << 8)])
def test_unpack_msg_reply_rejects_unknown_flag_bits(flags):
    with pytest.raises(ProtocolError) as info:
        wire.unpack_msg_reply(_reply(flags=flags))
    assert "flag" in str(info.value)


@pytest.mark.parametrize("extra", [b"\x00", b"\x00\x00\x00\x00\x00", _body({"second": 1})])
def test_unpack_msg_reply_rejects_trailing_bytes(extra):
    with pytest.raises(ProtocolError) as info:
        wire.unpack_msg_reply(_reply(extra=extra))
    assert "trailing" in str(info.value)


def test_unpack_msg_reply_rejects_a_kind_1_section_after_the_body():
    seq = wire.encode_section("documents", [_body({"a": 1})])
    with pytest.raises(ProtocolError):
        wire.unpack_msg_reply(_reply(extra=seq))


@pytest.mark.parametrize("kind", [1, 2, 0xFF])
def test_unpack_msg_reply_rejects_a_wrong_first_section_kind(kind):
    with pytest.raises(ProtocolError) as info:
        wire.unpack_msg_reply(_reply(kind=kind))
    assert "body section" in str(info.value)


def test_unpack_msg_reply_rejects_a_kind_1_sequence_as_the_reply():
    seq = wire.encode_section("documents", [_body({"ok": 1.0})])
    with pytest.raises(ProtocolError):
        wire.unpack_msg_reply(UINT32.pack(0) + seq)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"\x00\x00\x00\x00",
        # flagBits and a kind-0 byte, but no room for the document's length
        b"\x00\x00\x00\x00\x00",
        b"\x00\x00\x00\x00\x00\x05\x00",
    ],
)
def test_unpack_msg_reply_rejects_short_data(data):
    with pytest.raises(ProtocolError):
        wire.unpack_msg_reply(data)


def test_unpack_msg_reply_rejects_a_truncated_document():
    data = _reply({"ok": 1.0, "pad": "x" * 50})
    with pytest.raises(ProtocolError):
        wire.unpack_msg_reply(data[:-10])


def test_unpack_msg_reply_wraps_invalid_bson_in_protocol_error():
    raw = bytearray(_body({"ok": 1.0}))
    raw[4] = 0x20  # not a BSON element type
    data = UINT32.pack(0) + b"\x00" + bytes(raw)
    with pytest.raises(ProtocolError) as info:
        wire.unpack_msg_reply(data)
    assert isinstance(info.value.__cause__, bson.errors.InvalidBSON)


# -- unpack_op_reply --------------------------------------------------------


def _op_reply(docs, flags=0, cursor_id=0, start=0, number=None) -> bytes:
    raw = b"".join(_body(d) for d in docs)
    n = len(docs) if number is None else number
    return struct.pack("<iqii", flags, cursor_id, start, n) + raw


def test_unpack_op_reply_good_bytes():
    hello = {"ismaster": True, "maxWireVersion": 17, "ok": 1.0}
    assert wire.unpack_op_reply(_op_reply([hello], flags=8, cursor_id=0)) == hello


def test_unpack_op_reply_returns_the_first_document_only():
    data = _op_reply([{"first": 1}, {"second": 2}])
    assert wire.unpack_op_reply(data) == {"first": 1}
    assert wire.unpack_op_reply(memoryview(bytearray(data))) == {"first": 1}


def test_unpack_op_reply_with_no_documents_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        wire.unpack_op_reply(_op_reply([], number=0))


@pytest.mark.parametrize("size", [0, 4, 19])
def test_unpack_op_reply_short_data_is_a_protocol_error(size):
    with pytest.raises(ProtocolError):
        wire.unpack_op_reply(_op_reply([{"ok": 1}])[:size])


@pytest.mark.parametrize("cut", [1, 3, 10])
def test_unpack_op_reply_truncated_document_is_a_protocol_error(cut):
    # The handshake reply is the first thing read from a new socket: a
    # truncated or garbled one must surface as ProtocolError, like OP_MSG.
    data = _op_reply([{"ok": 1.0, "pad": "x" * 20}])
    with pytest.raises(ProtocolError):
        wire.unpack_op_reply(data[: 20 + cut] if cut < 4 else data[:-cut])


def test_unpack_op_reply_invalid_bson_is_a_protocol_error():
    raw = bytearray(_body({"ok": 1.0}))
    raw[4] = 0x20  # not a BSON element type
    with pytest.raises(ProtocolError):
        wire.unpack_op_reply(struct.pack("<iqii", 0, 0, 0, 1) + bytes(raw))


# -- request ids ------------------------------------------------------------


def _check_int32(rid: int) -> None:
    assert 0 < rid <= 0x7FFFFFFF
    # It must fit the header's signed int32 field.
    wire.HEADER.pack(16, rid, 0, wire.OP_MSG)


def test_next_request_id_is_positive_and_fresh():
    ids = [wire.next_request_id() for _ in range(1000)]
    for rid in ids:
        _check_int32(rid)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_next_request_id_wraps_before_int32_overflow(monkeypatch):
    monkeypatch.setattr(wire, "_ids", itertools.count(0x7FFFFFFF - 3))
    ids = [wire.next_request_id() for _ in range(8)]
    for rid in ids:
        _check_int32(rid)
    assert ids[:3] == [0x7FFFFFFC, 0x7FFFFFFD, 0x7FFFFFFE]
    # After the wrap the ids start again from the bottom, still distinct.
    assert ids[3:] == [1, 2, 3, 4, 5]
    assert len(set(ids)) == len(ids)
    # And a framed message with a wrapped id still packs.
    msg = wire.pack_msg(ids[-1], _body({"ping": 1}))
    assert wire.unpack_header(msg)[1] == ids[-1]


def test_next_request_id_far_past_the_wrap(monkeypatch):
    monkeypatch.setattr(wire, "_ids", itertools.count(5 * 0x7FFFFFFF - 2))
    for _ in range(6):
        _check_int32(wire.next_request_id())


def test_encode_docs_matches_bson_encode():
    docs = [{"a": 1}, SON([("b", 2), ("a", 1)])]
    assert wire.encode_docs(docs) == [bson.encode(d) for d in docs]
