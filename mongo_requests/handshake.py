"""What a new connection does between TCP connect and its first operation.

:class:`ConnectionSetup` is one small immutable value built by the client
from its options and handed, through the pool, to
:meth:`SocketInfo.connect <mongo_requests.socket_info.SocketInfo.connect>`:

1. **TLS**: wrap the TCP socket before anything is sent;
2. **hello**: add the compressors we offer and ``speculativeAuthenticate``
   (plus ``saslSupportedMechs`` when the mechanism is to be negotiated);
3. **authenticate**: finish the speculative conversation, or run a full one;
4. **compression**: switch the connection to the negotiated compressor.

Authentication runs before compression is switched on, so no SASL message
is ever compressed.  A connection without compression stays a plain
:class:`~mongo_requests.socket_info.SocketInfo`: the hot path of a client
that did not ask for compression is exactly what it was.  A compressed one
becomes a :class:`CompressedSocketInfo`, whose ``send`` and ``roundtrip``
wrap and unwrap OP_COMPRESSED with :mod:`mongo_requests.compression`.
"""

from __future__ import annotations

from typing import Any

from bson.codec_options import DEFAULT_CODEC_OPTIONS, CodecOptions

from . import compression, wire
from .auth import Credentials, credentials_from_options
from .errors import ConfigurationError, ProtocolError
from .socket_info import SocketInfo
from .tls import TLS_DETAIL_OPTIONS, TLSOptions, tls_options_from

__all__ = ["ConnectionSetup", "CompressedSocketInfo", "SECURITY_OPTIONS", "setup_from_options"]


class ConnectionSetup:
    """TLS, credentials and compressors for every new connection of a client.

    :param tls: :class:`~mongo_requests.tls.TLSOptions`, or None for plain TCP.
    :param credentials: :class:`~mongo_requests.auth.Credentials`, or None.
    :param compressors: names to offer, in order of preference.
    :param zlib_level: ``zlibCompressionLevel`` (-1 is zlib's default).
    :param speculative: fold the first authentication step into ``hello``
        (on by default; off only to measure what it saves).
    """

    __slots__ = ("tls", "credentials", "compressors", "zlib_level", "speculative")

    tls: TLSOptions | None
    credentials: Credentials | None
    compressors: tuple[str, ...]
    zlib_level: int
    speculative: bool

    def __init__(
        self,
        tls: TLSOptions | None = None,
        credentials: Credentials | None = None,
        compressors: tuple[str, ...] = (),
        zlib_level: int = -1,
        speculative: bool = True,
    ) -> None:
        set_ = object.__setattr__
        set_(self, "tls", tls)
        set_(self, "credentials", credentials)
        set_(self, "compressors", tuple(compressors))
        set_(self, "zlib_level", zlib_level)
        set_(self, "speculative", bool(speculative))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ConnectionSetup is immutable")

    def __repr__(self) -> str:
        return "ConnectionSetup(tls=%r, credentials=%r, compressors=%r)" % (
            self.tls,
            self.credentials,
            self.compressors,
        )

    def __bool__(self) -> bool:
        return bool(self.tls or self.credentials or self.compressors)

    def for_monitoring(self) -> ConnectionSetup | None:
        """The setup of a heartbeat connection: the same TLS, nothing else.

        The server monitoring specification says monitoring sockets MUST NOT
        authenticate nor negotiate a SCRAM mechanism (``saslSupportedMechs``):
        a heartbeat runs only ``hello``, which needs no user, and a SASL
        conversation per check would cost the server more than the check.  No
        compression either: a ``hello`` is too small to gain from it.
        """
        if self.tls is None:
            return None
        return ConnectionSetup(self.tls)

    # -- the hooks SocketInfo.connect calls ---------------------------------
    def wrap(self, sock: Any, address: tuple[str, int], ssl_module: Any) -> Any:
        """Step 1: the TLS socket for ``sock`` (``sock`` itself without TLS)."""
        if self.tls is None:
            return sock
        return self.tls.wrap(sock, address[0], address[1], ssl_module)

    def hello_fields(self, hello: dict[str, Any]) -> Any:
        """Step 2: add our fields to the first hello; returns state for :meth:`after_hello`."""
        if self.compressors:
            hello["compression"] = list(self.compressors)
        creds = self.credentials
        if creds is None:
            return None
        if not self.speculative:
            # Still negotiate the mechanism in the hello: that is free.
            if creds.mechanism is None:
                hello["saslSupportedMechs"] = "%s.%s" % (creds.source, creds.username)
            return _NO_SPECULATION
        return creds.hello_fields(hello)

    def after_hello(self, info: SocketInfo, reply: dict[str, Any], state: Any) -> None:
        """Steps 3 and 4: authenticate, then switch on compression."""
        creds = self.credentials
        if creds is not None:
            if state is _NO_SPECULATION:
                state = _speculation_refused(creds, reply)
            creds.finish(info, reply, state)
            # The hello is kept (pool.hello, the topology's description): keep
            # the SCRAM exchange out of it.
            reply.pop("speculativeAuthenticate", None)
        if self.compressors:
            compressor = compression.negotiate(self.compressors, reply.get("compression"), self.zlib_level)
            if compressor is not None:
                info.__class__ = _compressed_class(compressor)


class _NoSpeculation:
    """Marker: the hello carried no speculativeAuthenticate."""


_NO_SPECULATION = _NoSpeculation()


def _speculation_refused(creds: Credentials, reply: dict[str, Any]) -> Any:
    """A conversation that will run in full (the hello carried nothing to resume)."""
    reply.pop("speculativeAuthenticate", None)
    return creds.hello_fields({})


class CompressedSocketInfo(SocketInfo):
    """A connection that negotiated compression: OP_COMPRESSED both ways.

    Same slots as :class:`SocketInfo`, so a handshaken socket becomes one by
    changing its class.  Each subclass made by :func:`_compressed_class`
    holds its compressor as a class attribute.
    """

    __slots__ = ()
    compressor: compression.Compressor

    def send(self, msg: bytes) -> None:
        SocketInfo.send(self, compression.compress_message(msg, self.compressor))

    def roundtrip(
        self, msg: bytes, request_id: int, codec_options: CodecOptions[Any] = DEFAULT_CODEC_OPTIONS
    ) -> dict[str, Any]:
        op, message = self._roundtrip_raw(compression.compress_message(msg, self.compressor), request_id)
        try:
            if op == compression.OP_COMPRESSED:
                op, body = compression.decompress_body(message[16:], self.max_message_size)
                if op == wire.OP_MSG:
                    return wire.unpack_msg_reply(body, codec_options)
            elif op == wire.OP_MSG:  # a reply the server chose not to compress
                return wire.unpack_msg(message, codec_options)
            raise ProtocolError("%s:%d: expected an OP_MSG reply, got opcode %d" % (self.address + (op,)))
        except BaseException:
            # What follows an undecodable reply on the stream cannot be trusted.
            self.close()
            raise


_classes: dict[compression.Compressor, type] = {}


def _compressed_class(compressor: compression.Compressor) -> type:
    """The CompressedSocketInfo subclass for one compressor (made once: compressors are memoized)."""
    cls = _classes.get(compressor)
    if cls is None:
        cls = _classes[compressor] = type(
            "CompressedSocketInfo_%s" % compressor.name,
            (CompressedSocketInfo,),
            {"__slots__": (), "compressor": compressor},
        )
    return cls


# Option names (canonical spelling) that setup_from_options reads.
SECURITY_OPTIONS = (
    "username",
    "password",
    "authSource",
    "authMechanism",
    "authMechanismProperties",
    "tls",
    "ssl",
    *TLS_DETAIL_OPTIONS,
    "compressors",
    "zlibCompressionLevel",
    "speculativeAuthentication",
)


def setup_from_options(options: dict[str, Any], database: str | None = None) -> ConnectionSetup | None:
    """The client's :class:`ConnectionSetup` from its options, or None when there is nothing to set up.

    :param options: canonical option names (see :data:`SECURITY_OPTIONS`).
    :param database: the URI's database, the default ``authSource``.
    """
    creds = credentials_from_options(options.get("username"), options.get("password"), options, database)
    tls = tls_options_from(options)
    compressors = compression.parse_compressors(options.get("compressors"))
    level = compression.check_zlib_level(options.get("zlibCompressionLevel"))
    if creds is not None and creds.mechanism == "MONGODB-X509" and (tls is None or tls.cert_key_file is None):
        raise ConfigurationError("MONGODB-X509 needs tls=true and a client certificate (tlsCertificateKeyFile)")
    speculative = options.get("speculativeAuthentication", True)
    setup = ConnectionSetup(tls, creds, compressors, level, True if speculative is None else bool(speculative))
    return setup if setup else None
