"""The servers a client talks to, and which one an operation goes to.

For now a topology is one server (a standalone mongod, or one member reached
directly).  Discovery of replica sets comes later; the seam is
:meth:`Topology.select_server`, which every operation goes through.

Server selection: a server is *known* once a handshake with it succeeded and
no network error has happened since.  Selecting an unknown server retries the
connection until ``serverSelectionTimeoutMS`` runs out, then raises
:class:`~pymongo.errors.ServerSelectionTimeoutError` with the last error, so
an unreachable host fails within the timeout instead of hanging.  The
deadline bounds everything, the connect and handshake included: a server
that accepts connections but never answers (frozen) cannot stretch it to
``connectTimeoutMS``.

Errors: :meth:`Topology.handle_error` is the one place that decides what a
failure means for a server (mark it unknown, reset its pool, or nothing).
Clients report every failure there; pools only carry out the decision.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from .errors import (
    AutoReconnect,
    ConfigurationError,
    ConnectionFailure,
    InvalidOperation,
    NetworkTimeout,
    ServerSelectionTimeoutError,
)
from .pool import Pool, PoolOptions

if TYPE_CHECKING:
    from .socket_info import SocketInfo

__all__ = ["Server", "Topology"]

log = logging.getLogger("mongo_requests")


class Server:
    """One server: its address and its pool."""

    __slots__ = ("address", "pool", "known", "last_error")

    def __init__(self, address: tuple[str, int], pool: Pool) -> None:
        self.address = address
        self.pool = pool
        self.known = False
        self.last_error: BaseException | None = None

    @property
    def description(self) -> dict[str, Any] | None:
        """The server's latest ``hello`` reply, from the newest handshake."""
        return self.pool.hello

    def __repr__(self) -> str:
        return "<Server %s:%d %s>" % (self.address[0], self.address[1], "known" if self.known else "unknown")


class Topology:
    """The server(s) behind one client.

    :param seeds: ``(host, port)`` pairs from the URI.
    :param pool_options: options for every server's pool.
    :param use_greenlets: passed to every pool (None: auto).
    :param server_selection_timeout: seconds to keep trying an unknown server.
    """

    def __init__(
        self,
        seeds: list[tuple[str, int]],
        pool_options: PoolOptions,
        use_greenlets: bool | None,
        server_selection_timeout: float = 30.0,
    ) -> None:
        if len(seeds) != 1:
            raise ConfigurationError(
                "mongo_requests talks to one server for now; got %d hosts (%s). "
                "Replica set discovery is not implemented yet."
                % (len(seeds), ", ".join("%s:%d" % s for s in seeds))
            )
        self.server_selection_timeout = server_selection_timeout
        self._server = Server(seeds[0], Pool(seeds[0], pool_options, use_greenlets))
        self.closed = False

    @property
    def servers(self) -> list[Server]:
        """Every server of the topology."""
        return [self._server]

    def select_server(self, timeout: float | None = None) -> Server:
        """Return a server for the next operation, waiting for it if unknown.

        :param timeout: seconds to wait for an unknown server (default
            ``serverSelectionTimeoutMS``).
        """
        server = self._server
        if server.known:
            return server
        if self.closed:
            # The caller's request may still hold a socket that close() left
            # it for its operation in flight: this call is where it goes.
            for s in self.servers:
                s.pool.discard_pin()
            raise InvalidOperation("Cannot use MongoClient after close")
        return self._wait_for(server, self.server_selection_timeout if timeout is None else timeout)

    def _wait_for(self, server: Server, timeout: float) -> Server:
        """Try to reach ``server`` until ``timeout`` seconds have passed, connects included."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        pool = server.pool
        while True:
            try:
                # Bounded by what is left: a frozen server must not hold
                # one attempt for the whole connectTimeoutMS.
                sock = pool.checkout_within(max(deadline - time.monotonic(), 0.001))
            except ConnectionFailure as exc:
                # A wait-queue timeout means the server is busy, not down.
                if not isinstance(exc, AutoReconnect):
                    raise
                self.handle_error(server, exc)
            else:
                pool.checkin(sock)
                server.known = True
                server.last_error = None
                return server
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServerSelectionTimeoutError(
                    "No server reachable at %s:%d within serverSelectionTimeoutMS=%d; last error: %s"
                    % (server.address[0], server.address[1], timeout * 1000, server.last_error)
                )
            pool.identity.sleep(min(delay, remaining))  # gevent.sleep in greenlet mode
            delay = min(delay * 2, 0.5)

    def handle_error(self, server: Server, error: BaseException, sock: "SocketInfo | None" = None) -> None:
        """Decide what ``error`` means for ``server``, and have its pool act on it.

        The one error handler (PyMongo 4's SDAM error handling, for one
        server).  Every failure of a connect, a handshake or an operation is
        reported here; nothing else interprets errors.

        :param server: the server the operation went to.
        :param error: what was raised.
        :param sock: the socket it was raised on, or None when there was no
            socket yet (a connect or handshake failure).

        * An error from a socket of an older generation is stale: the pool
          was reset since that socket was made, so it changes nothing.
        * A network error (:class:`~pymongo.errors.AutoReconnect`: refused,
          reset, closed by the server) marks the server unknown and resets
          its pool.  A timeout does the same only while connecting; on an
          established socket it says the server is slow, not gone, and only
          that socket (which closed itself) is lost.
        * Anything else (a wait-queue timeout, a command error, a malformed
          reply, a kill mid-message) leaves the server and the pool alone;
          the socket closed itself if its stream was unusable.

        A pool reset never takes a healthy socket from a request (see
        :mod:`mongo_requests.pool`).  Replica sets will add their cases
        here ("not primary", "node is recovering", shutdown codes).
        """
        pool = server.pool
        if sock is not None and sock.generation != pool.generation:
            return
        if not isinstance(error, AutoReconnect):
            return
        if sock is not None and isinstance(error, NetworkTimeout):
            return
        self.mark_unknown(server, error)
        pool.reset("%s on %s" % (type(error).__name__, sock if sock is not None else "connect"))

    def mark_unknown(self, server: Server, error: BaseException) -> None:
        """The server must prove itself again before use."""
        if server.known:
            log.info("server %s:%d marked unknown: %s", server.address[0], server.address[1], error)
        server.known = False
        server.last_error = error

    def close(self) -> None:
        """Close every pool; the topology refuses further use."""
        self.closed = True
        for server in self.servers:
            server.known = False
            server.pool.close()
