"""``find_raw_batches`` and ``aggregate_raw_batches``: each batch as the server's BSON bytes.

Each ``next()`` returns one batch as the concatenated BSON documents the
server sent (decode with :func:`bson.decode_all`), as PyMongo's raw batch
cursors do.  The documents are decoded no further than
:class:`~bson.raw_bson.RawBSONDocument`, which keeps each one's bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bson.raw_bson import RawBSONDocument

from .cursor import CommandCursor, Cursor

if TYPE_CHECKING:
    from .collection import Collection

__all__ = ["RawBatchCursor", "RawBatchCommandCursor", "raw_collection"]


def raw_collection(collection: Collection) -> Collection:
    """The same collection, decoding to RawBSONDocument."""
    return collection.with_options(codec_options=collection.codec_options.with_options(document_class=RawBSONDocument))


def _take_batch(cursor: Any) -> bytes:
    """Pop the whole buffered batch (at most what the limit leaves) as one bytes object."""
    docs = list(cursor._batch)
    cursor._batch.clear()
    if cursor._limit:
        docs = docs[: max(cursor._limit - cursor._returned, 0)]
    cursor._returned += len(docs)
    if cursor._limit and cursor._returned >= cursor._limit and cursor._state[0]:
        cursor.close()
    return b"".join(bytes(doc.raw) for doc in docs)


class RawBatchCursor(Cursor):
    """A :class:`~mongo_requests.cursor.Cursor` whose ``next()`` returns a whole batch of raw BSON."""

    def __init__(self, collection: Collection, *args: Any, **kwargs: Any) -> None:
        super().__init__(raw_collection(collection), *args, **kwargs)

    def __next__(self) -> bytes:
        if not self._started:
            if self._killed:
                raise StopIteration
            self._started = True
            self._refresh()
        while not self._batch:
            if not self._state[0] or self._killed:
                raise StopIteration
            self._get_more()
            if self._tailable and not self._batch:
                raise StopIteration
        if self._limit and self._returned >= self._limit:
            self.close()
            raise StopIteration
        return _take_batch(self)

    next = __next__


class RawBatchCommandCursor(CommandCursor):
    """A command cursor (``aggregate_raw_batches``) whose ``next()`` returns a whole batch of raw BSON."""

    def __next__(self) -> bytes:
        while not self._batch:
            if not self._state[0] or self._killed:
                raise StopIteration
            self._get_more()
        return _take_batch(self)

    next = __next__
