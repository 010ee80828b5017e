"""Server checks against real servers: heartbeat connections, discovery scans."""
from __future__ import annotations

import socket

import pytest

from mongo_requests.monitor import ServerMonitor, scan
from mongo_requests.sdam import ServerType, TopologyType, initial_topology, parse_address
from mongo_requests.socket_info import SocketInfo
from mongo_requests.testing import MongodServer

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
