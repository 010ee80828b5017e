"""Server checks against real servers: heartbeat connections (no authentication, same TLS), discovery scans."""

from __future__ import annotations

import socket

import pytest

from helpers import PATCHED, THREADS, UNPATCHED, unique_app
from mongo_requests.monitor import ServerMonitor, scan
from mongo_requests.sdam import ServerType, TopologyType, initial_topology, parse_address
from mongo_requests.socket_info import SocketInfo
from mongo_requests.testing import MongodServer
from security_fixtures import auth_counters, scram_uri, server_status

# Checks with stdlib sockets, outside any client: threads mode only (the modes run in test_replset).
pytestmark = pytest.mark.modes("threads")


def connect(address, timeout):
    return SocketInfo.connect(address, socket, timeout, timeout, 0, None)


class Monitors(dict):
    def __missing__(self, address):
        monitor = self[address] = ServerMonitor(address, connect)
        return monitor

    def close(self):
        for m in self.values():
            m.close()


def test_scan_from_one_seed_discovers_the_whole_set(replica_set):
    monitors = Monitors()
    try:
        seed = parse_address(replica_set.hosts[1])
        td = scan(initial_topology([seed]), monitors.__getitem__, 5.0)
        assert td.type is TopologyType.ReplicaSetWithPrimary and td.set_name == "rs_test"
        assert sorted("%s:%d" % a for a in td.servers) == sorted(replica_set.hosts)
        kinds = sorted(sd.type.name for sd in td.servers.values())
        assert kinds == ["RSPrimary", "RSSecondary", "RSSecondary"]
        assert all(sd.round_trip_time is not None and sd.round_trip_time > 0 for sd in td.servers.values())
        assert sorted(sd.tags["name"] for sd in td.servers.values()) == ["m0", "m1", "m2"]
        primary = replica_set.primary()
        assert "%s:%d" % td.primary.address == "%s:%d" % primary.address
    finally:
        monitors.close()


def test_heartbeats_reuse_one_connection_per_server(replica_set):
    monitors = Monitors()
    try:
        address = parse_address(replica_set.hosts[0])
        first = monitors[address].check(5.0)
        second = monitors[address].check(5.0)
        # The server's own connection id proves both checks used one socket.
        assert first.hello["connectionId"] == second.hello["connectionId"]
        rtt = monitors[address].rtt
        assert rtt is not None and rtt > 0
    finally:
        monitors.close()


def test_check_reports_a_dead_server_and_recovers_after_restart():
    server = MongodServer()
    monitors = Monitors()
    try:
        server.start()
        monitor = monitors[server.address]
        before = monitor.check(5.0)
        assert before.type is ServerType.Standalone
        server.kill()
        down = monitor.check(2.0)
        assert down.type is ServerType.Unknown and down.error is not None
        assert "%d" % server.port in str(down.error) and monitor.rtt is None
        server.start()
        # Same port, new process: one check is enough.
        up = monitor.check(5.0)
        assert up.type is ServerType.Standalone
        assert up.topology_version["processId"] != before.topology_version["processId"]
        # A restart between two checks leaves a dead kept socket: the check retries once.
        server.kill()
        server.start()
        again = monitor.check(5.0)
        assert again.type is ServerType.Standalone
    finally:
        monitors.close()
        server.stop()
        server.cleanup()


# -- heartbeat connections on a server with authentication ----------------------------------------------------------


def _sasl_conversations(server) -> int:
    """Every SCRAM conversation the server was asked for (serverStatus; the speculative ones included)."""
    return sum(auth_counters(server, mech)["received"] for mech in ("SCRAM-SHA-1", "SCRAM-SHA-256"))


def _connections_created(server) -> int:
    return int(server_status(server)["connections"]["totalCreated"])


def _app_connections(server, app: str) -> list[dict]:
    admin = server.pymongo_client(maxPoolSize=1)
    try:
        return list(
            admin.admin.aggregate(
                [{"$currentOp": {"allUsers": True, "idleConnections": True}}, {"$match": {"appName": app}}]
            )
        )
    finally:
        admin.close()


@pytest.mark.modes(THREADS, PATCHED, UNPATCHED)
def test_heartbeat_connections_do_not_authenticate(auth_server, auth_users, secure_client):
    # Server monitoring specification: monitoring sockets MUST NOT authenticate
    # nor negotiate a SCRAM mechanism.  The server's counters and $currentOp say what happened.
    app = unique_app("hbauth")
    uri = scram_uri(auth_server, auth_users.alice, auth_users.password, appname=app)
    address = ("127.0.0.1", auth_server.port)
    sasl, created = _sasl_conversations(auth_server), _connections_created(auth_server)

    # A scan as the client runs it: two seeds make the topology Unknown, so the
    # server is checked over a heartbeat connection (then dropped, a standalone
    # among several seeds, as SDAM says).
    two_seeds = uri.replace("@127.0.0.1:%d/" % auth_server.port, "@127.0.0.1:%d,127.0.0.1:1/" % auth_server.port)
    scanning = secure_client(two_seeds)
    assert scanning.nodes == frozenset()
    assert _connections_created(auth_server) == created + 1  # the heartbeat connection reached the server...
    assert _sasl_conversations(auth_server) == sasl  # ...and started no SCRAM conversation

    # A kept heartbeat connection next to an application connection of the same client.
    client = secure_client(uri)
    client.admin.command("ping")  # a pool connection: authenticated (speculatively, in its hello)
    assert _sasl_conversations(auth_server) == sasl + 1
    check = client._topology._monitor_for(address).check(5.0)
    assert check.type is ServerType.Standalone and check.error is None
    assert "speculativeAuthenticate" not in check.hello and "saslSupportedMechs" not in check.hello
    assert _sasl_conversations(auth_server) == sasl + 1
    conns = _app_connections(auth_server, app)
    users = sorted(str(c.get("effectiveUsers")) for c in conns)
    assert users == ["None", "[{'user': '%s', 'db': 'admin'}]" % auth_users.alice], conns


@pytest.mark.modes(THREADS, PATCHED, UNPATCHED)
def test_heartbeat_connections_keep_tls(tls_server, test_certs, auth_users, secure_client):
    # The server requires TLS: only a TLS hello can tell the monitor it is a
    # standalone (which a topology of several seeds then drops); a plain one
    # would leave it Unknown, with the error.
    uri = scram_uri(
        tls_server, auth_users.alice, auth_users.password, host="localhost", tls="true", tlsCAFile=test_certs.ca
    )
    sasl, created = _sasl_conversations(tls_server), _connections_created(tls_server)
    seeds = "@localhost:%d,localhost:1/" % tls_server.port
    client = secure_client(uri.replace("@localhost:%d/" % tls_server.port, seeds))
    assert client.nodes == frozenset()
    assert ("localhost", tls_server.port) not in client._topology.description.servers
    assert _connections_created(tls_server) == created + 1
    assert _sasl_conversations(tls_server) == sasl
