"""Cursors: ``find`` results, and command cursors from ``aggregate`` and friends.

A cursor fetches its first batch lazily, on the first ``next()``, then calls
``getMore`` as it runs dry.  Inside a request every batch comes over the
caller's pinned socket, so a cursor sees the caller's own ``w=0`` writes.

The server-side cursor is killed on :meth:`close`, and is left alone when it
is exhausted (the server has already closed it).  A cursor dropped while still
open is killed too: its ``weakref.finalize`` queues the id with the client,
which sends ``killCursors`` with its next operation (a finalizer may run
inside the garbage collector, where network I/O and locks are off limits).
"""

from __future__ import annotations

import collections
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from bson.raw_bson import RawBSONDocument

from . import raw_arrays
from .client_session import _CURRENT, ClientSession, bound, check_session
from .cursor_options import ASCENDING, DESCENDING, CursorOptions, _collation_doc, check_count, index_spec

if TYPE_CHECKING:
    from bson.codec_options import CodecOptions

    from .client import MongoClient
    from .collection import Collection

__all__ = ["Cursor", "CommandCursor", "ASCENDING", "DESCENDING", "index_spec"]

_C = TypeVar("_C", bound="_CursorBase")
_new = object.__new__


def _finalize(client: MongoClient, ns: str, state: list[Any]) -> None:
    """weakref.finalize callback: queue the kill of a cursor still open on its server."""
    if state[0]:
        client._queue_kill(ns, state[0], state[1])


class _CursorBase:
    """Batches, getMore, close: what every cursor shares."""

    _raw_batches = False  # True for raw batch cursors (mongo_requests.raw_batches)

    def __init__(self, collection: Collection) -> None:
        self._collection = collection
        self._client = collection.database.client
        self._codec: CodecOptions[Any] = collection.codec_options
        # Raw documents (RawBSONDocument): the replies leave their batch
        # undecoded (raw_arrays.reply_codec), and _buffer keeps each
        # document's bytes for __next__ to make it.  With command listeners,
        # replies decode as before, so the events carry the same documents;
        # _buffer takes either form.
        self._raw = False
        self._reply_codec = self._codec
        if self._codec.document_class is not dict and raw_arrays.is_raw(self._codec):
            self._raw = True
            if self._client._listeners is None and raw_arrays.SPLIT_REPLIES:
                self._reply_codec = raw_arrays.reply_codec(self._codec, self._raw_batches)
        self._batch: collections.deque[Any] = collections.deque()
        # [server cursor id, address of the server that holds it]; shared with the finalizer.
        self._state: list[Any] = [0, None]
        # A read's non-primary read preference (None: primary), from the collection.
        self._read_pref: Any = collection._read_pref
        self._ns = collection.full_name
        self._started: bool = False
        self._killed = False
        self._batch_size: int = 0
        self._limit: int = 0
        self._returned = 0  # documents handed out, counted only under a limit (the only reader)
        self._finalizer: weakref.finalize[[MongoClient, str, list[Any]], _CursorBase] | None = None
        self._comment: Any = None
        self._retrieved = 0
        # Tailable cursors: an empty getMore ends this iteration, not the cursor.
        self._tailable = False
        self._max_await_time_ms: int | None = None
        # The session of the call that made the cursor (``session=``): its
        # getMores and killCursors carry the same lsid, as the server requires.
        self._session: ClientSession | None = _CURRENT.get()

    @property
    def collection(self) -> Collection:
        """The collection this cursor reads."""
        return self._collection

    @property
    def cursor_id(self) -> int | None:
        """The server's id for this cursor (0 when the server has closed it)."""
        return self._state[0] if self._started else None

    @property
    def address(self) -> tuple[str, int] | None:
        """``(host, port)`` of the server that holds the cursor (None before the first batch)."""
        address: tuple[str, int] | None = self._state[1]
        if address is None and self._started:
            # A command cursor made from a primary's reply (listIndexes...): the primary's.
            return self._client.address
        return address

    def _at(self, address: tuple[str, int]) -> None:
        """on_server callback: every batch of a cursor comes from the server that ran its first."""
        self._state[1] = address

    @property
    def alive(self) -> bool:
        """True while more documents may come."""
        return not self._killed and (not self._started or bool(self._batch) or bool(self._state[0]))

    @property
    def retrieved(self) -> int:
        """How many documents the server has sent so far."""
        return self._retrieved

    def try_next(self) -> Any:
        """The next document, or None when none is available now (PyMongo's try_next)."""
        try:
            return self.__next__()
        except StopIteration:
            return None

    def _start_batch(self, reply: Mapping[str, Any]) -> None:
        cursor = reply["cursor"]
        self._buffer(cursor.get("firstBatch", ()))
        self._ns = cursor.get("ns", self._ns)
        self._set_id(cursor.get("id", 0))

    def _buffer(self, batch: Any) -> None:
        """Buffer a reply's ``firstBatch`` or ``nextBatch``."""
        if self._raw:
            batch = raw_arrays.buffered(batch, self._codec)
        self._retrieved += len(batch)
        self._batch.extend(batch)

    def _set_id(self, cursor_id: int) -> None:
        self._state[0] = cursor_id
        if cursor_id and self._finalizer is None:
            self._finalizer = weakref.finalize(self, _finalize, self._client, self._ns, self._state)
        elif not cursor_id and self._finalizer is not None:
            self._finalizer.detach()  # nothing left to kill

    def _get_more(self) -> None:
        db, _, coll = self._ns.partition(".")
        cmd: dict[str, Any] = {"getMore": self._state[0], "collection": coll}
        size = self._batch_size
        if self._limit:
            left = self._limit - self._returned
            size = min(size, left) if size else left
        if size:
            cmd["batchSize"] = size
        if self._comment is not None:  # servers since 4.4 show it on getMore too; PyMongo 4 sends it
            cmd["comment"] = self._comment
        if self._max_await_time_ms is not None:
            cmd["maxTimeMS"] = self._max_await_time_ms
        cursor = self._client._command(db, cmd, self._reply_codec, address=self._state[1])["cursor"]
        self._buffer(cursor.get("nextBatch", ()))
        self._set_id(cursor.get("id", 0))

    def _refresh(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def session(self) -> ClientSession | None:
        """The explicit session (``session=``) this cursor was created with, else None, as in PyMongo."""
        return self._session

    def __iter__(self: _C) -> _C:
        return self

    def __next__(self) -> Any:
        batch = self._batch
        if batch and not self._limit:
            # Per document, the common case: a buffered document and no limit
            # to enforce (a non-empty buffer means the query has started).
            # Two attribute reads instead of eight: a find of 10,000
            # documents spent about a fifth of its time here.  _returned
            # is not counted: only a limit reads it.
            doc = batch.popleft()
            if doc.__class__ is not bytes:
                return doc
            # A RawBSONDocument buffered as its bytes (raw_arrays.buffered),
            # made as it is handed out so that it dies young: raw_arrays.make,
            # inline, as a call per document costs as much again.
            made: Any = _new(RawBSONDocument)
            made._RawBSONDocument__raw = doc
            made._RawBSONDocument__inflated_doc = None
            made._RawBSONDocument__codec_options = self._codec
            return made
        return self._next_slow()

    def _next_slow(self) -> Any:
        """``__next__`` when the buffer is empty or a limit applies: start, fetch, enforce the limit."""
        session = self._session
        if session is not None and _CURRENT.get() is not session:
            # Only this path does I/O, so only it binds the cursor's session.
            check_session(session, self._client)
            with bound(session):
                return self._next_slow()
        if not self._started:
            if self._killed:
                # Closed before the first next(): yield nothing, as PyMongo
                # does.  Running the query now would open a server cursor
                # that the loop below never reads past the first batch of.
                raise StopIteration
            self._started = True
            self._refresh()
        while not self._batch:
            if not self._state[0] or self._killed:
                raise StopIteration
            self._get_more()
            if self._tailable and not self._batch:
                raise StopIteration  # nothing new yet; the cursor stays alive
        if self._limit and self._returned >= self._limit:
            self.close()
            raise StopIteration
        return self._take()

    def _take(self) -> Any:
        """The next buffered document, closing the cursor when it reaches the limit."""
        self._returned += 1
        doc = self._batch.popleft()
        if self._limit and self._returned >= self._limit and self._state[0]:
            self.close()
        if doc.__class__ is bytes:
            return raw_arrays.make(doc, self._codec)
        return doc

    next = __next__  # PyMongo 2

    def close(self) -> None:
        """Kill the server cursor (if still open) and drop buffered documents."""
        self._killed = True
        self._batch.clear()
        cursor_id = self._state[0]
        self._state[0] = 0
        if self._finalizer is not None:
            self._finalizer.detach()
        if cursor_id:
            try:
                with bound(self._session if self._session is not None and not self._session.has_ended else None):
                    self._client._kill_cursor_now(self._ns, cursor_id, self._state[1])
            except Exception:  # the server may be gone; its cursor is then gone too
                pass

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def to_list(self, length: int | None = None) -> list[Any]:
        """Read the remaining documents (at most ``length``) into a list."""
        out = []
        for doc in self:
            out.append(doc)
            if length is not None and len(out) >= length:
                break
        return out


class CommandCursor(_CursorBase):
    """A cursor over the reply of a command (``aggregate``, ``listIndexes``)."""

    def __init__(
        self,
        collection: Collection,
        reply: Mapping[str, Any],
        batch_size: int = 0,
        address: tuple[str, int] | None = None,
    ) -> None:
        super().__init__(collection)
        self._state[1] = address
        self._batch_size = batch_size
        self._started = True
        self._start_batch(reply)

    def _refresh(self) -> None:
        pass

    def batch_size(self, batch_size: int) -> CommandCursor:
        """Ask for batches of ``batch_size`` documents on the next getMores."""
        check_count(batch_size, "batch_size")
        self._batch_size = batch_size
        return self


class Cursor(_CursorBase, CursorOptions):
    """The result of :meth:`Collection.find`: chain modifiers, then iterate.

    Modifiers (``sort``, ``skip``, ``limit``, ``batch_size`` ...) return the
    cursor itself and must come before iteration starts.
    """

    def __init__(
        self,
        collection: Collection,
        filter: Mapping[str, Any] | None = None,
        projection: Any = None,
        skip: int = 0,
        limit: int = 0,
        sort: Any = None,
        batch_size: int = 0,
        hint: Any = None,
        max_time_ms: int | None = None,
        comment: Any = None,
        no_cursor_timeout: bool = False,
        allow_disk_use: bool | None = None,
        fields: Any = None,
        collation: Any = None,
        let: Mapping[str, Any] | None = None,
        return_key: bool | None = None,
        show_record_id: bool | None = None,
        min: Any = None,
        max: Any = None,
        allow_partial_results: bool = False,
        spec: Mapping[str, Any] | None = None,
        timeout: bool = True,
        cursor_type: int = 0,
        max_await_time_ms: int | None = None,
        session: ClientSession | None = None,
    ) -> None:
        super().__init__(collection)
        if session is not None:
            self._session = check_session(session, self._client)
        if spec is not None:  # PyMongo 2
            if filter is not None:
                raise TypeError("give filter or spec (PyMongo 2's name), not both")
            filter = spec
        if filter is not None and not isinstance(filter, Mapping):
            raise TypeError("filter must be a mapping, not %s" % (type(filter).__name__,))
        if let is not None and not isinstance(let, Mapping):
            raise TypeError("let must be a mapping")
        if projection is None:
            projection = fields  # PyMongo 2 called it fields
        if projection is not None and not isinstance(projection, Mapping):
            projection = {name: 1 for name in projection}  # a list of field names
        self._filter = filter or {}
        self._projection = projection
        self._skip = 0
        self._sort: dict[str, Any] | None = None
        self._hint = hint
        self._max_time_ms = max_time_ms
        self._comment = comment
        self._no_cursor_timeout = no_cursor_timeout
        self._allow_disk_use = allow_disk_use
        self._single_batch = False
        self._collation = _collation_doc(collation)
        self._let = let
        self._return_key = return_key
        self._show_record_id = show_record_id
        self._min = None if min is None else index_spec(min)
        self._max = None if max is None else index_spec(max)
        self._allow_partial_results = allow_partial_results
        if not timeout:  # PyMongo 2's timeout=False
            self._no_cursor_timeout = True
        if cursor_type not in (0, 2, 34):  # pymongo.CursorType NON_TAILABLE, TAILABLE, TAILABLE_AWAIT
            raise ValueError("cursor_type %r is not supported (EXHAUST cursors are not implemented)" % (cursor_type,))
        self._tailable = bool(cursor_type & 2)
        self._await_data = bool(cursor_type & 32)
        self._max_await_time_ms = max_await_time_ms if self._await_data else None
        self.skip(skip)
        self.limit(limit)
        self.batch_size(batch_size)
        if sort is not None:
            self.sort(sort)

    def __getitem__(self, index: int | slice) -> Any:
        """``cursor[i]``: the i-th document (a query of its own); ``cursor[a:b]``: this cursor, skipped and limited."""
        self._check_unstarted()
        if isinstance(index, slice):
            if index.step is not None:
                raise IndexError("Cursor instances do not support slice steps")
            start = index.start or 0
            if start < 0 or (index.stop is not None and index.stop < 0):
                raise IndexError("Cursor instances do not support negative indices")
            # As PyMongo: the slice's start replaces the skip, and an empty slice yields nothing.
            self._skip = start
            if index.stop is not None:
                limit = index.stop - start
                if limit < 0:
                    raise IndexError("stop index must be greater than start index for slice %r" % (index,))
                if limit == 0:
                    self._killed = True
                self._limit = limit
            return self
        if isinstance(index, int) and not isinstance(index, bool):
            if index < 0:
                raise IndexError("Cursor instances do not support negative indices")
            clone = self.clone()
            clone.skip(self._skip + index)
            clone.limit(-1)
            for doc in clone:
                return doc
            raise IndexError("no such item for Cursor instance")
        raise TypeError("index %r cannot be applied to Cursor instances" % (index,))

    def _find_command(self) -> dict[str, Any]:
        cmd: dict[str, Any] = {"find": self._collection.name, "filter": self._filter}
        if self._projection is not None:
            cmd["projection"] = self._projection
        if self._sort:
            cmd["sort"] = self._sort
        if self._skip:
            cmd["skip"] = self._skip
        if self._limit:
            cmd["limit"] = self._limit
        if self._single_batch:
            cmd["singleBatch"] = True
        if self._batch_size:
            cmd["batchSize"] = min(self._batch_size, self._limit) if self._limit else self._batch_size
        if self._hint is not None:
            cmd["hint"] = self._hint if isinstance(self._hint, str) else index_spec(self._hint)
        if self._max_time_ms is not None:
            cmd["maxTimeMS"] = self._max_time_ms
        if self._comment is not None:
            cmd["comment"] = self._comment
        if self._no_cursor_timeout:
            cmd["noCursorTimeout"] = True
        if self._allow_disk_use is not None:
            cmd["allowDiskUse"] = self._allow_disk_use
        if self._collation is not None:
            cmd["collation"] = self._collation
        if self._let is not None:
            cmd["let"] = self._let
        if self._return_key is not None:
            cmd["returnKey"] = self._return_key
        if self._show_record_id is not None:
            cmd["showRecordId"] = self._show_record_id
        if self._min is not None:
            cmd["min"] = self._min
        if self._max is not None:
            cmd["max"] = self._max
        if self._allow_partial_results:
            cmd["allowPartialResults"] = True
        if self._tailable:
            cmd["tailable"] = True
            if self._await_data:
                cmd["awaitData"] = True
        return cmd

    def _refresh(self) -> None:
        reply = self._client._command(
            self._collection.database.name,
            self._find_command(),
            self._reply_codec,
            read_preference=self._read_pref,
            on_server=self._at,
        )
        self._start_batch(reply)
        if self._single_batch and self._state[0]:
            # One batch was asked for: kill what the server kept open, but
            # keep the documents we already have.
            docs = list(self._batch)
            self.close()
            self._batch.extend(docs)
            self._killed = False

    def count(self, with_limit_and_skip: bool = False) -> int:
        """PyMongo 2's ``find().count()``: the number of matching documents."""
        cmd: dict[str, Any] = {"count": self._collection.name, "query": self._filter}
        if with_limit_and_skip:
            if self._limit:
                cmd["limit"] = self._limit
            if self._skip:
                cmd["skip"] = self._skip
        if self._hint is not None:
            cmd["hint"] = self._hint if isinstance(self._hint, str) else index_spec(self._hint)
        if self._max_time_ms is not None:
            cmd["maxTimeMS"] = self._max_time_ms
        with bound(self._session):
            reply = self._client._command(self._collection.database.name, cmd, read_preference=self._read_pref)
        return int(reply["n"])

    def distinct(self, key: str) -> list[Any]:
        """Distinct values of ``key`` among the matching documents."""
        return self._collection.distinct(key, self._filter, session=self._session)

    def rewind(self) -> Cursor:
        """Start again from the beginning (a new query on the next ``next()``)."""
        self.close()
        self._started = self._killed = False
        self._returned = 0
        self._finalizer = None
        return self

    def clone(self) -> Cursor:
        """An unstarted copy with the same options, of the same class (a raw-batch cursor's clone is one too)."""
        # Cursor.__init__ on a bare instance of our class: a subclass's own
        # __init__ would wrap the collection again (RawBatchCursor's raw_collection).
        other = Cursor.__new__(type(self))
        Cursor.__init__(
            other, self._collection, self._filter, self._projection, self._skip, 0, self._sort, self._batch_size
        )
        other._limit, other._single_batch = self._limit, self._single_batch
        other._hint, other._max_time_ms, other._comment = self._hint, self._max_time_ms, self._comment
        other._no_cursor_timeout, other._allow_disk_use = self._no_cursor_timeout, self._allow_disk_use
        other._collation, other._let, other._min, other._max = self._collation, self._let, self._min, self._max
        other._return_key, other._show_record_id = self._return_key, self._show_record_id
        other._allow_partial_results = self._allow_partial_results
        other._tailable, other._await_data = self._tailable, self._await_data
        other._max_await_time_ms = self._max_await_time_ms
        other._session = self._session
        return other

    def explain(self) -> dict[str, Any]:
        """The server's query plan for this find."""
        return self._collection.database.command({"explain": self._find_command()})

    def __repr__(self) -> str:
        return "<Cursor %s %r>" % (self._ns, self._filter)
