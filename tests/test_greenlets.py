"""Concurrency scenarios against the real mongod, in whichever test mode this pytest process runs.

Each test measures and asserts in one place.  The ``mode`` fixture
(tests/conftest.py, helpers.Mode) says what a worker is (an OS thread, or a
greenlet under gevent, patched or not) and how to wait; tests/run_mode.py
starts pytest in a mode, and a plain ``python -m pytest`` also runs these
files in the other modes in child processes (tests/test_modes.py).  The
kill, stall and mixed-mode scenarios are in tests/test_greenlet_kills.py.

Server connections are the server's own count (``serverStatus``), taken by a
separate client: the figures are "over the baseline" measured before the
client under test opened anything.  Every wait is bounded, so a deadlock
shows up as a failed assertion; as a last resort the ``watchdog`` fixture dumps
every thread's stack and exits.

Set ``GREENLET_MATRIX_LOG=/path/file.jsonl`` to collect the figures each
test measured.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from helpers import (
    GEVENT_MODES,
    PATCHED,
    THREADS,
    UNPATCHED,
    Gate,
    Heartbeats,
    Mode,
    assert_quiet,
    child_env,
    fail_point,
    pool_stats,
    report,
    run_child,
    short,
    unique_app,
)
from mongo_requests import PoolTimeoutError

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("watchdog")]


# ---------------------------------------------------------------------------
# 1. pinning
# ---------------------------------------------------------------------------
def test_pinning_one_socket_per_request(request, mode, make_client, monitor, scratch):
    # 50 OS threads are plenty to show thread identity; 200 greenlets are cheap.
    n = 50 if mode.name == THREADS else 200
    monitor.admin_client[scratch].c.insert_many([{"w": i} for i in range(n)])
    client = make_client(max_pool_size=n)
    assert client.use_greenlets is mode.expect_greenlets
    coll = client[scratch].c
    per_worker: dict = {}
    snapshot: list = []
    errors: list = []
    all_in, recorded = Gate(mode, n), Gate(mode, n)
    pinned_at_gate = []

    def work(wid: int) -> None:
        ids = []
        try:
            with client.start_request():
                for _ in range(5):
                    ids.append(client.admin.command("hello")["connectionId"])
                    if coll.find_one({"w": wid}) is None:
                        raise AssertionError("find_one found nothing")
                all_in.arrive()
                if not all_in.wait(30):
                    raise RuntimeError("gate: only %d of %d workers arrived" % (all_in.count, n))
                # Every worker is inside its request now, and none leaves
                # before all have recorded: these pairs are simultaneous.
                cid = client.admin.command("hello")["connectionId"]
                ids.append(cid)
                snapshot.append((cid, wid))
                if recorded.arrive():
                    pinned_at_gate.append(pool_stats(client)["pinned"])
                if not recorded.wait(30):
                    raise RuntimeError("gate: only %d of %d workers recorded" % (recorded.count, n))
                ids.append(client.admin.command("hello")["connectionId"])
        except Exception as exc:
            errors.append(short(exc))
        finally:
            per_worker[wid] = ids

    monitor.start()
    t0 = time.monotonic()
    alive = mode.join([mode.spawn(work, i) for i in range(n)], 90)
    elapsed = time.monotonic() - t0
    peak = monitor.stop()
    mode.sleep(0.1)
    stats = pool_stats(client)
    report(request, workers=n, elapsed=round(elapsed, 3), peak_over_baseline=peak, stats=stats)
    assert (len(errors), alive) == (0, 0), errors[:5]
    assert len(per_worker) == n
    assert sorted({len(v) for v in per_worker.values()}) == [7]  # 5 in the loop + 2 around the gate
    # Every request saw exactly one server connection...
    assert [len(set(v)) for v in per_worker.values()] == [1] * n
    # ...and while all n requests were alive at once, no two shared one.
    assert len(snapshot) == n and len({w for _, w in snapshot}) == n
    assert len({cid for cid, _ in snapshot}) == n
    assert pinned_at_gate == [n]
    assert_quiet(stats, n)
    assert stats["pins"] == n and stats["requests_ended"] == n, stats
    assert peak <= n, monitor.samples


# ---------------------------------------------------------------------------
# 2. read-your-own-writes with w=0
# ---------------------------------------------------------------------------
RYW_BLOCK_MS = 100


def _ryw_control(mode: Mode, n: int, writer, reader, key0: int, errors: list) -> tuple[int, int]:
    """w=0 insert_many with ``writer`` then count with ``reader``, no request: (violations, still alive)."""
    stale: list = []

    def unpinned(wid: int) -> None:
        key = key0 - wid
        size = random.Random(wid).randint(100, 200)
        try:
            writer.insert_many([{"k": key, "i": j} for j in range(size)], w=0)
            if reader.count_documents({"k": key}) != size:
                stale.append(wid)
        except Exception as exc:
            errors.append(short(exc))

    alive = mode.join([mode.spawn(unpinned, i) for i in range(n)], 90)
    return len(stale), alive


def test_ryw_unacknowledged_writes_in_requests(request, mode, make_client, monitor, scratch):
    # 50 OS threads keep the threads run short; 500 greenlets share 100 sockets.
    n = 50 if mode.name == THREADS else 500
    admin = monitor.admin_client
    admin[scratch].c.create_index("k")
    # The server holds every insert from these clients for RYW_BLOCK_MS before
    # applying it (failCommand blockConnection, which applies to w=0 inserts
    # too).  Within a request the count is queued behind the insert on the
    # same connection, so it must still see every document; a count sent on
    # another connection would run first and miss them.
    appname = unique_app("ryw")
    client = make_client(appname=appname)  # max_pool_size default: 100
    assert client.use_greenlets is mode.expect_greenlets
    assert client.max_pool_size == 100
    coll = client[scratch].c
    violations: list = []
    errors: list = []
    docs_written = [0]

    def work(wid: int) -> None:
        size = random.Random(wid).randint(100, 200)
        try:
            with client.start_request():
                coll.insert_many([{"k": wid, "i": j} for j in range(size)], w=0)
                got = coll.count_documents({"k": wid})
            docs_written[0] += size
            if got != size:
                violations.append((wid, size, got))
        except Exception as exc:
            errors.append(short(exc))

    ctl_client = make_client(appname=appname)
    with fail_point(
        admin, "alwaysOn", failCommands=["insert"], blockConnection=True, blockTimeMS=RYW_BLOCK_MS, appName=appname
    ):
        monitor.start()
        t0 = time.monotonic()
        alive = mode.join([mode.spawn(work, i) for i in range(n)], 90)
        elapsed = time.monotonic() - t0
        peak = monitor.stop()
        total = admin[scratch].c.count_documents({"k": {"$gte": 0}})
        stats = pool_stats(client)
        # Control 1 (asserted): the count on another connection.  A second
        # client, whose connections never carry inserts, counts right after
        # each w=0 insert: it overtakes the held insert, so the check can fail.
        reader = make_client(appname=unique_app("ryw-reader"))
        other_violations, other_alive = _ryw_control(mode, n, ctl_client[scratch].c, reader[scratch].c, -1, errors)
    # Control 2 (reported only): the plain workload (no hold) on one client
    # without a request.  The count goes to whichever socket comes free;
    # whether it overtakes depends on timing: it usually does for some of 500
    # greenlets queueing for 100 sockets, while 50 threads hardly queue and
    # get the insert's own socket back from the idle stack.
    same_violations, _ = _ryw_control(mode, n, ctl_client[scratch].c, ctl_client[scratch].c, -1 - n, errors)
    report(
        request,
        workers=n,
        elapsed=round(elapsed, 3),
        peak_over_baseline=peak,
        stats=stats,
        control_other_connection=other_violations,
        control_without_request=same_violations,
    )
    assert (len(errors), alive) == (0, 0), errors[:5]
    assert violations == [], violations[:5]
    expected_docs = sum(random.Random(i).randint(100, 200) for i in range(n))
    assert docs_written[0] == expected_docs
    assert total == expected_docs
    assert_quiet(stats, 100)
    assert peak <= 100, monitor.samples
    if mode.name != THREADS:
        # 500 greenlets on 100 sockets: requests really queued for sockets.
        assert stats["waits"] > 0, stats
    # The server held each insert for RYW_BLOCK_MS: a count sent on another
    # connection overtakes it, so the check above can fail.
    assert other_alive == 0
    assert other_violations > 0


# ---------------------------------------------------------------------------
# 3. reclaim: callers die without end_request
# ---------------------------------------------------------------------------
RECLAIM_POOL = 20
RECLAIM_BATCH = 500  # gevent.spawn and spawn_raw, in batches
RECLAIM_THREAD_BATCH = 50  # short-lived OS threads, 50 at a time


@pytest.mark.parametrize(
    "kind,total",
    [
        # Thousands of OS threads would only measure thread start-up: 500
        # short-lived threads, 50 alive at a time, exercise the same path.
        pytest.param("thread", 500, marks=pytest.mark.modes(THREADS)),
        pytest.param("gevent.spawn", 20000, marks=pytest.mark.modes(*GEVENT_MODES)),
        pytest.param("spawn_raw", 20000, marks=pytest.mark.modes(*GEVENT_MODES)),
        pytest.param("greenlet.switch", 20000, marks=pytest.mark.modes(*GEVENT_MODES)),
    ],
)
def test_reclaim_sockets_of_dead_callers(request, mode, make_client, monitor, scratch, kind, total):
    client = make_client(auto_start_request=True, max_pool_size=RECLAIM_POOL, waitQueueTimeoutMS=10000)
    assert client.use_greenlets is mode.expect_greenlets
    coll = client[scratch].c
    errors: list = []
    done = [0]
    lock = threading.Lock()

    def op(i: int) -> None:
        try:
            coll.find_one({"_id": i})
        except Exception as exc:
            errors.append(short(exc))
        finally:
            with lock:
                done[0] += 1

    monitor.start()
    t0 = time.monotonic()
    stuck = 0
    # A broken reclaim makes every later caller wait out waitQueueTimeoutMS:
    # stop at the first batch with errors, so the test fails quickly.
    if kind in ("gevent.spawn", "thread"):
        batch = RECLAIM_BATCH if kind == "gevent.spawn" else RECLAIM_THREAD_BATCH
        for start in range(0, total, batch):
            handles = [mode.spawn(op, i) for i in range(start, min(total, start + batch))]
            stuck += mode.join(handles, 60)
            del handles
            if errors or stuck:
                break
    elif kind == "spawn_raw":
        gevent = mode.gevent
        for start in range(0, total, RECLAIM_BATCH):
            end = min(total, start + RECLAIM_BATCH)
            finished = gevent.event.Event()

            def raw(i: int, end: int = end, finished=finished) -> None:
                op(i)
                if done[0] == end:
                    finished.set()

            for i in range(start, end):
                gevent.spawn_raw(raw, i)  # the greenlet is not kept: only a weakref watches it
            if not finished.wait(60):
                stuck += end - done[0]
            if errors or stuck:
                break
    else:
        import greenlet

        for i in range(total):
            # parent = this greenlet: the switch returns when op() has
            # finished.  The greenlet is freed (and its socket reclaimed) when
            # the hub next runs: the hub's suspended stack still holds the
            # bound switch() it last resumed the greenlet with, so a socket or
            # two more than one may be opened.
            greenlet.greenlet(op).switch(i)
            if errors:
                break
    elapsed = time.monotonic() - t0
    # Rawlink callbacks run on the hub's next turn; thread vigils at thread
    # teardown; raw greenlets' weakrefs fire when the hub lets go of them.
    mode.sleep(0.1)
    peak = monitor.stop()
    s = pool_stats(client)
    after = monitor.settled_over_baseline()
    report(
        request,
        workers=total,
        completed=done[0],
        elapsed=round(elapsed, 3),
        ops_per_s=round(done[0] / elapsed) if elapsed else None,
        stats=s,
        peak_over_baseline=peak,
        after_over_baseline=after,
    )
    assert (done[0], stuck, len(errors)) == (total, 0, 0), errors[:5]
    # Every caller pinned a socket and died holding it; every one came back.
    assert s["pins"] == total and s["reclaimed"] == total, s
    assert s["wait_timeouts"] == 0, s
    assert_quiet(s, RECLAIM_POOL)
    assert s["created"] <= RECLAIM_POOL, s
    assert after <= RECLAIM_POOL + 2
    assert peak <= RECLAIM_POOL + 2, monitor.samples


# ---------------------------------------------------------------------------
# 4. economy: many callers, few sockets
# ---------------------------------------------------------------------------
def test_economy_many_callers_share_the_cap(request, mode, make_client, monitor, scratch):
    # 1,000 concurrent OS threads would be silly; 200 still queue on 10 sockets.
    n = 200 if mode.name == THREADS else 1000
    monitor.admin_client[scratch].c.create_index("g")
    appname = unique_app("economy")
    client = make_client(max_pool_size=10, appname=appname)
    assert client.use_greenlets is mode.expect_greenlets
    coll = client[scratch].c
    errors: list = []
    completed = [0]
    lock = threading.Lock()
    start = Gate(mode, n)  # everyone starts at once, so the cap is really contended

    def work(wid: int) -> None:
        try:
            start.arrive()
            if not start.wait(30):
                raise RuntimeError("start gate: only %d of %d workers arrived" % (start.count, n))
            coll.insert_one({"g": wid, "n": 0}, w=1)
            doc = coll.find_one({"g": wid})
            if doc is None or doc["g"] != wid:
                raise AssertionError("find_one({'g': %d}) returned %r" % (wid, doc))
            coll.update_one({"g": wid}, {"$inc": {"n": 1}})
            if coll.find_one({"g": wid})["n"] != 1:
                raise AssertionError("update of %d not visible" % wid)
            with lock:
                completed[0] += 1
        except Exception as exc:
            errors.append(short(exc))

    # The server holds the first inserts for 50 ms, so the cap is contended whatever the timing.
    # An operation whose reply is in before it reads (its thread lost the GIL between send and
    # recv) never yields, and then a crowd can run one operation at a time on one socket; the
    # crowd's seed checks, one checkout each, used to hide that (now one check serves them all).
    with fail_point(
        monitor.admin_client,
        {"times": 20},
        failCommands=["insert"],
        blockConnection=True,
        blockTimeMS=50,
        appName=appname,
    ):
        monitor.start()
        t0 = time.monotonic()
        alive = mode.join([mode.spawn(work, i) for i in range(n)], 90)
        elapsed = time.monotonic() - t0
        peak = monitor.stop()
    s = pool_stats(client)
    report(request, workers=n, elapsed=round(elapsed, 3), peak_over_baseline=peak, stats=s)
    assert (len(errors), alive) == (0, 0), errors[:5]
    assert completed[0] == n
    assert monitor.admin_client[scratch].c.count_documents({"n": 1}) == n
    assert peak <= 10, monitor.samples
    assert s["created"] <= 10 and s["waits"] > 0, s
    assert_quiet(s, 10)


def test_callers_arriving_together_check_the_seed_once(mode, make_client):
    # Callers that start at once on a new client all arrive before the first
    # check of the lone seed ends.  One checks it (a pool checkout, whose
    # handshake describes the server); the others wait for that check's
    # outcome instead of checking out a socket each (10,000 new greenlets made
    # 10,000 extra checkouts, each a wait in the pool queue), and only the one
    # describes it (~150k instructions apiece).  benchmarks/README.md, scaling.
    n = 50 if mode.name == THREADS else 300
    beats = Heartbeats()
    client = make_client(max_pool_size=5, event_listeners=[beats])
    described: list[int] = []
    real_apply = client._topology._apply

    def counting_apply(sd):
        described.append(1)
        return real_apply(sd)

    client._topology._apply = counting_apply
    start = Gate(mode, n)
    errors: list = []

    def work(wid: int) -> None:
        try:
            start.arrive()
            if not start.wait(30):
                raise RuntimeError("start gate: only %d of %d workers arrived" % (start.count, n))
            client.admin.command("ping")
        except Exception as exc:
            errors.append(short(exc))

    alive = mode.join([mode.spawn(work, i) for i in range(n)], 60)
    assert (len(errors), alive) == (0, 0), errors[:5]
    s = pool_stats(client)
    # One checkout per ping, and one for the one check (before: one check per caller, 2n checkouts).
    assert s["checkouts"] == n + 1, s
    assert s["created"] <= 5, s
    # The user's view of the checks: one heartbeat, not one per caller.
    assert dict(beats.counts) == {"started": 1, "succeeded": 1}, beats.counts
    assert len(described) == 1, len(described)


# ---------------------------------------------------------------------------
# 5. exhaustion: more live requests than sockets
# ---------------------------------------------------------------------------
def test_exhaustion_times_out_with_a_useful_error(request, mode, make_client, monitor):
    n, size = 8, 5
    client = make_client(auto_start_request=True, max_pool_size=size, waitQueueTimeoutMS=300)
    assert client.use_greenlets is mode.expect_greenlets
    release = mode.event()
    outcomes: dict = {}

    def work(wid: int) -> None:
        t0 = time.monotonic()
        try:
            cid = client.admin.command("hello")["connectionId"]
            outcomes[wid] = {"ok": True, "connection_id": cid}
        except PoolTimeoutError as exc:
            outcomes[wid] = {
                "ok": False,
                "error": type(exc).__name__,
                "message": str(exc),
                "pinned": exc.pinned,
                "max_size": exc.max_size,
            }
        except Exception as exc:
            outcomes[wid] = {"ok": False, "error": type(exc).__name__, "message": short(exc)}
        outcomes[wid]["elapsed"] = round(time.monotonic() - t0, 3)
        release.wait(30)  # stay alive (and keep any pinned socket) until released

    monitor.start()
    t0 = time.monotonic()
    handles = [mode.spawn(work, i) for i in range(n)]
    deadline = time.monotonic() + 10
    while len(outcomes) < n and time.monotonic() < deadline:
        mode.sleep(0.02)
    during = pool_stats(client)
    release.set()
    alive = mode.join(handles, 10)
    # Greenlets are reclaimed on the hub's next turn, threads at teardown.
    settle_deadline = time.monotonic() + 2
    mode.sleep(0.1)
    while pool_stats(client)["pinned"] and time.monotonic() < settle_deadline:
        mode.sleep(0.02)
    elapsed = time.monotonic() - t0
    peak = monitor.stop()
    after = pool_stats(client)
    report(request, elapsed=round(elapsed, 3), outcomes=outcomes, stats_during=during, stats_after=after)
    ok = [o for o in outcomes.values() if o["ok"]]
    failed = [o for o in outcomes.values() if not o["ok"]]
    assert len(ok) == 5 and len({o["connection_id"] for o in ok}) == 5, outcomes
    assert len(failed) == 3, failed
    for f in failed:
        assert f["error"] == "PoolTimeoutError", f
        assert (f["pinned"], f["max_size"]) == (5, 5), f
        assert "5 pinned" in f["message"] and "auto_start_request=False" in f["message"], f["message"]
        assert 0.25 <= f["elapsed"] < 3.0, f  # waitQueueTimeoutMS=300, not forever
    assert (during["pinned"], during["waiting"], during["wait_timeouts"]) == (5, 0, 3), during
    # No deadlock: everyone finished once released, and the dead gave back their sockets.
    assert alive == 0
    assert elapsed < 10.0
    assert_quiet(after, 5)
    assert after["reclaimed"] == 5, after
    assert peak <= 5, monitor.samples


# ---------------------------------------------------------------------------
# 6. hub hygiene
# ---------------------------------------------------------------------------
# gevent.wait() returns only when nothing at all is left for the hub to do,
# which a pytest process never is (its session mongod's child watcher, other
# clients): the check needs a fresh interpreter with the mode's patching, and
# the script asserts for itself.
HUB_SCRIPT = """
import os, sys, time
if os.environ["HUB_MODE"] == "gevent-patched":
    from gevent import monkey
    monkey.patch_all()
import gc
import gevent
import mongo_requests
t_start = time.monotonic()
client = mongo_requests.MongoClient(os.environ["MONGODB_URI"],
                                    **({"use_greenlets": True} if os.environ["HUB_MODE"] == "gevent-unpatched" else {}))
assert client.use_greenlets is True
coll = client[os.environ["HUB_DB"]].c
coll.insert_many([{"i": i} for i in range(50)])
with client.start_request():
    coll.insert_one({"i": -1}, w=0)
    in_request_count = coll.count_documents({})
cur = coll.find({}, batch_size=5)
next(cur), next(cur)
del cur  # partially iterated: its server cursor is killed on the next operation
gc.collect()
gevent.joinall([gevent.spawn(coll.find_one, {"i": i}) for i in range(10)], timeout=10)
count_after = coll.count_documents({})
client.drop_database(os.environ["HUB_DB"])
# The client stays open, as an application's would: idle sockets must not
# keep the hub's loop alive.
t0 = time.monotonic()
waited = gevent.wait(timeout=5)
wait_elapsed = time.monotonic() - t0
s = client.pool.get_stats()
print("wait_elapsed=%.3f stats=%r" % (wait_elapsed, s))
assert in_request_count == 51 and count_after == 51, (in_request_count, count_after)
assert waited is True and wait_elapsed < 2.0, (waited, wait_elapsed)  # gevent.wait(timeout=5)
assert (s["in_use"], s["pinned"], s["waiting"]) == (0, 0, 0) and s["open"] <= 100, s
assert time.monotonic() - t_start < 10.0
"""


@pytest.mark.modes(PATCHED, UNPATCHED)
def test_hub_is_left_idle(mode, mongodb_uri, scratch):
    t0 = time.monotonic()
    proc = run_child(
        ["-c", HUB_SCRIPT], timeout=30, env=child_env(MONGODB_URI=mongodb_uri, HUB_MODE=mode.name, HUB_DB=scratch)
    )
    print(proc.stdout)
    # The child exits promptly too: no hub keeps the interpreter alive at exit.
    assert time.monotonic() - t0 < 10.0
