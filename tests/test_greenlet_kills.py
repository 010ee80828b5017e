"""Kills, timeouts, hub stalls and mixed threads+greenlets, against the real mongod.

The companion of tests/test_greenlets.py (same fixtures, same modes
mechanism): kills and stalls need greenlets, so they run in the two gevent
modes; the mixed scenario runs in mode ``mixed`` (``patch_all(thread=False)``)
only.  Each test measures and asserts in one place.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

from helpers import (
    GEVENT_MODES,
    MIXED,
    UNPATCHED,
    ConnMonitor,
    Gate,
    Mode,
    assert_quiet,
    configure_fail_point,
    pool_stats,
    report,
    short,
    unique_app,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("watchdog")]


def now() -> float:
    return time.monotonic()


# ---------------------------------------------------------------------------
# 1. stalls: the hub keeps running while greenlets talk to the server
# ---------------------------------------------------------------------------
_CLK_TCK = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0


def _schedstat() -> tuple | None:
    """(runqueue wait, steal per CPU) in seconds so far, for this OS thread; None off Linux.

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


def _stall_run(mode: Mode, client, db: str, workers: int = 100, duration: float = 2.0) -> dict[str, Any]:
    """100 greenlets hammer the server for ``duration`` s while a ticker measures how late a 5 ms sleep wakes."""
    gevent = mode.gevent
    coll = client[db].c
    stop_at = now() + duration
    lateness = [0.0]  # wall-clock lateness of the 5 ms sleep
    on_thread = [0.0]  # the same, less runqueue wait and steal
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
                stolen = max((a - b for a, b in zip(after[1], before[1], strict=True)), default=0.0)
            else:
                waited = stolen = 0.0
            ticks[0] += 1
            lateness[0] = max(lateness[0], late)
            if late - waited - stolen > on_thread[0]:
                on_thread[0] = late - waited - stolen
                worst.update(
                    at=round(t - stop_at + duration, 3),
                    wall=round(late, 4),
                    runqueue=round(waited, 4),
                    steal=round(stolen, 4),
                )

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
    handles = [gevent.spawn(worker, i) for i in range(workers)]
    gevent.joinall(handles + [tick], timeout=duration + 60)
    return {
        "alive_after_join": sum(1 for h in handles + [tick] if not h.dead),
        "ops": ops[0],
        "ticks": ticks[0],
        "max_stall": round(on_thread[0], 4),
        "max_stall_wall": round(lateness[0], 4),
        "schedstat": has_schedstat,
        "worst_tick": worst,
        "errors": errors,
    }


@pytest.mark.modes(*GEVENT_MODES)
def test_stalls_hub_never_blocks(request, mode, make_client, scratch):
    client = make_client()
    assert client.use_greenlets is True
    g = _stall_run(mode, client, scratch)
    report(request, greenlets=g)
    assert (g["errors"], g["alive_after_join"]) == ([], 0), g["errors"][:5]
    assert g["ops"] > 0 and g["ticks"] > 0
    # max_stall is how late a 5 ms sleep woke, less the time the kernel kept
    # the hub's thread waiting for a CPU (its schedstat) and the time the
    # hypervisor stole the CPU (/proc/stat): on 2 virtual cores shared with
    # mongod's threads those alone reach a few hundred ms now and then, and
    # they are not the driver's doing.  What is left is time the thread spent
    # running code or blocked in a system call: a blocking driver shows up
    # there (see the control).  max_stall_wall, the raw figure, is reported.
    assert g["schedstat"] is True
    assert g["max_stall"] < 0.2, g


@pytest.mark.modes(UNPATCHED)
def test_stalls_control_blocking_client_stalls_the_hub(request, mode, make_client, scratch):
    """The control: the same workload on a client forced onto thread identity and blocking sockets.

    Every operation blocks the hub, so the ticker sees the whole run as one
    long stall, by either measure: the test above can tell the two apart.
    (Only unpatched: under patch_all() there are no blocking sockets to pick.)
    """
    control = make_client(use_greenlets=False)
    assert control.use_greenlets is False
    c = _stall_run(mode, control, scratch)
    report(request, control_blocking=c)
    assert c["errors"] == [] and c["ops"] > 0, c["errors"][:5]
    assert c["max_stall_wall"] > 0.5, c
    assert c["max_stall"] > 0.2, c


# ---------------------------------------------------------------------------
# 2. kills and timeouts at every stage of an operation
# ---------------------------------------------------------------------------
def ping_victim(gevent, client, how: str, timeout: float, outcome: dict) -> None:
    """A greenlet body: one ping, under a Timeout if ``how`` says so.

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


def assert_slots_usable(mode: Mode, monitor: ConnMonitor, client, baseline: int) -> None:
    """max_pool_size greenlets, each in a request, all hold a socket at the same time."""
    n = client.max_pool_size
    arrived, release = Gate(mode, n), mode.event()
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

    handles = [mode.spawn(hold) for _ in range(n)]
    all_held = arrived.wait(10)
    during = pool_stats(client)
    server = monitor.current()
    release.set()
    alive = mode.join(handles, 10)
    mode.sleep(0.05)
    assert all_held and errors == [], errors[:5]
    assert len(set(cids)) == n and during["pinned"] == n, (cids, during)
    assert alive == 0
    assert server - baseline <= n + 2, (server, baseline)
    assert_quiet(pool_stats(client), n)


def _victim_queued(mode: Mode, make_client, how: str) -> tuple[Any, dict, dict, dict | None, Any]:
    """The victim queues for the only slot, held by this greenlet's request; then ``how`` ends it.

    Returns (victim greenlet, its outcome, stats while queued, stats right
    after the hand-off or None, the client).
    """
    gevent = mode.gevent
    client = make_client(max_pool_size=1, waitQueueTimeoutMS=5000)
    outcome: dict = {}
    # This greenlet holds the only socket in a request.
    client.start_request()
    client.admin.command("ping")
    v = gevent.spawn(ping_victim, gevent, client, how, 0.2, outcome)
    gevent.sleep(0.05)
    queued = pool_stats(client)
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
        handed = pool_stats(client)
        v.join(5)
    else:
        v.join(5)
        client.end_request()
    gevent.sleep(0.05)
    return v, outcome, queued, handed, client


@pytest.mark.modes(*GEVENT_MODES)
def test_kill_while_queued_for_a_slot(mode, make_client, monitor):
    v, outcome, queued, _, client = _victim_queued(mode, make_client, "kill")
    assert outcome["result"] == "GreenletExit" and v.dead, outcome
    assert queued["waiting"] == 1, queued
    assert_quiet(pool_stats(client), 1)
    assert_slots_usable(mode, monitor, client, monitor.baseline)


@pytest.mark.modes(*GEVENT_MODES)
def test_kill_racing_the_slot_handoff(mode, make_client, monitor):
    v, outcome, _, handed, client = _victim_queued(mode, make_client, "kill-handoff")
    assert outcome["result"] == "GreenletExit" and v.dead, outcome
    # The slot really was handed to the doomed waiter (it left the queue
    # still checked out)...
    assert (handed["waiting"], handed["in_use"], handed["pinned"]) == (0, 1, 0), handed
    # ...and the dying waiter passed it on.
    after = pool_stats(client)
    assert_quiet(after, 1)
    assert after["open"] == 1, after
    assert_slots_usable(mode, monitor, client, monitor.baseline)


@pytest.mark.modes(*GEVENT_MODES)
def test_timeout_while_queued_for_a_slot(mode, make_client, monitor):
    v, outcome, queued, _, client = _victim_queued(mode, make_client, "timeout")
    assert outcome["result"] == "Timeout" and v.dead, outcome
    assert outcome["elapsed"] < 2.5  # the 0.2 s Timeout, not waitQueueTimeoutMS=5000
    assert queued["waiting"] == 1, queued
    assert_quiet(pool_stats(client), 1)
    assert_slots_usable(mode, monitor, client, monitor.baseline)


def _silent_listener(mode: Mode) -> tuple[Any, list, Any]:
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""
    lsock = mode.gevent.socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    accepted: list = []

    def acceptor() -> None:
        while True:
            conn, _ = lsock.accept()
            accepted.append(conn)

    return lsock, accepted, mode.gevent.spawn(acceptor)


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


@pytest.mark.modes(*GEVENT_MODES)
@pytest.mark.parametrize("how,result", [("kill", "GreenletExit"), ("timeout", "Timeout")])
def test_kill_while_connecting(mode, how, result):
    """The victim dies while its handshake waits for a server that never answers."""
    gevent = mode.gevent
    lsock, accepted, acceptor = _silent_listener(mode)
    client = mode.client(
        "127.0.0.1:%d" % lsock.getsockname()[1],
        max_pool_size=2,
        connectTimeoutMS=20000,
        serverSelectionTimeoutMS=20000,
        waitQueueTimeoutMS=5000,
    )
    try:
        outcome: dict = {}
        v = gevent.spawn(ping_victim, gevent, client, how, 0.3, outcome)
        deadline = now() + 5
        while not accepted and now() < deadline:
            gevent.sleep(0.01)
        gevent.sleep(0.05)  # the handshake has been sent; the victim waits for the reply
        connecting = pool_stats(client)
        if how == "kill":
            v.kill(block=True, timeout=5)
        else:
            v.join(5)
        gevent.sleep(0.05)
        after = pool_stats(client)
        first = list(accepted)
        assert outcome["result"] == result and v.dead, outcome
        assert outcome["elapsed"] < 2.5  # not connectTimeoutMS=20000
        assert connecting["in_use"] == 1, connecting
        # The half-open socket was closed (the listener saw EOF) and its slot freed.
        assert first and all(_closed_by_peer(c) for c in first), first
        assert_quiet(after, 2)
        assert after["open"] == 0, after

        # Both slots usable at once: two callers both reach the connect stage
        # (the listener accepts two more) without queueing for a slot.  They
        # check out from the pool itself: through server selection, the second
        # would wait for the first one's check of the (still unknown) seed.
        def attempt() -> None:
            try:
                with gevent.Timeout(0.5):
                    client.pool.checkout()
            except gevent.Timeout:
                pass

        n = client.max_pool_size
        handles = [gevent.spawn(attempt) for _ in range(n)]
        deadline = now() + 3
        while len(accepted) < len(first) + n and now() < deadline:
            gevent.sleep(0.01)
        proof = pool_stats(client)
        gevent.joinall(handles, timeout=5)
        gevent.sleep(0.05)
        assert len(accepted) - len(first) == n == 2
        assert proof["in_use"] == 2 and proof["waiting"] == 0 and proof["waits"] == 0, proof
        assert sum(1 for h in handles if not h.dead) == 0
        assert_quiet(pool_stats(client), 2)
        assert pool_stats(client)["open"] == 0
    finally:
        client.close()
        acceptor.kill()
        for c in accepted:
            c.close()
        lsock.close()


# Turning the fail point off waits for the held find to finish on the server,
# so each mid-message case costs this long; it only has to dwarf the 0.3 s
# kill delay.
KILL_BLOCK_MS = 3000


@pytest.mark.modes(*GEVENT_MODES)
def test_kill_mid_message(mode, make_client, monitor, scratch):
    """The victim is killed while the server holds its find for 3 s (failCommand)."""
    gevent = mode.gevent
    appname = unique_app("kills-d")
    monitor.admin_client[scratch].c.insert_one({"x": 1})
    baseline = monitor.settle()
    client = make_client(max_pool_size=3, waitQueueTimeoutMS=5000, appname=appname)
    client.admin.command("ping")
    before = pool_stats(client)
    outcome: dict = {}

    def victim() -> None:
        t0 = now()
        try:
            client[scratch].c.find_one()
            outcome["result"] = "completed"
        except gevent.GreenletExit:
            outcome["result"] = "GreenletExit"
            outcome["elapsed"] = round(now() - t0, 3)
            raise
        except Exception as exc:
            outcome["result"] = short(exc)

    configure_fail_point(
        monitor.admin_client,
        {"times": 1},
        failCommands=["find"],
        blockConnection=True,
        blockTimeMS=KILL_BLOCK_MS,
        appName=appname,
    )
    try:
        t0 = now()
        v = gevent.spawn(victim)
        gevent.sleep(0.3)
        in_flight = pool_stats(client)
        v.kill(block=True, timeout=5)
        victim_done = now() - t0
    finally:
        monitor.admin_client.admin.command("configureFailPoint", "failCommand", mode="off")
    gevent.sleep(0.05)
    after = pool_stats(client)
    assert outcome["result"] == "GreenletExit" and v.dead, outcome
    assert victim_done < 2.0  # the kill did not wait out the server's 3 s block
    assert in_flight["in_use"] == 1, in_flight
    # The interrupted socket was closed, not returned to the pool...
    assert (after["closed"] - before["closed"], after["resets"] - before["resets"]) == (1, 0), (before, after)
    assert_quiet(after, 3)
    assert after["open"] == 0, after
    # ...and all 3 slots are still usable at once.
    assert_slots_usable(mode, monitor, client, baseline)


@pytest.mark.modes(*GEVENT_MODES)
def test_timeout_mid_message_inside_a_request(mode, make_client, monitor, scratch):
    """A Timeout fires while the server holds the request's find; the request goes on, on a fresh socket."""
    gevent = mode.gevent
    appname = unique_app("kills-d")
    monitor.admin_client[scratch].c.insert_one({"x": 1})
    baseline = monitor.settle()
    client = make_client(max_pool_size=3, waitQueueTimeoutMS=5000, appname=appname)
    client.admin.command("ping")
    before = pool_stats(client)
    outcome: dict = {}

    def victim() -> None:
        t0 = now()
        try:
            with client.start_request():
                outcome["cid_before"] = client.admin.command("hello")["connectionId"]
                try:
                    with gevent.Timeout(0.3):
                        client[scratch].c.find_one()
                    outcome["result"] = "completed"
                except gevent.Timeout:
                    outcome["result"] = "Timeout"
                outcome["elapsed"] = round(now() - t0, 3)
                outcome["stats_in_request_after_timeout"] = pool_stats(client)
                outcome["cid_after"] = client.admin.command("hello")["connectionId"]
                outcome["find_after"] = client[scratch].c.find_one()["x"]
                outcome["cid_after_find"] = client.admin.command("hello")["connectionId"]
        except Exception as exc:
            outcome["result"] = short(exc)

    configure_fail_point(
        monitor.admin_client,
        {"times": 1},
        failCommands=["find"],
        blockConnection=True,
        blockTimeMS=KILL_BLOCK_MS,
        appName=appname,
    )
    try:
        v = gevent.spawn(victim)
        v.join(5)
    finally:
        monitor.admin_client.admin.command("configureFailPoint", "failCommand", mode="off")
    gevent.sleep(0.05)
    after = pool_stats(client)
    assert outcome["result"] == "Timeout" and v.dead, outcome
    assert outcome["elapsed"] < 2.0  # the 0.3 s Timeout, not the server's 3 s block
    # The request survives on a fresh socket: the interrupted one is closed.
    s = outcome["stats_in_request_after_timeout"]
    assert (s["pinned"], s["in_use"], s["open"]) == (0, 0, 0), s
    assert outcome["cid_after"] != outcome["cid_before"]
    assert outcome["cid_after_find"] == outcome["cid_after"] and outcome["find_after"] == 1
    assert (after["closed"] - before["closed"], after["resets"] - before["resets"]) == (1, 0), (before, after)
    assert_quiet(after, 3)
    assert_slots_usable(mode, monitor, client, baseline)


# ---------------------------------------------------------------------------
# 3. mixed: real threads, each with its own hub and greenlets
# ---------------------------------------------------------------------------
MIXED_THREADS = 4
MIXED_GREENLETS = 50


def _mixed_phase(client, db: str, phase: str, hold_all: bool, rounds: int) -> dict[str, Any]:
    """4 real threads run 50 greenlets each; every greenlet does w=0 writes and reads in a request."""
    import gevent

    total = MIXED_THREADS * MIXED_GREENLETS
    lock = threading.Lock()  # a real lock (thread=False): held for a few bytecodes only
    counts = {"arrived": 0, "recorded": 0}
    per_request: dict = {}
    snapshot: list = []
    violations: list = []
    errors: list = []
    thread_outcomes: dict = {}
    threads_per_cid: dict = {}
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

    threads = [threading.Thread(target=thread_main, args=(t,), daemon=True) for t in range(MIXED_THREADS)]
    for th in threads:
        th.start()
    deadline = now() + 90
    for th in threads:
        th.join(max(0.0, deadline - now()))
    n_ids = [len(set(v)) for v in per_request.values()]
    return {
        "threads_alive_after_join": sum(1 for th in threads if th.is_alive()),
        "greenlets_alive_per_thread": [thread_outcomes.get(t) for t in range(MIXED_THREADS)],
        "requests_reporting": len(per_request),
        "requests_with_one_connection_id": sum(1 for k in n_ids if k == 1),
        "max_connection_ids_per_request": max(n_ids) if n_ids else 0,
        "violations": violations,
        "errors": errors,
        "snapshot": snapshot,
        "threads_per_connection_id": threads_per_cid,
        "stats_after": pool_stats(client),
    }


def assert_mixed_phase(p: dict[str, Any], cap: int) -> None:
    """What holds for both phases: no deadlock, no error, no violation, one socket per request."""
    assert p["threads_alive_after_join"] == 0, p  # no deadlock
    assert p["greenlets_alive_per_thread"] == [0, 0, 0, 0], p
    assert p["errors"] == [], p["errors"][:5]
    assert p["violations"] == [], p["violations"][:5]
    assert p["requests_reporting"] == 200
    assert p["requests_with_one_connection_id"] == 200 and p["max_connection_ids_per_request"] == 1
    assert_quiet(p["stats_after"], cap)
    assert p["stats_after"]["requests_ended"] == 200


@pytest.fixture
def mixed_db(monitor: ConnMonitor, scratch: str) -> str:
    import gevent.monkey

    # The mode really is mixed: sockets are gevent's, threads are real.
    assert gevent.monkey.is_module_patched("threading") is False
    assert gevent.monkey.is_module_patched("socket") is True
    monitor.admin_client[scratch].c.create_index("k")
    return scratch


@pytest.mark.modes(MIXED)
def test_mixed_all_requests_alive_at_once(request, make_client, monitor, mixed_db):
    """A socket per greenlet: all 200 requests, in 4 threads, alive at once."""
    cap = MIXED_THREADS * MIXED_GREENLETS
    monitor.start()
    client = make_client(max_pool_size=cap)
    assert client.use_greenlets is True and client.max_pool_size == cap
    p = _mixed_phase(client, mixed_db, "all", hold_all=True, rounds=2)
    peak = monitor.stop()
    report(request, peak_over_baseline=peak, stats_after=p["stats_after"])
    assert_mixed_phase(p, cap)
    assert peak <= cap, monitor.samples
    assert len(p["snapshot"]) == 200 and len({c for c, _ in p["snapshot"]}) == 200


@pytest.mark.modes(MIXED)
def test_mixed_contended_sockets_move_between_threads(request, make_client, monitor, mixed_db):
    """8 sockets for 200 greenlets in 4 threads: slots and idle sockets are handed across threads."""
    monitor.start()
    client = make_client(max_pool_size=8, waitQueueTimeoutMS=30000)
    assert client.use_greenlets is True and client.max_pool_size == 8
    p = _mixed_phase(client, mixed_db, "contended", hold_all=False, rounds=3)
    peak = monitor.stop()
    report(request, peak_over_baseline=peak, stats_after=p["stats_after"])
    assert_mixed_phase(p, 8)
    assert peak <= 8, monitor.samples
    assert len(p["threads_per_connection_id"]) <= 8
    assert p["stats_after"]["waits"] > 0
    # Sockets really moved between threads (re-homed to another hub).
    assert sum(1 for ts in p["threads_per_connection_id"].values() if len(ts) > 1) > 0, p
