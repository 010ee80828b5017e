"""Cursor batches straight from the reply's BSON array, for raw documents and raw batches.

A ``find`` or ``getMore`` reply holds its documents in one BSON array
(``cursor.firstBatch`` or ``cursor.nextBatch``).  Decoded with a document
class, the reply becomes one Python object per document: for
:class:`~bson.raw_bson.RawBSONDocument` bson's C decoder calls the class,
whose Python ``__init__`` checks the codec options through the ``Mapping``
ABC, and raw batches then joined those objects back into bytes.  Instead, a
cursor of raw documents has its replies decoded with the array kept as bytes
(bson's ``_RawArrayBSONDocument``, as PyMongo's raw batch cursors do), and:

- a raw batch is the array re-framed as concatenated documents (bson's C
  ``_array_of_documents_to_buffer``), never decoded;
- raw documents are slices of that buffer, each given to the document class.

Both helpers are private to bson.  Without ``_RawArrayBSONDocument`` a cursor
decodes its replies with its own codec options (the public path) and the
functions below take that list of documents as well; without
``_array_of_documents_to_buffer`` a Python walk of the array does its work.
Everything the driver itself reads from a reply (``ok``, the cursor id, the
error fields) reads the same either way; an error reply is decoded again with
plain raw documents (:func:`error_reply`), so its ``errorLabels`` is a list.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

import bson
import bson.raw_bson
from bson.codec_options import CodecOptions
from bson.errors import InvalidBSON
from bson.raw_bson import DEFAULT_RAW_BSON_OPTIONS, RawBSONDocument
from pymongo.errors import ProtocolError

__all__ = [
    "RAW_ARRAY_CLASS",
    "PRIVATE",
    "reply_codec",
    "is_raw",
    "to_stream",
    "first_documents",
    "buffered",
    "documents",
    "make",
    "error_reply",
]

_INT32 = struct.Struct("<i")
_unpack_int32 = _INT32.unpack_from

# The document class whose inflation keeps arrays as their BSON bytes, or None (the public path).
RAW_ARRAY_CLASS: Any = getattr(bson.raw_bson, "_RawArrayBSONDocument", None)


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


def reply_codec(codec_options: CodecOptions[Any]) -> CodecOptions[Any] | None:
    """The codec options that decode a cursor's replies with their arrays raw; None on the public path.

    Only ``document_class`` changes, so commands encode as they did.
    """
    if RAW_ARRAY_CLASS is None:
        return None
    return codec_options.with_options(document_class=RAW_ARRAY_CLASS)


def error_reply(data: bytes | bytearray | memoryview, codec_options: CodecOptions[Any]) -> dict[str, Any]:
    """An error reply decoded again with plain raw documents, so that its arrays (``errorLabels``) are lists."""
    reply: dict[str, Any] = bson.decode(bytes(data), codec_options.with_options(document_class=RawBSONDocument))
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
    """A reply's batch as ``(concatenated BSON documents, how many)``: an array's bytes, or documents (public path)."""
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
_buffered = _split_private if PRIVATE else _wrap_public


def buffered(batch: Any, codec_options: CodecOptions[Any]) -> Any:
    """What a cursor buffers for a reply's batch of raw documents: documents, or (private path) their bytes.

    A batch already decoded (a list: the public path, or a reply decoded
    for command listeners) is handed back as it is.
    """
    if not isinstance(batch, (bytes, memoryview)):
        return batch
    return _buffered(_stream(batch), codec_options)


def documents(batch: Any, codec_options: CodecOptions[Any]) -> list[Any]:
    """A reply's batch as documents of ``codec_options``' raw class (what a cursor hands out)."""
    return [make(d, codec_options) if d.__class__ is bytes else d for d in buffered(batch, codec_options)]
