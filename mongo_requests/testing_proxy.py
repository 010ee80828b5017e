"""Two small TCP proxies for tests and benchmarks, run as child processes on 127.0.0.1.

:class:`DelayProxy` relays bytes both ways after a fixed one-way delay (0.5 ms
by default, a 1 ms round trip: a server in the next availability zone).
Pipelining pays most where the network has latency, so the pipeline
benchmark measures through it.

:class:`MongosProxy` is a **simulation of one property of mongos, and of
nothing else**: mongos does not keep a client connection's messages on one
connection to the shard (SERVER-12273).  The proxy says ``msg: "isdbgrid"`` in
its ``hello`` replies, as mongos does, and forwards each client message over
one of several connections to the real ``mongod``, chosen at random.  Like
mongos it handles one client connection's messages one at a time: it waits
for the reply to an acknowledged command before it reads the next message,
but a ``moreToCome`` (``w=0``) message is passed on and not waited for.  So a
``w=0`` write followed by a read on the same client connection can run on two
server connections at once, and the read can miss the write, as through a
real mongos.  Everything else about mongos (routing, sharding, sessions,
``$readPreference`` handling, authentication) is *not* simulated: the proxy
removes ``logicalSessionTimeoutMinutes`` and ``compression`` from the hello so
clients use neither.

Both run in a child process (``python -m mongo_requests.testing_proxy``) so
their relaying never competes with the client under test for the GIL, and
gevent patching in the test process cannot touch them.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

import bson

__all__ = ["DelayProxy", "MongosProxy"]

HOST = "127.0.0.1"
_HEADER = struct.Struct("<iiii")
_OP_REPLY, _OP_QUERY, _OP_MSG = 1, 2004, 2013
_MORE_TO_COME = 1 << 1
_HELLO_NAMES = (b"hello", b"isMaster", b"ismaster")
# Hello fields a client must not act on through the proxy (see the module docstring).
_DROPPED = ("logicalSessionTimeoutMinutes", "compression", "setName", "hosts", "topologyVersion")


class _ChildProxy:
    """A proxy in a child process; ``start()`` returns once it listens."""

    kind = ""

    def __init__(self, target: tuple[str, int], *args: str) -> None:
        self.target = target
        self._args = args
        self._proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the proxy listens on."""
        if self.port is None:
            raise RuntimeError("the proxy has no port until start()")
        return (HOST, self.port)

    @property
    def uri(self) -> str:
        """A connection string to the proxy."""
        return "mongodb://%s:%d/" % self.address

    def start(self) -> _ChildProxy:
        argv = [
            sys.executable,
            "-m",
            "mongo_requests.testing_proxy",
            self.kind,
            "--target",
            "%s:%d" % self.target,
            *self._args,
        ]
        env = dict(os.environ)
        env.pop("GEVENT_PATCH", None)
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError("proxy did not start: %r" % line)
        self.port = int(line.split()[1])
        return self

    def stop(self) -> None:
        """Stop the child (its connections close)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()

    def __enter__(self) -> _ChildProxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class DelayProxy(_ChildProxy):
    """A TCP relay adding ``delay`` seconds each way (default 0.5 ms).

    :param target: ``(host, port)`` of the server.
    :param delay: one-way delay in seconds.
    :param port: the port to listen on (0: any free one); a fixed one brings
        a server "back" at an address a client already uses.
    """

    kind = "delay"

    def __init__(self, target: tuple[str, int], delay: float = 0.0005, port: int = 0) -> None:
        super().__init__(target, "--delay", repr(float(delay)), "--port", str(int(port)))
        self.delay = delay


class MongosProxy(_ChildProxy):
    """The mongos simulation of the module docstring.

    :param target: ``(host, port)`` of the real mongod.
    :param backends: server connections per client connection.
    """

    kind = "mongos"

    def __init__(self, target: tuple[str, int], backends: int = 4) -> None:
        super().__init__(target, "--backends", str(int(backends)))
        self.backends = backends


# -- the child process ---------------------------------------------------------------
def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _recv_message(sock: socket.socket) -> bytes:
    header = _recv_exact(sock, 16)
    length = _HEADER.unpack_from(header)[0]
    if length < 16 or length > 64 * 1024 * 1024:
        raise EOFError
    return header + _recv_exact(sock, length - 16)


def _patch_hello(doc: dict[str, Any]) -> dict[str, Any]:
    doc["msg"] = "isdbgrid"
    for name in _DROPPED:
        doc.pop(name, None)
    return doc


def _patched_reply(reply: bytes) -> bytes:
    """A hello reply (OP_REPLY or OP_MSG) with ``msg: "isdbgrid"``."""
    length, rid, response_to, op = _HEADER.unpack_from(reply)
    if op == _OP_REPLY:
        prefix = reply[16:36]
        doc = _patch_hello(bson.decode(reply[36:]))
        body = prefix + bson.encode(doc)
    elif op == _OP_MSG:
        doc = _patch_hello(bson.decode(reply[21:]))
        body = reply[16:21] + bson.encode(doc)
    else:
        return reply
    return _HEADER.pack(16 + len(body), rid, response_to, op) + body


def _is_hello(msg: bytes) -> bool:
    op = _HEADER.unpack_from(msg)[3]
    if op == _OP_QUERY:
        return True  # only the handshake uses OP_QUERY
    if op != _OP_MSG or msg[20] != 0:
        return False
    # The command's name is the body's first key: type byte at 25, name from 26.
    end = msg.index(b"\x00", 26)
    return msg[26:end] in _HELLO_NAMES


def _mongos_session(client: socket.socket, target: tuple[str, int], count: int) -> None:
    backends: list[socket.socket] = []
    try:
        for _ in range(count):
            b = socket.create_connection(target)
            b.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            backends.append(b)
        while True:
            msg = _recv_message(client)
            hello = _is_hello(msg)
            backend = backends[0] if hello else random.choice(backends)
            backend.sendall(msg)
            op, flags = _HEADER.unpack_from(msg)[3], 0
            if op == _OP_MSG:
                flags = struct.unpack_from("<I", msg, 16)[0]
            if flags & _MORE_TO_COME:
                continue  # fire and forget, as mongos does with a w=0 write
            reply = _recv_message(backend)
            client.sendall(_patched_reply(reply) if hello else reply)
    except (EOFError, OSError):
        pass
    finally:
        for b in backends:
            b.close()
        client.close()


def _pump(src: socket.socket, dst: socket.socket, delay: float) -> None:
    """Relay src -> dst, each chunk sent ``delay`` seconds after it arrived."""
    queue: collections.deque[tuple[float, bytes]] = collections.deque()
    ready = threading.Condition()
    done: list[bool] = []

    def writer() -> None:
        try:
            while True:
                with ready:
                    while not queue and not done:
                        ready.wait()
                    if not queue:
                        return
                    due, data = queue.popleft()
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        while True:
            data = src.recv(256 * 1024)
            if not data:
                break
            with ready:
                queue.append((time.monotonic() + delay, data))
                ready.notify()
    except OSError:
        pass
    finally:
        with ready:
            done.append(True)
            ready.notify()
        t.join()


def _delay_session(client: socket.socket, target: tuple[str, int], delay: float) -> None:
    try:
        server = socket.create_connection(target)
    except OSError:
        client.close()
        return
    for s in (client, server):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    back = threading.Thread(target=_pump, args=(server, client, delay), daemon=True)
    back.start()
    _pump(client, server, delay)
    back.join()
    client.close()
    server.close()


def _exit_with_parent(parent: int) -> None:
    """A test process that dies without stop() must not leave the proxy behind."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mongo_requests.testing_proxy", description="A delay relay or a mongos simulation, on 127.0.0.1."
    )
    parser.add_argument("kind", choices=["delay", "mongos"])
    parser.add_argument("--target", required=True, help="host:port of the mongod")
    parser.add_argument("--delay", type=float, default=0.0005, help="one-way delay in seconds (delay)")
    parser.add_argument("--backends", type=int, default=4, help="server connections per client (mongos)")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    target = (host, int(port))
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, args.port))
    listener.listen(128)
    print("PORT %d" % listener.getsockname()[1], flush=True)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    while True:
        client, _ = listener.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if args.kind == "delay":
            session: Any = _delay_session
            extra: Any = args.delay
        else:
            session, extra = _mongos_session, max(1, args.backends)
        threading.Thread(target=session, args=(client, target, extra), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
