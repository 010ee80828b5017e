"""Helpers shared by the test modules: the test modes, the one child runner,
the one connection monitor, fail points and small waits.

Everything here asks the real server; nothing counts on the driver's own
bookkeeping alone.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import select
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import bson
import pytest
from pymongo import monitoring
from pymongo.errors import OperationFailure

import mongo_requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---------------------------------------------------------------------------
# Test modes
# ---------------------------------------------------------------------------
THREADS, PATCHED, UNPATCHED, MIXED = "threads", "gevent-patched", "gevent-unpatched", "mixed"
MODES = (THREADS, PATCHED, UNPATCHED, MIXED)
# Tests without a ``modes`` marker run in these; mixed mode runs only the
# tests that say they are about it.
DEFAULT_MODES = (THREADS, PATCHED, UNPATCHED)
GEVENT_MODES = (PATCHED, UNPATCHED)


class Mode:
    """The concurrency mode this pytest process runs in, and the primitives that suit it.

    ``threads``: no gevent; workers are OS threads; clients use auto identity
    (threads).  ``gevent-patched``: ``patch_all()`` ran before pytest
    (tests/run_mode.py); workers are greenlets; auto identity must pick
    greenlets.  ``gevent-unpatched``: nothing patched; workers are greenlets;
    clients get ``use_greenlets=True``.  ``mixed``: ``patch_all(thread=False)``;
    top-level workers are real threads, each running its own hub and
    greenlets; clients get ``use_greenlets=True``.
    """

    def __init__(self, name: str, explicit: bool) -> None:
        if name not in MODES:
            raise pytest.UsageError("MONGO_REQUESTS_TEST_MODE=%r: want one of %s" % (name, ", ".join(MODES)))
        self.name = name
        #: True when the mode was chosen (tests/run_mode.py or the environment),
        #: False for a plain ``python -m pytest``, which also runs the other
        #: modes of the mode-sensitive files in children.
        self.explicit = explicit
        #: Top-level workers are greenlets (else real threads).
        self.green = name in GEVENT_MODES
        #: Auto identity must pick greenlets in every mode but threads.
        self.expect_greenlets = name != THREADS
        self.client_options: dict[str, Any] = {"use_greenlets": True} if name in (UNPATCHED, MIXED) else {}
        self.gevent: Any = None
        if name != THREADS:
            import gevent
            import gevent.event
            import gevent.socket

            self.gevent = gevent

    def __repr__(self) -> str:
        return "Mode(%r)" % self.name

    def check_patching(self) -> None:
        """Fail loudly when the process was not patched the way the mode says."""
        monkey = sys.modules.get("gevent.monkey")
        patched = {m: bool(monkey and monkey.is_module_patched(m)) for m in ("socket", "threading")}
        want = {
            THREADS: {"socket": False, "threading": False},
            PATCHED: {"socket": True, "threading": True},
            UNPATCHED: {"socket": False, "threading": False},
            MIXED: {"socket": True, "threading": False},
        }[self.name]
        if patched != want:
            raise pytest.UsageError(
                "mode %s wants patched=%s but the process has %s: start it with "
                "`python tests/run_mode.py %s ...`" % (self.name, want, patched, self.name)
            )

    def client(self, uri: str, **kwargs: Any) -> mongo_requests.MongoClient:
        """A client with this mode's options (``kwargs`` win)."""
        return mongo_requests.MongoClient(uri, **{**self.client_options, **kwargs})

    def spawn(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Start a top-level worker: a greenlet in the gevent modes, else a daemon thread."""
        if self.green:
            return self.gevent.spawn(fn, *args)
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        return t

    def join(self, handles: list, timeout: float) -> int:
        """Wait for every handle, at most ``timeout`` seconds; return how many are still alive."""
        if self.green:
            self.gevent.joinall(handles, timeout=timeout)
            return sum(1 for h in handles if not h.dead)
        deadline = time.monotonic() + timeout
        for t in handles:
            t.join(max(0.0, deadline - time.monotonic()))
        return sum(1 for t in handles if t.is_alive())

    def sleep(self, seconds: float) -> None:
        """Sleep without blocking the hub (gevent's sleep whenever gevent is in charge)."""
        if self.gevent is not None:
            self.gevent.sleep(seconds)
        else:
            time.sleep(seconds)

    def event(self) -> Any:
        """An event the top-level workers can wait on."""
        if self.green:
            return self.gevent.event.Event()
        return threading.Event()


def current_mode() -> Mode:
    """The mode of this process, from ``MONGO_REQUESTS_TEST_MODE`` (threads when unset)."""
    name = os.environ.get("MONGO_REQUESTS_TEST_MODE")
    return Mode(name or THREADS, explicit=bool(name))


class Gate:
    """Opens once ``n`` workers have arrived; waits on it are bounded."""

    def __init__(self, mode: Mode, n: int) -> None:
        self.n = n
        self.count = 0
        self._lock = threading.Lock()
        self._event = mode.event()

    def arrive(self) -> bool:
        """Count one arrival; True for the one that opened the gate."""
        with self._lock:
            self.count += 1
            last = self.count == self.n
        if last:
            self._event.set()
        return last

    def wait(self, timeout: float) -> bool:
        """True once the gate is open, False after ``timeout`` seconds."""
        return bool(self._event.wait(timeout))


# ---------------------------------------------------------------------------
# The one child runner
# ---------------------------------------------------------------------------
def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child: this worktree first on PYTHONPATH, no inherited mode."""
    env = dict(os.environ)
    env.pop("MONGO_REQUESTS_TEST_MODE", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def run_child(
    argv: list[str], timeout: float, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run ``python argv...`` in a fresh interpreter from the project root.

    Fails the test, with the tails of both streams, when the child exits
    non-zero (unless ``check`` is False) or outlives ``timeout`` seconds.
    """
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, *argv], cwd=ROOT, env=env or child_env(), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            "%s still running after %ss\n--- stdout ---\n%s\n--- stderr ---\n%s"
            % (argv[:3], timeout, _tail(exc.stdout, 5000), _tail(exc.stderr, 10000)),
            pytrace=False,
        )
    if check and proc.returncode != 0:
        pytest.fail(
            "%s exited %d after %.1fs\n--- stdout ---\n%s\n--- stderr ---\n%s"
            % (argv[:3], proc.returncode, time.monotonic() - t0, proc.stdout[-10000:], proc.stderr[-10000:]),
            pytrace=False,
        )
    return proc


def _tail(data: str | bytes | None, n: int) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    return data[-n:]


# ---------------------------------------------------------------------------
# The one connection monitor
# ---------------------------------------------------------------------------
def pid_alive(pid: int) -> bool:
    """True while a process with this pid exists (a zombie counts until it is reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def server_connections(admin_client: mongo_requests.MongoClient) -> int:
    """The server's count of open connections (``serverStatus().connections.current``)."""
    status = admin_client.admin.command(
        {"serverStatus": 1, "metrics": 0, "wiredTiger": 0, "tcmalloc": 0, "locks": 0, "opcounters": 0}
    )
    return int(status["connections"]["current"])


def settled_connections(
    admin_client: mongo_requests.MongoClient,
    timeout: float = 3.0,
    interval: float = 0.03,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """The server's connection count once three readings in a row agree.

    Sockets closed by an earlier test leave the server's count a few
    milliseconds later; the admin client's own socket is in every reading.
    """
    deadline = time.monotonic() + timeout
    readings = [server_connections(admin_client)]
    while time.monotonic() < deadline:
        sleep(interval)
        readings.append(server_connections(admin_client))
        if len(readings) >= 3 and readings[-1] == readings[-2] == readings[-3]:
            break
    return readings[-1]


def app_connections(admin_client: mongo_requests.MongoClient, appname: str) -> int:
    """How many connections the server has open from clients named ``appname``.

    Exact where the global count is not: other tests' clients close their
    sockets (or are collected) whenever they like, and the server counts
    those too.  ``$currentOp`` with ``idleConnections`` lists every
    connection with the ``appName`` from its handshake.
    """
    reply = admin_client.admin.command(
        {
            "aggregate": 1,
            "pipeline": [
                {"$currentOp": {"allUsers": True, "idleConnections": True}},
                {"$match": {"appName": appname}},
                {"$count": "n"},
            ],
            "cursor": {},
        }
    )
    batch = reply["cursor"]["firstBatch"]
    return int(batch[0]["n"]) if batch else 0


class ConnMonitor:
    """Samples the server's connection count (minus a baseline), and optionally
    the pool's ``open`` gauge, from a worker of its own until stopped.

    With ``mode`` the worker is that mode's (a greenlet in the gevent modes)
    and sleeps the mode's way; otherwise it is a daemon thread.  Without a
    ``baseline`` the settled count at construction is the baseline (the
    monitor's own connection is part of it).
    """

    def __init__(
        self,
        admin_client: mongo_requests.MongoClient,
        baseline: int | None = None,
        pool: Any = None,
        interval: float = 0.005,
        mode: Mode | None = None,
    ) -> None:
        self.admin_client = admin_client
        self.mode = mode
        self.pool = pool
        self.interval = interval
        self.samples: list[int] = []
        self.pool_open: list[int] = []
        self.error: BaseException | None = None
        self._stopped = False
        self._handle: Any = None
        self.baseline = self.settle() if baseline is None else baseline

    def _sleep(self, seconds: float) -> None:
        (self.mode.sleep if self.mode is not None else time.sleep)(seconds)

    def current(self) -> int:
        """The server's connection count now."""
        return server_connections(self.admin_client)

    def settle(self) -> int:
        """The settled count now (see :func:`settled_connections`)."""
        return settled_connections(self.admin_client, interval=0.05, sleep=self._sleep)

    def start(self) -> ConnMonitor:
        """Start sampling (again); returns self."""
        self._stopped = False
        self.samples = []
        self.pool_open = []
        if self.mode is not None:
            self._handle = self.mode.spawn(self._run)
        else:
            self._handle = threading.Thread(target=self._run, daemon=True)
            self._handle.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stopped:
                self.samples.append(self.current() - self.baseline)
                if self.pool is not None:
                    self.pool_open.append(self.pool.get_stats()["open"])
                self._sleep(self.interval)
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc

    def stop(self) -> int:
        """Stop sampling; return the peak over the baseline."""
        self._stopped = True
        if self.mode is not None:
            assert self.mode.join([self._handle], 10) == 0, "the monitor is still running"
        else:
            self._handle.join(10)
            assert not self._handle.is_alive(), "the monitor is still running"
        assert self.error is None, self.error
        assert self.samples, "the monitor took no sample"
        return max(self.samples)

    def settled_over_baseline(self) -> int:
        """The settled count now, over the baseline."""
        return self.settle() - self.baseline


# ---------------------------------------------------------------------------
# Small probes
# ---------------------------------------------------------------------------
def conn_id(client: mongo_requests.MongoClient) -> int:
    """The server's id for the connection this call runs on (from ``hello``)."""
    return client.admin.command("hello")["connectionId"]


STAT_KEYS = (
    "open",
    "idle",
    "in_use",
    "pinned",
    "waiting",
    "created",
    "closed",
    "reclaimed",
    "pins",
    "checkouts",
    "waits",
    "wait_timeouts",
    "resets",
    "requests_started",
    "requests_ended",
)


def pool_stats(client: mongo_requests.MongoClient) -> dict[str, int]:
    """The pool's gauges and counters (a counter that never moved is 0)."""
    s = client.pool.get_stats()
    return {k: int(s.get(k, 0)) for k in STAT_KEYS}


def assert_quiet(stats: dict, max_size: int) -> None:
    """Nothing checked out, pinned or queued; never more sockets than the cap."""
    assert (stats["in_use"], stats["pinned"], stats["waiting"]) == (0, 0, 0), stats
    assert stats["open"] <= max_size, stats


def report(request: pytest.FixtureRequest, **figures: Any) -> None:
    """Print what a test measured (shown with -rA / -s); also append it to ``$GREENLET_MATRIX_LOG``."""
    line = json.dumps({"test": request.node.nodeid, **figures}, sort_keys=True, default=str)
    print(line)
    log = os.environ.get("GREENLET_MATRIX_LOG")
    if log:
        with open(log, "a") as f:
            f.write(line + "\n")


def short(exc: BaseException) -> str:
    """``Type: message`` of an error a worker saw, cut to a readable length."""
    return "%s: %s" % (type(exc).__name__, str(exc)[:300])


class Heartbeats(monitoring.ServerHeartbeatListener):
    """A client's heartbeat events, counted (``event_listeners=[Heartbeats()]``).

    A lone seed's checks as a user sees them: ``counts["started"]``, ``["succeeded"]``, ``["failed"]``.
    """

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def _count(self, kind: str) -> None:
        with self._lock:
            self.counts[kind] += 1

    def started(self, event: Any) -> None:
        self._count("started")

    def succeeded(self, event: Any) -> None:
        self._count("succeeded")

    def failed(self, event: Any) -> None:
        self._count("failed")


def unique_app(prefix: str = "t") -> str:
    """A unique name: an appName to scope fail points to one client, or a database name."""
    return "%s_%s" % (prefix, uuid.uuid4().hex[:10])


# ---------------------------------------------------------------------------
# Fail points
# ---------------------------------------------------------------------------
_FAIL_POINTS_CHECKED: set[tuple[str, int]] = set()

NO_FAIL_POINTS = (
    "this test needs fail points (configureFailPoint), which this mongod refuses: %s. "
    "Start mongod with `--setParameter enableTestCommands=1` (the throwaway mongod from "
    "mongo_requests.testing does), or leave MONGODB_URI unset to use that one."
)


def require_fail_points(admin_client: mongo_requests.MongoClient) -> None:
    """Fail the test with a clear message when the server has no fail points (checked once per server)."""
    key = admin_client.address
    if key in _FAIL_POINTS_CHECKED:
        return
    try:
        admin_client.admin.command("configureFailPoint", "failCommand", mode="off")
    except OperationFailure as exc:
        pytest.fail(NO_FAIL_POINTS % exc, pytrace=False)
    _FAIL_POINTS_CHECKED.add(key)


def configure_fail_point(admin_client: mongo_requests.MongoClient, mode: Any, **data: Any) -> None:
    """``configureFailPoint failCommand`` with ``mode`` and ``data`` (after the one-time check)."""
    require_fail_points(admin_client)
    admin_client.admin.command("configureFailPoint", "failCommand", mode=mode, data=data)


@contextlib.contextmanager
def fail_point(admin_client: mongo_requests.MongoClient, mode: Any, **data: Any) -> Iterator[None]:
    """Turn on ``failCommand`` with ``data``; always turn it off afterwards."""
    configure_fail_point(admin_client, mode, **data)
    try:
        yield
    finally:
        admin_client.admin.command("configureFailPoint", "failCommand", mode="off")


# ---------------------------------------------------------------------------
# Waits and threads
# ---------------------------------------------------------------------------
def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 2.0,
    interval: float = 0.01,
    sleep: Callable[[float], Any] = time.sleep,
) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass.

    ``sleep=mode.sleep`` lets gevent's hub run between polls in the unpatched
    mode (a death callback of a finished greenlet runs in the hub).
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        sleep(interval)


def run_threads(target: Callable[..., Any], count: int, *args: Any, join_timeout: float = 30.0) -> list:
    """Run ``target(i, *args)`` in ``count`` threads; return their exceptions.

    Fails the test if any thread is still running after ``join_timeout``.
    """
    errors: list = []

    def wrapper(i: int) -> None:
        try:
            target(i, *args)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append((i, exc))

    threads = [threading.Thread(target=wrapper, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + join_timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = [t for t in threads if t.is_alive()]
    assert not alive, "%d threads still running after %ss" % (len(alive), join_timeout)
    return errors


def in_forked_child(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Fork; run ``fn()`` in the child, which reports a JSON dict through a pipe and exits."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave at once, whatever happens
        try:
            os.close(r)
            report = fn()
        except BaseException as exc:  # noqa: BLE001
            report = {"error": repr(exc)}
        try:
            os.write(w, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    try:
        # poll, not select: the descriptor may be above select's 1024 limit.
        poller = select.poll()
        poller.register(r, select.POLLIN)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if not poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
                break
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
        if not wait_until(lambda: os.waitpid(pid, os.WNOHANG) != (0, 0), 5, 0.02):
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    return json.loads(b"".join(chunks) or b"{}")


class StartedCommands(monitoring.CommandListener):
    """A command listener that keeps a copy of every started command named ``name``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.commands: list[dict[str, Any]] = []

    def started(self, event: Any) -> None:
        if event.command_name == self.name:
            self.commands.append(dict(event.command))

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass


def spy_commands(monkeypatch: Any, names: tuple[str, ...], record: Callable[..., Any]) -> list[Any]:
    """Spy on ``SocketInfo.command``: for each command named in ``names``, keep
    ``record(dbname, cmd, codec_options, sequences, body)`` in the list returned."""
    from mongo_requests import socket_info

    calls: list[Any] = []
    original = socket_info.SocketInfo.command

    def spy(
        self, dbname, cmd, codec_options=bson.DEFAULT_CODEC_OPTIONS, sequences=(), check=True, body=None, unpack=None
    ):
        if next(iter(cmd)) in names:
            calls.append(record(dbname, cmd, codec_options, sequences, body))
        return original(self, dbname, cmd, codec_options, sequences, check, body, unpack)

    monkeypatch.setattr(socket_info.SocketInfo, "command", spy)
    return calls


def failure(call: Callable[[], Any]) -> tuple[Any, ...]:
    """What ``call()`` raised, as a comparable tuple: type, message, code, details."""
    with pytest.raises(Exception) as info:
        call()
    exc = info.value
    return type(exc), str(exc), getattr(exc, "code", None), getattr(exc, "details", None)


# Write concern errors a fail point makes a write answer with, by test case (None: no fail point).
WRITE_CONCERN_ERRORS: dict[str, dict[str, Any]] = {
    "write concern error": {"code": 100, "codeName": "UnsatisfiableWriteConcern", "errmsg": "not enough nodes"},
    "write concern timeout": {"code": 64, "errmsg": "waiting for replication timed out", "errInfo": {"wtimeout": True}},
}


def write_concern_failure(admin: Any, case: str, command: str, app: str) -> tuple[Any, dict[str, Any] | None]:
    """``(context manager, error)``: a fail point answering ``command`` twice with ``case``'s write concern error."""
    wce = WRITE_CONCERN_ERRORS.get(case)
    if wce is None:
        return contextlib.nullcontext(), None
    return fail_point(admin, {"times": 2}, failCommands=[command], writeConcernError=wce, appName=app), wce


def spy_precoded_encodes(monkeypatch: Any) -> list[Any]:
    """The documents the hot path's finders and writers encode (``precoded.encode``'s calls), from now on."""
    from mongo_requests import precoded

    docs: list[Any] = []
    original = precoded.encode

    def counting(doc: Any, check_keys: bool, options: Any) -> bytes:
        docs.append(doc)
        return original(doc, check_keys, options)

    monkeypatch.setattr(precoded, "encode", counting)
    return docs


@contextlib.contextmanager
def gc_disabled() -> Iterator[None]:
    """The garbage collector off inside the block: what is freed there was freed by reference counting alone."""
    import gc

    gc.disable()
    try:
        yield
    finally:
        gc.enable()
