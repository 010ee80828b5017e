"""The servers a client talks to, and which one an operation goes to.

A topology follows a standalone server, a replica set or mongos routers the
way the MongoDB SDAM and Server Selection specifications describe.  What it
knows is an immutable :class:`~mongo_requests.sdam.TopologyDescription`;
every change is :func:`~mongo_requests.sdam.apply` of a new server
description, swapped in under a tiny lock.  Each server of the description
has a :class:`Server` here: its pool and its heartbeat monitor.

**Monitoring without background work** (see :mod:`mongo_requests.monitor`):
server selection re-checks the servers when ``heartbeatFrequencyMS`` has
passed since the last scan, when an error marked the topology stale, or when
no server is suitable yet (then at most every 0.5 s, until
``serverSelectionTimeoutMS``).  One caller scans; callers that arrive
meanwhile wait for its result.  No thread or greenlet outlives an operation.

A lone seed without ``replicaSet`` is first checked through its pool's
handshake: if it is a standalone the topology stays *Single* and never opens
a heartbeat connection (a standalone costs exactly what it did before
replica sets: it is known until a network error, then re-checked by
connecting).  If it is a replica set member, the set is discovered from it.
One caller checks; callers that arrive meanwhile wait for its outcome
(:mod:`mongo_requests.flight`) instead of checking out a socket each.

**Errors**: :meth:`Topology.handle_error`, the one place that interprets
them, lives in :mod:`mongo_requests.topology_errors`.

**Requests across members** (:mod:`mongo_requests.topology_requests`): a
caller's request pins one socket per member it uses.
"""

from __future__ import annotations

import collections
import logging
import os
import time
import weakref
from typing import TYPE_CHECKING, Any

from pymongo.read_preferences import ReadPreference

from . import selection
from .errors import (
    AutoReconnect,
    ConfigurationError,
    InvalidOperation,
    ServerSelectionTimeoutError,
)
from .events import MonitoredPool
from .flight import ABORTED, TAKE_OFF, Flight, TryLock
from .identity import choose_identity, notify_when_threading_patched, real_lock
from .monitor import ServerMonitor, scan
from .originals import _get_ident
from .pool import Pool, PoolOptions
from .sdam import (
    Address,
    ServerDescription,
    ServerType,
    TopologyDescription,
    TopologyType,
    apply,
    initial_topology,
)
from .socket_info import SocketInfo
from .topology_errors import TopologyErrors
from .topology_requests import TopologyRequests

if TYPE_CHECKING:
    from .events import PoolEvents, SdamEvents
    from .selection import _ServerMode

__all__ = ["Server", "Topology"]

log = logging.getLogger("mongo_requests")

PRIMARY = ReadPreference.PRIMARY
# The specification's floor between two scans when nothing is suitable.
MIN_HEARTBEAT_INTERVAL = 0.5
# The first wait before re-checking a lone seed whose check failed; it doubles up to MIN_HEARTBEAT_INTERVAL.
SEED_RETRY_MIN = 0.05
# How a seed check landed (Topology._check_seed): it ran (the seed is described, or marked unknown), or it raised.
_CHECKED, _RAISED = "checked", "raised"


# Every topology, so a forked child can replace the locks a thread it does not have held at the fork.
_all_topologies: weakref.WeakSet[Topology] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """In a forked child, replace the locks held by threads it does not have (only the forking thread lives on).

    ``_lock`` is held for a few statements without a switch, so only another
    thread can hold it at a fork.  The scan's lock stays if a greenlet of the
    forking thread holds it (that scan goes on, and releases it).  Without
    this, a child forked during another thread's scan never scanned, and
    waited out its selection timeout each time a scan was due.
    """
    here = _get_ident()
    for topology in list(_all_topologies):
        topology._lock = real_lock()
        if topology._scan_lock.owner not in (0, here):
            topology._scan_lock = TryLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Server:
    """One server: its address, its pool, and (once monitored) its heartbeat monitor."""

    __slots__ = ("address", "pool", "monitor", "known", "last_error")

    def __init__(self, address: Address, pool: Pool) -> None:
        self.address = address
        self.pool = pool
        self.monitor: ServerMonitor | None = None
        self.known = False
        self.last_error: BaseException | None = None

    @property
    def description(self) -> dict[str, Any] | None:
        """The server's latest ``hello`` reply, from the newest pool handshake."""
        return self.pool.hello

    def __repr__(self) -> str:
        return "<Server %s:%d %s>" % (self.address[0], self.address[1], "known" if self.known else "unknown")


class Topology(TopologyRequests, TopologyErrors):
    """The servers behind one client.

    :param seeds: ``(host, port)`` pairs from the URI.
    :param pool_options: options for every server's pool.
    :param use_greenlets: passed to every pool (None: auto).
    :param server_selection_timeout: seconds to wait for a suitable server.
    :param replica_set: the ``replicaSet`` name, if given.
    :param direct_connection: ``directConnection`` (None: discover).
    :param heartbeat_frequency: seconds between scans (``heartbeatFrequencyMS``).
    :param local_threshold: the latency window in seconds (``localThresholdMS``).
    :param pool_events: pool listeners for every pool (None: none).
    :param sdam_events: server, topology and heartbeat listeners (None: none).
    """

    def __init__(
        self,
        seeds: list[tuple[str, int]],
        pool_options: PoolOptions,
        use_greenlets: bool | None,
        server_selection_timeout: float = 30.0,
        replica_set: str | None = None,
        direct_connection: bool | None = None,
        heartbeat_frequency: float = 10.0,
        local_threshold: float = 0.015,
        pool_events: PoolEvents | None = None,
        sdam_events: SdamEvents | None = None,
    ) -> None:
        self.server_selection_timeout = server_selection_timeout
        self.heartbeat_frequency = heartbeat_frequency
        self.local_threshold = local_threshold
        self._pool_options = pool_options
        self._use_greenlets = use_greenlets
        self._pool_events = pool_events
        self._sdam = sdam_events
        # Description changes made under the lock, published after it (a listener may use the client).
        self._changes: collections.deque[tuple[TopologyDescription, TopologyDescription]] = collections.deque()
        try:
            self._td = initial_topology([(h.lower(), p) for h, p in seeds], replica_set, direct_connection)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        # A lone seed that may be a standalone is checked through its pool.
        self._pool_checks = self._td.type in (TopologyType.Single, TopologyType.Unknown) and len(self._td.servers) == 1
        self._seed_flight = Flight()  # one seed check at a time; callers that arrive meanwhile wait for it
        _all_topologies.add(self)
        # After a failed seed check, none before _seed_retry's due time: the back-off (0.05 s doubling to 0.5 s) is the
        # topology's, not each caller's, so a crowd retries one check at a time.
        # (due, back-off) in one attribute: Topology's attributes stay within the shared-key table (test_hot_path).
        self._seed_retry = (0.0, SEED_RETRY_MIN)
        self._servers: dict[Address, Server] = {}
        self._lock = real_lock()  # guards _td and _servers: held for microseconds only
        self._scan_lock = TryLock()  # only ever tried, never waited on
        self._scans = 0
        self._errors: list[ServerDescription] = []  # marked Unknown since the running scan began
        self._last_scan = -1e9
        self._next_scan = 0.0  # monotonic time the next scan is due; 0: stale
        self._writable: Server | None = None  # fast path for primary selection
        #: The lone server when it is known and writable (a standalone, or a
        #: direct connection): ``select_server()``'s answer, read without the
        #: call by the client's hot path.  None otherwise: then select.
        self.lone_writable: Server | None = None
        self.sessions_supported = False
        self.direct_member = False
        self.closed = False
        self._self_ref = weakref.ref(self)  # the key of the topology's record in each caller's store
        self._set_identity(choose_identity(use_greenlets))
        if use_greenlets is None:
            notify_when_threading_patched(self)
        if sdam_events is not None:
            sdam_events.opened(self._td, heartbeat_frequency, local_threshold)
        for address in self._td.servers:
            self._servers[address] = self._new_server(address)
        # The lone seed's pool carries the callers' requests while it is the only server: see topology_requests.
        self._lone_pool: Pool | None = None
        self._former_lone_pool: Pool | None = None
        # Not with auto_start_request: a pool's record may then hold a level the pool began by itself,
        # which _adopt could not tell from the caller's own request.
        if self._pool_checks and not self._pool_options.auto_start_request:
            (self._lone_pool,) = [server.pool for server in self._servers.values()]

    # -- identity -----------------------------------------------------------
    def _set_identity(self, identity: Any) -> None:
        self.identity = identity
        # What carries the caller's request records: see topology_requests.
        self._caller = identity.current

    def _threading_patched(self) -> None:
        """gevent patched ``threading``: follow the pools to greenlet identity."""
        if self.identity.kind == "thread":
            self._set_identity(choose_identity(None))

    # -- servers ------------------------------------------------------------
    def _new_server(self, address: Address) -> Server:
        if self._pool_events is None:
            return Server(address, Pool(address, self._pool_options, self._use_greenlets))
        return Server(address, MonitoredPool(address, self._pool_options, self._use_greenlets, self._pool_events))

    @property
    def servers(self) -> list[Server]:
        """Every server of the topology, seeds first."""
        return list(self._servers.values())

    @property
    def description(self) -> TopologyDescription:
        """The current :class:`~mongo_requests.sdam.TopologyDescription`."""
        return self._td

    @property
    def single(self) -> bool:
        """True for one server used directly: a standalone, or ``directConnection=true``."""
        return self._td.type is TopologyType.Single or (self._pool_checks and len(self._servers) == 1)

    def refreshed(self) -> TopologyDescription:
        """The description, after one check if the last is older than ``heartbeatFrequencyMS`` (or stale).

        Never waits for a suitable server: ``client.primary`` and friends report what one scan finds.
        """
        if not self.closed:
            deadline = time.monotonic() + self.server_selection_timeout
            if self._pool_checks:
                if not self._seed().known:
                    self._check_seed(deadline)
            elif time.monotonic() >= self._next_scan:
                self._scan(deadline)
        return self._td

    def read_preference_document(self, server: Server, read_preference: _ServerMode | None) -> dict[str, Any] | None:
        """The ``$readPreference`` an operation on ``server`` must carry, or None.

        A secondary answers a read only if the command says a non-primary
        mode; a mongos needs the mode to route; a member reached directly
        (``directConnection``) gets ``primaryPreferred`` so it answers even as
        a secondary.  A standalone, or a primary read, carries nothing.
        """
        sd = self._td.servers.get(server.address)
        stype = sd.type if sd is not None else ServerType.Unknown
        document: dict[str, Any] | None = None
        if read_preference is not None and read_preference.mode:
            document = dict(getattr(read_preference, "document"))  # noqa: B009 - not in the selection protocol
        if stype is ServerType.Mongos:
            return document
        if self._td.type is TopologyType.Single:
            if stype is ServerType.Standalone:
                return None
            return document or {"mode": "primaryPreferred"}
        if stype is not ServerType.RSPrimary:
            return document
        return None

    def server_for(self, address: Address) -> Server:
        """The server at ``address`` for an operation that must run there (a cursor's ``getMore``).

        :raises AutoReconnect: if it left the topology (its cursors went with it).
        """
        server = self._servers.get(address)
        if server is None:
            if self.closed:
                raise InvalidOperation("Cannot use MongoClient after close")
            raise AutoReconnect("server %s:%d is no longer part of the topology" % address)
        req = self._own_record()
        if req is not None and req.depth:
            self._join_request(req, server)
        return server

    def server_at(self, address: Address) -> Server | None:
        """The server at ``address`` if it is part of the topology."""
        return self._servers.get(address)

    def _apply(self, sd: ServerDescription) -> None:
        """Apply one server description and sync the servers with the result."""
        with self._lock:
            self._install(apply(self._td, sd))
        if self._sdam is not None:
            self._publish_changes()

    def _publish_changes(self) -> None:
        """Publish the description changes queued by :meth:`_install` (outside the lock)."""
        assert self._sdam is not None
        while self._changes:
            try:
                old, new = self._changes.popleft()
            except IndexError:  # another caller published it
                return
            self._sdam.changed(old, new)

    def _install(self, td: TopologyDescription) -> None:
        """Adopt ``td`` (lock held): create and close servers, refresh the fast path."""
        old = self._td
        self._td = td
        if self.closed:
            return
        if self._sdam is not None and old is not td:
            self._changes.append((old, td))
        for address in td.servers:
            if address not in self._servers:
                self._servers[address] = self._new_server(address)
        for address in [a for a in self._servers if a not in td.servers]:
            server = self._servers.pop(address)
            log.info("server %s:%d left the topology", address[0], address[1])
            if server.monitor is not None:
                server.monitor.close()
            server.pool.close()
        writable = None
        for address, sd in td.servers.items():
            server = self._servers[address]
            known = sd.type is not ServerType.Unknown and sd.type is not ServerType.PossiblePrimary
            if server.known and not known:
                log.info("server %s:%d marked unknown: %s", address[0], address[1], sd.error)
            server.known = known
            server.last_error = sd.error
            if sd.type is ServerType.RSPrimary or (td.type is TopologyType.Single and known):
                writable = server
        self._writable = writable
        # A member reached directly: reads carry primaryPreferred so a secondary answers.
        self.direct_member = td.type is TopologyType.Single and any(
            sd.type in (ServerType.RSPrimary, ServerType.RSSecondary, ServerType.RSOther) for sd in td.servers.values()
        )
        # Retryable writes need sessions, and a replica set member or mongos
        # (a standalone refuses txnNumber).
        self.sessions_supported = td.logical_session_timeout_minutes is not None and any(
            sd.type in (ServerType.RSPrimary, ServerType.RSSecondary, ServerType.Mongos) for sd in td.servers.values()
        )
        if self._pool_checks and td.type not in (TopologyType.Single, TopologyType.Unknown):
            # The lone seed was a replica set member (or a mongos): monitor from now on.
            self._pool_checks = False
            # More members may come: requests begun in the seed's pool alone get records (topology_requests).
            # Published before _lone_pool is cleared: whoever finds it None finds the former one.
            self._former_lone_pool = self._lone_pool
            self._lone_pool = None
            self._next_scan = 0.0
        self.lone_writable = writable if self._pool_checks else None
        if old.type is not td.type:
            log.info("topology is now %s", td.type.name)

    # -- selection ----------------------------------------------------------
    def select_server(
        self,
        timeout: float | None = None,
        read_preference: _ServerMode | None = None,
        for_write: bool = False,
        once: bool = False,
    ) -> Server:
        """Return a server for the next operation, waiting up to ``timeout`` for a suitable one.

        :param timeout: seconds (default ``serverSelectionTimeoutMS``).
        :param read_preference: a :mod:`pymongo.read_preferences` mode for a
            read; None is primary.
        :param for_write: select a writable server whatever the read preference.
        :param once: check (or scan) once, within ``connectTimeoutMS``, and
            fail at once if nothing is suitable (a retry on a lone server).
        :raises ServerSelectionTimeoutError: listing each member with its type
            and last error, if no server is suitable in time.
        """
        if read_preference is None:
            server = self._writable
            if server is not None:
                if self._pool_checks:
                    # A lone server: its pool joined the caller's request in start_request.
                    return server
                if time.monotonic() < self._next_scan:
                    req = self._own_record()
                    if req is not None and req.depth:
                        self._join_request(req, server)
                    return server
        return self._select(PRIMARY if read_preference is None else read_preference, for_write, timeout, once)

    def _select(
        self, read_preference: _ServerMode, for_write: bool, timeout: float | None, once: bool = False
    ) -> Server:
        if self.closed:
            # The caller's request may still hold a socket that close() left
            # it for its operation in flight: this call is where it goes.
            for s in self.servers:
                s.pool.discard_pin()
            raise InvalidOperation("Cannot use MongoClient after close")
        if timeout is None:
            timeout = self.server_selection_timeout
        start = time.monotonic()
        deadline = start + timeout
        if once:
            # One attempt: bounded by the connect timeout, not by the selection timeout.
            deadline = start + (self._pool_options.connect_timeout or 20.0)
            self._next_scan = 0.0
            self._last_scan = -1e9
            self._seed_retry = (0.0, SEED_RETRY_MIN)
        delay = 0.05
        while True:
            if self._pool_checks:
                if not self._seed().known and time.monotonic() >= self._seed_retry[0]:
                    self._check_seed(deadline)
            elif self._scan_due():
                self._scan(deadline)
            server = self._pick(read_preference, for_write)
            if server is not None:
                req = self._own_record()
                if req is not None and req.depth:
                    self._join_request(req, server)
                return server
            if self.closed:
                raise InvalidOperation("Cannot use MongoClient after close")
            self._next_scan = 0.0  # nothing suitable: re-check as soon as allowed
            remaining = deadline - time.monotonic()
            if remaining <= 0 or once:
                raise ServerSelectionTimeoutError(
                    selection.selection_error_message(self._td, read_preference, for_write, timeout)
                )
            if not self._pool_checks:
                # Sleep until the next scan is allowed (at most every 0.5 s).
                delay = max(self._last_scan + MIN_HEARTBEAT_INTERVAL - time.monotonic(), 0.005)
            else:
                # At least until the seed's next check is due (after a failed one: see _check_seed_now).
                delay = max(delay, self._seed_retry[0] - time.monotonic())
            self.identity.sleep(min(delay, remaining))  # gevent.sleep in greenlet mode
            delay = min(delay * 2, MIN_HEARTBEAT_INTERVAL)

    def _pick(self, read_preference: _ServerMode, for_write: bool) -> Server | None:
        td = self._td
        # The caller's request record when this is a read its request keeps on one secondary.
        sticky = None if for_write or read_preference.mode == 0 else self._own_record()
        if sticky is not None and not sticky.depth:
            sticky = None
        if sticky is not None and sticky.secondary is not None:
            # A request's secondary reads stay on one member while it is suitable.
            suitable = selection.suitable_servers(td, read_preference, False, self.heartbeat_frequency)
            for candidate in suitable:
                if candidate.address == sticky.secondary:
                    return self._servers.get(candidate.address)
        sd = selection.select(td, read_preference, for_write, self.local_threshold, self.heartbeat_frequency)
        if sd is None:
            return None
        if sticky is not None and sd.type is not ServerType.RSPrimary:
            sticky.secondary = sd.address
        return self._servers.get(sd.address)

    def _scan_due(self) -> bool:
        now = time.monotonic()
        return now >= self._next_scan and now - self._last_scan >= MIN_HEARTBEAT_INTERVAL

    def _monitor_for(self, address: Address) -> ServerMonitor:
        server = self._servers.get(address)
        if server is None:  # removed meanwhile: a throwaway monitor reports it
            return ServerMonitor(address, self._connect_monitor, self._sdam)
        if server.monitor is None:
            server.monitor = ServerMonitor(address, self._connect_monitor, self._sdam)
        return server.monitor

    def _connect_monitor(self, address: Address, timeout: float) -> SocketInfo:
        opts = self._pool_options
        # The same TLS as the pools' connections, but no authentication (see
        # ConnectionSetup.for_monitoring); a heartbeat connection is never
        # handed to an operation.
        setup = opts.setup.for_monitoring() if opts.setup is not None else None
        return SocketInfo.connect(
            address, self.identity.socket, timeout, timeout, 0, opts.metadata, setup, self.identity.ssl
        )

    def _scan(self, deadline: float) -> None:
        """Check every server (concurrently) once; or wait for the scan another caller runs."""
        if not self._scan_lock.acquire(False):
            seen = self._scans
            while self._scans == seen and time.monotonic() < deadline and not self.closed:
                self.identity.sleep(0.002)
            return
        try:
            connect_timeout = self._pool_options.connect_timeout or 20.0
            timeout = min(connect_timeout, max(deadline - time.monotonic(), 0.05))
            with self._lock:
                td = self._td
                self._errors = []
            checked = scan(td, self._monitor_for, timeout, self.identity.fan_out)
            with self._lock:
                # An error reported while we scanned may be newer than our
                # check of that server (a primary stepping down under load):
                # it stays on top, and the next selection checks again.
                errors, self._errors = self._errors, []
                for sd in errors:
                    checked = apply(checked, sd)
                self._install(checked)
            if self._sdam is not None:
                self._publish_changes()
            now = time.monotonic()
            self._last_scan = now
            self._next_scan = 0.0 if errors else now + self.heartbeat_frequency
        finally:
            self._scans += 1
            self._scan_lock.release()

    def _seed(self) -> Server:
        return next(iter(self._servers.values()))

    def _check_seed(self, deadline: float) -> None:
        """Check the lone seed, or wait for the check another caller has in flight.

        Callers that arrive while a check is in flight (10,000 greenlets
        starting on a new client) board it (:mod:`mongo_requests.flight`)
        instead of checking out a socket of their own, and then read the
        seed's state as if they had run it: described, or marked unknown
        with the error (then ``_select`` sleeps and checks again, so a
        server that came back is found, not a stale error).  A check that
        raised (an authentication failure, a wait-queue timeout) says
        nothing about the server, so each waiter checks for itself, as
        before; one whose leader was killed boards again.
        """
        flight = self._seed_flight
        while True:
            outcome = flight.board(self.identity.waiter, deadline)
            if outcome is TAKE_OFF:
                break
            if outcome is _RAISED:
                self._check_seed_now(deadline)
                return
            if outcome is not ABORTED:
                return  # checked, or TIMED_OUT: the caller's loop reads the seed's state
        outcome = ABORTED
        try:
            # A check may have landed between our reading "unknown" and taking off (threads).
            if not self._seed().known:
                self._check_seed_now(deadline)
            outcome = _CHECKED
        except Exception:
            outcome = _RAISED
            raise
        finally:
            flight.land(outcome)

    def _check_seed_now(self, deadline: float) -> None:
        """Check the lone seed through its pool's handshake (no heartbeat connection)."""
        server = self._seed()
        pool = server.pool
        sdam, start = self._sdam, time.monotonic()
        if sdam is not None:
            sdam.heartbeat_started(server.address)
        try:
            # Bounded by what is left: a frozen server must not hold one
            # attempt for the whole connectTimeoutMS.
            sock = pool.checkout_within(max(deadline - time.monotonic(), 0.001))
        except Exception as exc:  # an authentication failure is a failed heartbeat too
            if sdam is not None:
                sdam.heartbeat_failed(server.address, time.monotonic() - start, exc)
            # A wait-queue timeout means the server is busy, not down.
            if not isinstance(exc, AutoReconnect):
                raise
            self.handle_error(server, exc)
            backoff = self._seed_retry[1]
            self._seed_retry = (time.monotonic() + backoff, min(backoff * 2, MIN_HEARTBEAT_INTERVAL))
            return
        pool.checkin(sock)
        self._seed_retry = (0.0, SEED_RETRY_MIN)
        if sdam is not None:
            sdam.heartbeat_succeeded(server.address, time.monotonic() - start, sock.hello)
        if server.known:
            # Described by a concurrent check (the waiters of one that raised check for themselves):
            # a handshake's hello would change nothing, and describing costs ~150k instructions.
            return
        self._apply(ServerDescription.from_hello(server.address, sock.hello, None, time.monotonic()))

    # -- life cycle ---------------------------------------------------------
    def close(self) -> None:
        """Close every pool and heartbeat connection; the topology refuses further use."""
        was_closed, self.closed = self.closed, True
        self.lone_writable = None
        with self._lock:
            servers = list(self._servers.values())
        for server in servers:
            server.known = False
            if server.monitor is not None:
                server.monitor.close()
            server.pool.close()
        self._writable = None
        if self._sdam is not None and not was_closed:
            self._sdam.closed(self._td)
