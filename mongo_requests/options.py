"""Client options: one table that says, for every option, how it is checked and whether we honour it.

Every URI option and every keyword argument of :class:`~mongo_requests.MongoClient` goes through
:data:`OPTIONS`.  An option is either *honoured* (validated, then used) or *refused* with the reason;
nothing is accepted and then ignored.  A refused option may still accept the values that describe what
the driver does anyway (``tls=false``, ``readPreference=primary``, ``minPoolSize=0``).

URI values arrive as strings (the URI is parsed with ``validate=False``), keyword values as Python
objects; each validator takes both, so ``socketTimeoutMS=0`` means the same in a URI and as a keyword.

To honour a refused option: drop its ``refused`` reason in :data:`_TABLE`, and read it from
:attr:`ClientOptions.raw` (or give it a field in :class:`ClientOptions`).
"""

from __future__ import annotations

import inspect
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from bson.codec_options import DEFAULT_CODEC_OPTIONS, CodecOptions
from pymongo import uri_parser
from pymongo import version as pymongo_version
from pymongo.read_preferences import (
    Primary,
    make_read_preference,
    read_pref_mode_from_name,
)
from pymongo.write_concern import WriteConcern

from .errors import ConfigurationError, InvalidURI, PyMongoError
from .handshake import ConnectionSetup, setup_from_options
from .option_validators import (
    _any,
    _appname,
    _boolean,
    _boolean_or_none,
    _callable_or_none,
    _compressors,
    _document_class,
    _heartbeat,
    _max_staleness,
    _mechanism_properties,
    _milliseconds,
    _non_negative_integer,
    _positive_integer,
    _read_preference,
    _seconds_from_ms,
    _string,
    _string_or_none,
    _tag_sets,
    _timeout_or_zero,
    _timeout_positive_or_none,
    _timeout_zero_is_none,
    _uuid_representation,
    _w,
    _zlib_level,
)
from .selection import validate_max_staleness

__all__ = ["ClientOptions", "Option", "OPTIONS", "redact_uri", "parse_host"]

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 27017

Validator = Callable[[str, Any], Any]


# -- the table -------------------------------------------------------------------------------------------
class Option(NamedTuple):
    """One client option.

    :param name: the canonical spelling (the URI's, or the keyword's when the URI has none).
    :param validate: ``(name, value) -> value``.
    :param aliases: other spellings (PyMongo 2 keywords), matched case-insensitively like ``name``.
    :param refused: why it is not supported, or None when it is honoured.
    :param allowed: for a refused option, the validated values that describe what we do anyway.
    :param uri: whether it may appear in a URI (else keyword only).
    """

    name: str
    validate: Validator
    aliases: tuple[str, ...] = ()
    refused: str | None = None
    allowed: Callable[[Any], bool] | None = None
    uri: bool = True


_NO_OCSP = "OCSP is not implemented: the driver never asks an OCSP responder (revocation: use tlsCRLFile)"


def _is_false(value: Any) -> bool:
    return value is False or value is None


def _is_true(value: Any) -> bool:
    return value is True or value is None


def _is_zero(value: Any) -> bool:
    return value in (0, None)


_TABLE: tuple[Option, ...] = (
    # Honoured.
    Option("maxPoolSize", _positive_integer, ("max_pool_size",)),
    Option("auto_start_request", _boolean, uri=False),
    Option("use_greenlets", _boolean_or_none, uri=False),
    Option("w", _w),
    Option("wTimeoutMS", _non_negative_integer, ("wtimeout",)),
    Option("journal", _boolean, ("j",)),
    Option("fsync", _boolean),
    Option("safe", _boolean, uri=False),
    Option("appname", _appname),
    Option("connectTimeoutMS", _timeout_zero_is_none),
    Option("socketTimeoutMS", _timeout_zero_is_none),
    Option("waitQueueTimeoutMS", _timeout_positive_or_none),
    Option("serverSelectionTimeoutMS", _timeout_or_zero),
    Option("document_class", _document_class, uri=False),
    Option("tz_aware", _boolean),
    Option("uuidRepresentation", _uuid_representation),
    Option("unicode_decode_error_handler", _string, uri=False),
    Option("tzinfo", _any, uri=False),
    Option("type_registry", _any, uri=False),
    Option("datetime_conversion", _any, uri=False),
    # Command listeners (checked by monitoring.Listeners.build; other kinds are refused there).
    Option("event_listeners", _any, uri=False),
    # One server, reached directly, whichever way it is asked for.
    Option("directConnection", _boolean),
    # Connections are always opened on first use, so connect=True/False both hold.
    Option("connect", _boolean, uri=False),
    # Retryable writes need a replica set (a standalone has no transaction numbers); reads retry anywhere.
    Option("retryWrites", _boolean),
    Option("retryReads", _boolean),
    # Replica sets: discovery, monitoring, server selection (see topology.py and selection.py).
    Option("replicaSet", _string),
    Option("readPreference", _read_preference, ("read_preference",)),
    Option("readPreferenceTags", _tag_sets, ("tag_sets",)),
    Option("maxStalenessSeconds", _max_staleness, ("max_staleness",)),
    Option("heartbeatFrequencyMS", _heartbeat),
    Option("localThresholdMS", _seconds_from_ms, ("secondary_acceptable_latency_ms",)),
    # Authentication, TLS, compression and mongodb+srv: mongo_requests.handshake.setup_from_options
    # turns them into the ConnectionSetup that every new connection runs.
    Option("username", _string_or_none, (), uri=False),
    Option("password", _string_or_none, (), uri=False),
    Option("authSource", _string),
    Option("authMechanism", _string),
    Option("authMechanismProperties", _mechanism_properties),
    Option("tls", _boolean, ("ssl",)),
    Option("tlsCAFile", _string, ("ssl_ca_certs",)),
    Option("tlsCertificateKeyFile", _string, ("ssl_certfile",)),
    Option("tlsCertificateKeyFilePassword", _string, ("ssl_pem_passphrase",)),
    Option("tlsAllowInvalidCertificates", _boolean),
    Option("tlsAllowInvalidHostnames", _boolean),
    Option("tlsInsecure", _boolean),
    Option("tlsCRLFile", _string, ("ssl_crlfile",)),
    Option("compressors", _compressors),
    Option("zlibCompressionLevel", _zlib_level),
    # Read by pymongo.uri_parser while it resolves a mongodb+srv:// URI.
    Option("srvServiceName", _string),
    Option("srvMaxHosts", _non_negative_integer),
    # For benchmarks: a new connection without the speculative authentication step.
    Option("speculativeAuthentication", _boolean, uri=False),
    # Refused: each says why, and which values are what we do anyway.
    Option("minPoolSize", _non_negative_integer, (), "the pool does not keep a minimum of idle sockets", _is_zero),
    Option("maxIdleTimeMS", _milliseconds, (), "the pool does not close idle sockets by age", _is_zero),
    Option("maxConnecting", _positive_integer, (), "connection attempts are not rate-limited"),
    Option("waitQueueMultiple", _any, (), "the wait queue is not bounded"),
    Option(
        "timeoutMS",
        _milliseconds,
        (),
        "client-side operation timeouts (CSOT) are not implemented yet; "
        "use socketTimeoutMS and serverSelectionTimeoutMS",
    ),
    Option("loadBalanced", _boolean, (), "load balancer mode is not implemented", _is_false),
    Option("tlsDisableOCSPEndpointCheck", _boolean, (), _NO_OCSP, _is_true),
    Option("tlsDisableCertificateRevocationCheck", _boolean, (), _NO_OCSP, _is_true),
    # PyMongo 2's spellings whose values mean the opposite of the tls* options': say which to use.
    Option(
        "ssl_cert_reqs", _any, (), "use tlsAllowInvalidCertificates=True instead of ssl_cert_reqs=CERT_NONE", uri=False
    ),
    Option(
        "ssl_match_hostname",
        _any,
        (),
        "use tlsAllowInvalidHostnames=True instead of ssl_match_hostname=False",
        uri=False,
    ),
    Option(
        "ssl_keyfile", _any, (), "put the key in the tlsCertificateKeyFile PEM file, with the certificate", uri=False
    ),
    Option(
        "ssl_context", _any, (), "an SSLContext cannot be made cooperative for gevent; use the tls* options", uri=False
    ),
    Option("readConcernLevel", _any, ("read_concern",), "read concerns are not implemented yet"),
    Option("server_api", _any, (), "the Stable API is not implemented yet", uri=False),
    Option("auto_encryption_opts", _any, (), "client-side field level encryption is not supported", uri=False),
    Option("slave_okay", _any, ("slaveOk",), "use readPreference=secondaryPreferred (PyMongo 3 removed slave_okay)"),
    Option(
        "serverMonitoringMode",
        _any,
        (),
        "servers are checked when an operation needs it, never in the background (see mongo_requests.monitor)",
    ),
)

#: Every option by lower-cased spelling (its name and each alias).
OPTIONS: Mapping[str, Option] = {spelling.lower(): opt for opt in _TABLE for spelling in (opt.name,) + opt.aliases}


def validate_option(key: str, value: Any, from_uri: bool = False) -> tuple[Option, Any]:
    """Look up, validate, and refuse-or-accept one option; returns ``(option, value)``."""
    opt = OPTIONS.get(key.lower())
    if opt is None or (from_uri and not opt.uri):
        raise ConfigurationError("Unknown option %s%s" % (key, " in the URI" if from_uri else ""))
    value = opt.validate(key, value)
    if opt.refused is not None and not (opt.allowed is not None and opt.allowed(value)):
        raise ConfigurationError("Option %s is not supported by mongo_requests: %s" % (key, opt.refused))
    return opt, value


# -- redaction ----------------------------------------------------------------------------------------------


_SECRET_QUERY = re.compile(r"(?i)((?:tlsCertificateKeyFilePassword|ssl_pem_passphrase)=)[^&#\s]*")


def redact_uri(text: str) -> str:
    """``text`` with the user information of every URI in it replaced by ``<redacted>``.

    The user information runs to the last ``@`` before the host list; a password that contains an
    unescaped ``/``, ``?`` or ``@`` is still covered, because we look for the last ``@`` of the whole
    URI (up to the next space), not the first.
    """

    def fix(uri: str) -> str:
        head, sep, rest = uri.partition("://")
        at = rest.rfind("@")
        if not sep or at < 0:
            return uri
        return "%s://<redacted>@%s" % (head, rest[at + 1 :])

    text = re.sub(r"[A-Za-z][A-Za-z0-9+.\-]*://\S*", lambda m: fix(m.group(0)), text)
    # Secret option values, such as a private key's password.
    return _SECRET_QUERY.sub(r"\1<redacted>", text)


def _secrets(uri: str) -> list[str]:
    """Spellings of the credentials in ``uri`` (raw and percent-decoded), longest first."""
    from urllib.parse import unquote_plus

    _, sep, rest = uri.partition("://")
    at = rest.rfind("@")
    if not sep or at < 0:
        return []
    userinfo = rest[:at]
    user, _, password = userinfo.partition(":")
    found = {userinfo, password, unquote_plus(password), unquote_plus(userinfo)}
    return sorted((s for s in found if s), key=len, reverse=True)


def scrub(message: str, uri: str) -> str:
    """``message`` with the credentials of ``uri`` removed, wherever they are quoted."""
    message = redact_uri(message)
    for secret in _secrets(uri):
        if len(secret) >= 4:
            message = message.replace(secret, "<redacted>")
        else:  # a short password: only as a token of its own, so words stay readable
            message = re.sub(r"(?<![A-Za-z0-9])%s(?![A-Za-z0-9])" % re.escape(secret), "<redacted>", message)
    return message


# -- hosts ------------------------------------------------------------------------------------------------
def _check_hostname(host: str, where: str) -> str:
    """Refuse host names the resolver would choke on (a label over 63 bytes raised UnicodeError)."""
    if not host:
        raise ConfigurationError("empty host name in %s" % (where,))
    if host.startswith("/") or host.endswith(".sock"):
        raise ConfigurationError("Unix domain sockets are not supported (%s)" % (where,))
    if ":" in host:  # an IPv6 literal
        return host
    try:
        host.encode("idna")
    except UnicodeError as exc:
        raise ConfigurationError("invalid host name %r: %s" % (host, exc)) from None
    return host


# PyMongo 4.19 added the hook; older parsers have no such parameter.
_PARSER_HAS_SRV_VALIDATOR = "srv_host_validator" in inspect.signature(uri_parser.parse_uri).parameters


def parse_host(
    host: str, port: int, srv_host_validator: Callable[[str], bool] | None = None
) -> tuple[list[tuple[str, int]], dict[str, Any], str | None, tuple[str | None, str | None]]:
    """Seeds, raw URI options, the URI's database, and the URI's ``(username, password)``.

    A ``mongodb+srv://`` URI is resolved here, by PyMongo's parser through dnspython: the SRV
    records give the seeds, a TXT record more options, and ``tls`` defaults to true.
    ``srv_host_validator`` is PyMongo's hook that replaces the rule that SRV targets share the
    SRV name's parent domain.
    """
    if "://" not in host:
        if host.startswith("["):  # [::1]:27017
            name, _, rest = host[1:].partition("]")
            rest = rest.lstrip(":")
        elif host.count(":") == 1:
            name, _, rest = host.partition(":")
        else:
            name, rest = host, ""
        if rest:
            try:
                port = int(rest)
            except ValueError:
                raise ConfigurationError("invalid port in %r" % (host,)) from None
            if not 0 < port < 65536:
                raise ConfigurationError("port must be from 1 to 65535 in %r" % (host,))
        return [(_check_hostname(name, repr(host)), port)], {}, None, (None, None)
    try:
        if srv_host_validator is not None:
            if not _PARSER_HAS_SRV_VALIDATOR:
                raise ConfigurationError(
                    "srv_host_validator needs PyMongo 4.19 or later (installed: %s)" % (pymongo_version,)
                )
            parsed = uri_parser.parse_uri(host, port, validate=False, srv_host_validator=srv_host_validator)
        else:
            parsed = uri_parser.parse_uri(host, port, validate=False)
    except (PyMongoError, ValueError, TypeError, OSError, UnicodeError) as exc:
        # pymongo's message may quote the credentials (a bad port after an unescaped password), and
        # so may the exception we would chain: say what is wrong without either.
        raise InvalidURI("invalid MongoDB URI %s: %s" % (redact_uri(host), scrub(str(exc), host))) from None
    where = "the URI %s" % (redact_uri(host),)
    seeds = [(_check_hostname(h, where), p) for h, p in parsed["nodelist"]]
    return seeds, dict(parsed["options"]), parsed.get("database"), (parsed.get("username"), parsed.get("password"))


def _read_preference_from(raw: Mapping[str, Any], heartbeat_frequency: float) -> Any:
    """The client's read preference: the mode, with the URI's (or keywords') tag sets and staleness."""
    mode = raw.get("readPreference")
    tag_sets = raw.get("readPreferenceTags")
    max_staleness = raw.get("maxStalenessSeconds")
    if mode is None:
        if tag_sets or max_staleness not in (None, -1):
            raise ConfigurationError(
                "readPreferenceTags and maxStalenessSeconds need a readPreference other than primary"
            )
        return Primary()
    if tag_sets is not None or max_staleness is not None:
        try:
            mode = make_read_preference(
                read_pref_mode_from_name(mode.mongos_mode),
                tag_sets if tag_sets is not None else mode.tag_sets,
                max_staleness if max_staleness is not None else mode.max_staleness,
            )
        except (PyMongoError, TypeError, ValueError) as exc:
            raise ConfigurationError(str(exc)) from None
    validate_max_staleness(mode, heartbeat_frequency)
    return mode


# -- the value the client reads ----------------------------------------------------------------------------
# Never shown: in a repr, these values are replaced by <redacted>.  authMechanismProperties
# too: PyMongo's MONGODB-AWS carries AWS_SESSION_TOKEN there, and a URI written for it is accepted.
_SECRET_OPTIONS = frozenset(("username", "password", "tlsCertificateKeyFilePassword", "authMechanismProperties"))


@dataclass(frozen=True)
class ClientOptions:
    """The validated options of one client (immutable).

    :param seeds: ``(host, port)`` pairs.
    :param raw: every option given, by canonical name, validated (keywords override the URI).
    """

    seeds: tuple[tuple[str, int], ...]
    database: str | None
    max_pool_size: int
    auto_start_request: bool
    use_greenlets: bool | None
    connect_timeout: float | None
    socket_timeout: float | None
    wait_queue_timeout: float | None
    server_selection_timeout: float
    appname: str | None
    write_concern: WriteConcern
    codec_options: CodecOptions[Any]
    replica_set: str | None = None
    direct_connection: bool | None = None
    read_preference: Any = None
    heartbeat_frequency: float = 10.0
    local_threshold: float = 0.015
    retry_writes: bool = True
    retry_reads: bool = True
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    #: TLS, credentials and compressors for new connections (a handshake.ConnectionSetup), or None.
    setup: ConnectionSetup | None = None

    @classmethod
    def parse(
        cls,
        host: Any = None,
        port: Any = None,
        defaults: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> ClientOptions:
        """Options from the constructor's ``host``, ``port``, class defaults and keywords."""
        if host is None:
            host = DEFAULT_HOST
        if port is None:
            port = DEFAULT_PORT
        if not isinstance(port, int) or isinstance(port, bool):
            raise TypeError("port must be an instance of int, not %s" % (type(port).__name__,))
        if not 0 < port < 65536:
            raise ConfigurationError("port must be an integer from 1 to 65535, not %r" % (port,))
        if not isinstance(host, str):
            raise TypeError("host must be a string, not %r" % (type(host).__name__,))
        validator = _callable_or_none("srv_host_validator", kwargs.pop("srv_host_validator", None))
        seeds, uri_opts, database, (username, password) = parse_host(host, port, validator)
        raw: dict[str, Any] = {}
        for key, value in (defaults or {}).items():
            raw[OPTIONS[key.lower()].name] = value
        given: set[str] = set()
        for key, value in uri_opts.items():
            if isinstance(value, list):  # readPreferenceTags may repeat (one tag set each); nothing else may
                if OPTIONS.get(key.lower()) is None or OPTIONS[key.lower()].name != "readPreferenceTags":
                    raise ConfigurationError("Option %s is given more than once in the URI" % (key,))
            opt, value = validate_option(key, value, from_uri=True)
            raw[opt.name] = value
            given.add(opt.name)
        for key, value in kwargs.items():
            opt, value = validate_option(key, value)
            raw[opt.name] = value
            given.add(opt.name)
        # Credentials in the URI, unless keywords gave them.
        if username is not None:
            raw.setdefault("username", username)
        if password is not None:
            raw.setdefault("password", password)
        if "safe" in given:
            # PyMongo 2: safe=True is w=1 and safe=False is w=0, unless w says otherwise; a class default
            # for w (Connection's w=0) gives way to an explicit safe.
            if "w" not in given:
                raw["w"] = 1 if raw["safe"] else 0
            elif raw["safe"] != (raw["w"] != 0):
                raise ConfigurationError("safe=%r contradicts w=%r" % (raw["safe"], raw["w"]))
        return cls(
            seeds=tuple(seeds),
            database=database,
            max_pool_size=raw.get("maxPoolSize", 100),
            auto_start_request=raw.get("auto_start_request", False),
            use_greenlets=raw.get("use_greenlets"),
            connect_timeout=raw.get("connectTimeoutMS", 20.0),
            socket_timeout=raw.get("socketTimeoutMS"),
            wait_queue_timeout=raw.get("waitQueueTimeoutMS"),
            server_selection_timeout=raw.get("serverSelectionTimeoutMS", 30.0),
            appname=raw.get("appname"),
            write_concern=_write_concern(raw),
            codec_options=_codec_options(raw),
            replica_set=raw.get("replicaSet"),
            direct_connection=raw.get("directConnection"),
            read_preference=_read_preference_from(raw, raw.get("heartbeatFrequencyMS", 10.0)),
            heartbeat_frequency=raw.get("heartbeatFrequencyMS", 10.0),
            local_threshold=raw.get("localThresholdMS", 0.015),
            retry_writes=raw.get("retryWrites", True),
            retry_reads=raw.get("retryReads", True),
            raw=types.MappingProxyType(raw),  # read-only, like the rest of the value
            setup=setup_from_options(raw, database),
        )

    def __repr__(self) -> str:
        fields = ", ".join(
            "%s=%s" % (k, "<redacted>" if k in _SECRET_OPTIONS and v is not None else repr(v))
            for k, v in sorted(self.raw.items())
        )
        return "ClientOptions(seeds=%r, %s)" % (list(self.seeds), fields)


def _write_concern(raw: Mapping[str, Any]) -> WriteConcern:
    """The client's default write concern from w / safe / journal / wTimeoutMS / fsync."""
    w = raw.get("w")
    safe = raw.get("safe")
    if w is None and safe is not None:
        w = 1 if safe else 0
    wc: dict[str, Any] = {}
    if w is not None:
        wc["w"] = w
    if raw.get("wTimeoutMS") is not None:
        wc["wtimeout"] = raw["wTimeoutMS"]
    if raw.get("journal") is not None:
        wc["j"] = raw["journal"]
    if raw.get("fsync") is not None:
        wc["fsync"] = raw["fsync"]
    try:
        return WriteConcern(**wc)
    except (PyMongoError, TypeError, ValueError) as exc:
        raise ConfigurationError("invalid write concern %r: %s" % (wc, exc)) from None


_CODEC_KEYS = {
    "document_class": "document_class",
    "tz_aware": "tz_aware",
    "uuidRepresentation": "uuid_representation",
    "unicode_decode_error_handler": "unicode_decode_error_handler",
    "tzinfo": "tzinfo",
    "type_registry": "type_registry",
    "datetime_conversion": "datetime_conversion",
}


def _codec_options(raw: Mapping[str, Any]) -> CodecOptions[Any]:
    kwargs = {arg: raw[name] for name, arg in _CODEC_KEYS.items() if name in raw}
    if not kwargs:
        return DEFAULT_CODEC_OPTIONS
    try:
        codec = CodecOptions(**kwargs)
    except ValueError as exc:  # CodecOptions raises TypeError for wrong types, ValueError for bad values
        raise ConfigurationError(str(exc)) from None
    return DEFAULT_CODEC_OPTIONS if codec == DEFAULT_CODEC_OPTIONS else codec
