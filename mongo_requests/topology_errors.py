"""What an error means for a server: :meth:`TopologyErrors.handle_error`, the one place that interprets errors.

:class:`~mongo_requests.topology.Topology` inherits :class:`TopologyErrors`.
A network error marks the server Unknown and resets its pool; "not
writable primary", "node is recovering" and shutdown errors (by code, or by
message when there is none) mark it Unknown and make the next selection
re-check, and shutdown also resets the pool; a timeout on an established
socket, a full pool, or an ordinary command error changes nothing.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .errors import AutoReconnect, NetworkTimeout, NotPrimaryError, OperationFailure
from .sdam import ServerDescription, apply, is_shutdown, is_state_change

if TYPE_CHECKING:
    from .events import SdamEvents
    from .sdam import Address, TopologyDescription
    from .socket_info import SocketInfo
    from .topology import Server

__all__ = ["TopologyErrors"]


class TopologyErrors:
    """``handle_error`` and ``mark_unknown`` for :class:`~mongo_requests.topology.Topology`."""

    _td: TopologyDescription
    _servers: dict[Address, Server]
    _lock: Any  # identity.real_lock()
    _errors: list[ServerDescription]
    _next_scan: float
    _sdam: SdamEvents | None

    def _install(self, td: TopologyDescription) -> None:  # pragma: no cover - Topology's
        raise NotImplementedError

    def _publish_changes(self) -> None:  # pragma: no cover - Topology's
        raise NotImplementedError

    def handle_error(self, server: Server, error: BaseException, sock: SocketInfo | None = None) -> None:
        """Decide what ``error`` means for ``server``, and have its pool act on it.

        The one error handler.  Every failure of a connect, a handshake or an
        operation is reported here; nothing else interprets errors.

        :param server: the server the operation went to.
        :param error: what was raised.
        :param sock: the socket it was raised on, or None when there was no
            socket yet (a connect or handshake failure).

        * An error from a socket of an older generation is stale: the pool
          was reset since that socket was made, so it changes nothing.
        * "Not writable primary" and "node is recovering" (by code, or by
          message without one) mark the server Unknown and the topology
          stale; shutdown codes also reset the pool.  Other sockets stay: a
          stepped-down primary keeps its connections since MongoDB 4.2.
        * A network error (:class:`~pymongo.errors.AutoReconnect`: refused,
          reset, closed by the server) marks the server Unknown and resets
          its pool.  A timeout does the same only while connecting; on an
          established socket it says the server is slow, not gone, and only
          that socket (which closed itself) is lost.
        * Anything else (a wait-queue timeout, a command error, a malformed
          reply, a kill mid-message) leaves the server and the pool alone.

        A pool reset never takes a healthy socket from a request (see
        :mod:`mongo_requests.pool`).
        """
        pool = server.pool
        if sock is not None and sock.generation != pool.generation:
            return
        if isinstance(error, (NotPrimaryError, OperationFailure)):
            details = error.details if isinstance(error.details, dict) else {}
            code = details.get("code")
            if is_state_change(code, str(details.get("errmsg", error))):
                version = details.get("topologyVersion")
                current = self._td.servers.get(server.address)
                if current is not None and _error_is_stale(current.topology_version, version):
                    return  # we already know a state as new as the error's
                self.mark_unknown(server, error, version)
                if is_shutdown(code):
                    pool.reset("%s on %s" % (type(error).__name__, sock if sock is not None else "connect"))
                return
        if not isinstance(error, AutoReconnect) or isinstance(error, NotPrimaryError):
            return
        if sock is not None and isinstance(error, NetworkTimeout):
            return
        self.mark_unknown(server, error)
        pool.reset("%s on %s" % (type(error).__name__, sock if sock is not None else "connect"))

    def mark_unknown(self, server: Server, error: BaseException, topology_version: Any = None) -> None:
        """The server must prove itself again before use; the next selection re-checks.

        :param topology_version: the ``topologyVersion`` of the error reply: a
            later ``hello`` from before the state change it reports is ignored.
        """
        self._next_scan = 0.0
        if self._servers.get(server.address) is server:
            sd = ServerDescription.unknown(server.address, error, time.monotonic(), topology_version)
            with self._lock:
                self._errors.append(sd)
                self._install(apply(self._td, sd))
            if self._sdam is not None:
                self._publish_changes()
        server.known = False
        server.last_error = error


def _error_is_stale(current: Any, version: Any) -> bool:
    """An error whose ``topologyVersion`` is not newer than what the server already told us."""
    if current is None or version is None or current.get("processId") != version.get("processId"):
        return False
    return bool(version.get("counter", 0) <= current.get("counter", 0))
