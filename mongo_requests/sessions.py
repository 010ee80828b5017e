"""Server sessions: the ``lsid`` and ``txnNumber`` that make writes retryable.

A retryable write carries a logical session id (``lsid``) and a transaction
number (``txnNumber``) so that the server recognises the retry of a write
it already applied and answers it without applying it twice.  Following the
MongoDB *Driver Sessions* specification, server sessions are pooled: one is
taken for an operation and given back afterwards, the most recently used
first, and a session close to its server-side expiry
(``logicalSessionTimeoutMinutes``) is dropped rather than reused.  A session
that saw a network error is dropped too (the server may still hold it busy).

mongo_requests uses sessions only where they buy something: on acknowledged
writes that may be retried.  Reads, ``w=0`` writes and every operation on a
standalone carry no ``lsid``, which keeps the hot path as cheap as before.

The pool needs no lock: ``collections.deque``'s ``append``/``popleft`` are
atomic, and a race can only make two callers create two fresh sessions.
"""
from __future__ import annotations

import collections
import os
import time
import uuid
from typing import Any

from bson.binary import Binary

__all__ = ["ServerSession", "SessionPool"]

# The specification's margin: a session with less than a minute left on the
# server is not used again, since an operation might outlive it.
_EXPIRY_MARGIN = 60.0


class ServerSession:
    """One logical session: its ``lsid`` document and its next ``txnNumber``."""

    __slots__ = ("lsid", "last_use", "txn_number", "dirty", "pid")

    def __init__(self) -> None:
        self.lsid = {"id": Binary(uuid.uuid4().bytes, 4)}
        self.last_use = time.monotonic()
        self.txn_number = 0
        self.dirty = False
        self.pid = os.getpid()

    def next_txn_number(self) -> int:
        """Advance and return the transaction number for a new retryable write."""
        self.txn_number += 1
        return self.txn_number

    def timed_out(self, timeout_minutes: int | None, now: float | None = None) -> bool:
        """True if the server may forget it within a minute."""
        if timeout_minutes is None:
            return False
        now = time.monotonic() if now is None else now
        return now - self.last_use > timeout_minutes * 60.0 - _EXPIRY_MARGIN

    def __repr__(self) -> str:
        return "<ServerSession %s txn=%d>" % (self.lsid["id"].hex()[:8], self.txn_number)


class SessionPool:
    """Pooled :class:`ServerSession` objects, most recently used first."""

    def __init__(self) -> None:
        self._sessions: collections.deque[ServerSession] = collections.deque()
        self._pid = os.getpid()
        self.created = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def checkout(self, timeout_minutes: int | None) -> ServerSession:
        """A session with at least a minute to live: a pooled one, or a new one."""
        self._after_fork()
        now = time.monotonic()
        while True:
            try:
                session = self._sessions.popleft()
            except IndexError:
                break
            if not session.timed_out(timeout_minutes, now):
                return session
        self.created += 1
        return ServerSession()

    def checkin(self, session: ServerSession, timeout_minutes: int | None) -> None:
        """Give ``session`` back; it is dropped if dirty, expiring, or from before a fork."""
        self._after_fork()
        now = time.monotonic()
        session.last_use = now
        # Expired sessions collect at the old end: drop them from there.
        while self._sessions and self._sessions[-1].timed_out(timeout_minutes, now):
            try:
                self._sessions.pop()
            except IndexError:
                break
        if session.dirty or session.pid != self._pid or session.timed_out(timeout_minutes, now):
            return
        self._sessions.appendleft(session)

    def drain(self) -> list[dict[str, Any]]:
        """Remove every pooled session and return their ``lsid`` documents (for ``endSessions``)."""
        ids = []
        while True:
            try:
                ids.append(self._sessions.pop().lsid)
            except IndexError:
                return ids

    def _after_fork(self) -> None:
        # A forked child must not reuse its parent's sessions: both would use
        # the same txnNumbers.
        pid = os.getpid()
        if pid != self._pid:
            self._sessions.clear()
            self._pid = pid
