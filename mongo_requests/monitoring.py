"""Command monitoring with :mod:`pymongo.monitoring`'s listeners and events.

A client built with ``event_listeners=[...]``, or created after listeners
were registered with :func:`pymongo.monitoring.register`, publishes
PyMongo's own :class:`~pymongo.monitoring.CommandStartedEvent`,
:class:`~pymongo.monitoring.CommandSucceededEvent` and
:class:`~pymongo.monitoring.CommandFailedEvent` for every command it sends
(``w=0`` writes included, with the reply ``{"ok": 1}`` as PyMongo gives),
so an APM instrumentation written for PyMongo sees mongo_requests too.
PyMongo's event classes redact sensitive commands (``saslStart``,
``createUser``, a ``hello`` with ``speculativeAuthenticate``...) themselves,
as the command monitoring specification says.

With no command listener the client keeps ``_listeners = None`` and its hot
path pays one attribute check; the monitored path lives here.

Connection pool (CMAP), server, topology and heartbeat listeners, in
``event_listeners`` or registered, are served by :mod:`mongo_requests.events`.
"""

from __future__ import annotations

import datetime
import struct
import sys
import time
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import bson
from bson.codec_options import DEFAULT_CODEC_OPTIONS, CodecOptions
from pymongo import monitoring as _pm
from pymongo.errors import OperationFailure

from . import wire
from .errors import check_command

if TYPE_CHECKING:
    from .socket_info import SocketInfo

__all__ = ["Listeners", "global_command_listeners"]

_SEQ_HEADER = struct.Struct("<Bi")
_UNACK_REPLY = {"ok": 1}
_OTHER_LISTENERS = (_pm.ConnectionPoolListener, _pm.ServerListener, _pm.ServerHeartbeatListener, _pm.TopologyListener)


def global_command_listeners() -> list[Any]:
    """The command listeners registered with :func:`pymongo.monitoring.register`.

    PyMongo keeps them in ``pymongo.monitoring._LISTENERS`` and has no public
    getter.  Should that private attribute go away, the fallback is none:
    ``event_listeners=[...]`` (public) still works.
    """
    registry = getattr(_pm, "_LISTENERS", None)
    return list(getattr(registry, "command_listeners", None) or ())


def _handle_listener_error() -> None:
    """A listener's exception never breaks the operation: print it to stderr, as PyMongo does."""
    if sys.stderr:
        try:
            traceback.print_exc(file=sys.stderr)
        except OSError:
            pass


def _failure_document(exc: BaseException) -> Any:
    """What CommandFailedEvent.failure holds: the server's reply for an OperationFailure, else the error."""
    if isinstance(exc, OperationFailure) and exc.details is not None:
        return exc.details
    return {"errmsg": str(exc), "errtype": type(exc).__name__}


def _event_command(cmd: dict[str, Any], sequences: Sequence[bytes], codec_options: CodecOptions[Any]) -> Any:
    """The command as PyMongo shows it: ``$db`` included, document sequences as arrays."""
    if not sequences:
        return dict(cmd)
    shown = dict(cmd)
    for section in sequences:
        _, size = _SEQ_HEADER.unpack_from(section, 0)
        end = section.index(b"\x00", 5)
        name = bytes(section[5:end]).decode("utf-8")
        shown[name] = bson.decode_all(bytes(section[end + 1 : 1 + size]), codec_options)
    return shown


class Listeners:
    """The command listeners of one client, and the monitored twins of ``SocketInfo.command``/``send_command``."""

    __slots__ = ("command_listeners",)

    def __init__(self, command_listeners: Sequence[Any]) -> None:
        self.command_listeners = tuple(command_listeners)

    @classmethod
    def build(cls, given: Any) -> Listeners | None:
        """Validate ``event_listeners`` and add the global ones; None when there is no command listener.

        Listeners of the other kinds are accepted here and served by :mod:`mongo_requests.events`.
        """
        given = [] if given is None else given
        if not isinstance(given, (list, tuple)):
            raise TypeError("event_listeners must be a list or tuple, not %s" % (type(given).__name__,))
        command = []
        for listener in given:
            if isinstance(listener, _pm.CommandListener):
                command.append(listener)
            elif not isinstance(listener, _OTHER_LISTENERS):
                raise TypeError(
                    "event_listeners must hold pymongo.monitoring listeners (CommandListener, ConnectionPoolListener, "
                    "ServerListener, TopologyListener, ServerHeartbeatListener), not %s" % (type(listener).__name__,)
                )
        for listener in global_command_listeners():
            if listener not in command:
                command.append(listener)
        return cls(command) if command else None

    # -- publishing ------------------------------------------------------------
    def _started(self, sock: SocketInfo, dbname: str, shown: Any, request_id: int) -> None:
        event = _pm.CommandStartedEvent(
            shown, dbname, request_id, sock.address, request_id, server_connection_id=sock.server_connection_id
        )
        for listener in self.command_listeners:
            try:
                listener.started(event)
            except Exception:
                _handle_listener_error()

    def _succeeded(self, sock: SocketInfo, dbname: str, name: str, request_id: int, start: float, reply: Any) -> None:
        event = _pm.CommandSucceededEvent(
            datetime.timedelta(seconds=time.perf_counter() - start),
            reply,
            name,
            request_id,
            sock.address,
            request_id,
            database_name=dbname,
            server_connection_id=sock.server_connection_id,
        )
        for listener in self.command_listeners:
            try:
                listener.succeeded(event)
            except Exception:
                _handle_listener_error()

    def _failed(
        self, sock: SocketInfo, dbname: str, name: str, request_id: int, start: float, exc: BaseException
    ) -> None:
        event = _pm.CommandFailedEvent(
            datetime.timedelta(seconds=time.perf_counter() - start),
            _failure_document(exc),
            name,
            request_id,
            sock.address,
            request_id,
            database_name=dbname,
            server_connection_id=sock.server_connection_id,
        )
        for listener in self.command_listeners:
            try:
                listener.failed(event)
            except Exception:
                _handle_listener_error()

    # -- pipelined writes (mongo_requests.pipeline) ----------------------------
    def started(
        self,
        sock: SocketInfo,
        dbname: str,
        cmd: dict[str, Any],
        sequences: Sequence[bytes],
        codec_options: CodecOptions[Any],
        request_id: int,
    ) -> None:
        """A pipelined command was queued (its reply is read later)."""
        self._started(sock, dbname, _event_command(cmd, sequences, codec_options), request_id)

    def finished(self, sock: SocketInfo, dbname: str, name: str, request_id: int, start: float, reply: Any) -> None:
        """A pipelined command's reply was read: succeeded, or failed for ``ok: 0``."""
        if reply.get("ok") == 1:
            self._succeeded(sock, dbname, name, request_id, start, reply)
            return
        try:
            check_command(reply, sock.max_wire_version)
        except OperationFailure as exc:
            self._failed(sock, dbname, name, request_id, start, exc)

    def lost(self, sock: SocketInfo, dbname: str, name: str, request_id: int, start: float, exc: BaseException) -> None:
        """A pipelined command's reply will never be read (the connection failed)."""
        self._failed(sock, dbname, name, request_id, start, exc)

    # -- the monitored commands ------------------------------------------------
    def command(
        self,
        sock: SocketInfo,
        dbname: str,
        cmd: dict[str, Any],
        codec_options: CodecOptions[Any] = DEFAULT_CODEC_OPTIONS,
        sequences: Sequence[bytes] = (),
        check: bool = True,
    ) -> dict[str, Any]:
        """``sock.command(...)``, with started and succeeded-or-failed events around the round trip."""
        rid = wire.next_request_id()
        msg = wire.pack_msg(rid, sock._body(dbname, cmd, codec_options), 0, sequences)
        name = next(iter(cmd))
        self._started(sock, dbname, _event_command(cmd, sequences, codec_options), rid)
        start = time.perf_counter()
        try:
            reply = sock.roundtrip(msg, rid, codec_options)
            if check and reply.get("ok") != 1:
                check_command(reply, sock.max_wire_version)
        except BaseException as exc:
            self._failed(sock, dbname, name, rid, start, exc)
            raise
        self._succeeded(sock, dbname, name, rid, start, reply)
        return reply

    def send_command(
        self,
        sock: SocketInfo,
        dbname: str,
        cmd: dict[str, Any],
        codec_options: CodecOptions[Any] = DEFAULT_CODEC_OPTIONS,
        sequences: Sequence[bytes] = (),
    ) -> None:
        """``sock.send_command(...)`` (``w=0``): started, then succeeded with ``{"ok": 1}`` once sent."""
        rid = wire.next_request_id()
        msg = wire.pack_msg(rid, sock._body(dbname, cmd, codec_options), wire.MORE_TO_COME, sequences)
        name = next(iter(cmd))
        self._started(sock, dbname, _event_command(cmd, sequences, codec_options), rid)
        start = time.perf_counter()
        try:
            if sock.pipeline is not None:
                # A request on a mongos: the socket's pipeline sends it acknowledged.
                sock.send_command(dbname, cmd, codec_options, sequences)
            else:
                sock.send(msg)
        except BaseException as exc:
            self._failed(sock, dbname, name, rid, start, exc)
            raise
        self._succeeded(sock, dbname, name, rid, start, dict(_UNACK_REPLY))
