"""A caller's request records: one store per caller, shared by every topology and pool.

The records hang on the caller (the greenlet object, or a process-wide
thread-local for threads), and the caller's death is watched once, for all of
them (mongo_requests.identity ``calls()``).  These tests check what that
sharing must not break, with the server as the witness: a pool whose socket
is reclaimed from a dead caller hands the same server connection
(``hello``'s ``connectionId``) to the next caller, and a pool of one socket
whose socket was never reclaimed makes that caller time out.
"""

from __future__ import annotations

import gc

import pytest
from pymongo.read_preferences import Secondary

from helpers import MODES, PATCHED, THREADS, UNPATCHED, conn_id, gc_disabled, wait_until
from mongo_requests.identity import CALLS

ALL_MODES = MODES


@pytest.mark.modes(*ALL_MODES)
def test_a_caller_that_dies_in_requests_with_two_clients_frees_both_sockets(mode, make_client):
    """One death watch per caller reclaims the pins of every pool it used, not only the first one's."""
    workers = 5
    # One socket each: worker k+1 gets them only once worker k's death gave both back.
    a = make_client(max_pool_size=1, waitQueueTimeoutMS=10000)
    b = make_client(max_pool_size=1, waitQueueTimeoutMS=10000)
    seen: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            a.start_request()
            first = conn_id(a)
            b.start_request()
            seen.append((first, conn_id(b)))
            assert a.in_request() and b.in_request()
            # ...and die without end_request on either.
        except BaseException as exc:  # reported below
            errors.append(exc)

    handles = [mode.spawn(work) for _ in range(workers)]
    assert mode.join(handles, 60) == 0
    assert not errors, errors
    assert len(seen) == workers
    # Every worker was served by the same two server connections, one per client.
    assert len({ids[0] for ids in seen}) == 1 and len({ids[1] for ids in seen}) == 1, seen
    for client in (a, b):
        pinned = client.pool.get_stats
        assert wait_until(lambda pinned=pinned: pinned()["pinned"] == 0, sleep=mode.sleep), client.pool.get_stats()
        stats = client.pool.get_stats()
        assert stats["reclaimed"] == workers and stats["created"] == 1, stats
        assert stats["open"] == stats["idle"] == 1, stats
    if mode.green:
        # A dead greenlet object may stay referenced (here, by handles): its records hold nothing any more.
        for handle in handles:
            records = getattr(handle, CALLS)
            # a's and b's pool: a lone server's pool carries the request alone (topology_requests).
            assert len(records) == 2
            for record in records.values():
                assert record.depth == 0 and not getattr(record, "sock", None), record
                assert not isinstance(record, set) or not record  # a topology's: no pools held


@pytest.mark.modes(*ALL_MODES)
def test_requests_of_two_clients_in_one_caller_keep_their_own_depth(make_client):
    """Two owners' records in one store: ending one client's request leaves the other's pinned."""
    a = make_client(max_pool_size=5)
    b = make_client(max_pool_size=5)
    with a.start_request():
        a_id = conn_id(a)
        with b.start_request():
            b_id = conn_id(b)
            with a.start_request():  # nested in a: only a's depth grows
                assert conn_id(a) == a_id
            assert a.in_request() and conn_id(a) == a_id
        assert not b.in_request() and b.pool.get_stats()["pinned"] == 0
        assert a.pool.get_stats()["pinned"] == 1 and conn_id(a) == a_id
        with b.start_request():
            # b's socket went back idle, and its one idle socket is the one pinned again.
            assert conn_id(b) == b_id
    assert not a.in_request() and a.pool.get_stats()["pinned"] == 0
    assert a.pool.get_stats()["requests_ended"] == 1 and b.pool.get_stats()["requests_ended"] == 2


@pytest.mark.modes(*ALL_MODES)
def test_a_long_lived_caller_keeps_no_records_of_freed_clients(make_client, mongodb_uri, mode):
    """The store drops the records of owners that were freed when it files a new one."""
    keeper = make_client()
    with keeper.start_request():
        conn_id(keeper)
    calls = getattr(keeper.identity.current(), CALLS)
    baseline = len(calls)
    for _ in range(20):
        c = mode.client(mongodb_uri)
        with c.start_request():
            conn_id(c)
        c.close()
        del c
        gc.collect()
    with keeper.start_request():  # files nothing new: keeper's records exist
        conn_id(keeper)
    fresh = make_client()
    with fresh.start_request():  # files two records (topology, pool), dropping the freed clients'
        conn_id(fresh)
    assert len(calls) <= baseline + 2, len(calls)
    assert getattr(keeper.identity.current(), CALLS) is calls


@pytest.mark.modes(PATCHED, UNPATCHED)
def test_a_raw_greenlet_that_dies_in_a_request_frees_its_socket(mode, make_client):
    """A raw greenlet (no rawlink) is watched by a process-wide weakref: its socket comes back when it is freed."""
    gevent = mode.gevent
    c = make_client(max_pool_size=1, waitQueueTimeoutMS=10000)
    ids: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            c.start_request()
            ids.append(conn_id(c))
        except BaseException as exc:  # reported below
            errors.append(exc)

    for _ in range(3):
        glet = gevent.spawn_raw(work)
        assert wait_until(lambda glet=glet: glet.dead, timeout=30, sleep=mode.sleep), "the raw greenlet did not finish"
        del glet  # the last reference: the weakref's callback reclaims the pin
        gc.collect()
    assert not errors, errors
    assert len(ids) == 3 and len(set(ids)) == 1, ids
    assert wait_until(lambda: c.pool.get_stats()["pinned"] == 0, sleep=mode.sleep), c.pool.get_stats()
    assert c.pool.get_stats()["reclaimed"] == 3


def _hello(c, read_preference=None) -> tuple[str, int]:
    """The member that answered ``hello``, and the server's id of the connection it came on."""
    reply = c.admin.command("hello", read_preference=read_preference)
    return reply["me"], reply["connectionId"]


@pytest.mark.modes(THREADS, PATCHED, UNPATCHED)
def test_a_caller_that_dies_in_a_request_on_two_members_frees_both_sockets(replica_set, make_rs_client, mode):
    """One request, two pools of one topology (primary and a secondary): the death watch frees both pins."""
    c = make_rs_client(max_pool_size=1, waitQueueTimeoutMS=10000)
    secondary = Secondary()
    seen: list[tuple[tuple[str, int], tuple[str, int]]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            c.start_request()
            seen.append((_hello(c), _hello(c, secondary)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    for _ in range(3):  # one after another: each must find both sockets given back
        assert mode.join([mode.spawn(work)], 60) == 0
    assert not errors, errors
    assert len(seen) == 3
    primaries = {s[0] for s in seen}
    assert len(primaries) == 1, seen
    # The request's secondary may differ between callers, but each member's one socket is reused.
    members = {}
    for _, (me, cid) in seen:
        members.setdefault(me, set()).add(cid)
    assert all(len(ids) == 1 for ids in members.values()), seen
    pools = [server.pool for server in c._topology.servers]
    assert wait_until(lambda: all(p.get_stats()["pinned"] == 0 for p in pools), sleep=mode.sleep), [
        p.get_stats() for p in pools
    ]
    assert sum(p.get_stats().get("reclaimed", 0) for p in pools) == 6


@pytest.mark.modes(THREADS, PATCHED, UNPATCHED)
def test_a_request_begun_on_a_lone_seed_spans_the_replica_set_the_seed_belongs_to(replica_set, make_rs_client, mode):
    """A request begun while the client knew one seed only (its pool carries such a request alone) goes on
    once the seed turns out to be a replica set member: the members it uses then join it, each on one
    connection across a nested end, and only the outermost end frees the pins, on every member."""
    seed = replica_set.secondaries()[0]
    c = make_rs_client("mongodb://%s:%d/" % seed.address, max_pool_size=5)  # one seed, no replicaSet
    secondary = Secondary()
    seen: list[tuple[object, ...]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            c.start_request()  # nothing checked yet: the seed is the only server
            c.start_request()
            first = (_hello(c), _hello(c, secondary))  # finds the set: the primary joins the request
            c.end_request()
            inside = c.in_request()
            second = (_hello(c), _hello(c, secondary))
            c.end_request()
            seen.append((first, second, inside, c.in_request()))
        except BaseException as exc:  # reported below
            errors.append(exc)

    assert mode.join([mode.spawn(work)], 60) == 0
    assert not errors, errors
    ((first, second, inside, after),) = seen
    assert inside and not after
    assert first == second, (first, second)  # the same member and connection, primary and secondary
    pools = [server.pool for server in c._topology.servers]
    assert len(pools) == 3
    assert all(p.get_stats()["pinned"] == 0 for p in pools), [p.get_stats() for p in pools]
    started = sum(p.get_stats().get("requests_started", 0) for p in pools)
    assert started >= 2 and sum(p.get_stats().get("requests_ended", 0) for p in pools) == started


@pytest.mark.modes(PATCHED, UNPATCHED)
@pytest.mark.parametrize("ends", [True, False], ids=["ended", "died-in-it"])
def test_a_greenlet_that_ran_a_request_is_freed_without_the_garbage_collector(mode, make_client, ends):
    """A greenlet's request records (and its death watch) must not refer back to it: a cycle would keep every
    greenlet that ever began a request, and all it holds, alive until a collection."""
    import weakref

    c = make_client(max_pool_size=1)
    ids: list[int] = []

    def work() -> None:
        c.start_request()
        ids.append(conn_id(c))  # pins the socket
        if ends:
            c.end_request()

    glet = mode.spawn(work)
    assert mode.join([glet], 30) == 0
    assert ids and wait_until(lambda: c.pool.get_stats()["pinned"] == 0, sleep=mode.sleep), c.pool.get_stats()
    ref = weakref.ref(glet)
    with gc_disabled():
        del glet
        mode.gevent.sleep(0)  # let the hub drop its own references
        assert ref() is None
