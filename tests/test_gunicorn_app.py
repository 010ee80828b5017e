"""examples/gunicorn_app under real gunicorn (-k gevent, 2 workers) and real load.

Each test starts ``python -m gunicorn`` as a subprocess against the session's
mongod, with a database of its own, and fires HTTP visits at it from a pool
of client threads, each on its own HTTP connection, kept alive for a number
of visits (127.0.0.1 only, bounded in count and in time).  Checked:

* read-your-own-writes across processes: a visit's answer counts its own
  visit and every visit to that region already answered when it was sent
  (exactly so in the regions that only one client thread visits);
* the final totals equal the visits sent;
* server connections stay within workers * MAX_POOL_SIZE (+1 for the
  master's import-time socket with --preload, +1 heartbeat connection per
  worker on a replica set);
* the load test runs twice: on the session's mongod and on the 3-member set;
* with --preload (client created, and a socket opened, before the fork) the
  two workers never share a socket, nor use the master's.
"""

from __future__ import annotations

import collections
import concurrent.futures
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

# Both come with the [test] extra.  Imported plainly, so a missing one fails
# the run loudly instead of skipping these tests.
import gevent  # noqa: E402,F401
import gunicorn  # noqa: E402,F401
import pytest

import mongo_requests
from helpers import THREADS, ConnMonitor, app_connections, configure_fail_point, unique_app

# gunicorn's workers choose their own mode (gevent); running this file again
# under each test mode would only repeat it.
pytestmark = pytest.mark.modes(THREADS)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP_DIR = os.path.join(ROOT, "examples", "gunicorn_app")
WORKERS = 2
MAX_POOL_SIZE = 20
REGIONS = ["US", "EU", "APAC", "LATAM"]
BROWSERS = ["Firefox", "Chrome", "Safari"]
OSES = ["Mac", "Windows", "Linux"]
# The app connects with this appName, so the fail point below slows its
# updates only.
APP_NAME = "gunicorn_app_test"
# On loopback an unacknowledged update is applied within microseconds, so a
# read sent right after it on *another* socket rarely overtakes it.  To make
# the race that start_request() prevents common, the failCommand fail point
# (mongod test commands) holds this share of the app's updates this long
# before running them, as lock contention or a busy disk would.  A read on
# the same socket still waits behind its update; a read on another socket
# does not.  (The app without start_request fails test_visits_under_load
# with ~100 wrong totals out of 2,400 with the fail point, ~15-60 without.)
UPDATE_DELAY_MS = 50
UPDATE_DELAY_SHARE = 0.2
# Connections besides the workers' pools that may appear during a run:
# the --preload master's import-time socket, plus a little room.
SLACK = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _with_option(uri: str, name: str, value: str) -> str:
    """``uri`` with one more ``name=value`` option."""
    if "?" in uri:
        return "%s&%s=%s" % (uri, name, value)
    if uri.count("/") < 3:  # mongodb://host:port, no path yet
        uri += "/"
    return "%s?%s=%s" % (uri, name, value)


def _gunicorn_has(setting: str) -> bool:
    from gunicorn.config import KNOWN_SETTINGS

    return any(s.name == setting for s in KNOWN_SETTINGS)


class Gunicorn:
    """``python -m gunicorn -k gevent`` serving the example on a free port."""

    def __init__(self, mongodb_uri: str, db_name: str, preload: bool = False) -> None:
        self.port = _free_port()
        self.argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "-k",
            "gevent",
            "-w",
            str(WORKERS),
            "-b",
            "127.0.0.1:%d" % self.port,
            "--graceful-timeout",
            "10",
            "--chdir",
            APP_DIR,
        ]
        if preload:
            self.argv.append("--preload")
        if _gunicorn_has("control_socket_disable"):
            self.argv.append("--no-control-socket")  # no shared ~/.gunicorn socket
        self.argv.append("app:app")
        self.env = dict(
            os.environ,
            MONGODB_URI=_with_option(mongodb_uri, "appName", APP_NAME),
            COUNTERS_DB=db_name,
            MAX_POOL_SIZE=str(MAX_POOL_SIZE),
            PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p),
            PYTHONUNBUFFERED="1",
        )
        self.stderr = tempfile.TemporaryFile(mode="w+b")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> Gunicorn:
        self.proc = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.stderr,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("gunicorn exited with %s on start-up" % self.proc.returncode)
            try:
                status, body = http_get(self.port, "/stats", timeout=2)
                if status == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("gunicorn did not answer within %.0fs" % timeout)
            time.sleep(0.1)

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group we started: master + workers
            proc.wait(timeout=10)

    def output(self, limit: int = 20000) -> str:
        self.stderr.flush()
        self.stderr.seek(0)
        text = self.stderr.read().decode(errors="replace")
        return text if len(text) <= limit else "...\n" + text[-limit:]


def http_get(port: int, path: str, timeout: float = 10.0) -> tuple[int, dict]:
    """One GET on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def worker_stats(port: int, timeout: float = 60.0, width: int = 16) -> dict[int, dict]:
    """/stats of each worker (keyed by pid), asking until both have answered (at most ``timeout`` seconds).

    Asked ``width`` at a time: one request after another on an idle server
    tends to be accepted by the same worker every time.  The bound is time,
    not rounds: a worker answers only once it has booted, and gunicorn's
    gevent worker boots by monkey-patching in the child, where gevent
    searches every loaded module for references to ``ssl`` (pymongo, imported
    by the --preload master, has some).  On a loaded machine one worker was
    caught there by py-spy after the other had answered 320 requests (20
    rounds, the old bound: about 10 s in a failed CI run).
    """
    seen: dict[int, dict] = {}
    deadline = time.monotonic() + timeout
    with concurrent.futures.ThreadPoolExecutor(width) as pool:
        while True:
            for status, body in pool.map(lambda _: http_get(port, "/stats"), range(width)):
                assert status == 200, body
                seen[body["pid"]] = body
            if len(seen) == WORKERS or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    return seen


class Load:
    """Fire ``n`` visits from ``threads`` client threads; record what each saw.

    Each thread keeps an HTTP/1.1 connection alive for ``per_connection``
    visits, then opens a new one (as browsers and proxies do): every new
    connection goes to whichever worker accepts it first, so recycling them
    spreads the load over both workers.

    ``answered[region]`` counts the visits to ``region`` whose response has
    arrived.  A visit sent when it was k must be answered with a total of
    at least k + 1: those k writes were applied (their reads came back on
    the same sockets), and its own write precedes its read.  And at most
    the number of visits to the region sent by the time its answer arrived.

    Most visits go to a few shared REGIONS.  There, visits still in flight
    can make up for a missing own visit (k + 1 is only a lower bound), so
    each client also sends ``own_share`` of its visits to a region nobody
    else visits: there both bounds meet and the total must be exact.
    """

    def __init__(
        self,
        port: int,
        n: int,
        threads: int,
        per_connection: int = 1,
        own_share: float = 0.25,
        time_limit: float = 45.0,
        seed: int = 0,
    ) -> None:
        self.own_share = own_share
        self.port, self.n, self.threads = port, n, threads
        self.per_connection, self.time_limit, self.seed = per_connection, time_limit, seed
        self.lock = threading.Lock()
        self.answered: collections.Counter = collections.Counter()
        self.sent: collections.Counter = collections.Counter()
        # (region, answered before sending, sent when the answer came, reply)
        self.results: list[tuple[str, int, int, dict]] = []
        self.errors: list[str] = []
        self._next = 0
        self.elapsed = 0.0

    def _take(self) -> int | None:
        with self.lock:
            if self._next >= self.n or self.errors:
                return None
            self._next += 1
            return self._next

    def _client(self, index: int, deadline: float) -> None:
        rnd = random.Random(self.seed * 1000 + index)
        conn = None
        used = 0  # requests on ``conn`` so far
        try:
            while self._take() is not None:
                if time.monotonic() > deadline:
                    raise TimeoutError("load exceeded %.0fs" % self.time_limit)
                if rnd.random() < self.own_share:
                    region = "client%02d" % index  # only this thread visits it
                else:
                    region = rnd.choice(REGIONS)
                path = "/visit?region=%s&browser=%s&os=%s" % (region, rnd.choice(BROWSERS), rnd.choice(OSES))
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
                    used = 0
                used += 1
                last = used >= self.per_connection
                with self.lock:
                    seen_before = self.answered[region]
                    self.sent[region] += 1
                conn.request("GET", path, headers={"Connection": "close"} if last else {})
                resp = conn.getresponse()
                raw = resp.read()
                if resp.status != 200:
                    raise AssertionError("%s -> HTTP %d: %r" % (path, resp.status, raw[:500]))
                body = json.loads(raw)
                with self.lock:
                    self.answered[region] += 1
                    self.results.append((region, seen_before, self.sent[region], body))
                if last:
                    conn.close()
                    conn = None
        except Exception as exc:  # noqa: BLE001 - reported by the test
            with self.lock:
                self.errors.append("client %d: %r" % (index, exc))
        finally:
            if conn is not None:
                conn.close()

    def run(self) -> Load:
        deadline = time.monotonic() + self.time_limit
        threads = [threading.Thread(target=self._client, args=(i, deadline), daemon=True) for i in range(self.threads)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.time_limit + 30)
        self.elapsed = time.perf_counter() - t0
        assert not any(t.is_alive() for t in threads), "client threads hung"
        return self

    # -- checks -------------------------------------------------------------
    def check_read_your_own_writes(self) -> None:
        wrong = [
            (region, low, high, body)
            for region, low, high, body in self.results
            if body["region"] != region or not low + 1 <= body["total"] <= high
        ]
        assert not wrong, "%d of %d totals out of bounds (region, answered before, sent by then, reply): %r" % (
            len(wrong),
            len(self.results),
            wrong[:5],
        )

    def visits_by_pid(self) -> collections.Counter:
        return collections.Counter(body["pid"] for *_, body in self.results)

    def conns_by_pid(self) -> dict[int, set[int]]:
        by_pid: dict[int, set[int]] = collections.defaultdict(set)
        for *_, body in self.results:
            by_pid[body["pid"]].add(body["conn"])
        return dict(by_pid)


def check_totals(port: int, sampler: ConnMonitor, db_name: str, sent: collections.Counter) -> None:
    """Final totals, from the app's /totals and straight from the database."""
    status, body = http_get(port, "/totals")
    assert status == 200, body
    assert body["totals"] == dict(sent), (body, dict(sent))
    direct: collections.Counter = collections.Counter()
    for doc in sampler.admin_client[db_name]["counts"].find():
        direct[doc["region"]] += doc["n"]
    assert direct == sent, (dict(direct), dict(sent))


@pytest.fixture
def app_uri(request, mongodb_uri):
    """The URI the app gets: the session's mongod, or (parametrized with "replica_set") the 3-member set's."""
    if getattr(request, "param", "standalone") == "replica_set":
        return request.getfixturevalue("replica_set").uri
    return mongodb_uri


@pytest.fixture
def db_name(app_uri):
    name = unique_app("gunicorn_app")
    yield name
    with mongo_requests.MongoClient(app_uri) as c:
        c.drop_database(name)


@pytest.fixture
def sampler(app_uri):
    """The (primary) server's connection count, sampled from a separate client (its own socket is in the baseline)."""
    admin = mongo_requests.MongoClient(app_uri)
    yield ConnMonitor(admin, interval=0.02)
    admin.close()


@pytest.fixture
def slow_updates(app_uri):
    """Delay the app's updates by UPDATE_DELAY_MS on the (primary) server (see above).

    Needs fail points: on a server without test commands the test fails and says so.
    """
    # A short-lived client, so the connection counts above never see it.
    with mongo_requests.MongoClient(app_uri) as c:
        configure_fail_point(
            c,
            {"activationProbability": UPDATE_DELAY_SHARE},
            failCommands=["update"],
            appName=APP_NAME,
            blockConnection=True,
            blockTimeMS=UPDATE_DELAY_MS,
        )
    try:
        yield True
    finally:
        with mongo_requests.MongoClient(app_uri) as c:
            c.admin.command("configureFailPoint", "failCommand", mode="off")


def _run_with_server(server: Gunicorn, body) -> None:
    """Run ``body(server)``; on failure show gunicorn's output; always stop it."""
    try:
        server.start()
        body(server)
    except BaseException:
        print("---- gunicorn %s ----\n%s" % (" ".join(server.argv[1:]), server.output()))
        raise
    finally:
        server.stop()
        server.stderr.close()


@pytest.mark.parametrize("app_uri", ["standalone", "replica_set"], indirect=True)
def test_visits_under_load(app_uri, db_name, sampler, slow_updates):
    """2,400 concurrent visits: RYOW per visit, exact totals, bounded connections (on a mongod, and on a set)."""
    server = Gunicorn(app_uri, db_name)
    # On a replica set each worker also keeps one heartbeat connection to the
    # primary, and the members' own connections to it (replication,
    # heartbeats) come and go in the server's count: the exact check is the
    # app's own connections, by appName, at the end.
    replica_set = "replicaSet=" in app_uri
    cap = WORKERS * MAX_POOL_SIZE + SLACK + (WORKERS + 6 if replica_set else 0)
    sampler.start()

    def body(server: Gunicorn) -> None:
        load = Load(server.port, n=2400, threads=64, per_connection=20, seed=1).run()
        sampler.stop()
        assert not load.errors, load.errors[:5]
        assert sum(load.sent.values()) == len(load.results) == 2400
        load.check_read_your_own_writes()
        check_totals(server.port, sampler, db_name, load.sent)
        stats = worker_stats(server.port)
        by_pid = load.conns_by_pid()
        assert len(by_pid) == WORKERS and server.proc.pid not in by_pid, load.visits_by_pid()
        for pid, conns in by_pid.items():
            # One pool per worker: never more sockets than its cap.
            assert len(conns) <= MAX_POOL_SIZE, (pid, sorted(conns))
        pids = list(by_pid)
        for i, a in enumerate(pids):
            for b in pids[i + 1 :]:
                assert not by_pid[a] & by_pid[b], (a, b)
        for st in stats.values():
            assert st["use_greenlets"] is True and st["preload_conn"] is None, st
            pool = st["pool"]
            assert pool["open"] <= MAX_POOL_SIZE and pool["pinned"] == 0 and pool["waiting"] == 0, st
        assert sampler.samples, "no serverStatus samples"
        assert max(sampler.samples) <= cap, (sampler.baseline, max(sampler.samples))
        if replica_set:
            mine = app_connections(sampler.admin_client, APP_NAME)
            assert mine <= WORKERS * (MAX_POOL_SIZE + 1), mine
        print(
            "\n[gunicorn] %d visits in %.2fs = %.0f req/s, 64 clients, 20 visits per connection, slow updates %s; "
            "peak server connections +%d (cap %d); visits per worker %s; connectionIds per worker %s; pool %s"
            % (
                len(load.results),
                load.elapsed,
                len(load.results) / load.elapsed,
                slow_updates,
                max(sampler.samples),
                cap,
                dict(load.visits_by_pid()),
                {p: len(c) for p, c in by_pid.items()},
                {p: {k: s["pool"].get(k, 0) for k in ("created", "pins", "waits", "open")} for p, s in stats.items()},
            )
        )

    _run_with_server(server, body)


def test_preload_fork_safety(app_uri, db_name, sampler, slow_updates):
    """--preload: the master opens a socket before forking; workers never use it or share one."""
    server = Gunicorn(app_uri, db_name, preload=True)
    sampler.start()

    def body(server: Gunicorn) -> None:
        stats = worker_stats(server.port)
        assert len(stats) == WORKERS, "only %s answered /stats" % list(stats)
        preload_conn = {st["preload_conn"] for st in stats.values()}
        assert len(preload_conn) == 1 and None not in preload_conn, stats
        preload_conn = preload_conn.pop()
        for pid, st in stats.items():
            assert st["import_pid"] == server.proc.pid != pid, st  # imported by the master
            assert st["use_greenlets"] is True, st
            assert st["pool"]["generation"] >= 1, st  # reset in the child at fork

        # New connection per visit, so both workers get a share.
        load = Load(server.port, n=400, threads=32, per_connection=1, seed=2).run()
        sampler.stop()
        assert not load.errors, load.errors[:5]
        assert len(load.results) == 400
        load.check_read_your_own_writes()
        check_totals(server.port, sampler, db_name, load.sent)

        by_pid = load.conns_by_pid()
        assert set(by_pid) == set(stats), (sorted(by_pid), sorted(stats))
        (a, conns_a), (b, conns_b) = sorted(by_pid.items())
        assert not conns_a & conns_b, "workers %d and %d shared sockets %s" % (a, b, sorted(conns_a & conns_b))
        assert preload_conn not in conns_a | conns_b, "a worker used the master's socket %d" % preload_conn
        for pid, conns in by_pid.items():
            assert len(conns) <= MAX_POOL_SIZE, (pid, sorted(conns))
        assert max(sampler.samples) <= WORKERS * MAX_POOL_SIZE + SLACK, (sampler.baseline, max(sampler.samples))
        print(
            "\n[gunicorn --preload] %d visits in %.2fs = %.0f req/s (new connection each); master %d "
            "pre-fork connectionId %d; visits per worker %s; connectionIds per worker %s; peak server connections +%d"
            % (
                len(load.results),
                load.elapsed,
                len(load.results) / load.elapsed,
                server.proc.pid,
                preload_conn,
                dict(load.visits_by_pid()),
                {p: len(c) for p, c in by_pid.items()},
                max(sampler.samples),
            )
        )

    _run_with_server(server, body)
