"""TLS: the options, the SSL context, and wrapping a freshly connected socket.

A client that asked for TLS wraps each TCP socket before a single byte of
MongoDB protocol goes out: the TLS handshake is the first thing on the wire,
so nothing is ever sent in plaintext.  Certificates are verified against
``tlsCAFile`` (or the system's CAs), and the server's host name is checked
(with SNI) unless ``tlsAllowInvalidHostnames`` or ``tlsInsecure`` says
otherwise.

In greenlet mode the context comes from ``gevent.ssl``, whose sockets wait
on gevent's hub, with or without monkey-patching; the caller identity hands
out the right ``ssl`` module, the way it hands out ``socket``.  An
``SSLContext`` is built once per ``ssl`` module and shared by every socket.
"""

from __future__ import annotations

import os
import ssl as _stdssl
import threading
from typing import Any

from .errors import AutoReconnect, ConfigurationError, ConnectionFailure, NetworkTimeout

# The TLS options beyond tls/ssl themselves (canonical spelling); the
# handshake module lists them among everything a connection's setup reads.
TLS_DETAIL_OPTIONS = (
    "tlsCAFile",
    "tlsCertificateKeyFile",
    "tlsCertificateKeyFilePassword",
    "tlsAllowInvalidCertificates",
    "tlsAllowInvalidHostnames",
    "tlsInsecure",
    "tlsCRLFile",
)

__all__ = ["TLSOptions"]

_REDACTED = "<redacted>"


class TLSOptions:
    """Immutable TLS settings of a client (``repr`` hides the key password).

    :param ca_file: ``tlsCAFile``: PEM file of the CAs to trust (default:
        the system's).
    :param cert_key_file: ``tlsCertificateKeyFile``: PEM file with the client
        certificate and its private key (for MONGODB-X509, or servers that
        require client certificates).
    :param cert_key_password: ``tlsCertificateKeyFilePassword``.
    :param allow_invalid_certificates: ``tlsAllowInvalidCertificates``: do not
        verify the server's certificate at all (testing only).
    :param allow_invalid_hostnames: ``tlsAllowInvalidHostnames``: verify the
        certificate chain but not that it names the host.
    :param crl_file: ``tlsCRLFile``: a PEM certificate revocation list.
    """

    __slots__ = (
        "ca_file",
        "cert_key_file",
        "_cert_key_password",
        "allow_invalid_certificates",
        "allow_invalid_hostnames",
        "crl_file",
        "_contexts",
        "_lock",
    )

    ca_file: str | None
    cert_key_file: str | None
    _cert_key_password: str | None
    allow_invalid_certificates: bool
    allow_invalid_hostnames: bool
    crl_file: str | None
    _contexts: dict[str, Any]
    _lock: Any

    def __init__(
        self,
        ca_file: str | None = None,
        cert_key_file: str | None = None,
        cert_key_password: str | None = None,
        allow_invalid_certificates: bool = False,
        allow_invalid_hostnames: bool = False,
        crl_file: str | None = None,
    ) -> None:
        for name, path in (("tlsCAFile", ca_file), ("tlsCertificateKeyFile", cert_key_file), ("tlsCRLFile", crl_file)):
            if path is not None:
                if not isinstance(path, str):
                    raise TypeError("%s must be a file name, not %r" % (name, type(path).__name__))
                if not os.path.isfile(path):
                    raise ConfigurationError("%s %r is not a readable file" % (name, path))
        if cert_key_password is not None and not isinstance(cert_key_password, str):
            raise TypeError("tlsCertificateKeyFilePassword must be a string")
        set_ = object.__setattr__
        set_(self, "ca_file", ca_file)
        set_(self, "cert_key_file", cert_key_file)
        set_(self, "_cert_key_password", cert_key_password)
        set_(self, "allow_invalid_certificates", bool(allow_invalid_certificates))
        set_(self, "allow_invalid_hostnames", bool(allow_invalid_hostnames or allow_invalid_certificates))
        set_(self, "crl_file", crl_file)
        set_(self, "_contexts", {})
        set_(self, "_lock", threading.Lock())
        # Build the stdlib context now: a bad file or a wrong key password
        # is a configuration error the user should see from the constructor,
        # not a connection failure retried until serverSelectionTimeoutMS.
        self.context(_stdssl)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("TLSOptions is immutable")

    def __repr__(self) -> str:
        return (
            "TLSOptions(ca_file=%r, cert_key_file=%r, cert_key_password=%s, allow_invalid_certificates=%s, "
            "allow_invalid_hostnames=%s, crl_file=%r)"
            % (
                self.ca_file,
                self.cert_key_file,
                _REDACTED if self._cert_key_password is not None else None,
                self.allow_invalid_certificates,
                self.allow_invalid_hostnames,
                self.crl_file,
            )
        )

    def __reduce__(self) -> Any:
        raise TypeError("TLSOptions cannot be pickled")

    def context(self, ssl_module: Any = _stdssl) -> Any:
        """The ``SSLContext`` for sockets of ``ssl_module`` (stdlib ``ssl`` or ``gevent.ssl``)."""
        name = ssl_module.__name__
        ctx = self._contexts.get(name)
        if ctx is None:
            with self._lock:
                ctx = self._contexts.get(name)
                if ctx is None:
                    ctx = self._contexts[name] = self._build(ssl_module)
        return ctx

    def _build(self, ssl_module: Any) -> Any:
        """Make one SSLContext from the options."""
        ctx = ssl_module.SSLContext(_stdssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = _stdssl.TLSVersion.TLSv1_2
        try:
            if self.allow_invalid_certificates:
                ctx.check_hostname = False
                ctx.verify_mode = _stdssl.CERT_NONE
            else:
                ctx.check_hostname = not self.allow_invalid_hostnames
                ctx.verify_mode = _stdssl.CERT_REQUIRED
                if self.ca_file:
                    ctx.load_verify_locations(cafile=self.ca_file)
                else:
                    ctx.load_default_certs(_stdssl.Purpose.SERVER_AUTH)
                if self.crl_file:
                    ctx.load_verify_locations(cafile=self.crl_file)
                    ctx.verify_flags |= _stdssl.VERIFY_CRL_CHECK_LEAF
            if self.cert_key_file:
                ctx.load_cert_chain(self.cert_key_file, password=self._cert_key_password)
        except _stdssl.SSLError as exc:
            # OpenSSL's reason names the file's problem, never the password.
            raise ConfigurationError("TLS configuration error: %s" % (exc.reason or exc,)) from None
        except OSError as exc:
            raise ConfigurationError("TLS configuration error: %s" % (exc.strerror or exc,)) from None
        return ctx

    def wrap(self, sock: Any, host: str, port: int, ssl_module: Any = _stdssl) -> Any:
        """Run the TLS handshake on a connected socket; return the TLS socket.

        The host name goes out as SNI and is checked against the server's
        certificate.  A failed handshake closes the TCP socket.  A certificate
        that fails verification (untrusted, revoked, expired, or naming another
        host) raises :class:`~pymongo.errors.ConnectionFailure` whose message
        names the cause: that answer will not change by trying again, so server
        selection gives up at once instead of retrying until
        ``serverSelectionTimeoutMS``.  Other handshake failures are network
        errors: :class:`~pymongo.errors.AutoReconnect` (``NetworkTimeout`` for a
        timeout), retried as usual.
        """
        ctx = self.context(ssl_module)
        try:
            # server_hostname also carries an IP address: Python then skips
            # SNI (not allowed for IPs) but still matches the IP address SAN.
            return ctx.wrap_socket(sock, server_hostname=host)
        except BaseException as exc:
            sock.close()
            if isinstance(exc, _stdssl.SSLCertVerificationError):
                hint = (
                    "; set tlsAllowInvalidHostnames=true only if you trust this network"
                    if "mismatch" in (exc.verify_message or "") or "match" in str(exc)
                    else "; check tlsCAFile"
                )
                raise ConnectionFailure(
                    "%s:%d: TLS certificate verification failed: %s%s"
                    % (host, port, exc.verify_message or exc.reason or exc, hint)
                ) from None
            if isinstance(exc, TimeoutError):
                raise NetworkTimeout("%s:%d: TLS handshake timed out" % (host, port)) from None
            if isinstance(exc, _stdssl.SSLError):
                raise AutoReconnect("%s:%d: TLS handshake failed: %s" % (host, port, exc.reason or exc)) from None
            if isinstance(exc, OSError):
                raise AutoReconnect("%s:%d: TLS handshake failed: %s" % (host, port, exc)) from None
            raise


def tls_options_from(options: dict[str, Any]) -> TLSOptions | None:
    """:class:`TLSOptions` from canonical option names, or None when TLS is off.

    Understands ``tls``/``ssl``, ``tlsCAFile``, ``tlsCertificateKeyFile``,
    ``tlsCertificateKeyFilePassword``, ``tlsAllowInvalidCertificates``,
    ``tlsAllowInvalidHostnames``, ``tlsInsecure`` and ``tlsCRLFile``.  Any
    tls* option but ``tls=false`` turns TLS on.
    """
    tls = options.get("tls", options.get("ssl"))
    if "tls" in options and "ssl" in options and bool(options["tls"]) != bool(options["ssl"]):
        raise ConfigurationError("tls and ssl must not disagree")
    details = {k: options.get(k) for k in TLS_DETAIL_OPTIONS}
    if tls is False:
        if any(v not in (None, False) for v in details.values()):
            raise ConfigurationError("TLS options were given, but tls=false")
        return None
    if not tls and all(v in (None, False) for v in details.values()):
        return None
    insecure = bool(details["tlsInsecure"])
    # (pymongo's URI parser spells tlsInsecure=true out as both allow options
    # set to true, so only a contradiction is an error.)
    if insecure and (details["tlsAllowInvalidCertificates"] is False or details["tlsAllowInvalidHostnames"] is False):
        raise ConfigurationError(
            "tlsInsecure cannot be combined with tlsAllowInvalidCertificates or tlsAllowInvalidHostnames"
        )
    return TLSOptions(
        ca_file=details["tlsCAFile"],
        cert_key_file=details["tlsCertificateKeyFile"],
        cert_key_password=details["tlsCertificateKeyFilePassword"],
        allow_invalid_certificates=insecure or bool(details["tlsAllowInvalidCertificates"]),
        allow_invalid_hostnames=insecure or bool(details["tlsAllowInvalidHostnames"]),
        crl_file=details["tlsCRLFile"],
    )
