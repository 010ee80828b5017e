"""Connection pool (CMAP), server, topology and heartbeat events through :mod:`pymongo.monitoring`.

A client built with ``event_listeners=[...]`` holding
:class:`~pymongo.monitoring.ConnectionPoolListener`,
:class:`~pymongo.monitoring.ServerListener`,
:class:`~pymongo.monitoring.TopologyListener` or
:class:`~pymongo.monitoring.ServerHeartbeatListener` instances (or created
after such listeners were registered with :func:`pymongo.monitoring.register`)
publishes PyMongo's own event classes, with the fields PyMongo gives.

**Nothing to pay without a listener.**  With a pool listener the topology
makes :class:`MonitoredPool` pools, which publish around the real checkout
and checkin; otherwise it makes plain pools, whose checkout and checkin
have no event code at all (their rarer transitions check ``_events``, None).
The topology and the heartbeat monitors hold a :class:`SdamEvents`, or None.

**Requests.**  Pool events describe the pool, and a request's pinned socket
is out of the pool for the whole request: ``ConnectionCheckOutStarted`` and
``ConnectionCheckedOut`` are published when the request pins it (its first
operation), and ``ConnectionCheckedIn`` when it is unpinned (the request
ends, its owner dies, or an error closed it).  The operations in between
reuse the pinned socket without touching the pool and publish no pool
event, as PyMongo does for a connection pinned to a transaction or cursor.
So "checked out minus checked in" is always the number of sockets in use.

**Heartbeats** are published for each ``hello`` a check sends on a heartbeat
connection (``awaited=False``: there is no streaming protocol).  A lone
standalone has no heartbeat connection (see :mod:`mongo_requests.topology`):
its check is its pool's handshake, and its heartbeat events wrap that
checkout, with the handshake's ``hello`` as the reply.

Listener exceptions are printed to stderr and never break an operation.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bson.objectid import ObjectId
from pymongo import monitoring as _pm
from pymongo.hello import Hello
from pymongo.server_description import ServerDescription as PmServerDescription
from pymongo.topology_description import TOPOLOGY_TYPE
from pymongo.topology_description import TopologyDescription as PmTopologyDescription

from .errors import InvalidOperation, WaitQueueTimeoutError
from .monitoring import _handle_listener_error
from .pool import Pool

if TYPE_CHECKING:
    from .pool_state import PoolOptions
    from .sdam import Address, ServerDescription, TopologyDescription
    from .socket_info import SocketInfo

__all__ = ["MonitoredPool", "PoolEvents", "SdamEvents", "build"]

_KINDS = (
    (_pm.ConnectionPoolListener, "cmap_listeners"),
    (_pm.ServerListener, "server_listeners"),
    (_pm.TopologyListener, "topology_listeners"),
    (_pm.ServerHeartbeatListener, "server_heartbeat_listeners"),
)
_Closed = _pm.ConnectionClosedReason
_Failed = _pm.ConnectionCheckOutFailedReason


def _publish(listeners: Sequence[Any], method: str, event: Any) -> None:
    for listener in listeners:
        try:
            getattr(listener, method)(event)
        except Exception:
            _handle_listener_error()


def _registered(kind: str) -> list[Any]:
    """Listeners of one kind registered with pymongo.monitoring.register() (none if its private registry is gone)."""
    return list(getattr(getattr(_pm, "_LISTENERS", None), kind, None) or ())


def build(given: Sequence[Any]) -> tuple[PoolEvents | None, SdamEvents | None]:
    """The pool listeners and the SDAM publisher of a client, from ``event_listeners`` and the registered ones."""
    found: dict[str, list[Any]] = {}
    for cls, kind in _KINDS:
        mine = [x for x in given if isinstance(x, cls)]
        found[kind] = mine + [x for x in _registered(kind) if x not in mine]
    pool = PoolEvents(found["cmap_listeners"]) if found["cmap_listeners"] else None
    sdam = None
    if found["server_listeners"] or found["topology_listeners"] or found["server_heartbeat_listeners"]:
        sdam = SdamEvents(found["server_listeners"], found["topology_listeners"], found["server_heartbeat_listeners"])
    return pool, sdam


class PoolEvents:
    """The pool listeners of one client; a pool calls it only when it has them (``Pool._events``)."""

    __slots__ = ("listeners", "_ids")

    def __init__(self, listeners: Sequence[Any]) -> None:
        self.listeners = tuple(listeners)
        self._ids = itertools.count(1)  # next() on a count is atomic under the GIL

    def pool_created(self, address: Address, opts: PoolOptions) -> None:
        """PoolCreated with the options PyMongo names, then PoolReady: a pool is usable at once."""
        options: dict[str, Any] = {"maxPoolSize": opts.max_size}
        if opts.wait_queue_timeout is not None:
            options["waitQueueTimeoutMS"] = int(opts.wait_queue_timeout * 1000)
        _publish(self.listeners, "pool_created", _pm.PoolCreatedEvent(address, options))
        _publish(self.listeners, "pool_ready", _pm.PoolReadyEvent(address))

    def pool_cleared(self, address: Address) -> None:
        _publish(self.listeners, "pool_cleared", _pm.PoolClearedEvent(address))

    def pool_closed(self, address: Address) -> None:
        _publish(self.listeners, "pool_closed", _pm.PoolClosedEvent(address))

    def check_out(self, pool: Pool, deadline: float | None = None) -> SocketInfo:
        """``Pool._acquire(pool, deadline)`` between CheckOutStarted and CheckedOut (or CheckOutFailed)."""
        address = pool.address
        _publish(self.listeners, "connection_check_out_started", _pm.ConnectionCheckOutStartedEvent(address))
        start = time.monotonic()
        try:
            sock = Pool._acquire(pool, deadline)
        except BaseException as exc:
            if isinstance(exc, InvalidOperation):
                reason = _Failed.POOL_CLOSED
            elif isinstance(exc, WaitQueueTimeoutError):
                reason = _Failed.TIMEOUT
            else:
                reason = _Failed.CONN_ERROR
            failed = _pm.ConnectionCheckOutFailedEvent(address, reason, time.monotonic() - start)
            _publish(self.listeners, "connection_check_out_failed", failed)
            raise
        done = _pm.ConnectionCheckedOutEvent(address, sock.conn_id, time.monotonic() - start)
        _publish(self.listeners, "connection_checked_out", done)
        return sock

    def checked_in(self, sock: SocketInfo) -> None:
        _publish(self.listeners, "connection_checked_in", _pm.ConnectionCheckedInEvent(sock.address, sock.conn_id))

    def connect(self, address: Address, *args: Any) -> SocketInfo:
        """``SocketInfo.connect(address, *args)`` after ConnectionCreated; then ConnectionReady or ConnectionClosed.

        The connection's id counts from 1 per client, as PyMongo's do per pool.
        """
        from .socket_info import SocketInfo

        conn_id = next(self._ids)
        _publish(self.listeners, "connection_created", _pm.ConnectionCreatedEvent(address, conn_id))
        start = time.monotonic()
        try:
            sock = SocketInfo.connect(address, *args)
        except BaseException:
            self.connection_closed(address, conn_id, _Closed.ERROR)
            raise
        sock.conn_id = conn_id
        ready = _pm.ConnectionReadyEvent(address, conn_id, time.monotonic() - start)
        _publish(self.listeners, "connection_ready", ready)
        return sock

    def connection_closed(self, address: Address, conn_id: int, reason: str) -> None:
        _publish(self.listeners, "connection_closed", _pm.ConnectionClosedEvent(address, conn_id, reason))

    def closing(self, pool: Pool, sock: SocketInfo, reason: str | None = None) -> None:
        """ConnectionClosed for a socket the pool closes, with the reason CMAP names (derived when None)."""
        if reason is not None:
            pass
        elif pool.closed:
            reason = _Closed.POOL_CLOSED
        elif sock.generation != pool.generation:
            reason = _Closed.STALE
        else:
            reason = _Closed.ERROR  # dead when checked before reuse, or closed by an error
        self.connection_closed(sock.address, sock.conn_id, reason)


class MonitoredPool(Pool):
    """A :class:`~mongo_requests.pool.Pool` that publishes its checkouts and checkins.

    The topology makes one instead of a Pool when the client has pool
    listeners, so a plain Pool's hot path carries no event code at all.
    ``_acquire`` is the pool's real checkout (a request's first operation
    included; its later ones reuse the pinned socket and never get here),
    and a checkin of a socket that is not pinned is the pool's real checkin.
    The rarer transitions (connect, close, unpin, clear) are published by
    the Pool itself when its ``_events`` is set.
    """

    _events: PoolEvents

    def _acquire(self, deadline: float | None = None) -> SocketInfo:
        return self._events.check_out(self, deadline)

    def checkin(self, sock: SocketInfo) -> None:
        if sock.request is None:
            self._events.checked_in(sock)
        Pool.checkin(self, sock)


class _Settings:
    """What PyMongo's TopologyDescription reads from its (private) TopologySettings."""

    def __init__(self, topology_id: ObjectId, seeds: list[Address], heartbeat: float, threshold: float) -> None:
        self._topology_id = topology_id
        self.seeds = seeds
        self.heartbeat_frequency = heartbeat
        self.local_threshold_ms = threshold * 1000
        self._srv_max_hosts = 0
        self.direct = False


def pymongo_server_description(sd: ServerDescription) -> PmServerDescription:
    """PyMongo's description of the same check: its server type comes from the same ``hello``."""
    hello = Hello(dict(sd.hello)) if sd.hello is not None and sd.error is None else None
    error = sd.error if isinstance(sd.error, Exception) or sd.error is None else Exception(str(sd.error))
    return PmServerDescription(sd.address, hello, sd.round_trip_time, error)


# What the SDAM specification compares to decide that a server's description changed: not the round trip
# time nor the check's time (so a routine heartbeat publishes no ServerDescriptionChanged).
_NOT_COMPARED = ("round_trip_time", "last_update_time", "last_write_date", "hello", "error")


def _same(a: ServerDescription, b: ServerDescription) -> bool:
    if any(getattr(a, n) != getattr(b, n) for n in a.__slots__ if n not in _NOT_COMPARED):
        return False
    return (type(a.error), str(a.error)) == (type(b.error), str(b.error))


class SdamEvents:
    """The server, topology and heartbeat listeners of one client, and its topology id."""

    __slots__ = ("server", "topology", "heartbeat", "topology_id", "_settings")

    def __init__(self, server: Sequence[Any], topology: Sequence[Any], heartbeat: Sequence[Any]) -> None:
        self.server = tuple(server)
        self.topology = tuple(topology)
        self.heartbeat = tuple(heartbeat)
        self.topology_id = ObjectId()
        self._settings: _Settings | None = None

    def pymongo_topology_description(self, td: TopologyDescription) -> PmTopologyDescription:
        """PyMongo's TopologyDescription of ``td`` (for TopologyDescriptionChanged)."""
        assert self._settings is not None
        servers: dict[Any, PmServerDescription] = {a: pymongo_server_description(sd) for a, sd in td.servers.items()}
        return PmTopologyDescription(
            getattr(TOPOLOGY_TYPE, td.type.value),
            servers,
            td.set_name,
            td.max_set_version,
            td.max_election_id,
            self._settings,
        )

    def opened(self, td: TopologyDescription, heartbeat: float, threshold: float) -> None:
        """TopologyOpening, the first TopologyDescriptionChanged (from no servers), ServerOpening per seed."""
        self._settings = _Settings(self.topology_id, list(td.servers), heartbeat, threshold)
        _publish(self.topology, "opened", _pm.TopologyOpenedEvent(self.topology_id))
        if self.topology:
            empty = PmTopologyDescription(TOPOLOGY_TYPE.Unknown, {}, None, None, None, self._settings)
            event = _pm.TopologyDescriptionChangedEvent(empty, self.pymongo_topology_description(td), self.topology_id)
            _publish(self.topology, "description_changed", event)
        for address in td.servers:
            _publish(self.server, "opened", _pm.ServerOpeningEvent(address, self.topology_id))

    def changed(self, old: TopologyDescription, new: TopologyDescription) -> None:
        """The events of one description change: servers opened, changed and closed, then the topology's."""
        any_change = False
        for address, sd in new.servers.items():
            before = old.servers.get(address)
            if before is None:
                any_change = True
                _publish(self.server, "opened", _pm.ServerOpeningEvent(address, self.topology_id))
            elif not _same(before, sd):
                any_change = True
                if self.server:
                    changed = _pm.ServerDescriptionChangedEvent(
                        pymongo_server_description(before), pymongo_server_description(sd), address, self.topology_id
                    )
                    _publish(self.server, "description_changed", changed)
        for address in old.servers:
            if address not in new.servers:
                any_change = True
                _publish(self.server, "closed", _pm.ServerClosedEvent(address, self.topology_id))
        if (any_change or old.type is not new.type) and self.topology:
            event = _pm.TopologyDescriptionChangedEvent(
                self.pymongo_topology_description(old), self.pymongo_topology_description(new), self.topology_id
            )
            _publish(self.topology, "description_changed", event)

    def closed(self, td: TopologyDescription) -> None:
        """ServerClosed for each server, then TopologyClosed."""
        for address in td.servers:
            _publish(self.server, "closed", _pm.ServerClosedEvent(address, self.topology_id))
        _publish(self.topology, "closed", _pm.TopologyClosedEvent(self.topology_id))

    def heartbeat_started(self, address: Address) -> None:
        _publish(self.heartbeat, "started", _pm.ServerHeartbeatStartedEvent(address, False))

    def heartbeat_succeeded(self, address: Address, duration: float, reply: dict[str, Any]) -> None:
        event = _pm.ServerHeartbeatSucceededEvent(duration, Hello(reply), address, False)
        _publish(self.heartbeat, "succeeded", event)

    def heartbeat_failed(self, address: Address, duration: float, error: Exception) -> None:
        _publish(self.heartbeat, "failed", _pm.ServerHeartbeatFailedEvent(duration, error, address, False))
