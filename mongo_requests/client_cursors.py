"""The client's queue of server cursors to kill.

:class:`~mongo_requests.MongoClient` inherits :class:`ClientCursors`.  A
cursor's finalizer queues its id (:meth:`~ClientCursors._queue_kill`) without
I/O; the client sends the queued ``killCursors`` on the next socket it checks
out for that server (``MongoClient._kill_before``), or acknowledged from
``close``.  ``Cursor.close`` kills its cursor at once instead.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .socket_info import SocketInfo

__all__ = ["ClientCursors"]


def _kill_cursors_command(ns: str, cursor_ids: list[int]) -> tuple[str, dict[str, Any]]:
    """The one builder of killCursors: ``(database name, command)`` for cursors of ``ns``."""
    db, _, coll = ns.partition(".")
    return db, {"killCursors": coll, "cursors": cursor_ids}


class ClientCursors:
    """The kill-cursor half of :class:`~mongo_requests.MongoClient`; needs ``_kill_queue`` and ``_command``."""

    _kill_queue: collections.deque[tuple[str, int, Any]]
    _cursor_sessions: dict[int, Any]

    if TYPE_CHECKING:

        def _command(self, dbname: str, cmd: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]: ...

        def _forget_cursor(self, cursor_id: int) -> None: ...

    def _queue_kill(self, ns: str, cursor_id: int, address: tuple[str, int] | None = None) -> None:
        """Called from cursor finalizers: kill the cursor on the next operation on its server.

        A finalizer can run inside the garbage collector, anywhere, so it must
        not do network I/O or take locks; the next operation on this client
        (or :meth:`close`) sends the queued killCursors.
        """
        self._kill_queue.append((ns, cursor_id, address))
        if self._cursor_sessions:
            self._forget_cursor(cursor_id)

    def _kill_cursors(self, sock: SocketInfo, acknowledged: bool = False) -> None:
        """Send the queued killCursors of ``sock``'s server on ``sock``.

        Unacknowledged before an operation: the server applies one socket's
        messages in order, so they are done before the operation's reply.
        Acknowledged from :meth:`close`, which has no operation after them.
        Kills for another member of a replica set wait for an operation there.
        """
        by_ns: dict[str, list[int]] = {}
        others = []
        while self._kill_queue:
            try:
                ns, cid, address = self._kill_queue.popleft()
            except IndexError:
                break
            if address is None or address == sock.address:
                by_ns.setdefault(ns, []).append(cid)
            else:
                others.append((ns, cid, address))
        self._kill_queue.extend(others)
        for ns, ids in by_ns.items():
            db, cmd = _kill_cursors_command(ns, ids)
            if acknowledged:
                sock.command(db, cmd, check=False)
            else:
                sock.send_command(db, cmd)

    def _kill_cursor_now(self, ns: str, cursor_id: int, address: tuple[str, int] | None = None) -> None:
        """Kill one server cursor at once (``Cursor.close``), on its server; errors are the caller's."""
        db, cmd = _kill_cursors_command(ns, [cursor_id])
        self._command(db, cmd, check=False, address=address)
