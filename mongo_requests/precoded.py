"""Command bodies assembled from pre-encoded bytes, for the hot path.

Every call into bson's C encoder costs about 7,000 client instructions
before it encodes a single field (it converts the codec options each time),
which is as much as all of ``find_one``'s own Python.  The fixed parts of the
hot-path commands (``{"ping": 1, "$db": ...}``, the ``find`` of ``find_one``
without its filter, the ``update`` of ``update_one`` without its statement)
never change for a database or collection, so they are encoded once, with
:func:`bson.encode`, and each call encodes only the caller's document and
joins the pieces.  The result is byte for byte what encoding the whole
command gives (tests compare the two), so the server sees the same command.

Only the hot path uses these bodies; listeners, retryable writes and
read preferences still get (and encode) the command dict.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import bson
from bson.codec_options import CodecOptions

__all__ = ["encode", "fields", "doc_element", "ping_body", "FindOne", "WriteOne"]

_INT32 = struct.Struct("<i")
_pack_int32 = _INT32.pack
_EMPTY = b"\x05\x00\x00\x00\x00"

# bson's C encoder, called without bson.encode's Python wrapper, which only
# re-checks arguments we always pass correctly.  The public bson.encode is the
# fallback for a bson without it (tests run both).
_private_encode = getattr(bson, "_dict_to_bson", None)


def _public_encode(doc: Any, check_keys: bool, codec_options: CodecOptions[Any]) -> bytes:
    return bson.encode(doc, check_keys, codec_options)


encode = _private_encode if _private_encode is not None else _public_encode


def fields(doc: Mapping[str, Any]) -> bytes:
    """The encoded elements of ``doc``, without its length and terminator (to splice into another document)."""
    return bson.encode(doc)[4:-1]


def doc_element(key: str) -> bytes:
    """The type byte and name of an embedded-document element: its value (an encoded document) follows."""
    return b"\x03" + key.encode("utf-8") + b"\x00"


def _document(head: bytes, value: bytes, tail: bytes) -> bytes:
    """A document from its elements: ``head``, an encoded ``value``, ``tail`` (which ends with the terminator)."""
    return _INT32.pack(4 + len(head) + len(value) + len(tail)) + head + value + tail


def ping_body(name: str, dbname: str) -> bytes:
    """The whole body of ``{name: 1, "$db": dbname}``."""
    return bson.encode({name: 1, "$db": dbname})


class FindOne:
    """``{"find": coll, "filter": ..., "limit": 1, "singleBatch": True, "$db": db}`` around an encoded filter."""

    __slots__ = ("_head", "_tail")

    def __init__(self, dbname: str, coll: str) -> None:
        self._head = fields({"find": coll}) + doc_element("filter")
        self._tail = fields({"limit": 1, "singleBatch": True, "$db": dbname}) + b"\x00"

    def body(self, filter: Mapping[str, Any] | None, codec_options: CodecOptions[Any]) -> bytes:
        """The command's body for ``filter`` (None or empty: ``{}``)."""
        value = encode(filter, False, codec_options) if filter else _EMPTY
        # _document(), inline: a call costs as much as encoding a small filter's fields.
        head = self._head
        tail = self._tail
        return _pack_int32(4 + len(head) + len(value) + len(tail)) + head + value + tail


class WriteOne:
    """``{command: coll, "ordered": True, field: [statement], "$db": db}`` around an encoded statement.

    For an ``update`` or ``delete`` of one statement with the default write
    concern sent as nothing (``{}``) and no other option: anything else takes
    the general path.
    """

    __slots__ = ("_head", "_tail")

    def __init__(self, dbname: str, coll: str, command: str, field: str) -> None:
        self._head = fields({command: coll, "ordered": True}) + b"\x04" + field.encode("utf-8") + b"\x00"
        self._tail = fields({"$db": dbname}) + b"\x00"

    def body(self, statement: Mapping[str, Any], codec_options: CodecOptions[Any]) -> bytes:
        """The command's body for one statement."""
        # The array [statement]: one embedded document, named "0".
        stmt = encode(statement, False, codec_options)
        head = self._head
        tail = self._tail
        # The document and its array, framed around the statement in one join.
        return b"".join(
            (
                _pack_int32(4 + len(head) + 8 + len(stmt) + len(tail)),
                head,
                _pack_int32(8 + len(stmt)),
                b"\x030\x00",
                stmt,
                b"\x00",
                tail,
            )
        )
