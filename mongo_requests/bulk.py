"""The one write path: statements, write commands, batches, and their results.

Every write of :class:`~mongo_requests.collection.Collection` builds its
statements here (``insert_one`` one, ``insert_many`` many, ``bulk_write`` a
mix) and sends them with :func:`run_one` or :class:`Bulk`.  Statements are
BSON-encoded once, up front, and travel as OP_MSG document sequences, so a
batch is cut at the server's limits (``maxWriteBatchSize`` statements,
``maxMessageSizeBytes`` bytes) without encoding anything twice, and bad input
fails before anything is sent.

Results follow PyMongo 4: single writes raise ``WriteError`` /
``DuplicateKeyError`` / ``WriteConcernError`` from their one reply; bulk
writes return the bulk API result (``nInserted``, ``upserted``, ...) that
:class:`~pymongo.results.BulkWriteResult` and
:class:`~pymongo.errors.BulkWriteError` carry.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from bson.errors import InvalidDocument
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument
from pymongo.errors import BulkWriteError, DocumentTooLarge, InvalidOperation
from pymongo.results import BulkWriteResult

from . import objectids, precoded, wire
from .client_session import current_session, refuse_unacknowledged

if TYPE_CHECKING:
    from bson.codec_options import CodecOptions

    from .collection import Collection
    from .writes import _Concern

__all__ = ["Bulk", "INSERT", "UPDATE", "DELETE"]

INSERT, UPDATE, DELETE = 0, 1, 2
# (command name, document-sequence name) per statement kind.
_COMMANDS = (("insert", "documents"), ("update", "updates"), ("delete", "deletes"))
SEQUENCE_NAMES = tuple(name for _, name in _COMMANDS)
# Room left in a message for the command body and framing.
_MESSAGE_OVERHEAD = 16 * 1024
# A server's limits when its hello gives none (SocketInfo's defaults).
_DEFAULT_MAX_MESSAGE = 48 * 1000 * 1000
_DEFAULT_MAX_BATCH = 100000

# bson's C encoder without the Python wrapper's argument checks (we always
# pass valid CodecOptions); the public function without C (tests run both).
_encode = precoded.encode
# The kind of a bulk whose statements are all of one kind, by its mask of kinds (1 << kind).
_ONE_KIND = {1 << INSERT: INSERT, 1 << UPDATE: UPDATE, 1 << DELETE: DELETE}
_encoded = itemgetter(2)  # an op's BSON


# -- validation ----------------------------------------------------------------
def check_mapping(doc: Any, what: str = "document") -> None:
    """TypeError unless ``doc`` is a mapping or a RawBSONDocument (PyMongo's message)."""
    # type() first: a plain dict is the common case, and the ABC check costs
    # several times more on every filter and update.
    if type(doc) is not dict and not isinstance(doc, (Mapping, RawBSONDocument)):
        raise TypeError(
            "%s must be an instance of dict, bson.son.SON, bson.raw_bson.RawBSONDocument, "
            "or a type that inherits from collections.abc.Mapping, not %s" % (what, type(doc).__name__)
        )


def check_keys_legacy(doc: Mapping[str, Any]) -> None:
    """PyMongo 2's ``check_keys``: no key, at any depth, starts with '$' or contains '.'."""
    for key, value in doc.items():
        if isinstance(key, str):
            if key[:1] == "$":
                raise InvalidDocument("key %r must not start with '$'" % (key,))
            if "." in key:
                raise InvalidDocument("key %r must not contain '.'" % (key,))
        if isinstance(value, Mapping):
            check_keys_legacy(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, Mapping):
                    check_keys_legacy(item)


def check_update(update: Any) -> None:
    """An update is ``$`` operators or a non-empty pipeline (PyMongo's checks)."""
    if type(update) is not dict and isinstance(update, list):  # an aggregation pipeline update
        if not update:
            raise ValueError("update must not be empty")
        return
    check_mapping(update, "update")
    if not update:
        raise ValueError("update must not be empty")
    first = next(iter(update))
    if not (isinstance(first, str) and first.startswith("$")):
        raise ValueError("update only works with $ operators")


def check_replacement(replacement: Any) -> None:
    """A replacement is a document without ``$`` operators."""
    check_mapping(replacement, "replacement")
    if replacement:
        first = next(iter(replacement))
        if isinstance(first, str) and first.startswith("$"):
            raise ValueError("replacement can not include $ operators")


def check_size(data: bytes, max_size: int) -> bytes:
    """DocumentTooLarge (PyMongo's message) for a document over the server's limit."""
    if len(data) > max_size:
        raise DocumentTooLarge(
            "BSON document too large (%d bytes) - the connected server supports "
            "BSON document sizes up to %d bytes." % (len(data), max_size)
        )
    return data


# -- statements ----------------------------------------------------------------
def encode_insert(codec_options: CodecOptions[Any], doc: Any, max_size: int, legacy_check: bool = False) -> bytes:
    """Validate a document to store, give it an ``_id`` (on the caller's document too), and encode it.

    A top-level ``$``-prefixed field goes to the server, which has accepted
    it since 5.0 (as in PyMongo 4); PyMongo 2's ``check_keys`` refuses it.
    """
    if type(doc) is not dict:
        if isinstance(doc, RawBSONDocument):
            raw = doc.raw  # a read-only memoryview for big documents (pymongo >= 4.18)
            return check_size(raw if type(raw) is bytes else bytes(raw), max_size)
        check_mapping(doc)
    if legacy_check:
        check_keys_legacy(doc)
    if "_id" not in doc:
        doc["_id"] = objectids.new()
    return check_size(_encode(doc, False, precoded.encoding_options(codec_options)), max_size)


def update_statement(
    filter: Any,
    update: Any,
    multi: bool,
    upsert: bool | None,
    collation: Any = None,
    array_filters: Any = None,
    hint: Any = None,
    sort: Any = None,
) -> dict[str, Any]:
    """One ``updates`` entry, with only the options given (as PyMongo builds it)."""
    check_mapping(filter, "filter")
    stmt: dict[str, Any] = {"q": filter, "u": update, "multi": multi}
    if upsert is not None:
        stmt["upsert"] = upsert
    if collation is not None:
        stmt["collation"] = collation
    if array_filters is not None:
        if not isinstance(array_filters, list):
            raise TypeError("array_filters must be a list")
        stmt["arrayFilters"] = array_filters
    if hint is not None:
        stmt["hint"] = hint if isinstance(hint, str) else _index_spec(hint)
    if sort is not None:
        stmt["sort"] = sort
    return stmt


def delete_statement(filter: Any, limit: int, collation: Any = None, hint: Any = None) -> dict[str, Any]:
    """One ``deletes`` entry."""
    check_mapping(filter, "filter")
    stmt: dict[str, Any] = {"q": filter, "limit": limit}
    if collation is not None:
        stmt["collation"] = collation
    if hint is not None:
        stmt["hint"] = hint if isinstance(hint, str) else _index_spec(hint)
    return stmt


def _index_spec(hint: Any) -> dict[str, Any]:
    from .cursor import index_spec

    return index_spec(hint)


def _collation(value: Any) -> Any:
    """A ``pymongo.collation.Collation`` or a mapping, as the server's document."""
    if value is None:
        return None
    document = getattr(value, "document", None)
    if document is not None:
        return document
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError("collation must be a dict or an instance of pymongo.collation.Collation")


# -- commands ------------------------------------------------------------------
def write_command(
    coll: Collection,
    kind: int,
    concern: _Concern,
    ordered: bool,
    bypass: bool | None,
    comment: Any,
    let: Any,
) -> dict[str, Any]:
    """The write command's body, without its statements (they go in a document sequence)."""
    cmd: dict[str, Any] = {_COMMANDS[kind][0]: coll._name, "ordered": ordered}
    if concern.document:
        cmd["writeConcern"] = concern.document
    if bypass is not None or comment is not None or let is not None:
        if bypass is not None:
            cmd["bypassDocumentValidation"] = bypass
        if comment is not None:
            cmd["comment"] = comment
        if let is not None:
            cmd["let"] = let
    return cmd


def run_one(
    coll: Collection,
    kind: int,
    statement: bytes | dict[str, Any],
    concern: _Concern,
    bypass: bool | None = None,
    comment: Any = None,
    let: Any = None,
) -> dict[str, Any] | None:
    """Send one statement; the server's reply, or None for ``w=0`` (nobody reads one).

    An encoded statement (an insert's document) travels as a document
    sequence; a statement dict goes inline in the command, which costs one
    encoding instead of two (``update_one`` is on the hot path).  The
    command's size check covers either.
    """
    cmd = write_command(coll, kind, concern, True, bypass, comment, let)
    client = coll._client
    if statement.__class__ is dict:
        cmd[_COMMANDS[kind][1]] = [statement]
        if concern.acknowledged and bypass is None and comment is None and let is None:
            # No option: the collection's writer has the encoded body, if this is its write concern.
            writer = coll._writers.get(kind)
            if writer is None:
                writer = coll._writers[kind] = precoded.WriteOne(
                    coll._db_name, coll._name, *_COMMANDS[kind], coll._concern.document
                )
            # The collection's own concern object holds that very document; a
            # per-call concern (w=, write_concern=) holds a copy of its own.
            if writer.concern is concern.document:
                body = writer.body(statement, coll.codec_options)
                return client._command(coll._db_name, cmd, coll.codec_options, body=body)
        seq: tuple[bytes, ...] = ()
    else:
        seq = (wire.encode_section(_COMMANDS[kind][1], (statement,)),)  # type: ignore[arg-type]
    if not concern.acknowledged:
        client._send_unacknowledged(coll._db_name, cmd, coll.codec_options, seq)
        return None
    return client._command(coll._db_name, cmd, coll.codec_options, seq)


def one_statement(
    coll: Collection,
    kind: int,
    statement: bytes | dict[str, Any],
    concern: _Concern,
    bypass: bool | None = None,
    comment: Any = None,
    let: Any = None,
) -> tuple[dict[str, Any], tuple[bytes, ...]]:
    """The command and document sequences that send one statement, as :func:`run_one` builds them inline."""
    cmd = write_command(coll, kind, concern, True, bypass, comment, let)
    if statement.__class__ is dict:
        cmd[_COMMANDS[kind][1]] = [statement]
        return cmd, ()
    return cmd, (wire.encode_section(_COMMANDS[kind][1], (statement,)),)  # type: ignore[arg-type]


def _new_result() -> dict[str, Any]:
    return {
        "writeErrors": [],
        "writeConcernErrors": [],
        "nInserted": 0,
        "nUpserted": 0,
        "nMatched": 0,
        "nModified": 0,
        "nRemoved": 0,
        "upserted": [],
    }


class Bulk:
    """Statements for one collection, run in as few write commands as the server's limits allow.

    The methods ``add_insert``, ``add_update``, ``add_replace`` and
    ``add_delete`` are the ones :mod:`pymongo.operations` models call from
    their ``_add_to_bulk`` (PyMongo's own bulk protocol), so ``bulk_write``
    takes PyMongo's ``InsertOne``, ``UpdateOne``... as they are.

    Ordered: consecutive statements of one kind share commands, and the
    first write error stops the rest.  Unordered: inserts, then updates, then
    deletes, each kind in as few commands as fit; indexes in errors and
    ``upserted`` are always the caller's.
    """

    def __init__(
        self,
        collection: Collection,
        ordered: bool = True,
        bypass_document_validation: bool | None = None,
        comment: Any = None,
        let: Any = None,
        legacy_check: bool = False,
    ) -> None:
        if not isinstance(ordered, bool):
            raise TypeError("ordered must be True or False")
        if let is not None:
            check_mapping(let, "let")
        self.collection = collection
        self.ordered = ordered
        self.bypass = bypass_document_validation
        self.comment = comment
        self.let = let
        self.legacy_check = legacy_check
        self.max_size = collection._client._max_bson_size()
        self.codec_options = collection.codec_options
        # (kind, statement as sent, its BSON)
        self.ops: list[tuple[int, Any, bytes]] = []
        self.executed = False
        self._kinds = 0  # the kinds queued, as a mask of 1 << kind
        self._bytes = 0  # the BSON bytes queued

    # -- the _add_to_bulk protocol ---------------------------------------------
    def add_insert(self, document: Any) -> None:
        """Queue an insert (giving the document an ``_id``)."""
        data = encode_insert(self.codec_options, document, self.max_size, self.legacy_check)
        self.ops.append((INSERT, document, data))
        self._kinds |= 1 << INSERT
        self._bytes += len(data)

    def add_inserts(self, documents: Iterable[Any]) -> list[Any]:
        """Queue many inserts (``insert_many``'s loop, kept tight); returns their ``_id`` values.

        A plain dict takes :func:`encode_insert`'s steps inline (a call per
        document cost as much as encoding it); anything else goes through it.
        New ids share a clock reading (:func:`objectids.stamp`), read again
        every ``objectids.STAMP_SPAN`` ids of the process.
        """
        codec, max_size, legacy = self.codec_options, self.max_size, self.legacy_check
        opts = precoded.encoding_options(codec)
        ops = self.ops
        append = ops.append
        queued = len(ops)
        ids: list[Any] = []
        add_id = ids.append
        size = 0
        private = objectids.PRIVATE
        stamp, until = objectids.stamp()
        until += objectids.STAMP_SPAN
        count, mask, new_oid = objectids.counter(), objectids.COUNTER_MASK, object.__new__
        try:
            for doc in documents:
                if doc.__class__ is dict and not legacy:
                    if "_id" not in doc:
                        if private:
                            # objectids.make(), inline: a call per document costs as much again.
                            c = next(count)
                            if c > until:
                                stamp, until = objectids.stamp()
                                until += objectids.STAMP_SPAN
                                count = objectids.counter()
                                c = next(count)
                            oid: Any = new_oid(ObjectId)
                            oid._ObjectId__id = (stamp | c & mask).to_bytes(12, "big")
                            doc["_id"] = oid
                        else:
                            doc["_id"] = ObjectId()
                    data = _encode(doc, False, opts)
                    if len(data) > max_size:
                        check_size(data, max_size)
                    add_id(doc["_id"])
                else:
                    data = encode_insert(codec, doc, max_size, legacy)
                    add_id(doc.get("_id"))
                append((INSERT, doc, data))
                size += len(data)
        finally:  # what was queued is counted, even when a document failed
            if len(ops) > queued:
                self._kinds |= 1 << INSERT
            self._bytes += size
        return ids

    def _add(self, kind: int, stmt: dict[str, Any]) -> None:
        opts = precoded.encoding_options(self.codec_options)
        data = check_size(_encode(stmt, False, opts), self.max_size + _MESSAGE_OVERHEAD)
        self.ops.append((kind, stmt, data))
        self._kinds |= 1 << kind
        self._bytes += len(data)

    def add_update(
        self,
        selector: Any,
        update: Any,
        multi: bool,
        upsert: bool | None,
        collation: Any = None,
        array_filters: Any = None,
        hint: Any = None,
        sort: Any = None,
    ) -> None:
        """Queue an update with ``$`` operators or a pipeline."""
        check_update(update)
        stmt = update_statement(selector, update, multi, upsert, _collation(collation), array_filters, hint, sort)
        self._add(UPDATE, stmt)

    def add_replace(
        self,
        selector: Any,
        replacement: Any,
        upsert: bool | None,
        collation: Any = None,
        hint: Any = None,
        sort: Any = None,
    ) -> None:
        """Queue a whole-document replacement."""
        check_replacement(replacement)
        stmt = update_statement(selector, replacement, False, upsert, _collation(collation), None, hint, sort)
        del stmt["multi"]  # as PyMongo sends a replacement
        self._add(UPDATE, stmt)

    def add_delete(self, selector: Any, limit: int, collation: Any = None, hint: Any = None) -> None:
        """Queue a delete (``limit`` 1: the first match, 0: every match)."""
        self._add(DELETE, delete_statement(selector, limit, _collation(collation), hint))

    def add_request(self, request: Any) -> None:
        """Queue one :mod:`pymongo.operations` model (``InsertOne``, ``UpdateMany``...)."""
        try:
            add_to_bulk = request._add_to_bulk
        except AttributeError:
            raise TypeError("%r is not a valid request" % (request,)) from None
        add_to_bulk(self)

    # -- running ---------------------------------------------------------------
    def _runs(self) -> list[tuple[int, list[int]]]:
        """(kind, indexes into ops) in the order they are sent."""
        if self.ordered:
            runs: list[tuple[int, list[int]]] = []
            for i, (kind, _, _) in enumerate(self.ops):
                if not runs or runs[-1][0] != kind:
                    runs.append((kind, []))
                runs[-1][1].append(i)
            return runs
        by_kind: tuple[list[int], list[int], list[int]] = ([], [], [])
        for i, (kind, _, _) in enumerate(self.ops):
            by_kind[kind].append(i)
        return [(kind, idx) for kind, idx in enumerate(by_kind) if idx]

    def _batches(self, max_bytes: int, max_count: int) -> list[tuple[int, list[int]]]:
        """(kind, indexes into ops) per write command, cut at the server's limits."""
        kind = _ONE_KIND.get(self._kinds)
        if kind is not None and len(self.ops) <= max_count and self._bytes <= max_bytes:
            return [(kind, list(range(len(self.ops))))]  # one command holds them all: no walk
        batches: list[tuple[int, list[int]]] = []
        for kind, indexes in self._runs():
            start = 0
            while start < len(indexes):
                end, size = start, 0
                while end < len(indexes) and end - start < max_count:
                    size += len(self.ops[indexes[end]][2])
                    if size > max_bytes and end > start:
                        break
                    end += 1
                batches.append((kind, indexes[start:end]))
                start = end
        return batches

    def _sequence(self, indexes: list[int]) -> Iterator[bytes]:
        """The BSON of the statements at ``indexes``, in order."""
        ops = self.ops
        if len(indexes) == len(ops):  # every statement: indexes are 0, 1, 2...
            return map(_encoded, ops)
        return map(_encoded, map(ops.__getitem__, indexes))

    def _retryable(self, kind: int, indexes: list[int]) -> bool:
        """Whether a batch may be retried: inserts, or updates and deletes of one document each."""
        if kind == INSERT:
            return True
        if kind == UPDATE:
            return not any(self.ops[i][1].get("multi") for i in indexes)
        return all(self.ops[i][1].get("limit") == 1 for i in indexes)

    def execute(self, concern: _Concern) -> dict[str, Any]:
        """Send every statement; the merged bulk API result (never raises for write errors).

        ``w=0``: the commands go with ``moreToCome``, on one socket (the
        caller's pinned one inside a request, so they are applied before its
        next read).  An ordered ``w=0`` bulk of several commands has every
        command but the last acknowledged, as PyMongo does, so that the first
        error still stops the rest.  Acknowledged batches on a replica set
        with ``retryWrites`` go one by one through the client's retryable
        writes (a session's ``lsid`` and a ``txnNumber`` each; one retry),
        unless they hold a multi-document update or delete.
        """
        if self.executed:
            raise InvalidOperation("Bulk operations can only be executed once.")
        if not self.ops:
            raise InvalidOperation("No operations to execute")
        self.executed = True
        coll = self.collection
        client = coll._client
        total = _new_result()
        acknowledged = concern.acknowledged
        session = current_session() if client._session_hooks else None
        if not acknowledged and session is not None:
            refuse_unacknowledged(concern.document)
        if acknowledged and client._retry_writes and not client._topology.sessions_supported:
            # A fresh client does not know yet whether it talks to a replica set: select first (cheap
            # once known), so that its first bulk is retryable too.
            client._topology.select_server(None, None, True)
        if acknowledged and (session is not None or client._retry_writes and client._topology.sessions_supported):
            # A session's batches go through _command too, which adds its fields.
            self._execute_retryable(concern, total)
        else:
            self._execute_on_one_socket(concern, total)
        if total["writeErrors"]:
            total["writeErrors"].sort(key=lambda error: error["index"])
        return total

    def _execute_retryable(self, concern: _Concern, total: dict[str, Any]) -> None:
        """Each batch through the client's ``_command``, which retries it once when it may."""
        coll = self.collection
        client = coll._client
        # The limits from the primary's last handshake (checked by SocketInfo then): no socket held
        # across batches, so that each may be retried on another server.
        hello = client._topology.select_server(None, None, True).description or {}
        max_bytes = hello.get("maxMessageSizeBytes", _DEFAULT_MAX_MESSAGE) - _MESSAGE_OVERHEAD
        for kind, indexes in self._batches(max_bytes, hello.get("maxWriteBatchSize", _DEFAULT_MAX_BATCH)):
            cmd = write_command(coll, kind, concern, self.ordered, self.bypass, self.comment, self.let)
            seq = (wire.encode_section(_COMMANDS[kind][1], self._sequence(indexes)),)
            reply = client._command(
                coll._db_name, cmd, coll.codec_options, seq, retryable=self._retryable(kind, indexes)
            )
            self._merge(total, kind, indexes, reply)
            if self.ordered and reply.get("writeErrors"):
                break

    def _execute_on_one_socket(self, concern: _Concern, total: dict[str, Any]) -> None:
        """Every batch on one socket: ``w=0`` bulks, and every bulk where writes are not retried."""
        coll = self.collection
        client = coll._client
        acknowledged = concern.acknowledged
        listeners = client._listeners
        with client._socket() as sock:
            batches = self._batches(sock.max_message_size - _MESSAGE_OVERHEAD, sock.max_write_batch_size)
            for n, (kind, indexes) in enumerate(batches):
                last = n == len(batches) - 1
                ack_this = acknowledged or (self.ordered and not last)
                batch_concern = concern if acknowledged or not ack_this else _ack_concern()
                cmd = write_command(coll, kind, batch_concern, self.ordered, self.bypass, self.comment, self.let)
                seq = (wire.encode_section(_COMMANDS[kind][1], self._sequence(indexes)),)
                if not ack_this:
                    if listeners is None:
                        sock.send_command(coll._db_name, cmd, coll.codec_options, seq)
                    else:
                        listeners.send_command(sock, coll._db_name, cmd, coll.codec_options, seq)
                    continue
                if listeners is None:
                    reply = sock.command(coll._db_name, cmd, coll.codec_options, seq)
                else:
                    reply = listeners.command(sock, coll._db_name, cmd, coll.codec_options, seq)
                self._merge(total, kind, indexes, reply)
                if self.ordered and reply.get("writeErrors"):
                    break

    def _merge(self, total: dict[str, Any], kind: int, indexes: list[int], reply: Mapping[str, Any]) -> None:
        """Add one command's reply to the bulk result, with the caller's indexes."""
        n = reply.get("n", 0)
        if kind == INSERT:
            total["nInserted"] += n
        elif kind == DELETE:
            total["nRemoved"] += n
        else:
            upserted = reply.get("upserted") or []
            total["nUpserted"] += len(upserted)
            total["nMatched"] += n - len(upserted)
            total["nModified"] += reply.get("nModified", 0)
            for item in upserted:
                total["upserted"].append({"index": indexes[item["index"]], "_id": item["_id"]})
        for err in reply.get("writeErrors") or ():
            err = dict(err)
            err["index"] = indexes[err["index"]]
            err["op"] = self.ops[err["index"]][1]
            total["writeErrors"].append(err)
        wce = reply.get("writeConcernError")
        if wce:
            total["writeConcernErrors"].append(wce)


_ACK: list[Any] = []


def _ack_concern() -> _Concern:
    """An acknowledged, default write concern (for the inner commands of an ordered ``w=0`` bulk)."""
    if not _ACK:
        from pymongo.write_concern import WriteConcern

        from .writes import _Concern

        _ACK.append(_Concern(WriteConcern()))
    concern: _Concern = _ACK[0]
    return concern


def raise_bulk_errors(result: Mapping[str, Any]) -> None:
    """BulkWriteError carrying the partial result, when there were write or write-concern errors."""
    if result["writeErrors"] or result["writeConcernErrors"]:
        raise BulkWriteError(dict(result))


def bulk_of(
    coll: Collection,
    requests: Iterable[Any],
    ordered: bool,
    bypass_document_validation: bool | None,
    comment: Any,
    let: Any,
) -> Bulk:
    """A :class:`Bulk` of ``bulk_write``'s requests (TypeError / InvalidOperation for bad ones)."""
    if isinstance(requests, (Mapping, str, bytes)) or not isinstance(requests, Iterable):
        raise TypeError("requests must be a list")
    bulk = Bulk(coll, ordered, bypass_document_validation, comment, let)
    for request in requests:
        bulk.add_request(request)
    if not bulk.ops:
        raise InvalidOperation("No operations to execute")
    return bulk


def bulk_write(
    coll: Collection,
    requests: Iterable[Any],
    ordered: bool,
    bypass_document_validation: bool | None,
    comment: Any,
    let: Any,
    concern: _Concern,
) -> BulkWriteResult:
    """:meth:`Collection.bulk_write`'s body."""
    bulk = bulk_of(coll, requests, ordered, bypass_document_validation, comment, let)
    result = bulk.execute(concern)
    if concern.acknowledged:
        raise_bulk_errors(result)
    return BulkWriteResult(result, concern.acknowledged)
