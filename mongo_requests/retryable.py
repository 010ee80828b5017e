"""Retryable writes for :class:`~mongo_requests.client.MongoClient`: sessions, transaction numbers, one retry.

Kept apart from client.py (a mixin the client inherits) so that each module
stays small; the rules of what may be retried are in :mod:`mongo_requests.retry`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bson.codec_options import CodecOptions
from bson.int64 import Int64

from .client_session import current_session
from .errors import ConnectionFailure, NotPrimaryError, OperationFailure, PyMongoError, ServerSelectionTimeoutError
from .retry import is_retryable_write_error, is_retryable_write_reply

if TYPE_CHECKING:
    from .sessions import SessionPool
    from .topology import Topology

__all__ = ["RetryableWrites"]


class RetryableWrites:
    """The retry half of the client; needs ``_topology``, ``_sessions`` and ``_run``."""

    _topology: Topology
    _sessions: SessionPool
    _session_hooks: bool

    def _run(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # pragma: no cover - the client's
        raise NotImplementedError

    def _reselect(self, first: PyMongoError, read_preference: Any, for_write: bool) -> None:
        """Select a server for the one retry, or raise ``first`` if none can be.

        A lone server gets one immediate attempt (only the socket failed, or
        the server is down: then fail now, not after serverSelectionTimeoutMS);
        a replica set gets the selection timeout, time for an election.
        """
        try:
            self._topology.select_server(None, read_preference, for_write, self._topology.single)
        except (ServerSelectionTimeoutError, ConnectionFailure):
            raise first from None

    def _retryable_write(
        self,
        dbname: str,
        cmd: dict[str, Any],
        codec_options: CodecOptions[Any],
        sequences: Sequence[bytes],
        check: bool,
    ) -> dict[str, Any]:
        """Run a write with a server session's ``lsid`` and a new ``txnNumber``; retry it once if it may be.

        The retry carries the same ``lsid`` and ``txnNumber``, so a server
        that applied the first attempt answers the retry without applying it
        again.
        """
        timeout_minutes = self._topology.description.logical_session_timeout_minutes
        # An explicit session (client_session.py) lends its own server session.
        explicit = current_session() if self._session_hooks else None
        session = explicit._get_server_session() if explicit is not None else self._sessions.checkout(timeout_minutes)
        cmd["lsid"] = session.lsid
        cmd["txnNumber"] = Int64(session.next_txn_number())
        reply: dict[str, Any] | None = None
        try:
            try:
                reply = self._run(dbname, cmd, codec_options, sequences, check, for_write=True)
                if not is_retryable_write_reply(reply):
                    return reply
                # ok: 1 with a retryable write concern error: the caller raises
                # it from the reply if the retry cannot happen.
                first: PyMongoError = OperationFailure("retryable write concern error", None, reply)
            except PyMongoError as exc:
                if isinstance(exc, ConnectionFailure) and not isinstance(exc, NotPrimaryError):
                    session.dirty = True  # the server may still be running it
                if not is_retryable_write_error(exc):
                    raise
                first = exc
            try:
                if not self._topology.sessions_supported:
                    raise first
                self._reselect(first, None, True)
                return self._run(dbname, cmd, codec_options, sequences, check, for_write=True)
            except PyMongoError as exc:
                if exc is first and reply is not None:
                    return reply
                raise
        finally:
            if explicit is None:
                self._sessions.checkin(session, timeout_minutes)
