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

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pymongo.write_concern import WriteConcern

from .bulk import _collation, check_mapping, check_replacement, check_update
from .cursor import CommandCursor, Cursor, index_spec
from .errors import InvalidName, OperationFailure, check_command, raise_write_concern_error
from .writes import WriteMethods

if TYPE_CHECKING:
    from bson.codec_options import CodecOptions

    from .database import Database

__all__ = ["Collection", "ReturnDocument"]


class ReturnDocument:
    """Which version ``find_one_and_*`` returns (PyMongo's values)."""

    BEFORE = False
    AFTER = True


class Collection(WriteMethods):
    """A collection in a :class:`~mongo_requests.database.Database`."""

    def __init__(
        self,
        database: Database,
        name: str,
        write_concern: WriteConcern | None = None,
        codec_options: CodecOptions[Any] | None = None,
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
        self, write_concern: WriteConcern | None = None, codec_options: CodecOptions[Any] | None = None
    ) -> Collection:
        """A copy of this collection with other options."""
        return Collection(
            self._database, self._name, write_concern or self.write_concern, codec_options or self.codec_options
        )

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Collection) and self._database == other._database and self._name == other._name

    def __hash__(self) -> int:
        return hash((self._database, self._name))

    def __repr__(self) -> str:
        return "Collection(%r, %r)" % (self._database, self._name)

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
        batch = self._client._command(self._db_name, cmd, self.codec_options)["cursor"]["firstBatch"]
        return batch[0] if batch else None

    def count_documents(self, filter: Mapping[str, Any], **kwargs: Any) -> int:
        """Exact count of matching documents (``skip``, ``limit``, ``hint``, ``maxTimeMS``)."""
        check_mapping(filter, "filter")
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
        batch = self._client._command(self._db_name, cmd, self.codec_options)["cursor"]["firstBatch"]
        return int(batch[0]["n"]) if batch else 0

    def estimated_document_count(self, **kwargs: Any) -> int:
        """Fast count from collection metadata."""
        cmd: dict[str, Any] = {"count": self._name}
        cmd.update(kwargs)
        return int(self._client._command(self._db_name, cmd, self.codec_options)["n"])

    def distinct(self, key: str, filter: Mapping[str, Any] | None = None, **kwargs: Any) -> list[Any]:
        """Distinct values of ``key``."""
        if not isinstance(key, str):
            raise TypeError("key must be an instance of str")
        cmd: dict[str, Any] = {"distinct": self._name, "key": key}
        if filter:
            cmd["query"] = filter
        cmd.update(kwargs)
        values: list[Any] = self._client._command(self._db_name, cmd, self.codec_options)["values"]
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
        reply = self._client._command(self._db_name, cmd, self.codec_options)
        return CommandCursor(self, reply, batch_size)

    # -- find-and-modify ----------------------------------------------------
    _WC_ARGS = frozenset(["w", "safe", "write_concern", "j", "wtimeout", "wtimeoutMS", "fsync", "session"])

    def _find_and_modify(self, query: Any, full_response: bool = False, **fields: Any) -> Any:
        """One findAndModify, with the collection's write concern or the call's (``w=``, ``write_concern=``...).

        As in PyMongo 4, a ``w=0`` write concern sends it unacknowledged
        (``moreToCome``) and returns None: the server sends no document back.
        Other keywords go into the command as they are (PyMongo's
        ``**kwargs``), ``collation`` and the PyMongo 2 ``fields`` converted.
        """
        check_mapping(query, "filter")
        wc = {k: fields.pop(k) for k in list(fields) if k in self._WC_ARGS}
        concern = self._resolve_wc(**wc) if wc else self._concern
        cmd: dict[str, Any] = {"findAndModify": self._name, "query": query}
        cmd.update({k: v for k, v in fields.items() if v is not None})
        if "sort" in cmd:
            cmd["sort"] = index_spec(cmd["sort"])
        if "fields" in cmd and not isinstance(cmd["fields"], Mapping):
            cmd["fields"] = {name: 1 for name in cmd["fields"]}
        if "hint" in cmd and not isinstance(cmd["hint"], str):
            cmd["hint"] = index_spec(cmd["hint"])
        if "collation" in cmd:
            cmd["collation"] = _collation(cmd["collation"])
        if "let" in cmd:
            check_mapping(cmd["let"], "let")
        if "arrayFilters" in cmd and not isinstance(cmd["arrayFilters"], list):
            raise TypeError("array_filters must be a list")
        if concern.document:
            cmd["writeConcern"] = concern.document
        if not concern.acknowledged:
            self._client._send_unacknowledged(self._db_name, cmd, self.codec_options)
            return None
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
        array_filters: list[Mapping[str, Any]] | None = None,
        hint: Any = None,
        let: Mapping[str, Any] | None = None,
        comment: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Update one document and return it (before or after the update).

        PyMongo 4's options, sent only when given; other keywords (``maxTimeMS``,
        ``collation``, ``bypassDocumentValidation``...) go into the command, and
        ``w=``/``write_concern=`` set this call's write concern.
        """
        check_update(update)
        return self._find_and_modify(
            filter, update=update, fields=projection, sort=sort, upsert=upsert, new=bool(return_document),
            arrayFilters=array_filters, hint=hint, let=let, comment=comment, **kwargs
        )

    def find_one_and_replace(
        self,
        filter: Mapping[str, Any],
        replacement: Mapping[str, Any],
        projection: Any = None,
        sort: Any = None,
        upsert: bool = False,
        return_document: bool = ReturnDocument.BEFORE,
        hint: Any = None,
        let: Mapping[str, Any] | None = None,
        comment: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Replace one document and return it (before or after)."""
        check_replacement(replacement)
        return self._find_and_modify(
            filter, update=replacement, fields=projection, sort=sort, upsert=upsert, new=bool(return_document),
            hint=hint, let=let, comment=comment, **kwargs
        )

    def find_one_and_delete(
        self,
        filter: Mapping[str, Any],
        projection: Any = None,
        sort: Any = None,
        hint: Any = None,
        let: Mapping[str, Any] | None = None,
        comment: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Delete one document and return it."""
        return self._find_and_modify(
            filter, remove=True, fields=projection, sort=sort, hint=hint, let=let, comment=comment, **kwargs
        )

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
