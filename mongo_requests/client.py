"""MongoClient, the legacy Connection, and running commands.

The client parses options, owns the topology, and runs commands: it asks the
topology for a server, the server's pool for a socket, and the socket for the
round trip.  It knows nothing about bytes or greenlets; requests are the
pool's business, and the client only forwards ``start_request`` and friends
(:mod:`mongo_requests.client_request`, whose :class:`Request` is re-exported
here).  Its other halves are mixins: database access
(:mod:`mongo_requests.client_databases`), the queue of cursors to kill
(:mod:`mongo_requests.client_cursors`), sessions, retries and PyMongo's
spellings.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bson.codec_options import DEFAULT_CODEC_OPTIONS, CodecOptions

from .client_compat import ClientCompat
from .client_cursors import ClientCursors
from .client_databases import ClientDatabases
from .client_request import ClientRequests, Request
from .client_session import SessionClient, refuse_unacknowledged
from .errors import (
    ConnectionFailure,
    OperationFailure,
    PyMongoError,
)
from .events import build as build_events
from .identity import GreenletIdentity, ThreadIdentity
from .legacy_options import LegacyOptions
from .monitoring import Listeners
from .options import ClientOptions
from .pool import Pool, PoolOptions
from .precoded import DEFAULT_MAX_BSON_SIZE as _DEFAULT_MAX_BSON_SIZE
from .retry import (
    is_retryable_read,
    is_retryable_read_error,
    is_retryable_write,
)
from .retryable import RetryableWrites
from .sessions import SessionPool, end_sessions
from .socket_info import SocketInfo, client_metadata
from .topology import Server, Topology

__all__ = ["MongoClient", "Connection", "MongoReplicaSetClient", "ReplicaSetConnection", "Request"]

# close() sends queued killCursors, acknowledged, within this many seconds: a
# frozen server must not hang close().  Cursors it could not kill time out on
# the server (after 10 minutes by default).
_CLOSE_TIMEOUT = 1.0


class _Hot:
    """What ``_command``'s hot path reads, in one slotted object.

    Every MongoClient attribute is an unspecialized lookup (the class's
    ``__getattr__`` keeps CPython from specializing it), about 300
    instructions each; these are read once per command.  ``session_hooks``
    mirrors ``_session_hooks`` (set together in ``start_session``).
    """

    __slots__ = ("topology", "kill_queue", "listeners", "session_hooks")

    def __init__(self, topology: Topology, kill_queue: collections.deque[Any], listeners: Listeners | None) -> None:
        self.topology = topology
        self.kill_queue = kill_queue
        self.listeners = listeners
        self.session_hooks = False


class MongoClient(
    ClientRequests, ClientDatabases, ClientCursors, ClientCompat, LegacyOptions, RetryableWrites, SessionClient
):
    """A client for one MongoDB server, with PyMongo 2-style requests.

    :param host: a hostname, ``host:port``, or a ``mongodb://`` URI
        (default ``localhost``).
    :param port: the port when ``host`` has none (default 27017).
    :param auto_start_request: pin a socket to each thread or greenlet on
        its first operation, until :meth:`end_request` or its death
        (default False).
    :param use_greenlets: None (auto: greenlets when gevent has patched
        ``threading``), True, or False.
    :param max_pool_size: the most sockets open to the server (default 100;
        ``maxPoolSize`` in a URI).
    :param w: the default write concern (``0`` for unacknowledged writes);
        ``safe=False`` is the PyMongo 2 spelling of ``w=0``.
    :param connectTimeoutMS: connect and handshake timeout (default 20000).
    :param socketTimeoutMS: per-operation socket timeout (default None: wait).
    :param waitQueueTimeoutMS: how long to wait for a free socket (default
        None: wait).
    :param serverSelectionTimeoutMS: how long to wait for a suitable server:
        an unreachable one, or a replica set's primary during an election
        (default 30000).
    :param replicaSet: the replica set's name; several hosts, or one seed
        and ``replicaSet``, make the client discover and follow the set.
    :param read_preference: a :mod:`pymongo.read_preferences` mode (or
        ``readPreference`` with ``readPreferenceTags`` and
        ``maxStalenessSeconds`` in the URI); the default for every database
        and collection of the client (default primary).
    :param localThresholdMS: the latency window among suitable members
        (default 15).
    :param heartbeatFrequencyMS: how old a check may be before the next
        operation checks the servers again (default 10000).
    :param retryWrites: retry an acknowledged single-document write once on
        a replica set (default True).
    :param retryReads: retry a read once (default True).

    connectTimeoutMS=0 and socketTimeoutMS=0 mean no timeout, in a URI and as
    a keyword alike (as in PyMongo; waitQueueTimeoutMS=0 is refused).  Every
    option is listed in :mod:`mongo_requests.options`: it is either honoured
    or refused with a :class:`~pymongo.errors.ConfigurationError` that says
    why (TLS, authentication, replica sets, ...); none is silently ignored.
    A wrong type raises TypeError, an unknown option ConfigurationError.
    """

    # PyMongo 2's MongoClient defaults; Connection overrides them.
    _DEFAULTS: Mapping[str, Any] = {"auto_start_request": False, "w": None}

    def __init__(self, host: str | None = None, port: int | None = None, **kwargs: Any) -> None:
        opts = ClientOptions.parse(host, port, self._DEFAULTS, **kwargs)
        self._options = opts
        self._default_dbname = opts.database
        self.write_concern = opts.write_concern
        self.codec_options = opts.codec_options
        pool_opts = PoolOptions(
            max_size=opts.max_pool_size,
            connect_timeout=opts.connect_timeout,
            socket_timeout=opts.socket_timeout,
            wait_queue_timeout=opts.wait_queue_timeout,
            auto_start_request=opts.auto_start_request,
            metadata=client_metadata(opts.appname),
            setup=opts.setup,
        )
        self.read_preference = opts.read_preference
        # None unless a command listener is registered: the hot path's one check.
        self._listeners = Listeners.build(opts.raw.get("event_listeners"))
        pool_events, sdam_events = build_events(opts.raw.get("event_listeners") or ())
        self._topology = Topology(
            list(opts.seeds),
            pool_opts,
            opts.use_greenlets,
            opts.server_selection_timeout,
            replica_set=opts.replica_set,
            direct_connection=opts.direct_connection,
            heartbeat_frequency=opts.heartbeat_frequency,
            local_threshold=opts.local_threshold,
            pool_events=pool_events,
            sdam_events=sdam_events,
        )
        self._kill_queue: collections.deque[tuple[str, int, Any]] = collections.deque()
        self._hot: _Hot = _Hot(self._topology, self._kill_queue, self._listeners)
        self._sessions = SessionPool()
        self._init_session_state()
        self._retry_writes = opts.retry_writes
        self._retry_reads = opts.retry_reads

    @property
    def max_pool_size(self) -> int:
        """The cap on sockets per server."""
        return self._topology.servers[0].pool.opts.max_size

    @property
    def auto_start_request(self) -> bool:
        """Whether each caller's first operation starts a request."""
        return self._topology.servers[0].pool.opts.auto_start_request

    @property
    def identity(self) -> ThreadIdentity | GreenletIdentity:
        """Who requests belong to: threads or greenlets (may change in auto mode)."""
        return self._topology.servers[0].pool.identity

    @property
    def use_greenlets(self) -> bool:
        """True when requests belong to greenlets rather than threads."""
        return self.identity.kind == "greenlet"

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` of the server: the standalone, or a replica set's primary (waiting for one)."""
        if self._topology.single:
            return self._topology.servers[0].address
        return self._topology.select_server(for_write=True).address

    @property
    def pool(self) -> Pool:
        """The server's :class:`~mongo_requests.pool.Pool` (a replica set's primary's); for stats and tests."""
        if self._topology.single:
            return self._topology.servers[0].pool
        return self._topology.select_server(for_write=True).pool

    # -- running commands ---------------------------------------------------
    def _checkout(
        self,
        read_preference: Any = None,
        for_write: bool = False,
        address: tuple[str, int] | None = None,
        selection_timeout: float | None = None,
    ) -> tuple[Server, SocketInfo]:
        """A server and a socket for one operation (give it back with checkin).

        :param read_preference: a read's non-primary mode, else None.
        :param address: the server that must run it (a cursor's getMore).
        """
        if address is None:
            server = self._topology.select_server(selection_timeout, read_preference, for_write)
        else:
            server = self._topology.server_for(address)
        try:
            sock = server.pool.checkout()
        except ConnectionFailure as exc:
            self._topology.handle_error(server, exc)
            raise
        if self._kill_queue:
            self._kill_before(server, sock)
        return server, sock

    def _kill_before(self, server: Server, sock: SocketInfo) -> None:
        """Send the queued killCursors on a socket just checked out for an operation."""
        # Holding a socket from here: a failed send must give it back.
        try:
            self._kill_cursors(sock)
        except BaseException as exc:
            try:
                if isinstance(exc, ConnectionFailure):
                    self._topology.handle_error(server, exc, sock)
            finally:
                server.pool.checkin(sock)
            raise

    def _command(
        self,
        dbname: str,
        cmd: dict[str, Any],
        codec_options: CodecOptions[Any] = DEFAULT_CODEC_OPTIONS,
        sequences: Sequence[bytes] = (),
        check: bool = True,
        read_preference: Any = None,
        address: tuple[str, int] | None = None,
        on_server: Callable[[tuple[str, int]], None] | None = None,
        retryable: bool | None = None,
        _raw: bool = False,
        body: bytes | None = None,
        unpack: Callable[[memoryview], Any] | None = None,
    ) -> dict[str, Any]:
        """Run one command on a socket from the pool, and give the socket back.

        :param read_preference: for a read, its non-primary mode (None: primary).
        :param address: run it on this server (a cursor's ``getMore``), no selection, no retry.
        :param on_server: called with the address of the server that runs it.
        :param retryable: for an acknowledged write whose statements travel in
            ``sequences`` (a bulk batch), whether it is a retryable write;
            None: judged from ``cmd``.
        :param body: ``cmd`` with ``$db``, already encoded (:mod:`mongo_requests.precoded`);
            only the hot path sends it, every other path encodes ``cmd``.
        :param unpack: the hot path's shortcut decoding of the reply (see
            :meth:`SocketInfo.command`): when it applies, its result is
            returned instead of the reply; every other path ignores it.

        Acknowledged single-document writes are retried once on a replica set
        (``retryWrites``), reads once anywhere (``retryReads``); see
        :mod:`mongo_requests.retry`.  On a replica set, or once the
        application has started a session, the command goes through
        :meth:`_session_command` first (cluster time, the bound session's fields).
        """
        hot = self._hot
        topology = hot.topology
        if (topology.sessions_supported or hot.session_hooks) and not _raw:
            return self._session_command(
                dbname, cmd, codec_options, sequences, check, read_preference, address, on_server, retryable
            )
        if (
            topology.sessions_supported
            and self._retry_writes
            and (is_retryable_write(cmd) if retryable is None else retryable)
        ):
            return self._retryable_write(dbname, cmd, codec_options, sequences, check)
        if read_preference is None and address is None and on_server is None and not topology.direct_member:
            # The hot path (a primary or standalone operation), inline: a
            # find_one or ping pays for no more than before replica sets.
            # _checkout(), inline: the call and its tuple cost ~1,500 instructions per operation.
            server = topology.lone_writable  # select_server()'s answer for a known lone server, without the call
            if server is None:
                server = topology.select_server(None, None, False)
                if topology.sessions_supported and not _raw:
                    # A fresh client's first operation: this selection has just found a replica set (or
                    # mongos), so it takes the session path, where an acknowledged write is retryable.
                    return self._command(
                        dbname, cmd, codec_options, sequences, check, read_preference, address, on_server, retryable
                    )
            try:
                sock = server.pool.checkout()
            except ConnectionFailure as exc:
                topology.handle_error(server, exc)
                raise
            if hot.kill_queue:
                self._kill_before(server, sock)
            try:
                listeners = hot.listeners
                if listeners is not None:
                    return listeners.command(sock, dbname, cmd, codec_options, sequences, check)
                return sock.command(dbname, cmd, codec_options, sequences, check, body, unpack)
            except PyMongoError as exc:
                if isinstance(exc, ConnectionFailure):
                    topology.handle_error(server, exc, sock)
                if not self._retry_reads or not is_retryable_read_error(exc) or not is_retryable_read(cmd):
                    raise
                first = exc
            finally:
                server.pool.checkin(sock)
        else:
            try:
                return self._run(dbname, cmd, codec_options, sequences, check, read_preference, address, on_server)
            except PyMongoError as exc:
                if address is not None or not self._retry_reads or not is_retryable_read_error(exc):
                    raise
                if not is_retryable_read(cmd):
                    raise
                first = exc
        self._reselect(first, read_preference, False)
        return self._run(dbname, cmd, codec_options, sequences, check, read_preference, None, on_server)

    def _run(
        self,
        dbname: str,
        cmd: dict[str, Any],
        codec_options: CodecOptions[Any],
        sequences: Sequence[bytes],
        check: bool,
        read_preference: Any = None,
        address: tuple[str, int] | None = None,
        on_server: Callable[[tuple[str, int]], None] | None = None,
        for_write: bool = False,
    ) -> dict[str, Any]:
        """One attempt: select, check out, run, report errors to the topology, check in."""
        server, sock = self._checkout(read_preference, for_write, address)
        topology = self._topology
        try:
            if read_preference is not None or topology.direct_member:
                doc = topology.read_preference_document(server, read_preference)
                if doc is not None:
                    cmd["$readPreference"] = doc
                else:
                    cmd.pop("$readPreference", None)
            if on_server is not None:
                on_server(server.address)
            if self._listeners is not None:
                reply = self._listeners.command(sock, dbname, cmd, codec_options, sequences, check)
            else:
                reply = sock.command(dbname, cmd, codec_options, sequences, check)
            if for_write and "writeConcernError" in reply:
                # A primary that steps down fails the write concern: as telling as "not primary".
                wce = reply["writeConcernError"]
                details = {
                    "code": wce.get("code"),
                    "errmsg": wce.get("errmsg", ""),
                    "topologyVersion": reply.get("topologyVersion"),
                }
                topology.handle_error(server, OperationFailure(details["errmsg"], details["code"], details), sock)
            return reply
        except ConnectionFailure as exc:
            topology.handle_error(server, exc, sock)
            raise
        finally:
            server.pool.checkin(sock)

    def _send_unacknowledged(
        self,
        dbname: str,
        cmd: dict[str, Any],
        codec_options: CodecOptions[Any] = DEFAULT_CODEC_OPTIONS,
        sequences: Sequence[bytes] = (),
    ) -> None:
        """Send one ``w=0`` command (``moreToCome``: no reply) like :meth:`_command` runs one.

        Never retried, and without a session: nothing says whether it failed.
        """
        # Inline like _command rather than through _SocketContext, which
        # costs a w=0 insert_one about 4% more client instructions.
        if self._session_hooks:
            refuse_unacknowledged(cmd.get("writeConcern"))
        server, sock = self._checkout(None, True)
        try:
            if self._listeners is not None:
                return self._listeners.send_command(sock, dbname, cmd, codec_options, sequences)
            sock.send_command(dbname, cmd, codec_options, sequences)
        except ConnectionFailure as exc:
            self._topology.handle_error(server, exc, sock)
            raise
        finally:
            server.pool.checkin(sock)

    def _max_bson_size(self) -> int:
        """The server's ``maxBsonObjectSize``, for checking documents before anything is sent.

        From the server's last handshake, without selecting it: validation
        never waits for a server, so bad input fails at once even when the
        server is down.  Before the first handshake: 16 MiB, every server's
        limit since MongoDB 1.8.
        """
        description = self._topology.servers[0].description
        if description is None:
            return _DEFAULT_MAX_BSON_SIZE
        size: int = description.get("maxBsonObjectSize", _DEFAULT_MAX_BSON_SIZE)
        return size

    def _socket(self) -> _SocketContext:
        """``with client._socket() as sock:`` for multi-message operations."""
        return _SocketContext(self)

    # -- lifecycle ----------------------------------------------------------
    def close(self) -> None:
        """Close the client.  Safe to call while other threads use it.

        Idle sockets close now.  An operation already in flight in another
        thread or greenlet completes normally; its socket is closed when
        given back (or, pinned by a request, when the request ends, its
        owner dies, or its owner calls again).  Every call made after
        ``close()``, in any thread, raises
        :class:`~pymongo.errors.InvalidOperation` ("Cannot use MongoClient
        after close"); nothing surfaces as ``AutoReconnect``.

        Cursors queued for killing are killed first, acknowledged, then the
        pooled server sessions are ended (``endSessions``), each errand within
        a short deadline (1 s): a frozen server cannot hang ``close()``.
        """
        if self._kill_queue and not self._topology.closed:
            deadline = time.monotonic() + _CLOSE_TIMEOUT
            try:
                server = self._topology.select_server(_CLOSE_TIMEOUT)
                # Straight from the pool, unpinned: _checkout would flush the
                # queue unacknowledged before we get the socket.
                sock = server.pool.checkout_within(max(deadline - time.monotonic(), 0.001))
                try:
                    sock.sock.settimeout(max(deadline - time.monotonic(), 0.001))
                    self._kill_cursors(sock, acknowledged=True)
                finally:
                    # Its timeout was changed for this errand, and the pool
                    # is about to close: it is not reused.
                    sock.close()
                    server.pool.checkin(sock)
            except PyMongoError:
                pass  # the server is gone or frozen; its cursors time out there
        end_sessions(self._topology, self._sessions.drain(), _CLOSE_TIMEOUT, self._listeners)
        self._topology.close()

    disconnect = close  # PyMongo 2

    def __enter__(self) -> MongoClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        if not self._topology.single:
            # No server selection in a repr: it could wait for an election.
            seeds = ["%s:%d" % a for a in self._options.seeds]
            return "%s(host=%r, replicaSet=%r, auto_start_request=%s, use_greenlets=%s)" % (
                type(self).__name__,
                seeds,
                self._options.replica_set,
                self.auto_start_request,
                self.use_greenlets,
            )
        host, port = self.address
        return "%s(host=%r, port=%d, auto_start_request=%s, use_greenlets=%s)" % (
            type(self).__name__,
            host,
            port,
            self.auto_start_request,
            self.use_greenlets,
        )

    def __eq__(self, other: Any) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)


class _SocketContext:
    """Checkout/checkin as a context manager, with the client's error handling."""

    __slots__ = ("_client", "_server", "sock")

    def __init__(self, client: MongoClient) -> None:
        self._client = client

    def __enter__(self) -> SocketInfo:
        self._server, self.sock = self._client._checkout()
        return self.sock

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc is not None and isinstance(exc, ConnectionFailure):
                self._client._topology.handle_error(self._server, exc, self.sock)
        finally:
            self._server.pool.checkin(self.sock)


class Connection(MongoClient):
    """The PyMongo 2 spelling, with PyMongo 2's defaults.

    ``auto_start_request=True`` (each thread or greenlet keeps its socket)
    and unacknowledged writes (``safe=False``, that is ``w=0``).
    """

    # An explicit safe=True/False overrides the default w=0 (see options.ClientOptions.parse).
    _DEFAULTS: Mapping[str, Any] = {"auto_start_request": True, "w": 0}


class MongoReplicaSetClient(MongoClient):
    """PyMongo 2's replica set client: now simply :class:`MongoClient`, which discovers sets itself."""


class ReplicaSetConnection(Connection):
    """PyMongo 2's replica set connection: :class:`Connection` (its defaults: ``auto_start_request=True``, w=0)."""
