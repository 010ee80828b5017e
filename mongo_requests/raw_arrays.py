"""Cursor batches straight from the reply's BSON array, for raw documents and raw batches.

A ``find`` or ``getMore`` reply holds its documents in one BSON array
(``cursor.firstBatch`` or ``cursor.nextBatch``).  Decoded with a document
class, the reply becomes one Python object per document: for
:class:`~bson.raw_bson.RawBSONDocument` bson's C decoder calls the class,
whose Python ``__init__`` checks the codec options through the ``Mapping``
ABC, and raw batches then joined those objects back into bytes.  Instead, a
cursor of raw documents runs its commands with :func:`reply_codec`, whose
document class (:class:`RawReply`) tells ``wire.unpack_msg`` to call
:func:`unpack_reply`: a short walk finds the array in the received bytes, the
array is re-framed as concatenated documents (bson's C
``_array_of_documents_to_buffer``, PyMongo's own raw batch path) straight
from the receive buffer, and only the small envelope around it is decoded.
The reply is that envelope, a dict, with a :class:`Batch` in place of the
array; so a reply of N bytes costs one more buffer of N bytes, not three
(each big buffer also costs page faults when the allocator has given the
memory back since the last reply).  Then:

- a raw batch is the re-framed bytes, never decoded;
- raw documents are slices of them, each made into a RawBSONDocument when the
  cursor hands it out (:func:`make`, and inline in ``Cursor.__next__``).

Re-framing in C and making a document without its ``__init__`` are private
to bson: without them a Python walk re-frames the array, and the class is
called for the whole batch at once.  A reply that is not a cursor batch (an
error, whose ``errorLabels`` must be a list, or an unexpected shape) is
decoded as plain raw documents, as before.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import bson
import bson.raw_bson
from bson.codec_options import CodecOptions
from bson.errors import InvalidBSON
from bson.raw_bson import DEFAULT_RAW_BSON_OPTIONS, RawBSONDocument
from pymongo.errors import ProtocolError

__all__ = [
    "RawReply",
    "Batch",
    "PRIVATE",
    "reply_codec",
    "unpack_reply",
    "is_raw",
    "to_stream",
    "first_documents",
    "buffered",
    "documents",
    "make",
]

_INT32 = struct.Struct("<i")
_unpack_int32 = _INT32.unpack_from


class RawReply(RawBSONDocument):
    """The document class of :func:`reply_codec`: asks ``wire.unpack_msg`` for :func:`unpack_reply`."""

    __slots__ = ()


class RawBatchReply(RawReply):
    """:class:`RawReply` for a raw batch cursor: the batch as one stream of documents."""

    __slots__ = ()


class Chunks(list):  # type: ignore[type-arg]
    """A cursor batch as each document's BSON bytes (for RawBSONDocuments)."""

    __slots__ = ()


class Batch(NamedTuple):
    """A cursor batch as its documents' BSON, concatenated, and how many there are."""

    stream: bytes
    ndocs: int


def _py_to_buffer(data: bytes | memoryview) -> bytes:
    """A BSON array of documents as the documents alone, concatenated (bson's helper, in Python)."""
    view = memoryview(data)
    end = len(view)
    if end < 5 or _unpack_int32(view, 0)[0] != end or view[end - 1] != 0:
        raise InvalidBSON("bad array length")
    raw = bytes(view)
    pos = 4
    parts = []
    while pos < end - 1:
        if raw[pos] != 3:
            raise InvalidBSON("array element of type %d, not a document" % raw[pos])
        pos = raw.index(0, pos + 1) + 1  # past the key
        size = _unpack_int32(raw, pos)[0] if pos + 4 <= end else 0
        if size < 5 or pos + size > end - 1:
            raise InvalidBSON("bad document length in array")
        parts.append(raw[pos : pos + size])
        pos += size
    if pos != end - 1:
        raise InvalidBSON("bad array length")
    return b"".join(parts)


_private_to_buffer: Callable[[bytes | memoryview], bytes] | None = getattr(bson, "_array_of_documents_to_buffer", None)
_to_buffer = _private_to_buffer if _private_to_buffer is not None else _py_to_buffer


def is_raw(codec_options: CodecOptions[Any]) -> bool:
    """True when ``codec_options`` decodes documents as RawBSONDocument (or a subclass)."""
    cls = codec_options.document_class
    return cls is not dict and isinstance(cls, type) and issubclass(cls, RawBSONDocument)


def reply_codec(codec_options: CodecOptions[Any], batches: bool = False) -> CodecOptions[Any]:
    """The codec options a cursor of raw documents runs its commands with: its own, with :class:`RawReply`.

    Only ``document_class`` changes, so commands encode as they did.

    :param batches: for a raw batch cursor (:class:`RawBatchReply`).
    """
    return codec_options.with_options(document_class=RawBatchReply if batches else RawReply)


# Sizes of the BSON values a reply's envelope may hold, by type.
_FIXED = {0x01: 8, 0x06: 0, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8, 0x13: 16, 0xFF: 0, 0x7F: 0}
_LENGTH_ONLY = frozenset((0x03, 0x04, 0x0F))  # document, array, code with scope: the int32 counts itself
_LENGTH_PLUS = {0x02: 4, 0x0D: 4, 0x0E: 4, 0x05: 5}  # string, code, symbol; binary (its subtype byte)
_BATCH_KEYS = (b"firstBatch", b"nextBatch")
_EMPTY = b"\x05\x00\x00\x00\x00"


def _element(doc: Any, pos: int) -> tuple[int, bytes, int]:
    """(type, name, offset of the value) of the element at ``pos`` (names are short: a window, not a copy)."""
    window = bytes(doc[pos + 1 : pos + 65])
    end = window.index(0)  # ValueError for a name over 63 bytes: not a reply to split
    return int(doc[pos]), window[:end], pos + end + 2


def _skip(doc: Any, etype: int, pos: int) -> int:
    """The offset just past the value of type ``etype`` at ``pos`` (ValueError for a type not expected here)."""
    size = _FIXED.get(etype)
    if size is not None:
        return pos + size
    if etype in _LENGTH_ONLY:
        return pos + int(_unpack_int32(doc, pos)[0])
    extra = _LENGTH_PLUS.get(etype)
    if extra is not None:
        return pos + extra + int(_unpack_int32(doc, pos)[0])
    raise ValueError("BSON type 0x%02x in a reply" % etype)


def _locate(doc: Any) -> tuple[int, int, int, str] | None:
    """(offset of ``cursor``'s value, of its batch array, the array's length, its key), or None."""
    end = len(doc) - 1
    pos = 4
    while pos < end:
        etype, name, pos = _element(doc, pos)
        if etype == 0x03 and name == b"cursor":
            start = pos
            stop = start + _unpack_int32(doc, start)[0] - 1
            pos += 4
            while pos < stop:
                etype, name, pos = _element(doc, pos)
                if etype == 0x04 and name in _BATCH_KEYS:
                    length = int(_unpack_int32(doc, pos)[0])
                    if length < 5 or pos + length > stop:
                        return None
                    return start, pos, length, name.decode()
                pos = _skip(doc, etype, pos)
            return None
        pos = _skip(doc, etype, pos)
    return None


def unpack_reply(body: bytes | bytearray | memoryview, codec_options: CodecOptions[Any]) -> dict[str, Any]:
    """Decode a reply to a :func:`reply_codec` command: the envelope as a dict, its batch as a :class:`Batch`.

    :param body: the reply's BSON document (a view into the receive buffer).
    :param codec_options: the command's codec options; a reply that is not a
        cursor batch is decoded with them and plain RawBSONDocument, as before.
    """
    body = memoryview(body)
    try:
        where = _locate(body)
    except (ValueError, IndexError, struct.error):
        where = None
    try:
        if where is None:
            decoded: dict[str, Any] = bson.decode(
                bytes(body), codec_options.with_options(document_class=RawBSONDocument)
            )
            return decoded
        start, array_at, length, key = where
        array = body[array_at : array_at + length]
        # Re-framed in C, then cut in Python from bytes: cutting the documents
        # straight from the receive buffer (a memoryview) spared one buffer
        # the size of the reply and its page faults, but cost twice the time.
        stream, count = to_stream(array)
        batch: Any = Batch(stream, count) if codec_options.document_class is RawBatchReply else Chunks(_split(stream))
        # The envelope without the array: an empty one in its place, and the two lengths that held it shrunk.
        envelope = bytearray(body[:array_at])
        envelope += _EMPTY
        envelope += body[array_at + length :]
        _INT32.pack_into(envelope, 0, len(envelope))
        _INT32.pack_into(envelope, start, _unpack_int32(envelope, start)[0] - length + 5)
        reply: dict[str, Any] = bson.decode(bytes(envelope))
    except InvalidBSON as exc:  # not a ProtocolError
        raise ProtocolError("could not decode OP_MSG reply: %s" % exc) from exc
    reply["cursor"][key] = batch
    return reply


def _count(array_len: int, stream_len: int) -> int | None:
    """How many documents an array held, from its size and theirs; None if its keys are not 0, 1, 2...

    Each element adds a type byte, its key's digits and a NUL to its document:
    10 elements of 3 bytes, then 90 of 4, 900 of 5... so the difference gives
    the count without a walk over the documents.
    """
    overhead = array_len - 5 - stream_len  # the array's int32 length and its final NUL
    count, block, width = 0, 10, 3
    while overhead > 0:
        if overhead <= block * width:
            n, rest = divmod(overhead, width)
            return None if rest else count + n
        overhead -= block * width
        count += block
        block, width = 9 * count, width + 1
    return count if overhead == 0 else None


def _walk(stream: bytes, limit: int = -1) -> tuple[int, int]:
    """(documents, bytes) of the first ``limit`` documents of a stream (all with -1), checking their lengths."""
    pos = count = 0
    end = len(stream)
    while pos < end and count != limit:
        size = _unpack_int32(stream, pos)[0] if pos + 4 <= end else 0
        if size < 5 or pos + size > end:
            raise ProtocolError("could not decode a cursor batch: bad document length")
        pos += size
        count += 1
    return count, pos


def _stream(array: bytes | memoryview) -> bytes:
    """The documents of a BSON array, concatenated."""
    try:
        return _to_buffer(array)
    except Exception as exc:  # bson's InvalidBSON is not a pymongo error
        raise ProtocolError("could not decode a cursor batch: %s" % exc) from exc


def to_stream(batch: Any) -> tuple[bytes, int]:
    """A reply's batch as ``(concatenated BSON documents, how many)``: a Batch, an array's bytes, or documents."""
    if batch.__class__ is Batch:
        return batch.stream, batch.ndocs
    if batch.__class__ is Chunks:
        return b"".join(batch), len(batch)
    if isinstance(batch, (bytes, memoryview)):
        stream = _stream(batch)
        count = _count(len(batch), len(stream))
        if count is None:
            count = _walk(stream)[0]
        return stream, count
    docs: Sequence[Any] = batch
    return b"".join(bytes(doc.raw) for doc in docs), len(docs)


def first_documents(stream: bytes, limit: int) -> tuple[bytes, int]:
    """The first ``limit`` documents of a stream, and how many there are."""
    count, end = _walk(stream, limit)
    return stream[:end], count


def _wrap_public(stream: bytes, codec_options: CodecOptions[Any]) -> list[Any]:
    """The documents of a stream, each made by calling the document class (the public API)."""
    out: list[Any] = []
    append = out.append
    make = codec_options.document_class
    pos = 0
    end = len(stream)
    unpack = _unpack_int32
    try:
        if make is RawBSONDocument and codec_options == DEFAULT_RAW_BSON_OPTIONS:
            # Without a codec_options argument RawBSONDocument skips its
            # issubclass check, an ABC check that is half of its cost.
            while pos < end:
                size = unpack(stream, pos)[0]
                append(make(stream[pos : pos + size]))
                pos += size
        else:
            while pos < end:
                size = unpack(stream, pos)[0]
                append(make(stream[pos : pos + size], codec_options))
                pos += size
    except Exception as exc:  # InvalidBSON from the class's own size check
        raise ProtocolError("could not decode a cursor batch: %s" % exc) from exc
    return out


def make(raw: bytes, codec_options: CodecOptions[Any]) -> Any:
    """A RawBSONDocument of ``raw`` made without ``__init__``: its three slots set directly.

    Half the cost of calling the class, whose ``__init__`` is Python code
    that calls more Python code.  Its checks hold anyway: the re-framing
    checked each length against the array and :func:`_split_private` each
    final NUL.  ``Cursor.__next__`` does the same inline (a call per document
    costs as much again); :func:`_private_ok` checks both against the class.
    """
    doc: Any = object.__new__(RawBSONDocument)
    doc._RawBSONDocument__raw = raw
    doc._RawBSONDocument__inflated_doc = None
    doc._RawBSONDocument__codec_options = codec_options
    return doc


def _split(stream: bytes) -> list[bytes]:
    """The documents of a stream, each as its bytes."""
    return _split_private(stream, DEFAULT_RAW_BSON_OPTIONS)


def _split_private(stream: bytes, codec_options: CodecOptions[Any]) -> list[Any]:
    """The documents of a stream as their bytes, for the cursor to make each one as it hands it out.

    Made one at a time, a document dies young (the loop that reads it drops
    it), instead of going through the garbage collector's generations with
    the whole batch, and bytes are not tracked by the collector at all.  A
    subclass of RawBSONDocument may have an ``__init__`` of its own, so its
    documents are made at once by calling it.
    """
    if codec_options.document_class is not RawBSONDocument:
        return _wrap_public(stream, codec_options)
    out: list[Any] = []
    append = out.append
    pos = 0
    end = len(stream)
    unpack = _unpack_int32
    try:
        while pos < end:
            nxt = pos + unpack(stream, pos)[0]
            raw = stream[pos:nxt]
            if raw[-1]:
                break
            append(raw)
            pos = nxt
    except Exception as exc:  # struct.error or IndexError: a length that the re-framing should have refused
        raise ProtocolError("could not decode a cursor batch: %s" % exc) from exc
    if pos != end:
        raise ProtocolError("could not decode a cursor batch: bad document length or terminator")
    return out


def _private_ok() -> bool:
    """True when RawBSONDocument's slots are the three we set, and a document made so equals one made by the class."""
    if getattr(RawBSONDocument, "__slots__", None) != ("__codec_options", "__inflated_doc", "__raw"):
        return False
    sample = bson.encode({"_id": 1, "a": [1, {"b": "c"}]})
    try:
        mine = make(sample, DEFAULT_RAW_BSON_OPTIONS)
        theirs = RawBSONDocument(sample)
        return bool(repr(mine) == repr(theirs) and dict(mine) == dict(theirs) and bytes(mine.raw) == sample)
    except Exception:
        return False


# What a cursor buffers for a batch of raw documents: their bytes (private
# path: the cursor makes them with make() as it hands them out) or the
# documents (public path, the fallback; tests run both).
PRIVATE = _private_ok()
# Cursors of raw documents leave their batches undecoded (tests turn it off to run the decoded path).
SPLIT_REPLIES = True
_buffered = _split_private if PRIVATE else _wrap_public


def buffered(batch: Any, codec_options: CodecOptions[Any]) -> Any:
    """What a cursor buffers for a reply's batch of raw documents: documents, or (private path) their bytes.

    A batch already decoded (a list: the public path, or a reply decoded
    for command listeners) is handed back as it is.
    """
    if batch.__class__ is Chunks:
        if _buffered is _split_private and codec_options.document_class is RawBSONDocument:
            return batch
        make_one = codec_options.document_class
        try:
            return [make_one(raw, codec_options) for raw in batch]
        except InvalidBSON as exc:
            raise ProtocolError("could not decode a cursor batch: %s" % exc) from exc
    if batch.__class__ is Batch:
        return _buffered(batch.stream, codec_options)
    if not isinstance(batch, (bytes, memoryview)):
        return batch
    return _buffered(_stream(batch), codec_options)


def documents(batch: Any, codec_options: CodecOptions[Any]) -> list[Any]:
    """A reply's batch as documents of ``codec_options``' raw class (what a cursor hands out)."""
    return [make(d, codec_options) if d.__class__ is bytes else d for d in buffered(batch, codec_options)]
