"""TLS against a real mongod --tlsMode requireTLS --auth, with certificates from a
throwaway CA made at run time (trustme): verification, hostnames, X.509, CRLs,
plaintext refused, and requests under TLS and auth.

The server certificate names ``localhost`` only, so ``localhost`` is the
valid host name and ``127.0.0.1`` (the same server) is a hostname mismatch.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time

import pytest
from pymongo.errors import (
    AutoReconnect,
    ConfigurationError,
    ConnectionFailure,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from helpers import run_threads
from security_fixtures import CURRENT, MODE, auth_counters, elapsed, scram_uri


def _tls_client(secure_client, tls_server, auth_users, host="localhost", **kwargs):
    kwargs.setdefault("tls", True)
    return secure_client(host, tls_server.port, username=auth_users.alice, password=auth_users.password, **kwargs)


def _raw_socket(client):
    with client.start_request():
        client.admin.command("ping")
        return client.pool.pinned_socket().sock


def test_verified_tls_with_scram(tls_server, test_certs, auth_users, secure_client):
    c = _tls_client(secure_client, tls_server, auth_users, tlsCAFile=test_certs.ca)
    status = c.admin.command("connectionStatus")
    assert status["authInfo"]["authenticatedUsers"] == [{"user": "alice", "db": "admin"}]
    sock = _raw_socket(c)
    if MODE == "threads":
        assert isinstance(sock, ssl.SSLSocket)
    else:
        # Greenlet mode, patched or not: gevent's SSL socket, which waits on the hub.
        import gevent.ssl

        assert isinstance(sock, gevent.ssl.SSLSocket)
    assert sock.version() in ("TLSv1.2", "TLSv1.3")
    # The server's certificate was checked against our CA, for "localhost".
    peer = sock.getpeercert()
    assert ("DNS", "localhost") in peer["subjectAltName"]


def _refused(client) -> str:
    """The message of the ConnectionFailure a certificate problem raises: at once, not after
    serverSelectionTimeoutMS (30 s by default), since retrying cannot change the answer."""
    exc, seconds = elapsed(lambda: client.admin.command("ping"))
    assert isinstance(exc, ConnectionFailure) and not isinstance(exc, AutoReconnect), repr(exc)
    assert seconds < 5
    return str(exc)


def test_untrusted_certificate_refused_with_its_cause(tls_server, test_certs, auth_users, secure_client):
    c = _tls_client(
        secure_client, tls_server, auth_users, tlsCAFile=test_certs.other_ca, serverSelectionTimeoutMS=30000
    )
    message = _refused(c)
    assert "certificate verification failed" in message
    assert "unable to get local issuer certificate" in message or "self-signed" in message or "self signed" in message
    assert auth_users.password not in message


def test_system_cas_do_not_trust_the_test_ca(tls_server, auth_users, secure_client):
    c = _tls_client(secure_client, tls_server, auth_users)
    assert "certificate verification failed" in _refused(c)


def test_allow_invalid_certificates(tls_server, test_certs, auth_users, secure_client):
    c = _tls_client(
        secure_client, tls_server, auth_users, tlsCAFile=test_certs.other_ca, tlsAllowInvalidCertificates=True
    )
    assert c.admin.command("ping")["ok"] == 1
    c2 = _tls_client(secure_client, tls_server, auth_users, host="127.0.0.1", tlsInsecure=True)
    assert c2.admin.command("ping")["ok"] == 1


def test_hostname_mismatch_refused_unless_allowed(tls_server, test_certs, auth_users, secure_client):
    c = _tls_client(secure_client, tls_server, auth_users, host="127.0.0.1", tlsCAFile=test_certs.ca)
    message = _refused(c)
    assert "mismatch" in message
    assert "tlsAllowInvalidHostnames" in message
    ok = _tls_client(
        secure_client, tls_server, auth_users, host="127.0.0.1", tlsCAFile=test_certs.ca, tlsAllowInvalidHostnames=True
    )
    assert ok.admin.command("ping")["ok"] == 1


def test_allow_invalid_hostnames_still_verifies_the_chain(tls_server, test_certs, auth_users, secure_client):
    # tlsAllowInvalidHostnames skips the name check only: a certificate from
    # a CA we do not trust is still refused, with its cause.
    c = _tls_client(
        secure_client,
        tls_server,
        auth_users,
        host="127.0.0.1",
        tlsCAFile=test_certs.other_ca,
        tlsAllowInvalidHostnames=True,
    )
    message = _refused(c)
    assert "certificate verification failed" in message and "mismatch" not in message


def test_crl_revoking_the_server_certificate(tls_server, test_certs, auth_users, secure_client):
    c = _tls_client(
        secure_client, tls_server, auth_users, tlsCAFile=test_certs.ca, tlsCRLFile=test_certs.crl_revoking_server
    )
    assert "revoked" in _refused(c)


def test_uri_options(tls_server, test_certs, auth_users, secure_client):
    uri = scram_uri(
        tls_server, auth_users.alice, auth_users.password, host="localhost", ssl="true", tlsCAFile=test_certs.ca
    )
    assert secure_client(uri).admin.command("ping")["ok"] == 1


def test_x509_authentication(tls_server, test_certs, secure_client):
    before = auth_counters(tls_server, "MONGODB-X509")
    c = secure_client(
        "localhost",
        tls_server.port,
        tls=True,
        tlsCAFile=test_certs.ca,
        tlsCertificateKeyFile=test_certs.client,
        authMechanism="MONGODB-X509",
    )
    status = c.admin.command("connectionStatus")
    assert status["authInfo"]["authenticatedUsers"] == [{"user": test_certs.client_subject, "db": "$external"}]
    after = auth_counters(tls_server, "MONGODB-X509")
    # Done inside the hello: speculative authentication.
    assert after["spec_successful"] == before["spec_successful"] + 1
    assert after["successful"] == before["successful"] + 1


def test_x509_certificate_of_no_user_fails_fast(tls_server, test_certs, secure_client):
    # A valid certificate from the trusted CA whose subject is no $external
    # user: the TLS handshake succeeds, authentication does not.  One
    # attempt, failing at once with the server's own answer (mongod 6.0 says
    # code 11, UserNotFound, for X.509, where a wrong SCRAM password is 18);
    # and the pool keeps no socket.
    c = secure_client(
        "localhost",
        tls_server.port,
        tls=True,
        tlsCAFile=test_certs.ca,
        tlsCertificateKeyFile=test_certs.stranger,
        authMechanism="MONGODB-X509",
        serverSelectionTimeoutMS=30000,
    )
    before = auth_counters(tls_server, "MONGODB-X509")
    exc, seconds = elapsed(lambda: c.admin.command("ping"))
    assert isinstance(exc, OperationFailure) and exc.code == 11, repr(exc)
    assert "Could not find user" in str(exc)
    assert seconds < 2.0
    after = auth_counters(tls_server, "MONGODB-X509")
    assert after["successful"] == before["successful"]
    # The speculative attempt in the hello, then the one full attempt the
    # specification asks for when the hello brings no answer: no more.
    assert after["spec_received"] == before["spec_received"] + 1
    assert after["received"] == before["received"] + 2
    stats = c.pool.get_stats()
    assert stats["in_use"] == 0 and stats["idle"] == 0


def test_x509_with_an_encrypted_key(tls_server, test_certs, secure_client):
    c = secure_client(
        "localhost",
        tls_server.port,
        tls=True,
        tlsCAFile=test_certs.ca,
        tlsCertificateKeyFile=test_certs.client_encrypted,
        tlsCertificateKeyFilePassword=test_certs.client_password,
        authMechanism="MONGODB-X509",
    )
    users = c.admin.command("connectionStatus")["authInfo"]["authenticatedUsers"]
    assert users == [{"user": test_certs.client_subject, "db": "$external"}]
    wrong = "not-" + test_certs.client_password
    with pytest.raises(ConfigurationError) as info:
        secure_client(
            "localhost",
            tls_server.port,
            tls=True,
            tlsCAFile=test_certs.ca,
            tlsCertificateKeyFile=test_certs.client_encrypted,
            tlsCertificateKeyFilePassword=wrong,
        )
    assert wrong not in str(info.value) and wrong not in repr(info.value.args)


def test_plaintext_client_refused(tls_server, auth_users, secure_client):
    c = secure_client(
        "127.0.0.1",
        tls_server.port,
        username=auth_users.alice,
        password=auth_users.password,
        serverSelectionTimeoutMS=500,
    )
    exc, seconds = elapsed(lambda: c.admin.command("ping"))
    assert isinstance(exc, (ServerSelectionTimeoutError, AutoReconnect)), exc
    assert seconds < 5


def test_tls_client_sends_no_plaintext_byte(secure_client, test_certs):
    # A small fake server (a hostile-server test): it records the first bytes
    # a TLS client sends, then hangs up.  They must be a TLS handshake record
    # (content type 22, version 3.x), never the OP_QUERY hello.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    received: list[bytes] = []

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            received.append(conn.recv(5))

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        c = secure_client(
            "localhost",
            port,
            tls=True,
            tlsCAFile=test_certs.ca,
            serverSelectionTimeoutMS=300,
            connectTimeoutMS=300,
            username="u",
            password="p",
        )
        with pytest.raises((ServerSelectionTimeoutError, AutoReconnect)):
            c.admin.command("ping")
        server.join(5)
    finally:
        listener.close()
    assert received and received[0][:2] == b"\x16\x03", received


def test_interrupted_tls_exchange_closes_the_socket(tls_server, test_certs, auth_users, secure_client):
    c = _tls_client(
        secure_client, tls_server, auth_users, tlsCAFile=test_certs.ca, socketTimeoutMS=200, retryReads=False
    )  # one interrupted exchange, not a retried second one
    db = c.tls_interrupt
    db.c.drop()
    db.c.insert_one({"x": 1})
    closed_before = c.pool.get_stats().get("closed", 0)
    with pytest.raises(NetworkTimeout):
        # The reply comes after 1 s, in the middle of our wait: the TLS
        # stream's state is unknown, so that socket must never be reused.
        db.c.find_one({"$where": "sleep(1000) || true"})
    assert c.pool.get_stats().get("closed", 0) == closed_before + 1
    assert db.c.find_one({}, {"_id": 0}) == {"x": 1}
    c.drop_database("tls_interrupt")


def test_requests_under_tls_and_auth(tls_server, test_certs, auth_users, secure_client):
    """200 greenlets (200 threads in the threads run), each in a request:
    a w=0 write then a read, over TLS with SCRAM.  No read may miss its own
    write, and each request must stay on one server connection."""
    green = CURRENT.green  # greenlets in the gevent modes; threads in threads and mixed
    workers = 200
    c = _tls_client(secure_client, tls_server, auth_users, tlsCAFile=test_certs.ca, maxPoolSize=workers)
    coll = c.tls_requests.docs
    coll.drop()
    stale: list = []
    conn_ids: dict[int, set] = {}

    def work(i):
        with c.start_request():
            ids = conn_ids.setdefault(i, set())
            ids.add(c.admin.command("hello")["connectionId"])
            for r in range(3):
                coll.insert_one({"w": i, "r": r}, w=0)
                if coll.find_one({"w": i, "r": r}) is None:
                    stale.append((i, r))
                # After every write-then-read, not only at the ends of the request.
                ids.add(c.admin.command("hello")["connectionId"])

    start = time.monotonic()
    if not green:
        errors = run_threads(work, workers)
    else:
        import gevent

        jobs = [gevent.spawn(work, i) for i in range(workers)]
        gevent.joinall(jobs, timeout=60)
        errors = [(j, g.exception) for j, g in enumerate(jobs) if not g.successful()]
    assert not errors, errors[:3]
    assert stale == []
    assert all(len(ids) == 1 for ids in conn_ids.values()) and len(conn_ids) == workers
    assert coll.count_documents({}) == workers * 3
    assert time.monotonic() - start < 60
    c.drop_database("tls_requests")


def test_tls_waits_yield_to_the_hub_in_greenlet_mode(tls_server, test_certs, auth_users):
    """use_greenlets=True, in every run (patched or not): while one greenlet
    waits 300 ms for a TLS reply, another keeps running."""
    import gevent

    import mongo_requests

    c = mongo_requests.MongoClient(
        "localhost",
        tls_server.port,
        tls=True,
        tlsCAFile=test_certs.ca,
        username=auth_users.alice,
        password=auth_users.password,
        use_greenlets=True,
    )
    try:
        c.admin.command("ping")  # connect (TLS handshake and SCRAM) first
        coll = c.tls_coop.c
        coll.drop()
        coll.insert_one({"x": 1})
        ticks: list[float] = []

        def ticker():
            while True:
                ticks.append(time.monotonic())
                gevent.sleep(0.01)

        t = gevent.spawn(ticker)
        slow = gevent.spawn(coll.find_one, {"$where": "sleep(300) || true"})
        slow.join(10)
        t.kill()
        assert slow.successful(), slow.exception
        assert slow.value["x"] == 1
        # About 30 ticks fit in 300 ms; a blocked hub would have allowed 1.
        assert len(ticks) >= 10, len(ticks)
        # A gevent.Timeout lands while the TLS reply is awaited: that
        # socket's stream is mid-record, so it is closed, never reused.
        closed = c.pool.get_stats().get("closed", 0)
        with pytest.raises(gevent.Timeout):
            with gevent.Timeout(0.1):
                coll.find_one({"$where": "sleep(300) || true"})
        assert c.pool.get_stats().get("closed", 0) == closed + 1
        assert coll.find_one({}, {"_id": 0}) == {"x": 1}
        c.drop_database("tls_coop")
    finally:
        c.close()


def test_compression_inside_tls(tls_server, test_certs, auth_users, secure_client):
    from security_fixtures import server_status

    def zstd_in() -> int:
        return server_status(tls_server)["network"]["compression"]["zstd"]["decompressor"]["bytesIn"]

    c = _tls_client(secure_client, tls_server, auth_users, tlsCAFile=test_certs.ca, compressors="zstd")
    before = zstd_in()
    c.tls_zstd.c.insert_many([{"i": i, "s": "x" * 100} for i in range(100)])
    assert c.tls_zstd.c.count_documents({}) >= 100
    assert zstd_in() > before
    c.drop_database("tls_zstd")


@pytest.mark.modes("mixed")
def test_mixed_mode_never_moves_a_tls_socket_between_hubs(tls_server, test_certs, auth_users, secure_client):
    """Mixed mode: real threads, each with its own hub.  A plain socket made
    by one thread's hub is re-wrapped for another's; a TLS socket cannot be
    (its session lives in its SSL object), so the pool closes it and opens
    a fresh one for the second thread, whose operation succeeds."""
    import gevent

    c = _tls_client(secure_client, tls_server, auth_users, tlsCAFile=test_certs.ca)
    results: list = []

    def in_thread(tag: str) -> None:
        def op() -> None:
            results.append((tag, c.admin.command("hello")["connectionId"]))

        gevent.spawn(op).join(10)

    for tag in ("first", "second"):
        t = threading.Thread(target=in_thread, args=(tag,))
        t.start()
        t.join(20)
    assert [tag for tag, _ in results] == ["first", "second"], results
    assert results[0][1] != results[1][1]  # a new connection for the other hub
    assert c.pool.get_stats()["closed"] == 1


def _tls_records_only(data: bytes) -> bool:
    """True when ``data`` is whole TLS records (content types 20-24, version 3.x), and nothing else."""
    i = 0
    while i < len(data):
        if len(data) - i < 5 or data[i] not in (20, 21, 22, 23, 24) or data[i + 1] != 3:
            return False
        i += 5 + int.from_bytes(data[i + 3 : i + 5], "big")
    return i == len(data)


def test_tls_client_never_falls_back_to_plaintext(secure_client, test_certs):
    # A hostile server: it answers every ClientHello with a plaintext MongoDB
    # reply, as a server that does not speak TLS would, and records all the
    # bytes of every connection the client opens while it keeps retrying.
    # Not one of them may be anything but TLS records; the hello and the
    # user name never go out in the clear.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    streams: list[bytearray] = []
    stop = threading.Event()
    plaintext_reply = (36).to_bytes(4, "little") + b"\x01\x00\x00\x00" * 2 + (1).to_bytes(4, "little") + b"\x00" * 20

    def serve():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                data = bytearray()
                streams.append(data)
                try:
                    while True:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        if not data:
                            conn.sendall(plaintext_reply)
                        data += chunk
                except OSError:
                    pass

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        c = secure_client(
            "localhost",
            port,
            tls=True,
            tlsCAFile=test_certs.ca,
            serverSelectionTimeoutMS=1000,
            connectTimeoutMS=500,
            username="plaintext-user",
            password="plaintext-pw",
        )
        with pytest.raises((ServerSelectionTimeoutError, AutoReconnect)):
            c.admin.command("ping")
    finally:
        stop.set()
        server.join(5)
        listener.close()
    assert streams and all(streams), streams
    for data in streams:
        assert _tls_records_only(bytes(data)), bytes(data[:64])
        assert b"isMaster" not in data and b"plaintext-user" not in data


@pytest.mark.parametrize("extra", [{}, {"tlsAllowInvalidHostnames": True}, {"tlsInsecure": True}])
def test_sni_names_the_host(secure_client, test_certs, extra):
    # mongod does not tell which SNI name it received, so a small TLS server
    # (the test CA's "localhost" certificate) records it, then hangs up.
    # The name goes out even when host names are not verified.
    names: list = []
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(test_certs.server)
    ctx.sni_callback = lambda sslsock, name, _ctx: names.append(name)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        conn.settimeout(5)
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(16)
        except OSError:
            conn.close()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        c = secure_client(
            "localhost",
            port,
            tls=True,
            tlsCAFile=test_certs.ca,
            serverSelectionTimeoutMS=300,
            connectTimeoutMS=2000,
            **extra,
        )
        with pytest.raises((ServerSelectionTimeoutError, AutoReconnect)):
            c.admin.command("ping")
        server.join(5)
    finally:
        listener.close()
    assert names[:1] == ["localhost"], names
