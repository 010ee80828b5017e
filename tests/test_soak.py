"""Soak and fault tests against a real mongod (every test is ``slow``).

    python -m pytest tests/test_soak.py -q -m slow

* churn: 100,000 greenlets each pin a socket and die in their request;
  memory, pool accounting and the server's connection count must hold;
* restart: mongod SIGKILLed under load from 100 greenlets, then restarted
  on the same port and dbpath;
* fail points: ``failCommand`` closing, failing and blocking a connection;
* bad input at volume: 10,000 inserts, valid and invalid, from 10 threads.

Greenlet scenarios run in a subprocess (``tests/soak_scenarios.py``) that
calls ``gevent.monkey.patch_all()`` before anything else; it prints one JSON
line of measurements and every assertion is here.  The other tests run
in-process with threads.  Every loop is bounded in count and in time, and
everything talks to 127.0.0.1 only.  Figures (throughput, memory, error
latencies) are printed; ``-s`` or ``-rA`` shows them.
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid

import bson
import pytest
from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    DocumentTooLarge,
    InvalidDocument,
    NetworkTimeout,
    OperationFailure,
)

import mongo_requests
from helpers import server_connections, conn_id, fail_point, settled_connections, wait_until
from mongo_requests import RequestState
from mongo_requests.testing import MongodServer

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIOS = os.path.join(ROOT, "tests", "soak_scenarios.py")
MiB = 1024 * 1024


# -- helpers ----------------------------------------------------------------------
def report(title: str, **figures) -> None:
    """Print the figures a soak measured (shown with -s / -rA)."""
    print("\n[soak] %s: %s" % (title, ", ".join("%s=%s" % kv for kv in figures.items())))


def unique(prefix: str) -> str:
    return "%s_%s" % (prefix, uuid.uuid4().hex[:10])


def app_connection_ids(admin_client, app: str) -> list:
    """Server-side connection ids of every connection (idle too) of ``app``."""
    reply = admin_client.admin.command(
        {
            "aggregate": 1,
            "pipeline": [
                {"$currentOp": {"allUsers": True, "idleConnections": True}},
                {"$match": {"appName": app}},
            ],
            "cursor": {},
        }
    )
    return sorted(op["connectionId"] for op in reply["cursor"]["firstBatch"] if "connectionId" in op)


def child_env() -> dict:
    env = dict(os.environ)
    env.pop("MONGO_REQUESTS_TEST_MODE", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    return env


def run_scenario(args: list, timeout: float) -> dict:
    """Run ``soak_scenarios.py args...`` to completion; return its JSON line."""
    proc = subprocess.run(
        [sys.executable, SCENARIOS, *args],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, "scenario %s exited %d\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
        args[0], proc.returncode, proc.stdout[-3000:], proc.stderr[-5000:])
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, proc.stdout[-3000:]
    return json.loads(lines[0])


class LineReader:
    """The lines of a child's stdout, read by a thread, with timeouts."""

    def __init__(self, stream) -> None:
        self._queue: queue.Queue = queue.Queue()
        self.seen: list = []
        thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        thread.start()

    def _pump(self, stream) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def get(self, timeout: float) -> str | None:
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        self.seen.append(line)
        return line


# -- 1. churn -----------------------------------------------------------------------
CHURN_GREENLETS = 100_000
CHURN_BATCH = 1000
CHURN_POOL = 20
CHURN_WARMUP = 10_000  # fixed in soak_scenarios.churn
# Wall-clock bound on the spawn loop.  The loop stops at CHURN_GREENLETS or
# here, whichever is first; on a machine too loaded to reach the count the
# test still checks everything on what ran, provided that is at least
# CHURN_MIN_AFTER_WARMUP greenlets, and reports the measured rate.
CHURN_DEADLINE_S = 120.0
CHURN_MIN_AFTER_WARMUP = 30_000
# Traced growth after the warm-up.  Nothing in the pool should grow with the
# number of greenlets once the warm-up has filled its 20 sockets, buffers and
# counters: a dead greenlet leaves nothing behind (its request record lives
# in a greenlet-local, its death callback is a rawlink on the greenlet, and
# its socket is back in the pool).  So the bound is 16 bytes per greenlet,
# less than any leak can cost (an object header alone is 16 bytes, and
# something must hold the object: a list slot is 8 more; a leaked request
# record, weakref or callback is 60-200), plus 256 KiB for one-off
# allocations made after the warm-up (about 55 KiB measured: gevent.local's
# table sized for a batch of 1,000, the hub's loop).  At 90,000 greenlets
# after warm-up that is 1.6 MiB, where leaking one bare ``object()`` per
# greenlet costs 2.2 MiB (checked by injecting exactly that leak).
CHURN_TRACED_PER_GREENLET = 16
CHURN_TRACED_ALLOWANCE = 256 * 1024
# RSS is much coarser: pymalloc keeps arenas after the peak of a batch (1,000
# live greenlets and their stacks, about 7 MB traced at the peak), and the
# allocator fragments; we measured +6 MiB after 10,000 greenlets and the same
# +6 MiB after 90,000, a plateau, not a slope.  tracemalloc's own tables are
# subtracted.  32 MiB still catches a leak of a few hundred bytes per
# greenlet (its stack, its locals, its socket buffer), the leaks that matter
# most in a long-lived server.
CHURN_RSS_LIMIT = 32 * MiB


def test_churn_greenlets_die_in_requests(mongodb_uri):
    dbname = unique("soak_churn")
    t0 = time.monotonic()
    r = run_scenario(
        ["churn", mongodb_uri, dbname, str(CHURN_GREENLETS), str(CHURN_BATCH), str(CHURN_DEADLINE_S)],
        timeout=CHURN_DEADLINE_S + 150,
    )
    wall = time.monotonic() - t0
    report(
        "churn",
        greenlets=r["done"],
        target=r["target"],
        elapsed_s="%.1f" % r["elapsed_s"],
        rate_per_s="%.0f" % r["rate"],
        traced_phase_rate_per_s="%.0f" % r.get("traced_phase_rate", 0),
        traced_warm=r.get("traced_warm"),
        traced_end=r.get("traced_end"),
        traced_growth=r.get("traced_growth"),
        traced_peak=r.get("traced_peak"),
        rss_warm_MiB="%.1f" % (r.get("rss_warm", 0) / MiB),
        rss_end_MiB="%.1f" % (r["rss_end"] / MiB),
        rss_growth_MiB="%.2f" % (r.get("rss_growth", 0) / MiB),
        tracemalloc_self_MiB="%.2f" % (r.get("tracemalloc_self", 0) / MiB),
        conn_baseline=r["conn_baseline"],
        conn_after=r["conn_after"],
        pool_open=r["pool_open_at_conn_after"],
        conn_after_close=r["conn_after_close"],
        close_settle_s="%.2f" % r["close_settle_s"],
        wall_s="%.1f" % wall,
    )
    if r["deadline_hit"]:
        print("[soak] churn: the %ss deadline stopped the loop at %d of %d greenlets (%.0f/s)"
              % (CHURN_DEADLINE_S, r["done"], r["target"], r["rate"]))
    assert r["use_greenlets"], "auto-detection did not pick greenlets under patch_all()"
    assert "hung" not in r, "%d greenlets of a batch never finished" % r.get("hung", 0)
    assert r["errors"] == {}, r["first_errors"]
    assert r["done"] == r["target"] or r["deadline_hit"], r
    assert r.get("greenlets_after_warmup", 0) >= CHURN_MIN_AFTER_WARMUP, (
        "only %d greenlets after warm-up in %ss (%.0f/s): too slow to measure growth"
        % (r.get("greenlets_after_warmup", 0), CHURN_DEADLINE_S, r["rate"]))

    # Memory: nothing grows with the number of greenlets.
    n = r["greenlets_after_warmup"]
    traced_limit = CHURN_TRACED_ALLOWANCE + CHURN_TRACED_PER_GREENLET * n
    assert r["traced_growth"] < traced_limit, (
        "tracemalloc: +%d bytes over %d greenlets after warm-up (limit %d); top growth:\n%s"
        % (r["traced_growth"], n, traced_limit, "\n".join(r["top_growth"])))
    rss_growth = r["rss_growth"] - r["tracemalloc_self"]
    assert rss_growth < CHURN_RSS_LIMIT, (
        "RSS +%.1f MiB (tracemalloc's own %.1f MiB excluded)" % (rss_growth / MiB, r["tracemalloc_self"] / MiB))

    # The pool: every dead greenlet's socket came back, none is pinned.
    stats = r["stats"]
    assert stats["pinned"] == 0 and stats["in_use"] == 0 and stats["waiting"] == 0, stats
    assert stats["open"] == stats["idle"] <= CHURN_POOL, stats
    assert stats["created"] <= CHURN_POOL, stats  # no socket was lost and replaced
    assert stats["reclaimed"] == r["done"], stats
    assert stats["requests_started"] == stats["pins"] == r["done"], stats
    assert stats.get("closed", 0) == 0, stats
    assert not r["in_request_main"]

    # The server: baseline + the pool's open sockets, then baseline after close.
    assert r["pool_open_at_conn_after"] <= CHURN_POOL
    assert r["conn_after"] - r["conn_baseline"] == r["pool_open_at_conn_after"], r
    assert r["conn_after_close"] == r["conn_baseline"], (
        "server connections %s after close(), baseline %d (readings %s)"
        % (r["conn_after_close"], r["conn_baseline"], r["conn_after_close_series"]))


# -- 2. server restart under load ------------------------------------------------------
RESTART_WORKERS = 100
SOCKET_TIMEOUT_S = 2.0  # socketTimeoutMS=2000 in soak_scenarios.restart
# What an in-flight operation may take, after the kill, to fail or finish:
# the socket timeout is the backstop (a SIGKILLed mongod's sockets are reset
# by the kernel, so errors normally come in milliseconds), plus room for
# scheduling 100 greenlets on a loaded machine.
ERROR_LATENCY_LIMIT_S = SOCKET_TIMEOUT_S + 1.5


def test_server_restart_under_load(tmp_path):
    server = MongodServer()  # dedicated: the session's server is never killed
    server.start()
    dbname = unique("soak_restart")
    proc = None
    stderr_path = tmp_path / "scenario.stderr"
    timeline: dict = {}
    found: set = set()
    try:
        with open(stderr_path, "w") as stderr:
            proc = subprocess.Popen(
                [sys.executable, SCENARIOS, "restart", server.uri, dbname, str(RESTART_WORKERS)],
                cwd=ROOT,
                env=child_env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        lines = LineReader(proc.stdout)

        def expect(word: str, timeout: float) -> str:
            line = lines.get(timeout)
            assert line is not None and line.startswith(word), (
                "expected %s from the scenario, got %r; seen %r\n--- stderr ---\n%s"
                % (word, line, lines.seen, stderr_path.read_text()[-5000:]))
            return line

        expect("READY", 120)
        timeline["kill"] = time.monotonic()
        server.kill()  # SIGKILL; dbpath and port are kept
        timeline["killed"] = time.monotonic()
        noticed = expect("NOTICED", 90)
        timeline["noticed"] = time.monotonic()
        server.start()  # same port, same dbpath
        timeline["restarted"] = time.monotonic()
        proc.stdin.write("RESTARTED\n")
        proc.stdin.flush()
        line = expect("{", 120)
        proc.wait(30)
        r = json.loads(line)
        # Every acknowledged j=True insert survived the SIGKILL.
        ids = [i for i, _t in r["acked"]]
        with mongo_requests.MongoClient(server.uri, use_greenlets=False) as check:
            for start in range(0, len(ids), 5000):
                chunk = ids[start:start + 5000]
                found.update(d["_id"] for d in check[dbname].things.find({"_id": {"$in": chunk}}, {"_id": 1}))
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        server.cleanup()

    assert proc.returncode == 0, stderr_path.read_text()[-5000:]
    assert r["use_greenlets"]
    t_kill = timeline["kill"]
    recs = r["recs"]
    errors = [(rec["worker"], rec["error"]) for rec in recs if rec["error"]]
    latencies = sorted(err[1] - t_kill for _w, err in errors)
    # Operations running when the kill happened, and what became of them.
    inflight = [
        (rec["worker"], op)
        for rec in recs
        for op in rec["ops"]
        if op[1] <= t_kill and (op[2] is None or op[2] >= t_kill)
    ]
    held_through_outage = [  # started during the outage, held in server selection, then succeeded
        (rec["worker"], op) for rec in recs for op in rec["ops"]
        if t_kill < op[1] < timeline["noticed"] and op[3] == "ok" and op[2] >= timeline["noticed"]
    ]
    acked_before_kill = [i for i, t in r["acked"] if t < t_kill]
    p2 = [rec["phase2"] for rec in recs]
    report(
        "restart",
        workers=r["workers"],
        iterations_before_kill=sum(rec["iterations"] for rec in recs),
        acked_before_kill=len(acked_before_kill),
        acked_total=len(r["acked"]),
        workers_with_error=len(errors),
        error_types=sorted({e[0] for _w, e in errors}),
        error_latency_min_s="%.3f" % (latencies[0] if latencies else -1),
        error_latency_median_s="%.3f" % (latencies[len(latencies) // 2] if latencies else -1),
        error_latency_max_s="%.3f" % (latencies[-1] if latencies else -1),
        inflight_at_kill=len(inflight),
        ops_held_through_outage=len(held_through_outage),
        kill_s="%.2f" % (timeline["killed"] - t_kill),
        restart_s="%.2f" % (timeline["restarted"] - timeline["noticed"]),
        outage_s="%.2f" % (timeline["restarted"] - t_kill),
        phase2_max_s="%.3f" % max([(p["end"] - p["t"]) for p in p2 if p] or [-1]),
        outage_probe_wait_s=sorted(round(p["end"] - p["start"], 2) for p in r["probes"] if "end" in p),
        stats=r["stats"],
    )

    assert noticed.split()[1] != "0", "no worker saw an error after the kill"
    assert r["hung"] == [], "workers still running 30 s after RESTARTED: %s" % r["hung"]
    unexpected = [(rec["worker"], rec["unexpected"]) for rec in recs if rec["unexpected"]]
    assert not unexpected, unexpected[:5]
    assert all(rec["iterations"] >= 1 for rec in recs)
    assert len(acked_before_kill) > 0

    # In-flight operations fail (or finish) within the socket timeout + margin.
    for worker, err in errors:
        name, t_err, is_conn_failure, msg = err
        assert is_conn_failure, (worker, err)
        assert 0 <= t_err - t_kill <= ERROR_LATENCY_LIMIT_S, (
            "worker %d: %s %.3fs after the kill: %s" % (worker, name, t_err - t_kill, msg))
    for worker, (name, start, end, outcome) in inflight:
        assert end is not None, "worker %d: %s in flight at the kill never ended" % (worker, name)
        assert end - t_kill <= ERROR_LATENCY_LIMIT_S, (worker, name, end - t_kill, outcome)
        assert outcome == "ok" or outcome.startswith("CF:"), (worker, name, outcome)
    # Nothing hung in phase 1: every operation ended, either before the
    # restart plus the selection timeout, or with an error.
    for rec in recs:
        for name, start, end, outcome in rec["ops"]:
            assert end is not None, (rec["worker"], name, start - t_kill)

    # Sockets opened before the kill carry the killed server's processId;
    # connectionIds start again from 1 after a restart, so both identify one.
    pre_pid = r["pre_pid"]
    pre_keys = {tuple(k) for rec in recs for k in rec["pre_keys"] if k[0] == pre_pid}
    assert pre_keys and all(len(k) == 2 and k[1] for k in pre_keys)
    # Operations started during the outage waited in server selection and
    # succeeded once mongod was back, well within serverSelectionTimeoutMS.
    assert r["hung_probes"] == [], r["probes"]
    assert len(r["probes"]) == 6, r["probes"]
    for probe in r["probes"]:
        assert probe["outcome"] == "ok", probe
        assert probe["start"] < timeline["restarted"] and probe["end"] > timeline["noticed"], probe
        assert probe["end"] - probe["start"] < 15.0, probe
        if probe["in_request"]:
            assert probe["key"][0] != pre_pid and tuple(probe["key"]) not in pre_keys, probe

    # After the restart: every worker's first operations succeed at once, on
    # fresh sockets.  Pinned workers never left their request.
    for rec in recs:
        p = rec["phase2"]
        assert p and p["ok"], (rec["worker"], p)
        assert p["in_request"], (rec["worker"], p)
        assert p["new_object"], (rec["worker"], p)
        assert p["key"][0] != pre_pid and tuple(p["key"]) not in pre_keys, (rec["worker"], p["key"])
        assert rec["pre_gen"] is not None and p["gen"] > rec["pre_gen"], (rec["worker"], rec["pre_gen"], p["gen"])
        assert p["end"] - p["t"] < 10.0, (rec["worker"], p)
        if rec["kind"] == "pinned":
            # The request survived the outage; its state matches its socket.
            assert rec["in_request_after_error"], rec["worker"]
            expected_state = RequestState.PINNED if rec["sock_after_error"] else RequestState.REQUEST_NO_SOCKET
            assert rec["state_after_error"] == expected_state.name, (
                rec["worker"], rec["state_after_error"], rec["sock_after_error"], rec["error"])
    # The pool dropped the dead sockets: a reset, and nothing pinned or busy left.
    stats = r["stats"]
    assert stats.get("resets", 0) >= 1, stats
    assert stats["pinned"] == 0 and stats["in_use"] == 0 and stats["waiting"] == 0, stats

    # Durability: every acknowledged j=True write is there after the restart.
    missing = [i for i in ids if i not in found]
    assert not missing, "%d of %d acknowledged inserts lost (%d acked before the kill), e.g. %s" % (
        len(missing), len(ids), len(acked_before_kill), missing[:5])


# -- 3. fail points --------------------------------------------------------------------
def test_fail_point_close_connection_on_pinned_socket(make_client, admin_client):
    app = unique("fp_close")
    c = make_client(appname=app)
    coll = c[unique("soak_fp")].things
    try:
        coll.insert_one({"x": 1})
        with c.start_request():
            first = conn_id(c)
            sock = c.pool.pinned_socket()
            assert sock is not None and sock.server_connection_id == first
            assert app_connection_ids(admin_client, app) == [first]
            before = c.pool.get_stats()
            with fail_point(admin_client, {"times": 1}, failCommands=["find"], closeConnection=True, appName=app):
                with pytest.raises(AutoReconnect) as info:
                    coll.find_one({"x": 1})
            assert not isinstance(info.value, NetworkTimeout)
            after = c.pool.get_stats()
            # The socket is dropped (closed +1) and unpinned; the request stays.
            assert sock.closed
            assert after.get("closed", 0) == before.get("closed", 0) + 1, (before, after)
            assert after["pinned"] == 0 and after["in_use"] == 0 and after["open"] == before["open"] - 1, after
            assert c.in_request()
            assert c.pool.request_state() is RequestState.REQUEST_NO_SOCKET
            assert c.pool.pinned_socket() is None
            # ...and the server's side of it is gone.
            assert wait_until(lambda: first not in app_connection_ids(admin_client, app), timeout=5.0), (
                app_connection_ids(admin_client, app))
            # The next operation, same request, works on a new connection.
            assert coll.find_one({"x": 1})["x"] == 1
            second = conn_id(c)
            assert second != first
            assert c.in_request()
            assert c.pool.request_state() is RequestState.PINNED
            assert c.pool.pinned_socket() is not sock
            assert c.pool.pinned_socket().server_connection_id == second
            assert app_connection_ids(admin_client, app) == [second]
            # Read-your-writes on the new socket.
            coll.insert_one({"x": 2}, w=0)
            assert coll.count_documents({}) == 2
            assert conn_id(c) == second
        assert not c.in_request()
        final = c.pool.get_stats()
        assert final["pinned"] == 0 and final["in_use"] == 0, final
    finally:
        c.drop_database(coll.database.name)


@pytest.mark.parametrize("code", [2, 96])
def test_fail_point_error_code_keeps_pinned_socket(make_client, admin_client, code):
    app = unique("fp_code")
    c = make_client(appname=app)
    coll = c[unique("soak_fp")].things
    try:
        coll.insert_one({"x": 1})
        with c.start_request():
            first = conn_id(c)
            sock = c.pool.pinned_socket()
            before = c.pool.get_stats()
            with fail_point(admin_client, {"times": 1}, failCommands=["find"], errorCode=code, appName=app):
                with pytest.raises(OperationFailure) as info:
                    coll.find_one({"x": 1})
            assert info.value.code == code
            assert not isinstance(info.value, ConnectionFailure)
            after = c.pool.get_stats()
            assert c.in_request()
            assert c.pool.request_state() is RequestState.PINNED
            assert c.pool.pinned_socket() is sock and not sock.closed
            assert after.get("closed", 0) == before.get("closed", 0), after
            assert after.get("resets", 0) == before.get("resets", 0), after
            assert after["pinned"] == 1 and after["open"] == before["open"], after
            # Usable, same connection, read-your-writes intact.
            assert coll.find_one({"x": 1})["x"] == 1
            coll.insert_one({"x": 2}, w=0)
            assert coll.count_documents({}) == 2
            assert conn_id(c) == first
            assert app_connection_ids(admin_client, app) == [first]
    finally:
        c.drop_database(coll.database.name)


@pytest.mark.parametrize("in_request", [False, True], ids=["no_request", "in_request"])
def test_fail_point_block_connection_times_out_and_frees_the_slot(make_client, admin_client, in_request):
    app = unique("fp_block")
    wait_queue_s = 5.0
    c = make_client(appname=app, socketTimeoutMS=300, max_pool_size=1, waitQueueTimeoutMS=wait_queue_s * 1000)
    dbname = unique("soak_fp")
    coll = c[dbname].things
    try:
        coll.insert_one({"x": 1})
        with contextlib.ExitStack() as stack:
            if in_request:
                stack.enter_context(c.start_request())
                coll.find_one({"x": 1})
                assert c.pool.request_state() is RequestState.PINNED
            before = c.pool.get_stats()
            with fail_point(admin_client, {"times": 1}, failCommands=["find"], blockConnection=True,
                            blockTimeMS=1500, appName=app):
                t0 = time.monotonic()
                with pytest.raises(NetworkTimeout) as info:
                    coll.find_one({"x": 1})
                took = time.monotonic() - t0
            assert isinstance(info.value, AutoReconnect)
            assert 0.25 <= took < 1.0, took
            after = c.pool.get_stats()
            # The slot came back: the timed-out socket is closed, nothing is busy.
            assert after["in_use"] == 0 and after["pinned"] == 0 and after["waiting"] == 0, after
            assert after["open"] == 0, after
            assert after.get("closed", 0) == before.get("closed", 0) + 1, (before, after)
            # A timeout says "slow", not "gone": no reset.
            assert after.get("resets", 0) == before.get("resets", 0), after
            assert c.in_request() is in_request
            if in_request:
                assert c.pool.request_state() is RequestState.REQUEST_NO_SOCKET
            # max_pool_size=1: the next operation gets the slot at once, not
            # after waitQueueTimeoutMS.
            t1 = time.monotonic()
            assert coll.find_one({"x": 1})["x"] == 1
            took2 = time.monotonic() - t1
            assert took2 < 1.0, took2
            final = c.pool.get_stats()
            assert final.get("wait_timeouts", 0) == 0, final
            if in_request:
                assert c.pool.request_state() is RequestState.PINNED
                assert final["pinned"] == 1, final
        report("block_connection", in_request=in_request, timeout_after_s="%.3f" % took,
               next_op_s="%.3f" % took2)
        final = c.pool.get_stats()
        assert final["in_use"] == 0 and final["pinned"] == 0 and final["open"] <= 1, final
    finally:
        c.drop_database(dbname)


# -- 4. bad input at volume ----------------------------------------------------------------
BAD_THREADS = 10
BAD_OPS_PER_THREAD = 1000
BAD_POOL = 8  # fewer sockets than threads: some wait for one
BAD_SEGMENT = 50  # ops per stretch in a request / out of one, alternately
BAD_DEADLINE_S = 120.0
MAX_BSON = 16 * 1024 * 1024


class _NotAMapping:
    pass


def _bad_input_plan(t: int, j: int, big: str):
    """(kind, document, expected exception or None, api) for op j of thread t."""
    _id = "%d-%d" % (t, j)
    if j == 500 + t % 3:  # one oversized document per thread (they are expensive), w=0 or w=1
        return "oversized", {"_id": _id, "big": big}, DocumentTooLarge, "insert_one"
    r = (t * 7 + j * 13) % 21
    if r < 8:
        return "valid", {"_id": _id, "t": t, "j": j, "sub": {"a": [1, 2, {"b": "c"}]}}, None, "insert_one"
    if r < 10:
        return "valid_legacy", {"_id": _id, "t": t, "j": j}, None, "insert"
    if r == 10:
        return "list", [("_id", _id)], TypeError, "insert_one"
    if r == 11:
        return "str", "not a document", TypeError, "insert_one"
    if r == 12:
        return "object", _NotAMapping(), TypeError, "insert_one"
    if r == 13:
        return "dollar_key", {"$set": {"a": 1}, "t": t}, InvalidDocument, "insert_one"
    if r == 14:
        return "dollar_key_legacy", {"$where": "1", "t": t}, InvalidDocument, "insert"
    if r == 15:
        return "dotted_key_legacy", {"a.b": 1, "t": t}, InvalidDocument, "insert"
    if r == 16:
        return "int_key", {1: "one", "t": t}, InvalidDocument, "insert_one"
    if r == 17:
        return "unencodable_value", {"t": t, "v": object()}, InvalidDocument, "insert_one"
    if r == 18:
        return "none", None, TypeError, "insert_one"
    if r == 19:
        return "valid_late", {"_id": _id, "t": t, "j": j}, None, "insert_one"
    # A batch whose second document is bad: nothing is sent, so its valid
    # first document must not be stored either (its _id is not recorded).
    return "batch_with_bad", [{"_id": _id + "-batch", "t": t}, {"$inc": {"n": 1}}], InvalidDocument, "insert_many"


def test_bad_input_at_volume(make_client, admin_client):
    assert InvalidDocument is bson.errors.InvalidDocument
    baseline = settled_connections(admin_client, timeout=5.0)
    c = make_client(max_pool_size=BAD_POOL, waitQueueTimeoutMS=30000)
    dbname = unique("soak_bad")
    coll = c[dbname].docs
    big = "x" * MAX_BSON  # one string for every oversized document
    deadline = time.monotonic() + BAD_DEADLINE_S
    valid_ids: list = [[] for _ in range(BAD_THREADS)]
    outcomes: list = [{} for _ in range(BAD_THREADS)]
    wrong: list = []
    done = [0] * BAD_THREADS
    in_request_ops = [0] * BAD_THREADS

    def work(t: int) -> None:
        try:
            for j in range(BAD_OPS_PER_THREAD):
                if time.monotonic() > deadline:
                    return
                segment_in_request = (j // BAD_SEGMENT + t) % 2 == 0
                if j % BAD_SEGMENT == 0 and segment_in_request:
                    c.start_request()
                kind, doc, expected, api = _bad_input_plan(t, j, big)
                w = 0 if j % 3 == 0 else 1
                sock_before = c.pool.pinned_socket()
                try:
                    if api == "insert":
                        coll.insert(doc, w=w)
                    elif api == "insert_many":
                        coll.insert_many(doc, w=w)
                    else:
                        coll.insert_one(doc, w=w)
                except Exception as exc:  # noqa: BLE001 - checked below
                    if expected is None or not isinstance(exc, expected):
                        wrong.append((t, j, kind, w, repr(exc)[:200]))
                    key = "%s/%s" % (kind, type(exc).__name__)
                else:
                    if expected is not None:
                        wrong.append((t, j, kind, w, "no exception"))
                    else:
                        valid_ids[t].append(doc["_id"])
                    key = "%s/ok" % kind
                outcomes[t][key] = outcomes[t].get(key, 0) + 1
                if c.in_request():
                    in_request_ops[t] += 1
                    sock = c.pool.pinned_socket()
                    # Bad input never costs a request its socket.
                    if sock_before is not None and (sock is not sock_before or sock.closed):
                        wrong.append((t, j, kind, w, "the pinned socket changed: %r -> %r" % (sock_before, sock)))
                if j % BAD_SEGMENT == BAD_SEGMENT - 1 and segment_in_request:
                    c.end_request()
                done[t] += 1
        except BaseException as exc:  # noqa: BLE001
            wrong.append((t, None, "thread", None, repr(exc)[:300]))
        finally:
            while c.in_request():
                c.end_request()

    t0 = time.monotonic()
    threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(BAD_THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(max(0.0, deadline + 10 - time.monotonic()))
    elapsed = time.monotonic() - t0
    try:
        assert not any(th.is_alive() for th in threads), "threads still running after %ss" % BAD_DEADLINE_S
        assert sum(done) == BAD_THREADS * BAD_OPS_PER_THREAD, done
        assert not wrong, wrong[:10]
        totals: dict = {}
        for per_thread in outcomes:
            for key, n in per_thread.items():
                totals[key] = totals.get(key, 0) + n
        expected_ids = {i for ids in valid_ids for i in ids}
        n_invalid = sum(n for key, n in totals.items() if not key.endswith("/ok"))
        assert len(expected_ids) == sum(len(ids) for ids in valid_ids)
        assert totals.get("oversized/DocumentTooLarge") == BAD_THREADS, totals
        assert n_invalid >= 3000, totals
        assert sum(in_request_ops) >= 4000, in_request_ops

        # No socket lost, none dropped, nothing pinned or busy.
        stats = c.pool.get_stats()
        assert stats["in_use"] == 0 and stats["pinned"] == 0 and stats["waiting"] == 0, stats
        assert stats.get("closed", 0) == 0, stats
        assert stats.get("resets", 0) == 0, stats
        assert stats["open"] == stats["idle"] <= BAD_POOL, stats
        connections = settled_connections(admin_client, timeout=5.0) - baseline
        assert connections <= BAD_POOL, (connections, stats)

        # Every valid document is stored (w=0 ones may land a little later).
        assert wait_until(lambda: coll.count_documents({}) == len(expected_ids), timeout=15), (
            coll.count_documents({}), len(expected_ids))
        stored = {d["_id"] for d in coll.find({}, {"_id": 1})}
        assert stored == expected_ids, (len(stored ^ expected_ids), sorted(stored ^ expected_ids)[:5])
        report("bad_input", ops=sum(done), valid=len(expected_ids), invalid=n_invalid,
               in_request_ops=sum(in_request_ops), elapsed_s="%.1f" % elapsed,
               ops_per_s="%.0f" % (sum(done) / elapsed), server_connections_over_baseline=connections,
               stats=stats, outcomes=totals)
    finally:
        c.drop_database(dbname)
