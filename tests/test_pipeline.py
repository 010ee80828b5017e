"""Pipelined acknowledged writes (``start_request(pipeline=True)``), against the real mongod.

Every count is checked on the server; the server's connection ids say which
socket carried what.  Issue 13's list: exact counts after 20,000 pipelined
upserts, duplicate keys at known positions, write-then-read rounds without a
stale read, big documents then 200,000 tiny writes without a read (no
deadlock), ``j=True`` writes surviving SIGKILL, a network failure naming the
unknown writes, and a caller killed mid-pipeline leaking no slot.
"""

from __future__ import annotations

import time

import pytest
from pymongo import InsertOne, UpdateOne
from pymongo.errors import AutoReconnect, BulkWriteError, DuplicateKeyError, OperationFailure
from pymongo.read_preferences import ReadPreference
from pymongo.results import BulkWriteResult, DeleteResult, InsertManyResult, InsertOneResult, UpdateResult

from helpers import app_connections, assert_quiet, fail_point, pool_stats, unique_app, wait_until
from mongo_requests import PipelineError
from mongo_requests.pipeline import OPEN, unknown_writes
from mongo_requests.testing import MongodServer


def test_results_are_lazy_pymongo_results_and_a_read_syncs(client, db):
    coll = db.lazy
    with client.start_request(pipeline=True) as req:
        r_ins = coll.insert_one({"_id": 1, "n": 0})
        r_upd = coll.update_one({"_id": 1}, {"$inc": {"n": 1}})
        r_ups = coll.update_one({"_id": 2}, {"$inc": {"n": 1}}, upsert=True)
        r_del = coll.delete_many({"_id": {"$gt": 5}})
        assert "pending" in repr(r_upd)  # nothing was read yet
        assert coll.find_one({"_id": 1})["n"] == 1  # the read synced first
        assert "pending" not in repr(r_upd)
        req.sync()
    assert isinstance(r_ins, InsertOneResult) and r_ins.inserted_id == 1 and r_ins.acknowledged
    assert isinstance(r_upd, UpdateResult) and (r_upd.matched_count, r_upd.modified_count) == (1, 1)
    assert r_ups.upserted_id == 2 and r_ups.matched_count == 0
    assert isinstance(r_del, DeleteResult) and r_del.deleted_count == 0
    assert r_upd.raw_result["nModified"] == 1


def test_exact_counts_after_20000_pipelined_upserts(make_client, db, admin_client):
    app = unique_app()
    c = make_client(appname=app)
    coll = c[db.name].counts
    with c.start_request(pipeline=True):
        results = [coll.update_one({"_id": i % 100}, {"$inc": {"n": 1}}, upsert=True) for i in range(20_000)]
    # Exact per-write results: the first write to each key upserted it, every other matched it.
    assert sum(1 for r in results if r.upserted_id is not None) == 100
    assert [r.upserted_id for r in results[:100]] == list(range(100))
    assert sum(r.matched_count for r in results) == 19_900
    docs = list(admin_client[db.name].counts.find())
    assert len(docs) == 100 and all(d["n"] == 200 for d in docs)
    assert app_connections(admin_client, app) == 1  # one socket carried all of it


def test_duplicate_keys_at_known_positions(client, db):
    coll = db.dups
    dup_at = {7, 50, 199}
    with pytest.raises(PipelineError) as info:
        with client.start_request(pipeline=True):
            results = [coll.insert_one({"_id": 0 if i in dup_at else i}) for i in range(200)]
    err = info.value
    assert isinstance(err, OperationFailure) and err.code == 11000
    assert [i for i, _ in err.errors] == sorted(dup_at)
    assert all(isinstance(e, DuplicateKeyError) for _, e in err.errors)
    assert [d["index"] for d in err.details["errors"]] == sorted(dup_at)
    for i, r in enumerate(results):
        if i in dup_at:
            with pytest.raises(DuplicateKeyError):
                r.inserted_id
        else:
            assert r.inserted_id == i
    # Writes after a failed one were applied: unordered semantics.
    assert coll.count_documents({}) == 200 - len(dup_at)


def test_error_indexes_count_across_syncs_and_bulks(client, db):
    coll = db.dups2
    coll.insert_one({"_id": "taken"})
    with client.start_request(pipeline=True) as req:
        coll.insert_one({"_id": 1})  # index 0
        bulk = coll.bulk_write(
            [InsertOne({"_id": 2}), InsertOne({"_id": "taken"}), UpdateOne({"_id": 2}, {"$set": {"x": 1}})],
            ordered=False,
        )  # index 1
        many = coll.insert_many([{"_id": 10}, {"_id": 11}])  # index 2
        with pytest.raises(PipelineError) as first:
            req.sync()
        assert [i for i, _ in first.value.errors] == [1]
        assert isinstance(first.value.errors[0][1], BulkWriteError)
        req.sync()  # reported once
        coll.insert_one({"_id": 3})  # index 3
        coll.insert_one({"_id": 1})  # index 4: a duplicate
        with pytest.raises(PipelineError) as second:
            coll.find_one({})  # a read is a sync point too
        assert [i for i, _ in second.value.errors] == [4]
    with pytest.raises(BulkWriteError) as bwe:
        bulk.inserted_count
    assert bwe.value.details["nInserted"] == 1 and bwe.value.details["nModified"] == 1
    assert isinstance(many, InsertManyResult) and many.inserted_ids == [10, 11]
    assert coll.count_documents({}) == 6


def test_write_then_read_rounds_no_stale_read(mode, make_client, db):
    c = make_client()
    coll = c[db.name].rounds
    stale: list = []
    errors: list = []

    def worker(k: int) -> None:
        try:
            with c.start_request(pipeline=True):
                for i in range(1, 301):
                    coll.update_one({"_id": k}, {"$inc": {"n": 1}}, upsert=True)
                    coll.update_one({"_id": k}, {"$set": {"last": i}})
                    doc = coll.find_one({"_id": k})
                    if doc["n"] != i or doc["last"] != i:
                        stale.append((k, i, doc))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    handles = [mode.spawn(worker, k) for k in range(4)]
    assert mode.join(handles, 120) == 0
    assert errors == [] and stale == []


def test_large_documents_then_200000_tiny_writes_without_a_read(mode, make_client, db):
    c = make_client()
    coll = c[db.name].flood
    big = "x" * (4 * 1024 * 1024)
    done: list = []

    def worker() -> None:
        with c.start_request(pipeline=True):
            large = [coll.insert_one({"_id": "big%d" % i, "s": big}) for i in range(4)]
            tiny = [coll.delete_one({"_id": i}) for i in range(200_000)]
        done.append((large, tiny))

    start = time.monotonic()
    handle = mode.spawn(worker)
    assert mode.join([handle], 240) == 0, "the pipeline deadlocked"
    elapsed = time.monotonic() - start
    large, tiny = done[0]
    assert [r.inserted_id for r in large] == ["big0", "big1", "big2", "big3"]
    assert len(tiny) == 200_000 and all(r.deleted_count == 0 for r in tiny[::997])
    assert sum(r.deleted_count for r in tiny) == 0
    assert c[db.name].flood.count_documents({}) == 4
    print("200,000 pipelined writes after 16 MB of documents: %.1f s" % elapsed)


def test_w0_per_call_concerns_and_bulks_inside_a_pipeline(client, db):
    coll = db.mixed
    with client.start_request(pipeline=True):
        w0 = coll.insert_one({"_id": "w0"}, w=0)
        j = coll.insert_one({"_id": "j"}, j=True)
        wc = coll.update_one({"_id": "j"}, {"$set": {"a": 1}}, w=1, wtimeout=1000)
        many = coll.insert_many([{"k": i} for i in range(1000)], j=True)
        bulk = coll.bulk_write([InsertOne({"_id": "b"}), UpdateOne({"_id": "b"}, {"$set": {"x": 1}})])
        assert coll.count_documents({}) == 1003  # the read sees the w=0 write too (same socket)
    assert w0.acknowledged is False and j.inserted_id == "j" and wc.modified_count == 1
    assert len(many.inserted_ids) == 1000
    assert isinstance(bulk, BulkWriteResult) and (bulk.inserted_count, bulk.modified_count) == (1, 1)


def test_w0_writes_keep_their_place_among_buffered_pipelined_writes(client, db):
    coll = db.order
    with client.start_request(pipeline=True):
        for i in range(1, 201):
            coll.update_one({"_id": 1}, {"$set": {"v": i}}, upsert=True)  # buffered
            coll.update_one({"_id": 1}, {"$set": {"v": -i}}, w=0)  # sent at once, after the buffer
        assert coll.find_one({"_id": 1})["v"] == -200


def test_a_bad_write_concern_fails_that_write_only(client, db):
    coll = db.badwc
    with pytest.raises(PipelineError) as info:
        with client.start_request(pipeline=True):
            ok = coll.insert_one({"_id": 1})
            bad = coll.insert_one({"_id": 2}, w="no-such-tag")
            after = coll.insert_one({"_id": 3})
    assert [i for i, _ in info.value.errors] == [1]
    assert ok.inserted_id == 1 and after.inserted_id == 3
    with pytest.raises(OperationFailure):
        bad.inserted_id


@pytest.mark.parametrize("writes", [50, 1500], ids=["met-at-sync", "met-while-writing"])
def test_network_failure_names_the_unknown_writes(make_client, admin_client, db, writes):
    """The server closes the connection on the 21st update.

    With 50 writes the failure is met at ``req.sync()``; with 1,500 it is met
    while writing (the unread replies reach their bound), the request goes on
    with a new socket, and the fail point closes that one too.  Either way
    the sync point reports every write without a reply, merged.
    """
    app = unique_app()
    c = make_client(appname=app)
    coll = c[db.name].net
    coll.insert_one({"_id": 1, "n": 0})
    with c.start_request(pipeline=True) as req:
        with fail_point(admin_client, {"skip": 20}, failCommands=["update"], closeConnection=True, appName=app):
            results = [coll.update_one({"_id": 1}, {"$inc": {"n": 1}}) for _ in range(writes)]
            with pytest.raises(AutoReconnect) as info:
                req.sync()
        # Every write without its reply is unknown, and no acknowledged one.  The
        # server applied 20; the last few of their replies may be lost with the
        # connection (a reset discards what the client had not read yet).
        unknown = unknown_writes(info.value)
        first = unknown[0]
        assert first <= 20 and unknown == list(range(first, writes)), unknown
        assert "%d write(s) unknown" % (writes - first) in str(info.value)
        assert all(r.modified_count == 1 for r in results[:first])
        for r in results[first:]:
            with pytest.raises(AutoReconnect):
                r.matched_count
        assert admin_client[db.name].net.find_one({"_id": 1})["n"] == 20
        req.sync()  # reported once
        # The request goes on, on a new socket.
        after = coll.update_one({"_id": 1}, {"$inc": {"n": 100}})
        assert coll.find_one({"_id": 1})["n"] == 120
    assert after.modified_count == 1
    assert_quiet(pool_stats(c), c.max_pool_size)


@pytest.mark.parametrize("ends", ["with", "never"])
def test_caller_killed_mid_pipeline_leaks_no_slot(mode, make_client, admin_client, db, ends):
    """A greenlet killed (or a thread that dies without ending its request) mid-pipeline.

    Its socket has replies nobody will read: it must be closed, never handed
    to the next caller, and its slot freed.
    """
    app = unique_app()
    c = make_client(appname=app, max_pool_size=2)
    coll = c[db.name].killed
    started = mode.event()

    def worker() -> None:
        req = c.start_request(pipeline=True)
        for i in range(1_000_000):
            coll.update_one({"_id": i % 10}, {"$inc": {"n": 1}}, upsert=True)
            if i == 2000:
                started.set()
            if i % 50 == 0:
                mode.sleep(0)  # a point where a kill can land outside of I/O
            if not mode.green and i == 5000:
                if ends == "with":
                    raise _Killed  # a thread cannot be killed: a BaseException leaves the block like one
                return  # the thread dies with its request open
        req.end()

    def killable() -> None:
        try:
            if ends == "with":
                with c.start_request(pipeline=True):
                    worker()
            else:
                worker()
        except _Killed:
            pass

    handle = mode.spawn(killable)
    assert started.wait(60)
    if mode.green:
        mode.sleep(0.05)
        handle.kill(block=True, timeout=10)
    assert mode.join([handle], 60) == 0
    del handle
    import gc

    gc.collect()
    assert wait_until(lambda: pool_stats(c)["pinned"] == 0, 10), pool_stats(c)
    stats = pool_stats(c)
    assert_quiet(stats, 2)
    assert stats["closed"] >= 1  # the socket with unread replies was closed, not handed on
    # The request it never ended is no longer counted open: writes in this process take their hot paths again.
    assert not OPEN, OPEN
    # The next caller gets a clean socket: no stale replies, exact results.
    for _ in range(3):
        with c.start_request(pipeline=True):
            r = coll.update_one({"_id": "after"}, {"$inc": {"n": 1}}, upsert=True)
            assert coll.find_one({"_id": "after"})["n"] >= 1
        assert r.modified_count + (r.upserted_id is not None) == 1
    assert wait_until(lambda: app_connections(admin_client, app) == pool_stats(c)["open"], 5)


class _Killed(BaseException):
    """Stands for GreenletExit in the threads mode."""


def test_durability_j_true_survives_sigkill(mode):
    server = MongodServer()
    server.start()
    try:
        c = mode.client(server.uri)
        coll = c.durable.docs
        with c.start_request(pipeline=True) as req:
            singles = [coll.insert_one({"_id": i}, j=True) for i in range(300)]
            many = coll.insert_many([{"_id": 1000 + i} for i in range(500)], j=True)
            req.sync()
        acknowledged = [r.inserted_id for r in singles] + list(many.inserted_ids)
        c.close()
        server.kill()  # SIGKILL: only what the journal holds survives
        server.start()
        c = mode.client(server.uri)
        present = {d["_id"] for d in c.durable.docs.find({}, {"_id": 1})}
        c.close()
        assert set(acknowledged) <= present and len(acknowledged) == 800
    finally:
        server.stop()
        server.cleanup()


def test_command_listeners_hear_pipelined_writes(make_client, db):
    from pymongo import monitoring

    class Recorder(monitoring.CommandListener):
        def __init__(self) -> None:
            self.events: list = []

        def started(self, event):
            self.events.append(("started", event.command_name, event.request_id))

        def succeeded(self, event):
            self.events.append(("succeeded", event.command_name, event.request_id))

        def failed(self, event):
            self.events.append(("failed", event.command_name, event.request_id))

    rec = Recorder()
    c = make_client(event_listeners=[rec])
    coll = c[db.name].heard
    with pytest.raises(PipelineError):
        with c.start_request(pipeline=True):
            for i in range(10):
                coll.insert_one({"_id": i})
            coll.insert_one({"_id": 99}, w="no-such-tag")  # ok: 0 -> a failed event
            assert [e[0] for e in rec.events] == ["started"] * 11  # nothing read yet
    inserts = [e for e in rec.events if e[1] == "insert"]
    started = [e[2] for e in inserts if e[0] == "started"]
    assert [e[2] for e in inserts if e[0] != "started"] == started  # every reply, in order
    assert [e[0] for e in inserts if e[0] != "started"] == ["succeeded"] * 10 + ["failed"]


def test_pipeline_through_a_replica_set_is_pinned_to_the_primary(make_rs_client):
    c = make_rs_client()
    name = unique_app("rs")
    coll = c[name].counts
    try:
        with c.start_request(pipeline=True) as req:
            # A secondary read first: the request pins a socket there too, and writes must not use it.
            coll.with_options(read_preference=ReadPreference.SECONDARY).find_one({})
            results = [coll.update_one({"_id": i % 10}, {"$inc": {"n": 1}}, upsert=True) for i in range(1000)]
            assert coll.find_one({"_id": 3})["n"] == 100  # a primary read syncs first
            pinned = [s.pool.pinned_socket() for s in c._topology.servers]
            carriers = [s for s in pinned if s is not None and s.pipeline is not None and s.pipeline.count]
            assert [s.address for s in carriers] == [c.primary]  # one socket, to the primary
            assert carriers[0].pipeline.count == 1000
            req.sync()
        assert sum(1 for r in results if r.upserted_id is not None) == 10
        assert sum(r.matched_count for r in results) == 990
    finally:
        c.drop_database(name)


def test_pipeline_on_a_compressed_connection(make_client, db):
    c = make_client(compressors="zlib")
    coll = c[db.name].zipped
    with c.start_request(pipeline=True):
        results = [coll.insert_one({"_id": i, "pad": "z" * 500}) for i in range(300)]
        assert c.pool.pinned_socket().compressor.name == "zlib"  # OP_COMPRESSED both ways
        assert coll.count_documents({}) == 300
    assert [r.inserted_id for r in results] == list(range(300))


def test_a_pipeline_nested_in_a_plain_request_syncs_when_it_ends(client, db):
    coll = db.nested
    with client.start_request():
        with pytest.raises(PipelineError):
            with client.start_request(pipeline=True):
                coll.insert_one({"_id": 1})
                r = coll.insert_one({"_id": 1})
                assert "pending" in repr(r)
        # The inner block's end was a sync point; the rest of the plain request does not pipeline.
        with pytest.raises(DuplicateKeyError):
            coll.insert_one({"_id": 1})
        assert isinstance(coll.insert_one({"_id": 2}), InsertOneResult)
        assert "pending" not in repr(coll.update_one({"_id": 2}, {"$set": {"a": 1}}))


@pytest.mark.parametrize("sync_point", ["find", "command", "getMore", "distinct"])
def test_cursors_and_commands_are_sync_points(client, db, sync_point):
    coll = db.syncs
    coll.insert_many([{"_id": i, "n": 0} for i in range(10)])
    cursor = coll.find({}, batch_size=2)
    first = next(cursor)  # the first batch, before the pipeline's writes
    with client.start_request(pipeline=True):
        results = [coll.update_one({"_id": i}, {"$inc": {"n": 1}}) for i in range(10)]
        assert all("pending" in repr(r) for r in results)
        if sync_point == "find":
            seen = [d["n"] for d in coll.find({}, sort=[("_id", 1)])]
            assert seen == [1] * 10
        elif sync_point == "command":
            db.command("ping")
        elif sync_point == "getMore":
            rest = list(cursor)  # getMores on the request's socket
            assert [d["n"] for d in rest][-1] == 1
        else:
            assert coll.distinct("n") == [1]
        assert all("pending" not in repr(r) for r in results)
    assert first["_id"] == 0


@pytest.mark.modes("gevent-patched", "gevent-unpatched")
@pytest.mark.parametrize("after", [0.02, 0.05, 0.1])
def test_a_gevent_timeout_mid_pipeline_loses_nothing_silently(mode, client, db, after):
    """A gevent.Timeout lands wherever it lands (in a send, a read, or between writes).

    Afterwards every write is either acknowledged or reported unknown, the
    server's count agrees, and the request goes on.
    """
    import gevent

    coll = db.timeout
    coll.insert_one({"_id": 1, "n": 0})
    results: list = []
    with client.start_request(pipeline=True) as req:
        try:
            with gevent.Timeout(after):
                for i in range(1_000_000):
                    results.append(coll.update_one({"_id": 1}, {"$inc": {"n": 1}}))
                    if i % 100 == 0:
                        gevent.sleep(0)
        except gevent.Timeout:
            pass
        unknown: list = []
        try:
            req.sync()
        except AutoReconnect as exc:
            unknown = unknown_writes(exc)
        acknowledged = 0
        for i, r in enumerate(results):
            if unknown and i >= unknown[0]:
                with pytest.raises(AutoReconnect):
                    r.modified_count
            else:
                assert r.modified_count == 1
                acknowledged += 1
        assert unknown == list(range(acknowledged, len(results)))
        n = coll.find_one({"_id": 1})["n"]  # the request goes on
    assert acknowledged <= n <= len(results)


def test_a_pipelines_reports_are_never_retried_away():
    """A read whose sync raises a pipeline's report must not be retried: the retry would swallow it."""
    from mongo_requests.retry import is_retryable_read_error, is_retryable_write_error

    # A write that failed because the server was shutting down (code 91, a retryable read code).
    shutting_down = OperationFailure("The server is in quiesce mode", 91, {"code": 91, "errmsg": "quiesce"})
    assert is_retryable_read_error(shutting_down)
    failed = PipelineError([(3, shutting_down)])
    assert failed.code == 91 and [i for i, _ in failed.errors] == [3]
    lost = AutoReconnect("connection lost in a pipeline", {"unknownWrites": [4, 5]})
    for exc in (failed, lost):
        assert not is_retryable_read_error(exc) and not is_retryable_write_error(exc)
    assert is_retryable_read_error(AutoReconnect("an ordinary network error"))


def test_a_dropped_request_object_pipelines_until_client_end_request(make_client, db):
    """PyMongo 2's form: start_request(pipeline=True) as a statement, client.end_request() to end it.

    Nothing keeps the Request object, yet the writes between pipeline (a
    duplicate key surfaces at the sync point, not at its insert_one), and
    leaving the request ends its count in pipeline.OPEN.
    """
    import gc

    c = make_client()
    coll = c[db.name].dropped_request
    coll.insert_one({"_id": 1})
    c.start_request(pipeline=True)  # the returned Request is dropped at once
    gc.collect()
    assert OPEN
    coll.insert_one({"_id": 1})  # pipelined: no DuplicateKeyError here
    coll.insert_one({"_id": 2})
    with pytest.raises(PipelineError) as info:
        c.end_request()
    assert [(i, type(e)) for i, e in info.value.errors] == [(0, DuplicateKeyError)]
    assert not OPEN
    assert not c.in_request()
    assert sorted(d["_id"] for d in coll.find()) == [1, 2]
