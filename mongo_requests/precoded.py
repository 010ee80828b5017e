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
read preferences still get (and encode) the command dict.  ``insert_one``'s
body (:class:`InsertOne`) is constant: its document travels in a document
sequence, as the general path sends it.

Three more shortcuts live here, each checked against the general path by
tests/test_hot_path.py: :func:`encoding_options` (the same bytes without the
encoder's failed ``_type_marker`` lookup), :class:`FindOne` and
:class:`UpdateOne` bound to a collection (its names, client and options read
from a slotted object), and :meth:`FindOne.first_batch` (a ``find_one``
reply of the usual shape decoded from its document only).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import bson
from bson.codec_options import DEFAULT_CODEC_OPTIONS, CodecOptions

__all__ = [
    "encode",
    "encoding_options",
    "fields",
    "doc_element",
    "ping_body",
    "FindOne",
    "WriteOne",
    "UpdateOne",
    "InsertOne",
]

_INT32 = struct.Struct("<i")
# A kind-1 section's kind byte and size (wire.encode_section's prefix).
_SECTION = struct.Struct("<Bi")
_pack_section = _SECTION.pack
_DOCUMENTS = b"documents\x00"
# maxBsonObjectSize when the server's hello has none (here and in MongoClient._max_bson_size):
# every server's limit since MongoDB 1.8.
DEFAULT_MAX_BSON_SIZE = 16 * 1024 * 1024
# A find reply up to its first document: flagBits, section kind, body length,
# the cursor element and length, the firstBatch element and length, element "0".
_REPLY_PREFIX = struct.Struct("<IBi8si12si3s")
_DOUBLE_ONE = struct.pack("<d", 1.0)
_pack_int32 = _INT32.pack
_EMPTY = b"\x05\x00\x00\x00\x00"

# bson's C encoder, called without bson.encode's Python wrapper, which only
# re-checks arguments we always pass correctly.  The public bson.encode is the
# fallback for a bson without it (tests run both).
_private_encode = getattr(bson, "_dict_to_bson", None)


def _public_encode(doc: Any, check_keys: bool, codec_options: CodecOptions[Any]) -> bytes:
    return bson.encode(doc, check_keys, codec_options)


encode = _private_encode if _private_encode is not None else _public_encode
# bson's C decoder without bson.decode's argument checks; bson.decode without it (tests run both).
_decode = getattr(bson, "_bson_to_dict", None) or bson.decode


class _EncodingDocument(dict):  # type: ignore[type-arg]
    """The document class of the codec options documents are encoded with (never instantiated).

    bson's C encoder looks up ``_type_marker`` on the options' document class
    on every call.  On plain ``dict`` the lookup fails and formats an
    AttributeError first: about 2,200 instructions, a third of a small
    filter's encoding.  Encoding uses the document class for nothing else
    (decoding builds documents of it), so the bytes are the same.
    """

    _type_marker = 0  # bson's marker for no special document class (RawBSONDocument's is 101)


# The last options converted, and their encoding twin, as one tuple (replaced
# whole, so threads never see a mismatched pair); older pairs by id.
_last_options: tuple[CodecOptions[Any], CodecOptions[Any]] = (
    DEFAULT_CODEC_OPTIONS,
    DEFAULT_CODEC_OPTIONS.with_options(document_class=_EncodingDocument),
)
_options_by_id: dict[int, tuple[CodecOptions[Any], CodecOptions[Any]]] = {}


def encoding_options(codec_options: CodecOptions[Any]) -> CodecOptions[Any]:
    """``codec_options`` for encoding only: the same bytes, without the encoder's failed lookup.

    Hot callers test ``_last_options[0] is codec_options`` first and call this only on a miss.
    """
    global _last_options
    pair = _last_options
    if pair[0] is codec_options:
        return pair[1]
    pair = _options_by_id.get(id(codec_options))  # type: ignore[assignment]
    if pair is None or pair[0] is not codec_options:
        if codec_options.__class__ is not CodecOptions or codec_options.document_class is not dict:
            # A subclass (JSONOptions) or another document class: as given.
            pair = (codec_options, codec_options)
        else:
            pair = (codec_options, codec_options.with_options(document_class=_EncodingDocument))
        if len(_options_by_id) >= 64:
            _options_by_id.clear()  # options made per call must not pin memory
        _options_by_id[id(codec_options)] = pair
    _last_options = pair
    return pair[1]


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
    """``{"find": coll, "filter": ..., "limit": 1, "singleBatch": True, "$db": db}`` around an encoded filter.

    With ``client`` (a collection's primary ``find_one``), :meth:`run` also
    sends it: the names, client and codec options are read here, from a
    plain slotted object, because every attribute of a Collection or
    MongoClient is an unspecialized lookup (their ``__getattr__`` keeps
    CPython from specializing it), about 300 instructions each.
    """

    __slots__ = (
        "_head",
        "_tail",
        "client",
        "dbname",
        "name",
        "codec_options",
        "_encoding",
        "_reply_tail",
        "_prefixes",
        "_command",
        "_hot",
    )

    def __init__(
        self, dbname: str, coll: str, client: Any = None, codec_options: CodecOptions[Any] = DEFAULT_CODEC_OPTIONS
    ) -> None:
        self._head = fields({"find": coll}) + doc_element("filter")
        self._tail = fields({"limit": 1, "singleBatch": True, "$db": dbname}) + b"\x00"
        self.client = client
        # The bound method, looked up once (on a MongoClient each lookup is unspecialized).
        self._command: Any = client._command if client is not None else None
        # The client's slotted hot-path state: whether a command listener is on (set once, when it is made).
        self._hot: Any = client._hot if client is not None else None
        self.dbname = dbname
        self.name = coll
        self.codec_options = codec_options
        self._encoding = encoding_options(codec_options)
        # What follows the document in a reply of one document: the end of
        # firstBatch, the cursor's id 0 and namespace, then ok: 1.0.
        ns = ("%s.%s" % (dbname, coll)).encode("utf-8")
        self._reply_tail = (
            b"\x00\x12id\x00"
            + bytes(8)
            + b"\x02ns\x00"
            + _pack_int32(len(ns) + 1)
            + ns
            + b"\x00\x00"
            + b"\x01ok\x00"
            + _DOUBLE_ONE
            + b"\x00"
        )
        self._prefixes: dict[int, bytes] = {}

    def first_batch(self, message: memoryview) -> list[Any] | None:
        """``[document]`` from a whole OP_MSG reply of the usual one-document shape; None for any other reply.

        Decoding the reply costs bson's fixed price per call on the whole
        envelope (cursor, firstBatch, id, ns, ok): about 3,000 instructions
        more than decoding the document alone.  So the bytes around the
        document are compared with the ones this collection's reply has
        (flag bits 0, one body section, the lengths the reply's size
        implies, cursor id 0, our namespace, ok: 1.0), and bson decodes the
        document only, which it checks to the byte as always.  Anything
        else (no document, an error, $clusterTime...), or bytes bson
        refuses, returns None, and the caller decodes the whole reply.
        """
        data = bytes(message)
        n = len(data) - 16  # after the header: flagBits, the section's kind byte, the body
        prefix = self._prefixes.get(n)
        if prefix is None:
            tail_size = len(self._reply_tail)
            # flagBits 0, kind 0, {cursor: {firstBatch: [ <document>: the rest
            prefix = _REPLY_PREFIX.pack(
                0, 0, n - 5, b"\x03cursor\x00", n - 30, b"\x04firstBatch\x00", n - 40 - tail_size + 8, b"\x030\x00"
            )
            if len(self._prefixes) >= 64:
                self._prefixes.clear()  # sizes vary with the documents: keep a few
            self._prefixes[n] = prefix
        tail = self._reply_tail
        if data.startswith(prefix, 16) and data.endswith(tail):
            try:
                return [_decode(data[56 : len(data) - len(tail)], self.codec_options)]
            except Exception:
                # Not one document after all (say, two whose bytes fit the
                # frame): the full decoding judges, and raises ProtocolError
                # for bytes that are bad.
                return None
        return None

    def body(self, filter: Mapping[str, Any] | None, codec_options: CodecOptions[Any]) -> bytes:
        """The command's body for ``filter`` (None or empty: ``{}``)."""
        if filter:
            pair = _last_options  # encoding_options(), its common case inline
            value = encode(filter, False, pair[1] if pair[0] is codec_options else encoding_options(codec_options))
        else:
            value = _EMPTY
        # _document(), inline: a call costs as much as encoding a small filter's fields.
        head = self._head
        tail = self._tail
        return _pack_int32(4 + len(head) + len(value) + len(tail)) + head + value + tail

    def run(self, filter: Mapping[str, Any] | None) -> Any:
        """``find_one(filter)`` on the primary: the first matching document, or None."""
        cmd = {"find": self.name, "filter": filter or {}, "limit": 1, "singleBatch": True}
        codec_options = self.codec_options
        hot = self._hot
        if hot.listeners is not None or hot.session_hooks or hot.topology.sessions_supported:
            # A command listener or the session path encodes the command dict and ignores a body
            # and unpack: encoding the filter for a body would be one more encoder call for nothing.
            reply = self._command(self.dbname, cmd, codec_options)
        else:
            # body(), inline (one call less per find_one).
            value = encode(filter, False, self._encoding) if filter else _EMPTY
            head = self._head
            tail = self._tail
            reply = self._command(
                self.dbname,
                cmd,
                codec_options,
                body=_pack_int32(4 + len(head) + len(value) + len(tail)) + head + value + tail,
                unpack=self.first_batch,
            )
        # The list first_batch gave, or (its reply had another shape, or another path ran it) the reply.
        batch = reply if reply.__class__ is list else reply["cursor"]["firstBatch"]
        return batch[0] if batch else None


class WriteOne:
    """``{command: coll, "ordered": True, "writeConcern": wc, field: [statement], "$db": db}`` around a statement.

    For an ``update`` or ``delete`` of one statement with no other option and
    one write concern, the collection's: ``concern`` is its command document,
    left out when it is ``{}`` (the server's default, sent as nothing), as
    :func:`mongo_requests.bulk.write_command` leaves it out.  The key order is
    the general path's.  Anything else takes the general path.
    """

    __slots__ = ("_head", "_tail", "concern")

    def __init__(
        self, dbname: str, coll: str, command: str, field: str, concern: Mapping[str, Any] | None = None
    ) -> None:
        fixed: dict[str, Any] = {command: coll, "ordered": True}
        if concern:
            fixed["writeConcern"] = concern
        self._head = fields(fixed) + b"\x04" + field.encode("utf-8") + b"\x00"
        self._tail = fields({"$db": dbname}) + b"\x00"
        # The document itself, not a copy: bulk.run_one tells the collection's
        # concern by it, and UpdateOne.run's command dict carries it as the general path's does.
        self.concern = concern

    def body(self, statement: Mapping[str, Any], codec_options: CodecOptions[Any]) -> bytes:
        """The command's body for one statement."""
        # The array [statement]: one embedded document, named "0".
        pair = _last_options  # encoding_options(), its common case inline
        stmt = encode(statement, False, pair[1] if pair[0] is codec_options else encoding_options(codec_options))
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


class UpdateOne(WriteOne):
    """The ``update`` of one statement, bound like a primary :class:`FindOne`: :meth:`run` also sends it."""

    __slots__ = ("client", "dbname", "name", "codec_options", "_encoding", "_command", "_hot")

    def __init__(
        self,
        client: Any,
        dbname: str,
        coll: str,
        codec_options: CodecOptions[Any],
        concern: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(dbname, coll, "update", "updates", concern)
        self.client = client
        # The bound method, looked up once (on a MongoClient each lookup is unspecialized).
        self._command: Any = client._command if client is not None else None
        # The client's slotted hot-path state: whether a command listener is on (set once, when it is made).
        self._hot: Any = client._hot if client is not None else None
        self.dbname = dbname
        self.name = coll
        self.codec_options = codec_options
        self._encoding = encoding_options(codec_options)

    def run(self, statement: dict[str, Any]) -> dict[str, Any]:
        """Send the update with the collection's write concern; the server's reply (not checked here)."""
        concern = self.concern
        # The command as the general path builds it, for the paths that encode it (sessions, listeners...).
        if concern:
            cmd = {"update": self.name, "ordered": True, "writeConcern": concern, "updates": [statement]}
        else:
            cmd = {"update": self.name, "ordered": True, "updates": [statement]}
        codec_options = self.codec_options
        hot = self._hot
        if hot.listeners is not None or hot.session_hooks or hot.topology.sessions_supported:
            # A command listener or the session path (a replica set or mongos, or once the
            # application has started a session) gets the command dict and encodes that: a body
            # would be one more call into bson's encoder, for nothing (about 9,000 instructions).
            reply: dict[str, Any] = self._command(self.dbname, cmd, codec_options)
            return reply
        # body(), inline (one call less per update_one).
        stmt = encode(statement, False, self._encoding)
        head = self._head
        tail = self._tail
        reply = self._command(
            self.dbname,
            cmd,
            codec_options,
            body=b"".join(
                (
                    _pack_int32(4 + len(head) + 8 + len(stmt) + len(tail)),
                    head,
                    _pack_int32(8 + len(stmt)),
                    b"\x030\x00",
                    stmt,
                    b"\x00",
                    tail,
                )
            ),
        )
        return reply


class InsertOne:
    """``insert_one``'s command, bound like :class:`UpdateOne`: a constant body, the document in a sequence.

    The general path (:func:`mongo_requests.bulk.run_one`) sends an insert's
    document, encoded, as a ``documents`` document sequence beside the body
    ``{"insert": coll, "ordered": True, "writeConcern": wc, "$db": db}``.
    That body never changes for a collection and its write concern, so it is
    encoded once here (``writeConcern`` left out for ``{}``, as
    :func:`mongo_requests.bulk.write_command` leaves it out), and each call
    encodes the document alone, as the general path does, into the same
    sequence.  The command dict handed to ``_command`` beside them is the
    general path's, for the paths that encode it instead (listeners,
    sessions, retryable writes); those paths ignore the body, which costs
    nothing to pass.
    """

    __slots__ = ("client", "dbname", "name", "codec_options", "concern", "_encoding", "_command", "_hot", "_body")

    def __init__(
        self,
        client: Any,
        dbname: str,
        coll: str,
        codec_options: CodecOptions[Any],
        concern: Mapping[str, Any] | None = None,
    ) -> None:
        self.client = client
        # The bound method, looked up once (on a MongoClient each lookup is unspecialized).
        self._command: Any = client._command if client is not None else None
        self._hot: Any = client._hot if client is not None else None
        self.dbname = dbname
        self.name = coll
        self.codec_options = codec_options
        self._encoding = encoding_options(codec_options)
        self.concern = concern
        self._body = bson.encode({**self.command(), "$db": dbname})

    def command(self) -> dict[str, Any]:
        """The command dict the general path builds (its statement travels in a sequence)."""
        if self.concern:
            return {"insert": self.name, "ordered": True, "writeConcern": self.concern}
        return {"insert": self.name, "ordered": True}

    def run(self, document: dict[str, Any]) -> dict[str, Any]:
        """Send ``document`` (a dict that has its ``_id``); the server's reply (not checked here).

        DocumentTooLarge, before anything is sent, for a document over the
        limit ``MongoClient._max_bson_size`` gives (read inline for a known lone server).
        """
        data = encode(document, False, self._encoding)
        hot = self._hot
        server = hot.topology.lone_writable
        if server is not None:
            hello = server.pool.hello
            max_size = (
                hello.get("maxBsonObjectSize", DEFAULT_MAX_BSON_SIZE) if hello is not None else DEFAULT_MAX_BSON_SIZE
            )
        else:
            max_size = self.client._max_bson_size()
        if len(data) > max_size:
            from .bulk import check_size  # the general path's error and message

            check_size(data, max_size)
        concern = self.concern
        if concern:
            cmd = {"insert": self.name, "ordered": True, "writeConcern": concern}
        else:
            cmd = {"insert": self.name, "ordered": True}
        reply: dict[str, Any] = self._command(
            self.dbname,
            cmd,
            self.codec_options,
            # wire.encode_section("documents", (data,)), inline.
            (_pack_section(1, 14 + len(data)) + _DOCUMENTS + data,),
            body=self._body,
        )
        return reply
