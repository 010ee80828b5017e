"""Shared pytest fixtures: one real mongod for the whole test session.

Tests talk to a real server, never a mock.  Set ``MONGODB_URI`` to use a
server you already run; otherwise a throwaway ``mongod`` is started on
127.0.0.1 with :class:`mongo_requests.testing.MongodServer`.
"""
from __future__ import annotations

import os

import pytest

from mongo_requests.testing import MongodNotFound, MongodServer


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: soak and fault tests")


@pytest.fixture(scope="session")
def _mongodb_session():
    """``(server, uri)``; server is None when ``MONGODB_URI`` is used."""
    uri = os.environ.get("MONGODB_URI")
    if uri:
        yield None, uri
        return
    try:
        server = MongodServer()
    except MongodNotFound as err:
        missing = str(err)
    else:
        missing = None
    if missing:
        # A missing server must fail the run loudly: a suite that silently
        # skips every database test would look green while testing nothing.
        # (Failing outside the except block keeps the report to one message.)
        pytest.fail(missing, pytrace=False)
    # MongodStartError propagates on purpose: its message carries the
    # command line and the tail of mongod's log.
    server.start()
    try:
        yield server, server.uri
    finally:
        server.stop()
        server.cleanup()


@pytest.fixture(scope="session")
def mongodb_uri(_mongodb_session) -> str:
    """Connection string of the session's server."""
    return _mongodb_session[1]


@pytest.fixture(scope="session")
def mongod(_mongodb_session) -> MongodServer | None:
    """The session's :class:`MongodServer`, or None with ``MONGODB_URI``.

    Tests that kill or restart a server should start their own
    ``MongodServer`` rather than disturb this shared one.
    """
    return _mongodb_session[0]


# ---------------------------------------------------------------------------
# Driver fixtures (client, db) are added below by the driver author.
# ---------------------------------------------------------------------------

import uuid  # noqa: E402

import mongo_requests  # noqa: E402


# MONGO_REQUESTS_TEST_MODE=gevent-unpatched (tox env gevent-unpatched) runs
# the suite's clients with greenlet identity in an unpatched process: every
# wait and every socket is gevent's, though nothing was monkey-patched.
# Under tests/run_patched.py (mode "gevent"), auto-detection must pick
# greenlets by itself, so no option is forced there.
TEST_MODE = os.environ.get("MONGO_REQUESTS_TEST_MODE", "threads")
_MODE_OPTIONS = {"gevent-unpatched": {"use_greenlets": True}}.get(TEST_MODE, {})


@pytest.fixture
def client(mongodb_uri):
    """A MongoClient with the defaults (acknowledged writes, no auto requests)."""
    c = mongo_requests.MongoClient(mongodb_uri, **_MODE_OPTIONS)
    yield c
    c.close()


@pytest.fixture
def make_client(mongodb_uri):
    """Factory for clients with options; every client made is closed afterwards."""
    made = []

    def make(**kwargs):
        cls = kwargs.pop("cls", mongo_requests.MongoClient)
        c = cls(mongodb_uri, **{**_MODE_OPTIONS, **kwargs})
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def db(client):
    """A fresh database, dropped afterwards."""
    name = "t_" + uuid.uuid4().hex[:12]
    yield client[name]
    client.drop_database(name)


@pytest.fixture
def admin_client(mongodb_uri):
    """A separate client for asking the server about itself (serverStatus...)."""
    c = mongo_requests.MongoClient(mongodb_uri)
    yield c
    c.close()


# Kept importable from here for older test modules; the one definition is in helpers.
from helpers import server_connections  # noqa: E402,F401


# ---------------------------------------------------------------------------
# Replica set fixtures (the replset helper's block).  One 3-member set per
# test session, started on first use; fault tests restart what they kill.
# ---------------------------------------------------------------------------

from mongo_requests.testing import ReplicaSet  # noqa: E402


@pytest.fixture(scope="session")
def _replica_set_session():
    rs = ReplicaSet("rs_test")
    # MongodNotFound / MongodStartError propagate: a missing server fails loudly.
    rs.start()
    try:
        yield rs
    finally:
        rs.stop()
        rs.cleanup()


@pytest.fixture
def replica_set(_replica_set_session) -> ReplicaSet:
    """The session's :class:`ReplicaSet`, healthy: members killed or removed by an earlier test are back."""
    rs = _replica_set_session
    for member in list(rs.removed):
        rs.add_member(member, wait=False)
    for member in rs.members:
        if not member.running:
            member.start()
    rs.wait_healthy()
    return rs
