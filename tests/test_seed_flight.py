"""A lone seed's check in flight: callers that arrive meanwhile wait for its outcome, whatever it is.

``Topology._check_seed`` runs one check at a time (:mod:`mongo_requests.flight`);
the callers that find the seed undescribed while it runs wait for it instead
of checking out a socket each.  These scenarios check what must hold when
that check fails, hangs, or its caller dies: nobody hangs, deadlines hold,
a server that comes back is found, and a caller that dies or gives up while
waiting leaves nothing behind.  The count of checks is the user's view of
them: heartbeat events (tests/helpers.Heartbeats).  The happy path (many
callers on a new client, one check) is in tests/test_greenlets.py.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
from pymongo.errors import ServerSelectionTimeoutError
from pymongo.uri_parser import parse_uri

from helpers import (
    GEVENT_MODES,
    MIXED,
    THREADS,
    Heartbeats,
    assert_quiet,
    in_forked_child,
    pool_stats,
    report,
    short,
    wait_until,
)
from mongo_requests.testing_proxy import DelayProxy

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("watchdog")]


def _frozen_seed() -> socket.socket:
    """A listening socket that never accepts: the kernel completes TCP handshakes, nothing answers a hello."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(512)
    return lsock


def _free_port() -> int:
    """A port nothing listens on (yet): connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _seed_client(mode, port: int, beats: Heartbeats, **kwargs):
    options = {"max_pool_size": 5, "connectTimeoutMS": 20000, "event_listeners": [beats], **kwargs}
    return mode.client("127.0.0.1:%d" % port, **options)


def _ping_all(mode, client, n: int, errors: list, elapsed: list | None = None) -> list:
    """Start ``n`` workers that each ping once; their failures go to ``errors`` (and times to ``elapsed``)."""

    def work() -> None:
        t0 = time.monotonic()
        try:
            client.admin.command("ping")
        except Exception as exc:
            errors.append(exc)
        finally:
            if elapsed is not None:
                elapsed.append(time.monotonic() - t0)

    return [mode.spawn(work) for _ in range(n)]


def test_callers_waiting_on_a_hung_check_raise_selection_errors_by_their_deadline(request, mode):
    # The seed is frozen: the first caller's check waits for a hello reply
    # until its deadline.  The callers that arrived meanwhile wait for that
    # check, each bounded by its own deadline, and then fail the way server
    # selection fails: ServerSelectionTimeoutError.  (Before, each ran a
    # check of its own: 5 at a time, the cap, the rest queued in the pool
    # and failed with a wait-queue timeout.)
    n = 50 if mode.name == THREADS else 300
    timeout = 1.0
    lsock = _frozen_seed()
    beats = Heartbeats()
    client = _seed_client(mode, lsock.getsockname()[1], beats, serverSelectionTimeoutMS=int(timeout * 1000))
    errors: list = []
    elapsed: list = []
    try:
        alive = mode.join(_ping_all(mode, client, n, errors, elapsed), 30)
        stats = pool_stats(client)
    finally:
        client.close()
        lsock.close()
    kinds = sorted({type(e).__name__ for e in errors})
    report(request, callers=n, checks=dict(beats.counts), kinds=kinds, slowest=round(max(elapsed), 3))
    assert alive == 0
    assert len(errors) == n and kinds == ["ServerSelectionTimeoutError"], [short(e) for e in errors[:3]]
    # A hang guard, not a speed figure: every caller gave up near its own deadline.
    assert max(elapsed) < timeout + 5, max(elapsed)
    # A handful of checks for the whole crowd, not one per caller.
    assert 1 <= beats.counts["started"] <= 5, beats.counts
    assert_quiet(stats, 5)


def test_callers_find_a_seed_that_comes_back(request, mode, mongodb_uri):
    # The seed is down (connections refused): each check fails at once and
    # marks it unknown; the waiting callers must not all fail with that
    # error, but go on checking (one check at a time, every 0.05-0.5 s)
    # until their deadline.  The server comes back: everyone succeeds.
    n = 50 if mode.name == THREADS else 300
    port = _free_port()
    beats = Heartbeats()
    client = _seed_client(mode, port, beats, serverSelectionTimeoutMS=30000)
    target = parse_uri(mongodb_uri)["nodelist"][0]
    errors: list = []
    relay = None
    try:
        workers = _ping_all(mode, client, n, errors)
        assert wait_until(lambda: beats.counts["failed"] >= 3, 20, 0.01, mode.sleep), beats.counts
        relay = DelayProxy(target, delay=0.0, port=port).start()
        alive = mode.join(workers, 40)
        stats = pool_stats(client)
    finally:
        client.close()
        if relay is not None:
            relay.stop()
    report(request, callers=n, checks=dict(beats.counts))
    assert (alive, [short(e) for e in errors[:3]]) == (0, [])
    assert beats.counts["succeeded"] == 1, beats.counts
    # The failed checks were the flights', not one per caller per retry.
    assert beats.counts["started"] < n // 2, beats.counts
    assert stats["checkouts"] == n + 1, stats  # n pings and the one check that succeeded
    assert_quiet(stats, 5)


# ---------------------------------------------------------------------------
# Kills: the check's caller, and the callers waiting for it
# ---------------------------------------------------------------------------
@pytest.mark.modes(*GEVENT_MODES)
def test_kills_while_waiting_for_a_check_leave_nothing_behind(mode):
    gevent = mode.gevent
    lsock = _frozen_seed()
    beats = Heartbeats()
    client = _seed_client(mode, lsock.getsockname()[1], beats, serverSelectionTimeoutMS=20000)
    flight = client._topology._seed_flight
    errors: list = []
    try:
        leader = _ping_all(mode, client, 1, errors)[0]
        assert wait_until(lambda: flight.aloft, 5, 0.005, gevent.sleep)
        waiters = _ping_all(mode, client, 20, errors)
        assert wait_until(lambda: flight.waiting == 20, 5, 0.005, gevent.sleep), flight.waiting
        assert beats.counts["started"] == 1, beats.counts
        # Ten waiters die: they leave the flight's queue.
        gevent.killall(waiters[:10], block=True, timeout=5)
        assert all(w.dead for w in waiters[:10]) and flight.waiting == 10, flight.waiting
        # The leader dies mid-check: its flight lands, and one waiter takes off at once
        # (a new check, a new connection) while the others wait for it.
        leader.kill(block=True, timeout=5)
        assert wait_until(lambda: beats.counts["started"] == 2 and flight.waiting == 9, 5, 0.005, gevent.sleep), (
            beats.counts,
            flight.waiting,
        )
        assert flight.aloft
        gevent.killall(waiters[10:], block=True, timeout=5)
        assert all(w.dead for w in waiters)
        assert (flight.aloft, flight.waiting) == (False, 0)
        assert errors == []  # a kill is not an error
        gevent.sleep(0.05)
        stats = pool_stats(client)
        assert_quiet(stats, 5)
        assert stats["open"] == 0, stats  # the killed checks' half-open sockets were closed
    finally:
        client.close()
        lsock.close()


@pytest.mark.modes(*GEVENT_MODES)
def test_a_caller_that_gave_up_on_a_check_is_not_woken_by_its_landing(mode, make_client):
    # A greenlet reuses one waiter for all its waits.  One that gives up
    # waiting for a check (a gevent.Timeout) and then queues for a slot of
    # another pool must not be handed that slot's wait outcome by the
    # check's landing: the flight let go of its waiter when it gave up.
    gevent = mode.gevent
    lsock = _frozen_seed()
    beats = Heartbeats()
    frozen = _seed_client(mode, lsock.getsockname()[1], beats, serverSelectionTimeoutMS=20000)
    flight = frozen._topology._seed_flight
    busy = make_client(max_pool_size=1)
    holding = mode.event()
    release = mode.event()
    outcome: dict = {}
    errors: list = []

    def holder() -> None:
        with busy.start_request():
            busy.admin.command("ping")  # the pool's only socket, pinned
            holding.set()
            release.wait(20)

    def victim() -> None:
        try:
            with gevent.Timeout(0.3):
                frozen.admin.command("ping")
            outcome["frozen"] = "completed"
        except gevent.Timeout:
            outcome["frozen"] = "Timeout"
        try:
            outcome["busy"] = busy.admin.command("ping")["ok"]  # queues: the holder has the socket
        except Exception as exc:
            outcome["busy"] = short(exc)

    try:
        leader = _ping_all(mode, frozen, 1, errors)[0]
        h = gevent.spawn(holder)
        assert holding.wait(10) and wait_until(lambda: flight.aloft, 5, 0.005, gevent.sleep)
        v = gevent.spawn(victim)
        assert wait_until(lambda: busy.pool.get_stats()["waiting"] == 1, 5, 0.005, gevent.sleep)
        assert outcome["frozen"] == "Timeout" and flight.waiting == 0, (outcome, flight.waiting)
        leader.kill(block=True, timeout=5)  # the check lands while the victim waits for a slot
        gevent.sleep(0.05)
        assert "busy" not in outcome, outcome  # still waiting for the slot, not woken by the landing
        release.set()
        assert gevent.joinall([h, v], timeout=10) and v.dead and h.dead
        assert outcome == {"frozen": "Timeout", "busy": 1.0}, outcome
        assert_quiet(pool_stats(busy), 1)
    finally:
        release.set()
        frozen.close()
        lsock.close()


# ---------------------------------------------------------------------------
# Threads, each with its own hub: a landing wakes waiters of other hubs
# ---------------------------------------------------------------------------
@pytest.mark.modes(MIXED)
def test_greenlets_of_several_threads_share_one_check(mode, make_client):
    import gevent

    threads, per_thread = 4, 50
    beats = Heartbeats()
    client = make_client(max_pool_size=5, event_listeners=[beats])
    errors: list = []
    ready = threading.Barrier(threads)

    def ping() -> None:
        try:
            client.admin.command("ping")
        except Exception as exc:
            errors.append(exc)

    def thread_main() -> None:
        ready.wait(30)
        gevent.joinall([gevent.spawn(ping) for _ in range(per_thread)], timeout=30)

    ts = [threading.Thread(target=thread_main, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not any(t.is_alive() for t in ts)
    assert errors == [], [short(e) for e in errors[:3]]
    stats = pool_stats(client)
    assert stats["checkouts"] == threads * per_thread + 1, stats
    assert dict(beats.counts) == {"started": 1, "succeeded": 1}, beats.counts


# ---------------------------------------------------------------------------
# Fork: a check led by a thread that the child does not have
# ---------------------------------------------------------------------------
@pytest.mark.modes(THREADS)
def test_a_forked_child_does_not_wait_for_a_check_of_the_parents_thread(mode):
    # A thread of the parent is checking a frozen seed when the process
    # forks.  That thread does not exist in the child, so its check never
    # lands there: a caller in the child must check for itself (and fail by
    # its deadline, the seed being frozen), not wait for a ghost.
    lsock = _frozen_seed()
    beats = Heartbeats()
    client = _seed_client(mode, lsock.getsockname()[1], beats, serverSelectionTimeoutMS=3000)
    flight = client._topology._seed_flight
    leader = threading.Thread(target=lambda: _swallow(client.admin.command, "ping"), daemon=True)
    leader.start()
    try:
        assert wait_until(lambda: flight.aloft, 5, 0.005)

        def child() -> dict:
            aloft = flight.aloft
            before = beats.counts["started"]
            try:
                client.admin.command("ping")
                result = "completed"
            except ServerSelectionTimeoutError:
                result = "ServerSelectionTimeoutError"
            return {"aloft": aloft, "checks": beats.counts["started"] - before, "result": result, "pid": os.getpid()}

        got = in_forked_child(child)
    finally:
        client.close()
        lsock.close()
        leader.join(10)
    assert got.get("pid") not in (None, os.getpid()), got
    assert got["aloft"] is False and got["result"] == "ServerSelectionTimeoutError", got
    assert got["checks"] >= 1, got  # it checked for itself


def _swallow(fn, *args) -> None:
    try:
        fn(*args)
    except Exception:
        pass
