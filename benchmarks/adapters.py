"""The clients under test, behind one small interface.

Every adapter offers the same zero- or one-argument operations, already bound
to their arguments (``functools.partial`` where possible, so the adapter adds
no Python frame of its own to a driver call):

========================  =====================================================
``ping()``                ``{ping: 1}`` on ``admin``
``find_one_by_id()``      ``find_one({_id: READ_ID})`` in ``reads``
``find_one_by_filter()``  ``find_one({key: READ_KEY})`` in ``reads`` (indexed)
``insert_one(doc)``       insert one small document into ``insert_one``
``inc_w1()``              ``$inc`` upsert of ``{_id: COUNTER_ID}``, ``w=1``
``inc_w0()``              the same, ``w=0`` (no reply)
``insert_many(docs)``     insert a list of documents into ``insert_many``
``find_all()``            iterate every document of ``scan``
``find_all_rawbson()``    the same, as ``RawBSONDocument`` for mongo_requests; the
                          default document class for PyMongo (issue 13's baseline)
``find_all_raw_batches()``  the same with ``find_raw_batches()`` for mongo_requests
                          (batches of BSON bytes, not decoded); PyMongo's default find
``request()``             context manager: a request for mongo_requests, a no-op
                          for the others (see the w=0 workload)
========================  =====================================================
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from typing import Any

import pymongo
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo.write_concern import WriteConcern

import mongo_requests
from mongo_requests import wire

from . import spec
from .raw import GetMore, RawConnection, encode_msg

# Display order, which is also the interleaving order within a repetition.
RAW, MR, PYMONGO, PYMONGO_NORETRY = "raw", "mongo_requests", "pymongo", "pymongo-noretry"
CLIENTS = (RAW, MR, PYMONGO, PYMONGO_NORETRY)

_W0 = WriteConcern(w=0)


class Adapter:
    """Common attributes; subclasses bind the operations in ``__init__``."""

    name: str
    ping: Callable[[], Any]
    find_one_by_id: Callable[[], Any]
    find_one_by_filter: Callable[[], Any]
    insert_one: Callable[[Any], Any]
    inc_w1: Callable[[], Any]
    inc_w0: Callable[[], Any]
    insert_many: Callable[[list], Any]
    find_all: Callable[[], Any]
    find_all_rawbson: Callable[[], Any]
    find_all_raw_batches: Callable[[], Any]

    def request(self) -> AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def close(self) -> None:
        raise NotImplementedError


class RawClient(Adapter):
    """Pre-encoded OP_MSG over :class:`RawConnection`; replies are not decoded."""

    name = RAW

    def __init__(self, address: tuple[str, int]) -> None:
        self.conn = conn = RawConnection(address)
        rt = conn.roundtrip
        db = spec.DB
        self.ping = partial(rt, encode_msg({"ping": 1}, "admin"))
        # The same command documents the drivers send for find_one().
        self.find_one_by_id = partial(
            rt, encode_msg({"find": spec.C_READS, "filter": {"_id": spec.READ_ID}, "limit": 1, "singleBatch": True}, db)
        )
        self.find_one_by_filter = partial(
            rt,
            encode_msg({"find": spec.C_READS, "filter": {"key": spec.READ_KEY}, "limit": 1, "singleBatch": True}, db),
        )
        update = {
            "update": spec.C_COUNTERS,
            "updates": [{"q": {"_id": spec.COUNTER_ID}, "u": {"$inc": {"n": 1}}, "upsert": True, "multi": False}],
            "ordered": True,
        }
        self.inc_w1 = partial(rt, encode_msg(update, db))
        self.inc_w0 = partial(conn.send, encode_msg(dict(update, writeConcern={"w": 0}), db, more_to_come=True))
        # Documents without _id: mongod adds one, as it would store the
        # drivers' client-generated ObjectIds (see spec.small_doc).
        self._insert_one = encode_msg(
            {"insert": spec.C_INSERT_ONE, "ordered": True},
            db,
            sequences=(wire.encode_section("documents", wire.encode_docs([spec.small_doc(0)])),),
        )
        self._insert_many = encode_msg(
            {"insert": spec.C_INSERT_MANY, "ordered": True},
            db,
            sequences=(
                wire.encode_section(
                    "documents", wire.encode_docs(spec.small_doc(i) for i in range(spec.INSERT_MANY_DOCS))
                ),
            ),
        )
        self._find_all = encode_msg({"find": spec.C_SCAN, "filter": {}}, db)
        self._get_more = GetMore(spec.C_SCAN, db)

    def insert_one(self, _doc: Any) -> int:
        return self.conn.roundtrip(self._insert_one)

    def insert_many(self, _docs: Any) -> int:
        return self.conn.roundtrip(self._insert_many)

    def find_all(self) -> int:
        """Run the find and every getMore until the cursor is exhausted; returns batches."""
        conn = self.conn
        conn.roundtrip(self._find_all)
        batches = 1
        cursor_id = conn.cursor_id()
        while cursor_id:
            conn.roundtrip(self._get_more.set_cursor(cursor_id))
            batches += 1
            cursor_id = conn.cursor_id()
        return batches

    def find_all_rawbson(self) -> int:
        """The raw socket decodes nothing anyway: the same as :meth:`find_all`."""
        return self.find_all()

    find_all_raw_batches = find_all_rawbson

    def count_all(self) -> int:
        """Like :meth:`find_all` but decodes and counts documents (for checks only)."""
        conn = self.conn
        conn.roundtrip(self._find_all)
        cursor = conn.reply()["cursor"]
        count = len(cursor["firstBatch"])
        while cursor["id"]:
            conn.roundtrip(self._get_more.set_cursor(cursor["id"]))
            cursor = conn.reply()["cursor"]
            count += len(cursor["nextBatch"])
        return count

    def close(self) -> None:
        self.conn.close()


class DriverClient(Adapter):
    """A driver with a PyMongo-compatible API (mongo_requests or PyMongo)."""

    def __init__(
        self,
        name: str,
        client: Any,
        request: Callable[[], AbstractContextManager[Any]] | None = None,
        raw_documents: bool = False,
    ) -> None:
        self.raw_documents = raw_documents
        self.name = name
        self.client = client
        self._request = request
        db = client[spec.DB]
        reads = db[spec.C_READS]
        counters = db[spec.C_COUNTERS]
        self.ping = partial(client.admin.command, "ping")
        self.find_one_by_id = partial(reads.find_one, {"_id": spec.READ_ID})
        self.find_one_by_filter = partial(reads.find_one, {"key": spec.READ_KEY})
        self.insert_one = db[spec.C_INSERT_ONE].insert_one
        self.inc_w1 = partial(counters.update_one, {"_id": spec.COUNTER_ID}, {"$inc": {"n": 1}}, upsert=True)
        self.inc_w0 = partial(
            counters.with_options(write_concern=_W0).update_one,
            {"_id": spec.COUNTER_ID},
            {"$inc": {"n": 1}},
            upsert=True,
        )
        self.insert_many = db[spec.C_INSERT_MANY].insert_many
        self._scan = db[spec.C_SCAN]
        raw_codec = CodecOptions(document_class=RawBSONDocument)
        self.scan_raw = self._scan.with_options(codec_options=raw_codec) if raw_documents else self._scan

    def find_all(self) -> int:
        """Iterate ``scan`` with the default batch size; returns the documents seen."""
        count = 0
        for _ in self._scan.find():
            count += 1
        return count

    count_all = find_all

    def find_all_rawbson(self) -> int:
        """Iterate ``scan`` as ``RawBSONDocument`` (mongo_requests) or with the default class (PyMongo)."""
        count = 0
        for _ in self.scan_raw.find():
            count += 1
        return count

    def find_all_raw_batches(self) -> int:
        """mongo_requests: ``find_raw_batches()`` of ``scan``, returns the batches; PyMongo: :meth:`find_all`."""
        if not self.raw_documents:
            return self.find_all()
        batches = 0
        for _ in self._scan.find_raw_batches():
            batches += 1
        return batches

    def request(self) -> AbstractContextManager[Any]:
        return self._request() if self._request is not None else contextlib.nullcontext()

    def close(self) -> None:
        self.client.close()


def mongo_requests_client(uri: str) -> DriverClient:
    """``mongo_requests.MongoClient(uri)`` with its defaults."""
    client = mongo_requests.MongoClient(uri)
    return DriverClient(MR, client, client.start_request, raw_documents=True)


def pymongo_client(uri: str, retry: bool = True) -> DriverClient:
    """``pymongo.MongoClient(uri, directConnection=True)``; ``retry=False`` adds
    ``retryWrites=false&retryReads=false`` (as keyword options, so any URI works)."""
    if retry:
        return DriverClient(PYMONGO, pymongo.MongoClient(uri, directConnection=True))
    client = pymongo.MongoClient(uri, directConnection=True, retryWrites=False, retryReads=False)
    return DriverClient(PYMONGO_NORETRY, client)


def make_clients(uri: str, address: tuple[str, int]) -> list[Adapter]:
    """The four clients, connected, in :data:`CLIENTS` order."""
    clients: list[Adapter] = [
        RawClient(address),
        mongo_requests_client(uri),
        pymongo_client(uri),
        pymongo_client(uri, retry=False),
    ]
    for c in clients:
        c.ping()  # connect (and handshake) before anything is timed
    return clients
