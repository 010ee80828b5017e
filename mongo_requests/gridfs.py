"""GridFS on mongo_requests databases, in the GridFS specification's format.

PyMongo's :mod:`gridfs` refuses any database that is not a
``pymongo.database.Database`` (it checks the class), and a mongo_requests
:class:`~mongo_requests.database.Database` is not one.  Rather than pretend
to be one, this module stores and reads files in the same two collections
(``<bucket>.files`` and ``<bucket>.chunks``) with the same documents, so a
file written here is read by PyMongo's gridfs and the other way round.

It covers the everyday calls: :class:`GridFSBucket` (``upload_from_stream``,
``open_download_stream``, ``download_to_stream``, ``delete``, ``find``) and
PyMongo 2's :class:`GridFS` (``put``, ``get``, ``get_last_version``,
``delete``, ``exists``, ``list``, ``find``).  Chunks are written with the
database's write concern; a ``w=0`` upload inside a request is read back
correctly by the same request.
"""

from __future__ import annotations

import datetime
import io
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from bson.binary import Binary
from bson.objectid import ObjectId
from pymongo.errors import PyMongoError

if TYPE_CHECKING:
    from .collection import Collection
    from .cursor import Cursor
    from .database import Database

__all__ = ["GridFSBucket", "GridFS", "GridOut", "NoFile", "CorruptGridFile"]

DEFAULT_CHUNK_SIZE = 255 * 1024


class NoFile(PyMongoError):
    """No file matches (the same name as :class:`gridfs.errors.NoFile`)."""


class CorruptGridFile(PyMongoError):
    """A file's chunks do not add up to its length."""


class GridOut(io.RawIOBase):
    """A stored file, read chunk by chunk: ``read()``, and the file document's fields as attributes."""

    def __init__(self, chunks: Collection, file_doc: Mapping[str, Any]) -> None:
        super().__init__()
        self._chunks = chunks
        self._doc = dict(file_doc)
        self._position = 0

    _id = property(lambda self: self._doc["_id"])
    filename = property(lambda self: self._doc.get("filename"))
    length = property(lambda self: self._doc["length"])
    chunk_size = property(lambda self: self._doc["chunkSize"])
    upload_date = property(lambda self: self._doc.get("uploadDate"))
    metadata = property(lambda self: self._doc.get("metadata"))
    content_type = property(lambda self: self._doc.get("contentType"))

    def readable(self) -> bool:
        return True

    def _chunk_data(self) -> Iterator[bytes]:
        expected = 0
        for chunk in self._chunks.find({"files_id": self._id}, sort=[("n", 1)]):
            if chunk["n"] != expected:
                raise CorruptGridFile("missing chunk %d of file %r" % (expected, self._id))
            expected += 1
            yield bytes(chunk["data"])

    def read(self, size: int | None = -1) -> bytes:
        """Read up to ``size`` bytes (everything left by default)."""
        data = b"".join(self._chunk_data())
        if len(data) != self.length:
            raise CorruptGridFile(
                "file %r has %d bytes of chunks for a length of %d" % (self._id, len(data), self.length)
            )
        end = len(data) if size is None or size < 0 else min(len(data), self._position + size)
        out = data[self._position : end]
        self._position = end
        return out

    def __repr__(self) -> str:
        return "GridOut(_id=%r, filename=%r, length=%r)" % (self._id, self.filename, self.length)


class GridFSBucket:
    """PyMongo's GridFSBucket API on a mongo_requests database.

    :param db: a :class:`~mongo_requests.database.Database`.
    :param bucket_name: the collections' prefix (``fs``).
    :param chunk_size_bytes: size of each chunk (255 KiB).
    """

    def __init__(self, db: Database, bucket_name: str = "fs", chunk_size_bytes: int = DEFAULT_CHUNK_SIZE) -> None:
        from .database import Database

        if not isinstance(db, Database):
            raise TypeError("db must be a mongo_requests Database")
        if not isinstance(chunk_size_bytes, int) or chunk_size_bytes <= 0:
            raise ValueError("chunk_size_bytes must be a positive integer")
        self._files = db[bucket_name + ".files"]
        self._chunks = db[bucket_name + ".chunks"]
        self._chunk_size = chunk_size_bytes
        self._indexed = False

    def _ensure_indexes(self) -> None:
        if not self._indexed:
            # The specification's indexes (what PyMongo creates too).
            self._files.create_index([("filename", 1), ("uploadDate", 1)])
            self._chunks.create_index([("files_id", 1), ("n", 1)], unique=True)
            self._indexed = True

    def upload_from_stream_with_id(
        self,
        file_id: Any,
        filename: str,
        source: Any,
        chunk_size_bytes: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        """Store ``source`` (bytes or a readable file object) as ``filename`` with ``_id`` ``file_id``."""
        self._ensure_indexes()
        size = chunk_size_bytes or self._chunk_size
        data = source if isinstance(source, (bytes, bytearray, memoryview)) else source.read()
        if isinstance(data, str):
            raise TypeError("source must be bytes or a binary file object")
        data = bytes(data)
        chunks = [
            {"files_id": file_id, "n": n, "data": Binary(data[i : i + size])}
            for n, i in enumerate(range(0, len(data), size))
        ]
        if chunks:
            self._chunks.insert_many(chunks)
        doc: dict[str, Any] = {
            "_id": file_id,
            "length": len(data),
            "chunkSize": size,
            "uploadDate": datetime.datetime.now(datetime.UTC).replace(microsecond=0),
            "filename": filename,
        }
        if metadata is not None:
            doc["metadata"] = metadata
        doc.update(extra)
        self._files.insert_one(doc)

    def upload_from_stream(
        self,
        filename: str,
        source: Any,
        chunk_size_bytes: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> Any:
        """Store ``source`` as ``filename``; returns the new file's ``_id`` (an ObjectId)."""
        file_id = ObjectId()
        self.upload_from_stream_with_id(file_id, filename, source, chunk_size_bytes, metadata, **extra)
        return file_id

    def open_download_stream(self, file_id: Any) -> GridOut:
        """The file with this ``_id``; raises :class:`NoFile` when there is none."""
        doc = self._files.find_one({"_id": file_id})
        if doc is None:
            raise NoFile("no file in gridfs collection %r with _id %r" % (self._files.full_name, file_id))
        return GridOut(self._chunks, doc)

    def open_download_stream_by_name(self, filename: str, revision: int = -1) -> GridOut:
        """A version of ``filename``: -1 the newest, 0 the oldest, as in PyMongo."""
        direction, skip = (-1, -revision - 1) if revision < 0 else (1, revision)
        for doc in self._files.find(
            {"filename": filename}, sort=[("uploadDate", direction), ("_id", direction)], skip=skip, limit=-1
        ):
            return GridOut(self._chunks, doc)
        raise NoFile("no version %d for filename %r" % (revision, filename))

    def download_to_stream(self, file_id: Any, destination: Any) -> None:
        """Write the file's bytes to ``destination``."""
        destination.write(self.open_download_stream(file_id).read())

    def delete(self, file_id: Any) -> None:
        """Delete the file and its chunks; raises :class:`NoFile` when there was no such file."""
        deleted = self._files.delete_one({"_id": file_id})
        self._chunks.delete_many({"files_id": file_id})
        if deleted.acknowledged and not deleted.deleted_count:
            raise NoFile("no file could be deleted because none matched %r" % (file_id,))

    def find(self, filter: Mapping[str, Any] | None = None, **kwargs: Any) -> Cursor:
        """A cursor over the files' documents."""
        return self._files.find(filter or {}, **kwargs)


class GridFS:
    """PyMongo 2's GridFS API: ``put``, ``get``, ``get_last_version``, ``delete``, ``exists``, ``list``."""

    def __init__(self, database: Database, collection: str = "fs") -> None:
        self._bucket = GridFSBucket(database, collection)

    def put(self, data: Any, **kwargs: Any) -> Any:
        """Store ``data`` (bytes or a file object); ``filename``, ``_id``, ``metadata``... as keywords."""
        file_id = kwargs.pop("_id", None) or ObjectId()
        filename = kwargs.pop("filename", None)
        chunk_size = kwargs.pop("chunkSize", kwargs.pop("chunk_size", None))
        if isinstance(data, str):
            encoding = kwargs.pop("encoding", None)
            if encoding is None:
                raise TypeError("must specify an encoding for a str")
            data = data.encode(encoding)
        self._bucket.upload_from_stream_with_id(file_id, filename, data, chunk_size, **kwargs)
        return file_id

    def get(self, file_id: Any) -> GridOut:
        """The file with this ``_id`` (:class:`NoFile` when none)."""
        return self._bucket.open_download_stream(file_id)

    def get_version(self, filename: str | None = None, version: int = -1, **kwargs: Any) -> GridOut:
        """A version of a file by name (-1: the newest)."""
        return self._bucket.open_download_stream_by_name(filename, version)  # type: ignore[arg-type]

    def get_last_version(self, filename: str | None = None, **kwargs: Any) -> GridOut:
        """The newest version of ``filename``."""
        return self.get_version(filename, -1)

    def delete(self, file_id: Any) -> None:
        """Delete a file (no error when there is none, as in PyMongo)."""
        try:
            self._bucket.delete(file_id)
        except NoFile:
            pass

    def exists(self, document_or_id: Any = None, **kwargs: Any) -> bool:
        """True when a file matches the ``_id`` or the query."""
        if kwargs:
            query = kwargs
        elif isinstance(document_or_id, Mapping):
            query = dict(document_or_id)
        else:
            query = {"_id": document_or_id}
        return self._bucket._files.find_one(query, {"_id": 1}) is not None

    def list(self) -> list[str]:
        """The names of the stored files."""
        return [name for name in self._bucket._files.distinct("filename") if name is not None]

    def find(self, *args: Any, **kwargs: Any) -> Cursor:
        """A cursor over the files' documents."""
        return self._bucket._files.find(*args, **kwargs)
