"""Tests of the replica set launcher, :class:`mongo_requests.testing.ReplicaSet`.

They ask the members themselves (``hello``, ``replSetGetConfig``) with the
launcher's raw OP_MSG client: the driver is not involved.  They share the
session's set and leave it healthy (every member back, three members).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import mongo_requests.testing as testing
from mongo_requests.testing import ReplicaSet, raw_command

# The launcher talks to mongod with blocking sockets of its own: threads mode only.
pytestmark = pytest.mark.modes("threads")


def test_set_starts_with_a_primary_two_secondaries_and_short_timeouts(replica_set):
    rs = replica_set
    assert len(rs.members) == 3 and rs.uri == "mongodb://%s/?replicaSet=rs_test" % ",".join(rs.hosts)
    primary = rs.primary()
    assert primary is not None
    assert sorted(m.port for m in rs.secondaries()) == sorted(m.port for m in rs.members if m is not primary)
    hello = raw_command(primary.address, {"hello": 1})
    assert hello["setName"] == "rs_test" and sorted(hello["hosts"]) == sorted(rs.hosts)
    config = raw_command(primary.address, {"replSetGetConfig": 1})["config"]
    assert config["settings"]["electionTimeoutMillis"] == 2000
    assert sorted(m["tags"]["name"] for m in config["members"]) == ["m0", "m1", "m2"]
    assert rs.seed_uri(rs.members[1]) == "mongodb://%s/?replicaSet=rs_test" % rs.hosts[1]
    assert rs.member_named(rs.hosts[2]) is rs.members[2]


def test_stepdown_elects_another_member_within_seconds(replica_set):
    start = time.monotonic()
    old = replica_set.stepdown()
    new = replica_set.primary()
    assert new is not None and new is not old
    assert time.monotonic() - start < 20
    assert raw_command(old.address, {"hello": 1})["secondary"] is True


def test_kill_primary_then_restart(replica_set):
    rs = replica_set
    start = time.monotonic()
    old = rs.kill_primary()
    elected = time.monotonic() - start
    pid_gone = not old.running
    new = rs.primary()
    assert pid_gone and new is not None and new is not old
    assert elected < 30, "failover took %.1fs" % elected
    rs.restart(old)
    assert old.running and raw_command(old.address, {"hello": 1})["setName"] == "rs_test"
    assert len(rs.secondaries()) == 2


def test_remove_and_add_a_member(replica_set):
    rs = replica_set
    victim = rs.secondaries()[0]
    host = "%s:%d" % victim.address
    rs.remove_member(victim)
    try:
        assert host not in rs.hosts and victim in rs.removed
        primary = rs.wait_for_primary()
        deadline = time.monotonic() + 20
        while host in raw_command(primary.address, {"hello": 1})["hosts"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # The removed member keeps running, as a member of no set (a "ghost").
        hello = raw_command(victim.address, {"hello": 1})
        assert hello.get("isreplicaset") is True and "setName" not in hello
    finally:
        rs.add_member(victim)
    assert host in rs.hosts and not rs.removed
    assert host in raw_command(rs.wait_for_primary().address, {"hello": 1})["hosts"]


def test_member_count_is_checked():
    with pytest.raises(ValueError):
        ReplicaSet(members=0)
    with pytest.raises(ValueError):
        ReplicaSet(members=8)


def _child_env() -> dict:
    package_root = os.path.dirname(os.path.dirname(testing.__file__))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


def test_module_main_replset_prints_uri_and_stops_on_sigterm():
    proc = subprocess.Popen(
        [sys.executable, "-m", "mongo_requests.testing", "--replset"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_child_env(),
    )
    try:
        uri = proc.stdout.readline().decode().strip()
        assert uri.startswith("mongodb://127.0.0.1:") and uri.endswith("/?replicaSet=rs0"), proc.stderr.read()
        hosts = uri[len("mongodb://") :].split("/")[0].split(",")
        assert len(hosts) == 3
        addresses = [(h.split(":")[0], int(h.split(":")[1])) for h in hosts]
        hellos = [raw_command(a, {"hello": 1}) for a in addresses]
        assert sum(bool(h.get("isWritablePrimary")) for h in hellos) == 1
        assert sum(bool(h.get("secondary")) for h in hellos) == 2
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    for address in addresses:
        with pytest.raises(OSError):
            raw_command(address, {"ping": 1}, timeout=2)
