"""The workloads: each a function ``(client, n, inputs) -> ops done``.

A workload function runs ``n`` operations on one adapter (see
:mod:`benchmarks.adapters`) and returns how many it did; the runner times the
call.  Around it, untimed, a :class:`Workload` says how to set the database up
once, how to reset it before each timed block, which inputs to build for the
block (documents to insert, built outside the clock so every client pays only
for its own work), and how to check afterwards that the server really did what
was asked (so a fast number can never come from a client that did nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import bson

from . import spec
from .adapters import MR, Adapter, RawClient


# -- the timed functions ------------------------------------------------------
def ping(c: Adapter, n: int, _inputs: Any) -> int:
    op = c.ping
    for _ in range(n):
        op()
    return n


def find_one_by_id(c: Adapter, n: int, _inputs: Any) -> int:
    op = c.find_one_by_id
    for _ in range(n):
        op()
    return n


def find_one_by_filter(c: Adapter, n: int, _inputs: Any) -> int:
    op = c.find_one_by_filter
    for _ in range(n):
        op()
    return n


def insert_one_w1(c: Adapter, n: int, docs: list) -> int:
    op = c.insert_one
    for doc in docs:
        op(doc)
    return n


def update_inc_upsert_w1(c: Adapter, n: int, _inputs: Any) -> int:
    op = c.inc_w1
    for _ in range(n):
        op()
    return n


def update_inc_upsert_w0(c: Adapter, n: int, _inputs: Any) -> int:
    # w=0 writes return as soon as the bytes are in the socket's send buffer,
    # so the block ends with a ping on the same socket, inside the clock: the
    # server answers it only after applying every write before it.  For
    # mongo_requests the request pins that socket (its intended w=0 usage);
    # the other clients are single-threaded and reuse their one socket.
    with c.request():
        op = c.inc_w0
        for _ in range(n):
            op()
        c.ping()
    return n


def insert_many_1000(c: Adapter, n: int, batches: list) -> int:
    op = c.insert_many
    for docs in batches:
        op(docs)
    return n


def find_10000(c: Adapter, n: int, _inputs: Any) -> int:
    op = c.find_all
    for _ in range(n):
        op()
    return n


def find_10000_rawbson(c: Adapter, n: int, _inputs: Any) -> int:
    op = c.find_all_rawbson
    for _ in range(n):
        op()
    return n


def find_10000_raw_batches(c: Adapter, n: int, _inputs: Any) -> int:
    op = c.find_all_raw_batches
    for _ in range(n):
        op()
    return n


# -- setup and checks (untimed; ``db`` is the setup client's pymongo Database) --
def _seed_reads(db: Any) -> None:
    db.drop_collection(spec.C_READS)
    db[spec.C_READS].insert_many([spec.read_doc(i) for i in range(spec.READ_DOCS)])
    db[spec.C_READS].create_index(spec.READ_INDEX, unique=True)


def _seed_scan(db: Any) -> None:
    db.drop_collection(spec.C_SCAN)
    db[spec.C_SCAN].insert_many([spec.small_doc(i) for i in range(spec.SCAN_DOCS)])


def _recreate(name: str) -> Callable[[Any], None]:
    # Drop, then create explicitly: an insert into a missing collection would
    # create it inside the timed block.
    def reset(db: Any) -> None:
        db.drop_collection(name)
        db.create_collection(name)

    return reset


def _count_is(name: str, per_op: int) -> Callable[[Any, Any, int], None]:
    def check(db: Any, _before: Any, ops: int) -> None:
        found = db[name].count_documents({})
        if found != ops * per_op:
            raise AssertionError("%s holds %d documents after %d ops, expected %d" % (name, found, ops, ops * per_op))

    return check


def _counter(db: Any) -> int:
    doc = db[spec.C_COUNTERS].find_one({"_id": spec.COUNTER_ID})
    return doc["n"] if doc else 0


def _counter_grew(db: Any, before: int, ops: int) -> None:
    after = _counter(db)
    if after - before != ops:
        raise AssertionError("counter grew by %d in %d $inc ops" % (after - before, ops))


def _reply_ok(c: Adapter, result: Any) -> Any:
    """A driver's result as is; for the raw client, its decoded last reply."""
    if isinstance(c, RawClient):
        reply = c.conn.reply()
        if reply.get("ok") != 1:
            raise AssertionError("raw client got %r" % (reply,))
        return reply
    return result


def _verify_ping(c: Adapter) -> None:
    reply = _reply_ok(c, c.ping())
    if reply.get("ok") != 1:
        raise AssertionError("%s: ping returned %r" % (c.name, reply))


def _verify_find(op_name: str) -> Callable[[Adapter], None]:
    def verify(c: Adapter) -> None:
        doc = _reply_ok(c, getattr(c, op_name)())
        if isinstance(c, RawClient):
            batch = doc["cursor"]["firstBatch"]
            doc = batch[0] if batch else None
        if not doc or doc.get("_id") != spec.READ_ID:
            raise AssertionError("%s: %s returned %r" % (c.name, op_name, doc))

    return verify


def _verify_scan(c: Adapter) -> None:
    count = c.count_all()
    if count != spec.SCAN_DOCS:
        raise AssertionError("%s: find() returned %d documents, expected %d" % (c.name, count, spec.SCAN_DOCS))


def _verify_scan_rawbson(c: Adapter) -> None:
    if isinstance(c, RawClient):
        return _verify_scan(c)
    first = next(iter(c.scan_raw.find()))  # type: ignore[attr-defined]
    wanted = "RawBSONDocument" if c.name == MR else "dict"
    if type(first).__name__ != wanted:
        raise AssertionError("%s: the raw find returned a %s, not a %s" % (c.name, type(first).__name__, wanted))
    count = c.find_all_rawbson()
    if count != spec.SCAN_DOCS:
        raise AssertionError("%s: the raw find returned %d documents, expected %d" % (c.name, count, spec.SCAN_DOCS))


def _verify_scan_raw_batches(c: Adapter) -> None:
    if c.name != MR:
        return _verify_scan(c)
    batches = list(c._scan.find_raw_batches())  # type: ignore[attr-defined]
    if not all(isinstance(b, bytes) for b in batches):
        raise AssertionError("find_raw_batches returned %r, not bytes" % ({type(b).__name__ for b in batches},))
    count = sum(len(bson.decode_all(b)) for b in batches)
    if count != spec.SCAN_DOCS:
        raise AssertionError(
            "find_raw_batches returned %d documents in %d batches, expected %d" % (count, len(batches), spec.SCAN_DOCS)
        )


def _small_docs(n: int) -> list:
    return [spec.small_doc(i) for i in range(n)]


def _batches(n: int) -> list:
    return [[spec.small_doc(i) for i in range(spec.INSERT_MANY_DOCS)] for _ in range(n)]


@dataclass(frozen=True)
class Workload:
    """A workload function plus its counts and untimed hooks."""

    name: str
    run: Callable[[Adapter, int, Any], int]
    description: str
    ops: int  # operations per timed block
    quick_ops: int
    warmup: int
    quick_warmup: int
    docs_per_op: int = 1
    setup: Callable[[Any], None] | None = None  # once, before the warm-up
    reset: Callable[[Any], None] | None = None  # before every block (and warm-up)
    inputs: Callable[[int], Any] | None = None  # the block's inputs, built untimed
    snapshot: Callable[[Any], Any] | None = None  # server state before a block
    check: Callable[[Any, Any, int], None] | None = None  # (db, snapshot, ops) after a block
    verify: Callable[[Adapter], None] | None = None  # once per client after the warm-up

    def counts(self, quick: bool) -> tuple[int, int]:
        """(ops per timed block, warm-up ops)."""
        return (self.quick_ops, self.quick_warmup) if quick else (self.ops, self.warmup)


# Small operations: 3,000 per block (300 with --quick), 300 warm-up.
_SMALL = dict(ops=3000, quick_ops=300, warmup=300, quick_warmup=50)

WORKLOADS: list[Workload] = [
    Workload("ping", ping, "{ping: 1} round trip", verify=_verify_ping, **_SMALL),
    Workload(
        "find_one_by_id",
        find_one_by_id,
        "find_one({_id}) of a 1,000-doc collection",
        setup=_seed_reads,
        verify=_verify_find("find_one_by_id"),
        **_SMALL,
    ),
    Workload(
        "find_one_by_filter",
        find_one_by_filter,
        "find_one({key}) on a unique index",
        setup=_seed_reads,
        verify=_verify_find("find_one_by_filter"),
        **_SMALL,
    ),
    Workload(
        "insert_one_w1",
        insert_one_w1,
        "insert_one of a small doc, w=1",
        reset=_recreate(spec.C_INSERT_ONE),
        inputs=_small_docs,
        check=_count_is(spec.C_INSERT_ONE, 1),
        **_SMALL,
    ),
    Workload(
        "update_inc_upsert_w1",
        update_inc_upsert_w1,
        "$inc upsert on a fixed _id, w=1",
        reset=_recreate(spec.C_COUNTERS),
        snapshot=_counter,
        check=_counter_grew,
        **_SMALL,
    ),
    Workload(
        "update_inc_upsert_w0",
        update_inc_upsert_w0,
        "$inc upsert on a fixed _id, w=0, ends with a ping",
        reset=_recreate(spec.C_COUNTERS),
        snapshot=_counter,
        check=_counter_grew,
        **_SMALL,
    ),
    Workload(
        "insert_many_1000",
        insert_many_1000,
        "insert_many of 1,000 small docs, w=1",
        ops=30,
        quick_ops=5,
        warmup=3,
        quick_warmup=1,
        docs_per_op=spec.INSERT_MANY_DOCS,
        reset=_recreate(spec.C_INSERT_MANY),
        inputs=_batches,
        check=_count_is(spec.C_INSERT_MANY, spec.INSERT_MANY_DOCS),
    ),
    Workload(
        "find_10000",
        find_10000,
        "iterate 10,000 small docs, default batch size",
        ops=20,
        quick_ops=5,
        warmup=2,
        quick_warmup=1,
        docs_per_op=spec.SCAN_DOCS,
        setup=_seed_scan,
        verify=_verify_scan,
    ),
    # issue 13's bulk target: mongo_requests with raw documents vs PyMongo's *default* document class, so the
    # pymongo columns decode to dicts here, as in find_10000.
    Workload(
        "find_10000_rawbson",
        find_10000_rawbson,
        "iterate 10,000 docs: mongo_requests with document_class=RawBSONDocument, pymongo with its default",
        ops=20,
        quick_ops=5,
        warmup=2,
        quick_warmup=1,
        docs_per_op=spec.SCAN_DOCS,
        setup=_seed_scan,
        verify=_verify_scan_rawbson,
    ),
    Workload(
        "find_10000_raw_batches",
        find_10000_raw_batches,
        "iterate 10,000 docs: mongo_requests with find_raw_batches() (BSON bytes per batch), pymongo default find",
        ops=20,
        quick_ops=5,
        warmup=2,
        quick_warmup=1,
        docs_per_op=spec.SCAN_DOCS,
        setup=_seed_scan,
        verify=_verify_scan_raw_batches,
    ),
]

BY_NAME = {w.name: w for w in WORKLOADS}

# Not client-by-client workloads: run by their own code in __main__.
REQUEST_OVERHEAD = "request_overhead"
# Run by __main__.SECTIONS after the in-process clients, each by its own module:
# gevent and scaling (concurrent_runs), replset, tls (secure), pipeline.
SECTION_NAMES = ["gevent", "scaling", "replset", "tls", "pipeline"]
ALL_NAMES = [w.name for w in WORKLOADS] + [REQUEST_OVERHEAD] + SECTION_NAMES


# -- request_overhead: mongo_requests only -----------------------------------
def outside_request(c: Adapter, n: int, _inputs: Any = None) -> int:
    """find_one_by_id with no request: every op checks a socket out of the pool."""
    return find_one_by_id(c, n, None)


def inside_request(c: Adapter, n: int, _inputs: Any = None) -> int:
    """The same loop inside one request: every op uses the pinned socket."""
    with c.request():
        return find_one_by_id(c, n, None)


def request_per_op(c: Adapter, n: int, _inputs: Any = None) -> int:
    """Each op in its own request (start, pin, end, unpin per op); for information."""
    start, op = c.request, c.find_one_by_id
    for _ in range(n):
        with start():
            op()
    return n


REQUEST_VARIANTS = {"outside": outside_request, "inside": inside_request, "per_op": request_per_op}
