"""Server discovery and monitoring as pure state: no server needed.

The cases follow the facts the MongoDB SDAM specification's test plan states
(server types from hello replies, discovery, stale primaries, reconfigs,
members of other sets), written here as this project's own small scenarios.
"""

from __future__ import annotations

import datetime

import pytest
from bson import ObjectId

from mongo_requests import sdam
from mongo_requests.sdam import (
    ServerDescription,
    ServerType,
    TopologyDescription,
    TopologyType,
    apply,
    initial_topology,
    parse_address,
    server_type,
)

# Pure state: the same code in every mode, so it runs once (threads).
pytestmark = pytest.mark.modes("threads")

A, B, C, D = ("a", 27017), ("b", 27017), ("c", 27017), ("d", 27017)


def oid(n: int) -> ObjectId:
    return ObjectId("%024x" % n)


def primary(hosts=("a:27017", "b:27017", "c:27017"), set_name="rs", wire=17, **extra):
    return {
        "ok": 1,
        "isWritablePrimary": True,
        "hosts": list(hosts),
        "setName": set_name,
        "minWireVersion": 0,
        "maxWireVersion": wire,
        **extra,
    }


def secondary(hosts=("a:27017", "b:27017", "c:27017"), set_name="rs", **extra):
    return {
        "ok": 1,
        "isWritablePrimary": False,
        "secondary": True,
        "hosts": list(hosts),
        "setName": set_name,
        "minWireVersion": 0,
        "maxWireVersion": 17,
        **extra,
    }


STANDALONE = {"ok": 1, "isWritablePrimary": True, "minWireVersion": 0, "maxWireVersion": 17}
MONGOS = {"ok": 1, "isWritablePrimary": True, "msg": "isdbgrid", "minWireVersion": 0, "maxWireVersion": 17}


def feed(td: TopologyDescription, address, hello) -> TopologyDescription:
    return apply(td, ServerDescription.from_hello(address, hello))


def fail(td: TopologyDescription, address, error="connection refused") -> TopologyDescription:
    return apply(td, ServerDescription.unknown(address, OSError(error)))


def types(td: TopologyDescription) -> dict:
    return {a: sd.type for a, sd in td.servers.items()}


# --- Parsing ---------------------------------------------------------------


@pytest.mark.parametrize(
    "hello, expected",
    [
        ({"ok": 0}, ServerType.Unknown),
        (STANDALONE, ServerType.Standalone),
        (MONGOS, ServerType.Mongos),
        (primary(), ServerType.RSPrimary),
        ({"ok": 1, "ismaster": True, "setName": "rs", "hosts": []}, ServerType.RSPrimary),  # legacy field
        (secondary(), ServerType.RSSecondary),
        (secondary(hidden=True), ServerType.RSOther),
        ({"ok": 1, "setName": "rs", "arbiterOnly": True}, ServerType.RSArbiter),
        ({"ok": 1, "setName": "rs"}, ServerType.RSOther),  # e.g. a member in STARTUP2 or RECOVERING
        ({"ok": 1, "isreplicaset": True}, ServerType.RSGhost),  # started with --replSet, not initiated
    ],
)
def test_server_type_from_hello(hello, expected):
    assert server_type(hello) is expected


def test_parse_address_lowercases_and_defaults_the_port():
    assert parse_address("Host.Example.COM") == ("host.example.com", 27017)
    assert parse_address("a:1234") == ("a", 1234)
    assert parse_address("[::1]:27018") == ("::1", 27018)
    assert parse_address("[::1]") == ("::1", 27017)
    with pytest.raises(ValueError):
        parse_address("a:0")
    with pytest.raises(ValueError):
        parse_address("a:port")


def test_description_fields_from_hello():
    write = datetime.datetime(2024, 1, 2, 3, 4, 5)
    hello = secondary(
        hosts=["A:27017", "b:27017"],
        passives=["C:27017"],
        arbiters=["d:27017"],
        me="B:27017",
        primary="A:27017",
        tags={"dc": "ny"},
        setVersion=3,
        logicalSessionTimeoutMinutes=30,
        lastWrite={"lastWriteDate": write},
    )
    sd = ServerDescription.from_hello(B, hello, round_trip_time=0.002, now=12.5)
    assert sd.type is ServerType.RSSecondary
    assert sd.hosts == {A, B} and sd.passives == {C} and sd.arbiters == {D}
    assert sd.all_hosts == {A, B, C, D}
    assert sd.me == B and sd.primary == A
    assert sd.tags == {"dc": "ny"}
    assert sd.set_version == 3 and sd.logical_session_timeout_minutes == 30
    assert sd.round_trip_time == 0.002 and sd.last_update_time == 12.5
    # Naive bson dates are UTC, whatever the machine's time zone.
    assert sd.last_write_date == write.replace(tzinfo=datetime.UTC).timestamp()
    with pytest.raises(AttributeError):
        sd.type = ServerType.Unknown  # type: ignore[misc]


def test_failed_hello_makes_an_unknown_description():
    sd = ServerDescription.from_hello(A, {"ok": 0, "errmsg": "boom"})
    assert sd.type is ServerType.Unknown and not sd.hosts


# --- Initial state ---------------------------------------------------------


def test_initial_topology_types():
    assert initial_topology([A]).type is TopologyType.Unknown
    assert initial_topology([A], direct_connection=True).type is TopologyType.Single
    td = initial_topology([A, B, A], replica_set="rs")
    assert td.type is TopologyType.ReplicaSetNoPrimary and td.set_name == "rs"
    assert list(td.servers) == [A, B] and td.seed_count == 2
    assert all(sd.type is ServerType.Unknown for sd in td.servers.values())
    with pytest.raises(ValueError):
        initial_topology([A, B], direct_connection=True)
    with pytest.raises(ValueError):
        initial_topology([])


# --- Discovery -------------------------------------------------------------


def test_discover_the_set_from_one_seed_that_is_primary():
    td0 = initial_topology([A])
    td = feed(td0, A, primary())
    assert td.type is TopologyType.ReplicaSetWithPrimary and td.set_name == "rs"
    assert types(td) == {A: ServerType.RSPrimary, B: ServerType.Unknown, C: ServerType.Unknown}
    # apply is pure: the old value did not change.
    assert td0.type is TopologyType.Unknown and list(td0.servers) == [A]


def test_discover_from_a_secondary_then_the_primary():
    td = feed(initial_topology([B], replica_set="rs"), B, secondary(me="b:27017", primary="a:27017"))
    assert td.type is TopologyType.ReplicaSetNoPrimary
    # The secondary named the primary: it is checked first in the next scan.
    assert types(td) == {A: ServerType.PossiblePrimary, B: ServerType.RSSecondary, C: ServerType.Unknown}
    td = feed(td, A, primary())
    assert td.type is TopologyType.ReplicaSetWithPrimary
    assert td.primary is not None and td.primary.address == A


def test_secondary_with_unknown_topology_becomes_replica_set_no_primary():
    td = feed(initial_topology([A]), A, secondary(hosts=["a:27017", "b:27017"]))
    assert td.type is TopologyType.ReplicaSetNoPrimary and td.set_name == "rs"
    assert set(td.servers) == {A, B}


def test_passives_and_arbiters_are_members_too():
    td = feed(initial_topology([A]), A, primary(hosts=["a:27017"], passives=["b:27017"], arbiters=["c:27017"]))
    assert set(td.servers) == {A, B, C}
    td = feed(
        td,
        C,
        {
            "ok": 1,
            "setName": "rs",
            "arbiterOnly": True,
            "hosts": ["a:27017"],
            "arbiters": ["c:27017"],
            "minWireVersion": 0,
            "maxWireVersion": 17,
        },
    )
    assert td.servers[C].type is ServerType.RSArbiter and td.type is TopologyType.ReplicaSetWithPrimary


def test_single_standalone_seed_becomes_single():
    td = feed(initial_topology([A]), A, STANDALONE)
    assert td.type is TopologyType.Single and td.servers[A].type is ServerType.Standalone


def test_standalone_among_several_seeds_is_removed():
    td = feed(initial_topology([A, B]), A, STANDALONE)
    assert td.type is TopologyType.Unknown and set(td.servers) == {B}


def test_mongos_makes_sharded_and_non_mongos_is_removed():
    td = feed(initial_topology([A, B]), A, MONGOS)
    assert td.type is TopologyType.Sharded
    td = feed(td, B, primary(hosts=["b:27017"]))
    assert td.type is TopologyType.Sharded and set(td.servers) == {A}


def test_standalone_or_mongos_in_a_replica_set_is_removed():
    td = feed(initial_topology([A, B, C], replica_set="rs"), A, primary())
    td = feed(td, B, STANDALONE)
    td = feed(td, C, MONGOS)
    assert set(td.servers) == {A} and td.type is TopologyType.ReplicaSetWithPrimary
    td = feed(initial_topology([A, B], replica_set="rs"), A, STANDALONE)
    assert set(td.servers) == {B} and td.type is TopologyType.ReplicaSetNoPrimary


def test_ghost_is_kept_and_changes_nothing():
    td = feed(initial_topology([A, B]), A, {"ok": 1, "isreplicaset": True, "minWireVersion": 0, "maxWireVersion": 17})
    assert td.type is TopologyType.Unknown and td.servers[A].type is ServerType.RSGhost
    td = feed(
        feed(initial_topology([A, B]), B, primary(hosts=["a:27017", "b:27017"])),
        A,
        {"ok": 1, "isreplicaset": True, "minWireVersion": 0, "maxWireVersion": 17},
    )
    assert td.type is TopologyType.ReplicaSetWithPrimary and td.servers[A].type is ServerType.RSGhost


def test_description_for_a_removed_server_is_ignored():
    td = feed(initial_topology([A]), A, primary(hosts=["a:27017"]))
    assert feed(td, D, secondary()) is td


# --- Set names -------------------------------------------------------------


def test_member_of_another_set_is_dropped():
    td = feed(initial_topology([A, B], replica_set="rs"), B, secondary(set_name="other"))
    assert set(td.servers) == {A}
    td = feed(initial_topology([A, B], replica_set="rs"), A, primary(set_name="other"))
    assert set(td.servers) == {B} and td.type is TopologyType.ReplicaSetNoPrimary


def test_member_of_another_set_is_dropped_with_a_primary_known():
    td = feed(initial_topology([A]), A, primary())
    td = feed(td, B, secondary(set_name="wrong"))
    assert set(td.servers) == {A, C} and td.type is TopologyType.ReplicaSetWithPrimary


def test_first_set_name_seen_is_kept():
    td = feed(initial_topology([A, B]), A, secondary(hosts=["a:27017", "b:27017"]))
    td = feed(td, B, secondary(hosts=["a:27017", "b:27017"], set_name="other"))
    assert td.set_name == "rs" and set(td.servers) == {A}


def test_direct_connection_to_a_member_of_the_wrong_set():
    td = feed(initial_topology([A], replica_set="rs", direct_connection=True), A, secondary(set_name="x"))
    assert td.type is TopologyType.Single
    sd = td.servers[A]
    assert sd.type is ServerType.Unknown and "'x'" in str(sd.error)
    td = feed(initial_topology([A], replica_set="rs", direct_connection=True), A, STANDALONE)
    assert td.servers[A].type is ServerType.Unknown


def test_direct_connection_keeps_a_secondary_single():
    td = feed(initial_topology([B], direct_connection=True), B, secondary())
    assert td.type is TopologyType.Single and set(td.servers) == {B}


# --- "me" and canonical names ----------------------------------------------


def test_secondary_known_under_another_name_is_replaced():
    td = feed(initial_topology([("alias", 27017)], replica_set="rs"), ("alias", 27017), secondary(me="b:27017"))
    assert ("alias", 27017) not in td.servers and set(td.servers) == {A, B, C}


def test_primary_reached_by_an_alias_is_replaced_by_its_hosts():
    alias = ("10.0.0.1", 27017)
    td = feed(initial_topology([alias]), alias, primary(me="a:27017"))
    assert alias not in td.servers and set(td.servers) == {A, B, C}
    assert td.type is TopologyType.ReplicaSetNoPrimary


def test_secondary_with_wrong_me_and_a_primary_known():
    td = feed(initial_topology([A]), A, primary())
    td = feed(td, B, secondary(me="c:27017"))
    assert set(td.servers) == {A, C}


# --- Reconfigs: the primary's hosts list is authoritative ------------------


def test_reconfig_removing_a_member():
    td = feed(initial_topology([A]), A, primary())
    td = feed(td, C, secondary())
    td = feed(td, A, primary(hosts=["a:27017", "b:27017"], setVersion=2, electionId=oid(1)))
    assert set(td.servers) == {A, B}


def test_reconfig_adding_a_member():
    td = feed(initial_topology([A]), A, primary(hosts=["a:27017"]))
    td = feed(td, A, primary(hosts=["a:27017", "d:27017"], setVersion=2))
    assert set(td.servers) == {A, D} and td.servers[D].type is ServerType.Unknown


def test_secondaries_do_not_remove_members():
    td = feed(initial_topology([A, B, C], replica_set="rs"), B, secondary(hosts=["b:27017"]))
    assert set(td.servers) == {A, B, C}


# --- Stale primaries --------------------------------------------------------


def test_new_primary_demotes_the_old_one():
    td = feed(initial_topology([A]), A, primary(setVersion=1, electionId=oid(1)))
    td = feed(td, B, primary(setVersion=1, electionId=oid(2)))
    assert td.servers[B].type is ServerType.RSPrimary
    assert td.servers[A].type is ServerType.Unknown
    assert "primary marked stale" in str(td.servers[A].error)
    assert td.max_election_id == oid(2) and td.max_set_version == 1


def test_stale_election_id_is_rejected():
    td = feed(initial_topology([A]), A, primary(setVersion=1, electionId=oid(2)))
    td = feed(td, B, primary(setVersion=1, electionId=oid(1)))
    assert td.servers[A].type is ServerType.RSPrimary
    assert td.servers[B].type is ServerType.Unknown
    assert "mismatched electionId" in str(td.servers[B].error)
    assert td.type is TopologyType.ReplicaSetWithPrimary


def test_stale_set_version_is_rejected_when_election_ids_are_equal():
    td = feed(initial_topology([A]), A, primary(setVersion=2, electionId=oid(1)))
    td = feed(td, B, primary(setVersion=1, electionId=oid(1)))
    assert td.servers[B].type is ServerType.Unknown and "mismatched setVersion" in str(td.servers[B].error)


def test_from_6_0_election_id_wins_over_set_version():
    # A newer election with an older setVersion is the real primary (6.0+ rule).
    td = feed(initial_topology([A]), A, primary(setVersion=2, electionId=oid(1)))
    td = feed(td, B, primary(setVersion=1, electionId=oid(2)))
    assert td.servers[B].type is ServerType.RSPrimary and td.servers[A].type is ServerType.Unknown
    assert td.max_set_version == 1 and td.max_election_id == oid(2)


def test_before_6_0_set_version_wins_over_election_id():
    td = feed(initial_topology([A]), A, primary(wire=16, setVersion=2, electionId=oid(1)))
    td = feed(td, B, primary(wire=16, setVersion=1, electionId=oid(2)))
    assert td.servers[A].type is ServerType.RSPrimary and td.servers[B].type is ServerType.Unknown
    assert td.max_set_version == 2 and td.max_election_id == oid(1)


def test_stale_primary_after_disconnect_is_rejected():
    td = feed(initial_topology([A]), A, primary(setVersion=1, electionId=oid(1)))
    td = feed(td, B, primary(setVersion=1, electionId=oid(2)))
    td = fail(td, B)  # the new primary goes away
    assert td.type is TopologyType.ReplicaSetNoPrimary
    td = feed(td, A, primary(setVersion=1, electionId=oid(1)))  # the old one still thinks it is primary
    assert td.servers[A].type is ServerType.Unknown and td.type is TopologyType.ReplicaSetNoPrimary


def test_missing_election_id_counts_as_older_from_6_0():
    td = feed(initial_topology([A]), A, primary(setVersion=1, electionId=oid(1)))
    td = feed(td, B, primary(setVersion=5))
    assert td.servers[B].type is ServerType.Unknown and td.servers[A].type is ServerType.RSPrimary


def test_set_version_is_recorded_without_election_id():
    td = feed(initial_topology([A]), A, primary(setVersion=1))
    assert td.max_set_version == 1 and td.max_election_id is None
    td = feed(td, B, primary(setVersion=2))
    assert td.servers[B].type is ServerType.RSPrimary and td.max_set_version == 2


def test_pre_6_0_primaries_without_election_ids_replace_each_other():
    td = feed(initial_topology([A]), A, primary(wire=16))
    td = feed(td, B, primary(wire=16))
    assert td.servers[B].type is ServerType.RSPrimary and td.servers[A].type is ServerType.Unknown


# --- Errors and losing the primary -----------------------------------------


def test_network_error_on_primary_leaves_no_primary():
    td = feed(initial_topology([A]), A, primary())
    td = fail(td, A)
    assert td.type is TopologyType.ReplicaSetNoPrimary
    assert td.servers[A].type is ServerType.Unknown and "connection refused" in str(td.servers[A].error)
    assert set(td.servers) == {A, B, C}  # an error never removes a member


def test_primary_becoming_secondary_leaves_no_primary():
    td = feed(initial_topology([A]), A, primary())
    td = feed(td, A, secondary())
    assert td.type is TopologyType.ReplicaSetNoPrimary


def test_stale_topology_version_is_ignored():
    tv_new = {"processId": oid(7), "counter": 5}
    tv_old = {"processId": oid(7), "counter": 4}
    td = feed(initial_topology([A]), A, primary(topologyVersion=tv_new))
    assert feed(td, A, secondary(topologyVersion=tv_old)) is td
    # A restarted server has a new processId: its counter starts over.
    td2 = feed(td, A, secondary(topologyVersion={"processId": oid(8), "counter": 0}))
    assert td2.servers[A].type is ServerType.RSSecondary


def test_round_trip_time_is_kept_when_a_check_brings_none():
    td = apply(initial_topology([A]), ServerDescription.from_hello(A, primary(hosts=["a:27017"]), 0.005))
    td = feed(td, A, primary(hosts=["a:27017"]))
    assert td.servers[A].round_trip_time == 0.005


# --- Derived values ---------------------------------------------------------


def test_logical_session_timeout_is_the_minimum_over_data_bearing_members():
    td = feed(initial_topology([A]), A, primary(logicalSessionTimeoutMinutes=30))
    assert td.logical_session_timeout_minutes == 30
    td = feed(td, B, secondary(logicalSessionTimeoutMinutes=20))
    assert td.logical_session_timeout_minutes == 20
    td = feed(td, C, secondary())
    assert td.logical_session_timeout_minutes is None  # one member without sessions


def test_incompatible_wire_versions():
    td = feed(initial_topology([A]), A, dict(STANDALONE, maxWireVersion=5))
    assert "requires at least" in td.compatibility_error
    td = feed(initial_topology([A]), A, dict(STANDALONE, minWireVersion=sdam.MAX_SUPPORTED_WIRE_VERSION + 1))
    assert "only supports up" in td.compatibility_error
    assert feed(initial_topology([A]), A, STANDALONE).compatibility_error is None


def test_error_classification_by_code_and_message():
    assert sdam.is_not_primary(10107, "") and sdam.is_not_primary(13435, "")
    assert sdam.is_recovering(11602, "") and sdam.is_recovering(189, "") and sdam.is_recovering(91, "")
    assert sdam.is_shutdown(91) and sdam.is_shutdown(11600) and not sdam.is_shutdown(189)
    # The message counts only when there is no code.
    assert sdam.is_not_primary(None, "not master") and not sdam.is_not_primary(2, "not master")
    assert sdam.is_recovering(None, "node is recovering") and sdam.is_recovering(None, "not master or secondary")
    assert not sdam.is_not_primary(None, "not master or secondary")
    assert sdam.is_state_change(None, "not master") and not sdam.is_state_change(11000, "duplicate key")


def test_reprs_name_members_and_types():
    td = feed(initial_topology([A]), A, primary())
    text = repr(td)
    assert "ReplicaSetWithPrimary" in text and "a:27017 RSPrimary" in text and "b:27017 Unknown" in text
