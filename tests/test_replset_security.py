"""Authentication and TLS to every member of a replica set.

The set (security_fixtures.secure_replica_set, one per test session) has 3
members, each started with ``--auth``, a ``--keyFile`` made at run time, and
``--tlsMode requireTLS`` with a certificate of the session's throwaway CA
that is valid for ``127.0.0.1``, the name the members go by in the set's
configuration.  So a client verifies every member's certificate *and* host
name.  What a member did is asked of the member itself: ``hello``'s ``me``,
``connectionStatus`` on the very connection, and ``currentOp``'s
``effectiveUsers`` for every connection our client opened.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
import urllib.parse

import pytest
from pymongo.errors import AutoReconnect, OperationFailure, ServerSelectionTimeoutError
from pymongo.read_preferences import Primary, Secondary
from pymongo.write_concern import WriteConcern

import mongo_requests.testing as testing
from helpers import run_threads, unique_app
from security_fixtures import CURRENT, SET_NAME, elapsed

ALICE = [{"user": "alice", "db": "admin"}]


def _seed_uri(member, user: str, password: str, **options) -> str:
    """One member as the only seed, with quoted credentials and ``options``."""
    query = urllib.parse.urlencode({"replicaSet": SET_NAME, **options})
    return "mongodb://%s:%s@%s:%d/?%s" % (
        urllib.parse.quote_plus(user),
        urllib.parse.quote_plus(password),
        member.host,
        member.port,
        query,
    )


def _client(secure_client, rs, auth_users, test_certs, seed=None, password=None, **kwargs):
    """A verified TLS + SCRAM client of the set, seeded with one member (a secondary by default)."""
    seed = seed or rs.secondaries()[0]
    uri = _seed_uri(seed, auth_users.alice, password or auth_users.password, tls="true", tlsCAFile=test_certs.ca)
    return secure_client(uri, **kwargs)


def _address(member) -> tuple[str, int]:
    return (member.host, member.port)


def test_scram_over_tls_discovers_the_set_from_one_seed(secure_replica_set, auth_users, test_certs, secure_client):
    rs = secure_replica_set
    primary = rs.primary()
    c = _client(secure_client, rs, auth_users, test_certs)
    status = c.admin.command("connectionStatus")
    assert status["authInfo"]["authenticatedUsers"] == ALICE
    # Only a secondary was named: the rest was discovered, over TLS and SCRAM too.
    assert c.primary == _address(primary)
    assert c.secondaries == {_address(m) for m in rs.members if m is not primary}
    assert c.nodes == {_address(m) for m in rs.members}
    with c.start_request():
        assert c.admin.command("hello")["me"] == "%s:%d" % primary.address
        sock = c.pool.pinned_socket().sock
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        # Verified for the IP address the set's configuration names.
        assert ("IP Address", "127.0.0.1") in sock.getpeercert()["subjectAltName"]


def test_every_member_authenticates_the_user(secure_replica_set, auth_users, test_certs, secure_client):
    rs = secure_replica_set
    app = unique_app("rsauth")
    c = _client(secure_client, rs, auth_users, test_certs, appname=app)
    name = unique_app("rsauth_db")
    # Acknowledged by every member, so that each one has the document.
    c[name].get_collection("c", write_concern=WriteConcern(w=len(rs.members), wtimeout=30000)).insert_one(
        {"_id": 1, "x": "secret"}
    )
    try:
        primary = rs.primary()
        for member in rs.members:
            tag = member.command({"hello": 1})["tags"]["name"]
            pref = Primary() if member is primary else Secondary([{"name": tag}])
            db = c.get_database(name, read_preference=pref)
            with c.start_request():
                # The read itself, then, through the request's socket on the
                # same member, who is asking: the member answers for its own
                # connection.
                assert db.c.find_one({"_id": 1}) == {"_id": 1, "x": "secret"}
                hello = db.command("hello", read_preference=pref)
                assert hello["me"] == "%s:%d" % member.address
                status = db.command("connectionStatus", read_preference=pref)
                assert status["authInfo"]["authenticatedUsers"] == ALICE
            # The member's own currentOp (asked as the admin user, on a
            # connection of its own) agrees: the connection that served the
            # request is logged in as alice.  Every other connection of this
            # client is too, but the heartbeat's: a monitor does not log in
            # (the SDAM specification), so at most one is anonymous.
            ops = member.command({"currentOp": 1, "$all": True, "appName": app})
            assert ops["ok"] == 1, ops
            users = {op.get("connectionId"): op.get("effectiveUsers") for op in ops["inprog"]}
            assert users.get(hello["connectionId"]) == ALICE, (hello["connectionId"], ops["inprog"])
            anonymous = [cid for cid, who in users.items() if not who]
            assert all(who == ALICE for who in users.values() if who), ops["inprog"]
            assert len(anonymous) <= 1, ops["inprog"]
    finally:
        c.drop_database(name)


def test_wrong_password_fails_fast_with_code_18(secure_replica_set, auth_users, test_certs, secure_client):
    rs = secure_replica_set
    wrong = "not-" + auth_users.password
    c = _client(secure_client, rs, auth_users, test_certs, password=wrong, serverSelectionTimeoutMS=10000)
    exc, seconds = elapsed(lambda: c.admin.command("ping"))
    assert isinstance(exc, OperationFailure), repr(exc)
    assert exc.code == 18
    assert seconds < 3, seconds
    for text in (str(exc), repr(exc.args), repr(exc.details)):
        assert wrong not in text and auth_users.password not in text
    # The set is fine for a client with the right password.
    good = _client(secure_client, rs, auth_users, test_certs)
    assert good.admin.command("ping")["ok"] == 1


def test_plaintext_client_refused_by_every_member(secure_replica_set, auth_users, secure_client):
    rs = secure_replica_set
    for member in rs.members:
        c = secure_client(
            _seed_uri(member, auth_users.alice, auth_users.password, directConnection="true"),
            serverSelectionTimeoutMS=500,
        )
        exc, seconds = elapsed(lambda c=c: c.admin.command("ping"))
        assert isinstance(exc, (ServerSelectionTimeoutError, AutoReconnect)), (member.address, exc)
        assert seconds < 5
        assert auth_users.password not in str(exc)
        # The member itself hangs up on a plaintext hello.
        with pytest.raises(OSError):
            testing.raw_command(member.address, {"hello": 1}, timeout=5)


def test_requests_on_the_set_under_tls_and_auth(secure_replica_set, auth_users, test_certs, secure_client):
    """200 greenlets (200 threads in the threads run), each in a request on the
    set: a w=0 write then a read, over TLS with SCRAM.  No read may miss its
    own write, and each request keeps one connection (on the primary)."""
    rs = secure_replica_set
    workers = 200
    c = _client(secure_client, rs, auth_users, test_certs, maxPoolSize=workers)
    name = unique_app("rsreq")
    coll = c[name].docs
    stale: list = []
    conn_ids: dict[int, set] = {}
    members: set = set()

    def work(i):
        with c.start_request():
            ids = conn_ids.setdefault(i, set())
            hello = c.admin.command("hello")
            ids.add(hello["connectionId"])
            members.add(hello["me"])
            for r in range(3):
                coll.insert_one({"w": i, "r": r}, w=0)
                if coll.find_one({"w": i, "r": r}) is None:
                    stale.append((i, r))
                ids.add(c.admin.command("hello")["connectionId"])

    start = time.monotonic()
    try:
        if not CURRENT.green:
            errors = run_threads(work, workers, join_timeout=60)
        else:
            import gevent

            jobs = [gevent.spawn(work, i) for i in range(workers)]
            gevent.joinall(jobs, timeout=60)
            errors = [(j, g.exception) for j, g in enumerate(jobs) if not g.successful()]
        assert not errors, errors[:3]
        assert stale == []
        assert len(conn_ids) == workers and all(len(ids) == 1 for ids in conn_ids.values())
        assert members == {"%s:%d" % rs.primary().address}
        assert coll.count_documents({}) == workers * 3
        assert time.monotonic() - start < 60
    finally:
        c.drop_database(name)


def test_key_file_is_private_and_outside_the_repository(secure_replica_set):
    # mongod refuses a keyFile that others can read; the secret is made at run
    # time in a temporary directory (deleted by cleanup()), never committed.
    rs = secure_replica_set
    assert stat.S_IMODE(os.stat(rs.key_file).st_mode) == 0o600
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert not os.path.abspath(rs.key_file).startswith(repo + os.sep)
    for member in rs.members:
        assert member.key_file == rs.key_file


@pytest.mark.modes("threads")
@pytest.mark.parametrize("topology", [["--replset", "--members", "1"], []], ids=["replset", "standalone"])
def test_module_main_secure_server_serves_then_cleans_up(secure_client, topology):
    # The manual-work launcher: a one-member set (or a standalone) with --auth
    # and --tls, whose printed URI (admin user, CA file) works as printed;
    # SIGTERM stops it and deletes the certificates.
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(testing.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mongo_requests.testing", *topology, "--auth", "--tls"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        uri = proc.stdout.readline().decode().strip()
        assert uri.startswith("mongodb://admin:") and "tls=true" in uri, proc.stderr.read()
        assert ("replicaSet=rs0" in uri) == bool(topology)
        ca = urllib.parse.unquote_plus(uri.split("tlsCAFile=")[1].split("&")[0])
        assert os.path.isfile(ca)
        c = secure_client(uri)
        assert c.admin.command("connectionStatus")["authInfo"]["authenticatedUsers"] == [
            {"user": "admin", "db": "admin"}
        ]
        address = c.address
        c.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert not os.path.exists(ca)
    with pytest.raises(OSError):
        testing.raw_command(address, {"hello": 1}, timeout=2)
