"""Server discovery as pure state: how a new server description changes the topology's.

This module follows the MongoDB *Server Discovery and Monitoring* (SDAM)
specification; the descriptions themselves are in
:mod:`mongo_requests.descriptions` (and re-exported here).  It does no I/O and
keeps no mutable state: a
:class:`ServerDescription` is what one ``hello`` reply (or one failure) said
about one server, a :class:`TopologyDescription` is what the client believes
about all of them, and :func:`apply` computes the next topology description
from the current one and a new server description.  The topology layer does
the checks (I/O) and swaps in the value :func:`apply` returns; pools are
created and closed by diffing the old and new ``servers`` mappings.

Rules implemented here, in the specification's words where they matter:

- a server's *type* comes from its ``hello`` reply (:func:`server_type`);
- the topology starts as ``Single`` (``directConnection=true``),
  ``ReplicaSetNoPrimary`` (``replicaSet`` given) or ``Unknown``;
- a member whose ``setName`` differs from the set's is removed;
- a primary's ``hosts``/``passives``/``arbiters`` lists are authoritative:
  members missing from them are removed, new ones added as ``Unknown``;
- a primary whose ``(electionId, setVersion)`` is older than the newest seen
  is stale: it is marked ``Unknown`` (MongoDB 6.0+ compares the electionId
  first; older servers the setVersion first);
- when a new primary is accepted, any other server still described as
  primary is marked ``Unknown``;
- a secondary whose ``me`` differs from the address we reached it by is
  removed (it is known under its canonical name).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .descriptions import (
    _ELECTION_ID_FIRST_WIRE_VERSION,
    _RS_MEMBER,
    MAX_SUPPORTED_WIRE_VERSION,
    MIN_SUPPORTED_WIRE_VERSION,
    Address,
    ServerDescription,
    ServerType,
    TopologyDescription,
    TopologyType,
    format_address,
    initial_topology,
    parse_address,
    server_type,
)

__all__ = [
    "Address",
    "ServerType",
    "TopologyType",
    "ServerDescription",
    "TopologyDescription",
    "apply",
    "initial_topology",
    "parse_address",
    "format_address",
    "server_type",
    "MIN_SUPPORTED_WIRE_VERSION",
    "MAX_SUPPORTED_WIRE_VERSION",
]


def topology_version_is_stale(current: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    """True if ``new`` is older than ``current`` (same server process, lower counter)."""
    if current is None or new is None:
        return False
    if current.get("processId") != new.get("processId"):
        return False
    return bool(new.get("counter", 0) < current.get("counter", 0))


class _Step:
    """The mutable working copy :func:`apply` edits before freezing it again."""

    def __init__(self, td: TopologyDescription) -> None:
        self.type = td.type
        self.servers: dict[Address, ServerDescription] = dict(td.servers)
        self.set_name = td.set_name
        self.max_set_version = td.max_set_version
        self.max_election_id = td.max_election_id
        self.seed_count = td.seed_count

    def freeze(self) -> TopologyDescription:
        return TopologyDescription(
            self.type, self.servers, self.set_name, self.max_set_version, self.max_election_id, self.seed_count
        )

    def check_if_has_primary(self) -> None:
        has = any(sd.type is ServerType.RSPrimary for sd in self.servers.values())
        self.type = TopologyType.ReplicaSetWithPrimary if has else TopologyType.ReplicaSetNoPrimary

    def add_hosts(self, sd: ServerDescription) -> None:
        for address in sorted(sd.all_hosts):
            if address not in self.servers:
                self.servers[address] = ServerDescription.unknown(address)

    def mark_possible_primary(self, sd: ServerDescription) -> None:
        # A member told us who the primary is: a single-threaded client checks
        # that one first during its next scan.
        if sd.primary is not None:
            current = self.servers.get(sd.primary)
            if current is not None and current.type is ServerType.Unknown:
                self.servers[sd.primary] = current.replace(type=ServerType.PossiblePrimary)

    def update_rs_without_primary(self, sd: ServerDescription) -> None:
        if self.set_name is None:
            self.set_name = sd.set_name
        elif self.set_name != sd.set_name:
            del self.servers[sd.address]
            return
        self.add_hosts(sd)
        self.mark_possible_primary(sd)
        if sd.me is not None and sd.me != sd.address:
            del self.servers[sd.address]

    def update_rs_with_primary_from_member(self, sd: ServerDescription) -> None:
        if self.set_name != sd.set_name or (sd.me is not None and sd.me != sd.address):
            del self.servers[sd.address]
            self.check_if_has_primary()
            return
        if not any(s.type is ServerType.RSPrimary for s in self.servers.values()):
            self.type = TopologyType.ReplicaSetNoPrimary
            self.mark_possible_primary(sd)

    def _stale(self, sd: ServerDescription, why: str) -> None:
        error = StalePrimaryError("primary marked stale due to mismatched %s" % why)
        self.servers[sd.address] = ServerDescription.unknown(sd.address, error, sd.last_update_time)
        self.check_if_has_primary()

    def update_rs_from_primary(self, sd: ServerDescription) -> None:
        if self.set_name is None:
            self.set_name = sd.set_name
        elif self.set_name != sd.set_name:
            del self.servers[sd.address]
            self.check_if_has_primary()
            return
        if sd.max_wire_version >= _ELECTION_ID_FIRST_WIRE_VERSION:
            # None sorts below any value, for both fields.
            election, max_election = _key(sd.election_id), _key(self.max_election_id)
            if election < max_election:
                return self._stale(sd, "electionId")
            if election == max_election and _key(sd.set_version) < _key(self.max_set_version):
                return self._stale(sd, "setVersion")
            self.max_election_id = sd.election_id
            self.max_set_version = sd.set_version
        else:
            if None not in (sd.set_version, sd.election_id, self.max_set_version, self.max_election_id):
                if self.max_set_version > sd.set_version:  # type: ignore[operator]
                    return self._stale(sd, "setVersion")
                if self.max_set_version == sd.set_version and self.max_election_id > sd.election_id:
                    return self._stale(sd, "electionId")
            if sd.election_id is not None:
                self.max_election_id = sd.election_id
            if sd.set_version is not None and (self.max_set_version is None or sd.set_version > self.max_set_version):
                self.max_set_version = sd.set_version
        for address, other in list(self.servers.items()):
            if address != sd.address and other.type is ServerType.RSPrimary:
                error = StalePrimaryError(
                    "primary marked stale due to electionId/setVersion mismatch: %s is the "
                    "new primary" % format_address(sd.address)
                )
                self.servers[address] = ServerDescription.unknown(address, error, sd.last_update_time)
        self.add_hosts(sd)
        members = sd.all_hosts
        for address in list(self.servers):
            if address not in members:
                del self.servers[address]
        self.check_if_has_primary()


class StalePrimaryError(Exception):
    """Why a server that claims to be primary was not believed (kept as its description's error)."""


def _key(value: Any) -> tuple[int, Any]:
    # A sort key under which None is below every value.
    return (0, 0) if value is None else (1, value)


def apply(td: TopologyDescription, sd: ServerDescription) -> TopologyDescription:
    """Return the topology description that follows ``td`` once ``sd`` is known.

    A pure function: ``td`` is not changed.  Descriptions of servers that are
    no longer part of the topology, and hello replies older than the current
    one (by ``topologyVersion``), are ignored: ``td`` itself is returned.
    """
    current = td.servers.get(sd.address)
    if current is None:
        return td
    if sd.type is not ServerType.Unknown and topology_version_is_stale(current.topology_version, sd.topology_version):
        return td
    if current.round_trip_time is not None and sd.round_trip_time is None and sd.type is not ServerType.Unknown:
        sd = sd.replace(round_trip_time=current.round_trip_time)
    step = _Step(td)
    step.servers[sd.address] = sd
    stype, ttype = sd.type, td.type
    if ttype is TopologyType.Single:
        if td.set_name is not None and sd.type is not ServerType.Unknown and sd.set_name != td.set_name:
            error = StaleSetNameError(
                "server %s reports replica set %r, not %r" % (format_address(sd.address), sd.set_name, td.set_name)
            )
            step.servers[sd.address] = ServerDescription.unknown(sd.address, error, sd.last_update_time)
    elif ttype is TopologyType.LoadBalanced:
        pass
    elif ttype is TopologyType.Unknown:
        if stype is ServerType.Standalone:
            if td.seed_count == 1:
                step.type = TopologyType.Single
            else:
                del step.servers[sd.address]
        elif stype is ServerType.Mongos:
            step.type = TopologyType.Sharded
        elif stype is ServerType.RSPrimary:
            step.update_rs_from_primary(sd)
        elif stype in _RS_MEMBER:
            step.type = TopologyType.ReplicaSetNoPrimary
            step.update_rs_without_primary(sd)
    elif ttype is TopologyType.Sharded:
        if stype not in (ServerType.Unknown, ServerType.Mongos):
            del step.servers[sd.address]
    elif ttype is TopologyType.ReplicaSetNoPrimary:
        if stype in (ServerType.Standalone, ServerType.Mongos):
            del step.servers[sd.address]
        elif stype is ServerType.RSPrimary:
            step.update_rs_from_primary(sd)
        elif stype in _RS_MEMBER:
            step.update_rs_without_primary(sd)
    else:  # ReplicaSetWithPrimary
        if stype in (ServerType.Standalone, ServerType.Mongos):
            del step.servers[sd.address]
            step.check_if_has_primary()
        elif stype is ServerType.RSPrimary:
            step.update_rs_from_primary(sd)
        elif stype in _RS_MEMBER:
            step.update_rs_with_primary_from_member(sd)
        else:  # Unknown, RSGhost
            step.check_if_has_primary()
    return step.freeze()


class StaleSetNameError(Exception):
    """A directly connected server belongs to another replica set than the configured one."""


# --- Errors that change what the topology knows ---------------------------
# Codes from the SDAM specification; messages are looked at only when a
# reply has no code (very old servers).
RECOVERING_CODES = frozenset((11600, 11602, 13436, 189, 91))
NOT_PRIMARY_CODES = frozenset((10107, 13435, 10058))
SHUTDOWN_CODES = frozenset((11600, 91))


def is_recovering(code: int | None, message: str) -> bool:
    """A "node is recovering" error, by code, or by message when there is no code."""
    if code:
        return code in RECOVERING_CODES
    return "not master or secondary" in message or "node is recovering" in message


def is_not_primary(code: int | None, message: str) -> bool:
    """A "not writable primary" error, by code, or by message when there is no code."""
    if code:
        return code in NOT_PRIMARY_CODES
    return not is_recovering(None, message) and "not master" in message


def is_state_change(code: int | None, message: str) -> bool:
    """Either kind: the server must be marked Unknown and checked again."""
    return is_recovering(code, message) or is_not_primary(code, message)


def is_shutdown(code: int | None) -> bool:
    """The server is shutting down: its pool must be cleared as well."""
    return bool(code) and code in SHUTDOWN_CODES
