"""Requests through mongos, with mongo_requests.testing_proxy.MongosProxy.

There is no mongos binary here, so the proxy simulates the one property that
matters (SERVER-12273): it says ``isdbgrid`` in its hello and forwards each
client message over one of several connections to the real mongod, chosen at
random, without waiting for a ``w=0`` write.  A slow ``w=0`` write followed by
a read can then run on two server connections at once.  Without the fix a
request misses its own write; with it (``w=0`` writes sent as pipelined
acknowledged writes) it never does.
"""

from __future__ import annotations

import pytest

from helpers import unique_app
from mongo_requests import pipeline
from mongo_requests.testing_proxy import DelayProxy, MongosProxy

# Evaluated once per matching document: the update takes 60 ms on the server.
SLOW = "sleep(60) || true"
ROUNDS = 8


@pytest.fixture(scope="module")
def proxy(mongod, mongodb_uri):
    if mongod is not None:
        target = mongod.address
    else:  # MONGODB_URI: its first host
        from pymongo.uri_parser import parse_uri

        target = parse_uri(mongodb_uri)["nodelist"][0]
    with MongosProxy(target, backends=4) as p:
        yield p


def _stale_reads(mode, client, coll) -> int:
    """Rounds where a request's read missed its own slow w=0 update."""
    coll.insert_one({"_id": 1, "n": 0})
    misses = 0
    for i in range(1, ROUNDS + 1):
        with client.start_request():
            coll.update_one({"$where": SLOW}, {"$inc": {"n": 1}}, w=0)
            if coll.find_one({"_id": 1})["n"] != i:
                misses += 1
        # Let a missed write land before the next round counts.
        mode.sleep(0.1)
        while coll.find_one({"_id": 1})["n"] != i:
            mode.sleep(0.02)
    return misses


def test_the_proxy_is_a_mongos_to_the_client(mode, proxy):
    c = mode.client(proxy.uri)
    try:
        hello = c.admin.command("hello")
        assert hello["msg"] == "isdbgrid"
        assert "logicalSessionTimeoutMinutes" not in hello  # the simulation does not do sessions
        with c.start_request():
            c.admin.command("ping")
            assert c.pool.pinned_socket().pipeline is not None  # a mongos request gets a pipeline
    finally:
        c.close()


def test_without_the_fix_a_request_misses_its_w0_write(mode, proxy, monkeypatch):
    monkeypatch.setattr(pipeline, "MONGOS_W0_ACKNOWLEDGED", False)
    c = mode.client(proxy.uri)
    name = unique_app("mp")
    try:
        misses = _stale_reads(mode, c, c[name].docs)
    finally:
        c.drop_database(name)
        c.close()
    # Each round misses with probability 3/4 (the read goes to another of 4 connections).
    assert misses >= 1


def test_with_the_fix_a_request_never_misses(mode, proxy):
    c = mode.client(proxy.uri)
    name = unique_app("mp")
    try:
        assert _stale_reads(mode, c, c[name].docs) == 0
    finally:
        c.drop_database(name)
        c.close()


def test_w0_bulk_and_pipeline_through_the_proxy(mode, proxy):
    c = mode.client(proxy.uri)
    name = unique_app("mp")
    coll = c[name].docs
    try:
        with c.start_request():
            coll.insert_many([{"_id": i} for i in range(50)], w=0)
            coll.update_many({"$where": SLOW, "_id": 0}, {"$set": {"seen": True}}, w=0)
            assert coll.count_documents({}) == 50
            assert coll.find_one({"_id": 0})["seen"] is True
        with c.start_request(pipeline=True):
            results = [coll.update_one({"_id": i}, {"$inc": {"n": 1}}) for i in range(50)]
            coll.update_one({"$where": SLOW, "_id": 0}, {"$set": {"slow": True}}, w=0)
            assert coll.find_one({"_id": 0})["slow"] is True
        assert sum(r.modified_count for r in results) == 50
    finally:
        c.drop_database(name)
        c.close()


def test_delay_proxy_adds_its_delay(mode, mongod, mongodb_uri):
    import time

    target = mongod.address if mongod is not None else None
    if target is None:
        from pymongo.uri_parser import parse_uri

        target = parse_uri(mongodb_uri)["nodelist"][0]
    with DelayProxy(target, delay=0.005) as p:
        c = mode.client(p.uri)
        try:
            c.admin.command("ping")
            start = time.monotonic()
            for _ in range(5):
                c.admin.command("ping")
            per_ping = (time.monotonic() - start) / 5
        finally:
            c.close()
    assert per_ping >= 0.010  # two 5 ms hops per round trip
