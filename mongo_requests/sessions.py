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

When the client closes, :func:`end_sessions` tells the server that the pooled
sessions will not be used again (``endSessions``, as the specification asks),
so that it frees them now rather than after ``logicalSessionTimeoutMinutes``.
It is an errand that cannot hang ``close()``: one short deadline for all of
it, and every error ignored.  A forked child never ends its parent's sessions.
"""

from __future__ import annotations

import collections
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

from bson.binary import Binary
from pymongo.errors import PyMongoError
from pymongo.read_preferences import PrimaryPreferred

if TYPE_CHECKING:
    from .topology import Topology

__all__ = ["ServerSession", "SessionPool", "end_sessions"]

# The specification's largest endSessions command.
END_SESSIONS_BATCH = 10000

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
        """Remove every pooled session and return their ``lsid`` documents (for ``endSessions``).

        In a forked child, the parent's sessions are dropped, not returned:
        ending them would end them for the parent too.
        """
        self._after_fork()
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


def end_sessions(topology: Topology, ids: list[dict[str, Any]], timeout: float, listeners: Any = None) -> None:
    """Send ``endSessions`` for ``ids``, in batches, to the primary or else a secondary; ignore every error.

    The first failed batch ends the errand: the server forgets the rest by itself.

    Everything (selection, connect, every batch) ends within ``timeout``
    seconds: a frozen or unreachable set delays ``close()`` by that much at
    most.  The socket used is closed afterwards, since its timeout was
    changed for this errand.

    :param topology: the closing client's topology (not closed yet).
    :param ids: ``lsid`` documents from :meth:`SessionPool.drain`.
    :param timeout: seconds for the whole errand.
    :param listeners: the client's command listeners (``monitoring.Listeners``), if any:
        they see ``endSessions`` as PyMongo's do.
    """
    if not ids or topology.closed:
        return
    deadline = time.monotonic() + timeout
    preference = PrimaryPreferred()
    try:
        server = topology.select_server(timeout, preference)
        sock = server.pool.checkout_within(max(deadline - time.monotonic(), 0.001))
    except PyMongoError:
        return  # nothing reachable in time: the server forgets the sessions by itself
    try:
        for start in range(0, len(ids), END_SESSIONS_BATCH):
            cmd: dict[str, Any] = {"endSessions": ids[start : start + END_SESSIONS_BATCH]}
            document = topology.read_preference_document(server, preference)
            if document is not None:
                cmd["$readPreference"] = document
            sock.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            # Checked, so that a listener sees a failure as a failure; the
            # error is dropped below (and later batches are not sent).
            if listeners is not None:
                listeners.command(sock, "admin", cmd)
            else:
                sock.command("admin", cmd)
    except PyMongoError:
        pass
    finally:
        sock.close()
        server.pool.checkin(sock)
