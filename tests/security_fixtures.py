"""Session fixtures for the security tests: a test CA, an --auth server, a TLS server, a secure replica set.

conftest.py imports these names, so any test module can ask for them.  The
servers are real mongod processes started by
:class:`mongo_requests.testing.SecureMongodServer`; their users are created
through the localhost exception (the first one) and then by PyMongo, the
reference driver, so the setup does not depend on the code under test.
Passwords are random per session: a test can then search any text (a repr,
a log, an exception) for them.
"""

from __future__ import annotations

import secrets
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

import mongo_requests
from helpers import current_mode
from mongo_requests.testing import MongodNotFound, ReplicaSet, SecureMongodServer, TestCertificates

# This process's test mode (tests/run_mode.py), and the client options it wants.
CURRENT = current_mode()
MODE = CURRENT.name
MODE_OPTIONS: dict[str, Any] = dict(CURRENT.client_options)


class Users:
    """The users of a secure test server, and their passwords."""

    def __init__(self) -> None:
        self.password = "pw-" + secrets.token_urlsafe(12)  # alice, sha1, sha256
        self.alice = "alice"  # SCRAM-SHA-1 and SCRAM-SHA-256
        self.sha1 = "sha1only"
        self.sha256 = "sha256only"


def _start(server: SecureMongodServer) -> SecureMongodServer:
    try:
        return server.start()
    except BaseException:
        server.cleanup()
        raise


def _server_or_fail(**kwargs: Any) -> SecureMongodServer:
    try:
        return SecureMongodServer(**kwargs)
    except MongodNotFound as err:
        pytest.fail(str(err), pytrace=False)
        raise  # unreachable: pytest.fail raises


@pytest.fixture(scope="session")
def test_certs() -> Iterator[TestCertificates]:
    """A throwaway CA and certificates (deleted at the end of the session)."""
    certs = TestCertificates()
    yield certs
    certs.cleanup()


@pytest.fixture(scope="session")
def auth_users() -> Users:
    return Users()


@pytest.fixture(scope="session")
def auth_server(auth_users: Users) -> Iterator[SecureMongodServer]:
    """mongod --auth (plain TCP) with users for every SCRAM case.

    ``IX``/``IX`` and ``\\u2168``/``\\u2163`` are the SASLprep users of the
    MongoDB authentication specification's tests (SCRAM-SHA-256 only).
    """
    server = _start(_server_or_fail(auth=True))
    u = auth_users
    server.create_user(u.alice, u.password)
    server.create_user(u.sha1, u.password, mechanisms=["SCRAM-SHA-1"])
    server.create_user(u.sha256, u.password, mechanisms=["SCRAM-SHA-256"])
    server.create_user("IX", "IX", mechanisms=["SCRAM-SHA-256"])
    server.create_user("\u2168", "\u2163", mechanisms=["SCRAM-SHA-256"])
    yield server
    admin = _admins.pop(server.port, None)
    if admin is not None:
        admin.close()
    server.stop()
    server.cleanup()


@pytest.fixture(scope="session")
def tls_server(test_certs: TestCertificates, auth_users: Users) -> Iterator[SecureMongodServer]:
    """mongod --auth --tlsMode requireTLS, with a SCRAM user and an X.509 user."""
    server = _start(_server_or_fail(auth=True, certs=test_certs))
    server.create_user(auth_users.alice, auth_users.password)
    server.create_user(test_certs.client_subject, None, db="$external")
    yield server
    admin = _admins.pop(server.port, None)
    if admin is not None:
        admin.close()
    server.stop()
    server.cleanup()


SET_NAME = "rs_secure"


@pytest.fixture(scope="session")
def secure_replica_set(test_certs: TestCertificates, auth_users: Users) -> Iterator[ReplicaSet]:
    """A 3-member replica set, every member with ``--auth`` (and a keyFile) and ``--tlsMode requireTLS``.

    Its user ``alice`` (SCRAM-SHA-1 and -256) is acknowledged by every
    member before the first test, so any member can log it in at once.
    """
    try:
        rs = ReplicaSet(SET_NAME, auth=True, certs=test_certs)
    except MongodNotFound as err:
        pytest.fail(str(err), pytrace=False)
    try:
        rs.start()
        rs.create_user(auth_users.alice, auth_users.password)
        yield rs
    finally:
        rs.stop()
        rs.cleanup()


def scram_uri(server: SecureMongodServer, user: str, password: str, host: str = "127.0.0.1", **options: Any) -> str:
    """A mongodb:// URI with quoted credentials and ``options``."""
    query = urllib.parse.urlencode({k: str(v).lower() if isinstance(v, bool) else v for k, v in options.items()})
    return "mongodb://%s:%s@%s:%d/%s" % (
        urllib.parse.quote_plus(user),
        urllib.parse.quote_plus(password),
        host,
        server.port,
        "?" + query if query else "",
    )


@pytest.fixture
def secure_client() -> Iterator[Any]:
    """Factory: ``secure_client(host_or_uri, **kwargs)`` in the run's mode; closed afterwards."""
    made: list = []

    def make(host: Any, port: int | None = None, **kwargs: Any) -> mongo_requests.MongoClient:
        kwargs.setdefault("serverSelectionTimeoutMS", 5000)
        c = mongo_requests.MongoClient(host, port, **{**MODE_OPTIONS, **kwargs})
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


_admins: dict[int, Any] = {}


def server_status(server: SecureMongodServer) -> dict[str, Any]:
    """serverStatus, through one long-lived PyMongo connection per server.

    One connection, authenticated once: later readings add nothing to the
    authentication counters they read.
    """
    admin = _admins.get(server.port)
    if admin is None:
        admin = _admins[server.port] = server.pymongo_client(maxPoolSize=1)
    return admin.admin.command("serverStatus")


def auth_counters(server: SecureMongodServer, mechanism: str) -> dict[str, int]:
    """The server's own authentication counters for ``mechanism`` (serverStatus)."""
    status = server_status(server)
    mech = status["security"]["authentication"]["mechanisms"][mechanism]
    return {
        "received": mech["authenticate"]["received"],
        "successful": mech["authenticate"]["successful"],
        "spec_received": mech["speculativeAuthenticate"]["received"],
        "spec_successful": mech["speculativeAuthenticate"]["successful"],
    }


def elapsed(fn: Any) -> tuple[Any, float]:
    """``(exception or result, seconds)`` of calling ``fn()``."""
    start = time.monotonic()
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - returned to the test
        result = exc
    return result, time.monotonic() - start
