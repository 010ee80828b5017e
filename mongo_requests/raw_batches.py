"""``find_raw_batches`` and ``aggregate_raw_batches``: each batch as the server's BSON bytes.

Each ``next()`` returns one batch as the concatenated BSON documents the
server sent (decode with :func:`bson.decode_all`), as PyMongo's raw batch
cursors do.  The documents are not decoded at all: the reply keeps its batch
as the BSON array the server sent, which is re-framed as a stream of
documents (:mod:`mongo_requests.raw_arrays`).  Batches are buffered as
``(bytes, number of documents)``, so ``retrieved`` and ``limit`` count
documents, as for any cursor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bson.raw_bson import RawBSONDocument

from . import raw_arrays
from .cursor import CommandCursor, Cursor

if TYPE_CHECKING:
    from .collection import Collection

__all__ = ["RawBatchCursor", "RawBatchCommandCursor", "raw_collection"]


def raw_collection(collection: Collection) -> Collection:
    """The same collection, decoding to RawBSONDocument."""
    return collection.with_options(codec_options=collection.codec_options.with_options(document_class=RawBSONDocument))


def _buffer(cursor: Any, batch: Any) -> None:
    """Buffer a reply's batch as one stream of documents (nothing for an empty one)."""
    stream, count = raw_arrays.to_stream(batch)
    cursor._retrieved += count
    if count:
        cursor._batch.append((stream, count))


def _take_batch(cursor: Any) -> bytes:
    """Pop the whole buffered batch (at most what the limit leaves) as one bytes object."""
    parts = list(cursor._batch)
    cursor._batch.clear()
    stream = parts[0][0] if len(parts) == 1 else b"".join(part[0] for part in parts)
    count = sum(part[1] for part in parts)
    if cursor._limit and count > cursor._limit - cursor._returned:
        # The server keeps to the find's limit; this only guards the contract.
        stream, count = raw_arrays.first_documents(stream, max(cursor._limit - cursor._returned, 0))
    cursor._returned += count
    if cursor._limit and cursor._returned >= cursor._limit and cursor._state[0]:
        cursor.close()
    result: bytes = stream
    return result


class RawBatchCursor(Cursor):
    """A :class:`~mongo_requests.cursor.Cursor` whose ``next()`` returns a whole batch of raw BSON."""

    def __init__(self, collection: Collection, *args: Any, **kwargs: Any) -> None:
        super().__init__(raw_collection(collection), *args, **kwargs)

    _raw_batches = True
    _buffer = _buffer
    _take = _take_batch
    # Every next() starts, fetches and binds the cursor's session as Cursor's slow path does.
    __next__ = next = Cursor._next_slow


class RawBatchCommandCursor(CommandCursor):
    """A command cursor (``aggregate_raw_batches``) whose ``next()`` returns a whole batch of raw BSON."""

    _raw_batches = True
    _buffer = _buffer
    _take = _take_batch
    __next__ = next = CommandCursor._next_slow
