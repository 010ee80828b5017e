"""Authentication: credentials, SCRAM-SHA-256/SCRAM-SHA-1 and MONGODB-X509.

Authentication happens once per connection, inside its handshake
(:mod:`mongo_requests.handshake` calls this module).  The first ``hello``
carries ``speculativeAuthenticate`` (the first SCRAM message, or the whole
X.509 ``authenticate``), so a server that accepts it answers the first step
in the same round trip.  Without a mechanism, the hello also asks for the
user's ``saslSupportedMechs`` and SCRAM-SHA-256 is preferred, as the MongoDB
authentication specification says.

SCRAM uses `scramp <https://pypi.org/project/scramp/>`_: a maintained,
tested implementation (nonces, SASLprep, username escaping, message parsing,
verification of the server's signature), so this module contains no
hand-written SCRAM protocol.  One step is ours: scramp has no way to be given
keys it derived before, and PBKDF2 with MongoDB's 15,000 iterations costs
milliseconds per connection.  So :class:`_CachingScramClient` derives the
client and server keys through a per-credential cache keyed by salt and
iteration count (PBKDF2 and HMAC are :mod:`hashlib`/:mod:`hmac`'s), and
computes the proof from them as RFC 5802 defines it.

Credentials are a small immutable value whose ``repr`` hides the user name and
the password; neither ever goes into an exception, a log record, or an
exception's ``args``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
from collections.abc import Callable, Mapping
from typing import Any

from bson.binary import Binary
from bson.son import SON

from .errors import ConfigurationError, OperationFailure

__all__ = ["Credentials", "MECHANISMS", "credentials_from_options"]

MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1", "MONGODB-X509", "DEFAULT")
# The specification's floor: fewer iterations mean a server (or an attacker
# posing as one) is asking for a cheap-to-crack proof.
_MIN_ITERATIONS = 4096
_HASHES: Mapping[str, Callable[..., Any]] = {"SCRAM-SHA-1": hashlib.sha1, "SCRAM-SHA-256": hashlib.sha256}
_REDACTED = "<redacted>"


class _ScramCache:
    """Keys derived from a password, by (mechanism, salt, iterations).

    A server salts a user's password once, when the user is created, so
    every connection to it sees the same salt and count, and the expensive
    PBKDF2 runs once per process instead of once per connection.
    """

    __slots__ = ("_keys", "_lock")

    def __init__(self) -> None:
        self._keys: dict[tuple[str, bytes, int], tuple[bytes, bytes]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, bytes, int]) -> tuple[bytes, bytes] | None:
        return self._keys.get(key)

    def put(self, key: tuple[str, bytes, int], value: tuple[bytes, bytes]) -> None:
        with self._lock:
            # A user's salt changes only when its password does; keep a few
            # entries so a password change cannot grow the cache forever.
            if len(self._keys) >= 8:
                self._keys.clear()
            self._keys[key] = value

    def __len__(self) -> int:
        return len(self._keys)


class Credentials:
    """Who to authenticate as, and how (immutable; ``repr`` is redacted).

    :param username: the user name (optional for MONGODB-X509, where the
        server takes it from the client certificate).
    :param password: the password (SCRAM only).
    :param source: the database that holds the user (``authSource``); by
        default the URI's database, else ``admin``, and ``$external`` for X.509.
    :param mechanism: ``SCRAM-SHA-256``, ``SCRAM-SHA-1``, ``MONGODB-X509``,
        or None to negotiate a SCRAM mechanism with the server.
    :param mechanism_properties: ``authMechanismProperties`` (none are used
        by these mechanisms; kept so a URI written for PyMongo is accepted).
    """

    __slots__ = ("username", "_password", "source", "mechanism", "mechanism_properties", "_cache")

    username: str | None
    _password: str | None
    source: str
    mechanism: str | None
    mechanism_properties: Mapping[str, Any]
    _cache: _ScramCache

    def __init__(
        self,
        username: str | None,
        password: str | None,
        source: str | None = None,
        mechanism: str | None = None,
        mechanism_properties: Mapping[str, Any] | None = None,
    ) -> None:
        if mechanism is not None:
            mechanism = mechanism.upper()
            if mechanism == "DEFAULT":
                mechanism = None
            elif mechanism not in MECHANISMS:
                raise ConfigurationError(
                    "authMechanism %r is not supported; use SCRAM-SHA-256, SCRAM-SHA-1 or MONGODB-X509" % (mechanism,)
                )
        if username is not None and not isinstance(username, str):
            raise TypeError("username must be a string")
        if password is not None and not isinstance(password, str):
            raise TypeError("password must be a string")
        if mechanism == "MONGODB-X509":
            if password is not None:
                raise ConfigurationError("MONGODB-X509 takes no password: the client certificate proves who you are")
            if source not in (None, "$external"):
                raise ConfigurationError("MONGODB-X509 users live in the $external database, not %r" % (source,))
            source = "$external"
        else:
            if not username:
                raise ConfigurationError("a user name is required for %s" % (mechanism or "SCRAM authentication",))
            if password is None:
                raise ConfigurationError("a password is required for %s" % (mechanism or "SCRAM authentication",))
            _require_scramp()
        set_ = object.__setattr__
        set_(self, "username", username)
        set_(self, "_password", password)
        set_(self, "source", source or "admin")
        set_(self, "mechanism", mechanism)
        set_(self, "mechanism_properties", dict(mechanism_properties or {}))
        set_(self, "_cache", _ScramCache())

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Credentials are immutable")

    def __repr__(self) -> str:
        return "Credentials(mechanism=%r, source=%r, username=%s, password=%s)" % (
            self.mechanism or "DEFAULT",
            self.source,
            _REDACTED if self.username else None,
            _REDACTED if self._password is not None else None,
        )

    __str__ = __repr__

    def __reduce__(self) -> Any:
        # Pickling would write the password somewhere: refuse.
        raise TypeError("Credentials cannot be pickled")

    @property
    def cached_keys(self) -> int:
        """How many derived SCRAM key pairs are cached (for tests and stats)."""
        return len(self._cache)

    # -- the handshake's two halves ----------------------------------------
    def hello_fields(self, hello: dict[str, Any]) -> _Conversation:
        """Add ``saslSupportedMechs`` and ``speculativeAuthenticate`` to the first hello.

        Returns the conversation to finish with :meth:`finish` once the reply
        has come.
        """
        if self.mechanism == "MONGODB-X509":
            conv: _Conversation = _X509Conversation(self)
        else:
            if self.mechanism is None:
                hello["saslSupportedMechs"] = "%s.%s" % (self.source, self.username)
            # Without a mechanism the speculative attempt uses SCRAM-SHA-256,
            # the specification's choice; negotiation corrects it if needed.
            conv = _ScramConversation(self, self.mechanism or "SCRAM-SHA-256")
        hello["speculativeAuthenticate"] = conv.speculative()
        return conv

    def finish(self, sock: Any, hello_reply: Mapping[str, Any], conv: _Conversation) -> None:
        """Complete authentication on ``sock`` after the hello.

        :raises OperationFailure: (code 18) when the server refuses.
        """
        spec = hello_reply.get("speculativeAuthenticate")
        if spec is not None and conv.accepts(spec):
            conv.resume(sock, spec)
            return
        if self.mechanism is None and isinstance(conv, _ScramConversation):
            mechs = hello_reply.get("saslSupportedMechs") or ()
            mechanism = "SCRAM-SHA-256" if "SCRAM-SHA-256" in mechs else "SCRAM-SHA-1"
            if mechanism != conv.mechanism:
                conv = _ScramConversation(self, mechanism)
        else:
            conv = type(conv)(self, conv.mechanism) if isinstance(conv, _ScramConversation) else _X509Conversation(self)
        conv.run(sock)


# The first scramp release whose client API _CachingScramClient fits (1.4 differs:
# it SASLpreps the user name it is given and keeps salts base64-encoded).
_SCRAMP_MIN = (1, 5)


def _require_scramp() -> None:
    """Refuse SCRAM up front when scramp is missing or too old (an install that skipped install_requires)."""
    from importlib import metadata

    try:
        import scramp  # noqa: F401

        version = metadata.version("scramp")
    except (ImportError, metadata.PackageNotFoundError):
        version = None
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) if version else ()
    if len(parts) < 2 or parts < _SCRAMP_MIN:
        raise ConfigurationError(
            "SCRAM authentication needs the scramp package, version %d.%d or later; installed: %s"
            % (_SCRAMP_MIN + (version or "none",))
        )


def _fail(message: str) -> OperationFailure:
    """An authentication failure as the server reports it (code 18)."""
    return OperationFailure(message, 18, {"ok": 0, "errmsg": message, "code": 18, "codeName": "AuthenticationFailed"})


class _Conversation:
    """One authentication exchange on one connection."""

    mechanism: str

    def speculative(self) -> dict[str, Any]:
        raise NotImplementedError

    def accepts(self, reply: Mapping[str, Any]) -> bool:
        raise NotImplementedError

    def resume(self, sock: Any, reply: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def run(self, sock: Any) -> None:
        raise NotImplementedError


class _X509Conversation(_Conversation):
    """MONGODB-X509: one ``authenticate`` command; the TLS handshake did the proving."""

    mechanism = "MONGODB-X509"

    def __init__(self, creds: Credentials, mechanism: str = "MONGODB-X509") -> None:
        self._creds = creds

    def _command(self) -> dict[str, Any]:
        cmd: dict[str, Any] = SON([("authenticate", 1), ("mechanism", "MONGODB-X509")])
        if self._creds.username:
            cmd["user"] = self._creds.username
        return cmd

    def speculative(self) -> dict[str, Any]:
        cmd = self._command()
        cmd["db"] = "$external"
        return cmd

    def accepts(self, reply: Mapping[str, Any]) -> bool:
        # The server echoes the authenticated user when it accepted.
        return bool(reply.get("user"))

    def resume(self, sock: Any, reply: Mapping[str, Any]) -> None:
        return None

    def run(self, sock: Any) -> None:
        sock.command("$external", self._command())


class _CachingScramClient:
    """scramp's client, with PBKDF2 results taken from the credential's cache."""

    def __init__(self, mechanism: str, username: str, password: str, cache: _ScramCache) -> None:
        import scramp  # a dependency; imported here so clients without auth never pay for it

        if mechanism == "SCRAM-SHA-1":
            # MongoDB's SCRAM-SHA-1 authenticates with the hex MD5 of
            # "user:mongo:password" (a legacy of MONGODB-CR), never SASLprepped.
            password = hashlib.md5(("%s:mongo:%s" % (username, password)).encode("utf-8")).hexdigest()
        self._scramp = scramp
        # scramp SASLpreps user names; MongoDB does not (the server looks the
        # name up as stored: U+2168 stays U+2168, not "IX").  So scramp gets a
        # placeholder, and the real name, escaped as RFC 5802 asks, goes into
        # the client-first message.
        try:
            self._client = scramp.ScramClient([mechanism], "user", password)
        except scramp.ScramException as exc:
            # SASLprep refused the password (a control or unassigned character): a
            # setting to fix, not a server's answer.  Nothing was sent; scramp's
            # reason names the rule broken, never the password.
            raise ConfigurationError(
                "the password cannot be used with %s: SASLprep refuses it (%s)" % (mechanism, _short(exc))
            ) from None
        self._client.username = _RawUsername(username)
        self._mechanism = mechanism
        self._hash = _HASHES[mechanism]
        self._cache = cache

    def client_first(self) -> bytes:
        first: str = self._client.get_client_first()
        return first.encode("utf-8")

    def client_final(self, server_first: bytes) -> bytes:
        """Check the server's first message and return our proof."""
        client = self._client
        try:
            client.set_server_first(server_first.decode("utf-8"))
        except (self._scramp.ScramException, UnicodeDecodeError) as exc:
            raise _fail("Authentication failed: the server's SCRAM message was invalid (%s)" % _short(exc)) from None
        iterations = int(client.iterations)
        if iterations < _MIN_ITERATIONS:
            raise _fail(
                "Authentication failed: the server asked for %d SCRAM iterations, below the minimum of %d"
                % (iterations, _MIN_ITERATIONS)
            )
        salt = bytes(client.salt)
        key = (self._mechanism, salt, iterations)
        keys = self._cache.get(key)
        if keys is None:
            # scramp has already SASLprepped the password (SCRAM-SHA-256).
            salted = hashlib.pbkdf2_hmac(self._hash().name, bytes(client.password), salt, iterations)
            keys = (
                hmac.digest(salted, b"Client Key", self._hash),
                hmac.digest(salted, b"Server Key", self._hash),
            )
            self._cache.put(key, keys)
        client_key, server_key = keys
        # RFC 5802 section 3, with scramp's parsed nonce and messages.
        without_proof = "c=%s,r=%s" % (base64.b64encode(str(client.gs2_header).encode("utf-8")).decode(), client.nonce)
        auth_message = ("%s,%s,%s" % (client.client_first_bare, client.server_first, without_proof)).encode("utf-8")
        stored_key = self._hash(client_key).digest()
        signature = hmac.digest(stored_key, auth_message, self._hash)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        # scramp checks the server's final message against this signature.
        client.server_signature = hmac.digest(server_key, auth_message, self._hash)
        client._set_stage(self._scramp.core.ClientStage.get_client_final)
        return ("%s,p=%s" % (without_proof, base64.b64encode(proof).decode())).encode("utf-8")

    def verify(self, server_final: bytes) -> None:
        """Check the server's signature: it proves the server knew the password too."""
        try:
            self._client.set_server_final(server_final.decode("utf-8"))
        except (self._scramp.ScramException, UnicodeDecodeError) as exc:
            raise _fail(
                "Authentication failed: the server's SCRAM signature did not verify (%s)" % _short(exc)
            ) from None


class _RawUsername:
    """A user name as MongoDB wants it in SCRAM: escaped, not SASLprepped."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def escape(self) -> str:
        return self._name.replace("=", "=3D").replace(",", "=2C")

    def __str__(self) -> str:
        return self._name


def _short(exc: BaseException) -> str:
    """An exception's first line, for messages (scramp's never hold secrets)."""
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


class _ScramConversation(_Conversation):
    """saslStart / saslContinue with SCRAM-SHA-256 or SCRAM-SHA-1."""

    def __init__(self, creds: Credentials, mechanism: str) -> None:
        self._creds = creds
        self.mechanism = mechanism
        self._client = _CachingScramClient(mechanism, creds.username or "", creds._password or "", creds._cache)
        self._first = self._client.client_first()

    def _start(self) -> dict[str, Any]:
        return SON(
            [
                ("saslStart", 1),
                ("mechanism", self.mechanism),
                ("payload", Binary(self._first)),
                ("autoAuthorize", 1),
                # The server then ends the exchange with its signature,
                # saving the final empty round trip.
                ("options", {"skipEmptyExchange": True}),
            ]
        )

    def speculative(self) -> dict[str, Any]:
        cmd = self._start()
        cmd["db"] = self._creds.source
        return cmd

    def accepts(self, reply: Mapping[str, Any]) -> bool:
        return "conversationId" in reply and "payload" in reply

    def resume(self, sock: Any, reply: Mapping[str, Any]) -> None:
        self._continue(sock, reply)

    def run(self, sock: Any) -> None:
        reply = sock.command(self._creds.source, self._start())
        self._continue(sock, reply)

    def _continue(self, sock: Any, reply: Mapping[str, Any]) -> None:
        source = self._creds.source
        final = self._client.client_final(bytes(reply["payload"]))
        cid = reply["conversationId"]
        reply = sock.command(source, SON([("saslContinue", 1), ("conversationId", cid), ("payload", Binary(final))]))
        self._client.verify(bytes(reply["payload"]))
        # A server that ignored skipEmptyExchange wants one more, empty, step.
        while not reply.get("done"):
            reply = sock.command(source, SON([("saslContinue", 1), ("conversationId", cid), ("payload", Binary(b""))]))


def credentials_from_options(
    username: str | None,
    password: str | None,
    options: Mapping[str, Any],
    database: str | None,
) -> Credentials | None:
    """Build :class:`Credentials` from a URI's user info and options (None if none given).

    :param options: canonical option names: ``authSource``, ``authMechanism``,
        ``authMechanismProperties``.
    """
    mechanism = options.get("authMechanism")
    if username is None and password is None and mechanism is None:
        # An authSource alone (a mongodb+srv TXT record often has one) means nothing.
        return None
    if mechanism is not None and str(mechanism).upper() not in MECHANISMS:
        raise ConfigurationError(
            "authMechanism %r is not supported; use SCRAM-SHA-256, SCRAM-SHA-1 or MONGODB-X509" % (mechanism,)
        )
    source = options.get("authSource")
    if source is None and (mechanism or "").upper() != "MONGODB-X509":
        source = database or "admin"
    return Credentials(username or None, password, source, mechanism, options.get("authMechanismProperties"))
