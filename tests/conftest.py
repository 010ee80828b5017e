"""Shared pytest fixtures: one real mongod for the whole test session.

Tests talk to a real server, never a mock.  Set ``MONGODB_URI`` to use a
server you already run; otherwise a throwaway ``mongod`` is started on
127.0.0.1 with :class:`mongo_requests.testing.MongodServer`.

Every pytest process runs in one test mode (threads, gevent-patched,
gevent-unpatched, mixed: see helpers.Mode), chosen by
``python tests/run_mode.py MODE ...``; a plain ``python -m pytest`` is the
threads mode.  The ``mode`` fixture offers the mode's spawn/join/sleep/event
and client options; the ``client``/``make_client`` fixtures apply them.  A
test runs in the modes its ``modes`` marker names (default: every mode but
mixed) and is deselected in the others.
"""

from __future__ import annotations

import faulthandler
import gc
import os
from collections.abc import Iterator

import pytest

import mongo_requests
from helpers import DEFAULT_MODES, MODES, ConnMonitor, Mode, current_mode, unique_app
from mongo_requests import pipeline as _pipeline
from mongo_requests.testing import MongodNotFound, MongodServer

MODE = current_mode()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: soak and fault tests")
    config.addinivalue_line(
        "markers",
        "modes(*names): the test modes this test runs in (default: %s; mixed only when named)"
        % ", ".join(DEFAULT_MODES),
    )
    config.addinivalue_line(
        "markers",
        "spawns_modes: runs other test modes in child pytest processes; only in a plain `pytest` run "
        "(no mode chosen), since tests/run_mode.py runs each mode itself",
    )
    MODE.check_patching()


def pytest_report_header(config: pytest.Config) -> str:
    return "mongo_requests test mode: %s%s" % (MODE.name, "" if MODE.explicit else " (plain run)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect (never skip) the tests that do not belong to this process's mode."""
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("modes")
        modes = marker.args if marker else DEFAULT_MODES
        unknown = set(modes) - set(MODES)
        if unknown:
            raise pytest.UsageError("%s: unknown mode(s) %s" % (item.nodeid, sorted(unknown)))
        wanted = MODE.name in modes
        if item.get_closest_marker("spawns_modes") and MODE.explicit:
            wanted = False
        (keep if wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def mode() -> Mode:
    """The test mode of this process (see helpers.Mode and tests/run_mode.py)."""
    return MODE


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


@pytest.fixture
def pm(mongodb_uri):
    """PyMongo 4's own client on the same server: the reference the drop-in tests compare with."""
    import pymongo

    c = pymongo.MongoClient(mongodb_uri, directConnection=True)
    yield c
    c.close()


@pytest.fixture(scope="session")
def mongod(_mongodb_session) -> MongodServer | None:
    """The session's :class:`MongodServer`, or None with ``MONGODB_URI``.

    Tests that kill or restart a server should start their own
    ``MongodServer`` rather than disturb this shared one.
    """
    return _mongodb_session[0]


@pytest.fixture
def client(mongodb_uri, mode):
    """A MongoClient with the defaults (acknowledged writes, no auto requests) and the mode's options."""
    c = mode.client(mongodb_uri)
    yield c
    c.close()


@pytest.fixture
def make_client(mongodb_uri, mode):
    """Factory for clients with the mode's options and more; every client made is closed afterwards."""
    made = []

    def make(**kwargs):
        cls = kwargs.pop("cls", mongo_requests.MongoClient)
        c = cls(mongodb_uri, **{**mode.client_options, **kwargs})
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def db(client):
    """A fresh database, dropped afterwards."""
    name = unique_app("t")
    yield client[name]
    client.drop_database(name)


@pytest.fixture
def admin_client(mongodb_uri):
    """A separate client for asking the server about itself (serverStatus...)."""
    c = mongo_requests.MongoClient(mongodb_uri)
    yield c
    c.close()


@pytest.fixture
def monitor(mode: Mode, mongodb_uri: str) -> Iterator[ConnMonitor]:
    """The server's connection count, sampled by a worker of this mode with a client of its own.

    Its baseline is the settled count before the test's clients open anything.
    """
    c = mode.client(mongodb_uri, appname="monitor")
    mon = ConnMonitor(c, mode=mode, interval=0.02)
    yield mon
    c.close()


@pytest.fixture
def scratch(monitor: ConnMonitor) -> Iterator[str]:
    """A unique database name, dropped afterwards (by the monitor's client)."""
    name = unique_app("gs")
    yield name
    monitor.admin_client.drop_database(name)


# A deadlock must leave evidence: dump every thread's stack and exit, well
# before the child runner's or CI's timeout kills the process silently.
WATCHDOG_S = float(os.environ.get("SCENARIO_WATCHDOG", "100"))


@pytest.fixture
def watchdog() -> Iterator[None]:
    """faulthandler dumps every thread's stack and exits if the test outlives WATCHDOG_S."""
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(autouse=True)
def _no_pipeline_left_open() -> Iterator[None]:
    """No test leaves a pipelining request counted open (``mongo_requests.pipeline.OPEN``).

    One left there keeps its client alive and every later write in the
    process off its hot path: a request whose caller died unended must drop
    out by itself once it is freed.
    """
    yield
    if _pipeline.OPEN:
        gc.collect()
        left = len(_pipeline.OPEN)
        _pipeline.OPEN.clear()
        assert not left, "%d pipelining request(s) left counted open" % left


# Security fixtures (auth and TLS servers, a test CA): see security_fixtures.py.
# ---------------------------------------------------------------------------
# Replica set fixtures (the replset helper's block).  One 3-member set per
# test session, started on first use; fault tests restart what they kill.
# ---------------------------------------------------------------------------
from mongo_requests.testing import ReplicaSet  # noqa: E402
from security_fixtures import (  # noqa: E402,F401
    auth_server,
    auth_users,
    secure_client,
    secure_replica_set,
    test_certs,
    tls_server,
)


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


@pytest.fixture
def make_rs_client(replica_set, mode):
    """Factory for clients of the session's replica set (every seed by default) with the mode's options."""
    made = []

    def make(uri=None, **kwargs):
        c = mode.client(uri or replica_set.uri, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
