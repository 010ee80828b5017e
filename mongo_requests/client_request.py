"""Requests on the client: ``start_request``, ``end_request``, ``in_request`` and :class:`Request`.

:class:`~mongo_requests.MongoClient` inherits :class:`ClientRequests`.  The
client only forwards requests to the topology, whose pools pin the sockets;
this module owns what the caller holds (the :class:`Request`, ending it once,
a pipelining request's sync points) and which pool's pipeline a write joins.
``Request`` is re-exported by :mod:`mongo_requests.client`.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from . import pipeline as _pipeline
from .client_session import current_session
from .errors import PyMongoError

if TYPE_CHECKING:
    from .client import MongoClient
    from .topology import Topology

__all__ = ["ClientRequests", "Request"]


class _OpenRecord:
    """A caller's open pipelining requests, filed in its record store."""

    __slots__ = ("requests",)

    def __init__(self) -> None:
        self.requests: list[Request] = []

    @property
    def depth(self) -> int:
        """How many (the death watch skips a record at depth 0)."""
        return len(self.requests)


class _OpenRequests:
    """Counts a request in ``pipeline.OPEN`` from its start until it ends, however it ends.

    An entry of ``OPEN`` is a weak reference to the :class:`Request`; the
    caller's record store (the one its pools' records are in) holds the
    request itself, so a caller may drop the object and end its request with
    ``client.end_request()``, as PyMongo 2 code does, and still pipeline
    until then.  The entry goes when the request ends (:meth:`Request.end`),
    when the caller leaves its outermost request on that client
    (``client.end_request()``), or when the caller dies (the store's death
    watch calls :meth:`_caller_died`, as it reclaims the caller's sockets: a
    killed greenlet's frames may outlive it in gevent's kept traceback).  A
    request left counted open kept every client's writes off their hot
    paths, and its client alive.
    """

    def __init__(self) -> None:
        self._self_ref = weakref.ref(self)

    def opened(self, calls: Any, request: Request) -> weakref.ref[Request]:
        """Count ``request`` open, for the caller whose record store is ``calls``; its ``OPEN`` entry."""
        ref = weakref.ref(request, _pipeline.OPEN.discard)
        record = calls.get(self._self_ref)
        if record is None:
            record = _OpenRecord()
            calls.add(self._self_ref, record)
        record.requests.append(request)
        _pipeline.OPEN.add(ref)
        return ref

    def ended(self, calls: Any, request: Request) -> None:
        """``request`` ended (in its caller, whose record store is ``calls``)."""
        _pipeline.OPEN.discard(request._open)
        record = calls.get(self._self_ref)
        if record is not None and request in record.requests:
            record.requests.remove(request)

    def left(self, calls: Any, client: Any) -> None:
        """The caller left its outermost request on ``client``: its requests there are over."""
        record = calls.get(self._self_ref)
        if record is None:
            return
        for request in [r for r in record.requests if r._client is client]:
            request._ended = True
            self.ended(calls, request)

    def _caller_died(self, record: _OpenRecord) -> None:
        """Death watch: the dead caller's requests will never end; none counts as open."""
        for request in record.requests:
            _pipeline.OPEN.discard(request._open)
        record.requests.clear()


_OPEN_REQUESTS = _OpenRequests()


class Request:
    """A request returned by :meth:`MongoClient.start_request`.

    Ends the request on :meth:`end`, or at the end of a ``with`` block.
    Ending it twice is harmless: the second call does nothing, so a
    ``try/finally`` with ``request.end()`` inside a ``with`` is safe too.
    """

    __slots__ = ("_client", "_ended", "_pipeline", "_turned_on", "_open", "__weakref__")

    def __init__(self, client: MongoClient, pipeline: bool = False, turned_on: bool = False) -> None:
        self._client = client
        self._ended = False
        self._pipeline = pipeline
        # This request began pipelining (it was not nested in a pipelining one).
        self._turned_on = turned_on
        # Its entry in pipeline.OPEN while it pipelines (a weak reference to it): see _OpenRequests.
        self._open: weakref.ref[Request] | None = None
        if pipeline:
            self._open = _OPEN_REQUESTS.opened(client._topology.identity.calls(), self)

    def end(self) -> None:
        """End this request (once).  Ending a pipelining request is a sync point."""
        if self._ended:
            return
        self._ended = True
        error = None
        if self._pipeline:
            client = self._client
            _OPEN_REQUESTS.ended(client._topology.identity.calls(), self)
            try:
                client._sync_pipelines()
            except PyMongoError as exc:
                error = exc
            finally:
                if self._turned_on:
                    # Nested in a plain request: the rest of it does not pipeline.
                    for server in client._topology.servers:
                        server.pool.set_pipelined(False)
        self._client.end_request()
        if error is not None:
            raise error

    def sync(self) -> None:
        """A sync point: read every pipelined reply; raise :class:`~mongo_requests.PipelineError`
        for failed writes, or :class:`~pymongo.errors.AutoReconnect` naming the unknown ones."""
        self._client._sync_pipelines()

    def __enter__(self) -> Request:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is None:
            if self._pipeline:
                self.end()
            elif not self._ended:
                # end(), its plain case inline (one call less per request).
                self._ended = True
                self._client.end_request()
            return
        if not isinstance(exc, Exception):
            # Killed (GreenletExit, gevent.Timeout, KeyboardInterrupt): no I/O
            # now; a socket with unread replies is closed instead.
            self._client._abandon_pipelines()
        try:
            self.end()
        except PyMongoError:
            pass  # the block's own exception is the one to see


class ClientRequests:
    """The request half of :class:`~mongo_requests.MongoClient`; needs ``_topology``."""

    _topology: Topology

    def start_request(self, pipeline: bool = False) -> Request:
        """Pin one socket to the calling thread or greenlet until the request ends.

        Operations inside a request run on one socket, so the server applies
        them in order: an unacknowledged (``w=0``) write is visible to the
        next read.  Requests nest; only the outermost end unpins.  Use the
        returned :class:`Request` as a context manager, or call ``.end()``.

        :param pipeline: pipeline the acknowledged writes: each returns at
            once with a result that resolves at the next sync point (a read,
            a command, :meth:`Request.sync`, leaving the request); failed
            writes raise :class:`~mongo_requests.PipelineError` there.  See
            :mod:`mongo_requests.pipeline`.
        """
        if not isinstance(pipeline, bool):
            raise TypeError("pipeline must be True or False")
        self._topology.start_request()
        turned_on = False
        if pipeline:
            # Every member's pool the request joined: writes go to the primary's.
            for server in self._topology.servers:
                turned_on = server.pool.set_pipelined(True) or turned_on
        return Request(self, pipeline, turned_on)  # type: ignore[arg-type]

    def end_request(self) -> None:
        """End one level of the caller's request (the outermost returns its socket on every member)."""
        try:
            self._topology.end_request()  # a sync point: may raise PipelineError
        finally:
            if _pipeline.OPEN and not self._topology.in_request():
                # Its pipelining requests on this client are over too, ended or not through their Request.
                _OPEN_REQUESTS.left(self._topology.identity.calls(), self)

    def in_request(self) -> bool:
        """True when the calling thread or greenlet is inside a request."""
        return self._topology.in_request()

    def _pipelining(self) -> Any:
        """The caller's :class:`~mongo_requests.pipeline.Pipeline` if its request pipelines writes, else None.

        Asked only while some pipeline is open in the process (``pipeline.OPEN``).
        A write bound to a session is never pipelined: it must carry the
        session's ``lsid`` (and a transaction's ``txnNumber``), so it takes the
        ordinary path, which reads the pipeline's earlier replies first.
        """
        if current_session() is not None:
            return None
        for server in self._topology.servers:
            pipeline = server.pool.pipelined()
            if pipeline is not None:
                return pipeline
        return None

    def _sync_pipelines(self) -> None:
        for server in self._topology.servers:
            server.pool.sync_pipeline()

    def _abandon_pipelines(self) -> None:
        for server in self._topology.servers:
            server.pool.abandon_pipeline()
