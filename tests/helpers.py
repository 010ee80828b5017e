"""Helpers shared by the test modules (server probes, fail points, threads).

Everything here asks the real server; nothing counts on the driver's own
bookkeeping alone.
"""
from __future__ import annotations

import contextlib
import threading
import time
import uuid


def server_connections(admin_client) -> int:
    """The server's count of open connections (``serverStatus().connections.current``)."""
    return admin_client.admin.command("serverStatus")["connections"]["current"]


def conn_id(client) -> int:
    """The server's id for the connection this call runs on (from ``hello``)."""
    return client.admin.command("hello")["connectionId"]


def unique_app(prefix: str = "t") -> str:
    """A unique name: an appName to scope fail points to one client, or a db name."""
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


@contextlib.contextmanager
def fail_point(admin_client, mode, **data):
    """Turn on ``failCommand`` with ``data``; always turn it off afterwards."""
    admin_client.admin.command("configureFailPoint", "failCommand", mode=mode, data=data)
    try:
        yield
    finally:
        admin_client.admin.command("configureFailPoint", "failCommand", mode="off")


def wait_until(predicate, timeout: float = 2.0, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def settled_connections(admin_client, timeout: float = 3.0, interval: float = 0.03) -> int:
    """The server's connection count once three readings in a row agree.

    Sockets closed by an earlier test leave the server's count a few
    milliseconds later; the admin client's own socket is in every reading.
    """
    deadline = time.monotonic() + timeout
    readings = [server_connections(admin_client)]
    while time.monotonic() < deadline:
        time.sleep(interval)
        readings.append(server_connections(admin_client))
        if len(readings) >= 3 and readings[-1] == readings[-2] == readings[-3]:
            break
    return readings[-1]


def run_threads(target, count: int, *args, join_timeout: float = 30.0) -> list:
    """Run ``target(i, *args)`` in ``count`` threads; return their exceptions.

    Fails the test if any thread is still running after ``join_timeout``.
    """
    errors: list = []

    def wrapper(i):
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


class ConnMonitor(threading.Thread):
    """Samples the server's connection count (minus a baseline), and optionally
    the pool's ``open`` gauge, until stopped."""

    def __init__(self, admin_client, baseline: int, pool=None, interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.admin_client = admin_client
        self.baseline = baseline
        self.pool = pool
        self.interval = interval
        self.samples: list[int] = []
        self.pool_open: list[int] = []
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                self.samples.append(server_connections(self.admin_client) - self.baseline)
                if self.pool is not None:
                    self.pool_open.append(self.pool.get_stats()["open"])
                self._stop_event.wait(self.interval)
        except BaseException as exc:  # noqa: BLE001
            self.error = exc

    def stop(self) -> int:
        self._stop_event.set()
        self.join(10)
        assert not self.is_alive()
        assert self.error is None, self.error
        assert self.samples, "the monitor took no sample"
        return max(self.samples)
