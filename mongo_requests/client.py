"""MongoClient, the legacy Connection, and requests.

The client parses options, owns the topology, and runs commands: it asks the
topology for a server, the server's pool for a socket, and the socket for the
round trip.  It knows nothing about bytes or greenlets; requests are the
pool's business, and the client only forwards ``start_request`` and friends.
"""
from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any

from bson.codec_options import DEFAULT_CODEC_OPTIONS, CodecOptions
from pymongo import uri_parser
from pymongo.write_concern import WriteConcern

from .errors import AutoReconnect, ConfigurationError, ConnectionFailure, InvalidName, InvalidURI, NetworkTimeout, PyMongoError
from .pool import PoolOptions
from .auth import redact_uri
from .compression import pop_uri_compressors
from .handshake import SECURITY_OPTIONS, setup_from_options
from .socket_info import SocketInfo, client_metadata
from .topology import Server, Topology

__all__ = ["MongoClient", "Connection", "Request"]

_DEFAULT_HOST = "localhost"
_DEFAULT_PORT = 27017

# Options we understand, as spelled in a URI (matched case-insensitively).
# Options of mongo_requests.handshake.setup_from_options (auth, TLS, compression).
_SECURITY_OPTIONS = SECURITY_OPTIONS
_TIMEOUTS = ("connectTimeoutMS", "socketTimeoutMS", "waitQueueTimeoutMS", "serverSelectionTimeoutMS")
_KNOWN = {
    k.lower(): k
    for k in (
        "maxPoolSize",
        "max_pool_size",
        "auto_start_request",
        "use_greenlets",
        "w",
        "wTimeoutMS",
        "wtimeout",
        "j",
        "journal",
        "fsync",
        "safe",
        "appname",
        "directConnection",
        "document_class",
        "tz_aware",
        "retryWrites",
        "retryReads",
    )
    + _TIMEOUTS
    + _SECURITY_OPTIONS
}
_UNSUPPORTED = ("replicaset", "loadbalanced")


class Request:
    """A request returned by :meth:`MongoClient.start_request`.

    Ends the request on :meth:`end`, or at the end of a ``with`` block.
    Ending it twice is harmless: the second call does nothing, so a
    ``try/finally`` with ``request.end()`` inside a ``with`` is safe too.
    """

    __slots__ = ("_client", "_ended")

    def __init__(self, client: "MongoClient") -> None:
        self._client = client
        self._ended = False

    def end(self) -> None:
        """End this request (once)."""
        if not self._ended:
            self._ended = True
            self._client.end_request()

    def __enter__(self) -> "Request":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.end()


def _ms(name: str, value: Any) -> float | None:
    """Milliseconds (as given to the constructor) to seconds; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigurationError("%s must be a non-negative number of milliseconds, not %r" % (name, value))
    return value / 1000.0


class MongoClient:
    """A client for one MongoDB server, with PyMongo 2-style requests.

    :param host: a hostname, ``host:port``, or a ``mongodb://`` URI
        (default ``localhost``).
    :param port: the port when ``host`` has none (default 27017).
    :param auto_start_request: pin a socket to each thread or greenlet on
        its first operation, until :meth:`end_request` or its death
        (default False).
    :param use_greenlets: None (auto: greenlets when gevent has patched
        ``threading``), True, or False.
    :param max_pool_size: the most sockets open to the server (default 100;
        ``maxPoolSize`` in a URI).
    :param w: the default write concern (``0`` for unacknowledged writes);
        ``safe=False`` is the PyMongo 2 spelling of ``w=0``.
    :param connectTimeoutMS: connect and handshake timeout (default 20000).
    :param socketTimeoutMS: per-operation socket timeout (default None: wait).
    :param waitQueueTimeoutMS: how long to wait for a free socket (default
        None: wait).
    :param serverSelectionTimeoutMS: how long to keep trying an unreachable
        server (default 30000).
    """

    # PyMongo 2's MongoClient defaults; Connection overrides them.
    _DEFAULTS: Mapping[str, Any] = {"auto_start_request": False, "w": None}

    def __init__(self, host: str | None = None, port: int | None = None, **kwargs: Any) -> None:
        if host is None:
            host = _DEFAULT_HOST
        if port is None:
            port = _DEFAULT_PORT
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ConfigurationError("port must be an integer from 1 to 65535, not %r" % (port,))
        if not isinstance(host, str):
            raise TypeError("host must be a string, not %r" % (type(host).__name__,))

        seeds, uri_opts, dbname = self._parse_host(host, port, kwargs.pop("srv_host_validator", None))
        opts: dict[str, Any] = dict(self._DEFAULTS)
        opts.update(uri_opts)
        for key, value in kwargs.items():
            canonical = _KNOWN.get(key.lower())
            if canonical is None:
                raise ConfigurationError("Unknown option %r" % (key,))
            opts[canonical] = value if canonical not in _TIMEOUTS else _ms(canonical, value)
        self._options = opts
        self._default_dbname = dbname

        self.write_concern = self._write_concern(opts)
        self.codec_options = CodecOptions(
            document_class=opts.get("document_class", dict), tz_aware=bool(opts.get("tz_aware", False))
        )
        if self.codec_options == CodecOptions():
            self.codec_options = DEFAULT_CODEC_OPTIONS
        max_size = opts.get("maxPoolSize", opts.get("max_pool_size", 100))
        use_greenlets = opts.get("use_greenlets")
        if use_greenlets is not None:
            use_greenlets = bool(use_greenlets)
        connect_timeout = opts.get("connectTimeoutMS", 20.0)
        pool_opts = PoolOptions(
            max_size=max_size,
            connect_timeout=20.0 if connect_timeout is None else connect_timeout,
            socket_timeout=opts.get("socketTimeoutMS"),
            wait_queue_timeout=opts.get("waitQueueTimeoutMS"),
            auto_start_request=bool(opts.get("auto_start_request")),
            metadata=client_metadata(opts.get("appname")),
            setup=setup_from_options(opts, dbname),
        )
        selection = opts.get("serverSelectionTimeoutMS")
        self._topology = Topology(seeds, pool_opts, use_greenlets, 30.0 if selection is None else selection)
        self._kill_queue: collections.deque = collections.deque()

    # -- options ------------------------------------------------------------
    @staticmethod
    def _parse_host(
        host: str, port: int, srv_host_validator: Any = None
    ) -> tuple[list[tuple[str, int]], dict[str, Any], str | None]:
        """Seeds, URI options (canonical names, seconds; user name and password too) and the URI's database."""
        if "://" not in host:
            if host.startswith("["):  # [::1]:27017
                h, _, p = host[1:].partition("]")
                p = p.lstrip(":")
            elif host.count(":") == 1:
                h, _, p = host.partition(":")
            else:
                h, p = host, ""
            if p:
                try:
                    port = int(p)
                except ValueError:
                    raise ConfigurationError("invalid port in %r" % (host,)) from None
                if not 0 < port < 65536:
                    raise ConfigurationError("port must be from 1 to 65535 in %r" % (host,))
            if not h:
                raise ConfigurationError("empty host name in %r" % (host,))
            return [(h, port)], {}, None
        uri, compressors = pop_uri_compressors(host)
        try:
            # mongodb+srv:// is resolved here too (SRV seed list, TXT options,
            # tls on by default), by PyMongo's parser through dnspython.
            parsed = uri_parser.parse_uri(uri, port, srv_host_validator=srv_host_validator)
        except (PyMongoError, ValueError, OSError) as exc:
            # (OSError: an unreadable tlsCAFile, say.)
            # The parser's messages never hold the password; the URI would.
            raise InvalidURI("invalid MongoDB URI %r: %s" % (redact_uri(host), exc)) from None
        opts: dict[str, Any] = {}
        if compressors is not None:
            opts["compressors"] = compressors
        if parsed.get("username") is not None:
            opts["username"] = parsed["username"]
        if parsed.get("password") is not None:
            opts["password"] = parsed["password"]
        for key, value in parsed["options"].items():
            if key.lower() in _UNSUPPORTED and value not in (False, None):
                raise ConfigurationError("URI option %s is not supported by mongo_requests yet" % (key,))
            canonical = _KNOWN.get(key.lower())
            if canonical is not None:
                # uri_parser already turned the *MS options into seconds.
                opts[canonical] = value
        return list(parsed["nodelist"]), opts, parsed.get("database")

    @staticmethod
    def _write_concern(opts: Mapping[str, Any]) -> WriteConcern:
        """The client's default write concern from w/safe/j/wtimeout."""
        w = opts.get("w")
        safe = opts.get("safe")
        if w is None and safe is not None:
            w = 1 if safe else 0
        wc: dict[str, Any] = {}
        if w is not None:
            wc["w"] = w
        wtimeout = opts.get("wTimeoutMS", opts.get("wtimeout"))
        if wtimeout is not None:
            wc["wtimeout"] = int(wtimeout * 1000) if "wTimeoutMS" in opts else int(wtimeout)
        j = opts.get("j", opts.get("journal"))
        if j is not None:
            wc["j"] = bool(j)
        if opts.get("fsync") is not None:
            wc["fsync"] = bool(opts["fsync"])
        try:
            return WriteConcern(**wc)
        except (PyMongoError, TypeError, ValueError) as exc:
            raise ConfigurationError("invalid write concern %r: %s" % (wc, exc)) from exc

    @property
    def max_pool_size(self) -> int:
        """The cap on sockets per server."""
        return self._topology.servers[0].pool.opts.max_size

    @property
    def auto_start_request(self) -> bool:
        """Whether each caller's first operation starts a request."""
        return self._topology.servers[0].pool.opts.auto_start_request

    @property
    def identity(self):  # noqa: ANN201 - ThreadIdentity or GreenletIdentity
        """Who requests belong to: threads or greenlets (may change in auto mode)."""
        return self._topology.servers[0].pool.identity

    @property
    def use_greenlets(self) -> bool:
        """True when requests belong to greenlets rather than threads."""
        return self.identity.kind == "greenlet"

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` of the server."""
        return self._topology.servers[0].address

    @property
    def pool(self):  # noqa: ANN201 - the Pool class, for stats and tests
        """The server's :class:`~mongo_requests.pool.Pool` (stats, repr, tests)."""
        return self._topology.servers[0].pool

    # -- requests -----------------------------------------------------------
    def start_request(self) -> Request:
        """Pin one socket to the calling thread or greenlet until the request ends.

        Operations inside a request run on one socket, so the server applies
        them in order: an unacknowledged (``w=0``) write is visible to the
        next read.  Requests nest; only the outermost end unpins.  Use the
        returned :class:`Request` as a context manager, or call ``.end()``.
        """
        for server in self._topology.servers:
            server.pool.start_request()
        return Request(self)

    def end_request(self) -> None:
        """End one level of the caller's request (the outermost returns the socket)."""
        for server in self._topology.servers:
            server.pool.end_request()

    def in_request(self) -> bool:
        """True when the calling thread or greenlet is inside a request."""
        return self._topology.servers[0].pool.in_request()

    # -- running commands ---------------------------------------------------
    def _checkout(self) -> tuple[Server, SocketInfo]:
        """A server and a socket for one operation (give it back with _checkin)."""
        server = self._topology.select_server()
        try:
            sock = server.pool.checkout()
        except ConnectionFailure as exc:
            self._on_error(server, exc)
            raise
        if self._kill_queue:
            self._kill_cursors(sock)
        return server, sock

    def _on_error(self, server: Server, exc: BaseException) -> None:
        """After a network failure the server is suspect until it answers again."""
        # A timeout says the server is slow, and a wait-queue timeout that
        # the pool is busy: neither means the server is gone.
        if isinstance(exc, AutoReconnect) and not isinstance(exc, NetworkTimeout):
            self._topology.mark_unknown(server, exc)

    def _command(
        self,
        dbname: str,
        cmd: dict[str, Any],
        codec_options: CodecOptions = DEFAULT_CODEC_OPTIONS,
        more_to_come: bool = False,
        sequences: tuple = (),
        check: bool = True,
    ) -> dict[str, Any] | None:
        """Run one command on a socket from the pool, and give the socket back."""
        server, sock = self._checkout()
        try:
            return sock.command(dbname, cmd, codec_options, more_to_come, sequences, check)
        except ConnectionFailure as exc:
            self._on_error(server, exc)
            raise
        finally:
            server.pool.checkin(sock)

    def _socket(self) -> "_SocketContext":
        """``with client._socket() as sock:`` for multi-message operations."""
        return _SocketContext(self)

    def _queue_kill(self, address: tuple[str, int], ns: str, cursor_id: int) -> None:
        """Called from cursor finalizers: kill the cursor on the next operation.

        A finalizer can run inside the garbage collector, anywhere, so it must
        not do network I/O or take locks; the next operation on this client
        (or :meth:`close`) sends the queued killCursors.
        """
        self._kill_queue.append((ns, cursor_id))

    def _kill_cursors(self, sock: SocketInfo, acknowledged: bool = False) -> None:
        """Send queued killCursors on ``sock``.

        Unacknowledged before an operation: the server applies one socket's
        messages in order, so they are done before the operation's reply.
        Acknowledged from :meth:`close`, which has no operation after them.
        """
        by_ns: dict[str, list[int]] = {}
        while self._kill_queue:
            try:
                ns, cid = self._kill_queue.popleft()
            except IndexError:
                break
            by_ns.setdefault(ns, []).append(cid)
        for ns, ids in by_ns.items():
            db, _, coll = ns.partition(".")
            sock.command(db, {"killCursors": coll, "cursors": ids}, more_to_come=not acknowledged, check=False)

    # -- databases ----------------------------------------------------------
    def get_database(self, name: str | None = None, **kwargs: Any) -> "Database":
        """Return a :class:`~mongo_requests.database.Database` (the URI's by default)."""
        if name is None:
            name = self._default_dbname
            if name is None:
                raise ConfigurationError("No default database name defined or provided.")
        return Database(self, name, **kwargs)

    def get_default_database(self) -> "Database":
        """The database named in the URI."""
        return self.get_database(None)

    def __getattr__(self, name: str) -> "Database":
        if name.startswith("_"):
            raise AttributeError(
                "MongoClient has no attribute %r. To access the %s database, use client[%r]." % (name, name, name)
            )
        # PyMongo 2 code writes client.db.coll.find_one(...) in its loops.
        # Databases are immutable, so keep this one in the instance dict:
        # the next client.db is a plain attribute hit instead of a failed
        # lookup, an AttributeError and a new Database (about 14k
        # instructions).  Only names spelled in code come here; client[name]
        # is not cached.
        db = self.__dict__[name] = self.get_database(name)
        return db

    def __getitem__(self, name: str) -> "Database":
        return self.get_database(name)

    @property
    def admin(self) -> "Database":
        """The ``admin`` database."""
        return self.get_database("admin")

    def server_info(self) -> dict[str, Any]:
        """The server's ``buildInfo``."""
        return self._command("admin", {"buildInfo": 1})  # type: ignore[return-value]

    def list_database_names(self) -> list[str]:
        """Names of every database on the server."""
        reply = self._command("admin", {"listDatabases": 1, "nameOnly": True})
        return [d["name"] for d in reply["databases"]]  # type: ignore[index]

    database_names = list_database_names  # the PyMongo 2 name

    def drop_database(self, name_or_database: Any) -> None:
        """Drop a database, given by name or as a Database."""
        name = getattr(name_or_database, "name", name_or_database)
        if not isinstance(name, str):
            raise TypeError("name_or_database must be a str or a Database")
        if not name or any(c in name for c in ' ./\\"$\x00'):
            raise InvalidName("invalid database name %r" % (name,))
        self._command(name, {"dropDatabase": 1}, check=True)

    # -- lifecycle ----------------------------------------------------------
    def close(self) -> None:
        """Close every socket.  Afterwards the client raises InvalidOperation."""
        if self._kill_queue and not self._topology.closed:
            try:
                # Straight from the pool: _checkout would flush the queue
                # unacknowledged before we get the socket.
                server = self._topology.select_server()
                sock = server.pool.checkout()
                try:
                    self._kill_cursors(sock, acknowledged=True)
                finally:
                    server.pool.checkin(sock)
            except PyMongoError:
                pass  # the server is gone, and its cursors with it
        self._topology.close()

    disconnect = close  # PyMongo 2

    def __enter__(self) -> "MongoClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        host, port = self.address
        return "%s(host=%r, port=%d, auto_start_request=%s, use_greenlets=%s)" % (
            type(self).__name__,
            host,
            port,
            self.auto_start_request,
            self.use_greenlets,
        )

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, MongoClient) and self.address == other.address and self is other

    def __hash__(self) -> int:
        return id(self)


class _SocketContext:
    """Checkout/checkin as a context manager, with the client's error handling."""

    __slots__ = ("_client", "_server", "sock")

    def __init__(self, client: MongoClient) -> None:
        self._client = client

    def __enter__(self) -> SocketInfo:
        self._server, self.sock = self._client._checkout()
        return self.sock

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is not None and isinstance(exc, ConnectionFailure):
            self._client._on_error(self._server, exc)
        self._server.pool.checkin(self.sock)


class Connection(MongoClient):
    """The PyMongo 2 spelling, with PyMongo 2's defaults.

    ``auto_start_request=True`` (each thread or greenlet keeps its socket)
    and unacknowledged writes (``safe=False``, that is ``w=0``).
    """

    _DEFAULTS: Mapping[str, Any] = {"auto_start_request": True, "w": 0}

    def __init__(self, host: str | None = None, port: int | None = None, **kwargs: Any) -> None:
        if "safe" in kwargs and "w" not in kwargs:
            kwargs["w"] = 1 if kwargs.pop("safe") else 0
        super().__init__(host, port, **kwargs)


from .database import Database  # noqa: E402  (circular: Database needs MongoClient's module)
