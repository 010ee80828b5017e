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

The caller's request state is a :class:`_TopologyRequest` (the pools it
joined, ``depth``, ``secondary``) in the caller's record store, the one its pools'
records share (:meth:`~mongo_requests.identity.GreenletIdentity.calls`); the
pins themselves are the pools'.

A lone server (a ``Single`` topology: a standalone, or ``directConnection``)
has one member for good, so its pool's record carries the whole request: its
depth is the request's, and the topology files no record of its own
(``_lone_pool``).  That halves what a caller's first request makes (one record,
not two) and what every request does here.  A caller that began a request
before the topology was known to be ``Single`` keeps its record, and goes on
using it: a caller with a record always uses it.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from .errors import PyMongoError
from .identity import CALLS, RecordOwner

if TYPE_CHECKING:
    from .pool import Pool, PoolOptions
    from .topology import Server, Topology

__all__ = ["TopologyRequests"]


class _TopologyRequest(set["Pool"]):
    """One caller's request across the members: the set of pools whose request it began, its depth and secondary.

    A set itself rather than a record holding one: one object less per caller
    for the garbage collector to track.  Only its caller mutates it.
    """

    __slots__ = ("depth", "secondary")

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.secondary: Any = None  # the member of the request's secondary reads


class TopologyRequests(RecordOwner[_TopologyRequest]):
    """``start_request``, ``end_request`` and ``in_request`` for :class:`~mongo_requests.topology.Topology`."""

    # Set by Topology.__init__; declared here for the type checker only.
    _self_ref: weakref.ref[Topology]
    _pool_options: PoolOptions
    # The pool of the one server once the topology is Single (it stays Single), else None: see the module.
    _lone_pool: Pool | None

    @property
    def servers(self) -> list[Server]:  # pragma: no cover - Topology's
        raise NotImplementedError

    def start_request(self) -> None:
        """Begin (or nest) the caller's request on every member, present and future."""
        # self._own_record(), inline (one call less per request).
        calls = getattr(self._caller(), CALLS, None)
        req = None if calls is None else calls.get(self._self_ref)
        if req is None:
            pool = self._lone_pool
            if pool is not None:
                pool.start_request()  # a lone server: its pool's record is the request's
                return
            req = _TopologyRequest()
            (self.identity.calls() if calls is None else calls).add(self._self_ref, req)
        req.depth += 1
        if req.depth == 1:
            req.secondary = None
            for server in self.servers:
                self._join_request(req, server)

    def _join_request(self, req: _TopologyRequest, server: Server) -> None:
        if server.pool not in req:
            req.add(server.pool)
            server.pool.start_request()

    def end_request(self) -> None:
        """End one level of the caller's request; the outermost end unpins on every member."""
        # self._own_record(), inline (one call less per request).
        calls = getattr(self._caller(), CALLS, None)
        req = None if calls is None else calls.get(self._self_ref)
        if req is None and self._lone_pool is not None:
            # A lone server's request (or one its pool began by itself, auto_start_request) is its pool's.
            self._lone_pool.end_request()
            return
        if req is None or req.depth == 0:
            if self._pool_options.auto_start_request:
                # Requests the pools began by themselves, on first use.
                _end_all([server.pool for server in self.servers])
            return
        req.depth -= 1
        if req.depth:
            return
        pools = list(req)
        req.clear()
        req.secondary = None
        _end_all(pools)

    def in_request(self) -> bool:
        """True when the caller is inside a request (its own, or with ``auto_start_request`` one a pool began)."""
        req = self._own_record()
        if req is not None and req.depth:
            return True
        if req is None and self._lone_pool is not None:
            return self._lone_pool.in_request()
        return self._pool_options.auto_start_request and any(s.pool.in_request() for s in self.servers)

    def _caller_died(self, req: _TopologyRequest) -> None:
        """Death watch (identity): each pool reclaims its own pin; drop the dead caller's hold on the pools."""
        req.clear()
        req.depth = 0
        req.secondary = None


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
