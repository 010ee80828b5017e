"""Concurrency scenarios for tests/test_greenlets.py: each one measures, the test asserts.

Usage::

    python tests/greenlet_scenarios.py SCENARIO MODE URI

MODE is one of

``threads``
    no gevent at all; workers are ``threading.Thread``; clients use the
    default ``use_greenlets=None`` (auto: thread identity, since nothing is
    patched).
``gevent-patched``
    ``gevent.monkey.patch_all()`` runs before anything else is imported;
    workers are ``gevent.spawn``; clients use the default
    ``use_greenlets=None``, which must pick greenlets.
``gevent-unpatched``
    gevent is imported but nothing is patched; workers are ``gevent.spawn``;
    clients are made with ``use_greenlets=True``.
``mixed``
    ``gevent.monkey.patch_all(thread=False)``: real threads, each running
    its own hub and greenlets; clients use ``use_greenlets=True``.  Only the
    ``mixed`` scenario runs in this mode.

Monkey-patching is process-wide, which is why every (scenario, mode) pair runs
in a process of its own.  The script prints exactly one JSON line of
measurements on stdout and exits 0 unless the scenario itself crashed; errors
seen by workers are counted and reported, never swallowed, and every wait is
bounded so a deadlock shows up as a figure (and, as a last resort,
faulthandler dumps every thread's stack before the test's timeout).

Server connections are counted with a separate client (the monitor) through
``serverStatus().connections.current``: a baseline before the client under
test opens anything, a peak sampled by a monitor worker while the scenario
runs, and a settled value afterwards.  The monitor's own connection is part
of the baseline.
"""
import sys

# Patching must come first, before anything imports socket or threading.
_MODE_ARG = sys.argv[2] if __name__ == "__main__" and len(sys.argv) > 2 else ""
if _MODE_ARG == "gevent-patched":
    from gevent import monkey

    monkey.patch_all()
elif _MODE_ARG == "mixed":
    from gevent import monkey

    monkey.patch_all(thread=False)

import faulthandler  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import mongo_requests  # noqa: E402
from mongo_requests import PoolTimeoutError  # noqa: E402

MODES = ("threads", "gevent-patched", "gevent-unpatched", "mixed")
STAT_KEYS = (
    "open", "idle", "in_use", "pinned", "waiting", "created", "closed", "reclaimed",
    "pins", "checkouts", "waits", "wait_timeouts", "resets", "requests_started", "requests_ended",
)


def now() -> float:
    return time.monotonic()


def stats(client) -> dict:
    """The pool's gauges and counters (counters absent from the pool are 0)."""
    s = client.pool.get_stats()
    return {k: int(s.get(k, 0)) for k in STAT_KEYS}


def short(exc: BaseException) -> str:
    return "%s: %s" % (type(exc).__name__, str(exc)[:300])


def ping_victim(gevent, client, how: str, timeout: float, outcome: dict) -> None:
    """A greenlet body for the kill scenarios: one ping, under a Timeout if ``how`` says so.

    Records how it ended ("completed", "Timeout", "GreenletExit" or the
    error) and how long it took in ``outcome``; a kill is re-raised.
    """
    t0 = now()
    try:
        if how == "timeout":
            with gevent.Timeout(timeout):
                client.admin.command("ping")
        else:
            client.admin.command("ping")
        outcome["result"] = "completed"
    except gevent.Timeout:
        outcome["result"] = "Timeout"
    except gevent.GreenletExit:
        outcome["result"] = "GreenletExit"
        raise
    except Exception as exc:
        outcome["result"] = short(exc)
    finally:
        outcome["elapsed"] = round(now() - t0, 3)


class Env:
    """What differs between modes: how to make clients, spawn, wait and sleep."""

    def __init__(self, mode: str, uri: str) -> None:
        if mode not in MODES:
            raise SystemExit("unknown mode %r (want one of %s)" % (mode, ", ".join(MODES)))
        self.mode = mode
        self.uri = uri
        # Top-level workers: greenlets in the two gevent modes, real threads
        # in "threads" and "mixed" (where each thread runs its own greenlets).
        self.green = mode in ("gevent-patched", "gevent-unpatched")
        if mode != "threads":
            import gevent
            import gevent.event

            self.gevent = gevent
        else:
            self.gevent = None

    # -- clients --------------------------------------------------------------
    def client(self, host: str | None = None, **kwargs):
        if self.mode in ("gevent-unpatched", "mixed"):
            kwargs.setdefault("use_greenlets", True)
        return mongo_requests.MongoClient(host or self.uri, **kwargs)

    @property
    def expect_greenlets(self) -> bool:
        return self.mode != "threads"

    # -- workers --------------------------------------------------------------
    def spawn(self, fn, *args):
        if self.green:
            return self.gevent.spawn(fn, *args)
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        return t

    def join(self, handles, timeout: float) -> int:
        """Wait for every handle, at most ``timeout`` seconds; return how many are still alive."""
        if self.green:
            self.gevent.joinall(handles, timeout=timeout)
            return sum(1 for h in handles if not h.dead)
        deadline = now() + timeout
        for t in handles:
            t.join(max(0.0, deadline - now()))
        return sum(1 for t in handles if t.is_alive())

    def sleep(self, seconds: float) -> None:
        if self.gevent is not None:
            self.gevent.sleep(seconds)
        else:
            time.sleep(seconds)

    def event(self):
        if self.green:
            return self.gevent.event.Event()
        return threading.Event()


class Gate:
    """Opens once ``n`` workers have arrived; waits on it are bounded."""

    def __init__(self, env: Env, n: int) -> None:
        self.n = n
        self.count = 0
        self._lock = threading.Lock()
        self._event = env.event()

    def arrive(self) -> bool:
        """Count one arrival; True for the one that opened the gate."""
        with self._lock:
            self.count += 1
            last = self.count == self.n
        if last:
            self._event.set()
        return last

    def wait(self, timeout: float) -> bool:
        return bool(self._event.wait(timeout))


class Monitor:
    """Counts the server's connections with a client of its own."""

    def __init__(self, env: Env, interval: float = 0.02) -> None:
        self.env = env
        self.interval = interval
        self.client = env.client(appname="monitor")
        self.peak = 0
        self.samples = 0
        self._stop = False
        self._handle = None
        self.baseline = self.settle()

    def current(self) -> int:
        status = self.client.admin.command(
            {"serverStatus": 1, "metrics": 0, "wiredTiger": 0, "tcmalloc": 0, "locks": 0, "opcounters": 0}
        )
        return int(status["connections"]["current"])

    def settle(self, timeout: float = 3.0) -> int:
        """Sample until three samples 50 ms apart agree (closed connections have drained)."""
        deadline = now() + timeout
        last, same = self.current(), 0
        while now() < deadline and same < 2:
            self.env.sleep(0.05)
            n = self.current()
            same = same + 1 if n == last else 0
            last = n
        return last

    def start(self) -> "Monitor":
        self._stop = False
        self.peak = self.current()
        self._handle = self.env.spawn(self._run)
        return self

    def _run(self) -> None:
        while not self._stop:
            n = self.current()
            self.samples += 1
            if n > self.peak:
                self.peak = n
            self.env.sleep(self.interval)

    def stop(self) -> None:
        self._stop = True
        if self._handle is not None:
            self.env.join([self._handle], 10)
            self._handle = None

    def figures(self, baseline: int | None = None) -> dict:
        base = self.baseline if baseline is None else baseline
        after = self.settle()
        return {
            "baseline": base,
            "peak": self.peak,
            "peak_over_baseline": self.peak - base,
            "after": after,
            "after_over_baseline": after - base,
            "samples": self.samples,
        }

    def close(self) -> None:
        self.stop()
        self.client.close()


def dbname(scenario: str) -> str:
    return "gs_%s_%d" % (scenario, os.getpid())


# ---------------------------------------------------------------------------
# 1. pinning
# ---------------------------------------------------------------------------
def s_pinning(env: Env) -> dict:
    # 50 OS threads are plenty to show thread identity; 200 greenlets are cheap.
    n = 50 if env.mode == "threads" else 200
    mon = Monitor(env)
    db = dbname("pinning")
    mon.client[db].c.insert_many([{"w": i} for i in range(n)])
    client = env.client(max_pool_size=n)
    coll = client[db].c
    per_worker: dict = {}
    snapshot: list = []
    errors: list = []
    all_in, recorded = Gate(env, n), Gate(env, n)
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
                    pinned_at_gate.append(stats(client)["pinned"])
                if not recorded.wait(30):
                    raise RuntimeError("gate: only %d of %d workers recorded" % (recorded.count, n))
                ids.append(client.admin.command("hello")["connectionId"])
        except Exception as exc:
            errors.append(short(exc))
        finally:
            per_worker[wid] = ids

    mon.start()
    t0 = now()
    handles = [env.spawn(work, i) for i in range(n)]
    alive = env.join(handles, 90)
    elapsed = now() - t0
    mon.stop()
    env.sleep(0.1)
    ids_per_worker = [len(set(v)) for v in per_worker.values()]
    result = {
        "workers": n,
        "use_greenlets": client.use_greenlets,
        "elapsed": round(elapsed, 3),
        "alive_after_join": alive,
        "errors": len(errors),
        "error_samples": errors[:5],
        "ops_per_worker": sorted({len(v) for v in per_worker.values()}),
        "workers_reporting": len(per_worker),
        "workers_with_one_connection_id": sum(1 for k in ids_per_worker if k == 1),
        "max_connection_ids_per_worker": max(ids_per_worker) if ids_per_worker else 0,
        "snapshot_size": len(snapshot),
        "snapshot_distinct_connection_ids": len({cid for cid, _ in snapshot}),
        "snapshot_distinct_workers": len({w for _, w in snapshot}),
        "pinned_at_gate": pinned_at_gate[0] if pinned_at_gate else None,
        "stats": stats(client),
        "connections": mon.figures(),
    }
    client.close()
    mon.client.drop_database(db)
    mon.close()
    return result


# ---------------------------------------------------------------------------
# 2. read-your-own-writes
# ---------------------------------------------------------------------------
RYW_BLOCK_MS = 100


def _ryw_control(env: Env, n: int, writer, reader, key0: int, errors: list) -> dict:
    """w=0 insert_many with ``writer`` then count with ``reader``, no request."""
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

    t0 = now()
    alive = env.join([env.spawn(unpinned, i) for i in range(n)], 90)
    return {"workers": n, "violations": len(stale), "alive_after_join": alive, "elapsed": round(now() - t0, 3)}


def s_ryw(env: Env) -> dict:
    # 50 OS threads keep the threads run short; 500 greenlets share 100 sockets.
    n = 50 if env.mode == "threads" else 500
    mon = Monitor(env)
    db = dbname("ryw")
    mon.client[db].c.create_index("k")
    # The server holds every insert from these clients for RYW_BLOCK_MS before
    # applying it (failCommand blockConnection, which applies to w=0 inserts
    # too).  Within a request the count is queued behind the insert on the
    # same connection, so it must still see every document; a count sent on
    # another connection would run first and miss them.
    appname = "ryw-%d" % os.getpid()
    client = env.client(appname=appname)  # max_pool_size default: 100
    coll = client[db].c
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

    mon.client.admin.command({
        "configureFailPoint": "failCommand", "mode": "alwaysOn",
        "data": {"failCommands": ["insert"], "blockConnection": True, "blockTimeMS": RYW_BLOCK_MS,
                 "appName": appname},
    })
    try:
        mon.start()
        t0 = now()
        handles = [env.spawn(work, i) for i in range(n)]
        alive = env.join(handles, 90)
        elapsed = now() - t0
        mon.stop()
        total = mon.client[db].c.count_documents({"k": {"$gte": 0}})
        main_stats = stats(client)
        main_connections = mon.figures()
        # Control 1 (asserted): the count on another connection.  A second
        # client, whose connections never carry inserts, counts right after
        # each w=0 insert: it overtakes the held insert, so the check can fail.
        ctl_client = env.client(appname=appname)
        reader = env.client(appname="ryw-reader-%d" % os.getpid())
        other = _ryw_control(env, n, ctl_client[db].c, reader[db].c, -1, errors)
        reader.close()
    finally:
        mon.client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    # Control 2 (reported only): the plain workload (no hold) on one client
    # without a request.  The count goes to whichever socket comes free;
    # whether it overtakes depends on timing: it usually does for some of 500
    # greenlets queueing for 100 sockets, while 50 threads hardly queue and
    # get the insert's own socket back from the idle stack.
    same = _ryw_control(env, n, ctl_client[db].c, ctl_client[db].c, -1 - n, errors)
    ctl_client.close()
    result = {
        "workers": n,
        "use_greenlets": client.use_greenlets,
        "max_pool_size": client.max_pool_size,
        "insert_block_ms": RYW_BLOCK_MS,
        "elapsed": round(elapsed, 3),
        "alive_after_join": alive,
        "errors": len(errors),
        "error_samples": errors[:5],
        "violations": len(violations),
        "violation_samples": violations[:5],
        "docs_written": docs_written[0],
        "docs_in_collection": total,
        "stats": main_stats,
        "connections": main_connections,
        "control_other_connection": other,
        "control_without_request": same,
    }
    client.close()
    mon.client.drop_database(db)
    mon.close()
    return result


# ---------------------------------------------------------------------------
# 3. reclaim
# ---------------------------------------------------------------------------
RECLAIM_POOL = 20
RECLAIM_GREENLETS = 20000   # gevent.spawn, batches of RECLAIM_BATCH
RECLAIM_RAW = 20000         # gevent.spawn_raw, batches of RECLAIM_BATCH
RECLAIM_SWITCH = 20000      # greenlet.greenlet(fn).switch(), one after another
RECLAIM_BATCH = 500
RECLAIM_THREADS = 500       # short-lived OS threads, 50 at a time
RECLAIM_THREAD_BATCH = 50


def _reclaim_variant(env: Env, mon: Monitor, db: str, kind: str, total: int, batch: int) -> dict:
    baseline = mon.settle()
    client = env.client(auto_start_request=True, max_pool_size=RECLAIM_POOL, waitQueueTimeoutMS=10000)
    coll = client[db].c
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

    mon.start()
    t0 = now()
    stuck = 0
    # A broken reclaim makes every later caller wait out waitQueueTimeoutMS:
    # stop at the first batch with errors, so the figures come back quickly.
    if kind in ("gevent.spawn", "thread"):
        for start in range(0, total, batch):
            handles = [env.spawn(op, i) for i in range(start, min(total, start + batch))]
            stuck += env.join(handles, 60)
            del handles
            if errors or stuck:
                break
    elif kind == "spawn_raw":
        gevent = env.gevent
        for start in range(0, total, batch):
            end = min(total, start + batch)
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
    elif kind == "greenlet.switch":
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
    else:  # pragma: no cover - a typo in this script
        raise ValueError(kind)
    elapsed = now() - t0
    # Rawlink callbacks run on the hub's next turn; thread vigils at thread
    # teardown; raw greenlets' weakrefs fire when the hub lets go of them.
    env.sleep(0.1)
    mon.stop()
    result = {
        "kind": kind,
        "workers": total,
        "completed": done[0],
        "stuck": stuck,
        "errors": len(errors),
        "error_samples": errors[:5],
        "elapsed": round(elapsed, 3),
        "ops_per_s": round(done[0] / elapsed) if elapsed else None,
        "max_pool_size": client.max_pool_size,
        "use_greenlets": client.use_greenlets,
        "stats": stats(client),
        "connections": mon.figures(baseline),
    }
    client.close()
    return result


def s_reclaim(env: Env) -> dict:
    mon = Monitor(env)
    db = dbname("reclaim")
    if env.mode == "threads":
        # Thousands of OS threads would only measure thread start-up: 500
        # short-lived threads, 50 alive at a time, exercise the same path.
        variants = [("thread", RECLAIM_THREADS, RECLAIM_THREAD_BATCH)]
    else:
        variants = [
            ("gevent.spawn", RECLAIM_GREENLETS, RECLAIM_BATCH),
            ("spawn_raw", RECLAIM_RAW, RECLAIM_BATCH),
            ("greenlet.switch", RECLAIM_SWITCH, 1),
        ]
    out = {"variants": {}}
    for kind, total, batch in variants:
        out["variants"][kind] = _reclaim_variant(env, mon, db, kind, total, batch)
    mon.client.drop_database(db)
    mon.close()
    return out


# ---------------------------------------------------------------------------
# 4. economy
# ---------------------------------------------------------------------------
def s_economy(env: Env) -> dict:
    # 1,000 concurrent OS threads would be silly; 200 still queue on 10 sockets.
    n = 200 if env.mode == "threads" else 1000
    mon = Monitor(env)
    db = dbname("economy")
    mon.client[db].c.create_index("g")
    client = env.client(max_pool_size=10)
    coll = client[db].c
    errors: list = []
    completed = [0]
    lock = threading.Lock()
    start = Gate(env, n)  # everyone starts at once, so the cap is really contended

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

    mon.start()
    t0 = now()
    handles = [env.spawn(work, i) for i in range(n)]
    alive = env.join(handles, 90)
    elapsed = now() - t0
    mon.stop()
    result = {
        "workers": n,
        "use_greenlets": client.use_greenlets,
        "max_pool_size": client.max_pool_size,
        "elapsed": round(elapsed, 3),
        "alive_after_join": alive,
        "completed": completed[0],
        "errors": len(errors),
        "error_samples": errors[:5],
        "docs_in_collection": mon.client[db].c.count_documents({"n": 1}),
        "stats": stats(client),
        "connections": mon.figures(),
    }
    client.close()
    mon.client.drop_database(db)
    mon.close()
    return result


# ---------------------------------------------------------------------------
# 5. exhaustion
# ---------------------------------------------------------------------------
def s_exhaustion(env: Env) -> dict:
    n, size = 8, 5
    mon = Monitor(env)
    client = env.client(auto_start_request=True, max_pool_size=size, waitQueueTimeoutMS=300)
    release = env.event()
    outcomes: dict = {}

    def work(wid: int) -> None:
        t0 = now()
        try:
            cid = client.admin.command("hello")["connectionId"]
            outcomes[wid] = {"ok": True, "connection_id": cid, "elapsed": round(now() - t0, 3)}
        except PoolTimeoutError as exc:
            outcomes[wid] = {
                "ok": False, "error": type(exc).__name__, "message": str(exc),
                "pinned": exc.pinned, "in_use": exc.in_use, "max_size": exc.max_size,
                "elapsed": round(now() - t0, 3),
            }
        except Exception as exc:
            outcomes[wid] = {"ok": False, "error": type(exc).__name__, "message": short(exc),
                             "elapsed": round(now() - t0, 3)}
        release.wait(30)  # stay alive (and keep any pinned socket) until released

    mon.start()
    t0 = now()
    handles = [env.spawn(work, i) for i in range(n)]
    deadline = now() + 10
    while len(outcomes) < n and now() < deadline:
        env.sleep(0.02)
    outcomes_time = now() - t0
    during = stats(client)
    release.set()
    alive = env.join(handles, 10)
    # Greenlets are reclaimed on the hub's next turn, threads at teardown.
    settle_deadline = now() + 2
    env.sleep(0.1)
    while stats(client)["pinned"] and now() < settle_deadline:
        env.sleep(0.02)
    elapsed = now() - t0
    mon.stop()
    ok = [o for o in outcomes.values() if o["ok"]]
    failed = [o for o in outcomes.values() if not o["ok"]]
    result = {
        "workers": n,
        "max_pool_size": size,
        "use_greenlets": client.use_greenlets,
        "outcomes_after": round(outcomes_time, 3),
        "elapsed": round(elapsed, 3),
        "alive_after_join": alive,
        "ok": len(ok),
        "ok_distinct_connection_ids": len({o["connection_id"] for o in ok}),
        "failed": failed,
        "stats_during": during,
        "stats_after": stats(client),
        "connections": mon.figures(),
    }
    client.close()
    mon.close()
    return result


# ---------------------------------------------------------------------------
# 6. stalls
# ---------------------------------------------------------------------------
def _schedstat() -> tuple | None:
    """(runqueue wait, steal) in seconds so far, for this OS thread; None off Linux.

    A tick can come late for reasons that have nothing to do with the hub:
    the kernel let other threads (mongod's) run while ours was runnable (the
    thread's runqueue wait, from its schedstat), or the hypervisor took the
    virtual CPU away (steal time, from /proc/stat; we take the largest of the
    CPUs' counters since the thread may have run on any).  Subtracting both
    leaves the time the hub's own thread spent running code or blocked in a
    system call, which is what a blocking driver causes.
    """
    try:
        with open("/proc/self/task/%d/schedstat" % threading.get_native_id()) as f:
            runqueue = int(f.read().split()[1]) / 1e9
        steal = []
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3:4].isdigit():
                    steal.append(int(line.split()[8]) / _CLK_TCK)
        return runqueue, steal
    except (OSError, ValueError, IndexError):
        return None


_CLK_TCK = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0


def _stall_run(env: Env, client, db: str, workers: int = 100, duration: float = 2.0) -> dict:
    gevent = env.gevent
    coll = client[db].c
    stop_at = now() + duration
    lateness = [0.0]          # wall-clock lateness of the 5 ms sleep
    on_thread = [0.0]         # the same, less runqueue wait and steal
    worst: dict = {}
    has_schedstat = _schedstat() is not None
    ticks = [0]
    ops = [0]
    errors: list = []

    def ticker() -> None:
        while now() < stop_at + 0.2:
            t, before = now(), _schedstat()
            gevent.sleep(0.005)
            late = now() - t - 0.005
            after = _schedstat()
            if has_schedstat:
                waited = after[0] - before[0]
                stolen = max((a - b for a, b in zip(after[1], before[1])), default=0.0)
            else:
                waited = stolen = 0.0
            ticks[0] += 1
            lateness[0] = max(lateness[0], late)
            if late - waited - stolen > on_thread[0]:
                on_thread[0] = late - waited - stolen
                worst.update(at=round(t - stop_at + duration, 3), wall=round(late, 4),
                             runqueue=round(waited, 4), steal=round(stolen, 4))

    def worker(wid: int) -> None:
        try:
            while now() < stop_at:
                coll.insert_one({"w": wid})
                coll.find_one({"w": wid})
                with client.start_request():
                    client.admin.command("ping")
                ops[0] += 3
        except Exception as exc:
            errors.append(short(exc))

    tick = gevent.spawn(ticker)
    gevent.sleep(0.02)  # the ticker is running before the load starts
    t0 = now()
    handles = [gevent.spawn(worker, i) for i in range(workers)]
    gevent.joinall(handles + [tick], timeout=duration + 60)
    elapsed = now() - t0
    return {
        "use_greenlets": client.use_greenlets,
        "workers": workers,
        "duration": duration,
        "elapsed": round(elapsed, 3),
        "alive_after_join": sum(1 for h in handles + [tick] if not h.dead),
        "ops": ops[0],
        "ops_per_s": round(ops[0] / elapsed) if elapsed else None,
        "ticks": ticks[0],
        "max_stall": round(on_thread[0], 4),
        "max_stall_wall": round(lateness[0], 4),
        "schedstat": has_schedstat,
        "worst_tick": worst,
        "errors": len(errors),
        "error_samples": errors[:5],
    }


def s_stalls(env: Env) -> dict:
    if not env.green:
        raise SystemExit("stalls runs in the gevent modes only")
    db = dbname("stalls")
    client = env.client()
    out = {"greenlets": _stall_run(env, client, db)}
    client.close()
    if env.mode == "gevent-unpatched":
        # The control: same workload, but a client forced onto thread identity
        # and the standard library's blocking sockets.  Every operation blocks
        # the hub, so the ticker must see the whole run as one long stall.
        control = env.client(use_greenlets=False)
        out["control_blocking"] = _stall_run(env, control, db)
        control.close()
    else:
        out["control_blocking"] = None
    cleanup = env.client()
    cleanup.drop_database(db)
    cleanup.close()
    return out


# ---------------------------------------------------------------------------
# 7. kills
# ---------------------------------------------------------------------------
def _prove_slots(env: Env, mon: Monitor, client, baseline: int) -> dict:
    """max_pool_size greenlets, each in a request, all holding a socket at once."""
    n = client.max_pool_size
    arrived, release = Gate(env, n), env.event()
    cids: list = []
    errors: list = []

    def hold() -> None:
        try:
            with client.start_request():
                cids.append(client.admin.command("hello")["connectionId"])
                client.admin.command("ping")
                arrived.arrive()
                release.wait(10)
        except Exception as exc:
            errors.append(short(exc))
            arrived.arrive()

    handles = [env.spawn(hold) for _ in range(n)]
    all_held = arrived.wait(10)
    during = stats(client)
    server = mon.current()
    release.set()
    alive = env.join(handles, 10)
    env.sleep(0.05)
    return {
        "holders": n,
        "all_arrived": all_held,
        "held_concurrently": len(set(cids)) if not errors else 0,
        "errors": errors[:5],
        "alive_after_join": alive,
        "pinned_while_held": during["pinned"],
        "server_connections_over_baseline": server - baseline,
        "stats_after": stats(client),
    }


def _kill_waiting(env: Env, mon: Monitor, how: str) -> dict:
    """(a)/(b): the victim dies while queued for the only slot."""
    gevent = env.gevent
    baseline = mon.settle()
    client = env.client(max_pool_size=1, waitQueueTimeoutMS=5000)
    outcome: dict = {}

    def victim() -> None:
        ping_victim(gevent, client, how, 0.2, outcome)

    # This greenlet holds the only socket in a request.
    client.start_request()
    client.admin.command("ping")
    v = gevent.spawn(victim)
    gevent.sleep(0.05)
    queued = stats(client)
    handed = None
    if how == "kill":
        v.kill(block=True, timeout=5)
        client.end_request()
    elif how == "kill-handoff":
        # The kill is scheduled first; then the slot is handed to the victim's
        # queued waiter.  The GreenletExit lands before the wake-up, so the
        # dying victim holds a slot it never saw and must pass it on.
        v.kill(block=False)
        client.end_request()
        # Before the hub runs again: the slot must have moved to the waiter
        # (still checked out, nobody queued), or this case tests nothing.
        handed = stats(client)
        v.join(5)
    elif how == "timeout":
        v.join(5)
        client.end_request()
    else:  # pragma: no cover
        raise ValueError(how)
    gevent.sleep(0.05)
    result = {
        "victim": outcome,
        "victim_dead": v.dead,
        "stats_queued": queued,
        "stats_handed_over": handed,
        "stats_after": stats(client),
        "proof": _prove_slots(env, mon, client, baseline),
    }
    client.close()
    return result


def _silent_listener(env: Env):
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""
    gevent = env.gevent
    import gevent.socket

    lsock = gevent.socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    accepted: list = []

    def acceptor() -> None:
        while True:
            conn, _ = lsock.accept()
            accepted.append(conn)

    return lsock, accepted, gevent.spawn(acceptor)


def _closed_by_peer(conn) -> bool:
    """True when the client side has closed ``conn`` (EOF after its handshake bytes)."""
    conn.settimeout(1.0)
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                return True
    except OSError:  # socket.timeout included: still open
        return False


def _kill_connecting(env: Env, how: str) -> dict:
    """(c): the victim dies while its handshake waits for a server that never answers."""
    gevent = env.gevent
    lsock, accepted, acceptor = _silent_listener(env)
    port = lsock.getsockname()[1]
    client = env.client(
        "127.0.0.1:%d" % port, max_pool_size=2, connectTimeoutMS=20000,
        serverSelectionTimeoutMS=20000, waitQueueTimeoutMS=5000,
    )
    outcome: dict = {}

    def victim() -> None:
        ping_victim(gevent, client, how, 0.3, outcome)

    v = gevent.spawn(victim)
    deadline = now() + 5
    while not accepted and now() < deadline:
        gevent.sleep(0.01)
    gevent.sleep(0.05)  # the handshake has been sent; the victim waits for the reply
    connecting = stats(client)
    if how == "kill":
        v.kill(block=True, timeout=5)
    else:
        v.join(5)
    gevent.sleep(0.05)
    after = stats(client)
    first = list(accepted)
    victim_conn_closed = [_closed_by_peer(c) for c in first]

    # Both slots must be usable: two callers at once both reach the connect
    # stage (the listener accepts two more) without queueing for a slot.
    def attempt() -> None:
        try:
            with gevent.Timeout(0.5):
                client.admin.command("ping")
        except gevent.Timeout:
            pass

    n = client.max_pool_size
    handles = [gevent.spawn(attempt) for _ in range(n)]
    deadline = now() + 3
    while len(accepted) < len(first) + n and now() < deadline:
        gevent.sleep(0.01)
    proof_stats = stats(client)
    gevent.joinall(handles, timeout=5)
    gevent.sleep(0.05)
    result = {
        "victim": outcome,
        "victim_dead": v.dead,
        "stats_connecting": connecting,
        "stats_after": after,
        "victim_connections_closed": victim_conn_closed,
        "proof": {
            "holders": n,
            "new_connects": len(accepted) - len(first),
            "stats_while_connecting": proof_stats,
            "stats_after": stats(client),
            "alive_after_join": sum(1 for h in handles if not h.dead),
        },
    }
    client.close()
    acceptor.kill()
    for c in accepted:
        c.close()
    lsock.close()
    return result


# Turning the fail point off waits for the held find to finish on the server,
# so each (d) case costs this long; it only has to dwarf the 0.3 s kill delay.
KILL_BLOCK_MS = 3000


def _kill_midmessage(env: Env, mon: Monitor, how: str) -> dict:
    """(d): the victim dies while the server holds its find for 3 s (failCommand)."""
    gevent = env.gevent
    db = dbname("kills")
    appname = "kills-d-%s-%d" % (how, os.getpid())
    mon.client[db].c.insert_one({"x": 1})
    baseline = mon.settle()
    client = env.client(max_pool_size=3, waitQueueTimeoutMS=5000, appname=appname)
    client.admin.command("ping")
    before = stats(client)
    outcome: dict = {}

    def victim() -> None:
        t0 = now()
        try:
            if how == "timeout-in-request":
                with client.start_request():
                    outcome["cid_before"] = client.admin.command("hello")["connectionId"]
                    try:
                        with gevent.Timeout(0.3):
                            client[db].c.find_one()
                        outcome["result"] = "completed"
                    except gevent.Timeout:
                        outcome["result"] = "Timeout"
                    outcome["elapsed"] = round(now() - t0, 3)
                    outcome["stats_in_request_after_timeout"] = stats(client)
                    # The request goes on, on a fresh socket.
                    outcome["cid_after"] = client.admin.command("hello")["connectionId"]
                    outcome["find_after"] = client[db].c.find_one()["x"]
                    outcome["cid_after_find"] = client.admin.command("hello")["connectionId"]
            else:
                client[db].c.find_one()
                outcome["result"] = "completed"
        except gevent.GreenletExit:
            outcome["result"] = "GreenletExit"
            outcome["elapsed"] = round(now() - t0, 3)
            raise
        except Exception as exc:
            outcome["result"] = short(exc)

    mon.client.admin.command({
        "configureFailPoint": "failCommand", "mode": {"times": 1},
        "data": {"failCommands": ["find"], "blockConnection": True, "blockTimeMS": KILL_BLOCK_MS, "appName": appname},
    })
    try:
        t0 = now()
        v = gevent.spawn(victim)
        if how == "kill":
            gevent.sleep(0.3)
            in_flight = stats(client)
            v.kill(block=True, timeout=5)
        else:
            in_flight = None
            v.join(5)
        victim_done = round(now() - t0, 3)
    finally:
        mon.client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    gevent.sleep(0.05)
    after = stats(client)
    result = {
        "victim": outcome,
        "victim_dead": v.dead,
        "victim_done_after": victim_done,
        "server_block_ms": KILL_BLOCK_MS,
        "stats_before": before,
        "stats_in_flight": in_flight,
        "stats_after": after,
        "closed_delta": after["closed"] - before["closed"],
        "resets_delta": after["resets"] - before["resets"],
        "proof": _prove_slots(env, mon, client, baseline),
    }
    client.close()
    mon.client.drop_database(db)
    return result


def s_kills(env: Env) -> dict:
    if not env.green:
        raise SystemExit("kills runs in the gevent modes only")
    mon = Monitor(env)
    probe = env.client()
    out = {
        "use_greenlets": probe.use_greenlets,
        "a_kill_queued": _kill_waiting(env, mon, "kill"),
        "a_kill_handoff": _kill_waiting(env, mon, "kill-handoff"),
        "b_timeout_queued": _kill_waiting(env, mon, "timeout"),
        "c_kill_connecting": _kill_connecting(env, "kill"),
        "c_timeout_connecting": _kill_connecting(env, "timeout"),
        "d_kill_midmessage": _kill_midmessage(env, mon, "kill"),
        "d_timeout_midmessage_in_request": _kill_midmessage(env, mon, "timeout-in-request"),
    }
    probe.close()
    mon.close()
    return out


# ---------------------------------------------------------------------------
# 8. mixed: real threads, each with its own hub and greenlets
# ---------------------------------------------------------------------------
MIXED_THREADS = 4
MIXED_GREENLETS = 50


def _mixed_phase(env: Env, client, db: str, phase: str, hold_all: bool, rounds: int) -> dict:
    import gevent

    total = MIXED_THREADS * MIXED_GREENLETS
    lock = threading.Lock()  # a real lock (thread=False): held for a few bytecodes only
    counts = {"arrived": 0, "recorded": 0}
    per_request: dict = {}
    snapshot: list = []
    violations: list = []
    errors: list = []
    thread_outcomes: dict = {}
    coll = client[db].c

    def bump(key: str) -> None:
        with lock:
            counts[key] += 1

    def wait_for(key: str, timeout: float = 30) -> bool:
        # A cross-thread barrier that never blocks the hub: poll cooperatively.
        deadline = now() + timeout
        while counts[key] < total:
            if now() > deadline:
                return False
            gevent.sleep(0.005)
        return True

    threads_per_cid: dict = {}

    def green(t: int, g: int) -> None:
        key = "%s-%d-%d" % (phase, t, g)
        ids = []
        try:
            with client.start_request():
                for r in range(rounds):
                    k = "%s-%d" % (key, r)
                    size = 10 + (g + r) % 11
                    coll.insert_many([{"k": k, "i": i} for i in range(size)], w=0)
                    got = coll.count_documents({"k": k})
                    if got != size:
                        violations.append((k, size, got))
                    ids.append(client.admin.command("hello")["connectionId"])
                if hold_all:
                    bump("arrived")
                    if not wait_for("arrived"):
                        raise RuntimeError("only %d of %d greenlets arrived" % (counts["arrived"], total))
                    cid = client.admin.command("hello")["connectionId"]
                    ids.append(cid)
                    with lock:
                        snapshot.append((cid, key))
                    bump("recorded")
                    if not wait_for("recorded"):
                        raise RuntimeError("only %d of %d greenlets recorded" % (counts["recorded"], total))
                    ids.append(client.admin.command("hello")["connectionId"])
        except Exception as exc:
            errors.append(short(exc))
        finally:
            per_request[key] = ids
            for cid in set(ids):
                with lock:
                    threads_per_cid.setdefault(cid, set()).add(t)

    ready = threading.Barrier(MIXED_THREADS)  # real (thread=False): the threads start together

    def thread_main(t: int) -> None:
        try:
            ready.wait(30)
            gs = [gevent.spawn(green, t, g) for g in range(MIXED_GREENLETS)]
            gevent.joinall(gs, timeout=60)
            thread_outcomes[t] = sum(1 for g in gs if not g.dead)
        except BaseException as exc:  # reported: a crash here is a finding
            thread_outcomes[t] = short(exc)

    t0 = now()
    threads = [threading.Thread(target=thread_main, args=(t,), daemon=True) for t in range(MIXED_THREADS)]
    for th in threads:
        th.start()
    deadline = now() + 90
    for th in threads:
        th.join(max(0.0, deadline - now()))
    elapsed = now() - t0
    n_ids = [len(set(v)) for v in per_request.values()]
    return {
        "threads": MIXED_THREADS,
        "greenlets_per_thread": MIXED_GREENLETS,
        "rounds": rounds,
        "max_pool_size": client.max_pool_size,
        "elapsed": round(elapsed, 3),
        "threads_alive_after_join": sum(1 for th in threads if th.is_alive()),
        "greenlets_alive_per_thread": [thread_outcomes.get(t) for t in range(MIXED_THREADS)],
        "requests_reporting": len(per_request),
        "requests_with_one_connection_id": sum(1 for k in n_ids if k == 1),
        "max_connection_ids_per_request": max(n_ids) if n_ids else 0,
        "violations": len(violations),
        "violation_samples": violations[:5],
        "errors": len(errors),
        "error_samples": errors[:5],
        "snapshot_size": len(snapshot),
        "snapshot_distinct_connection_ids": len({c for c, _ in snapshot}),
        "connection_ids": len(threads_per_cid),
        "connection_ids_used_by_several_threads": sum(1 for ts in threads_per_cid.values() if len(ts) > 1),
        "stats_after": stats(client),
    }


def s_mixed(env: Env) -> dict:
    if env.mode != "mixed":
        raise SystemExit("the mixed scenario runs in mode 'mixed' only")
    import gevent.monkey

    mon = Monitor(env)
    db = dbname("mixed")
    mon.client[db].c.create_index("k")
    out = {
        "threading_patched": gevent.monkey.is_module_patched("threading"),
        "socket_patched": gevent.monkey.is_module_patched("socket"),
    }
    # Phase 1: a socket per greenlet, all 200 requests alive at once.
    baseline = mon.settle()
    mon.start()
    client = env.client(max_pool_size=MIXED_THREADS * MIXED_GREENLETS)
    out["use_greenlets"] = client.use_greenlets
    out["all_at_once"] = _mixed_phase(env, client, db, "all", hold_all=True, rounds=2)
    mon.stop()
    out["all_at_once"]["connections"] = mon.figures(baseline)
    client.close()
    # Phase 2: 8 sockets for 200 greenlets in 4 threads: slots and idle sockets
    # are handed across threads (and re-homed to the taker's hub).
    baseline = mon.settle()
    mon.start()
    client = env.client(max_pool_size=8, waitQueueTimeoutMS=30000)
    out["contended"] = _mixed_phase(env, client, db, "contended", hold_all=False, rounds=3)
    mon.stop()
    out["contended"]["connections"] = mon.figures(baseline)
    client.close()
    mon.client.drop_database(db)
    mon.close()
    return out


# ---------------------------------------------------------------------------
# 9. hub hygiene
# ---------------------------------------------------------------------------
def s_hub(env: Env) -> dict:
    if not env.green:
        raise SystemExit("hub runs in the gevent modes only")
    gevent = env.gevent
    db = dbname("hub")
    client = env.client()
    coll = client[db].c
    coll.insert_many([{"i": i} for i in range(50)])
    with client.start_request():
        coll.insert_one({"i": -1}, w=0)
        in_request_count = coll.count_documents({})
    cur = coll.find({}, batch_size=5)
    first = [next(cur)["i"], next(cur)["i"]]
    del cur  # partially iterated: its server cursor is killed on the next operation
    gc.collect()
    gevent.joinall([gevent.spawn(coll.find_one, {"i": i}) for i in range(10)], timeout=10)
    found = coll.count_documents({})
    client.drop_database(db)
    # The client stays open, as an application's would: idle sockets must not
    # keep the hub's loop alive.
    t0 = now()
    waited = gevent.wait(timeout=5)
    wait_elapsed = now() - t0
    return {
        "use_greenlets": client.use_greenlets,
        "in_request_count": in_request_count,
        "first_two": first,
        "count_after": found,
        "wait_result": bool(waited),
        "wait_elapsed": round(wait_elapsed, 3),
        "stats": stats(client),
    }


SCENARIOS = {
    "pinning": s_pinning,
    "ryw": s_ryw,
    "reclaim": s_reclaim,
    "economy": s_economy,
    "exhaustion": s_exhaustion,
    "stalls": s_stalls,
    "kills": s_kills,
    "mixed": s_mixed,
    "hub": s_hub,
}


def main(argv: list) -> int:
    if len(argv) != 4 or argv[1] not in SCENARIOS:
        print("usage: %s {%s} {%s} URI" % (argv[0], ",".join(SCENARIOS), ",".join(MODES)), file=sys.stderr)
        return 2
    scenario, mode, uri = argv[1], argv[2], argv[3]
    # A deadlock must leave evidence: dump every thread's stack before the
    # test's own subprocess timeout (120 s) kills us.
    faulthandler.dump_traceback_later(float(os.environ.get("SCENARIO_WATCHDOG", "100")), exit=True)
    env = Env(mode, uri)
    t0 = now()
    result = SCENARIOS[scenario](env)
    result = {"scenario": scenario, "mode": mode, "total_elapsed": round(now() - t0, 3), **result}
    faulthandler.cancel_dump_traceback_later()
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
