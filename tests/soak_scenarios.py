"""Greenlet scenarios for tests/test_soak.py, each run in its own process.

    python tests/soak_scenarios.py churn   <uri> <dbname> [greenlets] [batch] [deadline_s]
    python tests/soak_scenarios.py restart <uri> <dbname> [workers]

``gevent.monkey.patch_all()`` runs first, before anything else is imported,
so the client picks greenlet identity by itself (``use_greenlets`` auto).
Every scenario prints exactly one JSON line with what it measured (the
``restart`` scenario also prints two handshake words before it, see below);
the assertions live in the test, never here.  A scenario only measures and
reports: it exits 0 unless the harness itself broke.

The ``restart`` handshake with the parent test, one line each way::

    child  -> READY         every worker has done some work for >= 1 s
    parent    (records the kill time, SIGKILLs mongod)
    child  -> NOTICED <n>   a worker saw an error, and the socket timeout
                            plus a margin went by (every in-flight
                            operation has had its chance to fail)
    parent    (restarts mongod on the same port and dbpath)
    parent -> RESTARTED     on the child's stdin
    child  -> {json}        workers finished (or were killed at a deadline)
"""
from gevent import monkey

monkey.patch_all()

import collections  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import gevent.select  # noqa: E402
from pymongo.errors import ConnectionFailure  # noqa: E402

import mongo_requests  # noqa: E402
from mongo_requests.testing import raw_command  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def emit(obj) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True, default=repr) + "\n")
    sys.stdout.flush()


def say(word: str) -> None:
    sys.stdout.write(word + "\n")
    sys.stdout.flush()


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def host_port(uri: str) -> tuple:
    hostport = uri.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
    host, _, port = hostport.rpartition(":")
    return host, int(port)


def server_connections(address) -> int:
    """``connections.current`` through a fresh raw socket (which counts itself:
    every reading includes it, so differences are unaffected)."""
    return raw_command(address, {"serverStatus": 1})["connections"]["current"]


def settled_connections(address, timeout: float = 5.0) -> int:
    """The count once three readings in a row agree (closing sockets settle)."""
    deadline = time.monotonic() + timeout
    readings = [server_connections(address)]
    while time.monotonic() < deadline:
        gevent.sleep(0.05)
        readings.append(server_connections(address))
        if len(readings) >= 3 and readings[-1] == readings[-2] == readings[-3]:
            break
    return readings[-1]


def settle_hub() -> None:
    """Let death callbacks (rawlink) run, then collect garbage."""
    gevent.sleep(0.2)
    gc.collect()
    gevent.sleep(0.2)


# -- churn ---------------------------------------------------------------------
def churn(uri: str, dbname: str, total: int = 100_000, batch: int = 1000, deadline_s: float = 120.0,
          warmup: int = 10_000, max_pool_size: int = 20) -> None:
    """``total`` greenlets, each starts a request, does one operation and dies
    without end_request.  Spawned ``batch`` at a time (joined), until ``total``
    or ``deadline_s`` of wall time, whichever comes first.

    tracemalloc is started after the warm-up (right after the warm-up
    reading), so the warm-up runs at full speed and the traced figure is
    what the remaining greenlets allocated and left alive: an upper bound on
    the growth.
    """
    address = host_port(uri)
    out: dict = {"target": total, "batch": batch, "deadline_s": deadline_s, "warmup": warmup,
                 "max_pool_size": max_pool_size}
    out["conn_baseline"] = settled_connections(address)

    client = mongo_requests.MongoClient(uri, max_pool_size=max_pool_size, waitQueueTimeoutMS=10000)
    out["use_greenlets"] = client.use_greenlets
    coll = client[dbname].churn
    coll.replace_one({"_id": "probe"}, {"_id": "probe", "x": 1}, upsert=True)

    errors = collections.Counter()
    first_errors: list = []

    def work(i: int) -> None:
        try:
            client.start_request()
            if i & 1:
                if coll.find_one({"_id": "probe"}) is None:
                    raise AssertionError("probe document missing")
            else:
                coll.insert_one({"i": i}, w=0)
            # ...and die without end_request.
        except Exception as exc:  # noqa: BLE001 - reported, asserted on by the test
            errors[type(exc).__name__] += 1
            if len(first_errors) < 5:
                first_errors.append(repr(exc))

    done = 0
    start = time.monotonic()
    deadline = start + deadline_s
    warm = None
    while done < total and time.monotonic() < deadline:
        n = min(batch, total - done)
        greenlets = [gevent.spawn(work, done + k) for k in range(n)]
        # joinall with a timeout: a hung greenlet must not hang the soak.
        gevent.joinall(greenlets, timeout=max(1.0, deadline - time.monotonic() + 30.0))
        hung = sum(1 for g in greenlets if not g.dead)
        if hung:
            out["hung"] = hung
            gevent.killall(greenlets, block=True, timeout=5)
            break
        del greenlets
        done += n
        if done == warmup and warm is None:
            settle_hub()
            warm = {"t": time.monotonic(), "done": done, "rss": rss_bytes(), "stats": client.pool.get_stats()}
            tracemalloc.start()
            warm["traced"] = tracemalloc.get_traced_memory()[0]
            warm["tm_self"] = tracemalloc.get_tracemalloc_memory()
            warm_snapshot = tracemalloc.take_snapshot()
    end_t = time.monotonic()
    settle_hub()
    out["done"] = done
    out["elapsed_s"] = end_t - start
    out["rate"] = done / max(end_t - start, 1e-9)
    out["deadline_hit"] = done < total and "hung" not in out
    out["errors"] = dict(errors)
    out["first_errors"] = first_errors
    out["rss_end"] = rss_bytes()
    if warm is not None:
        traced_end, traced_peak = tracemalloc.get_traced_memory()
        tm_self = tracemalloc.get_tracemalloc_memory()
        end_snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
        out["tracemalloc_self"] = tm_self - warm["tm_self"]
        out["traced_phase_rate"] = (done - warm["done"]) / max(end_t - warm["t"], 1e-9)
        out["rss_warm"] = warm["rss"]
        out["traced_warm"] = warm["traced"]
        out["traced_end"] = traced_end
        out["traced_peak"] = traced_peak
        out["traced_growth"] = traced_end - warm["traced"]
        out["rss_growth"] = out["rss_end"] - warm["rss"]
        out["greenlets_after_warmup"] = done - warm["done"]
        out["top_growth"] = [str(s) for s in end_snapshot.compare_to(warm_snapshot, "lineno")[:8]]
        out["stats_warm"] = warm["stats"]
    out["in_request_main"] = client.in_request()
    out["stats"] = client.pool.get_stats()
    # Sockets open on the server: the baseline plus the pool's open sockets.
    out["conn_after"] = settled_connections(address)
    out["pool_open_at_conn_after"] = client.pool.get_stats()["open"]
    try:
        client[dbname].churn.drop()
    except Exception as exc:  # noqa: BLE001
        out["drop_error"] = repr(exc)
    out["pool_open_before_close"] = client.pool.get_stats()["open"]
    client.close()
    t_close = time.monotonic()
    series = []
    while True:
        current = server_connections(address)
        series.append(current)
        if current == out["conn_baseline"] or time.monotonic() - t_close > 5.0:
            break
        gevent.sleep(0.05)
    out["conn_after_close"] = series[-1]
    out["close_settle_s"] = time.monotonic() - t_close
    out["conn_after_close_series"] = series[-10:]
    emit(out)


# -- restart -------------------------------------------------------------------
class StdinLines:
    """Cooperative line reader for stdin (patched select, raw os.read)."""

    def __init__(self) -> None:
        self._buf = b""

    def readline(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = gevent.select.select([0], [], [], remaining)
            if readable:
                chunk = os.read(0, 4096)
                if not chunk:
                    return None  # EOF: the parent went away
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()


def sock_key(sock) -> list | None:
    """(server processId, connectionId) of a SocketInfo: unique across restarts."""
    if sock is None:
        return None
    tv = sock.hello.get("topologyVersion") or {}
    return [str(tv.get("processId")), sock.server_connection_id]


SOCKET_TIMEOUT_MS = 2000
NOTICE_SETTLE_S = SOCKET_TIMEOUT_MS / 1000.0 + 1.0


def restart(uri: str, dbname: str, workers: int = 100) -> None:
    """Workers loop on a mix of operations until the parent restarts mongod.

    Even workers ("pinned") start one request for their whole life and loop
    on ``$inc`` with w=0, then a read that must see it (same socket), and an
    acknowledged ``j=True`` insert now and then.  Odd workers ("short") loop
    on a ``j=True`` insert outside any request, then a short request holding
    a read, a w=0 ``$inc`` and a read that must see it.

    Every operation is timed into a ring per worker.  At its first
    ConnectionFailure a worker stops and waits for RESTARTED; so does one
    whose operation, held in server selection during the outage, succeeded
    after the restart.  Then each worker must succeed at once: pinned
    workers inside the request they never left (on a fresh socket), short
    ones in a new request.
    """
    client = mongo_requests.MongoClient(
        uri,
        socketTimeoutMS=SOCKET_TIMEOUT_MS,
        serverSelectionTimeoutMS=15000,
        max_pool_size=workers // 2 + 10,
        waitQueueTimeoutMS=10000,
    )
    db = client[dbname]
    things, counters = db.things, db.counters
    counters.insert_many([{"_id": i, "n": 0} for i in range(workers)])
    restarted = gevent.event.Event()
    stop_at = time.monotonic() + 120.0  # a bound on phase 1, whatever happens

    acked: list = []  # [_id, ack time] of acknowledged j=True inserts
    recs = [
        {
            "worker": i,
            "kind": "pinned" if i % 2 == 0 else "short",
            "iterations": 0,
            "ops": collections.deque(maxlen=256),  # [name, start, end, outcome]
            "error": None,  # first ConnectionFailure: [type, time, True, message]
            "unexpected": [],  # anything else (failed read-your-writes, other exceptions)
            "pre_keys": [],  # sock_key of every socket this worker was pinned to in phase 1
            "pre_gen": None,  # the newest generation among them, from the killed server
            "phase2": None,
        }
        for i in range(workers)
    ]
    pre_socks: list = [[] for _ in range(workers)]  # the SocketInfo objects themselves

    def timed(rec, name, fn, *args, **kwargs):
        entry = [name, time.monotonic(), None, "running"]
        rec["ops"].append(entry)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            kind = "CF" if isinstance(exc, ConnectionFailure) else "EX"
            entry[2], entry[3] = time.monotonic(), "%s:%s" % (kind, type(exc).__name__)
            raise
        entry[2], entry[3] = time.monotonic(), "ok"
        return result

    def note_pinned(rec, i):
        """Remember the sockets this worker was pinned to (before the restart
        and, for workers held through the outage, after it: the test tells
        them apart by the server's processId)."""
        sock = client.pool.pinned_socket()
        if sock is not None and not any(sock is s for s in pre_socks[i]):
            pre_socks[i].append(sock)
            rec["pre_keys"].append(sock_key(sock))

    seq = [0] * workers
    pre_pid = [None]

    def insert_j(rec, i):
        seq[i] += 1
        _id = "w%d-%d" % (i, seq[i])
        timed(rec, "insert_j", things.insert_one, {"_id": _id, "w": i}, w=1, j=True)
        acked.append([_id, time.monotonic()])

    def inc_then_read(rec, i, last):
        """w=0 $inc then a read in the caller's request: the read must see it.

        Checked when ``last`` was read on the socket still pinned after the
        read (an operation held through the outage re-pins in between, and
        the restarted server may have lost unjournaled increments).
        """
        before = client.pool.pinned_socket()
        timed(rec, "inc_w0", counters.update_one, {"_id": i}, {"$inc": {"n": 1}}, w=0)
        doc = timed(rec, "read", counters.find_one, {"_id": i})
        n = doc["n"] if doc else None
        after = client.pool.pinned_socket()
        if last is not None and before is not None and after is before and n != last + 1:
            rec["unexpected"].append("read-your-writes: read %r after %r on %r" % (n, last, after))
        return n

    def pinned_iteration(rec, i, state):
        n = inc_then_read(rec, i, state.get("last"))
        note_pinned(rec, i)
        state["last"] = n
        if rec["iterations"] % 5 == 0:
            insert_j(rec, i)

    def short_iteration(rec, i, state):
        insert_j(rec, i)
        with client.start_request():
            doc = timed(rec, "read", counters.find_one, {"_id": i})
            inc_then_read(rec, i, doc["n"] if doc else None)
            note_pinned(rec, i)
        timed(rec, "find", things.find_one, {"w": i})

    def worker(i):
        rec = recs[i]
        state: dict = {}
        pinned = rec["kind"] == "pinned"
        if pinned:
            client.start_request()
        # Phase 1: work until the first network error, or until the restart.
        while not restarted.is_set() and time.monotonic() < stop_at:
            try:
                (pinned_iteration if pinned else short_iteration)(rec, i, state)
                rec["iterations"] += 1
            except ConnectionFailure as exc:
                rec["error"] = [type(exc).__name__, time.monotonic(), True, str(exc)[:200]]
                break
            except Exception as exc:  # noqa: BLE001
                rec["unexpected"].append(repr(exc)[:300])
                break
            gevent.sleep(0)
        if pinned:
            rec["in_request_after_error"] = client.in_request()
            rec["state_after_error"] = client.pool.request_state().name
            rec["sock_after_error"] = client.pool.pinned_socket() is not None
        if not restarted.wait(timeout=max(0.0, stop_at - time.monotonic())):
            rec["unexpected"].append("RESTARTED never came")
            return
        # Phase 2: the first operations after the restart must succeed.
        p2: dict = {"t": time.monotonic()}
        rec["phase2"] = p2
        try:
            if pinned:
                doc = timed(rec, "p2_read", counters.find_one, {"_id": i})
                n = inc_then_read(rec, i, doc["n"] if doc else None)
                sock = client.pool.pinned_socket()
                p2["in_request"] = client.in_request()
                client.end_request()
            else:
                insert_j(rec, i)
                with client.start_request():
                    doc = timed(rec, "p2_read", counters.find_one, {"_id": i})
                    n = inc_then_read(rec, i, doc["n"] if doc else None)
                    sock = client.pool.pinned_socket()
                    p2["in_request"] = client.in_request()
            p2["n"] = n
            p2["key"] = sock_key(sock)
            p2["gen"] = None if sock is None else sock.generation
            old = [s for s in pre_socks[i] if sock_key(s)[0] == pre_pid[0]]
            rec["pre_gen"] = max((s.generation for s in old), default=None)
            p2["new_object"] = sock is not None and not any(sock is s for s in old)
            p2["ok"] = True
        except Exception as exc:  # noqa: BLE001
            p2["ok"] = False
            p2["error"] = repr(exc)[:300]
        p2["end"] = time.monotonic()

    stdin = StdinLines()
    t_spawn = time.monotonic()
    greenlets = [gevent.spawn(worker, i) for i in range(workers)]

    # READY: every worker has done some work, for at least a second.
    ready_deadline = t_spawn + 60.0
    while time.monotonic() < ready_deadline:
        if time.monotonic() - t_spawn >= 1.0 and all(r["iterations"] >= 1 for r in recs):
            break
        gevent.sleep(0.05)
    t_ready = time.monotonic()
    pre_kill_stats = client.pool.get_stats()
    # The killed server's processId: every socket opened before the kill has it.
    pre_pid[0] = str(client.pool.hello["topologyVersion"]["processId"])
    say("READY")

    # NOTICED: the first error, then the socket timeout plus a margin.
    notice_deadline = time.monotonic() + 60.0
    while time.monotonic() < notice_deadline and not any(r["error"] or r["unexpected"] for r in recs):
        gevent.sleep(0.01)
    gevent.sleep(NOTICE_SETTLE_S)
    n_errors = sum(1 for r in recs if r["error"])
    say("NOTICED %d" % n_errors)
    outage_stats = client.pool.get_stats()

    # Operations started during the outage: the server is unknown, so they
    # wait in server selection, and must succeed once mongod is back
    # (serverSelectionTimeoutMS=15000 is far longer than the restart).
    probes: list = []

    def probe(k: int) -> None:
        entry = {"probe": k, "in_request": k % 2 == 0, "start": time.monotonic()}
        probes.append(entry)
        try:
            if entry["in_request"]:
                with client.start_request():
                    counters.find_one({"_id": k})
                    entry["key"] = sock_key(client.pool.pinned_socket())
            else:
                things.find_one({})
            entry["outcome"] = "ok"
        except Exception as exc:  # noqa: BLE001
            entry["outcome"] = repr(exc)[:300]
        entry["end"] = time.monotonic()

    probe_greenlets = [gevent.spawn(probe, k) for k in range(6)]
    gevent.sleep(0.1)

    line = stdin.readline(timeout=120.0)
    t_restarted = time.monotonic()
    restarted.set()
    gevent.joinall(greenlets + probe_greenlets, timeout=30.0)
    hung = [i for i, g in enumerate(greenlets) if not g.dead]
    hung_probes = [k for k, g in enumerate(probe_greenlets) if not g.dead]
    gevent.killall(greenlets + probe_greenlets, block=True, timeout=5)
    settle_hub()
    out = {
        "workers": workers,
        "use_greenlets": client.use_greenlets,
        "t_spawn": t_spawn,
        "t_ready": t_ready,
        "t_restarted": t_restarted,
        "pre_pid": pre_pid[0],
        "restarted_line": line,
        "noticed_errors": n_errors,
        "hung": hung,
        "hung_probes": hung_probes,
        "probes": probes,
        "acked": acked,
        "pre_kill_stats": pre_kill_stats,
        "outage_stats": outage_stats,
        "stats": client.pool.get_stats(),
        # The kill comes after READY: older operations are left out.
        "recs": [dict(r, ops=[op for op in r["ops"] if op[2] is None or op[2] >= t_ready]) for r in recs],
    }
    client.close()
    emit(out)


def main(argv: list) -> int:
    scenario, uri, dbname, *rest = argv
    if scenario == "churn":
        args = [int(rest[0]) if len(rest) > 0 else 100_000, int(rest[1]) if len(rest) > 1 else 1000,
                float(rest[2]) if len(rest) > 2 else 120.0]
        churn(uri, dbname, *args)
    elif scenario == "restart":
        restart(uri, dbname, int(rest[0]) if rest else 100)
    else:
        raise SystemExit("unknown scenario %r" % scenario)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
