"""One connection to one server: connect, handshake, send, receive, close.

:class:`SocketInfo` is deliberately dumb about concurrency: exactly one
caller uses it at a time, and the pool guarantees that.  What it does own is
the state of the byte stream.  If anything interrupts it between the first
byte sent and the last byte read (a network error, a timeout, a
``GreenletExit`` or ``gevent.Timeout`` landing mid-message), the protocol
state is unknown, so the socket closes itself and is never handed out again.
"""

from __future__ import annotations

import platform
import socket as _stdsocket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import bson
from bson.codec_options import DEFAULT_CODEC_OPTIONS, CodecOptions

from . import precoded, wire
from ._version import __version__
from .errors import (
    AutoReconnect,
    ConfigurationError,
    DocumentTooLarge,
    NetworkTimeout,
    ProtocolError,
    check_command,
)

__all__ = ["SocketInfo", "MIN_WIRE_VERSION", "client_metadata"]

# bson's C encoder, called without bson.encode's Python wrapper (which only
# re-checks arguments we always pass correctly): this runs once per command.
_encode = getattr(bson, "_dict_to_bson", None) or (lambda doc, check_keys, opts: bson.encode(doc, check_keys, opts))

_ids = wire._ids
_pack_prefix = wire._MSG_PREFIX.pack
_unpack_header = wire.HEADER.unpack_from
_MAX_ID = wire._MAX_ID
# OP_MSG arrived with MongoDB 3.6, wire version 6.
MIN_WIRE_VERSION = 6
# Commands may exceed maxBsonObjectSize by this much (the server allows it for
# the command's own fields around a maximum-size document).
_COMMAND_OVERHEAD = 16 * 1024
_DEFAULT_BUF = 64 * 1024
# A reply too big for a socket's own buffer (a full cursor batch) is read into
# a buffer of its own.  Once its reply is decoded, that buffer is kept, one for
# the whole process, for the next big reply of any socket: allocating and
# freeing one per reply made the allocator give the memory back to the kernel
# and fault it in again, page by page (a find of 10,000 small documents as raw
# documents took 440 page faults, 0.85 ms of system time).  Sizes are rounded
# up to _DEFAULT_BUF, so that replies of about the same size share it; at most
# _SPARE_MAX bytes are kept (a full 16 MiB batch and its envelope).
_SPARE: list[bytearray] = []
_SPARE_MAX = 16 * 1024 * 1024 + _DEFAULT_BUF


def _big_buffer(length: int) -> bytearray:
    """A buffer of at least ``length`` bytes for one big reply: the spare one if it is big enough."""
    try:
        buf = _SPARE.pop()
    except IndexError:
        buf = None
    if buf is None or len(buf) < length:
        buf = bytearray(-(-length // _DEFAULT_BUF) * _DEFAULT_BUF)
    return buf


def _spare(buf: bytearray) -> None:
    """Keep ``buf`` for the next big reply (its reply is decoded: nothing reads it any more)."""
    if len(buf) <= _SPARE_MAX:
        _SPARE[:] = (buf,)  # one at most, even when threads race here


# Limits a hello may report.  Real servers say 16 MiB, 48 MB and 100,000; the
# bounds only keep a hostile or broken server from making us loop for ever
# (a batch size of 0) or allocate gigabytes (a huge message size).
_MAX_BSON_RANGE = (1024, 64 * 1024 * 1024)
_MAX_MESSAGE_CEILING = 256 * 1024 * 1024
_MAX_BATCH_RANGE = (1, 10_000_000)


def client_metadata(appname: str | None = None) -> dict[str, Any]:
    """The ``client`` document sent in the handshake (server logs show it)."""
    doc: dict[str, Any] = {
        "driver": {"name": "mongo_requests", "version": __version__},
        "os": {
            "type": platform.system() or "unknown",
            "name": platform.system() or "unknown",
            "architecture": platform.machine() or "unknown",
            "version": platform.release() or "unknown",
        },
        "platform": "%s %s" % (platform.python_implementation(), platform.python_version()),
    }
    if appname:
        doc["application"] = {"name": appname}
    return doc


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _limit(hello: Mapping[str, Any], name: str, default: int, bounds: tuple[int, int], address: tuple[str, int]) -> int:
    """A size limit from a hello: absent means the default; anything but an int in bounds is refused."""
    value = hello.get(name, default)
    if not _is_int(value) or not bounds[0] <= value <= bounds[1]:
        raise ProtocolError(
            "Server at %s:%d sent a hello with %s=%r; expected an integer from %d to %d"
            % (address[0], address[1], name, value, bounds[0], bounds[1])
        )
    return int(value)


def _too_large(size: int, max_bson_size: int) -> DocumentTooLarge:
    return DocumentTooLarge(
        "command document is %d bytes, over the server's limit of %d" % (size, max_bson_size + _COMMAND_OVERHEAD)
    )


class SocketInfo:
    """A connected, handshaken socket to one MongoDB server.

    :param sock: a connected socket (stdlib or ``gevent.socket``).
    :param address: ``(host, port)`` of the server.
    :param generation: the pool generation it was born in.
    """

    __slots__ = (
        "sock",
        "address",
        "generation",
        "closed",
        "last_checkin",
        "request",
        "hello",
        "max_wire_version",
        "max_bson_size",
        "max_message_size",
        "max_write_batch_size",
        "server_connection_id",
        "conn_id",
        "pipeline",
        "_buf",
        "_view",
        "_sendall",
        "_recv_into",
        "__weakref__",
    )

    def __init__(self, sock: Any, address: tuple[str, int], generation: int = 0) -> None:
        self.sock = sock
        self.address = address
        self.generation = generation
        self.closed = False
        self.last_checkin = time.monotonic()
        # The pool's request record while the socket is pinned, else None.
        self.request: Any = None
        self.hello: dict[str, Any] = {}
        self.max_wire_version = 0
        self.max_bson_size = 16 * 1024 * 1024
        self.max_message_size = 48 * 1000 * 1000
        self.max_write_batch_size = 100000
        self.server_connection_id: int | None = None
        self.conn_id = 0  # the driver's id in pool events (mongo_requests.events); 0 without a pool listener
        # The request's mongo_requests.pipeline.Pipeline while one is attached
        # (its class is then a piped subclass, whose round trip syncs first).
        self.pipeline: Any = None
        # One receive buffer per socket, reused for every reply: recv_into
        # avoids allocating a bytes object per chunk on the hot path.
        self._buf = bytearray(_DEFAULT_BUF)
        self._view = memoryview(self._buf)
        # Bound methods cached once; attribute lookups add up at 20k ops/s.
        self._sendall = sock.sendall
        self._recv_into = sock.recv_into

    # -- connecting ---------------------------------------------------------
    @classmethod
    def connect(
        cls,
        address: tuple[str, int],
        socket_module: Any = _stdsocket,
        connect_timeout: float | None = 20.0,
        socket_timeout: float | None = None,
        generation: int = 0,
        metadata: Mapping[str, Any] | None = None,
        setup: Any = None,
        ssl_module: Any = None,
    ) -> SocketInfo:
        """Open a TCP connection and run the ``hello`` handshake.

        :param setup: a :class:`~mongo_requests.handshake.ConnectionSetup`
            (TLS, credentials, compressors), or None.
        :param ssl_module: ``ssl`` or ``gevent.ssl``, to match ``socket_module``.

        Raises :class:`~pymongo.errors.AutoReconnect` (``NetworkTimeout`` for
        a timeout) when the server cannot be reached, and
        :class:`~pymongo.errors.ConfigurationError` when it is too old.
        """
        host, port = address
        try:
            sock = socket_module.create_connection((host, port), timeout=connect_timeout)
        except TimeoutError as exc:
            raise NetworkTimeout("%s:%d: connect timed out after %ss" % (host, port, connect_timeout)) from exc
        except OSError as exc:
            raise AutoReconnect("%s:%d: %s" % (host, port, exc)) from exc
        except UnicodeError as exc:  # the resolver's IDNA codec: a label over 63 bytes, an empty label
            raise ConfigurationError("invalid host name %r: %s" % (host, exc)) from None
        info = None
        try:
            sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
            sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_KEEPALIVE, 1)
            if setup is not None:
                # TLS goes on before the first byte of the protocol.
                sock = setup.wrap(sock, address, ssl_module)
            info = cls(sock, address, generation)
            info.handshake(metadata, setup)
            # The handshake ran under the connect timeout; operations get theirs.
            sock.settimeout(socket_timeout)
            return info
        except BaseException:
            if info is not None:
                info.close()
            else:
                sock.close()
            raise

    def handshake(self, metadata: Mapping[str, Any] | None = None, setup: Any = None) -> dict[str, Any]:
        """Send the first ``hello`` (as OP_QUERY, which every server reads).

        ``setup`` adds compressors and speculative authentication to it, and
        authenticates afterwards.
        """
        cmd: dict[str, Any] = {"isMaster": 1, "helloOk": True}
        cmd["client"] = metadata if metadata is not None else client_metadata()
        state = setup.hello_fields(cmd) if setup is not None else None
        rid = wire.next_request_id()
        msg = wire.pack_query(rid, "admin.$cmd", bson.encode(cmd))
        op, message = self._roundtrip_raw(msg, rid)
        try:
            if op != wire.OP_REPLY:
                raise ProtocolError("%s:%d: expected OP_REPLY to the handshake, got opcode %d" % (self.address + (op,)))
            reply = wire.unpack_op_reply(message[16:])
            check_command(reply)
            self._learn(reply)
        except BaseException:
            self.close()
            raise
        if setup is not None:
            # Authentication and compression; a failure closes the socket in connect().
            setup.after_hello(self, reply, state)
        return reply

    def _learn(self, hello: dict[str, Any]) -> None:
        """Remember the server's limits from a hello reply, refusing absurd ones."""
        host, port = self.address
        wire_version = hello.get("maxWireVersion", 0)
        if not _is_int(wire_version):
            raise ProtocolError(
                "Server at %s:%d sent a hello with maxWireVersion %r, not an integer" % (host, port, wire_version)
            )
        if wire_version < MIN_WIRE_VERSION:
            raise ConfigurationError(
                "Server at %s:%d reports wire version %d, but mongo_requests needs OP_MSG "
                "(wire version %d, MongoDB 3.6 or later)" % (host, port, wire_version, MIN_WIRE_VERSION)
            )
        max_bson = _limit(hello, "maxBsonObjectSize", self.max_bson_size, _MAX_BSON_RANGE, self.address)
        max_message = _limit(
            hello, "maxMessageSizeBytes", self.max_message_size, (max_bson, _MAX_MESSAGE_CEILING), self.address
        )
        max_batch = _limit(hello, "maxWriteBatchSize", self.max_write_batch_size, _MAX_BATCH_RANGE, self.address)
        connection_id = hello.get("connectionId")
        if connection_id is not None and not _is_int(connection_id):
            raise ProtocolError(
                "Server at %s:%d sent a hello with connectionId %r, not an integer" % (host, port, connection_id)
            )
        self.hello = hello
        self.max_wire_version = wire_version
        self.max_bson_size = max_bson
        self.max_message_size = max_message
        self.max_write_batch_size = max_batch
        self.server_connection_id = connection_id

    # -- operations ---------------------------------------------------------
    def command(
        self,
        dbname: str,
        cmd: dict[str, Any],
        codec_options: CodecOptions[Any] = DEFAULT_CODEC_OPTIONS,
        sequences: Sequence[bytes] = (),
        check: bool = True,
        body: bytes | None = None,
        unpack: Callable[[memoryview], Any] | None = None,
    ) -> dict[str, Any]:
        """Run ``cmd`` on database ``dbname`` and return the reply document.

        :param cmd: the command; ``$db`` is added to it.
        :param sequences: kind-1 sections from :func:`wire.encode_section`.
        :param check: raise :class:`~pymongo.errors.OperationFailure` and
            friends for ``ok: 0``.
        :param body: ``cmd`` with ``$db`` already BSON-encoded (by
            :mod:`mongo_requests.precoded`), sent instead of encoding ``cmd``.
        :param unpack: given the whole OP_MSG reply, a shortcut decoding of
            it (``precoded.FindOne.first_batch``): what it returns is returned
            instead of the reply, unless it is None (then the reply is decoded
            and checked as usual).  A subclass (compression, pipelines)
            ignores it.
        """
        rid = next(_ids)  # wire.next_request_id(), inline (one call less); ids wrap before they overflow int32
        if rid >= _MAX_ID:
            rid = rid % _MAX_ID + 1
        if body is None:
            body = self._body(dbname, cmd, codec_options)
        elif len(body) > self.max_bson_size + _COMMAND_OVERHEAD:
            raise _too_large(len(body), self.max_bson_size)
        if sequences:
            msg = wire.pack_msg(rid, body, 0, sequences)
        else:
            msg = _pack_prefix(21 + len(body), rid, 0, wire.OP_MSG, 0, 0) + body  # pack_msg(), inline
        if self.__class__ is not SocketInfo:
            # A subclass may wrap the exchange (CompressedSocketInfo's OP_COMPRESSED): its roundtrip().
            reply = self.roundtrip(msg, rid, codec_options)
            if check and reply.get("ok") != 1:
                check_command(reply, self.max_wire_version)
            return reply
        # _roundtrip_raw(), its common case inline (the whole reply in the
        # first read): one call less on every command.
        view = self._view
        try:
            self._sendall(msg)
            got = self._recv_into(view)
        except BaseException as exc:
            self._fail(exc)
            raise
        length = response_to = -1
        if got >= 16:
            length, _rid, response_to, op = _unpack_header(view, 0)
        if got == length and response_to == rid:
            message = view[:length]
        else:
            op, message = self._read_reply(got, rid)
            length = len(message)
        # roundtrip(), inline: one call less on every command.
        try:
            if op != wire.OP_MSG:
                raise ProtocolError("%s:%d: expected an OP_MSG reply, got opcode %d" % (self.address + (op,)))
            if unpack is not None:
                shortcut = unpack(message)
                if shortcut is not None:
                    # Not typing.cast(): a Python call on every find_one (~600 instructions).
                    return shortcut  # type: ignore[no-any-return]
            reply = wire.unpack_msg(message, codec_options)
        except BaseException:
            self.close()
            raise
        if length > _DEFAULT_BUF and message.obj is not self._buf:
            _spare(message.obj)  # type: ignore[arg-type]  # decoded: nothing reads the buffer any more
        if check and reply.get("ok") != 1:
            check_command(reply, self.max_wire_version)
        return reply

    def send_command(
        self,
        dbname: str,
        cmd: dict[str, Any],
        codec_options: CodecOptions[Any] = DEFAULT_CODEC_OPTIONS,
        sequences: Sequence[bytes] = (),
    ) -> None:
        """Send ``cmd`` with ``moreToCome`` (unacknowledged, ``w=0``): no reply is read."""
        body = self._body(dbname, cmd, codec_options)
        self.send(wire.pack_msg(wire.next_request_id(), body, wire.MORE_TO_COME, sequences))

    def _body(self, dbname: str, cmd: dict[str, Any], codec_options: CodecOptions[Any]) -> bytes:
        """The command's BSON body, with ``$db``, checked against the server's size limit."""
        cmd["$db"] = dbname
        pair = precoded._last_options  # precoded.encoding_options(), its common case inline
        opts = pair[1] if pair[0] is codec_options else precoded.encoding_options(codec_options)
        body: bytes = _encode(cmd, False, opts)
        if len(body) > self.max_bson_size + _COMMAND_OVERHEAD:
            raise _too_large(len(body), self.max_bson_size)
        return body

    def send(self, msg: bytes) -> None:
        """Send a whole message; any failure closes the socket."""
        try:
            self._sendall(msg)
        except BaseException as exc:
            self._fail(exc)
            raise  # _fail raises for I/O errors; this re-raises kills and timeouts

    def roundtrip(
        self, msg: bytes, request_id: int, codec_options: CodecOptions[Any] = DEFAULT_CODEC_OPTIONS
    ) -> dict[str, Any]:
        """Send ``msg`` and return the decoded OP_MSG reply to it.

        A reply that cannot be decoded closes the socket: what follows it on
        the stream cannot be trusted either.
        """
        op, message = self._roundtrip_raw(msg, request_id)
        try:
            if op != wire.OP_MSG:
                raise ProtocolError("%s:%d: expected an OP_MSG reply, got opcode %d" % (self.address + (op,)))
            return wire.unpack_msg(message, codec_options)
        except BaseException:
            self.close()
            raise

    def _roundtrip_raw(self, msg: bytes, request_id: int) -> tuple[int, memoryview]:
        """Send, then read one whole reply; returns (opcode, view of the whole message).

        The view is into this socket's buffer, valid until the next exchange
        (or, for a reply over the buffer's size, into a buffer of its own).
        A length that does not match what arrives (too small, negative, bytes
        past its end, too large) closes the socket with a ProtocolError: the
        buffer is reused, so trusting it could hand back an earlier reply.
        """
        try:
            self._sendall(msg)
            got = self._recv_into(self._view)
        except BaseException as exc:
            self._fail(exc)
            raise
        return self._read_reply(got, request_id)

    def _read_reply(self, got: int, request_id: int) -> tuple[int, memoryview]:
        """:meth:`_roundtrip_raw` after the first read, which put ``got`` bytes in the buffer."""
        try:
            view = self._view
            recv_into = self._recv_into
            if not got:
                raise EOFError
            while got < 16:
                n = recv_into(view[got:])
                if not n:
                    raise EOFError
                got += n
            length, _rid, response_to, op = wire.HEADER.unpack_from(view, 0)
            if got != length:
                if got > length:
                    # Only one reply may be in flight, so nothing can follow it.
                    raise ProtocolError(
                        "reply declares %d bytes but %d arrived (a short, negative or overrun length)" % (length, got)
                    )
                if length > len(view):
                    if length > self.max_message_size + _COMMAND_OVERHEAD:
                        raise ProtocolError(
                            "reply length %d exceeds the server's maximum message size %d"
                            % (length, self.max_message_size)
                        )
                    # A big reply (a full cursor batch): read it into a big buffer
                    # (the process's spare one if big enough), never the socket's own.
                    view = memoryview(_big_buffer(length))
                    view[:got] = self._view[:got]
                while got < length:
                    n = recv_into(view[got:length])
                    if not n:
                        raise EOFError
                    got += n
        except BaseException as exc:
            self._fail(exc)
            raise
        if response_to != request_id:
            self.close()
            raise ProtocolError("reply responds to request %d, expected %d" % (response_to, request_id))
        return op, view[:length]

    def _fail(self, exc: BaseException) -> None:
        """Close after an interrupted exchange, turning I/O errors into PyMongo's.

        ``GreenletExit``, ``gevent.Timeout`` and ``KeyboardInterrupt`` are not
        converted: the caller re-raises them as they are.  The socket is
        closed either way, because part of a message may be on the wire.
        """
        host, port = self.address
        if isinstance(exc, _stdsocket.timeout):
            self.close()
            raise NetworkTimeout("%s:%d: timed out" % (host, port)) from exc
        if isinstance(exc, EOFError):
            self.close()
            raise AutoReconnect("%s:%d: connection closed" % (host, port)) from None
        if isinstance(exc, OSError):
            self.close()
            raise AutoReconnect("%s:%d: %s" % (host, port, exc)) from exc
        self.close()

    def rebind(self, sock: Any) -> None:
        """Carry on over another socket object for the same connection (a re-homed one)."""
        self.sock = sock
        self._sendall = sock.sendall
        self._recv_into = sock.recv_into

    # -- health -------------------------------------------------------------
    def is_alive(self, poll_factory: Any = None) -> bool:
        """Cheap check for an idle socket: is it still open at the other end?

        An idle socket should have nothing to read.  If the poll says it is
        readable, the server closed it (or sent something unexpected): either
        way it must not be reused.
        """
        if self.closed:
            return False
        try:
            fd = self.sock.fileno()
            if fd < 0:
                return False
            if poll_factory is not None:
                poller = poll_factory()
                poller.register(fd, 0x001 | 0x008 | 0x010)  # POLLIN | POLLERR | POLLHUP
                return not poller.poll(0)
            import select

            readable, _, _ = select.select([fd], [], [], 0)
            return not readable
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        """Close the socket; safe to call more than once."""
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return "<SocketInfo %s:%d conn=%s gen=%d %s>" % (
            self.address[0],
            self.address[1],
            self.server_connection_id,
            self.generation,
            state,
        )
