"""Explicit client sessions: ``client.start_session()``, ``session=`` on every operation, cluster time.

A :class:`ClientSession` wraps one server session (the ``lsid`` of
:mod:`mongo_requests.sessions`), taken from the client's pool on first use
and given back when the session ends.  It carries:

- the cluster time gossip: every reply's ``$clusterTime`` advances the
  client's and the session's, and the highest one known goes out with every
  command to a replica set (a standalone has no cluster time);
- causal consistency (on by default): a read in the session carries
  ``readConcern.afterClusterTime`` set to the ``operationTime`` of the
  session's last operation, so a secondary waits until it has replicated the
  session's own writes before it answers;
- snapshot reads (``snapshot=True``): every read of the session reads the
  same majority-committed snapshot (``atClusterTime`` of its first read);
- at most one transaction at a time (:mod:`mongo_requests.transactions`).

How ``session=`` reaches the command: the public methods that take it are
wrapped by :func:`with_session`, which binds the session to the calling
thread or greenlet (a :class:`contextvars.ContextVar`: each greenlet has its
own context) for the duration of the call only.  Every command the call
sends, whatever helper builds it, then goes through the client's
``_session_command``, which adds the session's fields.  So the plumbing is
one decorator per method, and an operation without ``session=`` never joins
a session by accident, even inside ``with_transaction``'s callback, as in
PyMongo.  A cursor remembers the session it was created in and binds it
again for its ``getMore`` and ``killCursors``.

Implicit sessions stay where the server needs one: acknowledged retryable
writes on a replica set (:mod:`mongo_requests.retryable`).  Reads outside a
session carry no ``lsid``, and a standalone sees no session field at all
unless the application asks for a session, so a plain ``find_one`` costs
what it did before sessions existed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from bson.codec_options import CodecOptions
from bson.timestamp import Timestamp

# pymongo.client_session re-exports these with a star import, which mypy cannot follow.
from pymongo.client_session import SessionOptions, TransactionOptions  # type: ignore[attr-defined]

from .errors import ConfigurationError, ConnectionFailure, InvalidOperation, PyMongoError

if TYPE_CHECKING:
    from .change_stream import ChangeStream
    from .client import MongoClient
    from .sessions import ServerSession, SessionPool
    from .topology import Topology
    from .transactions import Transaction

__all__ = ["ClientSession", "SessionOptions", "TransactionOptions", "current_session", "with_session"]

_CURRENT: ContextVar[ClientSession | None] = ContextVar("mongo_requests_session", default=None)

# Reads that take a read concern, hence afterClusterTime/atClusterTime.
_READS = frozenset(("find", "aggregate", "count", "distinct"))
# Commands of a cursor's life: outside an explicit session, an implicit one.
_CURSOR_COMMANDS = frozenset(("find", "aggregate", "listIndexes", "listCollections", "getMore", "killCursors"))

_F = TypeVar("_F", bound=Callable[..., Any])


def current_session() -> ClientSession | None:
    """The session bound to the calling thread or greenlet by the operation in progress, if any."""
    return _CURRENT.get()


@contextmanager
def bound(session: ClientSession | None) -> Iterator[None]:
    """Bind ``session`` (None: no session) for the commands sent inside the block."""
    token = _CURRENT.set(session)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def check_session(session: Any, client: Any) -> ClientSession:
    """``session`` if it may be used with ``client`` now; TypeError or InvalidOperation otherwise."""
    if not isinstance(session, ClientSession):
        raise TypeError(
            "session must be an instance of mongo_requests.client_session.ClientSession, not %r"
            % (type(session).__name__,)
        )
    if session._client is not client:
        raise InvalidOperation("Can only use session with the MongoClient that started it")
    if session._ended:
        raise InvalidOperation("Cannot use ended session")
    return session


def with_session(fn: _F) -> _F:
    """Decorate a public method so that it takes ``session=`` and binds it for the call."""

    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, session: Any = None, **kwargs: Any) -> Any:
        if session is None:
            return fn(self, *args, **kwargs)
        token = _CURRENT.set(check_session(session, _client_of(self)))
        try:
            return fn(self, *args, **kwargs)
        finally:
            _CURRENT.reset(token)

    return wrapper  # type: ignore[return-value]


def in_session(session: Any, owner: Any, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``method(*args, **kwargs)`` with ``session`` bound: ``with_session`` inlined by the hottest writes.

    They check ``if wc and "session" in wc`` themselves and call again
    through this, so that a write without a session pays for no wrapper.
    """
    if session is None:
        return method(*args, **kwargs)
    token = _CURRENT.set(check_session(session, _client_of(owner)))
    try:
        return method(*args, **kwargs)
    finally:
        _CURRENT.reset(token)


def _client_of(obj: Any) -> Any:
    client = getattr(obj, "_client", None)
    return obj if client is None else client


def _max_cluster_time(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The later of two ``$clusterTime`` documents (None is earliest)."""
    if a is None:
        return b
    if b is None:
        return a
    return b if b["clusterTime"] > a["clusterTime"] else a


class ClientSession:
    """A causally consistent (by default) session of one client; see :meth:`MongoClient.start_session`.

    Not for concurrent use: one thread or greenlet at a time, as in PyMongo.
    Use it as a context manager, or call :meth:`end_session`.
    """

    def __init__(self, client: MongoClient, options: SessionOptions, implicit: bool = False) -> None:
        self._client = client
        self._options = options
        self._implicit = implicit
        self._server_session: ServerSession | None = None
        self._ended = False
        self._cluster_time: Mapping[str, Any] | None = None
        self._operation_time: Timestamp | None = None
        self._snapshot_time: Timestamp | None = None
        self._transaction: Transaction | None = None

    # -- properties ---------------------------------------------------------
    @property
    def client(self) -> MongoClient:
        """The client this session belongs to."""
        return self._client

    @property
    def options(self) -> SessionOptions:
        """The :class:`~pymongo.client_session.SessionOptions` the session was started with."""
        return self._options

    @property
    def session_id(self) -> Mapping[str, Any]:
        """The ``lsid`` document: ``{"id": Binary(uuid, 4)}``."""
        return self._get_server_session().lsid

    @property
    def cluster_time(self) -> Mapping[str, Any] | None:
        """The latest ``$clusterTime`` this session has seen, or None."""
        return self._cluster_time

    @property
    def operation_time(self) -> Timestamp | None:
        """The ``operationTime`` of the session's last operation, or None."""
        return self._operation_time

    @property
    def has_ended(self) -> bool:
        """True once :meth:`end_session` has run."""
        return self._ended

    @property
    def in_transaction(self) -> bool:
        """True between :meth:`start_transaction` and the commit or abort."""
        txn = self._transaction
        return txn is not None and txn.active

    # -- cluster and operation time -----------------------------------------
    def advance_cluster_time(self, cluster_time: Mapping[str, Any]) -> None:
        """Move the session's cluster time forward (e.g. to another session's).

        :param cluster_time: a ``$clusterTime`` document, as :attr:`cluster_time` returns.
        """
        if not isinstance(cluster_time, Mapping):
            raise TypeError("cluster_time must be a subclass of collections.Mapping")
        if not isinstance(cluster_time.get("clusterTime"), Timestamp):
            raise ValueError("Invalid cluster_time")
        self._cluster_time = _max_cluster_time(self._cluster_time, cluster_time)

    def advance_operation_time(self, operation_time: Timestamp) -> None:
        """Move the session's operation time forward, so its next read waits for it.

        :param operation_time: a :class:`~bson.timestamp.Timestamp`.
        """
        if not isinstance(operation_time, Timestamp):
            raise TypeError("operation_time must be an instance of bson.timestamp.Timestamp")
        if self._operation_time is None or operation_time > self._operation_time:
            self._operation_time = operation_time

    # -- transactions (the logic is in transactions.py) ---------------------
    def start_transaction(
        self,
        read_concern: Any = None,
        write_concern: Any = None,
        read_preference: Any = None,
        max_commit_time_ms: int | None = None,
    ) -> Any:
        """Start a multi-document transaction; usable as a context manager that commits or aborts.

        :param read_concern: the transaction's ``pymongo.read_concern.ReadConcern``
            (default: the session's default transaction options, then the client's).
        :param write_concern: the commit's ``pymongo.write_concern.WriteConcern``; ``w=0`` is refused.
        :param read_preference: must resolve to primary for reads in the transaction.
        :param max_commit_time_ms: ``maxTimeMS`` of ``commitTransaction``.
        :raises InvalidOperation: if a transaction is already in progress, or the session is a snapshot session.
        """
        from .transactions import start_transaction

        self._check_ended()
        return start_transaction(self, read_concern, write_concern, read_preference, max_commit_time_ms)

    def commit_transaction(self) -> None:
        """Commit the transaction (retried once on a retryable error, as the specification says)."""
        from .transactions import commit_transaction

        self._check_ended()
        commit_transaction(self)

    def abort_transaction(self) -> None:
        """Abort the transaction; errors from the server are ignored, as the specification says."""
        from .transactions import abort_transaction

        self._check_ended()
        abort_transaction(self)

    def with_transaction(
        self,
        callback: Callable[[ClientSession], Any],
        read_concern: Any = None,
        write_concern: Any = None,
        read_preference: Any = None,
        max_commit_time_ms: int | None = None,
    ) -> Any:
        """Run ``callback(session)`` in a transaction and commit it, retrying for up to 120 seconds.

        A ``TransientTransactionError`` from the callback or the commit runs
        the whole transaction again; an ``UnknownTransactionCommitResult``
        from the commit runs the commit again.  Any other error (including
        ``GreenletExit`` and ``KeyboardInterrupt``) aborts the transaction and
        propagates.  Returns what the callback returned.
        """
        from .transactions import with_transaction

        self._check_ended()
        return with_transaction(self, callback, read_concern, write_concern, read_preference, max_commit_time_ms)

    # -- lifecycle ----------------------------------------------------------
    def end_session(self) -> None:
        """Abort any transaction in progress and give the server session back to the client's pool."""
        if self._ended:
            return
        try:
            if self.in_transaction:
                from .transactions import abort_transaction

                abort_transaction(self)
        finally:
            self._ended = True
            txn = self._transaction
            if txn is not None:
                txn.release(self)
            server_session = self._server_session
            self._server_session = None
            if server_session is not None:
                client = self._client
                client._sessions.checkin(server_session, client._topology.description.logical_session_timeout_minutes)

    def __enter__(self) -> ClientSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.end_session()

    def __del__(self) -> None:
        # Dropped without end_session (its greenlet or thread died).  No I/O
        # and no locks in a finalizer: the transaction's request socket goes
        # back through the pool's own death watch, and the server session
        # goes back to the pool (deque operations only).  An unfinished
        # transaction on it ends when the session is next used (a higher
        # txnNumber aborts it) or after transactionLifetimeLimitSeconds.
        server_session = self.__dict__.get("_server_session")
        if server_session is not None:
            self._server_session = None
            try:
                client = self._client
                client._sessions.checkin(server_session, client._topology.description.logical_session_timeout_minutes)
            except Exception:  # noqa: BLE001 - interpreter shutdown: nothing left to give it back to
                pass

    def __repr__(self) -> str:
        state = "ended" if self._ended else ("in transaction" if self.in_transaction else "open")
        return "<ClientSession %s causal_consistency=%s snapshot=%s>" % (
            state,
            self._options.causal_consistency,
            self._options.snapshot,
        )

    # -- internals ----------------------------------------------------------
    def _check_ended(self) -> None:
        if self._ended:
            raise InvalidOperation("Cannot use ended session")

    def _get_server_session(self) -> ServerSession:
        """The server session, taken from the client's pool on first use."""
        self._check_ended()
        server_session = self._server_session
        if server_session is None:
            client = self._client
            timeout = client._topology.description.logical_session_timeout_minutes
            server_session = self._server_session = client._sessions.checkout(timeout)
        return server_session

    def _advance(self, reply: Mapping[str, Any]) -> None:
        """Take the cluster time, operation time and snapshot time of a reply (or an error's details)."""
        ct = reply.get("$clusterTime")
        if ct is not None:
            self._cluster_time = _max_cluster_time(self._cluster_time, ct)
        op_time = reply.get("operationTime")
        if op_time is not None and (self._operation_time is None or op_time > self._operation_time):
            self._operation_time = op_time
        if self._options.snapshot and self._snapshot_time is None:
            cursor = reply.get("cursor")
            at = cursor.get("atClusterTime") if isinstance(cursor, Mapping) else None
            at = at or reply.get("atClusterTime")
            if at is not None:
                self._snapshot_time = at

    def _read_concern(self, cmd: dict[str, Any]) -> None:
        """Add afterClusterTime (causal consistency) or the snapshot to a read outside a transaction."""
        name = next(iter(cmd))
        if name not in _READS:
            return
        if self._options.snapshot:
            rc = dict(cmd.get("readConcern") or {})
            rc["level"] = "snapshot"
            if self._snapshot_time is not None:
                rc["atClusterTime"] = self._snapshot_time
            cmd["readConcern"] = rc
        elif self._options.causal_consistency and self._operation_time is not None:
            rc = dict(cmd.get("readConcern") or {})
            rc["afterClusterTime"] = self._operation_time
            cmd["readConcern"] = rc


class SessionClient:
    """The session half of the client: ``start_session`` and the command hook."""

    _topology: Topology
    _sessions: SessionPool
    # False until the first start_session: the standalone hot path's one check.
    _session_hooks: bool = False
    _hot: Any
    _cluster_time: Mapping[str, Any] | None = None
    # Server sessions of open cursors outside explicit sessions, by cursor id.
    _cursor_sessions: dict[int, ServerSession]

    def _command(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # pragma: no cover - the client's
        raise NotImplementedError

    def _run(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # pragma: no cover - the client's
        raise NotImplementedError

    def _init_session_state(self) -> None:
        # False until the first start_session(): only then do commands on a
        # standalone look for a bound session.
        self._session_hooks = False
        self._cluster_time = None
        self._cursor_sessions = {}

    def _forget_cursor(self, cursor_id: int) -> None:
        """A cursor queued for killing frees its implicit session (the server kills it without the lsid too).

        Called from a finalizer: dict and deque operations only.
        """
        server_session = self._cursor_sessions.pop(cursor_id, None)
        if server_session is not None:
            self._sessions.checkin(server_session, self._topology.description.logical_session_timeout_minutes)

    def start_session(
        self,
        causal_consistency: bool | None = None,
        default_transaction_options: TransactionOptions | None = None,
        snapshot: bool | None = False,
    ) -> ClientSession:
        """Start a :class:`ClientSession`; pass it as ``session=`` to operations.

        :param causal_consistency: reads see the session's earlier writes, even
            on a secondary (default True; False with ``snapshot``).
        :param default_transaction_options: a
            :class:`~pymongo.client_session.TransactionOptions` for the
            session's transactions.
        :param snapshot: every read of the session sees the same snapshot
            (MongoDB 5.0+; not with ``causal_consistency=True``).
        """
        opts = SessionOptions(causal_consistency, default_transaction_options, snapshot)
        if self._topology.closed:
            raise InvalidOperation("Cannot use MongoClient after close")
        self._session_hooks = True
        self._hot.session_hooks = True  # what the client's hot path reads
        return ClientSession(self, opts)  # type: ignore[arg-type]

    def watch(self, pipeline: Sequence[Mapping[str, Any]] | None = None, **kwargs: Any) -> ChangeStream:
        """A :class:`~mongo_requests.change_stream.ChangeStream` of every database of the cluster.

        Takes PyMongo's ``watch`` keywords (see :meth:`Collection.watch`).
        """
        from .change_stream import open_change_stream

        return open_change_stream(self, "admin", 1, pipeline, kwargs, all_changes_for_cluster=True)

    @property
    def cluster_time(self) -> Mapping[str, Any] | None:
        """The latest ``$clusterTime`` the client has seen (None on a standalone)."""
        return self._cluster_time

    def _session_command(
        self,
        dbname: str,
        cmd: dict[str, Any],
        codec_options: CodecOptions[Any],
        sequences: Sequence[bytes],
        check: bool,
        read_preference: Any,
        address: tuple[str, int] | None,
        on_server: Any,
        retryable: bool | None = None,
    ) -> dict[str, Any]:
        """``_command`` with sessions: the bound session's fields, cluster time gossip, then the command."""
        session = _CURRENT.get()
        topology = self._topology
        gossip = topology.sessions_supported
        if gossip:
            ct = self._cluster_time
            if session is not None:
                ct = _max_cluster_time(ct, session._cluster_time)
            if ct is not None:
                cmd["$clusterTime"] = ct
        in_transaction = session is not None and session._transaction is not None and session._transaction.active
        try:
            if session is None:
                if gossip and "lsid" not in cmd and next(iter(cmd)) in _CURSOR_COMMANDS:
                    return self._implicit_cursor_command(
                        dbname, cmd, codec_options, sequences, check, read_preference, address, on_server
                    )
            elif not in_transaction:
                session._read_concern(cmd)
                if "lsid" not in cmd:
                    cmd["lsid"] = session._get_server_session().lsid
            if in_transaction and session is not None:
                from .transactions import run_in_transaction

                client: Any = self  # the MongoClient this mixin is part of
                reply = run_in_transaction(
                    client, session, dbname, cmd, codec_options, sequences, check, address, on_server
                )
            else:
                reply = self._command(
                    dbname,
                    cmd,
                    codec_options,
                    sequences,
                    check,
                    read_preference,
                    address,
                    on_server,
                    retryable,
                    _raw=True,
                )
        except PyMongoError as exc:
            details = getattr(exc, "details", None)
            if isinstance(details, Mapping):
                self._advance_cluster_time(details.get("$clusterTime"))
                if session is not None:
                    session._advance(details)
            if session is not None and isinstance(exc, ConnectionFailure) and session._server_session is not None:
                session._server_session.dirty = True
            raise
        self._advance_cluster_time(reply.get("$clusterTime"))
        if session is not None:
            session._advance(reply)
        return reply

    def _implicit_cursor_command(
        self,
        dbname: str,
        cmd: dict[str, Any],
        codec_options: CodecOptions[Any],
        sequences: Sequence[bytes],
        check: bool,
        read_preference: Any,
        address: tuple[str, int] | None,
        on_server: Any,
    ) -> dict[str, Any]:
        """A cursor's commands on a replica set, in an implicit session that lives as long as the cursor.

        The ``find``/``aggregate`` that opens a cursor takes a server
        session; if the cursor stays open, its ``getMore``s and its
        ``killCursors`` carry the same ``lsid`` (the server checks it), and
        the session goes back to the pool when the cursor is exhausted or
        killed.  A single-batch ``find`` (``find_one``) needs none.
        """
        name = next(iter(cmd))
        owned = self._cursor_sessions
        timeout = self._topology.description.logical_session_timeout_minutes
        server_session: ServerSession | None = None
        if name == "getMore":
            server_session = owned.pop(cmd["getMore"], None)
        elif name == "killCursors":
            ids = cmd.get("cursors") or ()
            sessions = [owned.pop(i) for i in ids if i in owned]
            for extra in sessions[1:]:
                self._sessions.checkin(extra, timeout)
            server_session = sessions[0] if len(sessions) == 1 and len(ids) == 1 else None
            if sessions and server_session is None:
                self._sessions.checkin(sessions[0], timeout)
        elif not cmd.get("singleBatch"):
            server_session = self._sessions.checkout(timeout)
        if server_session is not None:
            cmd["lsid"] = server_session.lsid
        try:
            reply = self._command(
                dbname, cmd, codec_options, sequences, check, read_preference, address, on_server, None, _raw=True
            )
        except BaseException as exc:
            if server_session is not None:
                if isinstance(exc, ConnectionFailure):
                    server_session.dirty = True
                self._sessions.checkin(server_session, timeout)
            if isinstance(exc, PyMongoError) and isinstance(getattr(exc, "details", None), Mapping):
                self._advance_cluster_time(exc.details.get("$clusterTime"))  # type: ignore[attr-defined]
            raise
        self._advance_cluster_time(reply.get("$clusterTime"))
        if server_session is not None:
            cursor = reply.get("cursor")
            cursor_id = cursor.get("id") if isinstance(cursor, Mapping) else None
            if cursor_id and name != "killCursors":
                owned[cursor_id] = server_session
            else:
                self._sessions.checkin(server_session, timeout)
        return reply

    def _advance_cluster_time(self, ct: Mapping[str, Any] | None) -> None:
        if ct is not None:
            self._cluster_time = _max_cluster_time(self._cluster_time, ct)


def refuse_unacknowledged(wc_doc: Any = None) -> None:
    """Raise ConfigurationError if an explicit session is bound: it cannot send a ``w=0`` write."""
    session = _CURRENT.get()
    if session is None or session._implicit:
        return
    if session.in_transaction:
        raise InvalidOperation("transactions do not support unacknowledged write concern: %r" % (wc_doc,))
    raise ConfigurationError("Explicit sessions are incompatible with unacknowledged write concern: %r" % (wc_doc,))
