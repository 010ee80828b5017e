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

While the topology has one server for sure (``_lone_pool``: one seed,
checked through its pool, and still ``Unknown`` or a standalone, or a
``directConnection``), and ``auto_start_request`` is off (else a pool's
record may hold a level the pool began by itself, which ``_adopt`` could
not tell from the caller's), a caller with no record of its own needs none: that
pool's record carries the whole request, its depth included.  A caller's
first request then makes one record, not two, and every request skips the
topology's set of pools and its end-all loop.  When the seed turns out to be
a replica set member or a mongos, more members may come: the pool becomes
``_former_lone_pool``, and a caller whose request lives there alone gets a
record the first time the topology reads it (:meth:`TopologyRequests._own_record`),
holding that request's depth and that pool (which keeps one level), so the
members it uses next join it as they always did.  A caller with a record
always uses it.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from .errors import PyMongoError
from .identity import CALLS, CallerRecords, RecordOwner

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
    # The pool of the one server while the topology has one for sure, else None: see the module.
    _lone_pool: Pool | None
    # That pool once the topology has left it (the seed was a replica set member or a mongos), else None.
    _former_lone_pool: Pool | None

    @property
    def servers(self) -> list[Server]:  # pragma: no cover - Topology's
        raise NotImplementedError

    def _own_record(self) -> _TopologyRequest | None:
        """The caller's record, if it has one (made now for a request begun in the former lone pool)."""
        calls = getattr(self._caller(), CALLS, None)
        if calls is None:
            return None
        req: _TopologyRequest | None = calls.get(self._self_ref)
        if req is None and self._former_lone_pool is not None:
            req = self._adopt(calls)
        return req

    def _adopt(self, calls: CallerRecords) -> _TopologyRequest | None:
        """A record for the request the caller began in the former lone pool, if it is still open (see the module)."""
        pool = self._former_lone_pool
        assert pool is not None
        pool_req = calls.get(pool._self_ref)
        if pool_req is None or not pool_req.depth:
            return None
        req = _TopologyRequest()
        req.depth, pool_req.depth = pool_req.depth, 1  # the pool keeps one level: the topology's join
        req.add(pool)
        calls.add(self._self_ref, req)
        return req

    def start_request(self) -> None:
        """Begin (or nest) the caller's request on every member, present and future."""
        # self._own_record(), inline (one call less per request).
        calls = getattr(self._caller(), CALLS, None)
        req = None if calls is None else calls.get(self._self_ref)
        if req is None:
            pool = self._lone_pool
            if pool is not None:
                pool.start_request()  # one server for sure: its pool's record is the request's
                return
            if calls is not None and self._former_lone_pool is not None:
                req = self._adopt(calls)
            if req is None:
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
        if req is None:
            pool = self._lone_pool
            if pool is not None:
                # One server for sure: the request (or one its pool began by itself, auto_start_request) is its pool's.
                pool.end_request()
                return
            if calls is not None and self._former_lone_pool is not None:
                req = self._adopt(calls)
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
        pool = self._lone_pool
        if req is None and pool is not None:
            return pool.in_request()
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
