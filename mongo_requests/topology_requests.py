"""A caller's request across the members of a topology.

:class:`~mongo_requests.topology.Topology` inherits :class:`TopologyRequests`.

A caller's request spans every member it uses: it pins one socket per
member (each pool keeps the caller's pin), joining the pool of a member
discovered after the request began on first use.  Writes and primary reads
go to the primary's pool, and so to the request's socket there; a secondary
read in a request goes to the member the request's first secondary read
used, as long as it stays suitable, so reads in a request never go back in
time.  When the primary changes, the next operation simply selects the new
primary and pins a socket there.

The caller's request state lives in the topology's caller-private ``_local``
(``depth``, ``pools``, ``secondary``); the pins themselves are the pools'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import PyMongoError

if TYPE_CHECKING:
    from .pool import PoolOptions
    from .topology import Server

__all__ = ["TopologyRequests"]


class TopologyRequests:
    """``start_request``, ``end_request`` and ``in_request`` for :class:`~mongo_requests.topology.Topology`."""

    _local: Any
    _pool_options: PoolOptions

    @property
    def servers(self) -> list[Server]:  # pragma: no cover - Topology's
        raise NotImplementedError

    def start_request(self) -> None:
        """Begin (or nest) the caller's request on every member, present and future."""
        local = self._local
        local.depth += 1
        if local.depth == 1:
            local.pools = set()
            local.secondary = None
            for server in self.servers:
                self._join_request(server)

    def _join_request(self, server: Server) -> None:
        pools = self._local.pools
        if server.pool not in pools:
            pools.add(server.pool)
            server.pool.start_request()

    def end_request(self) -> None:
        """End one level of the caller's request; the outermost end unpins on every member."""
        local = self._local
        if local.depth == 0:
            if self._pool_options.auto_start_request:
                # Requests the pools began by themselves, on first use.
                _end_all([server.pool for server in self.servers])
            return
        local.depth -= 1
        if local.depth:
            return
        pools, local.pools, local.secondary = local.pools, None, None
        _end_all(pools or ())

    def in_request(self) -> bool:
        """True when the caller is inside a request (its own, or with ``auto_start_request`` one a pool began)."""
        if self._local.depth:
            return True
        return self._pool_options.auto_start_request and any(s.pool.in_request() for s in self.servers)


def _end_all(pools: Any) -> None:
    """End the caller's request on every pool, then raise the first error (a pipeline's, at its sync point)."""
    error: BaseException | None = None
    for pool in pools:
        try:
            pool.end_request()
        except PyMongoError as exc:
            error = error or exc
    if error is not None:
        raise error
