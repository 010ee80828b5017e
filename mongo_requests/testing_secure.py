"""Throwaway servers with authentication and TLS, and the test CA they use.

:class:`TestCertificates` makes a CA and certificates at run time (trustme),
writes them to a temporary directory and deletes them afterwards: no key or
certificate is ever committed.  :class:`SecureMongodServer` is a
:class:`~mongo_requests.testing.MongodServer` started with ``--auth`` and/or
``--tlsMode requireTLS``; :class:`~mongo_requests.testing.ReplicaSet` uses it
for the members of a secure set.  trustme is a test dependency, imported only
when certificates are made.

Import both from :mod:`mongo_requests.testing`, like the rest of it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import ssl
import tempfile
from typing import Any

from .testing import _TEMP_DIRS, HOST, MongodServer, MongodStartError, raw_command

__all__ = ["SecureMongodServer", "TestCertificates"]

_TEST_ORG = "mongo_requests tests"
# Commands a server answers before authentication: the launcher's probes
# (hello) go on a bare socket; everything else is authenticated once users exist.
_UNAUTHENTICATED = frozenset({"hello", "isMaster", "ismaster"})


class TestCertificates:
    """A test CA and the certificates signed by it, as PEM files in a temp dir.

    Attributes (file paths): ``ca`` (trust this), ``server`` (key + chain
    for ``mongod``, valid for the name ``localhost`` only, so that connecting
    to ``127.0.0.1`` is a hostname mismatch), ``member`` (key + chain valid
    for both ``localhost`` and ``127.0.0.1``: the members of a
    :class:`~mongo_requests.testing.ReplicaSet` name each other, and clients
    find them, by IP address), ``client`` (a client certificate for
    MONGODB-X509), ``stranger`` (a client certificate of the same CA that no
    user is created for), ``client_encrypted`` (the same key, encrypted with
    :attr:`client_password`), ``other_ca`` (a CA that signed nothing here),
    ``crl_revoking_server`` (a CRL of :attr:`ca` that revokes the server
    certificate).  :attr:`client_subject` is the client certificate's subject
    as MongoDB spells X.509 user names (RFC 2253).
    """

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self) -> None:
        import datetime

        import trustme
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization

        self.dir = tempfile.mkdtemp(prefix="mongo_requests-certs-")
        _TEMP_DIRS[self.dir] = os.getpid()
        ca = trustme.CA(organization_name=_TEST_ORG)
        # X.509 users must differ from the server's certificate in O, OU or
        # DC, or mongod takes them for cluster members: so OU differs.
        server = ca.issue_cert("localhost", organization_name=_TEST_ORG, organization_unit_name="server")
        member = ca.issue_cert("localhost", HOST, organization_name=_TEST_ORG, organization_unit_name="server")
        client = ca.issue_cert(common_name="client", organization_name=_TEST_ORG, organization_unit_name="clients")
        self.ca = self._write("ca.pem", ca.cert_pem.bytes())
        self.server = self._write("server.pem", server.private_key_and_cert_chain_pem.bytes())
        self.member = self._write("member.pem", member.private_key_and_cert_chain_pem.bytes())
        self.client = self._write("client.pem", client.private_key_and_cert_chain_pem.bytes())
        # Signed by the same CA, but no $external user has its subject.
        stranger = ca.issue_cert(common_name="stranger", organization_name=_TEST_ORG, organization_unit_name="clients")
        self.stranger = self._write("stranger.pem", stranger.private_key_and_cert_chain_pem.bytes())
        self.client_password = secrets.token_urlsafe(12)
        key = serialization.load_pem_private_key(client.private_key_pem.bytes(), None)
        encrypted = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self.client_password.encode()),
        )
        self.client_encrypted = self._write(
            "client-encrypted.pem", encrypted + b"".join(p.bytes() for p in client.cert_chain_pems)
        )
        self.other_ca = self._write("other-ca.pem", trustme.CA().cert_pem.bytes())
        client_cert = x509.load_pem_x509_certificate(client.cert_chain_pems[0].bytes())
        self.client_subject = client_cert.subject.rfc4514_string()
        # A revocation list, signed by the CA, naming the server certificate.
        ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
        server_cert = x509.load_pem_x509_certificate(server.cert_chain_pems[0].bytes())
        now = datetime.datetime.now(datetime.UTC)
        ca_key: Any = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
        crl = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now - datetime.timedelta(minutes=5))
            .next_update(now + datetime.timedelta(days=1))
            .add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(server_cert.serial_number)
                .revocation_date(now - datetime.timedelta(minutes=5))
                .build()
            )
            .sign(ca_key, hashes.SHA256())
        )
        self.crl_revoking_server = self._write("crl.pem", crl.public_bytes(serialization.Encoding.PEM))

    def _write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "wb") as fh:
            fh.write(data)
        return path

    def probe_context(self) -> ssl.SSLContext:
        """An ``ssl.SSLContext`` trusting the CA, for raw_command probes to 127.0.0.1."""
        ctx = ssl.create_default_context(cafile=self.ca)
        ctx.check_hostname = False  # the probe dials 127.0.0.1; the cert names localhost
        return ctx

    def cleanup(self) -> None:
        """Delete the files."""
        shutil.rmtree(self.dir, ignore_errors=True)
        _TEMP_DIRS.pop(self.dir, None)


class SecureMongodServer(MongodServer):
    """A :class:`MongodServer` with ``--auth`` and/or ``--tlsMode requireTLS``.

    With ``auth=True`` the first user, :attr:`admin_user` with the ``root``
    role and a random :attr:`admin_password`, is created through the
    localhost exception as soon as the server is up; :meth:`create_user`
    adds more.  With ``certs`` (a :class:`TestCertificates`) the server only
    speaks TLS, presents ``certs.server``, and accepts (but does not require)
    client certificates signed by ``certs.ca``.

    Once its users exist, :meth:`command` logs in as the admin user (through
    PyMongo, the reference driver) for every command but ``hello``.

    :param auth: start with ``--auth``.
    :param certs: certificates for ``--tlsMode requireTLS``, or None.
    :param key_file: ``--keyFile``: the shared secret with which the members
        of a replica set authenticate to each other.
    :param first_user: create the admin user at the first start.  A replica
        set member cannot (it is not a primary yet): the set creates the user
        on its primary, then sets :attr:`users_exist` on every member.
    :param admin_password: the admin user's password (random by default).
    :param certificate: the server's key and chain (``certs.server`` by default).
    :param kwargs: passed to :class:`MongodServer`.
    """

    admin_user = "admin"

    def __init__(
        self,
        auth: bool = True,
        certs: TestCertificates | None = None,
        key_file: str | None = None,
        first_user: bool = True,
        admin_password: str | None = None,
        certificate: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.auth = auth
        self.certs = certs
        self.key_file = key_file
        self.first_user = first_user
        self.admin_password = admin_password or secrets.token_urlsafe(16)
        self.certificate = certificate or (certs.server if certs is not None else None)
        #: True once the admin user exists (the localhost exception is closed).
        self.users_exist = False
        self._probe_ctx = certs.probe_context() if certs is not None else None

    def _argv(self) -> list[str]:
        argv = super()._argv()
        if self.auth:
            argv.append("--auth")
        if self.key_file is not None:
            argv += ["--keyFile", self.key_file]
        if self.certs is not None:
            assert self.certificate is not None
            argv += [
                "--tlsMode",
                "requireTLS",
                "--tlsCertificateKeyFile",
                self.certificate,
                "--tlsCAFile",
                self.certs.ca,
                "--tlsAllowConnectionsWithoutCertificates",
            ]
        return argv

    def command(self, command: dict[str, Any], db: str = "admin", timeout: float = 10.0) -> dict[str, Any]:
        """Run ``command``, over TLS when the server requires it, as the admin user once it exists.

        Like :func:`raw_command`, return the reply as is (also an error
        reply) and raise :class:`OSError` when the server cannot be reached.
        """
        if not (self.auth and self.users_exist) or next(iter(command)) in _UNAUTHENTICATED:
            return raw_command(self.address, command, db, timeout, self._probe_ctx)
        from pymongo.errors import ConnectionFailure, OperationFailure

        ms = max(int(timeout * 1000), 1)
        client = self.pymongo_client(
            serverSelectionTimeoutMS=ms,
            connectTimeoutMS=ms,
            socketTimeoutMS=ms,
            maxPoolSize=1,
            retryReads=False,
            retryWrites=False,
        )
        try:
            return dict(client[db].command(command))
        except OperationFailure as exc:
            return dict(exc.details or {"ok": 0, "errmsg": str(exc), "code": exc.code})
        except ConnectionFailure as exc:
            # The launcher's loops treat OSError as "not reachable yet".
            raise ConnectionError("%s:%d: %s" % (self.address + (exc,))) from None
        finally:
            client.close()

    def start(self) -> SecureMongodServer:
        first = not self._started_once
        super().start()
        if self.auth and first and self.first_user:
            # The localhost exception: with no user yet, a connection from
            # 127.0.0.1 may create the first one (and nothing else).
            self.create_first_user()
        return self

    def create_first_user(self) -> None:
        """Create the admin user through the localhost exception; then :attr:`users_exist`."""
        # w=1: a new set's secondaries may still be syncing; later users are
        # created with a write concern that waits for them.
        reply = self.command(
            {"createUser": self.admin_user, "pwd": self.admin_password, "roles": ["root"], "writeConcern": {"w": 1}}
        )
        if not reply.get("ok"):
            raise MongodStartError("could not create the first user on %s:%d: %r" % (self.address + (reply,)))
        self.users_exist = True

    def pymongo_client(self, **kwargs: Any) -> Any:
        """A ``pymongo.MongoClient`` logged in as the admin user.

        The reference driver does the server's setup, so the fixtures do
        not depend on the code under test.
        """
        import pymongo

        opts: dict[str, Any] = {"directConnection": True, "serverSelectionTimeoutMS": 10000}
        if self.auth:
            opts.update(username=self.admin_user, password=self.admin_password, authSource="admin")
        if self.certs is not None:
            opts.update(tls=True, tlsCAFile=self.certs.ca)
        opts.update(kwargs)
        host = "localhost" if self.certs is not None else HOST
        return pymongo.MongoClient(host, self.port, **opts)

    def create_user(
        self,
        name: str,
        password: str | None = None,
        roles: Any = ("root",),
        db: str = "admin",
        mechanisms: Any = None,
        **fields: Any,
    ) -> None:
        """Create a user (``password=None`` for an X.509 user in ``$external``).

        :param fields: more fields of ``createUser`` (``writeConcern``, ...).
        """
        cmd: dict[str, Any] = {
            "createUser": name,
            "roles": [{"role": r, "db": "admin"} if isinstance(r, str) else r for r in roles],
        }
        if password is not None:
            cmd["pwd"] = password
        if mechanisms:
            cmd["mechanisms"] = list(mechanisms)
        cmd.update(fields)
        with self.pymongo_client() as client:
            client[db].command(cmd)
