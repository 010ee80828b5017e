"""Multi-document transactions, per the MongoDB *Transactions* and *Convenient API* specifications.

A transaction belongs to a :class:`~mongo_requests.client_session.ClientSession`
and goes through the specification's states (starting, in progress,
committed, aborted).  Its commands carry the session's ``lsid``, the
transaction's ``txnNumber`` and ``autocommit: false``; the first one adds
``startTransaction: true`` and the transaction's read concern, and none
carries a write concern (only ``commitTransaction`` does).

How transactions meet requests: a transaction pins its connection for its
life.  :func:`start_transaction` starts a request for the calling thread or
greenlet (it nests inside one already open), so every command of the
transaction, and the commit, go over the request's socket to the primary;
the commit or abort ends that request level.  Inside an application's own
request the transaction simply uses the request's socket.  Because the pin
*is* a request, a thread or greenlet that dies inside a transaction gives
its socket back through the pool's death watch, like any request; an
exception there (``GreenletExit`` from ``kill()``, or from the garbage
collector for a dropped raw greenlet) aborts the transaction on its way out
of :meth:`~ClientSession.with_transaction` or the ``with`` block, and a
transaction nobody could abort ends on the server after
``transactionLifetimeLimitSeconds``.

Only acknowledged writes may be part of a transaction: ``w=0`` is refused
with :class:`~pymongo.errors.ConfigurationError` for the transaction's write
concern, and an operation that would send a ``w=0`` write with an explicit
session raises too (:func:`~mongo_requests.client_session.refuse_unacknowledged`).
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bson.codec_options import DEFAULT_CODEC_OPTIONS, CodecOptions
from bson.int64 import Int64
from pymongo.client_session import TransactionOptions  # type: ignore[attr-defined]  # a star re-export
from pymongo.read_preferences import ReadPreference
from pymongo.write_concern import WriteConcern

from .errors import (
    ConfigurationError,
    ConnectionFailure,
    InvalidOperation,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteConcernError,
)
from .retry import is_retryable_write_error

if TYPE_CHECKING:
    from .client import MongoClient
    from .client_session import ClientSession

__all__ = [
    "TxnState",
    "Transaction",
    "start_transaction",
    "commit_transaction",
    "abort_transaction",
    "with_transaction",
]

# The Convenient API specification's limit on with_transaction's retries.
WITH_TRANSACTION_TIMEOUT = 120.0
# Backoff between attempts after a TransientTransactionError (write
# conflicts): jittered, growing, capped; keeps 20 conflicting workers from
# retrying in lock step.
_BACKOFF_INITIAL = 0.005
_BACKOFF_MAX = 0.5
# Write concern errors after which the commit's outcome is still unknown is
# every one but these (UnsatisfiableWriteConcern, UnknownReplWriteConcern).
_DEFINITE_WCE = frozenset((100, 79))
_MAX_TIME_EXPIRED = 50

TRANSIENT = "TransientTransactionError"
UNKNOWN_COMMIT = "UnknownTransactionCommitResult"


class TxnState(enum.Enum):
    """The specification's transaction states."""

    NONE = 0
    STARTING = 1
    IN_PROGRESS = 2
    COMMITTED = 3
    COMMITTED_EMPTY = 4
    ABORTED = 5


class Transaction:
    """One transaction: its options, number, state, and the request that pins its socket."""

    __slots__ = ("opts", "txn_number", "state", "_owner", "_client")

    def __init__(self, client: MongoClient, opts: TransactionOptions, txn_number: int) -> None:
        self.opts = opts
        self.txn_number = txn_number
        self.state = TxnState.STARTING
        self._client = client
        # The pin is a request of the thread or greenlet that started the
        # transaction; a thread/greenlet-local marks which one that is, so
        # that only it ends that request.
        client.start_request()
        self._owner: Any = client.identity.local_base()()
        self._owner.mine = True

    @property
    def active(self) -> bool:
        """Started and not yet committed or aborted."""
        return self.state is TxnState.STARTING or self.state is TxnState.IN_PROGRESS

    def release(self, session: ClientSession) -> None:
        """End the pinning request level (once), if the caller is its owner."""
        owner = self._owner
        if owner is not None and getattr(owner, "mine", False):
            self._owner = None
            self._client.end_request()

    def __repr__(self) -> str:
        return "<Transaction %d %s>" % (self.txn_number, self.state.name)


def _resolve(
    session: ClientSession, read_concern: Any, write_concern: Any, read_preference: Any, max_commit_time_ms: int | None
) -> TransactionOptions:
    """The transaction's options: the arguments, else the session's defaults, else the client's."""
    default = session.options.default_transaction_options or TransactionOptions()
    client = session.client
    rc = read_concern or default.read_concern
    wc = write_concern or default.write_concern or client.write_concern
    rp = read_preference or default.read_preference or ReadPreference.PRIMARY
    mct = max_commit_time_ms if max_commit_time_ms is not None else default.max_commit_time_ms
    if isinstance(wc, WriteConcern) and not wc.acknowledged:
        raise ConfigurationError("transactions do not support unacknowledged write concern: %r" % (wc,))
    # TransactionOptions checks the types (TypeError) as PyMongo does.
    return TransactionOptions(rc, wc, rp, mct)


def start_transaction(
    session: ClientSession, read_concern: Any, write_concern: Any, read_preference: Any, max_commit_time_ms: int | None
) -> _TransactionContext:
    """Begin a transaction on ``session`` (see :meth:`ClientSession.start_transaction`)."""
    if session.options.snapshot:
        raise InvalidOperation("Transactions are not supported in snapshot sessions")
    if session.in_transaction:
        raise InvalidOperation("Transaction already in progress")
    opts = _resolve(session, read_concern, write_concern, read_preference, max_commit_time_ms)
    server_session = session._get_server_session()
    old = session._transaction
    if old is not None:
        old.release(session)
    session._transaction = Transaction(session.client, opts, server_session.next_txn_number())
    return _TransactionContext(session)


class _TransactionContext:
    """``with session.start_transaction():`` commits on success and aborts on an exception."""

    __slots__ = ("_session",)

    def __init__(self, session: ClientSession) -> None:
        self._session = session

    def __enter__(self) -> _TransactionContext:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        session = self._session
        if session.in_transaction:
            if exc_type is None:
                session.commit_transaction()
            else:
                session.abort_transaction()


def _add_label(exc: PyMongoError, label: str) -> None:
    """Add a driver error label (PyMongoError keeps them in a set; has_error_label reads it)."""
    add = getattr(exc, "_add_error_label", None)
    if add is not None:
        add(label)
    else:  # pragma: no cover - a PyMongo without the helper
        exc._error_labels = set(getattr(exc, "_error_labels", ())) | {label}


def run_in_transaction(
    client: MongoClient,
    session: ClientSession,
    dbname: str,
    cmd: dict[str, Any],
    codec_options: CodecOptions[Any],
    sequences: Sequence[bytes],
    check: bool,
    address: tuple[str, int] | None,
    on_server: Any,
) -> dict[str, Any]:
    """Send one command of the transaction: its fields, one attempt (no retries inside a transaction).

    The operation's own read preference does not apply: a transaction reads
    from the primary (its socket is the request's, see the module docstring).
    """
    txn = session._transaction
    assert txn is not None
    if txn.opts.read_preference.mode != ReadPreference.PRIMARY.mode:
        raise InvalidOperation(
            "read preference in a transaction must be primary, not: %r" % (txn.opts.read_preference,)
        )
    cmd["lsid"] = session._get_server_session().lsid
    cmd["txnNumber"] = Int64(txn.txn_number)
    cmd["autocommit"] = False
    # The collection's or the call's concerns do not apply inside a transaction.
    cmd.pop("writeConcern", None)
    cmd.pop("readConcern", None)
    if txn.state is TxnState.STARTING:
        cmd["startTransaction"] = True
        rc: dict[str, Any] = dict(txn.opts.read_concern.document) if txn.opts.read_concern is not None else {}
        if session.options.causal_consistency and session.operation_time is not None:
            rc["afterClusterTime"] = session.operation_time
        if rc:
            cmd["readConcern"] = rc
        # In progress from the first command sent, whatever its outcome.
        txn.state = TxnState.IN_PROGRESS
    try:
        return client._run(dbname, cmd, codec_options, sequences, check, None, address, on_server, for_write=True)
    except (ConnectionFailure, ServerSelectionTimeoutError) as exc:
        _add_label(exc, TRANSIENT)
        raise


def _finish_command(session: ClientSession, name: str, retry: bool) -> dict[str, Any]:
    """``commitTransaction``/``abortTransaction`` with the transaction's fields and write concern."""
    txn = session._transaction
    assert txn is not None
    cmd: dict[str, Any] = {
        name: 1,
        "lsid": session._get_server_session().lsid,
        "txnNumber": Int64(txn.txn_number),
        "autocommit": False,
    }
    wc: dict[str, Any] = dict(txn.opts.write_concern.document) if txn.opts.write_concern is not None else {}
    if retry and name == "commitTransaction":
        # The specification: a commit run again waits for a majority, so
        # its answer is one that cannot be rolled back.
        wc["w"] = "majority"
        wc.setdefault("wtimeout", 10000)
    if wc:
        cmd["writeConcern"] = wc
    if name == "commitTransaction" and txn.opts.max_commit_time_ms is not None:
        cmd["maxTimeMS"] = txn.opts.max_commit_time_ms
    return cmd


def _run_finish(client: MongoClient, session: ClientSession, cmd: dict[str, Any]) -> dict[str, Any]:
    """Run a commit or abort on the primary, with cluster time gossip; a write concern error raises."""
    if client._topology.sessions_supported:
        ct = client._cluster_time
        sct = session.cluster_time
        if sct is not None and (ct is None or sct["clusterTime"] > ct["clusterTime"]):
            ct = sct
        if ct is not None:
            cmd["$clusterTime"] = ct
    try:
        reply = client._run("admin", cmd, DEFAULT_CODEC_OPTIONS, (), True, None, None, None, for_write=True)
    except OperationFailure as exc:
        if isinstance(exc.details, Mapping):
            session._advance(exc.details)
            client._advance_cluster_time(exc.details.get("$clusterTime"))
        raise
    session._advance(reply)
    client._advance_cluster_time(reply.get("$clusterTime"))
    wce = reply.get("writeConcernError")
    if wce:
        details = dict(wce)
        labels = reply.get("errorLabels")
        if labels:
            details["errorLabels"] = labels
        raise WriteConcernError(wce.get("errmsg", "write concern error"), wce.get("code"), details)
    return reply


def _commit_outcome_unknown(exc: PyMongoError) -> bool:
    """The commit may or may not have happened (the specification's UnknownTransactionCommitResult)."""
    if isinstance(exc, (ConnectionFailure, ServerSelectionTimeoutError)):
        return True
    if isinstance(exc, WriteConcernError):
        return exc.code not in _DEFINITE_WCE
    if isinstance(exc, OperationFailure):
        return exc.code == _MAX_TIME_EXPIRED or is_retryable_write_error(exc)
    return False


def commit_transaction(session: ClientSession) -> None:
    """Commit (see :meth:`ClientSession.commit_transaction`)."""
    txn = session._transaction
    state = txn.state if txn is not None else TxnState.NONE
    if txn is None or state is TxnState.NONE:
        raise InvalidOperation("No transaction started")
    if state is TxnState.ABORTED:
        raise InvalidOperation("Cannot call commitTransaction after calling abortTransaction")
    if state is TxnState.STARTING or state is TxnState.COMMITTED_EMPTY:
        # Nothing was sent: nothing to commit on the server.
        txn.state = TxnState.COMMITTED_EMPTY
        txn.release(session)
        return
    retry = state is TxnState.COMMITTED  # a commit called again
    client = session.client
    try:
        try:
            _run_finish(client, session, _finish_command(session, "commitTransaction", retry))
        except PyMongoError as exc:
            if not is_retryable_write_error(exc):
                raise
            client._reselect(exc, None, True)
            _run_finish(client, session, _finish_command(session, "commitTransaction", True))
    except PyMongoError as exc:
        if _commit_outcome_unknown(exc):
            # A network error, a stepdown, a write concern timeout: the
            # transaction may have committed.  Not transient any more.
            if exc.has_error_label(TRANSIENT) and isinstance(exc, ConnectionFailure):
                getattr(exc, "_remove_error_label", lambda _label: None)(TRANSIENT)
            _add_label(exc, UNKNOWN_COMMIT)
        raise
    finally:
        txn.state = TxnState.COMMITTED
        txn.release(session)


def abort_transaction(session: ClientSession) -> None:
    """Abort (see :meth:`ClientSession.abort_transaction`); server errors are ignored."""
    txn = session._transaction
    state = txn.state if txn is not None else TxnState.NONE
    if txn is None or state is TxnState.NONE:
        raise InvalidOperation("No transaction started")
    if state is TxnState.ABORTED:
        raise InvalidOperation("Cannot call abortTransaction twice")
    if state is TxnState.COMMITTED or state is TxnState.COMMITTED_EMPTY:
        raise InvalidOperation("Cannot call abortTransaction after calling commitTransaction")
    client = session.client
    try:
        if state is TxnState.IN_PROGRESS:
            try:
                _run_finish(client, session, _finish_command(session, "abortTransaction", False))
            except PyMongoError as exc:
                if is_retryable_write_error(exc):
                    try:
                        client._reselect(exc, None, True)
                        _run_finish(client, session, _finish_command(session, "abortTransaction", False))
                    except PyMongoError:
                        pass
    except PyMongoError:
        pass  # the specification: abort is best effort; the server ends it anyway
    finally:
        txn.state = TxnState.ABORTED
        txn.release(session)


def with_transaction(
    session: ClientSession,
    callback: Callable[[ClientSession], Any],
    read_concern: Any,
    write_concern: Any,
    read_preference: Any,
    max_commit_time_ms: int | None,
) -> Any:
    """The Convenient API's loop (see :meth:`ClientSession.with_transaction`)."""
    start = time.monotonic()
    attempt = 0
    last: PyMongoError | None = None

    def within_limit() -> bool:
        return time.monotonic() - start < WITH_TRANSACTION_TIMEOUT

    while True:
        if last is not None:
            delay = random.random() * min(_BACKOFF_INITIAL * 1.5**attempt, _BACKOFF_MAX)
            if time.monotonic() - start + delay >= WITH_TRANSACTION_TIMEOUT:
                raise last
            session.client.identity.sleep(delay)
        attempt += 1
        session.start_transaction(read_concern, write_concern, read_preference, max_commit_time_ms)
        try:
            ret = callback(session)
        except BaseException as exc:
            # Any exit, GreenletExit and KeyboardInterrupt included, aborts.
            if session.in_transaction:
                session.abort_transaction()
            if isinstance(exc, PyMongoError) and exc.has_error_label(TRANSIENT) and within_limit():
                last = exc
                continue
            raise
        if not session.in_transaction:
            return ret  # the callback committed or aborted itself
        while True:
            try:
                session.commit_transaction()
            except PyMongoError as exc:
                if (
                    exc.has_error_label(UNKNOWN_COMMIT)
                    and within_limit()
                    and not (isinstance(exc, OperationFailure) and exc.code == _MAX_TIME_EXPIRED)
                ):
                    continue
                if exc.has_error_label(TRANSIENT) and within_limit():
                    last = exc
                    break
                raise
            except BaseException:
                if session.in_transaction:
                    session.abort_transaction()
                raise
            return ret
