"""Server checks: the only I/O of server discovery.

mongo_requests monitors servers in the *single-threaded* mode of the SDAM
specification (as libmongoc's single-threaded client and the PHP driver
do): there is no background monitor.  The topology *scans* - checks every
server once - when an operation selects a server and ``heartbeatFrequencyMS``
has passed since the last scan, or an error marked the topology stale, or no
server is suitable yet.  The checks of one scan run concurrently (threads or
greenlets, from the caller's identity) and are all joined before the scan
returns, so nothing outlives the operation that triggered it: scripts exit
at once, ``gevent.wait()`` returns, and a gunicorn worker stops cleanly.

Each server has one heartbeat connection of its own, kept between scans
(never a pool socket: a full pool cannot delay a check, and a check never
takes a slot from the application).  It uses the client's TLS settings but
never authenticates nor offers ``saslSupportedMechs`` or compression, as the
server monitoring specification asks of monitoring sockets: ``hello`` needs
no user, and a SASL conversation per check would cost the server more than
the check (:meth:`~mongo_requests.handshake.ConnectionSetup.for_monitoring`).
A check is a ``hello`` round trip on it;
the time it takes feeds the server's average round-trip time (an
exponentially weighted moving average, weight 0.2 for the new sample), which
the latency window of server selection uses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pymongo.errors import PyMongoError

from .sdam import Address, ServerDescription, ServerType, TopologyDescription, apply

if TYPE_CHECKING:
    from .events import SdamEvents

__all__ = ["ServerMonitor", "scan"]

log = logging.getLogger("mongo_requests")

_RTT_WEIGHT = 0.2
# A scan that discovers members checks them in the same scan; a hostile or
# badly misconfigured set cannot make it loop for ever.
_MAX_ROUNDS = 4

# connect(address, timeout) -> a connected, handshaken SocketInfo-like object
# with ``.hello``, ``.command(db, cmd)``, ``.close()`` and ``.sock``.
Connect = Callable[[Address, float], Any]
FanOut = Callable[[Sequence[Callable[[], Any]]], list[Any]]


class ServerMonitor:
    """One server's heartbeat connection and round-trip average.

    Not thread-safe by itself: the topology runs one scan at a time.

    :param address: the server's address.
    :param connect: opens and handshakes a new heartbeat connection.
    :param events: the client's heartbeat listeners, or None.
    """

    __slots__ = ("address", "_connect", "_sock", "rtt", "closed", "events")

    def __init__(self, address: Address, connect: Connect, events: SdamEvents | None = None) -> None:
        self.address = address
        self.events = events
        self._connect = connect
        self._sock: Any = None
        self.rtt: float | None = None
        self.closed = False

    def check(self, timeout: float) -> ServerDescription:
        """Run one ``hello`` and describe the server; never raises for server or network errors.

        A failure on a kept connection (the server restarted since the last
        scan, say) is retried once on a new connection, as the specification
        asks, so that one stale socket does not mark a healthy server Unknown.
        """
        reused = self._sock is not None
        try:
            return self._check_once(timeout)
        except PyMongoError as exc:
            first = exc
        if reused and not self.closed:
            try:
                return self._check_once(timeout)
            except PyMongoError as exc:
                first = exc
        self.rtt = None
        return ServerDescription.unknown(self.address, first, time.monotonic())

    def _check_once(self, timeout: float) -> ServerDescription:
        events = self.events
        if events is not None:
            events.heartbeat_started(self.address)
        start = time.monotonic()
        try:
            if self._sock is None:
                self._sock = self._connect(self.address, timeout)
                if self.closed:  # closed by the topology while we connected
                    self._drop()
                    raise _closed()
                reply = self._sock.hello
            else:
                self._sock.sock.settimeout(timeout)
                reply = self._sock.command("admin", {"hello": 1})
        except BaseException as exc:
            self._drop()
            if events is not None and isinstance(exc, Exception):
                events.heartbeat_failed(self.address, time.monotonic() - start, exc)
            raise
        now = time.monotonic()
        sample = now - start
        if events is not None:
            events.heartbeat_succeeded(self.address, sample, reply)
        self.rtt = sample if self.rtt is None else _RTT_WEIGHT * sample + (1 - _RTT_WEIGHT) * self.rtt
        return ServerDescription.from_hello(self.address, reply, self.rtt, now)

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def close(self) -> None:
        """Close the heartbeat connection (the server left the topology, or the client closed)."""
        self.closed = True
        self._drop()

    def __repr__(self) -> str:
        return "<ServerMonitor %s:%d>" % self.address


def _closed() -> PyMongoError:
    from pymongo.errors import AutoReconnect

    return AutoReconnect("heartbeat connection closed by the client")


def sequential(tasks: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run ``tasks`` one after another (the fallback fan-out)."""
    return [task() for task in tasks]


def scan(
    td: TopologyDescription,
    monitor_for: Callable[[Address], ServerMonitor],
    timeout: float,
    fan_out: FanOut = sequential,
    only: Iterable[Address] | None = None,
) -> TopologyDescription:
    """Check servers of ``td`` concurrently and return the resulting topology description.

    Members discovered on the way (from a primary's or secondary's hosts
    list) are checked in the same scan, in further rounds.

    :param monitor_for: the monitor of an address (created on demand).
    :param timeout: seconds for each check (connect and hello).
    :param fan_out: runs a list of callables concurrently and returns their
        results in order; the identity's primitive in the topology.
    :param only: check just these addresses (and what they reveal), not all.
    """
    checked: set[Address] = set()
    todo = [a for a in (only if only is not None else td.servers) if a in td.servers]
    # A possible primary named by a secondary is worth checking first, but
    # the checks run concurrently anyway: order only matters for sequential.
    todo.sort(key=lambda a: td.servers[a].type is not ServerType.PossiblePrimary)
    for _ in range(_MAX_ROUNDS):
        if not todo:
            break
        monitors = [monitor_for(a) for a in todo]
        results: list[ServerDescription] = fan_out([_task(m, timeout) for m in monitors])
        checked.update(todo)
        for sd in results:
            td = apply(td, sd)
        todo = [a for a in td.servers if a not in checked]
    return td


def _task(monitor: ServerMonitor, timeout: float) -> Callable[[], ServerDescription]:
    return lambda: monitor.check(timeout)
