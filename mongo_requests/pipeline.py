"""Pipelined acknowledged writes: the queue of unread replies on a request's pinned socket.

``client.start_request(pipeline=True)`` makes the caller's acknowledged writes
return at once: each is sent, its reply is read later, in order, at the next
*sync point* (a read, a command, a cursor, :meth:`Request.sync`, leaving the
request, or touching one of the write's results).  MongoDB processes one
connection's messages in order, so a read that syncs first sees every earlier
write, as a request promises.

The rules this module keeps:

* **Order.**  Replies are read in the order the writes were sent; a reply that
  answers another request id is a :class:`~pymongo.errors.ProtocolError` and
  closes the socket.
* **Never a deadlock.**  A caller that only writes would fill the socket
  buffers both ways: the server blocks writing replies nobody reads, stops
  reading, and our send blocks.  So the replies not yet read are bounded by
  count (``_MAX_WINDOW``) and by their estimated bytes (``_REPLY_BUDGET``,
  with the largest reply seen as the estimate), and the bytes sent but not yet
  answered by ``_MAX_OUTSTANDING``.  Before a write would pass a bound, the
  replies already there are read (every complete one in the buffer, several
  per ``recv``).  64 KiB of replies always fit in the kernel's buffers.
* **Errors at the sync point.**  A failed write (a write error, a write
  concern error, ``ok: 0``) is collected; the next sync point raises
  :class:`PipelineError` with ``.errors``, a list of ``(index, exception)``.
  The *index* counts the request's acknowledged pipelined writes from 0 (each
  ``insert_one``/``update_one``/.../``insert_many``/``bulk_write`` call is
  one, ``w=0`` writes are not counted) and does not restart after a sync.
  Writes after a failed one are still applied: MongoDB runs each message on
  its own (unordered semantics).
* **A network error** closes the socket; every write whose reply was not read
  is *unknown* (it may or may not have been applied).  The next sync point
  raises :class:`~pymongo.errors.AutoReconnect` naming them (in
  ``.errors["unknownWrites"]``); each unknown result raises it when touched.
  Acknowledged writes before it stay acknowledged.  The request goes on with
  a new socket.
* **mongos.**  On a socket to a mongos (``hello`` says ``msg: "isdbgrid"``),
  a request sends its ``w=0`` writes as pipelined acknowledged writes whose
  replies are read and dropped: mongos does not keep a client's messages on
  one shard connection (SERVER-12273), so only an answered write is sure to
  be applied before the next read.

Layering: the pool creates a :class:`Pipeline` per request and attaches it to
the pinned socket; this module talks to :class:`~mongo_requests.socket_info.SocketInfo`
only.  While attached, the socket's class is a subclass (made by
:func:`_piped_class`) whose round trip syncs first, so no other code path can
read a reply meant for a pipelined write, and sockets without a pipeline pay
nothing.  A write call's handle and its lazy result are in
:mod:`mongo_requests.pipeline_results`.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bson.codec_options import DEFAULT_CODEC_OPTIONS, CodecOptions
from pymongo.errors import AutoReconnect, OperationFailure, ProtocolError, PyMongoError

from . import compression, wire
from .pipeline_results import _Op, lazy_result
from .socket_info import SocketInfo

__all__ = ["Pipeline", "PipelineError", "lazy_result"]

# Bounds on the unread replies (see the module docstring).
_MAX_WINDOW = 1024
_REPLY_BUDGET = 64 * 1024
_ASSUMED_REPLY = 96  # an update's reply with an upsert is ~90 bytes; errors are measured as they come
_MAX_OUTSTANDING = 16 * 1024 * 1024
_BUF = 256 * 1024
# Writes wait in an output buffer until this many bytes are there, or the next
# read of replies, or a sync point: one send for many small writes.
_FLUSH_AT = 32 * 1024
_HEADER = wire.HEADER


class PipelineError(OperationFailure):
    """Writes of a pipeline failed; raised at the sync point after them.

    :attr errors: ``[(index, exception), ...]`` in index order.  The index
        counts the request's acknowledged pipelined writes from 0 (one per
        write call; ``w=0`` writes are not counted) and goes on across syncs.
        Writes after a failed one were still applied (unordered semantics).
    """

    def __init__(self, errors: list[tuple[int, PyMongoError]]) -> None:
        self.errors = errors
        first = errors[0][1]
        msg = "%d pipelined write(s) failed, at index %s (counted from 0 at start_request); first: %s" % (
            len(errors),
            ", ".join(str(i) for i, _ in errors[:10]) + (", ..." if len(errors) > 10 else ""),
            first,
        )
        details = {"errors": [{"index": i, "code": getattr(e, "code", None), "errmsg": str(e)} for i, e in errors]}
        super().__init__(msg, getattr(first, "code", None), details)


# -- the socket while a pipeline is attached ---------------------------------------
class _PipedSocket(SocketInfo):
    """Mixed in front of a socket's class while a pipeline is attached to it."""

    __slots__ = ()

    def _roundtrip_raw(self, msg: bytes, request_id: int) -> tuple[int, memoryview]:
        pipeline = self.pipeline
        if pipeline is not None and (pipeline.queue or pipeline.errors or pipeline.lost):
            pipeline.sync()  # a read, a command, a getMore: every earlier reply first
        return super()._roundtrip_raw(msg, request_id)

    def send(self, msg: bytes) -> None:
        pipeline = self.pipeline
        if pipeline is not None and pipeline._out:
            pipeline.flush()  # buffered pipelined writes go first: the server applies messages in order
        super().send(msg)

    def send_command(
        self,
        dbname: str,
        cmd: dict[str, Any],
        codec_options: CodecOptions[Any] = DEFAULT_CODEC_OPTIONS,
        sequences: Sequence[bytes] = (),
    ) -> None:
        pipeline = self.pipeline
        if pipeline is not None and pipeline.mongos:
            # Acknowledged, the reply read and dropped later: see the module docstring.
            cmd.pop("writeConcern", None)
            pipeline.send(self, dbname, cmd, codec_options, sequences, None)
            return
        super().send_command(dbname, cmd, codec_options, sequences)


_piped_classes: dict[type, type] = {}


def _piped_class(cls: type) -> type:
    """``cls`` (SocketInfo or a compressed subclass) with the pipeline's round trip in front."""
    if issubclass(cls, _PipedSocket):
        return cls
    piped = _piped_classes.get(cls)
    if piped is None:
        piped = _piped_classes[cls] = (
            _PipedSocket if cls is SocketInfo else type("Piped" + cls.__name__, (_PipedSocket, cls), {"__slots__": ()})
        )
    return piped


def _unpiped_class(cls: type) -> type:
    for base, piped in _piped_classes.items():
        if piped is cls:
            return base
    return cls


# Pipelining requests open in this process, any client: weak references to
# their Request objects, in a set (add/discard are atomic across threads).
# While it is empty a write pays one global truth test: a MongoClient
# attribute would cost more, as the class's __getattr__ keeps CPython from
# specializing the lookup.  Entries come and go through
# client_request._OpenRequests: at the request's start, and at its end, its
# caller's leaving its outermost request, or its caller's death.
OPEN: set[Any] = set()

# The mongos rule of the module docstring.  Only the test that shows what
# goes wrong without it (tests/test_mongos_proxy.py) turns it off.
MONGOS_W0_ACKNOWLEDGED = True


def w0_acknowledged(sock: SocketInfo) -> bool:
    """True when a request on ``sock`` sends its ``w=0`` writes acknowledged: its server is a mongos."""
    return MONGOS_W0_ACKNOWLEDGED and sock.hello.get("msg") == "isdbgrid"


class Pipeline:
    """The caller's pipeline on one pool: its unread replies, errors and write counter.

    :param user: True when the caller asked for ``start_request(pipeline=True)``;
        False for a request on a mongos, which only sends its ``w=0`` writes
        acknowledged.
    """

    __slots__ = (
        "user",
        "mongos",
        "sock",
        "queue",
        "count",
        "errors",
        "lost",
        "outstanding",
        "max_reply",
        "window",
        "_buf",
        "_start",
        "_end",
        "_out",
        "_out_size",
    )

    def __init__(self, user: bool) -> None:
        self.user = user
        self.mongos = False
        self.sock: SocketInfo | None = None
        # (request id, codec options, op or None for a reply to drop, message size,
        #  None or (listeners, database, command name, start time) for command monitoring)
        self.queue: collections.deque[tuple[int, CodecOptions[Any], _Op | None, int, Any]] = collections.deque()
        self.count = 0
        self.errors: list[tuple[int, PyMongoError]] = []
        self.lost: AutoReconnect | None = None
        self.outstanding = 0
        self.max_reply = _ASSUMED_REPLY
        self.window = _REPLY_BUDGET // _ASSUMED_REPLY
        self._buf = bytearray(0)
        self._start = self._end = 0
        self._out: list[bytes] = []
        self._out_size = 0

    # -- attaching ---------------------------------------------------------------
    def attach(self, sock: SocketInfo) -> None:
        """Bind to the request's (newly) pinned socket."""
        if self.queue:
            # Replies unread on a socket the request lost (closed by a fork or
            # an error it has not seen): those writes are unknown.
            self._lose(AutoReconnect("the pipeline's socket was replaced"))
        if self.sock is not None and self.sock is not sock:
            self.detach()
        self.sock = sock
        self.mongos = w0_acknowledged(sock)
        sock.pipeline = self
        sock.__class__ = _piped_class(sock.__class__)

    def detach(self) -> None:
        """Unbind from the socket, giving it back its own class (nothing must be pending)."""
        sock = self.sock
        if sock is None:
            return
        self.sock = None
        sock.pipeline = None
        sock.__class__ = _unpiped_class(sock.__class__)

    def abandon(self) -> None:
        """The caller died or was killed: close the socket if replies are unread (no I/O, no waiting)."""
        sock = self.sock
        if sock is not None and self.queue:
            sock.close()
            self._lose(AutoReconnect("%s:%d: the pipeline was abandoned" % sock.address))
        self.detach()

    # -- writing -----------------------------------------------------------------
    def new_op(
        self, finish: Callable[[list[dict[str, Any]]], Any] | None, build: Callable[[dict[str, Any]], Any] | None = None
    ) -> _Op:
        """A handle for one write call (its index is taken now): ``finish(replies)`` or ``build(reply)``."""
        return _Op(self, finish, build)

    def send(
        self,
        sock: SocketInfo,
        dbname: str,
        cmd: dict[str, Any],
        codec_options: CodecOptions[Any],
        sequences: Sequence[bytes],
        op: _Op | None,
        listeners: Any = None,
    ) -> None:
        """Queue one acknowledged command whose reply goes to ``op`` (None: dropped) when read.

        A user's pipeline buffers it (sent at ``_FLUSH_AT`` bytes, or before
        any read of replies); a mongos request's ``w=0`` write goes at once.
        ``listeners`` (the client's command listeners, or None) hear of it
        now (started) and when its reply is read (succeeded or failed).
        """
        if op is not None and op.done:
            return  # a bulk whose earlier command was lost with the connection
        if sock is not self.sock:
            self.attach(sock)
        rid = wire.next_request_id()
        msg = wire.pack_msg(rid, sock._body(dbname, cmd, codec_options), 0, sequences)
        compressor = getattr(sock, "compressor", None)
        if compressor is not None:
            msg = compression.compress_message(msg, compressor)
        size = len(msg)
        queue = self.queue
        if queue and (len(queue) >= self.window or self.outstanding + size > _MAX_OUTSTANDING):
            self._read(max(1, len(queue) // 2))
            if self.sock is not sock:
                # The connection failed while reading: this write was never sent.
                if op is not None:
                    self._lose(self.lost or AutoReconnect("connection lost"), (op,))
                return
        if op is not None:
            op.remaining += 1
        event = None
        if listeners is not None:
            event = (listeners, dbname, next(iter(cmd)), time.perf_counter())
            listeners.started(sock, dbname, cmd, sequences, codec_options, rid)
        queue.append((rid, codec_options, op, size, event))
        self.outstanding += size
        self._out.append(msg)
        self._out_size += size
        if self._out_size >= _FLUSH_AT or not self.user:
            self.flush()

    def flush(self) -> None:
        """Send the buffered writes now (without waiting for their replies)."""
        if not self._out:
            return
        out = self._out
        data = out[0] if len(out) == 1 else b"".join(out)
        self._out = []
        self._out_size = 0
        sock = self.sock
        if sock is None or sock.closed:
            self._lose(AutoReconnect("connection closed with %d pipelined writes unsent" % len(out)))
            return
        try:
            SocketInfo.send(sock, data)  # already compressed; closes the socket on any failure
        except BaseException as exc:
            self._fail(exc)

    # -- syncing -----------------------------------------------------------------
    def sync(self) -> None:
        """Read every reply; raise the network loss, or :class:`PipelineError`, collected so far."""
        if self.queue:
            self._read(len(self.queue))
        lost = self._take_lost()
        if lost is not None:
            raise lost
        if self.errors:
            errors, self.errors = self.errors, []
            errors.sort(key=lambda e: e[0])
            raise PipelineError(errors)

    def resolve(self, op: _Op) -> None:
        """Read replies until ``op`` has all of its own (a result was touched)."""
        if op.done:
            return
        last = 0
        for n, entry in enumerate(self.queue, 1):
            if entry[2] is op:
                last = n
        if last:
            self._read(last)
        if not op.done:
            op.lose(
                AutoReconnect(
                    "the pipeline lost this write's reply (index %d)" % op.index, {"unknownWrites": [op.index]}
                )
            )

    def finish(self) -> BaseException | None:
        """Leaving the request: read everything, detach; the error to raise once the socket is back."""
        try:
            self.sync()
        except (PipelineError, AutoReconnect) as exc:
            return exc
        finally:
            self.detach()
        return None

    # -- reading -----------------------------------------------------------------
    def _read(self, need: int) -> None:
        """Dispatch replies until ``need`` more are read, taking every complete one that arrived."""
        if self._out:
            self.flush()
        sock = self.sock
        queue = self.queue
        if sock is None or sock.closed:
            self._lose(AutoReconnect("connection closed with %d pipelined replies unread" % len(queue)))
            return
        if len(self._buf) < _BUF:
            self._buf = bytearray(_BUF)
        buf = self._buf
        view = memoryview(buf)
        start, end = self._start, self._end
        done = 0
        try:
            while True:
                while end - start >= 16:
                    length, _rid, response_to, opcode = _HEADER.unpack_from(buf, start)
                    if length < 16 or length > sock.max_message_size + 16 * 1024:
                        raise ProtocolError("pipelined reply declares %d bytes" % length)
                    if end - start < length:
                        if length > len(buf):
                            # A reply bigger than the buffer: move to a buffer of its own size.
                            bigger = bytearray(length)
                            bigger[: end - start] = view[start:end]
                            self._buf = buf = bigger
                            view = memoryview(buf)
                            end -= start
                            start = 0
                        break
                    self._dispatch(view[start : start + length], response_to, opcode, length)
                    start += length
                    done += 1
                if done >= need or not queue:
                    break
                if start == end:
                    start = end = 0
                elif len(buf) - end < 65536:
                    view[: end - start] = view[start:end]
                    end -= start
                    start = 0
                n = sock._recv_into(view[end:])
                if not n:
                    raise EOFError
                end += n
        except BaseException as exc:
            self._fail(exc)
            return
        if start == end:
            start = end = 0
            if len(buf) > _BUF:
                self._buf = bytearray(0)  # a big reply's buffer is not kept
        self._start, self._end = start, end

    def _dispatch(self, message: memoryview, response_to: int, opcode: int, length: int) -> None:
        """Decode one reply and hand it to its write."""
        rid, codec_options, op, size, event = self.queue.popleft()
        self.outstanding -= size
        if response_to != rid:
            raise ProtocolError("pipelined reply responds to request %d, expected %d" % (response_to, rid))
        if opcode == wire.OP_MSG:
            reply = wire.unpack_msg(message, codec_options)
        elif opcode == compression.OP_COMPRESSED:
            assert self.sock is not None
            inner, body = compression.decompress_body(message[16:], self.sock.max_message_size)
            if inner != wire.OP_MSG:
                raise ProtocolError("expected an OP_MSG reply, got opcode %d" % inner)
            reply = wire.unpack_msg_reply(body, codec_options)
        else:
            raise ProtocolError("expected an OP_MSG reply, got opcode %d" % opcode)
        if event is not None:
            listeners, dbname, name, start = event
            listeners.finished(self.sock, dbname, name, rid, start, reply)
        if length > self.max_reply:
            # Bigger replies (write errors): fewer may wait unread, so they still fit the buffers.
            self.max_reply = length
            self.window = max(1, min(_MAX_WINDOW, _REPLY_BUDGET // length))
        if op is not None:
            op.add_reply(reply)

    # -- losing the connection ---------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        """Sending or reading failed: close the socket and make the unread writes unknown.

        The next sync point raises AutoReconnect naming them (an error here
        is not raised by the write call that met it).  A kill (``GreenletExit``,
        ``gevent.Timeout``) propagates at once; the loss waits for a sync point.
        """
        sock = self.sock
        if sock is not None and not sock.closed:
            sock.close()
        self._lose(exc)
        if not isinstance(exc, Exception):
            raise exc

    def _lose(self, cause: BaseException, more: Sequence[_Op] = ()) -> None:
        """The socket failed: every write whose reply is unread (and ``more``) is unknown.

        Records in ``self.lost`` the AutoReconnect that the next sync point
        raises, with every unknown write not reported yet; each unknown
        write's result raises it when touched.
        """
        unknown: list[int] = []
        ops: list[_Op] = []
        events = []
        for rid, _codec, op, _size, event in self.queue:
            if op is not None and not op.done and (not ops or ops[-1] is not op):
                ops.append(op)
                unknown.append(op.index)
            if event is not None:
                events.append((rid, event))
        for op in more:
            if not op.done:
                ops.append(op)
                unknown.append(op.index)
        self.queue.clear()
        self.outstanding = 0
        self._start = self._end = 0
        self._out = []
        self._out_size = 0
        if self.lost is not None:
            # An earlier loss not reported yet: its unknown writes stay in the report.
            unknown = unknown_writes(self.lost) + [i for i in unknown if i not in unknown_writes(self.lost)]
        host, port = self.sock.address if self.sock is not None else ("?", 0)
        why = str(cause) or type(cause).__name__
        msg = "%s:%d: connection lost in a pipeline (%s); %d write(s) unknown, index %s" % (
            host,
            port,
            why,
            len(unknown),
            ", ".join(str(i) for i in unknown[:20]) + (", ..." if len(unknown) > 20 else ""),
        )
        error = AutoReconnect(msg, {"unknownWrites": unknown})
        for op in ops:
            op.lose(error)
        for rid, (listeners, dbname, name, start) in events:
            if self.sock is not None:
                listeners.lost(self.sock, dbname, name, rid, start, error)
        if unknown:
            self.lost = error
        self.detach()

    def _take_lost(self) -> AutoReconnect | None:
        lost, self.lost = self.lost, None
        return lost


def unknown_writes(exc: AutoReconnect) -> list[int]:
    """The indexes an AutoReconnect from a pipeline names as unknown ([] for any other)."""
    details = exc.errors
    if isinstance(details, Mapping):
        return list(details.get("unknownWrites", []))
    return []
