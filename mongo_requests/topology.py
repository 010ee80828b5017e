"""The servers a client talks to, and which one an operation goes to.

For now a topology is one server (a standalone mongod, or one member reached
directly).  Discovery of replica sets comes later; the seam is
:meth:`Topology.select_server`, which every operation goes through.

Server selection: a server is *known* once a handshake with it succeeded and
no network error has happened since.  Selecting an unknown server retries the
connection until ``serverSelectionTimeoutMS`` runs out, then raises
:class:`~pymongo.errors.ServerSelectionTimeoutError` with the last error, so
an unreachable host fails within the timeout instead of hanging.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from .errors import AutoReconnect, ConfigurationError, ConnectionFailure, InvalidOperation, ServerSelectionTimeoutError
from .pool import Pool, PoolOptions

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

    def select_server(self) -> Server:
        """Return a server for the next operation, waiting for it if unknown."""
        server = self._server
        if server.known:
            return server
        if self.closed:
            raise InvalidOperation("Cannot use MongoClient after close")
        return self._wait_for(server)

    def _wait_for(self, server: Server) -> Server:
        """Try to reach ``server`` until the selection timeout expires."""
        deadline = time.monotonic() + self.server_selection_timeout
        delay = 0.05
        pool = server.pool
        while True:
            try:
                sock = pool.checkout()
            except ConnectionFailure as exc:
                # A wait-queue timeout means the server is busy, not down.
                if not isinstance(exc, AutoReconnect):
                    raise
                server.last_error = exc
            else:
                pool.checkin(sock)
                server.known = True
                server.last_error = None
                return server
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServerSelectionTimeoutError(
                    "%s:%d: %s (gave up after serverSelectionTimeoutMS=%d)"
                    % (server.address[0], server.address[1], server.last_error, self.server_selection_timeout * 1000)
                )
            pool.identity.sleep(min(delay, remaining))  # gevent.sleep in greenlet mode
            delay = min(delay * 2, 0.5)

    def mark_unknown(self, server: Server, error: BaseException) -> None:
        """A network error: the server must prove itself again before use."""
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
