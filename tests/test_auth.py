"""Authentication against a real mongod --auth: SCRAM-SHA-256, SCRAM-SHA-1, SASLprep,
speculative authentication, wrong passwords, and where credentials must never appear.

What happened is read from the server itself: ``connectionStatus`` says who a
connection is authenticated as, and ``serverStatus`` counts authentications
per mechanism (``security.authentication.mechanisms``) and commands
(``metrics.commands.saslStart``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import pickle
import time

import pytest
from pymongo.errors import ConfigurationError, InvalidURI, OperationFailure

import mongo_requests
from helpers import run_threads
from mongo_requests import auth
from security_fixtures import CURRENT, auth_counters, elapsed, scram_uri, server_status


def _authenticated_as(client) -> list:
    users = client.admin.command("connectionStatus")["authInfo"]["authenticatedUsers"]
    return [(u["user"], u["db"]) for u in users]


def _sasl_starts(server) -> int:
    return server_status(server)["metrics"]["commands"]["saslStart"]["total"]


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_scram_mechanism_given(auth_server, auth_users, secure_client, mechanism):
    before = auth_counters(auth_server, mechanism)
    c = secure_client(scram_uri(auth_server, auth_users.alice, auth_users.password, authMechanism=mechanism))
    assert _authenticated_as(c) == [("alice", "admin")]
    after = auth_counters(auth_server, mechanism)
    assert after["successful"] == before["successful"] + 1


@pytest.mark.parametrize(
    "user_attr, mechanism",
    [("alice", "SCRAM-SHA-256"), ("sha256", "SCRAM-SHA-256"), ("sha1", "SCRAM-SHA-1")],
)
def test_mechanism_negotiated_through_sasl_supported_mechs(
    auth_server, auth_users, secure_client, user_attr, mechanism
):
    # No authMechanism: the hello asks for the user's mechanisms and the
    # driver picks SCRAM-SHA-256 when it is there, else SCRAM-SHA-1.
    user = getattr(auth_users, user_attr)
    before = auth_counters(auth_server, mechanism)
    c = secure_client("127.0.0.1", auth_server.port, username=user, password=auth_users.password)
    assert _authenticated_as(c) == [(user, "admin")]
    assert auth_counters(auth_server, mechanism)["successful"] == before["successful"] + 1


@pytest.mark.parametrize(
    "user, password",
    [("IX", "IX"), ("IX", "I\u00adX"), ("\u2168", "IV"), ("\u2168", "I\u00adV"), ("\u2168", "\u2163")],
)
def test_saslprep_passwords(auth_server, secure_client, user, password):
    # The specification's SASLprep cases: a soft hyphen maps to nothing, and
    # the Roman numeral IV (U+2163) normalises to "IV" on both sides.  The
    # last case gives U+2163 itself, so our side must NFKC-normalise it too.
    c = secure_client(scram_uri(auth_server, user, password, authMechanism="SCRAM-SHA-256"))
    assert _authenticated_as(c) == [(user, "admin")]


def test_password_saslprep_refuses_is_a_configuration_error(auth_server, auth_users, secure_client):
    # SASLprep forbids control characters: that is the user's password, not
    # the server's answer, so it is a pymongo ConfigurationError (not scramp's
    # own exception), raised before anything is sent, naming no secret.
    secret = "pw\u0007" + auth_users.password
    c = secure_client(
        "127.0.0.1",
        auth_server.port,
        username=auth_users.alice,
        password=secret,
        authMechanism="SCRAM-SHA-256",
        serverSelectionTimeoutMS=30000,
    )
    before = auth_counters(auth_server, "SCRAM-SHA-256")
    exc, seconds = elapsed(lambda: c.admin.command("ping"))
    assert type(exc) is ConfigurationError, repr(exc)
    assert seconds < 2.0
    assert "SASLprep" in str(exc)
    chained = [exc, exc.__cause__, exc.__context__]
    for e in (e for e in chained if e is not None):
        assert secret not in str(e) and secret not in repr(e.args) and auth_users.password not in str(e)
    after = auth_counters(auth_server, "SCRAM-SHA-256")
    assert after["received"] == before["received"] and after["spec_received"] == before["spec_received"]
    stats = c.pool.get_stats()
    assert stats["in_use"] == 0 and stats["idle"] == 0


def test_sha256_only_user_refuses_sha1(auth_server, auth_users, secure_client):
    c = secure_client(
        "127.0.0.1",
        auth_server.port,
        username=auth_users.sha256,
        password=auth_users.password,
        authMechanism="SCRAM-SHA-1",
    )
    with pytest.raises(OperationFailure) as info:
        c.admin.command("ping")
    assert info.value.code == 18


def test_wrong_password_fails_fast_once_and_leaves_pools_usable(auth_server, auth_users, secure_client, caplog):
    caplog.set_level(logging.DEBUG, logger="mongo_requests")
    wrong = "wrong-" + auth_users.password
    bad = secure_client(scram_uri(auth_server, auth_users.alice, wrong), serverSelectionTimeoutMS=30000)
    before = auth_counters(auth_server, "SCRAM-SHA-256")
    exc, seconds = elapsed(lambda: bad.admin.command("ping"))
    assert isinstance(exc, OperationFailure), exc
    assert exc.code == 18
    assert seconds < 2.0, "a wrong password must not wait for serverSelectionTimeoutMS"
    after = auth_counters(auth_server, "SCRAM-SHA-256")
    # Exactly one attempt reached the server: no retry storm.
    assert after["received"] == before["received"] + 1
    assert after["successful"] == before["successful"]
    # The failed connection gave its pool slot back and was closed.
    stats = bad.pool.get_stats()
    assert stats["in_use"] == 0 and stats["idle"] == 0
    # A second try fails the same way (nothing cached a bad state)...
    exc2, _ = elapsed(lambda: bad.admin.command("ping"))
    assert isinstance(exc2, OperationFailure) and exc2.code == 18
    # ...and a correct client works at once.
    good = secure_client(scram_uri(auth_server, auth_users.alice, auth_users.password))
    assert _authenticated_as(good) == [("alice", "admin")]
    # The password is nowhere in what the user sees.
    for text in (str(exc), repr(exc), repr(exc.args), repr(exc.details), repr(bad), repr(bad.pool.opts), caplog.text):
        assert wrong not in text
        assert auth_users.password not in text


def test_wrong_password_from_many_workers_is_one_attempt_each(auth_server, auth_users, secure_client):
    # 30 threads or greenlets (the run's mode) hit a wrong password at once:
    # each operation makes exactly one attempt (no retry storm), all fail with
    # code 18 within a couple of seconds, and the pool ends empty.
    n = 30
    bad = secure_client(
        scram_uri(auth_server, auth_users.alice, "wrong-" + auth_users.password),
        serverSelectionTimeoutMS=30000,
        maxPoolSize=10,
    )
    before = auth_counters(auth_server, "SCRAM-SHA-256")
    codes: list = []

    def work(i):
        try:
            bad.admin.command("ping")
        except OperationFailure as exc:
            codes.append(exc.code)

    start = time.monotonic()
    if CURRENT.green:
        import gevent

        gevent.joinall([gevent.spawn(work, i) for i in range(n)], timeout=30)
    else:
        assert run_threads(work, n) == []
    assert codes == [18] * n
    assert time.monotonic() - start < 3.0
    after = auth_counters(auth_server, "SCRAM-SHA-256")
    assert after["received"] == before["received"] + n and after["successful"] == before["successful"]
    stats = bad.pool.get_stats()
    assert stats["in_use"] == 0 and stats["idle"] == 0


def test_wrong_auth_source_fails_fast_with_code_18(auth_server, auth_users, secure_client):
    # alice lives in admin.  Looked up in appdb (authSource, or the URI's
    # database, which is the default authSource) she does not exist: one
    # attempt, code 18 at once, nothing about her or her password in the error.
    for c in (
        secure_client(
            scram_uri(auth_server, auth_users.alice, auth_users.password, authSource="appdb"),
            serverSelectionTimeoutMS=30000,
        ),
        # scram_uri without options ends in "/": the database goes after it.
        secure_client(
            scram_uri(auth_server, auth_users.alice, auth_users.password) + "appdb", serverSelectionTimeoutMS=30000
        ),
    ):
        assert c.pool.opts.setup.credentials.source == "appdb"
        before = auth_counters(auth_server, "SCRAM-SHA-256")
        exc, seconds = elapsed(functools.partial(c.admin.command, "ping"))
        assert isinstance(exc, OperationFailure) and exc.code == 18, repr(exc)
        assert seconds < 2.0
        after = auth_counters(auth_server, "SCRAM-SHA-256")
        assert after["received"] == before["received"] + 1 and after["successful"] == before["successful"]
        for text in (str(exc), repr(exc.args), repr(exc.details)):
            assert auth_users.password not in text and "alice" not in text
    right = secure_client(scram_uri(auth_server, auth_users.alice, auth_users.password, authSource="admin"))
    assert _authenticated_as(right) == [("alice", "admin")]


def test_unknown_mechanism_in_the_uri_is_refused_up_front(auth_server, auth_users):
    secret = auth_users.password
    for mechanism in ("PLAIN", "GSSAPI", "MONGODB-AWS", "SCRAM-SHA-512"):
        with pytest.raises(ConfigurationError) as info:
            mongo_requests.MongoClient(scram_uri(auth_server, auth_users.alice, secret, authMechanism=mechanism))
        assert mechanism in str(info.value)
        assert secret not in str(info.value) and secret not in repr(info.value.args)
        assert info.value.__context__ is None or secret not in str(info.value.__context__)


def test_speculative_authentication_saves_the_sasl_start(auth_server, auth_users, secure_client):
    uri = scram_uri(auth_server, auth_users.alice, auth_users.password)
    n = 3
    before = auth_counters(auth_server, "SCRAM-SHA-256")
    starts = _sasl_starts(auth_server)
    for _ in range(n):
        c = secure_client(uri)
        assert _authenticated_as(c) == [("alice", "admin")]
        c.close()
    after = auth_counters(auth_server, "SCRAM-SHA-256")
    assert after["spec_received"] == before["spec_received"] + n
    assert after["spec_successful"] == before["spec_successful"] + n
    assert after["successful"] == before["successful"] + n
    # The first SCRAM step rode in the hello: no saslStart command was run.
    assert _sasl_starts(auth_server) == starts

    # Switched off (only for measuring), the conversation needs its saslStart.
    before = auth_counters(auth_server, "SCRAM-SHA-256")
    c = secure_client(uri, speculativeAuthentication=False)
    assert _authenticated_as(c) == [("alice", "admin")]
    after = auth_counters(auth_server, "SCRAM-SHA-256")
    assert after["spec_received"] == before["spec_received"]
    assert after["successful"] == before["successful"] + 1
    assert _sasl_starts(auth_server) == starts + 1


def test_scram_keys_are_derived_once_per_client(auth_server, auth_users, secure_client, monkeypatch):
    calls = []
    real = hashlib.pbkdf2_hmac

    def counting(*args, **kwargs):  # the real PBKDF2, counted
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(auth.hashlib, "pbkdf2_hmac", counting)
    c = secure_client(scram_uri(auth_server, auth_users.alice, auth_users.password), maxPoolSize=5)
    ids = set()
    with c.start_request():
        ids.add(c.admin.command("hello")["connectionId"])
    # Force new connections: reset the pool, then authenticate again each time.
    for _ in range(3):
        c.pool.reset()
        ids.add(c.admin.command("hello")["connectionId"])
    assert len(ids) == 4, "each reset should have opened a new, authenticated connection"
    assert calls == ["sha256"]
    assert c.pool.opts.setup.credentials.cached_keys == 1


def test_credentials_are_redacted_everywhere(auth_server, auth_users, secure_client):
    secret = auth_users.password
    c = secure_client(scram_uri(auth_server, auth_users.alice, secret, authSource="admin"))
    c.admin.command("ping")
    creds = c.pool.opts.setup.credentials
    for text in (repr(c), repr(c.pool), repr(c.pool.opts), repr(c.pool.opts.setup), repr(creds), str(creds)):
        assert secret not in text
        assert "alice" not in text
    with pytest.raises(TypeError):
        pickle.dumps(creds)
    with pytest.raises(AttributeError):
        creds.username = "mallory"  # type: ignore[misc]
    # A URI quoted in an error is redacted.
    with pytest.raises(InvalidURI) as info:
        mongo_requests.MongoClient("mongodb://alice:%s@127.0.0.1:notaport/" % secret)
    assert secret not in str(info.value) and secret not in repr(info.value.args)
    assert "<redacted>" in str(info.value)


def test_secret_uri_options_are_redacted():
    secret = "keypass-" + "x" * 8
    with pytest.raises(InvalidURI) as info:
        mongo_requests.MongoClient("mongodb://u:p@h:bad/?tlsCertificateKeyFilePassword=%s" % secret)
    assert secret not in str(info.value) and secret not in repr(info.value.args)
    c = mongo_requests.MongoClient(
        "mongodb://127.0.0.1:9/?tls=true&tlsCertificateKeyFilePassword=%s" % secret, tlsInsecure=True
    )
    assert secret not in repr(c._options) and secret not in repr(c.pool.opts)
    c.close()
    # PyMongo's MONGODB-AWS puts a session token in authMechanismProperties;
    # a URI written for it is accepted, and its token never shown.
    c = mongo_requests.MongoClient("mongodb://u:p@127.0.0.1:9/?authMechanismProperties=AWS_SESSION_TOKEN:%s" % secret)
    for obj in (c, c.pool, c.pool.opts, c._options, c.pool.opts.setup, c.pool.opts.setup.credentials):
        assert secret not in repr(obj), type(obj).__name__
    c.close()


def test_bad_auth_options_are_configuration_errors():
    with pytest.raises(ConfigurationError):
        mongo_requests.MongoClient("127.0.0.1", username="u", password="p", authMechanism="PLAIN")
    with pytest.raises(ConfigurationError):
        mongo_requests.MongoClient("127.0.0.1", username="u")  # no password
    with pytest.raises(ConfigurationError):
        mongo_requests.MongoClient("127.0.0.1", authMechanism="MONGODB-X509")  # no certificate


def test_pymongo2_db_authenticate_is_refused_with_what_to_do(auth_server, auth_users, secure_client):
    c = secure_client(scram_uri(auth_server, auth_users.alice, auth_users.password))
    for call in (
        lambda: c.appdb.authenticate("alice", auth_users.password),
        lambda: c.appdb.authenticate(name="alice", password=auth_users.password),
        lambda: c.appdb.logout(),
    ):
        with pytest.raises(ConfigurationError) as info:
            call()
        message = str(info.value)
        assert auth_users.password not in message and auth_users.password not in repr(info.value.args)
    with pytest.raises(ConfigurationError, match="username=USER, password=PASSWORD, authSource='appdb'"):
        c.appdb.authenticate("alice", auth_users.password)
    # The client's own credentials are what counts.
    assert _authenticated_as(c) == [("alice", "admin")]


def test_the_kept_hello_holds_no_authentication_exchange(auth_server, auth_users, secure_client):
    c = secure_client(scram_uri(auth_server, auth_users.alice, auth_users.password))
    c.admin.command("ping")
    assert c.pool.hello is not None and "speculativeAuthenticate" not in c.pool.hello
    assert c.pool.hello["maxWireVersion"] >= 6


def test_scram_without_a_usable_scramp_is_refused_at_construction():
    # scramp 1.5 is the first release whose API auth.py fits; an install
    # without it (pip --no-deps, a scramp pinned lower by someone else) must
    # see a SCRAM client refused up front with a ConfigurationError naming
    # scramp, not fail at its first operation with an ImportError.  X.509
    # needs no scramp.  Run in a child whose scramp import fails.
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['scramp'] = None\n"
        "from pymongo.errors import ConfigurationError\n"
        "import mongo_requests\n"
        "try:\n"
        "    mongo_requests.MongoClient('127.0.0.1', 9, username='u', password='p-secret')\n"
        "except ConfigurationError as exc:\n"
        "    print('REFUSED', exc)\n"
        "else:\n"
        "    print('ACCEPTED')\n"
        "from mongo_requests.auth import Credentials\n"
        "print('X509', Credentials(None, None, mechanism='MONGODB-X509').mechanism)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "REFUSED" in out.stdout and "scramp" in out.stdout and "1.5" in out.stdout, out.stdout
    assert "p-secret" not in out.stdout
    assert "X509 MONGODB-X509" in out.stdout
