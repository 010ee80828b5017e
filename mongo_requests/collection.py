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

from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from . import precoded
from .bulk import _collation, check_mapping, check_replacement, check_update
from .client_session import with_session
from .cursor import CommandCursor, Cursor, index_spec
from .cursor_options import _command_options
from .errors import InvalidName, check_command, raise_write_concern_error
from .indexes import IndexMethods
from .legacy_commands import LegacyCommands
from .legacy_options import LegacyOptions
from .read_options import check_read_options
from .writes import WriteMethods

if TYPE_CHECKING:
    from bson.codec_options import CodecOptions

    from .change_stream import ChangeStream
    from .database import Database

__all__ = ["Collection", "ReturnDocument"]


class _Unsupported(AttributeError, NotImplementedError):
    """A PyMongo attribute that mongo_requests does not support (both an AttributeError and a NotImplementedError)."""


_UNSUPPORTED = {
    "create_search_index": "Atlas Search indexes are not supported",
    "create_search_indexes": "Atlas Search indexes are not supported",
    "drop_search_index": "Atlas Search indexes are not supported",
    "list_search_indexes": "Atlas Search indexes are not supported",
    "update_search_index": "Atlas Search indexes are not supported",
    "parallel_scan": "parallelCollectionScan was removed in MongoDB 4.2; use find()",
}


class ReturnDocument:
    """Which version ``find_one_and_*`` returns (PyMongo's values)."""

    BEFORE = False
    AFTER = True


class Collection(WriteMethods, IndexMethods, LegacyCommands, LegacyOptions):
    """A collection in a :class:`~mongo_requests.database.Database`."""

    def __init__(
        self,
        database: Database,
        name: str,
        write_concern: WriteConcern | None = None,
        codec_options: CodecOptions[Any] | None = None,
        read_preference: Any = None,
        read_concern: ReadConcern | None = None,
    ) -> None:
        check_read_options(read_preference, read_concern)
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
        # find_one's encoded command around its filter, and what sends it, made on first use (primary reads only).
        self._find_one: precoded.FindOne | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """A collection is not callable: the name was taken for a method that does not exist (as PyMongo says)."""
        owner, _, method = self._name.rpartition(".")
        raise TypeError(
            "'Collection' object is not callable. If you meant to call the '%s' method on a '%s' object it is "
            "failing because no such method exists." % (method, "Collection" if owner else "Database")
        )

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
        if name in _UNSUPPORTED:
            raise _Unsupported("Collection.%s is not supported by mongo_requests: %s" % (name, _UNSUPPORTED[name]))
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

    def next(self) -> Any:
        """Not an iterator (as in PyMongo)."""
        raise TypeError("'Collection' object is not iterable")

    def __bool__(self) -> bool:
        raise NotImplementedError(
            "Collection objects do not implement truth value testing or bool(). "
            "Please compare with None instead: collection is not None"
        )

    @property
    def read_concern(self) -> ReadConcern:
        """The server's default read concern (the only one supported)."""
        return ReadConcern()

    def with_options(
        self,
        codec_options: CodecOptions[Any] | None = None,
        read_preference: Any = None,
        write_concern: WriteConcern | None = None,
        read_concern: ReadConcern | None = None,
    ) -> Collection:
        """A copy of this collection with other options (PyMongo's signature; ``read_preference``: a
        :mod:`pymongo.read_preferences` mode)."""
        return Collection(
            self._database,
            self._name,
            write_concern or self.write_concern,
            codec_options or self.codec_options,
            read_preference or self.read_preference,
            read_concern,
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
        # A dict first: isinstance against the Mapping ABC runs Python code (abc.__instancecheck__).
        if filter is not None and filter.__class__ is not dict and not isinstance(filter, Mapping):
            filter = {"_id": filter}
        if args or kwargs:
            # As PyMongo does: any limit given (by keyword, or positionally
            # after projection and skip) gives way to a single batch of one.
            for doc in Cursor(self, filter, *args, **kwargs).limit(-1):
                return doc
            return None
        # The hot path: one find with singleBatch, no Cursor object.
        finder = self._find_one
        if finder is not None:
            return finder.run(filter)
        if self._read_pref is None:
            finder = self._find_one = precoded.FindOne(self._db_name, self._name, self._client, self.codec_options)
            return finder.run(filter)
        cmd = {"find": self._name, "filter": filter or {}, "limit": 1, "singleBatch": True}
        reply = self._client._command(self._db_name, cmd, self.codec_options, read_preference=self._read_pref)
        batch = reply["cursor"]["firstBatch"]
        return batch[0] if batch else None

    def find_raw_batches(self, *args: Any, **kwargs: Any) -> Any:
        """Like :meth:`find`, but each ``next()`` returns one batch as raw BSON bytes (:func:`bson.decode_all`)."""
        from .raw_batches import RawBatchCursor

        return RawBatchCursor(self, *args, **kwargs)

    def aggregate_raw_batches(self, pipeline: Sequence[Mapping[str, Any]], **kwargs: Any) -> Any:
        """Like :meth:`aggregate`, but each ``next()`` returns one batch as raw BSON bytes."""
        from .raw_batches import RawBatchCommandCursor, raw_collection

        return raw_collection(self).aggregate(pipeline, _cursor_class=RawBatchCommandCursor, **kwargs)

    @with_session
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
        _command_options(cmd, kwargs)
        reply = self._client._command(self._db_name, cmd, self.codec_options, read_preference=self._read_pref)
        batch = reply["cursor"]["firstBatch"]
        return int(batch[0]["n"]) if batch else 0

    @with_session
    def estimated_document_count(self, **kwargs: Any) -> int:
        """Fast count from collection metadata."""
        cmd: dict[str, Any] = {"count": self._name}
        _command_options(cmd, kwargs)
        return int(self._client._command(self._db_name, cmd, self.codec_options, read_preference=self._read_pref)["n"])

    @with_session
    def distinct(self, key: str, filter: Mapping[str, Any] | None = None, **kwargs: Any) -> list[Any]:
        """Distinct values of ``key``."""
        if not isinstance(key, str):
            raise TypeError("key must be an instance of str")
        cmd: dict[str, Any] = {"distinct": self._name, "key": key}
        if filter is not None:  # an empty filter is sent too, as PyMongo sends it
            check_mapping(filter, "filter")
            cmd["query"] = filter
        _command_options(cmd, kwargs)
        reply = self._client._command(self._db_name, cmd, self.codec_options, read_preference=self._read_pref)
        values: list[Any] = reply["values"]
        return values

    @with_session
    def aggregate(
        self,
        pipeline: Sequence[Mapping[str, Any]],
        batch_size: int | None = None,
        let: Mapping[str, Any] | None = None,
        comment: Any = None,
        _cursor_class: type[CommandCursor] = CommandCursor,
        **kwargs: Any,
    ) -> CommandCursor:
        """Run an aggregation pipeline; returns a cursor.

        PyMongo's options: ``let``, ``comment``, and as keywords ``batchSize``
        (or ``batch_size``), ``maxTimeMS``, ``allowDiskUse``, ``collation``,
        ``hint``; other keywords go into the command.  Only what is given is sent.
        """
        # Typed as PyMongo types it (a list of dicts of anything is not a
        # list[Mapping[str, Any]]: lists are invariant), checked as it checks.
        if not isinstance(pipeline, list):
            raise TypeError("pipeline must be a list")
        if "batchSize" in kwargs:
            batch_size = kwargs.pop("batchSize")
        if batch_size is not None and (
            not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 0
        ):
            raise TypeError("batchSize must be a non-negative integer")
        cmd: dict[str, Any] = {"aggregate": self._name, "pipeline": pipeline}
        if let is not None:
            check_mapping(let, "let")
            cmd["let"] = let
        if comment is not None:
            cmd["comment"] = comment
        _command_options(cmd, kwargs)
        cmd["cursor"] = {"batchSize": batch_size} if batch_size is not None else {}
        # $out and $merge write: those pipelines go to the primary.
        writes = any("$out" in stage or "$merge" in stage for stage in pipeline)
        where: list[tuple[str, int]] = []
        reply = self._client._command(
            self._db_name,
            cmd,
            self.codec_options,
            read_preference=None if writes else self._read_pref,
            on_server=where.append,
        )
        return _cursor_class(self, reply, batch_size or 0, where[-1] if where else None)

    def watch(self, pipeline: Sequence[Mapping[str, Any]] | None = None, **kwargs: Any) -> ChangeStream:
        """A :class:`~mongo_requests.change_stream.ChangeStream` of this collection (PyMongo's ``watch`` keywords)."""
        from .change_stream import open_change_stream

        return open_change_stream(self, self._db_name, self._name, pipeline, kwargs)

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

    @with_session
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
            filter,
            update=update,
            fields=projection,
            sort=sort,
            upsert=upsert,
            new=bool(return_document),
            arrayFilters=array_filters,
            hint=hint,
            let=let,
            comment=comment,
            **kwargs,
        )

    @with_session
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
            filter,
            update=replacement,
            fields=projection,
            sort=sort,
            upsert=upsert,
            new=bool(return_document),
            hint=hint,
            let=let,
            comment=comment,
            **kwargs,
        )

    @with_session
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
            filter, remove=True, new=False, fields=projection, sort=sort, hint=hint, let=let, comment=comment, **kwargs
        )

    # -- housekeeping -------------------------------------------------------
    @with_session
    def rename(self, new_name: str, **kwargs: Any) -> dict[str, Any]:
        """Rename this collection (``dropTarget=True`` replaces an existing one)."""
        if not isinstance(new_name, str):
            raise TypeError("new_name must be an instance of str")
        if not new_name or ".." in new_name:
            raise InvalidName("collection names cannot be empty")
        if new_name[0] == "." or new_name[-1] == ".":
            raise InvalidName("collection names must not start or end with '.'")
        if "$" in new_name and not new_name.startswith("oplog.$main"):
            raise InvalidName("collection names must not contain '$'")
        cmd: dict[str, Any] = {"renameCollection": self.full_name, "to": "%s.%s" % (self._db_name, new_name)}
        cmd.update(kwargs)
        return self._client._command("admin", cmd, self.codec_options)

    @with_session
    def options(self, comment: Any = None) -> dict[str, Any]:
        """The options the collection was created with (``capped``, ``size``...); {} when it does not exist."""
        cmd: dict[str, Any] = {"listCollections": 1, "filter": {"name": self._name}, "cursor": {}}
        if comment is not None:
            cmd["comment"] = comment
        reply = self._client._command(self._db_name, cmd, self.codec_options)
        for info in reply["cursor"]["firstBatch"]:
            options = dict(info.get("options", {}))
            options.pop("create", None)
            return options
        return {}

    @with_session
    def drop(self) -> None:
        """Drop the collection; a collection that does not exist is not an error."""
        reply = self._client._command(self._db_name, {"drop": self._name}, check=False)
        if reply.get("ok") != 1 and reply.get("code") != 26:
            check_command(reply)
