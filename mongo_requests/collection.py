"""A collection: CRUD in today's spelling and in PyMongo 2's.

Modern calls return :mod:`pymongo.results` classes; the legacy calls
(``insert``, ``update``, ``remove``, ``save``, ``find_and_modify``,
``count``) return what PyMongo 2 returned.  Every write takes ``w=``,
``safe=`` (PyMongo 2's ``safe=False`` is ``w=0``) or ``write_concern=``.

Validation happens before anything is sent, so bad input never leaves a
half-written message on a socket: the caller gets a clear error, and the
socket (pinned or not) stays usable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import bson
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument
from pymongo.results import DeleteResult, InsertManyResult, InsertOneResult, UpdateResult
from pymongo.write_concern import WriteConcern

from . import wire
from .cursor import CommandCursor, Cursor, index_spec
from .errors import (
    BulkWriteError,
    ConfigurationError,
    DocumentTooLarge,
    DuplicateKeyError,
    InvalidDocument,
    InvalidName,
    InvalidOperation,
    OperationFailure,
    check_command,
    check_write,
    raise_write_concern_error,
)

if TYPE_CHECKING:
    from bson.codec_options import CodecOptions

    from .database import Database

__all__ = ["Collection", "ReturnDocument"]

# bson's C encoder without the Python wrapper's argument checks (we always
# pass valid CodecOptions); fall back to the public function without C.
_dict_to_bson = getattr(bson, "_dict_to_bson", None) or (
    lambda doc, check_keys, opts: bson.encode(doc, check_keys, opts)
)
_UNACK = WriteConcern(w=0)


class _Concern:
    """A write concern's command document and acknowledged flag, computed once.

    ``WriteConcern.document`` is a property that copies a dict on every
    access; a write reads it up to three times, on the hot path.
    """

    __slots__ = ("document", "acknowledged")

    def __init__(self, wc: WriteConcern) -> None:
        self.document = wc.document
        self.acknowledged = wc.acknowledged


_UNACK_CONCERN = _Concern(_UNACK)


class ReturnDocument:
    """Which version ``find_one_and_*`` returns (PyMongo's values)."""

    BEFORE = False
    AFTER = True


def _check_mapping(doc: Any, what: str = "document") -> None:
    # type() first: a plain dict is the common case, and the ABC check costs
    # several times more on every filter and update.
    if type(doc) is not dict and not isinstance(doc, (Mapping, RawBSONDocument)):
        raise TypeError(
            "%s must be an instance of dict, bson.son.SON, bson.raw_bson.RawBSONDocument, "
            "or a type that inherits from collections.abc.Mapping, not %s" % (what, type(doc).__name__)
        )


def _check_keys_legacy(doc: Mapping[str, Any]) -> None:
    """PyMongo 2's ``check_keys``: no key, at any depth, starts with '$' or contains '.'."""
    for key, value in doc.items():
        if isinstance(key, str):
            if key[:1] == "$":
                raise InvalidDocument("key %r must not start with '$'" % (key,))
            if "." in key:
                raise InvalidDocument("key %r must not contain '.'" % (key,))
        if isinstance(value, Mapping):
            _check_keys_legacy(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, Mapping):
                    _check_keys_legacy(item)


def _check_update(update: Any) -> None:
    if type(update) is not dict and isinstance(update, list):  # an aggregation pipeline update
        if not update:
            raise ValueError("update pipeline must not be empty")
        return
    _check_mapping(update, "update")
    if not update:
        raise ValueError("update must not be empty")
    first = next(iter(update))
    if not (isinstance(first, str) and first.startswith("$")):
        raise ValueError("update only works with $ operators (use replace_one to replace a document)")


def _check_replacement(replacement: Any) -> None:
    _check_mapping(replacement, "replacement")
    if replacement:
        first = next(iter(replacement))
        if isinstance(first, str) and first.startswith("$"):
            raise ValueError("replacement can not include $ operators")


def _legacy_update_result(reply: dict[str, Any]) -> dict[str, Any]:
    """Shape an update reply the way PyMongo's UpdateResult and PyMongo 2 expect."""
    upserted = reply.get("upserted")
    if upserted:
        reply["upserted"] = upserted[0]["_id"]
        reply["updatedExisting"] = False
    else:
        reply["updatedExisting"] = bool(reply.get("n"))
    reply.setdefault("err", None)
    return reply


def _delete_result(reply: dict[str, Any] | None, acknowledged: bool) -> DeleteResult:
    """A DeleteResult; for ``w=0``, whose reply nobody reads, the ``raw_result`` PyMongo 4 gives."""
    return DeleteResult(reply if reply is not None else {"ok": 1}, acknowledged)


def _raise_legacy(result: Mapping[str, Any]) -> None:
    """PyMongo 2 raised OperationFailure (not BulkWriteError) for batch inserts."""
    errors = result.get("writeErrors")
    if errors:
        err = errors[0]
        cls = DuplicateKeyError if err.get("code") in (11000, 11001, 12582) else OperationFailure
        raise cls(err.get("errmsg", "write error"), err.get("code"), err)
    if result.get("writeConcernErrors"):
        raise_write_concern_error(result["writeConcernErrors"][0])


class Collection:
    """A collection in a :class:`~mongo_requests.database.Database`."""

    def __init__(
        self,
        database: Database,
        name: str,
        write_concern: WriteConcern | None = None,
        codec_options: CodecOptions[Any] | None = None,
        read_preference: Any = None,
    ) -> None:
        if not isinstance(name, str):
            raise TypeError("name must be an instance of str, not %s" % (type(name).__name__,))
        if not name or name.startswith(".") or name.endswith(".") or ".." in name:
            raise InvalidName("collection names must not be empty, start or end with '.', or contain '..'")
        if "$" in name and not name.startswith("oplog.$main") and not name.startswith("$cmd"):
            raise InvalidName("collection names must not contain '$': %r" % (name,))
        if "\x00" in name:
            raise InvalidName("collection names must not contain the null character")
        self._database = database
        self._client = database.client
        self._db_name = database.name
        self._name = name
        self.codec_options: CodecOptions[Any] = codec_options or database.codec_options
        self._set_write_concern(write_concern or database.write_concern)
        #: The :mod:`pymongo.read_preferences` mode of this collection's reads (the database's by default).
        self.read_preference: Any = read_preference or database.read_preference
        # What reads pass down: None for primary, so the hot path skips read-preference work.
        self._read_pref: Any = self.read_preference if self.read_preference.mode else None

    def _set_write_concern(self, wc: WriteConcern) -> None:
        self.write_concern = wc
        # Precomputed for the hot path: most writes use the default.
        self._concern = _Concern(wc)

    # -- naming -------------------------------------------------------------
    @property
    def name(self) -> str:
        """The collection's name."""
        return self._name

    @property
    def full_name(self) -> str:
        """``database.collection``."""
        return "%s.%s" % (self._db_name, self._name)

    @property
    def database(self) -> Database:
        """The database this collection belongs to."""
        return self._database

    def __getattr__(self, name: str) -> Collection:
        if name.startswith("_"):
            raise AttributeError("Collection has no attribute %r" % (name,))
        # Cached like MongoClient.__getattr__ caches databases (see there).
        coll = self.__dict__[name] = self._database.get_collection("%s.%s" % (self._name, name))
        return coll

    def __getitem__(self, name: str) -> Collection:
        # Not an alias of __getattr__: item access must work for any name,
        # ``coll['_archive']`` included, as in PyMongo.
        return self._database.get_collection("%s.%s" % (self._name, name))

    def __iter__(self) -> Any:
        # Without this, __getitem__ would make ``list(coll)`` walk the
        # endless sub-collections coll.0, coll.1, ...
        raise TypeError("'Collection' object is not iterable")

    def with_options(
        self,
        write_concern: WriteConcern | None = None,
        codec_options: CodecOptions[Any] | None = None,
        read_preference: Any = None,
    ) -> Collection:
        """A copy of this collection with other options (``read_preference``: a pymongo.read_preferences mode)."""
        return Collection(
            self._database,
            self._name,
            write_concern or self.write_concern,
            codec_options or self.codec_options,
            read_preference or self.read_preference,
        )

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Collection) and self._database == other._database and self._name == other._name

    def __hash__(self) -> int:
        return hash((self._database, self._name))

    def __repr__(self) -> str:
        return "Collection(%r, %r)" % (self._database, self._name)

    # -- write concern ------------------------------------------------------
    def _resolve_wc(
        self, w: Any = None, safe: bool | None = None, write_concern: WriteConcern | None = None, **kw: Any
    ) -> _Concern:
        """The write concern for one call, from ``write_concern``, ``w``, ``safe``, ``j``...

        PyMongo 2 rules: ``safe=False`` means ``w=0``; ``safe=True``, or any of
        ``j``, ``wtimeout``, ``fsync``, means acknowledged.
        """
        if write_concern is not None:
            if not isinstance(write_concern, WriteConcern):
                raise TypeError("write_concern must be a pymongo.write_concern.WriteConcern")
            return _Concern(write_concern)
        unknown = set(kw) - {"j", "wtimeout", "fsync", "wtimeoutMS"}
        if unknown:
            raise ConfigurationError("unknown write option(s): %s" % ", ".join(sorted(unknown)))
        extra = {k: v for k, v in kw.items() if v is not None}
        if "wtimeoutMS" in extra:
            extra["wtimeout"] = extra.pop("wtimeoutMS")
        if w is None and safe is None and not extra:
            return self._concern
        if w is None:
            if safe is False and not extra:
                return _UNACK_CONCERN
            w = self.write_concern.document.get("w", 1)
            if w == 0:
                w = 1
        elif safe is False and w != 0:
            raise ConfigurationError("safe=False contradicts w=%r" % (w,))
        try:
            return _Concern(WriteConcern(w=w, **extra))
        except Exception as exc:
            raise ConfigurationError("invalid write concern: %s" % (exc,)) from exc

    def _encode_for_insert(self, doc: Any, max_size: int, legacy_check: bool = False) -> bytes:
        """Validate a document to store, give it an ``_id``, and BSON-encode it.

        Plain dicts, by far the common case, skip the abstract-base-class
        checks; with ``insert_many`` this runs once per document.
        """
        if type(doc) is not dict:
            if isinstance(doc, RawBSONDocument):
                raw = doc.raw  # a read-only memoryview for big documents (pymongo >= 4.18)
                return self._check_size(raw if type(raw) is bytes else bytes(raw), max_size)
            _check_mapping(doc)
        if legacy_check:
            _check_keys_legacy(doc)
        else:
            for key in doc:
                if key.__class__ is str and key[:1] == "$":
                    raise InvalidDocument("key %r must not start with '$' in a stored document" % (key,))
        if "_id" not in doc:
            doc["_id"] = ObjectId()  # PyMongo sets it on the caller's document too
        return self._check_size(_dict_to_bson(doc, False, self.codec_options), max_size)

    @staticmethod
    def _check_size(data: bytes, max_size: int) -> bytes:
        if len(data) > max_size:
            raise DocumentTooLarge(
                "BSON document too large (%d bytes) - the connected server supports "
                "BSON document sizes up to %d bytes." % (len(data), max_size)
            )
        return data

    # -- inserts ------------------------------------------------------------
    def insert_one(self, document: Any, bypass_document_validation: bool = False, **wc: Any) -> InsertOneResult:
        """Insert one document; returns :class:`~pymongo.results.InsertOneResult`."""
        concern = self._resolve_wc(**wc) if wc else self._concern
        data = self._encode_for_insert(document, self._client._max_bson_size())
        cmd: dict[str, Any] = {"insert": self._name, "ordered": True}
        if concern.document:
            cmd["writeConcern"] = concern.document
        if bypass_document_validation:
            cmd["bypassDocumentValidation"] = True
        seq = (wire.encode_section("documents", (data,)),)
        _id = document["_id"] if not isinstance(document, RawBSONDocument) else document.get("_id")
        if not concern.acknowledged:
            self._client._send_unacknowledged(self._db_name, cmd, self.codec_options, seq)
            return InsertOneResult(_id, False)
        check_write(self._client._command(self._db_name, cmd, self.codec_options, seq))
        return InsertOneResult(_id, True)

    def insert_many(
        self, documents: Iterable[Any], ordered: bool = True, bypass_document_validation: bool = False, **wc: Any
    ) -> InsertManyResult:
        """Insert documents in as few messages as the server's limits allow.

        Batches are cut at ``maxWriteBatchSize`` documents or
        ``maxMessageSizeBytes`` bytes.  An error raises
        :class:`~pymongo.errors.BulkWriteError` whose ``details`` say what was
        inserted; with ``ordered=True`` the batches after the failing one are
        not sent.
        """
        if isinstance(documents, (Mapping, RawBSONDocument)) or not isinstance(documents, Iterable):
            raise TypeError("documents must be a non-empty list")
        concern = self._resolve_wc(**wc) if wc else self._concern
        max_size = self._client._max_bson_size()
        docs = list(documents)
        if not docs:
            raise TypeError("documents must be a non-empty list")
        encode = self._encode_for_insert
        encoded = [encode(d, max_size) for d in docs]
        ids = [d.get("_id") for d in docs]
        result = self._write_batches("insert", "documents", encoded, concern, ordered, bypass_document_validation)
        if result.get("writeErrors") or result.get("writeConcernErrors"):
            raise BulkWriteError(result)
        return InsertManyResult(ids, concern.acknowledged)

    def _write_batches(
        self,
        command: str,
        field: str,
        statements: list[bytes],
        concern: _Concern,
        ordered: bool,
        bypass: bool = False,
    ) -> dict[str, Any]:
        """Send encoded statements in batches on one socket; merge the replies."""
        total: dict[str, Any] = {
            "writeErrors": [],
            "writeConcernErrors": [],
            "nInserted": 0,
            "nUpserted": 0,
            "nMatched": 0,
            "nModified": 0,
            "nRemoved": 0,
            "upserted": [],
        }
        with self._client._socket() as sock:
            # Room for the statements once the command body and framing are in.
            max_bytes = sock.max_message_size - 16 * 1024
            max_count = sock.max_write_batch_size
            start = 0
            while start < len(statements):
                end, size = start, 0
                while end < len(statements) and end - start < max_count:
                    size += len(statements[end])
                    if size > max_bytes and end > start:
                        break
                    end += 1
                cmd: dict[str, Any] = {command: self._name, "ordered": ordered}
                if concern.document:
                    cmd["writeConcern"] = concern.document
                if bypass:
                    cmd["bypassDocumentValidation"] = True
                seq = (wire.encode_section(field, statements[start:end]),)
                if not concern.acknowledged:
                    sock.send_command(self._db_name, cmd, self.codec_options, seq)
                    start = end
                    continue
                reply = sock.command(self._db_name, cmd, self.codec_options, seq)
                n = reply.get("n", 0)
                if command == "insert":
                    total["nInserted"] += n
                elif command == "delete":
                    total["nRemoved"] += n
                else:
                    upserted = reply.get("upserted", [])
                    total["nUpserted"] += len(upserted)
                    total["nMatched"] += n - len(upserted)
                    total["nModified"] += reply.get("nModified", 0)
                    for item in upserted:
                        total["upserted"].append({"index": item["index"] + start, "_id": item["_id"]})
                for err in reply.get("writeErrors", ()):
                    err = dict(err)
                    err["index"] += start
                    err.setdefault("op", None)
                    total["writeErrors"].append(err)
                if reply.get("writeConcernError"):
                    total["writeConcernErrors"].append(reply["writeConcernError"])
                if ordered and reply.get("writeErrors"):
                    break
                start = end
        return total

    # -- updates ------------------------------------------------------------
    def _update(
        self,
        filter: Any,
        update: Any,
        upsert: bool,
        multi: bool,
        concern: _Concern,
        **options: Any,
    ) -> dict[str, Any] | None:
        """One update statement; returns the (reshaped) reply, None when unacknowledged."""
        _check_mapping(filter, "filter")
        stmt: dict[str, Any] = {"q": filter, "u": update, "upsert": bool(upsert), "multi": multi}
        for key in ("hint", "collation", "arrayFilters"):
            if options.get(key) is not None:
                stmt[key] = options[key]
        cmd: dict[str, Any] = {"update": self._name, "updates": [stmt], "ordered": True}
        if concern.document:
            cmd["writeConcern"] = concern.document
        if options.get("bypass_document_validation"):
            cmd["bypassDocumentValidation"] = True
        if not concern.acknowledged:
            self._client._send_unacknowledged(self._db_name, cmd, self.codec_options)
            return None
        reply = self._client._command(self._db_name, cmd, self.codec_options)
        check_write(reply)
        return _legacy_update_result(reply)

    def update_one(self, filter: Mapping[str, Any], update: Any, upsert: bool = False, **kwargs: Any) -> UpdateResult:
        """Update the first matching document with ``$`` operators (or a pipeline)."""
        _check_update(update)
        options, wc = self._split_options(kwargs)
        concern = self._resolve_wc(**wc) if wc else self._concern
        reply = self._update(filter, update, upsert, False, concern, **options)
        return UpdateResult(reply, concern.acknowledged)

    def update_many(self, filter: Mapping[str, Any], update: Any, upsert: bool = False, **kwargs: Any) -> UpdateResult:
        """Update every matching document."""
        _check_update(update)
        options, wc = self._split_options(kwargs)
        concern = self._resolve_wc(**wc) if wc else self._concern
        reply = self._update(filter, update, upsert, True, concern, **options)
        return UpdateResult(reply, concern.acknowledged)

    def replace_one(
        self, filter: Mapping[str, Any], replacement: Mapping[str, Any], upsert: bool = False, **kwargs: Any
    ) -> UpdateResult:
        """Replace the first matching document."""
        _check_replacement(replacement)
        options, wc = self._split_options(kwargs)
        concern = self._resolve_wc(**wc) if wc else self._concern
        reply = self._update(filter, replacement, upsert, False, concern, **options)
        return UpdateResult(reply, concern.acknowledged)

    @staticmethod
    def _split_options(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Separate statement options from write-concern arguments."""
        options: dict[str, Any] = {}
        wc: dict[str, Any] = {}
        for key, value in kwargs.items():
            if key in ("hint", "collation", "bypass_document_validation"):
                options[key] = value
            elif key == "array_filters":
                options["arrayFilters"] = value
            else:
                wc[key] = value
        return options, wc

    # -- deletes ------------------------------------------------------------
    def _delete(self, filter: Any, limit: int, concern: _Concern, hint: Any = None) -> dict[str, Any] | None:
        _check_mapping(filter, "filter")
        stmt: dict[str, Any] = {"q": filter, "limit": limit}
        if hint is not None:
            stmt["hint"] = hint
        cmd: dict[str, Any] = {"delete": self._name, "deletes": [stmt], "ordered": True}
        if concern.document:
            cmd["writeConcern"] = concern.document
        if not concern.acknowledged:
            self._client._send_unacknowledged(self._db_name, cmd, self.codec_options)
            return None
        reply = self._client._command(self._db_name, cmd, self.codec_options)
        check_write(reply)
        reply.setdefault("err", None)
        return reply

    def delete_one(self, filter: Mapping[str, Any], hint: Any = None, **wc: Any) -> DeleteResult:
        """Delete the first matching document."""
        concern = self._resolve_wc(**wc) if wc else self._concern
        return _delete_result(self._delete(filter, 1, concern, hint), concern.acknowledged)

    def delete_many(self, filter: Mapping[str, Any], hint: Any = None, **wc: Any) -> DeleteResult:
        """Delete every matching document."""
        concern = self._resolve_wc(**wc) if wc else self._concern
        return _delete_result(self._delete(filter, 0, concern, hint), concern.acknowledged)

    # -- reads --------------------------------------------------------------
    def find(self, *args: Any, **kwargs: Any) -> Cursor:
        """Query the collection; returns a :class:`~mongo_requests.cursor.Cursor`.

        ``find(filter=None, projection=None, skip=0, limit=0, sort=None,
        batch_size=0, ...)``; PyMongo 2's ``fields=`` works as ``projection``.
        """
        return Cursor(self, *args, **kwargs)

    def find_one(self, filter: Any = None, *args: Any, **kwargs: Any) -> Any:
        """The first matching document, or None.  A non-mapping filter is an ``_id``."""
        if filter is not None and not isinstance(filter, Mapping):
            filter = {"_id": filter}
        if args or kwargs:
            # As PyMongo does: any limit given (by keyword, or positionally
            # after projection and skip) gives way to a single batch of one.
            for doc in Cursor(self, filter, *args, **kwargs).limit(-1):
                return doc
            return None
        # The hot path: one find with singleBatch, no Cursor object.
        cmd = {"find": self._name, "filter": filter or {}, "limit": 1, "singleBatch": True}
        if self._read_pref is None:
            reply = self._client._command(self._db_name, cmd, self.codec_options)
        else:
            reply = self._client._command(self._db_name, cmd, self.codec_options, read_preference=self._read_pref)
        batch = reply["cursor"]["firstBatch"]
        return batch[0] if batch else None

    def count_documents(self, filter: Mapping[str, Any], **kwargs: Any) -> int:
        """Exact count of matching documents (``skip``, ``limit``, ``hint``, ``maxTimeMS``)."""
        _check_mapping(filter, "filter")
        pipeline: list[dict[str, Any]] = [{"$match": filter}]
        if kwargs.get("skip"):
            pipeline.append({"$skip": kwargs.pop("skip")})
        if kwargs.get("limit"):
            pipeline.append({"$limit": kwargs.pop("limit")})
        kwargs.pop("skip", None)
        kwargs.pop("limit", None)
        pipeline.append({"$group": {"_id": 1, "n": {"$sum": 1}}})
        cmd: dict[str, Any] = {"aggregate": self._name, "pipeline": pipeline, "cursor": {}}
        cmd.update(kwargs)
        reply = self._client._command(self._db_name, cmd, self.codec_options, read_preference=self._read_pref)
        batch = reply["cursor"]["firstBatch"]
        return int(batch[0]["n"]) if batch else 0

    def estimated_document_count(self, **kwargs: Any) -> int:
        """Fast count from collection metadata."""
        cmd: dict[str, Any] = {"count": self._name}
        cmd.update(kwargs)
        return int(self._client._command(self._db_name, cmd, self.codec_options, read_preference=self._read_pref)["n"])

    def distinct(self, key: str, filter: Mapping[str, Any] | None = None, **kwargs: Any) -> list[Any]:
        """Distinct values of ``key``."""
        if not isinstance(key, str):
            raise TypeError("key must be an instance of str")
        cmd: dict[str, Any] = {"distinct": self._name, "key": key}
        if filter:
            cmd["query"] = filter
        cmd.update(kwargs)
        reply = self._client._command(self._db_name, cmd, self.codec_options, read_preference=self._read_pref)
        values: list[Any] = reply["values"]
        return values

    def aggregate(self, pipeline: Sequence[Mapping[str, Any]], batch_size: int = 0, **kwargs: Any) -> CommandCursor:
        """Run an aggregation pipeline; returns a cursor."""
        # Typed as PyMongo types it (a list of dicts of anything is not a
        # list[Mapping[str, Any]]: lists are invariant), checked as it checks.
        if not isinstance(pipeline, list):
            raise TypeError("pipeline must be a list")
        cursor_opts = {"batchSize": batch_size} if batch_size else {}
        cmd: dict[str, Any] = {"aggregate": self._name, "pipeline": pipeline, "cursor": cursor_opts}
        cmd.update(kwargs)
        # $out and $merge write: those pipelines go to the primary.
        writes = any("$out" in stage or "$merge" in stage for stage in pipeline)
        where: list[tuple[str, int]] = []
        reply = self._client._command(
            self._db_name, cmd, self.codec_options, read_preference=None if writes else self._read_pref,
            on_server=where.append,
        )
        return CommandCursor(self, reply, batch_size, where[-1] if where else None)

    # -- find-and-modify ----------------------------------------------------
    def _find_and_modify(self, query: Any, full_response: bool = False, **fields: Any) -> Any:
        _check_mapping(query, "filter")
        cmd: dict[str, Any] = {"findAndModify": self._name, "query": query}
        cmd.update({k: v for k, v in fields.items() if v is not None})
        if "sort" in cmd:
            cmd["sort"] = index_spec(cmd["sort"])
        if "fields" in cmd and not isinstance(cmd["fields"], Mapping):
            cmd["fields"] = {name: 1 for name in cmd["fields"]}
        if self._concern.document and self._concern.acknowledged:
            cmd["writeConcern"] = self._concern.document
        reply = self._client._command(self._db_name, cmd, self.codec_options)
        wce = reply.get("writeConcernError")
        if wce:
            raise_write_concern_error(wce)
        return reply if full_response else reply.get("value")

    def find_one_and_update(
        self,
        filter: Mapping[str, Any],
        update: Any,
        projection: Any = None,
        sort: Any = None,
        upsert: bool = False,
        return_document: bool = ReturnDocument.BEFORE,
    ) -> Any:
        """Update one document and return it (before or after the update)."""
        _check_update(update)
        return self._find_and_modify(
            filter, update=update, fields=projection, sort=sort, upsert=upsert, new=bool(return_document)
        )

    def find_one_and_replace(
        self,
        filter: Mapping[str, Any],
        replacement: Mapping[str, Any],
        projection: Any = None,
        sort: Any = None,
        upsert: bool = False,
        return_document: bool = ReturnDocument.BEFORE,
    ) -> Any:
        """Replace one document and return it (before or after)."""
        _check_replacement(replacement)
        return self._find_and_modify(
            filter, update=replacement, fields=projection, sort=sort, upsert=upsert, new=bool(return_document)
        )

    def find_one_and_delete(self, filter: Mapping[str, Any], projection: Any = None, sort: Any = None) -> Any:
        """Delete one document and return it."""
        return self._find_and_modify(filter, remove=True, fields=projection, sort=sort)

    # -- indexes and housekeeping -------------------------------------------
    def create_index(self, keys: Any, **kwargs: Any) -> str:
        """Create an index; returns its name (``ensure_index`` is the PyMongo 2 name)."""
        spec = index_spec(keys)
        name = kwargs.pop("name", None) or "_".join("%s_%s" % (k, v) for k, v in spec.items())
        index: dict[str, Any] = {"key": spec, "name": name}
        index.update(kwargs)
        self._client._command(self._db_name, {"createIndexes": self._name, "indexes": [index]})
        return name

    ensure_index = create_index

    def drop_index(self, index_or_name: Any) -> None:
        """Drop one index, by name or by key spec."""
        name = index_or_name
        if not isinstance(name, str):
            name = "_".join("%s_%s" % (k, v) for k, v in index_spec(index_or_name).items())
        self._client._command(self._db_name, {"dropIndexes": self._name, "index": name})

    def drop_indexes(self) -> None:
        """Drop every index but ``_id``'s."""
        self._client._command(self._db_name, {"dropIndexes": self._name, "index": "*"})

    def list_indexes(self) -> CommandCursor:
        """A cursor over the index documents."""
        try:
            reply = self._client._command(self._db_name, {"listIndexes": self._name, "cursor": {}})
        except OperationFailure as exc:
            if exc.code != 26:  # NamespaceNotFound: no collection, no indexes
                raise
            reply = {"cursor": {"id": 0, "firstBatch": [], "ns": self.full_name}}
        return CommandCursor(self, reply)

    def index_information(self) -> dict[str, Any]:
        """``{name: {'key': [(field, direction), ...], ...}}`` as in PyMongo."""
        info = {}
        for index in self.list_indexes():
            index = dict(index)
            name = index.pop("name")
            index["key"] = list(index["key"].items())
            index.pop("v", None)
            info[name] = index
        return info

    def drop(self) -> None:
        """Drop the collection; a collection that does not exist is not an error."""
        reply = self._client._command(self._db_name, {"drop": self._name}, check=False)
        if reply.get("ok") != 1 and reply.get("code") != 26:
            check_command(reply)

    # -- PyMongo 2 ------------------------------------------------------------
    def insert(
        self,
        doc_or_docs: Any,
        manipulate: bool = True,
        safe: bool | None = None,
        check_keys: bool = True,
        continue_on_error: bool = False,
        **kwargs: Any,
    ) -> Any:
        """PyMongo 2's insert: one document or a list; returns the ``_id`` (or the list of them)."""
        concern = self._resolve_wc(safe=safe, **kwargs)
        single = isinstance(doc_or_docs, (Mapping, RawBSONDocument))
        docs = [doc_or_docs] if single else list(doc_or_docs) if isinstance(doc_or_docs, Iterable) else None
        if not docs:
            if docs is None:
                _check_mapping(doc_or_docs)
            raise InvalidOperation("cannot do an empty bulk insert")
        max_size = self._client._max_bson_size()
        encoded = [self._encode_for_insert(d, max_size, legacy_check=check_keys) for d in docs]
        result = self._write_batches("insert", "documents", encoded, concern, not continue_on_error)
        _raise_legacy(result)
        ids = [d.get("_id") for d in docs]
        return ids[0] if single else ids

    def update(
        self,
        spec: Mapping[str, Any],
        document: Mapping[str, Any],
        upsert: bool = False,
        manipulate: bool = False,
        safe: bool | None = None,
        multi: bool = False,
        check_keys: bool = True,
        **kwargs: Any,
    ) -> dict[str, Any] | None:
        """PyMongo 2's update: ``$`` operators, or a whole replacement document.

        Returns the server's answer (``n``, ``updatedExisting``, ``upserted``)
        for acknowledged writes, None for ``safe=False`` / ``w=0``.
        """
        _check_mapping(spec, "spec")
        _check_mapping(document, "document")
        concern = self._resolve_wc(safe=safe, **kwargs)
        first = next(iter(document), None)
        if not (isinstance(first, str) and first.startswith("$")):
            if multi:
                raise InvalidOperation("multi=True only works with $ operators")
            if check_keys:
                _check_keys_legacy(document)
        return self._update(spec, document, upsert, bool(multi), concern)

    def remove(
        self, spec_or_id: Any = None, safe: bool | None = None, multi: bool = True, **kwargs: Any
    ) -> dict[str, Any] | None:
        """PyMongo 2's remove: every match (or the first, with ``multi=False``)."""
        if spec_or_id is None:
            spec_or_id = {}
        elif not isinstance(spec_or_id, Mapping):
            spec_or_id = {"_id": spec_or_id}
        concern = self._resolve_wc(safe=safe, **kwargs)
        return self._delete(spec_or_id, 0 if multi else 1, concern)

    def save(
        self, to_save: Any, manipulate: bool = True, safe: bool | None = None, check_keys: bool = True, **kwargs: Any
    ) -> Any:
        """PyMongo 2's save: insert a new document, or replace the one with its ``_id``."""
        _check_mapping(to_save, "to_save")
        if "_id" not in to_save:
            return self.insert(to_save, manipulate, safe, check_keys, **kwargs)
        concern = self._resolve_wc(safe=safe, **kwargs)
        if check_keys:
            _check_keys_legacy(to_save)
        self._update({"_id": to_save["_id"]}, to_save, True, False, concern)
        return to_save["_id"]

    def find_and_modify(
        self,
        query: Mapping[str, Any] | None = None,
        update: Any = None,
        upsert: bool = False,
        sort: Any = None,
        full_response: bool = False,
        manipulate: bool = False,
        **kwargs: Any,
    ) -> Any:
        """PyMongo 2's find_and_modify (``remove=``, ``new=``, ``fields=`` as keywords)."""
        if update is None and not kwargs.get("remove"):
            raise ValueError("Must either update or remove")
        if update is not None and kwargs.get("remove"):
            raise ValueError("Can't do both update and remove")
        return self._find_and_modify(
            query or {}, full_response, update=update, upsert=upsert or None, sort=sort, **kwargs
        )

    def count(self, filter: Mapping[str, Any] | None = None, **kwargs: Any) -> int:
        """PyMongo 2's count (exact, via the ``count`` command)."""
        return Cursor(self, filter, **kwargs).count()
