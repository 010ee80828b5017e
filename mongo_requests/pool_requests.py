"""A caller's request with one pool: its record, begin and end, its pipeline, and what it pins.

:class:`~mongo_requests.pool.Pool` inherits :class:`PoolRequests`.  The record (``_Request``) lives in the
caller's record store (``identity.calls()``, shared with the topology and every other pool); only its caller
changes it while alive, so these methods take the pool's lock only through the slot rules they call in
:mod:`mongo_requests.pool` (``_unpin``, ``_release``, ``_drop_pin``).  Pinning itself is
:meth:`~mongo_requests.pool.Pool.checkout`'s (the hot path stays there); the sockets of callers that died
without ending their requests are :mod:`mongo_requests.pool_lifecycle`'s.
"""

from __future__ import annotations

import collections
import weakref
from typing import TYPE_CHECKING

from .identity import CALLS, CallerRecords, RecordOwner
from .pipeline import Pipeline
from .pool_state import _NO_REQUEST, RequestState, _Request

if TYPE_CHECKING:
    from .events import PoolEvents
    from .pool import Pool
    from .socket_info import SocketInfo

__all__ = ["PoolRequests"]


class PoolRequests(RecordOwner[_Request]):
    """Request records for :class:`~mongo_requests.pool.Pool`: start, end, pipelining, the caller's pin."""

    # Set by Pool.__init__; declared here for the type checker only.
    _self_ref: weakref.ref[Pool]
    _requests_seen: bool
    _counters: collections.Counter[str]
    _requests_started: int
    _requests_ended: int
    _events: PoolEvents | None

    if TYPE_CHECKING:  # Pool's slot rules, in mongo_requests.pool

        def _unpin(self, sock: SocketInfo) -> bool: ...
        def _release(self, sock: SocketInfo | None) -> None: ...
        def _drop_pin(self, req: _Request, sock: SocketInfo) -> None: ...

    # -- requests -----------------------------------------------------------
    def _record(self) -> _Request:
        """The caller's request record, created on first use."""
        req = self._own_record()
        if req is None:
            req = self._new_record(None)
        return req

    def _new_record(self, calls: CallerRecords | None) -> _Request:
        """File a new record for the caller, in ``calls`` (its record store, or None when it has none yet)."""
        req = _Request()
        self._requests_seen = True
        if calls is None:
            # The caller's death is watched once, when its record store is
            # made (by this pool or any other owner), for the caller's whole
            # life: the watch calls _caller_died with this record.
            calls = self.identity.calls()
        calls.add(self._self_ref, req)
        return req

    def start_request(self) -> None:
        """Begin (or nest) a request for the calling thread or greenlet."""
        # self._record(), inline (two calls less per request).
        calls = getattr(self._caller(), CALLS, None)
        req = None if calls is None else calls.get(self._self_ref)
        if req is None:
            req = self._new_record(calls)
        req.depth += 1
        if req.depth == 1:
            self._requests_started += 1

    def set_pipelined(self, on: bool) -> bool:
        """Turn pipelining of the caller's (begun) request on or off; True when it was off and is now on.

        It stays on until the outermost end, or until the pipelining request
        that turned it on ends.  See :mod:`mongo_requests.pipeline`.
        """
        req = self._record()
        pl = req.pipeline
        if not on:
            if pl is not None:
                pl.user = False
            return False
        if not req.depth or (pl is not None and pl.user):
            return False
        if pl is None:
            pl = req.pipeline = Pipeline(True)
        pl.user = True
        if req.sock is not None and pl.sock is not req.sock:
            pl.attach(req.sock)
        return True

    def end_request(self) -> None:
        """End one level of request; the outermost end unpins the socket.

        The socket goes back to the idle sockets, or is closed if the pool
        was reset or closed while the request held it.
        """
        # self._own_record(), inline (one call less per request).
        calls = getattr(self._caller(), CALLS, None)
        req = None if calls is None else calls.get(self._self_ref)
        if req is None or req.depth == 0:
            return
        req.depth -= 1
        if req.depth:
            return
        sock = req.sock
        pipeline, req.pipeline = req.pipeline, None
        error = None
        try:
            if pipeline is not None:
                # Leaving is a sync point: read every reply before the socket goes back.
                error = pipeline.finish()
        finally:
            req.sock = None
            self._requests_ended += 1
            if sock is not None and self._unpin(sock):
                if self._events is not None:
                    self._events.checked_in(sock)
                self._release(sock)
        if error is not None:
            raise error

    def pipelined(self) -> Pipeline | None:
        """The caller's pipeline when its request pipelines its acknowledged writes, else None."""
        req = self._own_record()
        if req is None or not req.depth:
            return None
        pipeline: Pipeline | None = req.pipeline
        return pipeline if pipeline is not None and pipeline.user else None

    def sync_pipeline(self) -> None:
        """Read every pipelined reply of the caller's request; raise what they say (a sync point)."""
        req = self._own_record()
        if req is not None and req.pipeline is not None:
            req.pipeline.sync()

    def abandon_pipeline(self) -> None:
        """The caller is being killed: close its pinned socket if pipelined replies are unread."""
        req = self._own_record()
        if req is not None and req.pipeline is not None:
            req.pipeline.abandon()

    def in_request(self) -> bool:
        """True when the caller is inside a request with this pool."""
        req = self._own_record()
        return req is not None and req.depth > 0

    def request_state(self) -> RequestState:
        """The caller's :class:`RequestState` with this pool."""
        req = self._own_record()
        return _NO_REQUEST if req is None else req.state

    def pinned_socket(self) -> SocketInfo | None:
        """The socket pinned to the caller, if any (for diagnostics and tests)."""
        req = self._own_record()
        return None if req is None else req.sock

    def discard_pin(self) -> None:
        """Close the caller's pinned socket, if any; its request stays open.

        The topology calls this when a closed client is used again, so the
        owner's next call frees the socket that ``close()`` left it.
        """
        req = self._own_record()
        if req is not None and req.sock is not None:
            self._drop_pin(req, req.sock)
